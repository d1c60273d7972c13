r"""Steering generation: classifier-free guidance (the CLIP-style text encoder it can be conditioned on is
:mod:`minidiff.nets.clip`).

**Classifier-free guidance** (Ho & Salimans 2022). Train one network both conditionally and unconditionally by
replacing the label with a "null" label with probability :math:`p_\text{uncond}` (:func:`drop_labels`; in training,
:func:`minidiff.recipes.train_ddpm` with ``p_uncond`` is the one place that does it, for every model). At
sampling time extrapolate from the unconditional towards the conditional prediction with a guidance scale :math:`w`
(their eq. 6, written with :math:`w = 1 + \text{their } w`):

.. math:: \tilde\epsilon(x_t, y) = \epsilon_\theta(x_t, \varnothing) + w\,\big(\epsilon_\theta(x_t, y) - \epsilon_\theta(x_t, \varnothing)\big),

so :math:`w = 0` is unconditional, :math:`w = 1` plainly conditional, and :math:`w > 1` sharpens
:math:`p(y \mid x_t)^{w}`-like: samples become more typical of their class and less diverse. :func:`guided` does both
predictions in **one** batched forward pass.

**Classifier guidance** (Dhariwal & Nichol 2021, their Algorithm 2 written for :math:`\epsilon`). A separately trained
classifier of *noisy* images :math:`p_\phi(y \mid x_t, t)` supplies the second term of Bayes' split of the score,
:math:`\nabla \log p(x_t \mid y) = \nabla \log p(x_t) + \nabla \log p(y \mid x_t)`, scaled by :math:`s`. With
:math:`\nabla \log p(x_t) = -\epsilon / \sqrt{1 - \bar\alpha_t}` (Tweedie, chapter 06):

.. math:: \tilde\epsilon(x_t, y) = \epsilon_\theta(x_t) - s\,\sqrt{1 - \bar\alpha_t}\,\nabla_{x_t} \log p_\phi(y \mid x_t, t),

the :math:`\epsilon` of :math:`p(x_t)\,p_\phi(y \mid x_t)^{s}`, the same target as classifier-free guidance at
:math:`w = s` (:func:`classifier_guided`). The classifier is a network of its own
(:class:`minidiff.nets.classifier.NoisyClassifier`, trained by :func:`minidiff.recipes.train_noisy_classifier`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_tensor


def drop_labels(y: torch.Tensor, p_uncond: float, null_label: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``p_uncond`` (classifier-free guidance training)."""
    check_tensor(y, "y", ndim=1)
    if y.dtype != torch.long:
        raise TypeError(f"labels must be int64, got {y.dtype}")
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}")
    u = torch.rand(y.shape[0], generator=generator).to(y.device)
    return torch.where(u < p_uncond, torch.full_like(y, null_label), y)


def drop_condition(y: torch.Tensor, p_uncond: float, null=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`drop_labels` for labels (``null`` an int), and for condition vectors (B, d) or token sequences
    (B, L, d), whose rows are replaced by ``null`` (a (d,) or (L, d) tensor, default zeros: the empty condition)
    with probability ``p_uncond``."""
    check_tensor(y, "y", ndim=(1, 2, 3))
    if not y.is_floating_point():
        if not isinstance(null, int):
            raise ValueError(f"labels need an int null label, got {null!r}")
        return drop_labels(y, p_uncond, null, generator)
    if y.ndim == 1:
        raise ValueError(f"condition vectors must have shape (B, d) or (B, L, d), got {tuple(y.shape)}")
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}")
    row = tuple(y.shape[1:])
    null_row = torch.zeros(row, dtype=y.dtype, device=y.device) if null is None else \
        torch.as_tensor(null, dtype=y.dtype, device=y.device)
    if tuple(null_row.shape) != row:
        raise ValueError(f"null condition must have shape {row}, got {tuple(null_row.shape)}")
    u = torch.rand(y.shape[0], generator=generator).to(y.device)
    keep = (u >= p_uncond).reshape(-1, *([1] * len(row)))
    return torch.where(keep, y, null_row.expand_as(y))


def guided(model: Callable, scale: float, null_label: int | torch.Tensor) -> Callable:
    r"""Wrap a conditional ``model(x, t, y)`` into the guided prediction
    :math:`\epsilon_\varnothing + w(\epsilon_y - \epsilon_\varnothing)`, computed with a single forward pass on the doubled
    batch ``[x, x]`` with conditions ``[y, null]``. ``y`` are int64 labels with ``null_label`` an int, condition
    vectors (B, d) with ``null_label`` a (d,) tensor (e.g. zeros), or token sequences (B, L, d) with ``null_label``
    an (L, d) tensor. Returns ``fn(x, t, y)``."""
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")

    def fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise ValueError("guidance needs the condition y (labels or vectors) to steer towards; pass it through "
                             "model_kwargs={'y': y} when sampling")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have {x.shape[0]} rows to match x, got shape {tuple(y.shape)}")
        if scale == 1.0:
            return model(x, t, y)
        if isinstance(null_label, torch.Tensor):
            if tuple(null_label.shape) != tuple(y.shape[1:]):      # as drop_condition: no silent broadcast
                raise ValueError(f"null condition must have shape {tuple(y.shape[1:])} (one row of y), got "
                                 f"{tuple(null_label.shape)}")
            null = null_label.to(y).expand_as(y)
        else:
            null = torch.full_like(y, null_label)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return uncond + scale * (cond - uncond)

    return fn


def classifier_guided(model: Callable, classifier: Callable, scale: float, schedule, *,
                      null_label: int | None = None) -> Callable:
    r"""Wrap an :math:`\epsilon`-predicting ``model`` and a noisy-image ``classifier(x_t, t) -> logits (B, K)`` into
    the classifier-guided prediction
    :math:`\epsilon_\theta(x_t) - s\sqrt{1-\bar\alpha_t}\,\nabla_{x_t}\log p_\phi(y \mid x_t, t)` (module docstring).
    ``model`` is called as ``model(x, t)``, or as ``model(x, t, null)`` with ``null_label`` given (a classifier-free
    model used unconditionally). ``schedule`` is the :class:`~minidiff.diffusion.schedules.NoiseSchedule` the model
    was trained with. Returns ``fn(x, t, y)``; the gradient is taken even under ``torch.no_grad()``."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise ValueError(f"guidance scale must be a finite number >= 0, got {scale!r}")
    if not hasattr(schedule, "gather"):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")

    def fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.ndim != 1:
            raise ValueError("classifier guidance needs int64 labels y of shape (B,) to steer towards; pass them "
                             "through model_kwargs={'y': y} when sampling")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have {x.shape[0]} rows to match x, got shape {tuple(y.shape)}")
        with torch.no_grad():
            eps = model(x, t) if null_label is None else model(x, t, torch.full_like(y, null_label))
        if scale == 0:
            return eps
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = classifier(xg, t)
            if logits.ndim != 2 or logits.shape[0] != x.shape[0] or not (int(y.min()) >= 0 and
                                                                          int(y.max()) < logits.shape[1]):
                raise ValueError(f"the classifier must return logits (B, K) and every label must lie in [0, K); got "
                                 f"shape {tuple(logits.shape)} for labels {int(y.min())}..{int(y.max())}")
            log_p = torch.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).sum()
            grad, = torch.autograd.grad(log_p, xg)
        sigma = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x.ndim).to(x.dtype)
        return eps - scale * sigma * grad.to(eps.dtype)

    return fn
