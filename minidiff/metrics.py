r"""Sample-quality metrics in the feature space of a small MNIST network that ships with the package.

Inception-v3 (the usual FID network) is 90 MB, needs a download, and knows nothing about handwritten
digits. Instead, :class:`LeNetFeatures` is a LeNet-style network trained on the MNIST-5k training split
by ``scripts/train_feature_net.py``; its weights (< 1 MB) live in ``minidiff/assets``. Its 64-d
penultimate activations are the features; its held-out accuracy is stored next to the weights
(:func:`feature_net_info`). Numbers are comparable within this course, not with published FIDs.

- Fréchet distance (Heusel et al. 2017, eq. 6; Dowson & Landau 1982):

  .. math:: \mathrm{FID} = \|\mu_a - \mu_b\|^2 + \mathrm{tr}\big(\Sigma_a + \Sigma_b - 2(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2})^{1/2}\big)

  computed in float64 with symmetric eigendecompositions (stable, no complex parts).
- Kernel inception distance (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel
  :math:`k(x, y) = (x^\top y / d + 1)^3`, averaged over random subsets.
- :func:`chamfer_distance`: the symmetric mean nearest-neighbour distance between two point sets (2-D toys).
- :func:`classifier_confidence`: mean max-probability of the classifier, and the entropy of the
  histogram of predicted classes (log 10 ≈ 2.303 nats when all ten digits are equally frequent).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_images, check_tensor
from .ssl.augment import gaussian_blur  # noqa: F401  (the one Gaussian blur; the "blurred digits" baseline)

FEATURE_DIM = 64
WEIGHTS_FILE = "lenet_mnist5k.pt"
INFO_FILE = "lenet_mnist5k.json"


class LeNetFeatures(nn.Module):
    """conv5x5(32)-pool-conv5x5(64)-pool-fc(64)-fc(10). ``features(x)`` is the 64-d penultimate layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(64 * 5 * 5, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)   # 28 -> 14
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)   # 10 -> 5
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


@lru_cache(maxsize=4)
def _load_feature_net(device_str: str) -> LeNetFeatures:
    net = LeNetFeatures()
    path = resources.files("minidiff") / "assets" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"feature-net weights not found at {path}; run: python scripts/train_feature_net.py")
    with resources.as_file(path) as p:
        state = torch.load(p, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False).to(device_str)


def feature_net(device="cpu") -> LeNetFeatures:
    """The shipped, frozen feature network on ``device``."""
    return _load_feature_net(str(torch.device(device)))


def feature_net_info() -> dict:
    """How the shipped feature net was trained and its held-out accuracy (from the JSON beside the weights)."""
    return json.loads((resources.files("minidiff") / "assets" / INFO_FILE).read_text())


def _images(x, name):
    check_images(x, name, channels=1, size=28)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains nan or inf")
    if x.numel() and float(x.min()) >= 0 and float(x.max()) > 1.5:
        raise ValueError(f"{name} looks like pixels in [0, {float(x.max()):.0f}], but the feature network expects images "
                         f"in [-1, 1] (convert with x / 127.5 - 1 for [0, 255], or 2 * x - 1 for [0, 1])")
    return x


@torch.no_grad()
def extract_features(x: torch.Tensor, batch_size: int = 500, device=None) -> torch.Tensor:
    """64-d features (float64, CPU) of images ``x`` (N, 1, 28, 28) in [-1, 1]. The network runs in float32 on
    ``device`` (default: ``x``'s device); its features are moved to the CPU before they are cast to float64, so no
    float64 tensor is made on the device (MPS has no float64). Nothing is remembered: to compare many sample sets
    with one reference set, compute the reference once with :class:`Reference`."""
    _images(x, "x")
    device = torch.device(device) if device is not None else x.device
    net = feature_net(device)
    return torch.cat([net.features(x[i:i + batch_size].to(torch.float32).to(device)).cpu().double()
                      for i in range(0, x.shape[0], batch_size)])


class Reference:
    """The reference set of the feature-space FID and KID (e.g. the held-out digits), computed once: its features
    (float64, CPU, (N, 64)), their ``mean`` (64,) and covariance ``cov`` (64, 64).

    Build it once per chapter and pass it where the reference images went::

        reference = metrics.Reference(heldout.x)
        metrics.fid(samples, reference), metrics.kid(samples, reference)

    It holds statistics, not images: modifying the image tensor afterwards does not change it."""

    def __init__(self, images: torch.Tensor, batch_size: int = 500, device=None):
        _images(images, "images")
        if images.shape[0] < 2:
            raise ValueError(f"a reference set needs at least 2 images to estimate a covariance, got {images.shape[0]}")
        self.features = extract_features(images, batch_size, device)
        self.mean, self.cov = _stats(self.features)

    def __len__(self) -> int:
        return self.features.shape[0]

    def __repr__(self) -> str:
        return f"Reference({len(self)} images, {self.features.shape[1]}-d features)"

    def fid(self, x: torch.Tensor, batch_size: int = 500) -> float:
        """FID of the image set ``x`` against this reference (same as ``metrics.fid(x, self)``)."""
        return fid(x, self, batch_size)


def _features_of(x, name, batch_size=500) -> torch.Tensor:
    """Features of a :class:`Reference` (as stored) or of an image set (computed)."""
    if isinstance(x, Reference):
        return x.features
    _images(x, name)
    return extract_features(x, batch_size)


@torch.no_grad()
def predict_proba(x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Class probabilities (N, 10) of the shipped classifier."""
    _images(x, "x")
    net = feature_net(x.device)
    return torch.cat([F.softmax(net(x[i:i + batch_size].float()), -1).cpu() for i in range(0, x.shape[0], batch_size)])


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    r"""Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b) (see module docstring), in float64."""
    mu_a, cov_a, mu_b, cov_b = (t.double() for t in (mu_a, cov_a, mu_b, cov_b))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.numel(), mu_a.numel()):
        raise ValueError(f"shape mismatch: mu {tuple(mu_a.shape)}/{tuple(mu_b.shape)}, cov {tuple(cov_a.shape)}/{tuple(cov_b.shape)}")
    cov_a = (cov_a + cov_a.T) / 2
    cov_b = (cov_b + cov_b.T) / 2
    sa = _sqrtm_psd(cov_a)
    m = sa @ cov_b @ sa
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_sqrt
    return float(d.clamp(min=0))


def _stats(f: torch.Tensor):
    return f.mean(0), torch.cov(f.T)


def fid_from_features(f_a: torch.Tensor, f_b: torch.Tensor) -> float:
    """FID between two feature sets (N, d) and (M, d), N, M >= 2."""
    for f, n in ((f_a, "f_a"), (f_b, "f_b")):
        check_tensor(f, n, ndim=2, floating=True)
        if f.shape[0] < 2:
            raise ValueError(f"{n} needs at least 2 rows to estimate a covariance, got {f.shape[0]}")
    if f_a.shape[1] != f_b.shape[1]:
        raise ValueError(f"feature dims differ: {f_a.shape[1]} vs {f_b.shape[1]}")
    return frechet_distance(*_stats(f_a.double()), *_stats(f_b.double()))


def fid(x_a, x_b, batch_size: int = 500) -> float:
    """Feature-space FID between two image sets (N, 1, 28, 28) in [-1, 1], either of which may be a
    :class:`Reference` (its stored statistics are used). Lower is better; 0 for equal sets."""
    stats = []
    for x, name in ((x_a, "x_a"), (x_b, "x_b")):
        if isinstance(x, Reference):
            stats += [x.mean, x.cov]
        else:
            f = _features_of(x, name, batch_size)
            if f.shape[0] < 2:
                raise ValueError(f"{name} needs at least 2 images to estimate a covariance, got {f.shape[0]}")
            stats += list(_stats(f))
    return frechet_distance(*stats)


def fid_interval_from_features(f: torch.Tensor, ref_mean: torch.Tensor, ref_cov: torch.Tensor, n_boot: int = 200,
                                level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """FID of the feature set ``f`` (N, d) against the Gaussian ``(ref_mean, ref_cov)``, with a percentile bootstrap
    interval: ``(fid, low, high)``. The generated set is resampled with replacement ``n_boot`` times (the reference
    is held fixed: it is the same for every model compared) and the percentiles are moved by the bootstrap's own
    bias (mean of the resampled FIDs minus the FID: repeated rows shrink the covariance), so the interval shows how much the FID of *this many
    samples* moves with the draw; it does not include the run-to-run spread of training (seeds do)."""
    check_tensor(f, "f", ndim=2, floating=True)
    if f.shape[0] < 2:
        raise ValueError(f"f needs at least 2 rows to estimate a covariance, got {f.shape[0]}")
    if not 0 < level < 1 or n_boot < 2:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 2, got level={level!r}, n_boot={n_boot!r}")
    f = f.double()
    g = torch.Generator().manual_seed(seed)
    n = f.shape[0]
    boot = torch.tensor([frechet_distance(*_stats(f[torch.randint(n, (n,), generator=g)]), ref_mean, ref_cov)
                         for _ in range(n_boot)], dtype=torch.float64)
    point = frechet_distance(*_stats(f), ref_mean, ref_cov)
    lo, hi = torch.quantile(boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    shift = float(boot.mean()) - point           # a resample repeats rows, which adds its own upward bias to FID
    return point, max(lo - shift, 0.0), hi - shift


def fid_interval(x: torch.Tensor, reference: "Reference", n_boot: int = 200, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Feature FID of the images ``x`` against ``reference`` (a :class:`Reference`) with a ``level`` percentile
    bootstrap interval over the samples: ``(fid, low, high)`` (:func:`fid_interval_from_features`). Two samplers or
    models whose intervals overlap are not ranked by one draw."""
    if not isinstance(reference, Reference):
        raise TypeError(f"reference must be a metrics.Reference, got {type(reference).__name__}")
    return fid_interval_from_features(_features_of(x, "x"), reference.mean, reference.cov, n_boot, level, seed)


def kid_from_features(f_a: torch.Tensor, f_b: torch.Tensor, subsets: int = 50, subset_size: int = 200,
                      seed: int = 0) -> tuple[float, float]:
    """Unbiased KID (cubic polynomial kernel), mean and std over ``subsets`` random subsets."""
    f_a, f_b = f_a.double(), f_b.double()
    m = min(subset_size, f_a.shape[0], f_b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {f_a.shape[0]} and {f_b.shape[0]}")
    d = f_a.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        a = f_a[torch.randperm(f_a.shape[0], generator=g)[:m]]
        b = f_b[torch.randperm(f_b.shape[0], generator=g)[:m]]
        kaa = (a @ a.T / d + 1) ** 3
        kbb = (b @ b.T / d + 1) ** 3
        kab = (a @ b.T / d + 1) ** 3
        mmd = ((kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
               - 2 * kab.mean())
        vals.append(float(mmd))
    v = torch.tensor(vals, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(vals) > 1 else 0.0


def kid(x_a, x_b, subsets: int = 50, subset_size: int = 200, seed: int = 0) -> tuple[float, float]:
    """Feature-space KID between two image sets (either may be a :class:`Reference`): ``(mean, std)`` over random
    subsets. ~0 for equal distributions."""
    return kid_from_features(_features_of(x_a, "x_a"), _features_of(x_b, "x_b"), subsets, subset_size, seed)


def chamfer_distance(x: torch.Tensor, ref: torch.Tensor) -> float:
    r"""The symmetric chamfer distance between two point sets, ``x`` (n, d) and ``ref`` (m, d):

    .. math:: \tfrac12\Big(\tfrac1n\sum_i \min_j \|x_i - r_j\| + \tfrac1m\sum_j \min_i \|x_i - r_j\|\Big)

    For samples of a low-dimensional toy distribution (chapter 13): the first term is small when every sample lies
    near the data, the second when every data point has a sample near it, so collapsing onto part of the data is
    not rewarded. Computed in float32 on the device of ``x``."""
    check_tensor(x, "x", ndim=2, floating=True)
    check_tensor(ref, "ref", ndim=2, floating=True)
    if x.shape[0] == 0 or ref.shape[0] == 0 or x.shape[1] != ref.shape[1]:
        raise ValueError(f"x and ref must be non-empty point sets of the same dimension, got shapes "
                         f"{tuple(x.shape)} and {tuple(ref.shape)}")
    # the direct formula: cdist's matrix-product shortcut (used above 25 points) loses ~1e-4 to cancellation
    d = torch.cdist(x.float(), ref.to(x.device).float(), compute_mode="donot_use_mm_for_euclid_dist")
    return 0.5 * (d.min(1).values.mean() + d.min(0).values.mean()).item()


def classifier_confidence(x: torch.Tensor) -> dict:
    """``{"mean_max_prob": ..., "class_entropy": ...}``: how sure the digit classifier is (1.0 = certain), and
    the entropy (nats) of the histogram of predicted classes (log 10 ≈ 2.303 when all digits are equally frequent;
    0 when every sample is the same digit)."""
    p = predict_proba(x)
    hist = torch.bincount(p.argmax(1), minlength=10).double()
    q = hist / hist.sum()
    ent = -(q[q > 0] * q[q > 0].log()).sum()
    return {"mean_max_prob": float(p.max(1).values.mean()), "class_entropy": float(ent),
            "max_class_entropy": math.log(10)}


def class_agreement(x: torch.Tensor, requested: torch.Tensor) -> dict:
    r"""How well samples ``x`` generated for the classes ``requested`` (int64 (N,)) match them, judged by the shipped
    classifier (chapter 10):

    - ``accuracy``: fraction classified as the requested class (0.1 by chance for balanced requests);
    - ``within_class_entropy``: for each requested class :math:`c`, the entropy (nats) of the histogram of predicted
      classes among the samples asked to be :math:`c`, averaged over :math:`c`: 0 when every sample asked to be a 7
      is classified as *one* digit, :math:`\log 10` when the predictions are spread evenly;
    - ``mean_max_prob``: the classifier's mean confidence."""
    _images(x, "x")
    if not isinstance(requested, torch.Tensor) or requested.dtype != torch.long or requested.shape != (x.shape[0],):
        raise ValueError(f"requested must be int64 labels of shape ({x.shape[0]},), got "
                         f"{getattr(requested, 'dtype', type(requested).__name__)} {tuple(getattr(requested, 'shape', ()))}")
    p = predict_proba(x)
    pred, req = p.argmax(1), requested.cpu()
    ents = []
    for c in req.unique().tolist():
        hist = torch.bincount(pred[req == c], minlength=10).double()
        q = hist[hist > 0] / hist.sum()
        ents.append(float(-(q * q.log()).sum()))
    return {"accuracy": float((pred == req).double().mean()), "within_class_entropy": sum(ents) / len(ents),
            "mean_max_prob": float(p.max(1).values.mean())}

