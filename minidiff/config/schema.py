"""The schema: the dataclasses every size lives in.

One frozen dataclass per chapter (or group of chapters) holds that chapter's sizes; :class:`Profile` gathers one of
each for a budget (the values are in :mod:`minidiff.config.profiles`). :class:`TrainConfig` holds the
hyper-parameters of :func:`minidiff.train.train`; a chapter config that trains something gives its own with
``train_config(**overrides)`` (e.g. ``P.ddpm.train_config(desc="DDPM", ckpt_dir=...)``), and says in one line what it
runs with through ``summary()`` (``P.summary("ddpm")`` adds the section and profile names).

This module imports nothing but the standard library, so it can be read (and imported) on its own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Mapping

PROFILE_NAMES = ("ci", "cpu", "gpu")


@dataclass
class TrainConfig:
    """Hyper-parameters and budgets of :func:`minidiff.train.train`. ``steps`` is the step budget, ``max_seconds``
    an optional wall-clock budget (whichever comes first ends training). Both are totals for the run, across
    resumes: a run resumed from its checkpoint at step ``s`` after ``e`` seconds of training trains up to
    ``steps - s`` more steps and ``max_seconds - e`` more seconds (time spent in ``evaluate`` is not training
    time)."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    # "auto" (bf16/fp16 on CUDA, fp32 elsewhere), "off", "bf16" (CUDA, and CPUs with native bf16), "fp16" (CUDA)
    amp: str = "auto"
    max_seconds: float | None = None
    ckpt_dir: str | os.PathLike | None = None
    ckpt_every: int = 500
    keep: int = 2
    resume: bool = True
    log_every: int = 10
    eval_every: int | None = None   # with train(..., evaluate=fn): call fn every this many steps (and at the end)
    # seed: at the start of a fresh run (not a resume, which restores the checkpoint's RNG states), train seeds
    # Python, NumPy and torch with it (config.seed_everything); None leaves the RNGs as the caller seeded them
    seed: int | None = None
    progress: bool = True
    desc: str = "training"
    # speed switches (chapter 12). channels_last: NHWC memory layout for conv nets and 4-D batches (faster
    # convolutions with cuDNN, most of all under bf16); compile: torch.compile the model for training (kernel fusion;
    # pays a one-off compile time of tens of seconds, so only for long runs; checkpoints keep plain weights)
    channels_last: bool = False
    compile: bool = False
    # anneal_by_time: with max_seconds, the cosine decay follows whichever budget is further along (steps or
    # seconds), so a run cut by the clock still ends at the low learning rate instead of stopping mid-schedule
    anneal_by_time: bool = False

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {self.steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be 'auto', 'off', 'bf16' or 'fp16', got {self.amp!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive or None, got {self.max_seconds}")
        if self.anneal_by_time and self.max_seconds is None:
            raise ValueError("anneal_by_time needs max_seconds (the wall-clock budget the schedule follows)")
        if self.ckpt_every <= 0 or self.keep <= 0 or self.log_every <= 0:
            raise ValueError("ckpt_every, keep and log_every must be positive")
        if self.eval_every is not None and (isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int)
                                            or self.eval_every <= 0):
            raise ValueError(f"eval_every must be a positive int or None, got {self.eval_every!r}")


#: the fields of TrainConfig that a chapter config may carry under the same name (and meaning)
TRAIN_FIELDS = ("steps", "max_seconds", "lr", "weight_decay", "warmup", "grad_clip", "ema_decay", "eval_every",
                "anneal_by_time", "amp")


def _check_recipe(cfg) -> None:
    """The sampler, prediction and loss weighting of a chapter config that trains with chapter 04's recipe (the
    names are spelled out here, below the diffusion layer; a test keeps them equal to ``ddpm``'s)."""
    name = type(cfg).__name__
    if cfg.sampler not in cfg.SAMPLERS:
        raise ValueError(f"{name}.sampler must be one of {cfg.SAMPLERS}, got {cfg.sampler!r}")
    if cfg.prediction not in ("eps", "x0", "v"):
        raise ValueError(f"{name}.prediction must be 'eps', 'x0' or 'v', got {cfg.prediction!r}")
    if cfg.weighting not in ("none", "min_snr"):
        raise ValueError(f"{name}.weighting must be 'none' or 'min_snr', got {cfg.weighting!r}")


AE_FIELDS = ("dataset", "ae_latent_channels", "ae_width", "ae_steps", "ae_kl_weight", "ae_lr")


def _ae_settings(cfg) -> dict:
    """The chapter-10 autoencoder's settings of a section that has the ``ae_*`` fields (chapters 09 and 10)."""
    return {f: getattr(cfg, f) for f in AE_FIELDS}


def _budget(steps: int, max_seconds: float | None) -> str:
    return f"{steps} steps" + (f" or {max_seconds:g} s" if max_seconds else "")


def _seq(values) -> str:
    return ",".join(str(v) for v in values)


class Section:
    """Mixin of a chapter config: :meth:`summary` says in one line what the chapter runs with (the class's
    ``_SUMMARY`` template, filled with its fields)."""

    _SUMMARY = ""

    def _summary_fields(self) -> dict:
        return {f.name: _seq(v) if isinstance(v, tuple) else v for f in fields(self) for v in [getattr(self, f.name)]}

    def summary(self) -> str:
        return self._SUMMARY.format(**self._summary_fields())


class Trains(Section):
    """Mixin of a chapter config that trains a model: :meth:`train_config` makes its :class:`TrainConfig` from the
    config's fields named like TrainConfig's (:data:`TRAIN_FIELDS`), so a notebook never copies them by hand; the
    ``{training}`` of its summary is the batch and the optimisation."""

    def train_config(self, **overrides) -> TrainConfig:
        """The :class:`TrainConfig` of this chapter's model; ``overrides`` replace or add fields, e.g. ``desc``,
        ``ckpt_dir``, or a shorter ``steps`` for an exercise."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name in TRAIN_FIELDS}
        return TrainConfig(**{**own, **overrides})

    def _training(self) -> str:
        """The batch and the optimisation part of :meth:`summary`, from :meth:`train_config`."""
        c = self.train_config()
        text = f"batch {self.batch}, {_budget(c.steps, c.max_seconds)}, lr {c.lr:g}"
        if c.weight_decay:
            text += f", wd {c.weight_decay:g}"
        if c.warmup:
            text += f", warmup {c.warmup}"
        if c.min_lr_ratio == 1:
            text += " (constant after warmup)"
        if c.anneal_by_time and c.max_seconds:
            text += ", lr decay by the clock"
        return text + (f", EMA {c.ema_decay:g}" if c.ema_decay is not None else ", no EMA")

    def _summary_fields(self) -> dict:
        return {**super()._summary_fields(), "training": self._training()}


@dataclass(frozen=True)
class ToyDiffusionConfig(Trains):
    """Sizes for diffusion on a 2-D toy distribution (a time-conditioned MLP)."""

    _SUMMARY = ("{dataset} ({n_points} points) | T={T} {schedule} | MLP {hidden}x{depth} | {training} | "
                "{n_samples} samples")

    dataset: str = "moons"
    n_points: int = 8192
    schedule: str = "linear"
    T: int = 100
    hidden: int = 128
    depth: int = 3
    batch: int = 512
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 50
    ema_decay: float | None = 0.99
    n_samples: int = 2000



@dataclass(frozen=True)
class ImageDiffusionConfig(Trains):
    """Sizes for DDPM on 28x28 digits with the compact U-Net.

    ``steps`` is the step budget and ``max_seconds`` the wall-clock budget; training stops at
    whichever comes first. ``n_samples`` images are generated for FID/KID.
    """

    _SUMMARY = ("{dataset} | T={T} {schedule} {prediction}, loss weighting {weighting} | UNet {base_channels}x"
                "({channel_mults}), attention={attention}, patch {patch} | {training} | {n_samples} samples")

    dataset: str = "mnist5k"
    T: int = 1000
    schedule: str = "cosine"
    prediction: str = "eps"
    # loss weighting over noise levels (ddpm.loss_weight): "none" is Ho et al.'s eq. 14, "min_snr" min-SNR-5
    weighting: str = "none"
    # with max_seconds: the learning rate's cosine decay follows the clock (TrainConfig.anneal_by_time)
    anneal_by_time: bool = False
    # TrainConfig.amp: "bf16" autocasts on CUDA and on CPUs with native bf16 (more steps in the same seconds)
    amp: str = "auto"
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    attention: bool = True
    patch: int = 1
    clip_x0: bool = True
    blur_sigma: float = 1.0
    batch: int = 128
    steps: int = 4000
    max_seconds: float | None = None
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.999
    n_samples: int = 1000
    sample_batch: int = 500



@dataclass(frozen=True)
class SSLConfig(Trains):
    """Sizes for self-supervised pretraining (chapters 01-02) and its evaluation.

    Training stops after ``steps`` or ``max_seconds``, whichever comes first (``None`` = no time limit; the ``ci``
    profile uses steps only, so its numbers are reproducible). Features are judged by a linear probe trained on
    ``probe_per_class`` labels per class, averaged over ``probe_repeats`` labelled subsets, and by weighted kNN.
    The notebooks assert that self-supervised features beat raw pixels and a random encoder by ``min_margin``.
    """

    _SUMMARY = ("{dataset} | {encoder} width {width}, projection {proj_hidden}->{proj_dim} | {training} | SimCLR tau "
                "{temperature}; MoCo {moco_steps} steps, queue {moco_queue}, m {moco_momentum}, "
                "tau {moco_temperature} | "
                "probe {probe_per_class}/class x{probe_repeats}, kNN k={knn_k}")

    dataset: str = "mnist5k"
    encoder: str = "convnet"          # "convnet" (28x28 digits) or "resnet18" (CIFAR stem)
    width: int = 32
    batch: int = 256
    steps: int = 1000
    max_seconds: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    grad_clip: float | None = None
    ema_decay: float | None = None
    aug_strength: float = 1.0
    temperature: float = 0.5          # NT-Xent
    proj_hidden: int = 256
    proj_dim: int = 64
    moco_steps: int = 1000
    moco_max_seconds: float | None = None
    moco_queue: int = 1024
    moco_momentum: float = 0.99
    moco_temperature: float = 0.2
    probe_per_class: int = 10
    probe_repeats: int = 5
    knn_k: int = 20
    embedding_2d: str = "pca"         # "pca" (fast) or "tsne"
    n_embed: int = 1000
    min_margin: float = 0.05

    def moco_train_config(self, **overrides) -> TrainConfig:
        """MoCo's :class:`TrainConfig`: SimCLR's with MoCo's own budgets."""
        return self.train_config(**{"steps": self.moco_steps, "max_seconds": self.moco_max_seconds, **overrides})



@dataclass(frozen=True)
class RotationConfig(Trains):
    """Sizes for RotNet rotation prediction (chapter 01); ``feature_depth`` is the encoder stage probed."""

    _SUMMARY = ("{dataset} | {encoder} width {width}, augmentation {aug_strength} | {training} | "
                "features of stage {feature_depth}")

    dataset: str = "mnist5k"
    encoder: str = "convnet"
    width: int = 16
    batch: int = 64
    steps: int = 1000
    max_seconds: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    ema_decay: float | None = None
    aug_strength: float = 0.5
    feature_depth: int = 2



@dataclass(frozen=True)
class VAEConfig(Trains):
    """Sizes for the convolutional VAE (chapter 03)."""

    _SUMMARY = ("{dataset} | latent {latent_dim}, width {width}, beta {beta} | {training} | VQ-VAE {vq_codes} codes "
                "x {vq_dim}, {vq_steps} steps")

    dataset: str = "mnist5k"
    latent_dim: int = 16
    width: int = 32
    batch: int = 128
    steps: int = 2000
    max_seconds: float | None = None
    lr: float = 2e-3
    warmup: int = 20
    ema_decay: float | None = None
    beta: float = 1.0
    eval_samples: int = 1     # Monte-Carlo samples per image for the held-out ELBO
    # the VQ-VAE of the chapter's last section (minidiff.ssl.vqvae): codebook size and code width, steps, and the
    # commitment weight (0.25 in the paper); batch and lr as above
    vq_codes: int = 64
    vq_dim: int = 16
    vq_steps: int = 1500
    vq_beta: float = 0.25

    def __post_init__(self):
        for name in ("vq_codes", "vq_dim", "vq_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {v!r}")
        if self.vq_codes < 2:
            raise ValueError(f"VAEConfig.vq_codes must be at least 2 (one code carries nothing), got {self.vq_codes}")
        if isinstance(self.vq_beta, bool) or not isinstance(self.vq_beta, (int, float)) or not self.vq_beta >= 0:
            raise ValueError(f"VAEConfig.vq_beta (the commitment weight) must be a number >= 0, got {self.vq_beta!r}")


@dataclass(frozen=True)
class SamplingConfig(Section):
    """Sampler comparisons (chapters 05 and 07) on a DDPM trained with ``Profile.vp_ddpm``.

    ``ddim_steps`` are the step counts of the quality-vs-steps curve; the notebooks assert that DDIM with 50 steps
    reaches a feature FID within ``fid_tolerance`` (relative) of the full ancestral sampler."""

    _SUMMARY = ("DDIM steps ({ddim_steps}), etas ({etas}) | {n_samples} samples | SDE NFE ({sde_nfe}) | likelihood of "
                "{likelihood_images} images, {likelihood_steps} steps | toy {toy_steps} steps, width {toy_hidden}")

    ddim_steps: tuple[int, ...] = (10, 20, 50, 100)
    etas: tuple[float, ...] = (0.0, 0.5, 1.0)
    n_samples: int = 500
    fid_tolerance: float = 1.0
    encode_steps: int = 100
    sde_nfe: tuple[int, ...] = (20, 50, 100)
    likelihood_images: int = 64
    likelihood_steps: int = 20
    toy_steps: int = 2000
    toy_hidden: int = 128
    dpm_variants: tuple[str, ...] = ("sde", "ode")   # DPM-Solver++(2M) variants compared at 50 calls

    def __post_init__(self):
        v = tuple(self.dpm_variants)
        if not v or any(x not in ("sde", "ode") for x in v) or "sde" not in v:
            raise ValueError(f"SamplingConfig.dpm_variants must be 'sde' or ('sde', 'ode') (chapter 05 asserts its "
                             f"claim on the SDE variant), got {self.dpm_variants!r}")



@dataclass(frozen=True)
class DiTChapterConfig(Trains):
    """Sizes for chapter 09. Every DiT trains class-conditionally (labels dropped with probability ``p_uncond``) on
    the latents of chapter 10's autoencoder: the ``ae_*`` fields equal the ``guidance`` section's in every profile,
    so one autoencoder is trained and shared (:func:`minidiff.recipes.shared_autoencoder`). The recipe is chapter 04's
    (``schedule``, ``prediction``, ``weighting``) and the sampler chapter 05's (``sampler``, ``sample_steps`` calls,
    ``n_samples`` digits, the same number of each label, drawn by the conditional model).

    Budgets: the base model (size ``base`` on ``base_patch`` x ``base_patch`` latent patches, adaLN-Zero) trains
    ``steps`` steps; a conditioning variant of it (``conditionings``) trains for the same *compute*, ``steps`` times
    the ratio of the base's forward FLOPs to its own (:func:`minidiff.recipes.dit_steps`); the ``scaling`` models
    (size, patch) train ``steps`` steps each, so their compute grows with their size, as in the paper's scaling
    plots. ``live_conditionings`` are the variants the chapter trains itself; the others come from the reference
    sweep (``benchmarks/dit_sweep.py``)."""

    _SUMMARY = ("{dataset} latents ({ae_latent_channels} ch, autoencoder {ae_steps} steps) | T={T} {schedule} "
                "{prediction}, loss weighting {weighting} | {base}/{base_patch}; scaling {scaling}; live "
                "conditionings {live_conditionings} | {training}, p_uncond {p_uncond} | {n_samples} samples, "
                "{sampler} {sample_steps} steps")

    SAMPLERS = ("ddim", "dpmpp_2m_sde")
    CONDITIONINGS = ("adaln-zero", "adaln", "in-context", "cross-attention")

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    prediction: str = "eps"
    weighting: str = "none"
    amp: str = "off"
    batch: int = 64
    steps: int = 200
    lr: float = 1e-3
    warmup: int = 20
    ema_decay: float = 0.99
    p_uncond: float = 0.1
    base: str = "DiT-Tiny"
    base_patch: int = 1
    conditionings: tuple[str, ...] = ("adaln-zero", "adaln", "in-context", "cross-attention")
    live_conditionings: tuple[str, ...] = ("adaln-zero", "adaln", "in-context", "cross-attention")
    scaling: tuple = (("DiT-Tiny", 1), ("DiT-Mini", 1))
    ae_latent_channels: int = 4
    ae_width: int = 16
    ae_steps: int = 100
    ae_kl_weight: float = 1e-3
    ae_lr: float = 3e-3
    n_samples: int = 100
    sample_steps: int = 20
    sampler: str = "ddim"

    def _summary_fields(self) -> dict:
        return {**super()._summary_fields(), "scaling": ", ".join(f"{name}/{p}" for name, p in self.scaling),
                "live_conditionings": ", ".join(self.live_conditionings)}

    def __post_init__(self):
        _check_recipe(self)
        bad = [c for c in (*self.conditionings, *self.live_conditionings) if c not in self.CONDITIONINGS]
        if bad or self.conditionings[:1] != ("adaln-zero",) or not set(self.live_conditionings) <= set(
                self.conditionings) or "adaln-zero" not in self.live_conditionings:
            raise ValueError(f"DiTChapterConfig: conditionings must start with 'adaln-zero' (the base model) and "
                             f"come from {self.CONDITIONINGS}, and live_conditionings must include 'adaln-zero' and "
                             f"be among them; got {self.conditionings!r} and {self.live_conditionings!r}")
        if not self.scaling or any(len(s) != 2 for s in self.scaling) or \
                (self.base, self.base_patch) not in tuple(tuple(s) for s in self.scaling):
            raise ValueError(f"DiTChapterConfig.scaling must list (size, patch) pairs including the base "
                             f"({self.base!r}, {self.base_patch}), got {self.scaling!r}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"DiTChapterConfig.p_uncond must be in [0, 1), got {self.p_uncond!r}")

    def ae_settings(self) -> dict:
        """The autoencoder's settings (what :func:`minidiff.recipes.shared_autoencoder` trains and caches by)."""
        return _ae_settings(self)



@dataclass(frozen=True)
class UNetChapterConfig(Trains):
    """Sizes for chapter 08: the U-Net of :data:`minidiff.nets.UNET_CONFIGS` named ``unet``, its ablations and an
    MLP baseline (:class:`minidiff.nets.ImageMLP`, ``mlp_hidden`` x ``mlp_depth``), each trained with the same budget:
    ``steps`` and, when set, ``max_seconds`` of wall-clock time. Equal time is the fair comparison when the
    variants' steps cost different amounts; the ``ci`` profile uses equal steps, which do not depend on the machine's
    load. The chapter trains ``live_variants``; ``benchmarks/unet_ablation.py`` trains all ``VARIANTS`` with the
    ``cpu`` profile's section over several seeds (the chapter's reference sweep).
    The recipe is chapter 04's (``prediction``, ``weighting``, ``anneal_by_time``, ``amp``); ``sampler`` is ``"ddim"``
    or ``"dpmpp_2m_sde"`` with ``sample_steps`` network calls. ``loss_t_fractions`` are the points of the
    loss-by-time-step curve, as fractions of ``T - 1``."""

    _SUMMARY = ("{dataset} | T={T} {schedule} {prediction}, loss weighting {weighting} | {unet}, MLP {mlp_hidden}x"
                "{mlp_depth} | {training} | loss by t on {eval_images} images | {n_samples} samples, {sampler} "
                "{sample_steps} steps")

    SAMPLERS = ("ddim", "dpmpp_2m_sde")
    # the networks of minidiff.recipes.unet_ablations
    VARIANTS = ("full", "no attention", "no skips", "additive time", "MLP")

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    prediction: str = "eps"
    weighting: str = "none"
    anneal_by_time: bool = False
    amp: str = "off"
    unet: str = "UNet-XS"
    # the networks the chapter trains live (the others come from the reference sweep)
    live_variants: tuple[str, ...] = ("full", "no attention")
    mlp_hidden: int = 512
    mlp_depth: int = 3
    batch: int = 64
    steps: int = 150
    max_seconds: float | None = None
    lr: float = 3e-3
    warmup: int = 30
    ema_decay: float = 0.99
    eval_images: int = 500
    loss_t_fractions: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
    n_samples: int = 200
    sample_steps: int = 20
    sampler: str = "ddim"

    def __post_init__(self):
        _check_recipe(self)
        unknown = [v for v in self.live_variants if v not in self.VARIANTS]
        if unknown or not self.live_variants or "full" not in self.live_variants:
            raise ValueError(f"UNetChapterConfig.live_variants must include 'full' and name only {self.VARIANTS}, "
                             f"got {self.live_variants!r}")
        if self.mlp_hidden < 2 or self.mlp_depth < 1:
            raise ValueError(f"UNetChapterConfig: need mlp_hidden >= 2 and mlp_depth >= 1, got {self.mlp_hidden}, "
                             f"{self.mlp_depth}")



@dataclass(frozen=True)
class GuidanceChapterConfig(Trains):
    """Sizes for chapter 10. A class-conditional pixel-space U-Net (``unet``) trains for ``steps`` / ``max_seconds``
    with label dropout ``p_uncond`` and is swept over the guidance ``scales``; a latent model of width
    ``latent_channels_unet`` gets the same wall time as the pixel model; the CLIP-style pair trains ``clip_steps`` and a
    text-conditioned latent model (reading the caption's words by cross-attention) ``text_steps`` /
    ``text_max_seconds``. ``compare_seconds`` (when set) is a shorter
    wall-time budget for the latent-vs-pixel comparison: the pixel model is snapshot after that many seconds, then
    resumes to its full budget; ``None`` compares at the pixel model's full training time.

    The recipe is chapter 04's (``weighting``, ``anneal_by_time``; the pixel model predicts ``prediction``, the latent
    models always v) and the samplers chapter 05's: ``sampler`` is ``"ddim"`` or ``"dpmpp_2m_sde"`` (DPM-Solver++(2M)
    SDE), ``sample_steps`` network calls (a guided call counts once: its two predictions share one batched pass).
    The latent models train with batch ``latent_batch``."""

    _SUMMARY = ("{dataset} | T={T} {schedule}, loss weighting {weighting} | {unet} ({prediction}), latent U-Net "
                "{latent_base_channels} ch (v, batch {latent_batch}), p_uncond {p_uncond} | {training} | "
                "autoencoder {ae_steps} steps, noisy classifier {clf_budget}, CLIP {clip_steps} steps, text model "
                "{text_steps} steps | scales ({scales}) | {n_samples} samples, {sampler} {sample_steps} steps")

    SAMPLERS = ("ddim", "dpmpp_2m_sde")

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    prediction: str = "eps"
    weighting: str = "none"
    anneal_by_time: bool = False
    unet: str = "UNet-XS"
    batch: int = 64
    latent_batch: int = 64
    steps: int = 300
    max_seconds: float | None = None
    lr: float = 3e-3
    warmup: int = 30
    ema_decay: float = 0.99
    p_uncond: float = 0.2
    ae_latent_channels: int = 4
    ae_width: int = 16
    ae_steps: int = 100
    ae_kl_weight: float = 1e-3
    ae_lr: float = 3e-3
    latent_base_channels: int = 32
    clip_dim: int = 32
    clip_width: int = 8
    clip_batch: int = 64
    clip_steps: int = 150
    text_steps: int = 150
    text_max_seconds: float | None = None
    # the noisy-image classifier of classifier guidance (minidiff.nets.NoisyClassifier, the pixel U-Net's patch)
    clf_base_channels: int = 16
    clf_steps: int = 150
    clf_max_seconds: float | None = None
    compare_seconds: float | None = None
    scales: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 6.0)
    n_samples: int = 200
    sample_steps: int = 20
    sampler: str = "ddim"

    def _summary_fields(self) -> dict:
        return {**super()._summary_fields(), "clf_budget": _budget(self.clf_steps, self.clf_max_seconds)}

    def __post_init__(self):
        _check_recipe(self)
        if self.latent_batch < 1 or self.clf_base_channels < 1 or self.clf_steps < 1:
            raise ValueError(f"GuidanceChapterConfig: latent_batch, clf_base_channels and clf_steps must be >= 1, got "
                             f"{self.latent_batch}, {self.clf_base_channels}, {self.clf_steps}")

    def ae_settings(self) -> dict:
        """The autoencoder's settings (what :func:`minidiff.recipes.shared_autoencoder` trains and caches by)."""
        return _ae_settings(self)

    def clip_train_config(self, **overrides) -> TrainConfig:
        """The CLIP pair's :class:`TrainConfig`: ``clip_steps`` at the chapter's ``lr``, no warmup, no EMA."""
        return TrainConfig(**{"steps": self.clip_steps, "lr": self.lr, "ema_decay": None, **overrides})

    def clf_train_config(self, **overrides) -> TrainConfig:
        """The noisy classifier's :class:`TrainConfig`: ``clf_steps`` / ``clf_max_seconds`` at the chapter's ``lr``
        and warmup, the learning rate annealed as the U-Net's, no EMA."""
        return TrainConfig(**{"steps": self.clf_steps, "max_seconds": self.clf_max_seconds, "lr": self.lr,
                              "warmup": self.warmup, "anneal_by_time": self.anneal_by_time, "ema_decay": None,
                              **overrides})

    def text_train_config(self, **overrides) -> TrainConfig:
        """The text-conditioned latent model's :class:`TrainConfig`: the U-Net's, with the text model's budgets."""
        return self.train_config(**{"steps": self.text_steps, "max_seconds": self.text_max_seconds, **overrides})



@dataclass(frozen=True)
class SSLDiffusionConfig(Trains):
    """Sizes for chapter 11: six recipes (``recipes``, named in :data:`minidiff.recipes.SSL_RECIPES`) train one
    unconditional denoiser each on chapter 10's 7 x 7 latents (the ``ae_*`` fields equal the ``dit`` and ``guidance``
    sections', so the autoencoder is shared): ``backbone`` ``"unet"``, a one-level U-Net of ``unet_channels``
    channels without attention (chapter 10's latent U-Net, unconditional), or ``"dit"``, the DiT ``dit`` on ``patch`` x
    ``patch`` patches (chapter 09's; 2.3x the U-Net's time per step on a CPU, and its unconditional baseline short of the digit
    regime: the reference run ``ssl_sweep_dit``), with chapter 04's recipe
    (``schedule``, ``prediction``, ``weighting``) for ``steps`` steps. The learning rate is constant after the warmup
    (``min_lr_ratio`` 1): the EMA weights at any step are then a finished model for that budget, so one run is read
    twice, at ``steps`` (equal steps) and at the step where its training time reaches the baseline's (equal time).
    Samples: ``n_samples`` digits by ``sampler`` with ``sample_steps`` calls.

    The frozen encoder is chapter 02's SimCLR encoder (:meth:`encoder_section`), depth ``encoder_depth`` for REPA's
    spatial targets. RCG's image model drops its representation with probability ``p_uncond`` and samples with
    classifier-free guidance of scale ``rcg_guidance`` on it (1: none; as RCG's pixel generator). RCG's representation
    diffusion model is an MLP (``rdm_hidden`` x ``rdm_depth``) trained
    ``rdm_steps`` on ``rdm_T`` steps; REPA aligns block ``repa_depth`` with weight ``repa_lambda``; the multi-task runs
    share ``mt_depth`` blocks with an SSL weight going from ``mt_weight_start`` to ``mt_weight_end`` (cosine) or fixed
    at ``mt_fixed_weight`` (views of strength ``aug_strength``). ``live_recipes`` are trained by the chapter over the
    ``seeds``; the others, and more seeds, come from the reference sweep (``benchmarks/ssl_sweep.py``)."""

    _SUMMARY = ("{dataset} latents ({ae_latent_channels} ch) | T={T} {schedule} {prediction}, loss weighting "
                "{weighting} | {net} unconditional | {training}, seeds ({seeds}) | live recipes "
                "{live_recipes} | {n_samples} samples, {sampler} {sample_steps} steps")

    SAMPLERS = ("ddim", "dpmpp_2m_sde")
    BACKBONES = ("dit", "unet")
    RECIPES = ("baseline", "rcg", "repa", "multitask-dynamic", "multitask-fixed", "noisy-features")

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    prediction: str = "eps"
    weighting: str = "none"
    amp: str = "off"
    backbone: str = "unet"
    dit: str = "DiT-Tiny"
    patch: int = 1
    unet_channels: int = 16
    batch: int = 32
    steps: int = 200
    lr: float = 2e-3
    min_lr_ratio: float = 1.0
    warmup: int = 20
    ema_decay: float = 0.99
    seeds: tuple[int, ...] = (0,)
    recipes: tuple[str, ...] = RECIPES
    live_recipes: tuple[str, ...] = RECIPES
    encoder_depth: int = 2
    p_uncond: float = 0.1
    rcg_guidance: float = 1.5
    rdm_hidden: int = 256
    rdm_depth: int = 3
    rdm_T: int = 100
    rdm_steps: int = 400
    repa_depth: int = 2
    repa_lambda: float = 0.5
    mt_depth: int = 2
    mt_weight_start: float = 1.0
    mt_weight_end: float = 0.05
    mt_fixed_weight: float = 0.5
    aug_strength: float = 0.5
    ae_latent_channels: int = 4
    ae_width: int = 16
    ae_steps: int = 100
    ae_kl_weight: float = 1e-3
    ae_lr: float = 3e-3
    n_samples: int = 100
    sample_steps: int = 20
    sampler: str = "ddim"

    def _summary_fields(self) -> dict:
        net = f"{self.dit}/{self.patch}" if self.backbone == "dit" else f"latent U-Net ({self.unet_channels} ch)"
        return {**super()._summary_fields(), "live_recipes": ", ".join(self.live_recipes), "net": net}

    def __post_init__(self):
        _check_recipe(self)
        bad = [r for r in (*self.recipes, *self.live_recipes) if r not in self.RECIPES]
        if bad or self.recipes[:1] != ("baseline",) or "baseline" not in self.live_recipes or \
                not set(self.live_recipes) <= set(self.recipes):
            raise ValueError(f"SSLDiffusionConfig: recipes must start with 'baseline' and come from {self.RECIPES}, "
                             f"and live_recipes must include 'baseline' and be among them; got {self.recipes!r} and "
                             f"{self.live_recipes!r}")
        if self.backbone not in self.BACKBONES:
            raise ValueError(f"SSLDiffusionConfig.backbone must be one of {self.BACKBONES}, got {self.backbone!r}")
        if self.backbone == "unet":      # the one-level latent U-Net has 3 ResBlocks before its up path
            for name in ("repa_depth", "mt_depth"):
                if not 1 <= getattr(self, name) <= 3:
                    raise ValueError(f"SSLDiffusionConfig.{name} must be a block of the latent U-Net (1, 2 or 3: its "
                                     f"down ResBlock, then the two of its middle), got {getattr(self, name)!r}")
        if isinstance(self.unet_channels, bool) or not isinstance(self.unet_channels, int) or self.unet_channels < 1:
            raise ValueError(f"SSLDiffusionConfig.unet_channels must be a positive int, got {self.unet_channels!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"SSLDiffusionConfig.seeds must be distinct seeds, at least one, got {self.seeds!r}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"SSLDiffusionConfig.p_uncond must be in [0, 1), got {self.p_uncond!r}")
        if not self.rcg_guidance >= 1 or (self.rcg_guidance > 1 and self.p_uncond == 0):
            raise ValueError(f"SSLDiffusionConfig.rcg_guidance must be >= 1 (1: no guidance), and guidance needs "
                             f"p_uncond > 0; got rcg_guidance={self.rcg_guidance!r}, p_uncond={self.p_uncond!r}")

    def train_config(self, **overrides) -> TrainConfig:
        """The denoiser's :class:`TrainConfig`, with this section's ``min_lr_ratio`` (1: constant after warmup)."""
        return super().train_config(**{"min_lr_ratio": self.min_lr_ratio, **overrides})

    def ae_settings(self) -> dict:
        """The autoencoder's settings (what :func:`minidiff.recipes.shared_autoencoder` trains and caches by)."""
        return _ae_settings(self)

    def encoder_section(self, ssl: "SSLConfig") -> "SSLConfig":
        """The settings of the frozen encoder: chapter 02's SimCLR section ``ssl`` (the profile's ``P.ssl``) as it is
        when it trains on this chapter's dataset (then chapter 02's encoder is reused,
        :func:`minidiff.recipes.shared_simclr`), else the same recipe on this chapter's digits with the digits'
        ConvNet (the ``gpu`` profile's chapter 02 trains a ResNet on CIFAR-10)."""
        if ssl.dataset == self.dataset:
            return ssl
        return replace(ssl, dataset=self.dataset, encoder="convnet")

    def rdm_train_config(self, **overrides) -> TrainConfig:
        """The representation diffusion model (an MLP): ``rdm_steps`` at lr 2e-3, warmup 20, EMA 0.99."""
        return TrainConfig(**{"steps": self.rdm_steps, "lr": 2e-3, "warmup": 20, "ema_decay": 0.99, **overrides})


@dataclass(frozen=True)
class KernelsChapterConfig(Section):
    """Chapter 12: shapes for checking the Triton kernels (through the interpreter on CPU, compiled on GPU) and for
    timing the torch references. ``timing_numel`` are the tensor sizes of the timing sweep, ``reps`` the repeats
    whose median is reported."""

    _SUMMARY = ("checks on shapes ({check_images}), ({check_tokens}), ({check_groups}) | "
                "timing sizes ({timing_numel}), median of {reps}")

    check_images: tuple[int, int, int, int] = (4, 1, 28, 28)
    check_tokens: tuple[int, int, int] = (2, 16, 64)
    check_groups: tuple[int, int, int, int, int] = (2, 16, 7, 7, 4)
    timing_numel: tuple[int, ...] = (2 ** 12, 2 ** 16, 2 ** 20, 2 ** 22)
    reps: int = 20



@dataclass(frozen=True)
class FlowChapterConfig(Trains):
    """Chapter 13: flow matching on 2-D toys and on digits.

    The toy part first follows the exact velocity field of ``toy_support`` data points from ``toy_exact_samples``
    noise draws (``toy_exact_steps`` Heun steps), then trains a time-conditioned MLP with flow matching (``toy_*``) on
    each path of ``toy_paths`` and measures its ``toy_eval_samples`` samples at ``toy_nfe`` Euler steps (8 is the
    step count the text compares) and ``toy_path_samples`` paths of ``toy_path_steps`` steps; then one reflow round:
    ``reflow_pairs`` couplings drawn with ``coupling_steps`` Heun steps, ``reflow_steps`` more training steps at
    ``toy_reflow_lr``, samples at ``toy_reflow_nfe`` steps (1 among them).

    The digit part trains chapter 04's U-Net (the profile's ``ddpm`` network) twice with the same optimisation and
    the same wall-clock budget (``max_seconds``; ``steps`` caps it): once with flow matching on the ``path`` with
    ``time_sampling`` times, once with chapter 04's DDPM objective (the profile's ``ddpm`` recipe), and compares FID
    at ``nfe`` network calls on ``n_samples`` samples. The DDPM twin predicts ``ddpm_prediction`` (``"v"``: with
    chapter 04's epsilon the first step of a few-step sampler divides by the nearly zero sqrt(abar) of the chain's
    last step; the reference run has both). The multi-seed comparison is the reference run
    ``flow_vs_ddpm`` (benchmarks/flow_vs_ddpm.py)."""

    _SUMMARY = ("toy {toy_dataset} ({toy_points} points), MLP {toy_hidden}x{toy_depth}, {toy_steps} steps, reflow "
                "{reflow_pairs} pairs x {reflow_steps} steps | digits: {path} path, {time_sampling} times, DDPM "
                "twin predicts {ddpm_prediction} | {training} | NFE ({nfe}) | {n_samples} samples")

    PATHS = ("linear", "cosine", "vp")
    TIME_SAMPLINGS = ("uniform", "logit_normal")

    toy_dataset: str = "moons"
    toy_points: int = 8192
    toy_hidden: int = 128
    toy_depth: int = 3
    toy_batch: int = 512
    toy_steps: int = 2000
    toy_lr: float = 2e-3
    toy_warmup: int = 50
    toy_ema_decay: float = 0.99
    toy_paths: tuple[str, ...] = ("linear", "vp")
    toy_support: int = 512
    toy_exact_samples: int = 256
    toy_exact_steps: int = 64
    toy_eval_samples: int = 2000
    toy_nfe: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    toy_path_samples: int = 500
    toy_path_steps: int = 32
    reflow_pairs: int = 8192
    reflow_steps: int = 1000
    toy_reflow_lr: float = 1e-3
    toy_reflow_nfe: tuple[int, ...] = (1, 2, 4)
    coupling_steps: int = 16
    dataset: str = "mnist5k"
    path: str = "linear"
    time_sampling: str = "logit_normal"
    ddpm_prediction: str = "v"
    amp: str = "off"
    batch: int = 64
    steps: int = 100_000
    max_seconds: float | None = 150.0
    anneal_by_time: bool = True
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.995
    nfe: tuple[int, ...] = (1, 2, 4, 8, 16)
    n_samples: int = 500
    trajectory_samples: int = 100

    def __post_init__(self):
        bad = [p for p in (self.path, *self.toy_paths) if p not in self.PATHS]
        if bad or not self.toy_paths:
            raise ValueError(f"FlowChapterConfig paths must be among {self.PATHS}, got path={self.path!r}, "
                             f"toy_paths={self.toy_paths!r}")
        if self.time_sampling not in self.TIME_SAMPLINGS:
            raise ValueError(f"FlowChapterConfig.time_sampling must be one of {self.TIME_SAMPLINGS}, got "
                             f"{self.time_sampling!r}")
        if self.ddpm_prediction not in ("eps", "x0", "v"):
            raise ValueError(f"FlowChapterConfig.ddpm_prediction must be 'eps', 'x0' or 'v', got "
                             f"{self.ddpm_prediction!r}")
        for name, must in (("nfe", None), ("toy_nfe", 8), ("toy_reflow_nfe", 1)):
            ns = getattr(self, name)
            if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ns) \
                    or list(ns) != sorted(set(ns)) or (must is not None and must not in ns):
                also = f" including {must} (the chapter's text compares at {must})" if must else ""
                raise ValueError(f"FlowChapterConfig.{name} must be increasing positive ints{also}, got {ns!r}")
        counts = ("toy_points", "toy_support", "toy_exact_samples", "toy_exact_steps", "toy_eval_samples",
                  "toy_path_samples", "toy_path_steps", "reflow_pairs", "coupling_steps")
        small = [f"{k}={getattr(self, k)!r}" for k in counts
                 if isinstance(getattr(self, k), bool) or not isinstance(getattr(self, k), int) or getattr(self, k) < 1]
        if small:
            raise ValueError(f"FlowChapterConfig: {', '.join(small)} must be positive ints")
        if self.toy_support > self.toy_points or self.toy_eval_samples > self.toy_points \
                or self.toy_path_samples > self.toy_eval_samples:
            raise ValueError(f"FlowChapterConfig: toy_support ({self.toy_support}) and toy_eval_samples "
                             f"({self.toy_eval_samples}) are drawn from the toy_points ({self.toy_points}), and "
                             f"toy_path_samples ({self.toy_path_samples}) from toy_eval_samples")


@dataclass(frozen=True)
class Profile:
    """All sizes for one budget. Immutable: use :func:`dataclasses.replace` to experiment."""

    name: str
    description: str
    toy: ToyDiffusionConfig
    ddpm: ImageDiffusionConfig
    ssl: SSLConfig = field(default_factory=SSLConfig)
    rotation: RotationConfig = field(default_factory=RotationConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    # a T = 1000 linear-schedule DDPM: the discretisation of the VP SDE (beta 0.1..20), used by chapters 05 and 07
    vp_ddpm: ImageDiffusionConfig = field(default_factory=lambda: ImageDiffusionConfig(T=1000, schedule="linear"))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    dit: DiTChapterConfig = field(default_factory=DiTChapterConfig)
    unet: UNetChapterConfig = field(default_factory=UNetChapterConfig)
    guidance: GuidanceChapterConfig = field(default_factory=GuidanceChapterConfig)
    ssl_diffusion: SSLDiffusionConfig = field(default_factory=SSLDiffusionConfig)
    kernels: KernelsChapterConfig = field(default_factory=KernelsChapterConfig)
    flow: FlowChapterConfig = field(default_factory=FlowChapterConfig)
    # expected runtime (s) of each chapter on the machine ``runtime_on``; the banner says it in words
    # (minidiff.config.runtime.runtime_text); chapters in ``runtime_estimates`` were estimated, not measured
    runtime_s: Mapping[str, float] = field(default_factory=dict)
    runtime_on: str = "2 CPU cores"
    runtime_estimates: frozenset = frozenset()
    # max time (s) a chapter may take in this profile; checked by the notebook tests; ``chapter_budgets`` raises it
    # for named chapters (chapter 11 may take 15 minutes in ``cpu``)
    chapter_budget_s: float = 600.0
    chapter_budgets: Mapping[str, float] = field(default_factory=dict)
    # progress bars on a chapter's sampling calls (``progress=P.progress``): on where sampling takes long enough to
    # wonder (cpu, gpu), off in ci, whose runs take seconds
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "runtime_s", MappingProxyType(dict(self.runtime_s)))
        object.__setattr__(self, "runtime_estimates", frozenset(self.runtime_estimates))
        object.__setattr__(self, "chapter_budgets", MappingProxyType(dict(self.chapter_budgets)))

    def budget_for(self, chapter: str) -> float:
        """The most seconds chapter ``chapter`` (``"11_ssl_meets_diffusion"``) may take in this profile."""
        return float(self.chapter_budgets.get(chapter, self.chapter_budget_s))

    def summary(self, section: str) -> str:
        """One line with the sizes a chapter runs with, e.g. ``P.summary("ddpm")`` -> ``ddpm (ci): mnist5k | T=50
        cosine eps | ...``."""
        part = getattr(self, section, None)
        if not hasattr(part, "summary"):
            raise ValueError(f"profile has no section {section!r}; expected one of "
                             f"{', '.join(f.name for f in fields(self) if hasattr(getattr(self, f.name), 'summary'))}")
        return f"{section} ({self.name}): {part.summary()}"


