r"""Recipes: the loops that put the math, the networks, the data samplers and the training loop together.

The math (:mod:`minidiff.diffusion`, :mod:`minidiff.ssl`) knows losses and samplers, not how to train;
:mod:`minidiff.train` knows how to train, not what. A recipe is the one place that says both, e.g. "fit this
denoiser with the eq. 14 objective on these images, dropping labels for classifier-free guidance"::

    from minidiff.recipes import train_ddpm
    run = train_ddpm(unet, sched, x_train, y_train, cfg=TrainConfig(steps=500), batch_size=64, p_uncond=0.1)

``tests/test_imports.py`` keeps the floors in order: nothing in the math layer imports this module or the loop.
"""

from __future__ import annotations

import numbers

import torch

from ._checks import check_tensor
from .data import TensorSampler
from .diffusion.ddpm import WEIGHTINGS, _check_prediction, _check_schedule, ddpm_loss, q_sample
from .diffusion.guidance import drop_condition
from .diffusion.schedules import NoiseSchedule
from .nets.dit import label_dropouts, set_label_dropouts
from .train import train


def train_ddpm(model, schedule: NoiseSchedule, x: torch.Tensor, y: torch.Tensor | None = None, *, cfg,
               batch_size: int, prediction: str = "eps", p_uncond: float | None = None, null=None, seed: int = 0,
               evaluate=None, weighting: str = "none", snr_gamma: float = 5.0):
    r"""Fit a denoiser with the eq. 14 objective on the data ``x`` (on the model's device), optionally conditioned on
    ``y``: int64 labels (null label ``null``, default ``model.num_classes``) or float vectors (null vector ``null``,
    default zeros). With ``p_uncond`` each condition is replaced by the null one with that probability, so one
    network learns both :math:`\epsilon(x_t, y)` and :math:`\epsilon(x_t, \varnothing)` for classifier-free guidance.

    Conditions are dropped in one place only. Given ``p_uncond`` (0 included), this function drops them, and the
    label dropout a model does on its own (a DiT's ``class_dropout``, :class:`minidiff.nets.dit.LabelEmbedder`) is
    switched off while it trains, then restored (on the model and on the returned EMA copy): the fraction of null
    conditions the network sees is ``p_uncond``. With ``p_uncond=None`` (the default) this function drops nothing and
    the model's own dropout, if any, is the one (a U-Net then sees no null labels, a DiT ``cfg.class_dropout`` of them).
    ``cfg`` is a :class:`minidiff.train.TrainConfig`; returns its :class:`~minidiff.train.TrainResult`. ``evaluate``
    is passed on to :func:`minidiff.train.train` (called every ``cfg.eval_every`` steps with the EMA model).
    ``weighting``/``snr_gamma`` weight the loss over noise levels (:func:`minidiff.diffusion.ddpm.loss_weight`:
    ``"min_snr"`` is min-SNR-gamma).

    This is the loop of chapters 04, 08, 10 and 11 in one call::

        run = train_ddpm(unet, sched, x_train, y_train, cfg=TrainConfig(steps=500), batch_size=64, p_uncond=0.1)
    """
    _check_schedule(schedule)
    _check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    check_tensor(x, "x", floating=True)
    if y is not None:
        check_tensor(y, "y")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
        if not y.is_floating_point() and null is None:
            null = getattr(model, "num_classes", None)
            if null is None:
                raise ValueError("integer labels y need a null label for dropout: pass null=... or use a model with "
                                 "num_classes")
    if p_uncond is not None and (isinstance(p_uncond, bool) or not isinstance(p_uncond, numbers.Real)
                                 or not 0 <= p_uncond <= 1):
        raise ValueError(f"p_uncond must be a probability in [0, 1] or None, got {p_uncond!r}")
    gen = torch.Generator().manual_seed(seed + 1)

    def loss(m, batch):
        if y is None:
            return ddpm_loss(m, schedule, batch, prediction=prediction, weighting=weighting, snr_gamma=snr_gamma)
        xb, yb = batch
        if p_uncond:
            yb = drop_condition(yb, p_uncond, null, generator=gen)
        return ddpm_loss(m, schedule, xb, prediction=prediction, model_kwargs={"y": yb}, weighting=weighting,
                         snr_gamma=snr_gamma)

    batches = TensorSampler(x, batch_size=batch_size, seed=seed) if y is None else \
        TensorSampler(x, y, batch_size=batch_size, seed=seed)
    own = label_dropouts(model) if isinstance(model, torch.nn.Module) else []
    if p_uncond is None or not any(own):
        return train(model, loss, batches, cfg, evaluate=evaluate)
    set_label_dropouts(model, 0.0)          # p_uncond is the one rate: no second drop inside the model
    try:
        run = train(model, loss, batches, cfg, evaluate=evaluate)
    finally:
        set_label_dropouts(model, own)
    if run.ema is not model:                # the EMA copy was taken with the dropout off
        set_label_dropouts(run.ema, own)
    return run


def train_noisy_classifier(classifier, schedule: NoiseSchedule, x: torch.Tensor, y: torch.Tensor, *, cfg,
                           batch_size: int, seed: int = 0, evaluate=None):
    r"""Fit :math:`p_\phi(y \mid x_t, t)` for classifier guidance: cross-entropy of ``classifier(x_t, t)`` against the
    labels ``y`` (int64), with :math:`t` uniform over the schedule's steps and :math:`x_t` drawn by
    :func:`~minidiff.diffusion.ddpm.q_sample` (eq. 4), so the classifier sees every noise level the sampler visits.
    ``cfg`` is a :class:`minidiff.train.TrainConfig`; returns its :class:`~minidiff.train.TrainResult`."""
    _check_schedule(schedule)
    check_tensor(x, "x", floating=True)
    check_tensor(y, "y", ndim=1)
    if y.dtype != torch.long or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be int64 labels, one per row of x; got {y.dtype} of shape {tuple(y.shape)} for "
                         f"{x.shape[0]} rows")

    def loss(m, batch):          # t and noise from torch's global RNG, as ddpm_loss: checkpoints save and restore it
        xb, yb = batch
        t = torch.randint(0, schedule.T, (xb.shape[0],), device=xb.device)
        return torch.nn.functional.cross_entropy(m(q_sample(schedule, xb, t), t), yb)

    return train(classifier, loss, TensorSampler(x, y, batch_size=batch_size, seed=seed), cfg, evaluate=evaluate)


def unet_ablations(cfg, shape=(1, 28, 28)) -> dict:
    """Chapter 08's networks, each a function that builds one (seeded by the caller): the U-Net ``cfg.unet`` of
    :data:`minidiff.nets.UNET_CONFIGS` with attention at its lowest resolution (``"full"``), the same without
    attention, without skip connections, with an additive time embedding (Ho et al.'s, no scale), and an MLP on
    flattened pixels (:class:`minidiff.nets.ImageMLP`, ``cfg.mlp_hidden`` x ``cfg.mlp_depth``). ``cfg`` is a
    :class:`minidiff.config.schema.UNetChapterConfig`; the chapter and ``benchmarks/unet_ablation.py`` both build
    their models here, so the live run and the reference sweep compare the same networks."""
    from .nets import ImageMLP, UNet, unet_config

    shape = tuple(shape)
    full = unet_config(cfg.unet, attention=True)
    kws = {"full": full, "no attention": {**full, "attention": False},
           "no skips": {**full, "skip_connections": False}, "additive time": {**full, "time_conditioning": "add"}}
    out = {name: (lambda kw=kw: UNet(in_channels=shape[0], **kw)) for name, kw in kws.items()}
    out["MLP"] = lambda: ImageMLP(shape, hidden=cfg.mlp_hidden, depth=cfg.mlp_depth)
    return out
