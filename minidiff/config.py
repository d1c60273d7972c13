"""Profiles, device choice and seeding.

Every chapter reads its sizes from here, never from ad-hoc ``if`` branches in cells. One notebook
runs at three budgets:

========  ======================  ==============================================  ==========================
profile   who                     data                                            budget
========  ======================  ==============================================  ==========================
``ci``    CI, nbval, make test    offline only: MNIST-5k, sklearn digits, 2-D toys <= 60 s a chapter, 2 cores
``cpu``   a learner without GPU   offline MNIST-5k (torchvision data if online)    <= 10 min a chapter
``gpu``   Colab / local GPU       torchvision MNIST, Fashion-MNIST, CIFAR-10       <= 20 min on a Colab T4
========  ======================  ==============================================  ==========================

The profile is ``$MINIDIFF_PROFILE`` when set, else ``gpu`` when CUDA is available, else ``cpu``.

Example::

    from minidiff import config
    P = config.get_profile()          # frozen dataclass of sizes
    print(config.banner("04_ddpm"))   # one line: profile, device, expected runtime
    config.seed_everything(0)
"""

from __future__ import annotations

import os
import random
import re
import warnings
from dataclasses import dataclass, field, fields, is_dataclass, replace
from types import MappingProxyType
from typing import Mapping

import numpy as np
import torch

PROFILE_ENV = "MINIDIFF_PROFILE"
CHECKPOINT_ENV = "MINIDIFF_CHECKPOINT_DIR"
DEVICE_ENV = "MINIDIFF_DEVICE"
PROFILE_NAMES = ("ci", "cpu", "gpu")


@dataclass(frozen=True)
class ToyDiffusionConfig:
    """Sizes for diffusion on a 2-D toy distribution (a time-conditioned MLP)."""

    dataset: str = "moons"
    n_points: int = 8192
    schedule: str = "linear"
    T: int = 100
    hidden: int = 128
    depth: int = 3
    batch: int = 512
    steps: int = 1500
    lr: float = 2e-3
    n_samples: int = 2000


@dataclass(frozen=True)
class ImageDiffusionConfig:
    """Sizes for DDPM on 28x28 digits with the compact U-Net.

    ``steps`` is the step budget and ``max_seconds`` the wall-clock budget; training stops at
    whichever comes first. ``n_samples`` images are generated for FID/KID.
    """

    dataset: str = "mnist5k"
    T: int = 1000
    schedule: str = "cosine"
    prediction: str = "eps"
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
class SSLConfig:
    """Sizes for self-supervised pretraining (chapters 01-02) and its evaluation.

    Training stops after ``steps`` or ``max_seconds``, whichever comes first (``None`` = no time limit; the ``ci``
    profile uses steps only, so its numbers are reproducible). Features are judged by a linear probe trained on
    ``probe_per_class`` labels per class, averaged over ``probe_repeats`` labelled subsets, and by weighted kNN.
    The notebooks assert that self-supervised features beat raw pixels and a random encoder by ``min_margin``.
    """

    dataset: str = "mnist5k"
    encoder: str = "convnet"          # "convnet" (28x28 digits) or "resnet18" (CIFAR stem)
    width: int = 32
    batch: int = 256
    steps: int = 1000
    max_seconds: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
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


@dataclass(frozen=True)
class RotationConfig:
    """Sizes for RotNet rotation prediction (chapter 01); ``feature_depth`` is the encoder stage probed."""

    dataset: str = "mnist5k"
    encoder: str = "convnet"
    width: int = 16
    batch: int = 64
    steps: int = 1000
    max_seconds: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    aug_strength: float = 0.5
    feature_depth: int = 2


@dataclass(frozen=True)
class VAEConfig:
    """Sizes for the convolutional VAE (chapter 03)."""

    dataset: str = "mnist5k"
    latent_dim: int = 16
    width: int = 32
    batch: int = 128
    steps: int = 2000
    max_seconds: float | None = None
    lr: float = 2e-3
    beta: float = 1.0
    eval_samples: int = 1     # Monte-Carlo samples per image for the held-out ELBO


@dataclass(frozen=True)
class SamplingConfig:
    """Sampler comparisons (chapters 05 and 07) on a DDPM trained with ``Profile.vp_ddpm``.

    ``ddim_steps`` are the step counts of the quality-vs-steps curve; the notebooks assert that DDIM with 50 steps
    reaches a feature FID within ``fid_tolerance`` (relative) of the full ancestral sampler."""

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
class DiTChapterConfig:
    """Sizes for chapter 09: every model trains ``steps`` steps (same data, same schedule) so that the comparison is
    at equal steps; ``scaling`` lists (config name, overrides) for the quality-vs-GFLOPs plot."""

    dataset: str = "mnist5k"
    T: int = 50
    batch: int = 64
    steps: int = 200
    lr: float = 1e-3
    ema_decay: float = 0.99
    base: str = "DiT-Tiny/4"
    base_patch: int = 7
    scaling: tuple = (("DiT-Tiny/4", 7), ("DiT-Tiny/4", 4), ("DiT-Mini/4", 7))
    n_samples: int = 100
    sample_steps: int = 20


@dataclass(frozen=True)
class UNetChapterConfig:
    """Sizes for chapter 08: the U-Net of :data:`minidiff.nets.UNET_CONFIGS` named ``unet`` and its ablations, each
    trained for the same number of ``steps`` (a wall-clock budget ``max_seconds`` can be added, but equal steps keep
    the ablation independent of the machine's load). ``loss_t_fractions`` are the
    points of the loss-by-time-step curve, as fractions of ``T - 1``."""

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    unet: str = "UNet-XS"
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


@dataclass(frozen=True)
class GuidanceChapterConfig:
    """Sizes for chapter 10. A class-conditional pixel-space U-Net (``unet``) trains for ``steps`` / ``max_seconds``
    with label dropout ``p_uncond`` and is swept over the guidance ``scales``; a latent model of width
    ``latent_channels_unet`` gets the same wall time as the pixel model; the CLIP-style pair trains ``clip_steps`` and a
    text-conditioned latent model ``text_steps`` / ``text_max_seconds``. ``compare_seconds`` (when set) is a shorter
    wall-time budget for the latent-vs-pixel comparison: the pixel model is snapshot after that many seconds, then
    resumes to its full budget; ``None`` compares at the pixel model's full training time."""

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    unet: str = "UNet-XS"
    batch: int = 64
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
    latent_base_channels: int = 32
    clip_dim: int = 32
    clip_width: int = 8
    clip_batch: int = 64
    clip_steps: int = 150
    text_steps: int = 150
    text_max_seconds: float | None = None
    compare_seconds: float | None = None
    scales: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 6.0)
    n_samples: int = 200
    sample_steps: int = 20


@dataclass(frozen=True)
class SSLDiffusionConfig:
    """Sizes for chapter 11: a DiT (``dit`` with patch ``patch``) trained for ``steps`` by five recipes, each over the
    ``seeds``, with the feature FID of ``n_eval`` DDIM samples every ``eval_every`` steps. The frozen encoder is a
    SimCLR ConvNet of width ``ssl_width`` trained ``ssl_steps``; the representation diffusion model (RCG) is an MLP
    trained ``rdm_steps``; REPA aligns block ``repa_depth`` with weight ``repa_lambda``; the multi-task runs share
    ``mt_depth`` blocks with an SSL weight going from ``mt_weight_start`` to ``mt_weight_end`` (or fixed at
    ``mt_fixed_weight``)."""

    dataset: str = "mnist5k"
    T: int = 50
    schedule: str = "cosine"
    dit: str = "DiT-Tiny/4"
    patch: int = 7
    batch: int = 64
    steps: int = 300
    lr: float = 3e-3
    warmup: int = 20
    ema_decay: float = 0.99
    eval_every: int = 100
    n_eval: int = 100
    sample_steps: int = 20
    seeds: tuple[int, ...] = (0,)
    ssl_width: int = 16
    ssl_batch: int = 256
    ssl_steps: int = 60
    aug_strength: float = 0.5
    p_uncond: float = 0.1
    rdm_hidden: int = 128
    rdm_depth: int = 3
    rdm_steps: int = 400
    repa_depth: int = 1
    repa_lambda: float = 0.5
    mt_depth: int = 1
    mt_weight_start: float = 1.0
    mt_weight_end: float = 0.05
    mt_fixed_weight: float = 0.5


@dataclass(frozen=True)
class KernelsChapterConfig:
    """Chapter 12: shapes for checking the Triton kernels (through the interpreter on CPU, compiled on GPU) and for
    timing the torch references. ``timing_numel`` are the tensor sizes of the timing sweep, ``reps`` the repeats
    whose median is reported."""

    check_images: tuple[int, int, int, int] = (4, 1, 28, 28)
    check_tokens: tuple[int, int, int] = (2, 16, 64)
    check_groups: tuple[int, int, int, int, int] = (2, 16, 7, 7, 4)
    timing_numel: tuple[int, ...] = (2 ** 12, 2 ** 16, 2 ** 20, 2 ** 22)
    reps: int = 20


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
    # expected runtime of each chapter in this profile, for the banner
    runtimes: Mapping[str, str] = field(default_factory=dict)
    # max time (s) a chapter may take in this profile; checked by the notebook tests
    chapter_budget_s: float = 600.0

    def __post_init__(self):
        object.__setattr__(self, "runtimes", MappingProxyType(dict(self.runtimes)))


_PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="CI / quick check: offline data, tiny models, every chapter under 60 s on 2 CPU cores",
        toy=ToyDiffusionConfig(n_points=4096, T=100, hidden=64, depth=2, batch=256, steps=700, lr=3e-3,
                               n_samples=1000),
        ddpm=ImageDiffusionConfig(
            dataset="mnist5k", T=50, schedule="cosine", prediction="eps", base_channels=16,
            channel_mults=(1, 2), attention=False, patch=2, batch=64, steps=350, max_seconds=None, lr=3e-3,
            warmup=30, ema_decay=0.99, n_samples=250, sample_batch=250,
        ),
        ssl=SSLConfig(width=16, batch=256, steps=90, lr=3e-3, moco_steps=70, embedding_2d="pca", n_embed=1000),
        rotation=RotationConfig(width=16, batch=64, steps=200, lr=3e-3, aug_strength=0.5, feature_depth=2),
        vae=VAEConfig(latent_dim=16, width=16, batch=128, steps=300, lr=3e-3),
        vp_ddpm=ImageDiffusionConfig(
            dataset="mnist5k", T=1000, schedule="linear", prediction="eps", base_channels=16, channel_mults=(1, 2),
            attention=False, patch=2, batch=64, steps=300, max_seconds=None, lr=3e-3, warmup=30, ema_decay=0.99,
            n_samples=200, sample_batch=200,
        ),
        sampling=SamplingConfig(ddim_steps=(10, 20, 50), etas=(0.0, 1.0), n_samples=64, fid_tolerance=1.0,
                                encode_steps=50, sde_nfe=(20, 50), likelihood_images=32, likelihood_steps=25,
                                toy_steps=600, toy_hidden=64, dpm_variants=("sde",)),
        dit=DiTChapterConfig(steps=200, scaling=(("DiT-Tiny/4", 7), ("DiT-Tiny/4", 4), ("DiT-Mini/4", 7)),
                             n_samples=100, sample_steps=20),
        unet=UNetChapterConfig(unet="UNet-XS", T=50, batch=64, steps=100, eval_images=300, n_samples=100),
        guidance=GuidanceChapterConfig(unet="UNet-XS", T=50, batch=64, steps=350, ae_steps=100, clip_steps=120,
                                       text_steps=100, compare_seconds=4.0, scales=(0.0, 1.0, 3.0, 6.0),
                                       n_samples=150),
        ssl_diffusion=SSLDiffusionConfig(steps=160, eval_every=80, n_eval=64, seeds=(0,), ssl_steps=40,
                                         ssl_batch=128, rdm_steps=300),
        runtimes={"01_rotation": "about 45 s on 2 CPU cores", "02_contrastive": "about 50 s on 2 CPU cores",
                  "03_vae": "about 30 s on 2 CPU cores", "04_ddpm": "about 45 s on 2 CPU cores",
                  "05_sampling": "about 50 s on 2 CPU cores", "06_score_matching": "about 15 s on 2 CPU cores",
                  "07_sde": "about 35 s on 2 CPU cores",
                  "08_unet": "about 50 s on 2 CPU cores", "09_dit": "about 45 s on 2 CPU cores",
                  "10_latent_and_guidance": "about 55 s on 2 CPU cores",
                  "11_ssl_meets_diffusion": "about 40 s on 2 CPU cores",
                  "12_kernels_and_speed": "about 10 s on 2 CPU cores"},
        kernels=KernelsChapterConfig(timing_numel=(2 ** 12, 2 ** 16, 2 ** 20), reps=10),
        chapter_budget_s=60.0,
    ),
    "cpu": Profile(
        name="cpu",
        description="a learner's laptop without GPU: offline MNIST-5k, minutes per chapter",
        toy=ToyDiffusionConfig(n_points=8192, T=100, hidden=128, depth=3, batch=512, steps=2000, lr=2e-3,
                               n_samples=2000),
        ddpm=ImageDiffusionConfig(
            dataset="mnist5k", T=200, schedule="cosine", prediction="eps", base_channels=32,
            channel_mults=(1, 2), attention=False, patch=2, batch=64, steps=4000, max_seconds=330.0, lr=2e-3,
            warmup=100, ema_decay=0.995, n_samples=500, sample_batch=500,
        ),
        ssl=SSLConfig(width=32, batch=256, steps=4000, max_seconds=180.0, lr=3e-3, moco_steps=4000,
                      moco_max_seconds=150.0, embedding_2d="tsne", n_embed=1000),
        rotation=RotationConfig(width=32, batch=64, steps=4000, max_seconds=180.0, lr=3e-3, aug_strength=0.5,
                                feature_depth=2),
        vae=VAEConfig(latent_dim=16, width=32, batch=128, steps=4000, max_seconds=180.0, lr=2e-3),
        vp_ddpm=ImageDiffusionConfig(
            dataset="mnist5k", T=1000, schedule="linear", prediction="eps", base_channels=32, channel_mults=(1, 2),
            attention=False, patch=2, batch=64, steps=4000, max_seconds=200.0, lr=2e-3, warmup=100, ema_decay=0.995,
            n_samples=300, sample_batch=300,
        ),
        sampling=SamplingConfig(ddim_steps=(10, 20, 50, 100), etas=(0.0, 1.0), n_samples=300,
                                fid_tolerance=1.0, encode_steps=100, sde_nfe=(20, 50, 100),
                                likelihood_images=100, likelihood_steps=50, toy_steps=2000, toy_hidden=128),
        dit=DiTChapterConfig(steps=600, scaling=(("DiT-Tiny/4", 7), ("DiT-Tiny/4", 4), ("DiT-Mini/4", 7),
                                                 ("DiT-Mini/4", 4)), n_samples=300, sample_steps=50),
        unet=UNetChapterConfig(unet="UNet-S", T=200, batch=64, steps=500, eval_images=500,
                               n_samples=300, sample_steps=25),
        guidance=GuidanceChapterConfig(unet="UNet-S", T=200, batch=64, steps=100_000, max_seconds=120.0, ae_steps=600,
                                       ae_width=32, clip_steps=400, text_steps=100_000, text_max_seconds=60.0,
                                       n_samples=300, sample_steps=25),
        ssl_diffusion=SSLDiffusionConfig(steps=1200, eval_every=300, n_eval=200, seeds=(0, 1, 2), ssl_steps=200,
                                         rdm_steps=2000),
        runtimes={"01_rotation": "about 4.5 min on 2 CPU cores", "02_contrastive": "about 7 min on 2 CPU cores",
                  "03_vae": "about 5.5 min on 2 CPU cores", "04_ddpm": "about 8 min on 2 CPU cores",
                  "05_sampling": "about 8 min on 2 CPU cores", "06_score_matching": "about 1 min on 2 CPU cores",
                  "07_sde": "about 5.5 min on 2 CPU cores",
                  "08_unet": "about 6.5 min on 2 CPU cores", "09_dit": "about 3.5 min on 2 CPU cores",
                  "10_latent_and_guidance": "about 7.5 min on 2 CPU cores",
                  "11_ssl_meets_diffusion": "about 8.5 min on 2 CPU cores",
                  "12_kernels_and_speed": "about 20 s on 2 CPU cores"},
        chapter_budget_s=600.0,
    ),
    "gpu": Profile(
        name="gpu",
        description="Colab / local GPU: full MNIST via torchvision, bigger U-Net, T = 1000",
        toy=ToyDiffusionConfig(n_points=16384, T=200, hidden=256, depth=4, batch=1024, steps=4000, lr=1e-3,
                               n_samples=4000),
        ddpm=ImageDiffusionConfig(
            dataset="mnist", T=1000, schedule="cosine", prediction="eps", base_channels=64,
            channel_mults=(1, 2, 2), attention=True, patch=1, batch=256, steps=12000, max_seconds=720.0, lr=1e-3,
            warmup=500, ema_decay=0.999, n_samples=2000, sample_batch=1000,
        ),
        ssl=SSLConfig(dataset="cifar10", encoder="resnet18", width=64, batch=512, steps=20000, max_seconds=540.0,
                      lr=2e-3, weight_decay=1e-6, temperature=0.5, proj_hidden=2048, proj_dim=128, moco_steps=20000,
                      moco_max_seconds=360.0, moco_queue=4096, moco_momentum=0.99, moco_temperature=0.2,
                      knn_k=200, embedding_2d="tsne", n_embed=2000),
        rotation=RotationConfig(dataset="cifar10", encoder="resnet18", width=64, batch=128, steps=20000,
                                max_seconds=600.0, lr=2e-3, aug_strength=1.0, feature_depth=2),
        vae=VAEConfig(dataset="mnist", latent_dim=32, width=64, batch=256, steps=20000, max_seconds=480.0, lr=1e-3),
        vp_ddpm=ImageDiffusionConfig(
            dataset="mnist", T=1000, schedule="linear", prediction="eps", base_channels=64, channel_mults=(1, 2, 2),
            attention=True, patch=1, batch=256, steps=12000, max_seconds=600.0, lr=1e-3, warmup=500,
            ema_decay=0.999, n_samples=2000, sample_batch=1000,
        ),
        sampling=SamplingConfig(ddim_steps=(10, 20, 50, 100, 250), etas=(0.0, 0.5, 1.0), n_samples=2000,
                                fid_tolerance=1.0, encode_steps=100, sde_nfe=(50, 100, 250, 500),
                                likelihood_images=500, likelihood_steps=100, toy_steps=4000, toy_hidden=256),
        dit=DiTChapterConfig(steps=3000, batch=128, T=1000, lr=1e-3, ema_decay=0.999,
                             scaling=(("DiT-Mini/4", 7), ("DiT-Mini/4", 4), ("DiT-Mini/4", 2), ("DiT-S/4", 4)),
                             n_samples=1000, sample_steps=50),
        unet=UNetChapterConfig(dataset="mnist", unet="UNet-L", T=1000, batch=128, steps=3000,
                               lr=1e-3, warmup=200, ema_decay=0.999, eval_images=2000, n_samples=1000, sample_steps=50),
        guidance=GuidanceChapterConfig(dataset="mnist", unet="UNet-L", T=1000, batch=128, steps=100_000,
                                       max_seconds=300.0, lr=1e-3, warmup=200, ema_decay=0.999, ae_steps=3000,
                                       ae_width=64, latent_base_channels=128, clip_steps=2000, clip_batch=256,
                                       text_steps=100_000, text_max_seconds=240.0, n_samples=1000, sample_steps=50),
        ssl_diffusion=SSLDiffusionConfig(dataset="mnist", T=1000, dit="DiT-Mini/4", patch=4, batch=128, steps=4000,
                                         eval_every=500, n_eval=1000, sample_steps=50, seeds=(0, 1, 2), ssl_width=32,
                                         ssl_batch=512, ssl_steps=2000, rdm_steps=5000, repa_depth=2, mt_depth=2),
        runtimes={"01_rotation": "about 12 min on a Colab T4", "02_contrastive": "about 17 min on a Colab T4",
                  "03_vae": "about 9 min on a Colab T4", "04_ddpm": "about 15 min on a Colab T4",
                  "05_sampling": "about 18 min on a Colab T4", "06_score_matching": "about 1 min on a Colab T4",
                  "07_sde": "about 18 min on a Colab T4",
                  "08_unet": "about 14 min on a Colab T4 (estimate)", "09_dit": "about 15 min on a Colab T4",
                  "10_latent_and_guidance": "about 18 min on a Colab T4 (estimate)",
                  "11_ssl_meets_diffusion": "about 20 min on a Colab T4 (estimate)",
                  "12_kernels_and_speed": "about 2 min on a Colab T4 (estimate)"},
        chapter_budget_s=1200.0,
    ),
}


# ----------------------------------------------------------------------------- smoke runs (MINIDIFF_SMOKE=1)
# A smoke run executes every code path of a profile quickly (the GPU check, scripts/gpu_check.py, runs each chapter
# in the gpu profile this way): every budget field of every section is capped, found by its name so that fields
# added later are capped too, and minidiff.data replaces every download by offline data. Models, shapes and batch
# sizes stay those of the profile.

SMOKE_ENV = "MINIDIFF_SMOKE"
SMOKE_MAX_SECONDS = 20.0   # wall-clock budgets are capped at this (or at the ci value when that is smaller)
SMOKE_FIELDS = {           # kind of budget -> field-name pattern
    "steps": re.compile(r"(^|_)steps$|^warmup$|^eval_every$"),                 # step budgets and step counts
    "seconds": re.compile(r"(^|_)seconds$"),                                      # wall-clock budgets
    "count": re.compile(r"^n_|_(samples|images)$|(^|_)(reps|repeats)$"),          # samples, images, repeats
    "sweep": re.compile(r"(^|_)(steps|etas|nfe|scales|seeds|scaling|numel|variants|fractions)$"),   # tuples swept
}


def smoke() -> bool:
    """Whether ``$MINIDIFF_SMOKE`` asks for a smoke run (``1``; unset, empty or ``0``: no)."""
    value = os.environ.get(SMOKE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{SMOKE_ENV}={value!r} is not understood; expected 1 (smoke run) or 0 / unset (normal run)")
    return value == "1"


def smoke_kind(name: str, value) -> str | None:
    """The kind of budget a section field is (``"steps"``, ``"seconds"``, ``"count"``, ``"sweep"``), from its name
    and value (sweeps are tuples, the others numbers or ``None``), or ``None`` when it is not a budget."""
    if isinstance(value, tuple):
        return "sweep" if SMOKE_FIELDS["sweep"].search(name) else None
    if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
        return None
    return next((k for k in ("steps", "seconds", "count") if SMOKE_FIELDS[k].search(name)), None)


def smoke_profile(profile: Profile, reference: Profile | None = None) -> Profile:
    """``profile`` with every budget of every section capped for a smoke run: step budgets, sample counts and
    repeats at most the ``reference`` profile's value (default ``ci``: the smallest sizes at which every chapter's
    assertions are checked in CI), wall-clock budgets at most :data:`SMOKE_MAX_SECONDS` (``None``, no limit, becomes
    that cap), and a swept tuple replaced by the reference's when that one is shorter. Everything else is kept."""
    ref = reference or _PROFILES["ci"]
    updates = {}
    for f in fields(profile):
        section = getattr(profile, f.name)
        if not is_dataclass(section):
            continue
        capped = {}
        for g in fields(section):
            value, ref_value = getattr(section, g.name), getattr(getattr(ref, f.name), g.name, None)
            kind = smoke_kind(g.name, value)
            if kind == "sweep":
                if isinstance(ref_value, tuple) and len(ref_value) < len(value):
                    capped[g.name] = ref_value
            elif kind == "seconds":
                limits = [v for v in (value, ref_value, SMOKE_MAX_SECONDS) if v is not None]
                capped[g.name] = type(SMOKE_MAX_SECONDS)(min(limits))
            elif kind is not None and value is not None and isinstance(ref_value, (int, float)) and ref_value < value:
                capped[g.name] = ref_value
        updates[f.name] = replace(section, **capped)
    note = (f" [smoke run, {SMOKE_ENV}=1: budgets capped at the {ref.name} profile's, seconds at "
            f"{SMOKE_MAX_SECONDS:g}; offline data]")
    return replace(profile, description=profile.description + note, **updates)


def profile_name() -> str:
    """The active profile's name: ``$MINIDIFF_PROFILE`` if set, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if name:
        if name not in _PROFILES:
            raise ValueError(
                f"{PROFILE_ENV}={name!r} is not a known profile; expected one of {', '.join(PROFILE_NAMES)}"
            )
        return name
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """Return the :class:`Profile` called ``name`` (default: the active one, see :func:`profile_name`); with
    ``$MINIDIFF_SMOKE=1`` its budgets are capped by :func:`smoke_profile`."""
    if name is None:
        name = profile_name()
    if not isinstance(name, str) or name.lower() not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    profile = _PROFILES[name.lower()]
    return smoke_profile(profile) if smoke() else profile


def device() -> torch.device:
    """The device chapters compute on: ``$MINIDIFF_DEVICE`` if set, else CUDA, else MPS, else CPU."""
    forced = os.environ.get(DEVICE_ENV, "").strip()
    if forced:
        try:
            dev = torch.device(forced)
        except RuntimeError as e:
            raise ValueError(f"{DEVICE_ENV}={forced!r} is not a valid torch device: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={forced!r} asks for CUDA but torch sees no CUDA device")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA). Returns a CPU ``torch.Generator`` seeded the same.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def banner(chapter: str | None = None, profile: Profile | None = None) -> str:
    """One line for the top of a notebook: profile, device, torch version and expected runtime.

    Warns (``UserWarning``) when a GPU-sized profile would run on a CPU.
    """
    p = profile or get_profile()
    dev = device()
    runtime = p.runtimes.get(chapter, "not stated for this chapter") if chapter else None
    if p.name == "gpu" and dev.type != "cuda":
        warnings.warn(
            "profile 'gpu' is selected but no CUDA device is available: this chapter will be very slow. "
            f"Set {PROFILE_ENV}=cpu (or pick a GPU runtime on Colab: Runtime > Change runtime type).",
            stacklevel=2,
        )
    parts = [f"minidiff | profile={p.name}", f"device={dev}"]
    if dev.type == "cuda":
        parts[-1] += f" ({torch.cuda.get_device_name(dev)})"
    parts.append(f"torch={torch.__version__}")
    if runtime:
        parts.append(f"expected runtime: {runtime}")
    ckpt = checkpoint_dir("x", p.name)
    parts.append(f"checkpoints: {ckpt.parent if ckpt is not None else 'off'}")
    if smoke():
        parts.append(f"smoke run ({SMOKE_ENV}=1): budgets capped, offline data; numbers mean nothing")
    return " | ".join(parts)


def checkpoint_dir(run: str, profile: str | None = None):
    """The folder where the training run ``run`` (e.g. ``"04_ddpm/unet"``) keeps its checkpoints, or None for no
    checkpoints. Calling :func:`minidiff.train.train` again with the same folder resumes the run where it stopped,
    so after a disconnect, re-running the chapter (one "Run all") picks every long run up from its last checkpoint.

    ``$MINIDIFF_CHECKPOINT_DIR`` (set it with :func:`set_checkpoint_dir` or :func:`use_google_drive`) is the root;
    the run goes in ``<root>/<profile>/<run>`` (``<root>/<profile>-smoke/<run>`` under ``$MINIDIFF_SMOKE=1``).
    ``off`` disables checkpoints. Unset: ``runs/<profile>/<run>`` in the working folder for the ``cpu`` and ``gpu`` profiles, and none for ``ci`` (short runs that must start fresh).
    """
    if not isinstance(run, str) or not run.strip() or ".." in run.split("/"):
        raise ValueError(f"run must be a non-empty relative name like '04_ddpm/unet', got {run!r}")
    name = profile or profile_name()
    root = os.environ.get(CHECKPOINT_ENV, "").strip()
    if root.lower() == "off" or (not root and name == "ci"):
        return None
    from pathlib import Path

    # a smoke run (capped budgets) keeps its own folders: a real run must never resume a smoke checkpoint
    return Path(root or "runs") / (f"{name}-smoke" if smoke() else name) / run


def set_checkpoint_dir(path) -> None:
    """Keep checkpoints under ``path`` (``"off"`` disables them) for the rest of this session."""
    os.environ[CHECKPOINT_ENV] = str(path)


def use_google_drive(folder: str = "minidiff-checkpoints", mountpoint: str = "/content/drive"):
    """On Colab: mount Google Drive and keep every checkpoint in ``MyDrive/<folder>``, so a long run survives a
    disconnect or a runtime reset (re-run the chapter and training resumes). Returns the folder."""
    import sys
    from pathlib import Path

    if "google.colab" not in sys.modules:
        raise RuntimeError("use_google_drive() works on Colab only; elsewhere call "
                           "config.set_checkpoint_dir('some/folder') (or set $MINIDIFF_CHECKPOINT_DIR)")
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mountpoint)
    root = Path(mountpoint) / "MyDrive" / folder
    root.mkdir(parents=True, exist_ok=True)
    set_checkpoint_dir(root)
    print(f"checkpoints go to {root}: after a disconnect, run the chapter again and training resumes")
    return root


def with_overrides(profile: Profile, **sections) -> Profile:
    """A copy of ``profile`` with some fields of its sections replaced, e.g.
    ``with_overrides(P, ddpm={"steps": 100})``."""
    updates = {}
    for section, fields in sections.items():
        current = getattr(profile, section, None)
        if current is None:
            raise ValueError(f"profile has no section {section!r}")
        updates[section] = replace(current, **fields)
    return replace(profile, **updates)


from .cache import cache_path, cached  # noqa: E402,F401  (config.cached(...): finished artifacts, see minidiff/cache.py)
