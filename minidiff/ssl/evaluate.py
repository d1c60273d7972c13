r"""How good are frozen features? :func:`extract_features` (any encoder or SSL model, batched, frozen), weighted kNN
(Wu et al. 2018) and a linear probe, both batched, plus a low-label
subset where self-supervised features should shine.

Weighted kNN: for a test feature :math:`f`, take its :math:`k` nearest training features by cosine similarity
:math:`s_i`, weight each by :math:`\exp(s_i/t)`, and predict the class with the largest total weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, depth: int | None = None, batch_size: int = 500) -> torch.Tensor:
    """Frozen features of ``x`` in eval mode, batched: ``model.features(x, depth)`` (or ``model.features(x)``
    when ``depth`` is None) for any minidiff encoder or SSL model (RotNet, SimCLR, MoCo, a VAE's posterior mean).
    Returned on the CPU, float32: the input of :func:`knn_accuracy`, :func:`linear_probe` and :func:`probe_table`."""
    check_images(x, "x")
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(dev)
        out.append((model.features(xb) if depth is None else model.features(xb, depth)).float().cpu())
    model.train(was)
    return torch.cat(out)


def _check_pair(feats, labels, name):
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D tensor (N, d), got {getattr(feats, 'shape', type(feats).__name__)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (feats.shape[0],):
        raise ValueError(f"{name} labels must have shape ({feats.shape[0]},), got {getattr(labels, 'shape', None)}")
    if feats.shape[0] == 0:
        raise ValueError(f"{name} set is empty")


@torch.no_grad()
def knn_predict(train_feats, train_labels, test_feats, k: int = 200, t: float = 0.1, num_classes: int | None = None,
                batch_size: int = 1024) -> torch.Tensor:
    """Temperature-weighted kNN predictions for ``test_feats`` (cosine similarity)."""
    _check_pair(train_feats, train_labels, "train")
    if test_feats.ndim != 2 or test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(f"test features must have shape (M, {train_feats.shape[1]}), got {tuple(test_feats.shape)}")
    if k <= 0 or t <= 0:
        raise ValueError(f"k and t must be positive, got k={k}, t={t}")
    C = num_classes or int(train_labels.max()) + 1
    k = min(k, train_feats.shape[0])
    tr = F.normalize(train_feats.float(), dim=1)
    preds = []
    for i in range(0, test_feats.shape[0], batch_size):
        te = F.normalize(test_feats[i:i + batch_size].float().to(tr.device), dim=1)
        sim, idx = (te @ tr.T).topk(k, dim=1)
        w = (sim / t).exp()
        scores = torch.zeros(te.shape[0], C, device=tr.device).scatter_add_(1, train_labels.to(tr.device)[idx], w)
        preds.append(scores.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int = 200, t: float = 0.1) -> float:
    """Accuracy of :func:`knn_predict` on ``(test_feats, test_labels)``."""
    _check_pair(test_feats, test_labels, "test")
    pred = knn_predict(train_feats, train_labels, test_feats, k, t)
    return (pred.cpu() == test_labels.cpu()).float().mean().item()


def linear_probe(train_feats, train_labels, test_feats, test_labels, epochs: int = 100, lr: float = 0.1,
                 weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Train a linear classifier (softmax regression, full-batch AdamW on standardised features) on frozen
    features; return its test accuracy."""
    _check_pair(train_feats, train_labels, "train")
    _check_pair(test_feats, test_labels, "test")
    g = torch.Generator().manual_seed(seed)
    mu, sd = train_feats.float().mean(0), train_feats.float().std(0) + 1e-6
    xtr, xte = (train_feats.float() - mu) / sd, (test_feats.float().to(mu.device) - mu) / sd
    C = int(max(train_labels.max(), test_labels.max())) + 1
    W = (torch.randn(xtr.shape[1], C, generator=g) * 0.01).to(xtr.device).requires_grad_()
    b = torch.zeros(C, device=xtr.device, requires_grad=True)
    opt = torch.optim.AdamW([W, b], lr=lr, weight_decay=weight_decay)
    ytr = train_labels.to(xtr.device)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(xtr @ W + b, ytr).backward()
            opt.step()
    with torch.no_grad():
        return ((xte @ W + b).argmax(1).cpu() == test_labels.cpu()).float().mean().item()


def low_label_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` randomly chosen examples of every class (for low-label probes)."""
    if per_class <= 0:
        raise ValueError(f"per_class must be positive, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in labels.unique().tolist():
        idx = (labels.cpu() == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} examples, fewer than per_class={per_class}")
        out.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(out)


def low_label_probe(train_feats, train_labels, test_feats, test_labels, per_class: int = 10, repeats: int = 5,
                    method: str = "linear", seed: int = 0, **kwargs) -> tuple[float, float]:
    """Accuracy of a probe trained on only ``per_class`` labelled examples of every class, averaged over
    ``repeats`` random labelled subsets: returns ``(mean, std)``. ``method`` is ``"linear"`` (:func:`linear_probe`)
    or ``"knn"`` (:func:`knn_accuracy`; ``k`` defaults to ``per_class``)."""
    _check_pair(train_feats, train_labels, "train")
    _check_pair(test_feats, test_labels, "test")
    if method not in ("linear", "knn"):
        raise ValueError(f"method must be 'linear' or 'knn', got {method!r}")
    if repeats <= 0:
        raise ValueError(f"repeats must be positive, got {repeats}")
    accs = []
    for r in range(repeats):
        idx = low_label_subset(train_labels, per_class, seed=seed + r)
        if method == "linear":
            accs.append(linear_probe(train_feats[idx], train_labels[idx], test_feats, test_labels, seed=seed + r,
                                     **kwargs))
        else:
            accs.append(knn_accuracy(train_feats[idx], train_labels[idx], test_feats, test_labels,
                                     k=kwargs.get("k", per_class), t=kwargs.get("t", 0.1)))
    a = torch.tensor(accs)
    return a.mean().item(), (a.std().item() if repeats > 1 else 0.0)


def probe_table(features: dict, train_labels, test_labels, per_class: int = 10, repeats: int = 5, knn_k: int = 20,
                knn_t: float = 0.1) -> dict:
    """Evaluate several frozen feature sets the same way: ``features = {name: (train_feats, test_feats)}``.

    Returns ``{name: {"low_label": (mean, std), "knn": acc}}``: the linear probe on ``per_class`` labels per class
    (:func:`low_label_probe`) and weighted kNN with all training labels."""
    out = {}
    for name, (ftr, fte) in features.items():
        out[name] = {
            "low_label": low_label_probe(ftr, train_labels, fte, test_labels, per_class, repeats),
            "knn": knn_accuracy(ftr, train_labels, fte, test_labels, k=knn_k, t=knn_t),
        }
    return out


def format_probe_table(table: dict, per_class: int = 10) -> str:
    """A plain-text table of :func:`probe_table`'s result."""
    lines = [f"{'features':<28s} {f'linear probe, {per_class}/class':>24s} {'kNN, all labels':>16s}"]
    for name, r in table.items():
        m, s = r["low_label"]
        lines.append(f"{name:<28s} {m:>17.3f} ± {s:.3f} {r['knn']:>16.3f}")
    return "\n".join(lines)
