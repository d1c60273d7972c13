"""The profiles: every size of every chapter, for three budgets.

``cpu`` (a learner's laptop without GPU) is the reference and states every value; ``ci`` and ``gpu`` are written as
what differs from it (the shape of nanoGPT's ``config/*.py`` files), so each reads as a short list of overrides::

    CI = derive(CPU, name="ci", ddpm=dict(T=50, steps=350, ...), ...)   # sections not named are cpu's

========  ======================  ================================================  ==========================
profile   who                     data                                              budget
========  ======================  ================================================  ==========================
``ci``    CI, nbval, make test    offline only: MNIST-5k, sklearn digits, 2-D toys  <= 60 s a chapter, 2 cores
``cpu``   a learner without GPU   offline MNIST-5k (torchvision data if online)     <= 10 min a chapter
``gpu``   Colab / local GPU       torchvision MNIST, Fashion-MNIST, CIFAR-10        <= 20 min on a Colab T4
========  ======================  ================================================  ==========================

``runtime_s`` is each chapter's measured runtime in seconds on ``runtime_on`` (the banner says it in words).
This module only declares values; choosing the active profile is :func:`minidiff.config.get_profile`.
"""

from __future__ import annotations

from dataclasses import is_dataclass, replace

from .schema import (DiTChapterConfig, FlowChapterConfig, GuidanceChapterConfig, ImageDiffusionConfig, KernelsChapterConfig, Profile,
                     RotationConfig, SamplingConfig, SSLConfig, SSLDiffusionConfig, ToyDiffusionConfig,
                     UNetChapterConfig, VAEConfig)


def derive(base: Profile, **changes) -> Profile:
    """``base`` with ``changes``: a dict for a section replaces only the fields it names (the others stay
    ``base``'s), any other value replaces the field of the profile. Also for experiments in a notebook, e.g.
    ``P = config.derive(P, ddpm={"steps": 100})``."""
    updates = {}
    for name, value in changes.items():
        if not hasattr(base, name):
            raise ValueError(f"profile has no field {name!r}")
        current = getattr(base, name)
        updates[name] = replace(current, **value) if is_dataclass(current) and isinstance(value, dict) else value
    return replace(base, **updates)


# ----------------------------------------------------------------------------- cpu: the reference, every value
CPU = Profile(
    name="cpu",
    description="a learner's laptop without GPU: offline MNIST-5k, minutes per chapter",
    toy=ToyDiffusionConfig(dataset="moons", n_points=8192, schedule="linear", T=100, hidden=128, depth=3, batch=512,
                           steps=2000, lr=2e-3, warmup=50, ema_decay=0.99, n_samples=2000),
    # min-SNR-5 weighting, the clock-annealed learning rate and bf16 autocast where the CPU has it natively: the
    # winners of benchmarks/unet_recipe.py
    ddpm=ImageDiffusionConfig(dataset="mnist5k", T=200, schedule="cosine", prediction="eps", weighting="min_snr",
                              base_channels=32, channel_mults=(1, 2), attention=False, patch=2, clip_x0=True,
                              blur_sigma=1.0, batch=64, steps=8000, max_seconds=330.0, anneal_by_time=True, lr=2e-3,
                              amp="bf16",
                              warmup=100, ema_decay=0.995, n_samples=500, sample_batch=500),
    ssl=SSLConfig(dataset="mnist5k", encoder="convnet", width=32, batch=256, steps=4000, max_seconds=180.0, lr=3e-3,
                  weight_decay=1e-4, warmup=10, grad_clip=None, ema_decay=None, aug_strength=1.0, temperature=0.5,
                  proj_hidden=256, proj_dim=64, moco_steps=4000, moco_max_seconds=180.0, moco_queue=1024,
                  moco_momentum=0.99, moco_temperature=0.2, probe_per_class=10, probe_repeats=5, knn_k=20,
                  embedding_2d="tsne", n_embed=1000, min_margin=0.05),
    rotation=RotationConfig(dataset="mnist5k", encoder="convnet", width=32, batch=64, steps=4000, max_seconds=180.0,
                            lr=3e-3, weight_decay=1e-4, warmup=20, ema_decay=None, aug_strength=0.5, feature_depth=2),
    vae=VAEConfig(dataset="mnist5k", latent_dim=16, width=32, batch=128, steps=4000, max_seconds=180.0, lr=2e-3,
                  warmup=20, ema_decay=None, beta=1.0, eval_samples=1),
    # a T = 1000 linear-schedule DDPM: the discretisation of the VP SDE (beta 0.1..20), used by chapters 05 and 07
    vp_ddpm=ImageDiffusionConfig(dataset="mnist5k", T=1000, schedule="linear", prediction="eps", base_channels=32,
                                 channel_mults=(1, 2), attention=False, patch=2, clip_x0=True, blur_sigma=1.0, batch=64,
                                 steps=4000, max_seconds=200.0, lr=2e-3, warmup=100, ema_decay=0.995, n_samples=300,
                                 sample_batch=300),
    sampling=SamplingConfig(ddim_steps=(10, 20, 50, 100), etas=(0.0, 1.0), n_samples=300, fid_tolerance=1.0,
                            encode_steps=100, sde_nfe=(20, 50, 100), likelihood_images=100, likelihood_steps=50,
                            toy_steps=2000, toy_hidden=128, dpm_variants=("sde", "ode")),
    # chapter 04's recipe on chapter 10's latents (the autoencoder is the guidance section's, shared); DiT-Mini/1 at
    # batch 32: FID 19.3 +- 1.6 (500 samples, 3 seeds, benchmarks/dit_sweep.py) after 3,000 steps (about 190 s)
    dit=DiTChapterConfig(dataset="mnist5k", T=1000, schedule="cosine", prediction="v", weighting="min_snr", amp="off",
                         batch=32, steps=3000, lr=2e-3, warmup=100, ema_decay=0.995, p_uncond=0.1, base="DiT-Mini",
                         base_patch=1, live_conditionings=("adaln-zero",),
                         scaling=(("DiT-Tiny", 1), ("DiT-Micro", 1), ("DiT-Mini", 1)),
                         ae_latent_channels=4, ae_width=32, ae_steps=600, ae_kl_weight=1e-3, ae_lr=2e-3,
                         n_samples=500, sample_steps=25, sampler="dpmpp_2m_sde"),
    # chapter 04's recipe in fp32 (bf16 autocast made a U-Net step faster on a Zen 4 and about 35% slower on a Xeon
    # with AVX512-BF16 but no AMX); every network gets the same max_seconds; benchmarks/unet_ablation.py: 3 seeds
    unet=UNetChapterConfig(dataset="mnist5k", T=1000, schedule="cosine", prediction="x0", weighting="min_snr",
                           anneal_by_time=True, amp="off", unet="UNet-S", mlp_hidden=1024, mlp_depth=3, batch=64,
                           steps=100_000, max_seconds=180.0, lr=2e-3, warmup=100, ema_decay=0.995, eval_images=500,
                           loss_t_fractions=(0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0), n_samples=500, sample_steps=25,
                           sampler="dpmpp_2m_sde"),
    # chapter 04's recipe (min-SNR, learning rate annealed by the clock) and the models of
    # benchmarks/latent_to_quality.py (latent-unet-guided, pixel-unet-guided), at 120 s each instead of 300 s
    guidance=GuidanceChapterConfig(dataset="mnist5k", T=1000, schedule="cosine", prediction="eps", weighting="min_snr",
                                   anneal_by_time=True, unet="UNet-S", batch=64, latent_batch=128, steps=100_000,
                                   max_seconds=120.0, lr=2e-3, warmup=100, ema_decay=0.995, p_uncond=0.1,
                                   ae_latent_channels=4, ae_width=32, ae_steps=600, ae_kl_weight=1e-3, ae_lr=2e-3,
                                   latent_base_channels=64, clip_dim=32, clip_width=8, clip_batch=64, clip_steps=400,
                                   text_steps=100_000, text_max_seconds=60.0, clf_base_channels=32,
                                   clf_steps=100_000, clf_max_seconds=40.0, compare_seconds=None,
                                   scales=(0.0, 1.0, 1.5, 2.0, 4.0), n_samples=300, sample_steps=25,
                                   sampler="dpmpp_2m_sde"),
    # chapter 10's latent U-Net (64 channels), unconditional, with chapter 04's recipe and a constant lr (one run read
    # at equal steps and equal time); DDIM 50. Probe (seed 0, 2 threads): 4,000 steps in 133 s, FID 40.6, confidence
    # 0.92; chapter 09's DiT-Mini/1 in its place took 2.3x as long per step and reached FID 92.8 (0.87) after 4,000
    # steps (cosine lr decay; 94.8 with EMA 0.999), so the U-Net is the backbone; benchmarks/ssl_sweep.py: 5 seeds
    ssl_diffusion=SSLDiffusionConfig(dataset="mnist5k", T=1000, schedule="cosine", prediction="v", weighting="min_snr",
                                     amp="off", backbone="unet", unet_channels=64, dit="DiT-Mini", patch=1, batch=32,
                                     steps=4000, lr=2e-3,
                                     min_lr_ratio=1.0, warmup=100, ema_decay=0.995, seeds=(0,),
                                     live_recipes=("baseline", "rcg"), encoder_depth=2, p_uncond=0.1,
                                     rdm_hidden=256, rdm_depth=3, rdm_T=100, rdm_steps=1500, repa_depth=2,
                                     repa_lambda=0.5, mt_depth=2, mt_weight_start=1.0, mt_weight_end=0.05,
                                     mt_fixed_weight=0.5, aug_strength=0.5, ae_latent_channels=4, ae_width=32,
                                     ae_steps=600, ae_kl_weight=1e-3, ae_lr=2e-3, n_samples=500, sample_steps=50,
                                     sampler="ddim"),
    kernels=KernelsChapterConfig(check_images=(4, 1, 28, 28), check_tokens=(2, 16, 64), check_groups=(2, 16, 7, 7, 4),
                                 timing_numel=(2 ** 12, 2 ** 16, 2 ** 20, 2 ** 22), reps=20),
    # chapter 04's U-Net (section ddpm) trained twice for the same 150 s, with flow matching and with chapter 04's
    # DDPM recipe; fp32 for both (bf16's speed differs between CPUs); benchmarks/flow_vs_ddpm.py: 3 seeds
    flow=FlowChapterConfig(toy_dataset="moons", toy_points=8192, toy_hidden=128, toy_depth=3, toy_batch=512,
                           toy_steps=2000, toy_lr=2e-3, toy_warmup=50, toy_ema_decay=0.99,
                           toy_paths=("linear", "vp"), toy_support=512, toy_exact_samples=256,
                           toy_exact_steps=64, toy_eval_samples=2000, toy_nfe=(1, 2, 4, 8, 16, 32),
                           toy_path_samples=500, toy_path_steps=32, reflow_pairs=8192, reflow_steps=1000,
                           toy_reflow_lr=1e-3, toy_reflow_nfe=(1, 2, 4), coupling_steps=16, dataset="mnist5k",
                           path="linear",
                           time_sampling="logit_normal", ddpm_prediction="v", amp="off", batch=64, steps=100_000, max_seconds=150.0,
                           anneal_by_time=True, lr=2e-3, warmup=100, ema_decay=0.995, nfe=(1, 2, 4, 8, 16),
                           n_samples=500, trajectory_samples=100),
    runtime_s={"01_rotation": 270, "02_contrastive": 450, "03_vae": 360, "04_ddpm": 480, "05_sampling": 480,
               "06_score_matching": 60, "07_sde": 330, "08_unet": 390, "09_dit": 390, "10_latent_and_guidance": 480,
               "11_ssl_meets_diffusion": 525, "12_kernels_and_speed": 20,
               "13_flow_matching": 420},
    runtime_on="2 CPU cores",
    chapter_budget_s=600.0,
    # the course's thesis, tested live: run alone (training chapter 02's encoder and chapter 10's autoencoder
    # itself) chapter 11 on the latent U-Net measured 523 s on 2026-12-05 (nbconvert, empty checkpoint folder, 2 cores;
    # the latent DiT it replaced took about 17 min); its budget stays the 15 minutes it is meant to fit
    chapter_budgets={"11_ssl_meets_diffusion": 900.0},
)

# ----------------------------------------------------------------------------- ci: tiny, offline, steps only
CI = derive(
    CPU, name="ci", description="CI / quick check: offline data, tiny models, every chapter under 60 s on 2 CPU cores",
    toy=dict(n_points=4096, hidden=64, depth=2, batch=256, steps=550, lr=3e-3, n_samples=1000),
    ddpm=dict(T=50, base_channels=16, steps=350, max_seconds=None, anneal_by_time=False, lr=3e-3, warmup=30,
              ema_decay=0.99, n_samples=250, sample_batch=250),
    ssl=dict(width=16, steps=75, max_seconds=None, moco_steps=75, moco_max_seconds=None, embedding_2d="pca"),
    rotation=dict(width=16, steps=90, max_seconds=None),
    vae=dict(width=16, steps=240, max_seconds=None, lr=3e-3, vq_codes=32, vq_dim=8, vq_steps=300),
    vp_ddpm=dict(base_channels=16, steps=250, max_seconds=None, lr=3e-3, warmup=30, ema_decay=0.99, n_samples=200,
                 sample_batch=200),
    sampling=dict(ddim_steps=(10, 20, 50), n_samples=64, encode_steps=50, sde_nfe=(20, 50), likelihood_images=32,
                  likelihood_steps=25, toy_steps=600, toy_hidden=64, dpm_variants=("sde",)),
    dit=dict(T=50, steps=100, lr=3e-3, warmup=30, ema_decay=0.99,
             live_conditionings=("adaln-zero", "adaln", "in-context", "cross-attention"),
             scaling=(("DiT-Tiny", 1), ("DiT-Mini", 1)), ae_width=16, ae_steps=100, ae_lr=3e-3, n_samples=100,
             sample_steps=15),
    unet=dict(T=50, unet="UNet-XS", mlp_hidden=256, mlp_depth=2, steps=80, max_seconds=None, anneal_by_time=False,
              amp="off", lr=3e-3, warmup=30, ema_decay=0.99, eval_images=200, n_samples=100, sample_steps=20),
    guidance=dict(T=50, unet="UNet-XS", steps=350, max_seconds=None, anneal_by_time=False, lr=3e-3, warmup=30,
                  ema_decay=0.99, latent_base_channels=32, latent_batch=64, ae_width=16, ae_steps=100, ae_lr=3e-3,
                  clip_steps=120,
                  clf_base_channels=16, clf_steps=300, clf_max_seconds=None,
                  text_steps=150, text_max_seconds=None, compare_seconds=3.0, scales=(0.0, 1.0, 3.0, 6.0),
                  n_samples=150, sample_steps=15),
    ssl_diffusion=dict(T=50, unet_channels=16, steps=100, lr=3e-3, warmup=30, ema_decay=0.99, rdm_steps=200, ae_width=16,
                       ae_steps=100, ae_lr=3e-3, n_samples=100, sample_steps=15),
    kernels=dict(timing_numel=(2 ** 12, 2 ** 16, 2 ** 20), reps=10),
    flow=dict(toy_points=4096, toy_hidden=64, toy_depth=2, toy_batch=256, toy_steps=600, toy_lr=3e-3,
              reflow_pairs=2048, reflow_steps=400, toy_reflow_lr=1.5e-3, coupling_steps=8, batch=32, steps=200,
              max_seconds=None, anneal_by_time=False, lr=3e-3, warmup=30, ema_decay=0.99, nfe=(1, 2, 4, 8),
              n_samples=200, trajectory_samples=50),
    runtime_s={"01_rotation": 45, "02_contrastive": 55, "03_vae": 35, "04_ddpm": 45, "05_sampling": 50,
               "06_score_matching": 15, "07_sde": 35, "08_unet": 50, "09_dit": 40, "10_latent_and_guidance": 55,
               "11_ssl_meets_diffusion": 55, "12_kernels_and_speed": 10,
               "13_flow_matching": 45},
    runtime_estimates=(),
    chapter_budget_s=60.0,
    chapter_budgets={},
    progress=False,
)

# ----------------------------------------------------------------------------- gpu: full data, bigger models
GPU = derive(
    CPU, name="gpu", description="Colab / local GPU: full MNIST via torchvision, bigger U-Net, T = 1000",
    toy=dict(n_points=16384, T=200, hidden=256, depth=4, batch=1024, steps=4000, lr=1e-3, n_samples=4000),
    ddpm=dict(dataset="mnist", T=1000, base_channels=64, channel_mults=(1, 2, 2), attention=True, patch=1, batch=256,
              amp="auto", steps=12000, max_seconds=720.0, lr=1e-3, warmup=500, ema_decay=0.999, n_samples=2000,
              sample_batch=1000),
    ssl=dict(dataset="cifar10", encoder="resnet18", width=64, batch=512, steps=20000, max_seconds=540.0, lr=2e-3,
             weight_decay=1e-6, proj_hidden=2048, proj_dim=128, moco_steps=20000, moco_max_seconds=540.0,
             moco_queue=4096, knn_k=200, n_embed=2000),
    rotation=dict(dataset="cifar10", encoder="resnet18", width=64, batch=128, steps=20000, max_seconds=600.0, lr=2e-3,
                  aug_strength=1.0),
    vae=dict(dataset="mnist", latent_dim=32, width=64, batch=256, steps=20000, max_seconds=480.0, lr=1e-3,
             vq_codes=128, vq_steps=5000),
    vp_ddpm=dict(dataset="mnist", base_channels=64, channel_mults=(1, 2, 2), attention=True, patch=1, batch=256,
                 steps=12000, max_seconds=600.0, lr=1e-3, warmup=500, ema_decay=0.999, n_samples=2000,
                 sample_batch=1000),
    sampling=dict(ddim_steps=(10, 20, 50, 100, 250), etas=(0.0, 0.5, 1.0), n_samples=2000, sde_nfe=(50, 100, 250, 500),
                  likelihood_images=500, likelihood_steps=100, toy_steps=4000, toy_hidden=256),
    dit=dict(dataset="mnist", batch=128, steps=4000, warmup=200, ema_decay=0.999, amp="auto",
             live_conditionings=("adaln-zero", "adaln", "in-context", "cross-attention"),
             scaling=(("DiT-Tiny", 1), ("DiT-Micro", 1), ("DiT-Mini", 1), ("DiT-S", 1)), ae_width=64, ae_steps=3000,
             ae_lr=1e-3, n_samples=1000, sample_steps=50),
    unet=dict(dataset="mnist", T=1000, unet="UNet-L", mlp_hidden=1024, batch=128, steps=100_000, max_seconds=150.0,
              amp="auto", lr=1e-3, warmup=200, ema_decay=0.999, eval_images=2000, n_samples=1000, sample_steps=50,
              live_variants=("full", "no attention", "no skips", "additive time", "MLP")),
    guidance=dict(dataset="mnist", T=1000, unet="UNet-L", batch=128, max_seconds=300.0, lr=1e-3, warmup=200,
                  ema_decay=0.999, ae_width=64, ae_steps=3000, ae_lr=1e-3, latent_base_channels=128, clip_batch=256,
                  clip_steps=2000, text_max_seconds=240.0, clf_base_channels=64, clf_max_seconds=120.0,
                  n_samples=1000, sample_steps=50),
    flow=dict(toy_points=16384, toy_hidden=256, toy_depth=4, toy_batch=1024, toy_steps=4000, toy_lr=1e-3,
              reflow_pairs=16384, reflow_steps=2000, toy_reflow_lr=5e-4, coupling_steps=32, dataset="mnist", amp="auto",
              batch=256,
              max_seconds=300.0, lr=1e-3, warmup=200, ema_decay=0.999, nfe=(1, 2, 4, 8, 16, 32), n_samples=2000),
    ssl_diffusion=dict(dataset="mnist", unet_channels=128, batch=128, steps=4000, warmup=200, ema_decay=0.999,
                       amp="auto",
                       live_recipes=SSLDiffusionConfig.RECIPES, rdm_steps=4000, ae_width=64, ae_steps=3000,
                       ae_lr=1e-3, n_samples=1000, sample_steps=50),
    runtime_s={"01_rotation": 720, "02_contrastive": 1200, "03_vae": 600, "04_ddpm": 900, "05_sampling": 1080,
               "06_score_matching": 60, "07_sde": 1080, "08_unet": 840, "09_dit": 1200, "10_latent_and_guidance": 1080,
               "11_ssl_meets_diffusion": 1200, "12_kernels_and_speed": 120,
               "13_flow_matching": 900},
    runtime_on="a Colab T4",
    runtime_estimates=("03_vae", "08_unet", "09_dit", "10_latent_and_guidance", "11_ssl_meets_diffusion",
                       "12_kernels_and_speed", "13_flow_matching"),
    chapter_budget_s=1200.0,
    chapter_budgets={},
)

PROFILES: dict[str, Profile] = {"ci": CI, "cpu": CPU, "gpu": GPU}


def with_overrides(profile: Profile, **sections) -> Profile:
    """A copy of ``profile`` with some fields of its sections replaced, e.g. ``with_overrides(P, ddpm={"steps": 100})``
    (the same as :func:`derive`)."""
    return derive(profile, **sections)
