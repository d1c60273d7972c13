r"""Self-supervised representations meet diffusion (chapter 11): three ways to let an encoder trained without
labels (chapter 02) help a diffusion model.

1. **Representation conditioning** (Li et al. 2023, "RCG"). The denoiser is conditioned on the frozen
   self-supervised representation :math:`r = f(x_0)` of its own training image (dropped to the null vector with
   probability :math:`p_\text{uncond}`, for guidance). To generate without any input, a small diffusion model over
   representations samples :math:`r` first, then the image model samples :math:`x \mid r`:
   :math:`p(x) = \int p(x \mid r)\, p(r)\, dr`. (Code: ``UNet(cond_dim=...)`` or ``DiTConfig(cond_dim=...)``, :meth:`FrozenEncoder.pooled`,
   :func:`minidiff.recipes.train_ddpm`, a :class:`minidiff.nets.TimeMLP` over representations.)
2. **Representation alignment** (Yu et al. 2024, "REPA", sec. 3.3). A projection :math:`h_\phi` of the denoiser's hidden
   tokens after block :math:`k` (a DiT block or a U-Net ResBlock) is pulled towards the frozen encoder's features :math:`y^*_n` of the *clean* image at
   the same positions:

   .. math:: \mathcal L = \mathcal L_\text{simple} + \lambda\,\mathcal L_\text{align},\qquad
             \mathcal L_\text{align} = -\,\mathbb E\Big[\frac1N \sum_{n=1}^{N} \mathrm{sim}\big(y^*_n,\;
             h_\phi(h^{(k)}_{t,n})\big)\Big],

   with :math:`\mathrm{sim}` the cosine similarity (:func:`alignment_loss`, :class:`REPA`).
3. **Multi-task training**: the denoiser's first :math:`k` blocks double as the encoder of a SimCLR
   loss on two augmented views of the clean image, and the two losses are added with a weight that changes over
   training, :math:`\mathcal L = \mathcal L_\text{simple} + w(s)\,\mathcal L_\text{NT-Xent}` (:class:`MultiTask`,
   :class:`LossWeightSchedule`).
4. **SSL features of the noisy input** (the source article's simplest variant): the frozen encoder reads the
   denoiser's own input :math:`x_t` and its features join the time embedding (:class:`FeatureInput`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_images, check_tensor
from .diffusion.ddpm import loss_weight, q_sample, target_for
from .diffusion.schedules import NoiseSchedule
from .ssl.simclr import nt_xent


class FrozenEncoder(nn.Module):
    """A self-supervised encoder (a :class:`minidiff.nets.ConvNet` or ResNet) whose weights never change: its
    parameters are frozen and it stays in eval mode (BatchNorm uses its running statistics) even inside a model
    that is being trained, and it runs without building a graph.

    - :meth:`pooled` ``(B, F)``: global features, unit-normalised and scaled by :math:`\\sqrt F` (entries of
      about unit size), the condition of representation conditioning;
    - :meth:`spatial` ``(B, g*g, F)``: the stage-``depth`` feature map average-pooled to a ``g x g`` grid, in the
      row-major token order of :func:`minidiff.nets.dit.patchify`, the targets of REPA."""

    def __init__(self, encoder: nn.Module, depth: int | None = None):
        super().__init__()
        if not hasattr(encoder, "stages") or not hasattr(encoder, "widths"):
            raise TypeError(f"encoder must be a staged encoder (ConvNet / ResNet from minidiff.nets), got "
                            f"{type(encoder).__name__}")
        self.encoder = encoder
        self.depth = len(encoder.stages) if depth is None else depth
        if not 1 <= self.depth <= len(encoder.stages):
            raise ValueError(f"depth must be in 1..{len(encoder.stages)}, got {depth}")
        self.dim = encoder.widths[self.depth - 1]
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):
        return super().train(False)       # never leaves eval mode

    @torch.no_grad()
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, "x", channels=self.encoder.in_channels)
        h = self.encoder.stem(x)
        for stage in self.encoder.stages[:self.depth]:
            h = stage(h)
        return h

    @torch.no_grad()
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.feature_map(x).mean((2, 3)), dim=1) * math.sqrt(self.dim)

    @torch.no_grad()
    def spatial(self, x: torch.Tensor, grid: int) -> torch.Tensor:
        fmap = F.adaptive_avg_pool2d(self.feature_map(x), grid)
        return fmap.flatten(2).transpose(1, 2)


def projector(in_dim: int, out_dim: int, hidden: int | None = None) -> nn.Module:
    """REPA's projector :math:`h_\\phi`: a three-layer MLP with SiLU, applied to every token."""
    hidden = hidden or 2 * max(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out_dim))


def alignment_loss(hidden: torch.Tensor, target: torch.Tensor, proj: nn.Module) -> torch.Tensor:
    """:math:`-\\frac{1}{BN}\\sum_{b,n} \\cos\\big(h_\\phi(h_{b,n}), y^*_{b,n}\\big)` for hidden tokens ``hidden``
    (B, N, d) and targets ``target`` (B, N, F) (module docstring, item 2). Lies in [-1, 1]; -1 is perfect
    alignment."""
    check_tensor(hidden, "hidden", ndim=3, floating=True)
    check_tensor(target, "target", ndim=3, floating=True)
    if hidden.shape[:2] != target.shape[:2]:
        raise ValueError(f"hidden (B, N, d) and target (B, N, F) must agree in B and N, got {tuple(hidden.shape)} "
                         f"and {tuple(target.shape)}")
    return -F.cosine_similarity(proj(hidden), target.detach(), dim=-1).mean()


@dataclass(frozen=True)
class LossWeightSchedule:
    """A loss weight that moves from ``start`` (step 0) to ``end`` (step ``steps`` and after): ``"constant"`` (always
    ``start``), ``"linear"``, or ``"cosine"`` (:math:`w = e + (s - e)\\,\\tfrac12(1 + \\cos \\pi p)`, p = step/steps)."""

    start: float
    end: float | None = None
    steps: int = 1
    kind: str = "linear"

    def __post_init__(self):
        if self.kind not in ("constant", "linear", "cosine"):
            raise ValueError(f"kind must be 'constant', 'linear' or 'cosine', got {self.kind!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not math.isfinite(self.start) or (self.end is not None and not math.isfinite(self.end)):
            raise ValueError(f"weights must be finite, got start={self.start}, end={self.end}")

    def __call__(self, step: int) -> float:
        end = self.start if self.end is None else self.end
        if self.kind == "constant":
            return float(self.start)
        p = min(max(step / self.steps, 0.0), 1.0)
        if self.kind == "linear":
            return float(self.start + (end - self.start) * p)
        return float(end + (self.start - end) * 0.5 * (1 + math.cos(math.pi * p)))


def _noisy(schedule: NoiseSchedule, x0: torch.Tensor, prediction: str):
    t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    return q_sample(schedule, x0, t, noise), t, target_for(prediction, schedule, x0, noise, t)


class REPA(nn.Module):
    r"""A denoiser (a :class:`~minidiff.nets.DiT` or :class:`~minidiff.nets.UNet`) trained with representation
    alignment. ``forward`` is the network's (samplers see a plain denoiser); :meth:`loss` is
    :math:`\mathcal L_\text{simple} + \lambda \mathcal L_\text{align}` with the hidden tokens after block ``depth``
    (``net(..., return_hidden=depth)``: a DiT block, or a ResBlock of the U-Net's down path and middle) projected onto
    the frozen encoder's features of the clean image, pooled to the same grid. The components of the last call are
    in ``last`` (for plots)."""

    def __init__(self, net: nn.Module, encoder: FrozenEncoder, depth: int, lam: float = 0.5,
                 proj_hidden: int | None = None):
        super().__init__()
        if not isinstance(encoder, FrozenEncoder):
            raise TypeError(f"encoder must be a FrozenEncoder, got {type(encoder).__name__}")
        _check_backbone(net)
        if not 1 <= depth <= net.hidden_blocks:
            raise ValueError(f"alignment depth must be a block index in 1..{net.hidden_blocks}, got {depth}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.net, self.encoder, self.depth, self.lam = net, encoder, depth, lam
        self.proj = projector(net.hidden_dim(depth), encoder.dim, proj_hidden)
        self.last: dict = {}

    def forward(self, x, t, y=None):
        return self.net(x, t, y)

    def loss(self, x0: torch.Tensor, schedule: NoiseSchedule, y: torch.Tensor | None = None,
             prediction: str = "eps", images: torch.Tensor | None = None, weighting: str = "none",
             snr_gamma: float = 5.0) -> torch.Tensor:
        """The loss of one batch ``x0`` (what the network diffuses). ``images`` are what the encoder sees, one per
        row of ``x0``: the pixel images of latents ``x0`` in latent diffusion (default ``x0`` itself, pixel
        diffusion). ``weighting``/``snr_gamma`` weight the diffusion term over noise levels as
        :func:`minidiff.diffusion.ddpm.loss_weight` (e.g. ``"min_snr"``)."""
        images = x0 if images is None else images
        if images.shape[0] != x0.shape[0]:
            raise ValueError(f"images must have one row per row of x0 ({x0.shape[0]}), got {images.shape[0]}")
        x_t, t, target = _noisy(schedule, x0, prediction)
        out, hidden = self.net(x_t, t, y, return_hidden=self.depth)
        per_sample = (out.float() - target.float()).pow(2).flatten(1).mean(1)
        diffusion = (loss_weight(schedule, t, prediction, weighting, snr_gamma) * per_sample).mean()
        align = alignment_loss(hidden.float(), self.encoder.spatial(images, token_grid(hidden)), self.proj)
        self.last = {"diffusion": float(diffusion.detach()), "align": float(align.detach())}
        return diffusion + self.lam * align


def token_grid(tokens: torch.Tensor) -> int:
    """The side g of the square grid that the N = g*g tokens of ``tokens`` (B, N, d) come from (row-major)."""
    g = math.isqrt(tokens.shape[1])
    if g * g != tokens.shape[1]:
        raise ValueError(f"hidden tokens must come from a square grid, got N = {tokens.shape[1]}")
    return g


def _check_backbone(net):
    if not all(hasattr(net, a) for a in ("hidden_blocks", "hidden_dim", "features")):
        raise TypeError(f"the denoiser must expose its hidden states (hidden_blocks, hidden_dim, features, "
                        f"return_hidden), as minidiff.nets.DiT and UNet do; got {type(net).__name__}")


class MultiTask(nn.Module):
    r"""A denoiser (DiT or U-Net) whose first ``depth`` blocks also learn a SimCLR objective. The SSL features of an
    image are its hidden tokens after block ``depth`` at :math:`t = 0` (no noise), averaged over tokens
    (``net.features``); a projection head maps them to the NT-Xent space. :meth:`loss` adds
    :math:`w(s)\,\mathcal L_\text{NT-Xent}` of two views made by ``augment`` to the diffusion loss, with :math:`s` the
    number of calls so far (a buffer, so it is checkpointed)."""

    def __init__(self, net: nn.Module, depth: int, weight: LossWeightSchedule, augment, proj_dim: int = 64,
                 temperature: float = 0.5):
        super().__init__()
        _check_backbone(net)
        if not 1 <= depth <= net.hidden_blocks:
            raise ValueError(f"shared depth must be a block index in 1..{net.hidden_blocks}, got {depth}")
        if not isinstance(weight, LossWeightSchedule):
            raise TypeError(f"weight must be a LossWeightSchedule, got {type(weight).__name__}")
        self.net, self.depth, self.weight, self.augment, self.temperature = net, depth, weight, augment, temperature
        d = net.hidden_dim(depth)
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, proj_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.last: dict = {}

    def forward(self, x, t, y=None):
        return self.net(x, t, y)

    def ssl_features(self, x: torch.Tensor) -> torch.Tensor:
        """Mean hidden token after block ``depth`` of the clean image (t = 0): the shared encoder's output."""
        t0 = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.net.features(x, t0, None, self.depth).mean(1)

    def loss(self, x0: torch.Tensor, schedule: NoiseSchedule, y: torch.Tensor | None = None,
             prediction: str = "eps", images: torch.Tensor | None = None, encode=None, weighting: str = "none",
             snr_gamma: float = 5.0) -> torch.Tensor:
        """The loss of one batch ``x0`` (what the network diffuses). The two SSL views are ``augment(images)`` (default
        ``images = x0``), passed through ``encode`` when given: in latent diffusion the views are augmented as pixel
        images and encoded to latents (e.g. an autoencoder's ``to_latent``), so the shared blocks see what the network
        sees. ``weighting``/``snr_gamma`` weight the diffusion term as :func:`minidiff.diffusion.ddpm.loss_weight`."""
        images = x0 if images is None else images
        if images.shape[0] != x0.shape[0]:
            raise ValueError(f"images must have one row per row of x0 ({x0.shape[0]}), got {images.shape[0]}")
        x_t, t, target = _noisy(schedule, x0, prediction)
        per_sample = (self.net(x_t, t, y).float() - target.float()).pow(2).flatten(1).mean(1)
        diffusion = (loss_weight(schedule, t, prediction, weighting, snr_gamma) * per_sample).mean()
        w = self.weight(int(self.step))
        self.step += 1
        if w == 0:
            self.last = {"diffusion": float(diffusion.detach()), "ssl": float("nan"), "weight": 0.0}
            return diffusion
        v1, v2 = self.augment(images), self.augment(images)
        if encode is not None:
            v1, v2 = encode(v1), encode(v2)
        ssl = nt_xent(self.head(self.ssl_features(v1)), self.head(self.ssl_features(v2)), self.temperature)
        self.last = {"diffusion": float(diffusion.detach()), "ssl": float(ssl.detach()), "weight": w}
        return diffusion + w * ssl


class FeatureInput(nn.Module):
    r"""The source article's simplest combination: the frozen encoder looks at the denoiser's own *noisy* input and
    its global features :math:`f(\tilde x_t)` enter the network next to the time embedding (concatenating them to the
    embedding and applying a linear map is the same as adding a learned map of them, which is what the U-Net's ``cond_dim``
    path does; the DiT's applies a small MLP). In latent diffusion :math:`\tilde x_t` is the noisy latent decoded to pixels by
    ``decode`` (default: none, pixel diffusion). Nothing has to be generated at sampling time: the features come from
    the current :math:`x_t`, so every sampler works unchanged; each network call also runs the decoder and encoder."""

    def __init__(self, net: nn.Module, encoder: FrozenEncoder, decode=None):
        super().__init__()
        if not isinstance(encoder, FrozenEncoder):
            raise TypeError(f"encoder must be a FrozenEncoder, got {type(encoder).__name__}")
        cond_dim = net.cfg.cond_dim if hasattr(net, "cfg") else getattr(net, "cond_dim", None)
        if cond_dim != encoder.dim:
            raise ValueError(f"the network must be built with cond_dim = the encoder's feature size {encoder.dim}, "
                             f"got cond_dim={cond_dim}")
        self.net, self.encoder, self.decode = net, encoder, decode

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = x if self.decode is None else self.decode(x)
            return self.encoder.pooled(images.clamp(-1, 1))

    def forward(self, x, t, y=None):
        if y is not None:
            raise ValueError("FeatureInput takes no condition y: its condition is computed from x")
        return self.net(x, t, self.features(x))
