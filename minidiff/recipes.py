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


# ----------------------------------------------------------------------------- latent diffusion (chapters 09-11)

def train_autoencoder(ae, x: torch.Tensor, *, steps: int, lr: float, kl_weight: float, batch_size: int = 64,
                      seed: int = 0, desc: str = "autoencoder", progress=None, ckpt_dir=None):
    r"""Fit a KL autoencoder (:class:`minidiff.nets.AutoencoderKL`, the reconstruction + ``kl_weight`` KL loss of
    :meth:`~minidiff.nets.AutoencoderKL.loss`) on the images ``x`` for ``steps`` steps, then set its latent scale
    (:meth:`~minidiff.nets.AutoencoderKL.fit_scale`) and put it in eval mode. Returns the
    :class:`~minidiff.train.TrainResult`. ``seed`` seeds the data order, and the RNGs at the start of a fresh run
    (:class:`~minidiff.train.TrainConfig`'s ``seed``), so the result does not depend on the caller's RNG state."""
    from .train import TrainConfig

    check_tensor(x, "x", floating=True, ndim=4)
    # seed: the reparameterisation noise of a fresh run does not depend on the caller's RNG state
    run = train(ae, lambda m, b: m.loss(b, kl_weight=kl_weight), TensorSampler(x, batch_size=batch_size, seed=seed),
                TrainConfig(steps=steps, lr=lr, ema_decay=None, desc=desc, progress=progress, ckpt_dir=ckpt_dir,
                            seed=seed))
    ae.eval()
    ae.fit_scale(x)
    return run


def shared_autoencoder(section, x: torch.Tensor, *, seed: int = 0, progress=None):
    """Chapter 10's autoencoder, the one whose latents chapters 09 and 10 diffuse in: an
    :class:`~minidiff.nets.AutoencoderKL` with the ``ae_*`` settings of ``section`` (a profile section with
    ``ae_settings()``: ``P.guidance``, ``P.dit``, ...), trained on ``x`` (the section's dataset's training images) by
    :func:`train_autoencoder`. It is kept by :func:`minidiff.cache.cached` under ``"shared/autoencoder"`` with those
    settings as its config: the first chapter that needs it trains it, a later one with equal settings loads it (the
    profiles keep them equal, and a test checks it), and each chapter still runs alone. Nothing is kept where the
    cache is off (the ``ci`` profile, the website build): it is trained then.

    Returns ``(ae, info)``: the autoencoder on ``x``'s device in eval mode, and ``{"seconds", "steps", "loaded"}``
    (training time and steps of the run that built it; ``loaded`` is True when it came from the cache)."""
    from .cache import cached, config_hash
    from .config import checkpoint_dir
    from .nets import AutoencoderKL

    if not callable(getattr(section, "ae_settings", None)):
        raise TypeError(f"section must be a profile section with the autoencoder's settings (P.guidance or P.dit), "
                        f"got {type(section).__name__}")
    check_tensor(x, "x", floating=True, ndim=4)
    settings = dict(section.ae_settings(), seed=seed, batch_size=64, in_channels=int(x.shape[1]),
                    size=int(x.shape[-1]), n_train=int(x.shape[0]))
    with torch.random.fork_rng(devices=[]):       # the same initial weights whatever the caller's RNG state
        torch.manual_seed(seed)
        ae = AutoencoderKL(x.shape[1], latent_channels=section.ae_latent_channels, width=section.ae_width)
    ae = ae.to(x.device)
    built = []

    def build():
        built.append(True)
        # checkpoints per settings: an interrupted run resumes (the gpu profile's takes minutes)
        ckpt = checkpoint_dir(f"shared/autoencoder-{config_hash(settings)[:16]}")
        run = train_autoencoder(ae, x, steps=section.ae_steps, lr=section.ae_lr, kl_weight=section.ae_kl_weight,
                                seed=seed, progress=progress, ckpt_dir=ckpt)
        return {"seconds": float(run.seconds), "steps": int(run.step)}

    info = cached("shared/autoencoder", build, config=settings, model=ae)
    return ae.eval(), {**info, "loaded": not built}


def dit_models(section, latent_shape) -> dict:
    """Chapter 09's DiTs on latents of shape ``latent_shape`` (C, S, S), class-conditional with 10 labels, each a
    function that builds one (seeded by the caller): ``"<conditioning>"`` for each of ``section.conditionings`` (the
    base size ``section.base`` / ``section.base_patch``) and ``"<size>/<patch>"`` for each ``section.scaling`` pair
    (adaLN-Zero). The chapter and ``benchmarks/dit_sweep.py`` both build their models here, so the live run and the
    reference sweep compare the same networks."""
    from .nets import DiT, dit_config

    C, S = int(latent_shape[0]), int(latent_shape[-1])
    out = {}
    for cond in section.conditionings:
        cfg = dit_config(section.base, patch=section.base_patch, input_size=S, in_channels=C, num_classes=10,
                         conditioning=cond)
        out[cond] = lambda cfg=cfg: DiT(cfg)
    for size, patch in section.scaling:
        cfg = dit_config(size, patch=patch, input_size=S, in_channels=C, num_classes=10)
        out[f"{size}/{patch}"] = lambda cfg=cfg: DiT(cfg)
    return out


def dit_steps(section, name: str, latent_shape) -> int:
    """Training steps of :func:`dit_models`' model ``name``: a conditioning variant trains for the base model's
    compute (``section.steps`` times the base's forward FLOPs over its own, :func:`minidiff.nets.dit_flops`); a
    scaling model trains ``section.steps`` steps."""
    from .nets import dit_flops

    models = dit_models(section, latent_shape)
    if name not in models:
        raise ValueError(f"unknown chapter-09 model {name!r}; expected one of {sorted(models)}")
    if name not in section.conditionings:
        return section.steps
    base, own = models["adaln-zero"]().cfg, models[name]().cfg
    return max(1, round(section.steps * dit_flops(base) / dit_flops(own)))


def draw(section, model, schedule: NoiseSchedule, shape, *, generator=None, model_kwargs=None, decode=None,
         progress: bool = False, batch: int = 500):
    """``shape[0]`` samples of ``model`` with the section's sampler (``section.sampler``: ``"ddim"`` or
    ``"dpmpp_2m_sde"``, ``section.sample_steps`` network calls, ``section.prediction``), ``batch`` at a time, decoded by
    ``decode`` (e.g. an autoencoder's ``from_latent``) and clamped to [-1, 1]. ``model_kwargs`` values with one row
    per sample (labels) are split with the batches."""
    from .diffusion import ddim, dpm_solver

    samplers = {"ddim": ddim.ddim_sample,
                "dpmpp_2m_sde": lambda *a, **k: dpm_solver.dpmpp_2m_sample(*a, sde=True, **k)}
    if section.sampler not in samplers:
        raise ValueError(f"section.sampler must be one of {tuple(samplers)}, got {section.sampler!r}")
    n = int(shape[0])
    decode = decode or (lambda z: z)
    sample = samplers[section.sampler]
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        kw = {k: (v[i:i + m] if torch.is_tensor(v) and v.shape[:1] == (n,) else v)
              for k, v in (model_kwargs or {}).items()}
        with torch.no_grad():
            z = sample(model, schedule, (m, *shape[1:]), steps=section.sample_steps, prediction=section.prediction,
                       generator=generator, model_kwargs=kw or None, progress=progress)
            out.append(decode(z).clamp(-1, 1))
    return torch.cat(out)


# ----------------------------------------------------------------------------- SSL meets diffusion (chapter 11)

#: Chapter 11's recipes by key (the keys of ``SSLDiffusionConfig.recipes``), with the names the chapter prints.
SSL_RECIPES = {"baseline": "baseline (no SSL)", "rcg": "RCG (generated representation)",
               "repa": "REPA (alignment)", "multitask-dynamic": "multi-task, dynamic weight",
               "multitask-fixed": "multi-task, fixed weight", "noisy-features": "SSL features of x_t"}

SIMCLR_FIELDS = ("dataset", "encoder", "width", "batch", "steps", "max_seconds", "lr", "weight_decay", "warmup",
                 "grad_clip", "aug_strength", "temperature", "proj_hidden", "proj_dim")


def shared_simclr(section, x: torch.Tensor, *, seed: int = 0, progress=None):
    """Chapter 02's SimCLR model (:class:`~minidiff.ssl.simclr.SimCLR` on the encoder ``section.encoder`` of width
    ``section.width``), trained on ``x`` (the section's dataset's training images) with ``section``'s budget and
    augmentations (digits or CIFAR by the number of channels). It is kept by :func:`minidiff.cache.cached` under
    ``"shared/simclr"`` keyed by those settings: chapter 02 trains it, chapter 11 (whose frozen encoder it is) loads it
    when the settings agree, and each chapter still runs alone. ``section`` is chapter 02's section (``P.ssl``, or
    ``P.ssl_diffusion.encoder_section(P.ssl)``).

    Returns ``(model, info)``: the model on ``x``'s device and ``{"seconds", "steps", "history", "loaded"}`` (the
    training run's time, steps and loss history; ``loaded`` is True when it came from the cache)."""
    from .cache import cached, config_hash
    from .config import checkpoint_dir
    from .nets import make_encoder
    from .ssl.augment import cifar_augment, digits_augment
    from .ssl.simclr import SimCLR

    missing = [f for f in SIMCLR_FIELDS if not hasattr(section, f)]
    if missing:
        raise TypeError(f"section must be chapter 02's SSL section (P.ssl), got {type(section).__name__} without "
                        f"{missing}")
    check_tensor(x, "x", floating=True, ndim=4)
    settings = {**{f: getattr(section, f) for f in SIMCLR_FIELDS}, "seed": seed, "in_channels": int(x.shape[1]),
                "size": int(x.shape[-1]), "n_train": int(x.shape[0])}
    with torch.random.fork_rng(devices=[]):       # the same initial weights whatever the caller's RNG state
        torch.manual_seed(seed)
        model = SimCLR(make_encoder(section.encoder, x.shape[1], section.width), section.proj_hidden,
                       section.proj_dim, section.temperature)
    model = model.to(x.device)
    built = []

    def build():
        built.append(True)
        aug = digits_augment(section.aug_strength) if x.shape[1] == 1 else cifar_augment()
        ckpt = checkpoint_dir(f"shared/simclr-{config_hash(settings)[:16]}")
        run = train(model, lambda m, b: m(*aug.two_views(b)), TensorSampler(x, batch_size=section.batch, seed=seed),
                    section.train_config(desc="SimCLR", progress=progress, ckpt_dir=ckpt, seed=seed))
        history = {k: [float(v) for v in run.history[k]] for k in ("step", "loss", "lr", "time")}
        return {"seconds": float(run.seconds), "steps": int(run.step), "history": history}

    info = cached("shared/simclr", build, config=settings, model=model)
    return model, {**info, "loaded": not built}


class SSLParts:
    """What chapter 11's recipes share: the frozen encoder (:class:`~minidiff.ssl_diffusion.FrozenEncoder` at
    ``section.encoder_depth``), the autoencoder ``ae``, the training latents ``z`` with their pixel images ``x`` (row
    by row), the encoder's pooled features ``feats`` of ``x`` (RCG's conditions), the denoiser's noise schedule and
    ``section`` itself."""

    def __init__(self, section, encoder, ae, x: torch.Tensor, z: torch.Tensor, schedule: NoiseSchedule):
        from .ssl_diffusion import FrozenEncoder

        if not isinstance(encoder, FrozenEncoder):
            raise TypeError(f"encoder must be a FrozenEncoder, got {type(encoder).__name__}")
        check_tensor(x, "x", floating=True, ndim=4)
        check_tensor(z, "z", floating=True, ndim=4)
        if x.shape[0] != z.shape[0]:
            raise ValueError(f"x and its latents z must have the same rows, got {x.shape[0]} and {z.shape[0]}")
        self.section, self.encoder, self.ae, self.x, self.z, self.schedule = section, encoder, ae, x, z, schedule
        with torch.no_grad():
            self.feats = torch.cat([encoder.pooled(x[i:i + 500]) for i in range(0, len(x), 500)])

    def net(self, cond_dim: int | None = None):
        """A fresh denoiser of the section's ``backbone`` on the latents: the DiT ``section.dit`` / ``section.patch``
        or a one-level U-Net of ``section.unet_channels`` channels (no attention; the 7 x 7 latents are not
        downsampled), conditioned on vectors of size ``cond_dim`` when given."""
        from .nets import DiT, UNet, dit_config

        s = self.section
        if s.backbone == "unet":
            return UNet(int(self.z.shape[1]), s.unet_channels, (1,), attention=False, patch=1,
                        cond_dim=cond_dim).to(self.z.device)
        return DiT(dit_config(s.dit, patch=s.patch, input_size=int(self.z.shape[-1]),
                              in_channels=int(self.z.shape[1]), cond_dim=cond_dim)).to(self.z.device)


def ssl_model(name: str, parts: SSLParts):
    """The network recipe ``name`` trains (seeded by the caller), on the section's backbone (:meth:`SSLParts.net`):
    the plain denoiser (baseline), one conditioned on representation vectors (RCG),
    :class:`~minidiff.ssl_diffusion.REPA`, :class:`~minidiff.ssl_diffusion.MultiTask` with the dynamic (cosine) or
    fixed weight, or :class:`~minidiff.ssl_diffusion.FeatureInput` (features of the decoded noisy input)."""
    from .ssl.augment import digits_augment
    from .ssl_diffusion import REPA, FeatureInput, LossWeightSchedule, MultiTask

    s, enc = parts.section, parts.encoder
    if name not in SSL_RECIPES:
        raise ValueError(f"unknown chapter-11 recipe {name!r}; expected one of {tuple(SSL_RECIPES)}")
    if name == "baseline":
        return parts.net()
    if name == "rcg":
        return parts.net(cond_dim=enc.dim)
    if name == "repa":
        return REPA(parts.net(), enc, depth=s.repa_depth, lam=s.repa_lambda).to(parts.z.device)
    if name == "noisy-features":
        return FeatureInput(parts.net(cond_dim=enc.dim), enc, decode=parts.ae.from_latent)
    weight = LossWeightSchedule(s.mt_weight_start, s.mt_weight_end, steps=s.steps, kind="cosine") \
        if name == "multitask-dynamic" else LossWeightSchedule(s.mt_fixed_weight, kind="constant")
    return MultiTask(parts.net(), depth=s.mt_depth, weight=weight,
                     augment=digits_augment(s.aug_strength)).to(parts.z.device)


def train_rdm(parts: SSLParts, *, seed: int = 0, progress=None, ckpt_dir=None):
    """RCG's representation diffusion model: a :class:`~minidiff.nets.TimeMLP` fitted with eq. 14 on a *linear*
    schedule of ``section.rdm_T`` steps to the encoder's pooled features ``parts.feats``, *standardised* per dimension
    first (the features of a ReLU encoder are all positive: a large common offset and a small spread; the mean and
    standard deviation are kept on the model as the buffers ``rep_mean`` and ``rep_std``). Not the cosine schedule:
    with 100 steps its last betas are clipped near 1, and ancestral sampling divides by :math:`\\sqrt{\\alpha_t}`
    there, which blew the generated representations up (standardised std 57 instead of 1, nearest real
    representation at cosine 0.38; linear: std 0.94, cosine 0.998, as close as held-out digits' 0.999).
    Returns ``(run, schedule)``; sample with :func:`sample_representations`."""
    from .diffusion.schedules import make_schedule
    from .nets import TimeMLP

    s = parts.section
    torch.manual_seed(seed)
    rdm = TimeMLP(dim=parts.encoder.dim, hidden=s.rdm_hidden, depth=s.rdm_depth).to(parts.z.device)
    mean, std = parts.feats.mean(0), parts.feats.std(0).clamp_min(1e-6)
    rdm.register_buffer("rep_mean", mean.clone())
    rdm.register_buffer("rep_std", std.clone())
    sched = make_schedule("linear", s.rdm_T).to(parts.z.device)
    run = train_ddpm(rdm, sched, (parts.feats - mean) / std, batch_size=256, seed=seed,
                     cfg=s.rdm_train_config(desc="RDM", progress=progress, ckpt_dir=ckpt_dir))
    return run, sched


def sample_representations(rdm, schedule: NoiseSchedule, n: int, dim: int, *, generator=None) -> torch.Tensor:
    """``n`` representations drawn by ancestral sampling from the representation model, mapped back from standardised
    units (the model's ``rep_mean``/``rep_std`` buffers, if it has them) and put back on the sphere of radius
    :math:`\\sqrt{F}` where the encoder's pooled features live
    (:meth:`minidiff.ssl_diffusion.FrozenEncoder.pooled`)."""
    import math

    from .diffusion import ddpm

    r = ddpm.sample(rdm, schedule, (n, dim), generator=generator, progress=False)
    if hasattr(rdm, "rep_mean"):
        r = r * rdm.rep_std + rdm.rep_mean
    return torch.nn.functional.normalize(r, dim=1) * math.sqrt(dim)


def rcg_guided(model, section, dim: int):
    """RCG's image model as it samples: classifier-free guidance of scale ``section.rcg_guidance`` on the
    representation (:func:`minidiff.diffusion.guidance.guided`, with the all-zeros vector it was trained to see
    when the representation is dropped). Call the result as ``fn(x, t, y)`` with ``y`` the representations."""
    from .diffusion.guidance import guided

    return guided(model, section.rcg_guidance, torch.zeros(dim, device=next(model.parameters()).device))


def train_ssl_recipe(name: str, parts: SSLParts, *, seed: int = 0, snapshot_every: int = 50, progress=None,
                     ckpt_dir=None):
    """Train recipe ``name`` for ``section.steps`` steps with the section's recipe (same data order, learning rate,
    EMA and loss weighting for every recipe; only what the recipe adds differs). Every ``snapshot_every`` steps the
    EMA weights are kept with their training time, so that the run can be read again at any earlier budget
    (:func:`at_time`): with the constant learning rate of the section, the EMA at step s is what a run of s steps
    would give. Returns ``{"run": TrainResult, "model": the network, "snapshots": [(step, seconds, state)]}``."""
    import copy

    s = parts.section
    if name not in SSL_RECIPES:
        raise ValueError(f"unknown chapter-11 recipe {name!r}; expected one of {tuple(SSL_RECIPES)}")
    torch.manual_seed(seed)
    model = ssl_model(name, parts)
    gen = torch.Generator().manual_seed(seed + 1)
    null = torch.zeros(parts.encoder.dim, device=parts.z.device)
    kw = {"prediction": s.prediction, "weighting": s.weighting}

    def loss(m, batch):
        zb, xb, rb = batch
        if name in ("baseline", "noisy-features"):
            return ddpm_loss(m, parts.schedule, zb, **kw)
        if name == "rcg":
            return ddpm_loss(m, parts.schedule, zb, model_kwargs={"y": drop_condition(rb, s.p_uncond, null,
                                                                                       generator=gen)}, **kw)
        if name == "repa":
            return m.loss(zb, parts.schedule, images=xb, **kw)
        return m.loss(zb, parts.schedule, images=xb, encode=parts.ae.to_latent, **kw)

    snapshots = []

    def keep(step, ema):
        snapshots.append([step, None, copy.deepcopy(ema.state_dict())])
        return {}

    cfg = s.train_config(seed=seed, eval_every=snapshot_every, desc=SSL_RECIPES[name], progress=progress,
                         ckpt_dir=ckpt_dir)
    run = train(model, loss, TensorSampler(parts.z, parts.x, parts.feats, batch_size=s.batch, seed=seed), cfg,
                evaluate=keep)
    times = {e["step"]: e["time"] for e in run.history["eval"]}
    snapshots = [(st, float(times[st]), sd) for st, _, sd in snapshots if st in times]
    return {"run": run, "model": model, "snapshots": snapshots}


def at_time(result: dict, seconds: float) -> tuple[int, float, dict]:
    """The last snapshot of :func:`train_ssl_recipe`'s ``result`` whose training time is at most ``seconds``:
    ``(step, its training time, EMA state dict)``; the first snapshot if none is."""
    snaps = result["snapshots"]
    if not snaps:
        raise ValueError("the run kept no snapshots (was it loaded without them?)")
    fit = [sn for sn in snaps if sn[1] <= seconds]
    return fit[-1] if fit else snaps[0]


# ----------------------------------------------------------------------------- flow matching (chapter 13)

def train_flow(model, path, x: torch.Tensor, *, cfg, batch_size: int, time_sampling: str = "logit_normal",
               noise: torch.Tensor | None = None, seed: int = 0, evaluate=None):
    r"""Fit a velocity field with the conditional flow-matching loss (:func:`minidiff.diffusion.flow.flow_loss`) on the
    data ``x`` (on the model's device), with fresh noise each step, or, for reflow, with the coupled ``noise`` of
    each row of ``x`` (:func:`minidiff.diffusion.flow.reflow_couplings`). ``cfg`` is a
    :class:`minidiff.train.TrainConfig`; returns its :class:`~minidiff.train.TrainResult`::

        run = train_flow(unet, "linear", x_train, cfg=P.flow.train_config(), batch_size=64)
    """
    from .diffusion import flow

    path = flow.as_path(path)
    if time_sampling not in flow.TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {flow.TIME_SAMPLINGS}, got {time_sampling!r}")
    check_tensor(x, "x", floating=True)
    if noise is None:
        return train(model, lambda m, b: flow.flow_loss(m, path, b, time_sampling=time_sampling),
                     TensorSampler(x, batch_size=batch_size, seed=seed), cfg, evaluate=evaluate)
    check_tensor(noise, "noise", floating=True)
    if noise.shape != x.shape:
        raise ValueError(f"noise must pair one noise with each row of x: shape {tuple(x.shape)}, got "
                         f"{tuple(noise.shape)}")
    return train(model, lambda m, b: flow.flow_loss(m, path, b[0], noise=b[1], time_sampling=time_sampling),
                 TensorSampler(x, noise.to(x.device), batch_size=batch_size, seed=seed), cfg, evaluate=evaluate)


#: The deterministic samplers chapter 13 compares at equal network calls: name -> (model family, network calls of
#: ``steps`` steps). Flow models use flow_sample; DDPM models DDIM (eta = 0) and DPM-Solver++(2M) (ODE).
NFE_SAMPLERS = {"flow Euler": ("flow", lambda s: s), "flow Heun": ("flow", lambda s: 2 * s - 1),
                "DDIM": ("ddpm", lambda s: s), "DPM-Solver++(2M)": ("ddpm", lambda s: s)}


def sampler_steps(sampler: str, nfe: int) -> int | None:
    """The steps of ``sampler`` (:data:`NFE_SAMPLERS`) that cost exactly ``nfe`` network calls, or ``None`` when none
    does (Heun's calls are odd; DPM-Solver++(2M) needs 2 steps for its second order)."""
    if sampler not in NFE_SAMPLERS:
        raise ValueError(f"sampler must be one of {tuple(NFE_SAMPLERS)}, got {sampler!r}")
    cost = NFE_SAMPLERS[sampler][1]
    steps = next((s for s in range(1, nfe + 1) if cost(s) == nfe), None)
    if sampler == "flow Heun" and steps == 1 or sampler == "DPM-Solver++(2M)" and nfe < 2:
        return None                                    # one Heun step is an Euler step; 2M's first step is DDIM's
    return steps


def nfe_points(sampler: str, nfe) -> list[int]:
    """The network-call counts at which chapter 13 evaluates ``sampler`` for the profile's ``nfe`` list: the list
    itself, except Heun (``n - 1`` for each ``n >= 4``: its calls are odd) and DPM-Solver++(2M) (from 2 calls)."""
    if sampler == "flow Heun":
        return [n - 1 for n in nfe if n >= 4]
    return [n for n in nfe if sampler_steps(sampler, n) is not None]


def draw_nfe(sampler: str, model, process, shape, *, nfe: int, prediction: str = "eps", clip_x0: bool = True,
             x_T: torch.Tensor | None = None, generator=None, batch: int = 500, progress: bool = False,
             return_trajectory: bool = False):
    """``shape[0]`` samples of ``model`` with ``sampler`` (:data:`NFE_SAMPLERS`) at ``nfe`` network calls,
    ``batch`` at a time, clamped to [-1, 1] on the CPU. ``process`` is the flow :class:`~minidiff.diffusion.flow.Path`
    or the DDPM :class:`~minidiff.diffusion.schedules.NoiseSchedule`; ``prediction`` and ``clip_x0`` are the DDPM
    samplers'. ``x_T`` fixes the starting noise (the same for every sampler: a fair comparison). With
    ``return_trajectory`` also the first batch's trajectory."""
    from .diffusion import ddim, dpm_solver, flow

    steps = sampler_steps(sampler, nfe)
    if steps is None:
        raise ValueError(f"{sampler} cannot spend exactly {nfe} network calls")
    n = int(shape[0])
    if x_T is None:
        x_T = torch.randn(tuple(shape), generator=generator)
    out, traj = [], None
    for i in range(0, n, batch):
        m = min(batch, n - i)
        common = dict(steps=steps, x_T=x_T[i:i + m], progress=progress, return_trajectory=return_trajectory and i == 0)
        with torch.no_grad():
            if sampler.startswith("flow"):
                r = flow.flow_sample(model, process, (m, *shape[1:]), method=sampler.split()[1].lower(), **common)
            elif sampler == "DDIM":
                r = ddim.ddim_sample(model, process, (m, *shape[1:]), prediction=prediction, clip_x0=clip_x0, **common)
            else:
                r = dpm_solver.dpmpp_2m_sample(model, process, (m, *shape[1:]), sde=False, prediction=prediction,
                                               clip_x0=clip_x0, **common)
        if isinstance(r, tuple):
            r, traj = r
        out.append(r.clamp(-1, 1).cpu())
    x = torch.cat(out)
    return (x, traj) if return_trajectory else x
