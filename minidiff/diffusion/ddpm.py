r"""Denoising diffusion probabilistic models (Ho et al. 2020): forward noising, the training
objective and ancestral sampling. Chapter 04 derives every formula here.

Equations (numbers are Ho et al. 2020 unless stated):

- forward marginal, eq. 4: :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`,
- posterior, eqs. 6-7: :math:`q(x_{t-1}\mid x_t,x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`,
  :math:`\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t`,
- simplified objective, eq. 14: :math:`L_\text{simple} = \mathbb E_{t,x_0,\epsilon}\|\epsilon - \epsilon_\theta(x_t,t)\|^2`,
- ancestral step, eq. 11 / Algorithm 2:
  :math:`x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta\big) + \sigma_t z`,
  with :math:`\sigma_t^2 = \tilde\beta_t` ("fixed small") and no noise at the last step.
- v-prediction (Salimans & Ho 2022, sec. 4): :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0`.
- Min-SNR-:math:`\gamma` weighting (Hang et al. 2023): each target's squared error equals
  :math:`\|x_0 - \hat x_0\|^2` times a factor (:math:`\mathrm{SNR}_t` for ``eps``, 1 for ``x0``,
  :math:`\mathrm{SNR}_t + 1` for ``v``); min-SNR weights the :math:`x_0` error by
  :math:`\min(\mathrm{SNR}_t, \gamma)`, i.e. the ``eps`` loss by :math:`\min(\mathrm{SNR}_t,\gamma)/\mathrm{SNR}_t`,
  the ``v`` loss by :math:`\min(\mathrm{SNR}_t,\gamma)/(\mathrm{SNR}_t+1)`: the nearly clean steps, whose
  gradients conflict with the rest, stop dominating.

A model is any callable ``model(x_t, t)`` with ``t`` an int64 tensor of shape ``(B,)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import kernels
from .._checks import check_same_shape, check_tensor, check_timesteps
from .._progress import tqdm
from .schedules import NoiseSchedule

PREDICTIONS = ("eps", "x0", "v")
WEIGHTINGS = ("none", "min_snr")


def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    return schedule


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return prediction


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    r"""Sample :math:`x_t \sim q(x_t\mid x_0)` in one shot (eq. 4):
    :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`."""
    _check_schedule(schedule)
    check_tensor(x0, "x0", floating=True)
    if x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    check_timesteps(t, x0.shape[0], schedule.T)
    if noise is None:
        noise = torch.randn_like(x0)
    else:
        check_same_shape(x0, noise, "x0", "noise")
    a = schedule.gather("sqrt_alphas_cumprod", t, x0.ndim).to(x0.dtype)
    s = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x0.ndim).to(x0.dtype)
    return a * x0 + s * noise


def target_for(prediction: str, schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The regression target of each parameterisation: ``eps``, ``x0`` or ``v``."""
    _check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    a = schedule.gather("sqrt_alphas_cumprod", t, x0.ndim).to(x0.dtype)
    s = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x0.ndim).to(x0.dtype)
    return a * noise - s * x0


def predict_x0_eps(schedule: NoiseSchedule, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                   prediction: str = "eps") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Convert a network output in any parameterisation into :math:`(\hat x_0, \hat\epsilon)`.

    - eps: :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\hat\epsilon)/\sqrt{\bar\alpha_t}`
    - x0:  :math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}`
    - v:   :math:`\hat x_0 = \sqrt{\bar\alpha_t}x_t - \sqrt{1-\bar\alpha_t}v`,
      :math:`\hat\epsilon = \sqrt{1-\bar\alpha_t}x_t + \sqrt{\bar\alpha_t}v`
    """
    _check_prediction(prediction)
    a = schedule.gather("sqrt_alphas_cumprod", t, x_t.ndim).to(x_t.dtype)
    s = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x_t.ndim).to(x_t.dtype)
    if prediction == "eps":
        eps = model_output
        x0 = (x_t - s * eps) / a
    elif prediction == "x0":
        x0 = model_output
        eps = (x_t - a * x0) / s
    else:
        x0 = a * x_t - s * model_output
        eps = s * x_t + a * model_output
    return x0, eps


def loss_weight(schedule: NoiseSchedule, t: torch.Tensor, prediction: str = "eps", weighting: str = "none",
                snr_gamma: float = 5.0) -> torch.Tensor:
    r"""Per-sample weight (B,) of the squared error of ``prediction`` at steps ``t``: 1 for ``"none"``; for
    ``"min_snr"`` the min-SNR-:math:`\gamma` weight (module docstring), which makes the loss of every
    parameterisation the same :math:`\min(\mathrm{SNR}_t,\gamma)\,\|x_0-\hat x_0\|^2`."""
    _check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be > 0, got {snr_gamma!r}")
    if weighting == "none":
        return torch.ones(t.shape, device=t.device)
    snr = schedule.gather("snr", t, 1).float()
    clipped = snr.clamp(max=snr_gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]


def ddpm_loss(model: Callable, schedule: NoiseSchedule, x0: torch.Tensor, prediction: str = "eps",
              t: torch.Tensor | None = None, noise: torch.Tensor | None = None, model_kwargs: dict | None = None,
              weighting: str = "none", snr_gamma: float = 5.0) -> torch.Tensor:
    r"""The simplified DDPM objective (eq. 14) with a choice of target: mean squared error between the
    network output and ``eps`` (Ho et al.), ``x0``, or ``v`` (Salimans & Ho 2022), with
    :math:`t \sim \mathcal U\{0,\dots,T-1\}` and :math:`\epsilon \sim \mathcal N(0, I)` unless given.
    ``weighting="min_snr"`` weights each sample's error by :func:`loss_weight` (min-SNR-``snr_gamma``)."""
    _check_schedule(schedule)
    _check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    check_tensor(x0, "x0", floating=True)
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.T, (B,), device=x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, t, noise)
    out = model(x_t, t, **(model_kwargs or {}))
    if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model(x_t, t) must return a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
    target = target_for(prediction, schedule, x0, noise, t).float()
    if weighting == "none":
        return F.mse_loss(out.float(), target)
    per_sample = (out.float() - target).pow(2).flatten(1).mean(1)
    return (loss_weight(schedule, t, prediction, weighting, snr_gamma) * per_sample).mean()


def p_sample_step(schedule: NoiseSchedule, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                  noise: torch.Tensor | None = None, prediction: str = "eps", clip_x0: bool = False) -> torch.Tensor:
    r"""One ancestral step :math:`x_t \to x_{t-1}` (Ho et al. 2020, eq. 11 and Algorithm 2).

    The mean is the posterior mean :math:`\tilde\mu_t(\hat x_0, x_t)` (eq. 7) with :math:`\hat x_0` from the
    network output; for ``prediction="eps"`` and no clipping this equals eq. 11 exactly. The variance is
    :math:`\tilde\beta_t` ("fixed small"); at ``t = 0`` it is zero, so no noise is added. ``clip_x0`` clamps
    :math:`\hat x_0` to [-1, 1] first (off unless asked).
    """
    _check_schedule(schedule)
    check_tensor(x_t, "x_t", floating=True)
    check_same_shape(model_output, x_t, "model_output", "x_t")
    check_timesteps(t, x_t.shape[0], schedule.T)
    if noise is None:
        noise = torch.randn_like(x_t)
    else:
        check_same_shape(noise, x_t, "noise", "x_t")
    if kernels.uses_triton(x_t):   # the same step, fused into one pass over memory (minidiff.kernels)
        return kernels.sampler_update(x_t, model_output, kernels.ddpm_coefficients(schedule, t, prediction), noise,
                                      clip_x0)
    x0, _ = predict_x0_eps(schedule, model_output, x_t, t, prediction)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    c0 = schedule.gather("posterior_coef_x0", t, x_t.ndim).to(x_t.dtype)
    ct = schedule.gather("posterior_coef_xt", t, x_t.ndim).to(x_t.dtype)
    var = schedule.gather("posterior_variance", t, x_t.ndim).to(x_t.dtype)
    return c0 * x0 + ct * x_t + var.sqrt() * noise


SAMPLER_ARGS = ("x_T", "generator", "model_kwargs", "return_trajectory", "progress", "device")
r"""The keyword arguments every sampler of the package takes, last and in this order, after
``(model, schedule, shape, *, steps=..., <its own options>)``: :func:`sample`,
:func:`minidiff.diffusion.ddim.ddim_sample`, :func:`minidiff.diffusion.dpm_solver.dpmpp_2m_sample`, the SDE samplers
:func:`minidiff.diffusion.sde.euler_maruyama`, :func:`~minidiff.diffusion.sde.pc_sample`,
:func:`~minidiff.diffusion.sde.ode_sample`, :func:`minidiff.diffusion.score.annealed_langevin`, and the flow-matching
sampler :func:`minidiff.diffusion.flow.flow_sample`.

- ``model(x, t, **model_kwargs)``: the network (or a score function for the continuous samplers);
- ``schedule``: the noise process it was trained on (a :class:`NoiseSchedule`, an :class:`~minidiff.diffusion.sde.SDE`,
  NCSN's noise levels, or a flow-matching :class:`~minidiff.diffusion.flow.Path`);
- ``shape``: the shape of the batch of samples;
- ``steps``: the number of steps of the sampler's outer loop;
- ``x_T``: the start (default: drawn from the prior with ``generator``); ``model_kwargs``: e.g. ``{"y": labels}``;
- ``return_trajectory``: also return a list of ``(t, x_t)`` on the CPU; ``progress``: a progress bar (on by default);
- ``device``: default the device of the model's parameters (else that of ``x_T``, else the CPU)."""


def _model_device(model, device=None, x_T: torch.Tensor | None = None) -> torch.device:
    """The sampling device: ``device`` if given, else the device of ``model``'s parameters, else ``x_T``'s, else the
    CPU (a plain function has no parameters)."""
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration, TypeError):
        return x_T.device if isinstance(x_T, torch.Tensor) else torch.device("cpu")


def _check_shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or not shape or \
            not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints, e.g. (16, 1, 28, 28), got {shape!r}")
    return tuple(shape)


def _check_start(x_T, shape) -> None:
    if x_T is not None:
        check_tensor(x_T, "x_T", floating=True)
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")


@torch.no_grad()
def sample(model: Callable, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int | None = None,
           prediction: str = "eps", clip_x0: bool = False, trajectory_every: int | None = None,
           x_T: torch.Tensor | None = None, generator: torch.Generator | None = None, model_kwargs: dict | None = None,
           return_trajectory: bool = False, progress: bool = True, device=None):
    r"""Ancestral sampling (Algorithm 2): start from :math:`x_{T-1} \sim \mathcal N(0, I)` (or ``x_T``) and apply
    :func:`p_sample_step` for ``t = T-1, ..., 0``. ``steps`` is ``T`` (the default): ancestral sampling visits every
    step (for fewer, :func:`minidiff.diffusion.ddim.ddim_sample` with ``eta=1`` is its generalisation).

    Returns the final samples, or ``(samples, trajectory)`` with ``return_trajectory=True``, where
    ``trajectory`` is a list of ``(t, x_t)`` pairs on the CPU (every ``trajectory_every`` steps, default
    about 10 snapshots, always including the start and the end). The common arguments are those of
    :data:`SAMPLER_ARGS`.
    """
    _check_schedule(schedule)
    _check_prediction(prediction)
    shape = _check_shape(shape)
    if steps is not None and steps != schedule.T:
        raise ValueError(f"ancestral sampling runs all T = {schedule.T} steps, got steps={steps!r}; for fewer steps "
                         "use ddim.ddim_sample(..., eta=1.0)")
    _check_start(x_T, shape)
    device = _model_device(model, device, x_T)
    schedule = schedule if schedule.device == device else schedule.to(device)
    gen_device = generator.device if generator is not None else device

    def randn():
        return torch.randn(shape, generator=generator, device=gen_device).to(device)

    x = randn() if x_T is None else x_T.to(device)
    every = trajectory_every or max(1, schedule.T // 10)
    traj = [(schedule.T, x.cpu())] if return_trajectory else None
    B = shape[0]
    for i in tqdm(range(schedule.T - 1, -1, -1), desc="sampling", disable=not progress, leave=False):
        t = torch.full((B,), i, device=device, dtype=torch.long)
        out = model(x, t, **(model_kwargs or {}))
        x = p_sample_step(schedule, out, x, t, noise=randn() if i > 0 else torch.zeros_like(x),
                          prediction=prediction, clip_x0=clip_x0)
        if traj is not None and (i % every == 0):
            traj.append((i, x.cpu()))
    return (x, traj) if return_trajectory else x


@torch.no_grad()
def loss_by_timestep(model: Callable, schedule: NoiseSchedule, x0: torch.Tensor, ts, prediction: str = "eps",
                     batch_size: int = 500, seed: int = 0, model_kwargs: dict | None = None) -> torch.Tensor:
    r"""The eq. 14 loss at fixed time steps: for each ``t`` in ``ts`` the mean over ``x0`` of
    :math:`\frac1d\|\text{target} - \text{model}(x_t, t)\|^2` (the same noise draw for every ``t``, fixed by
    ``seed``). Returns a float tensor ``(len(ts),)`` on the CPU. It shows *where* in time a model is good or bad,
    which the average loss hides (chapter 08)."""
    _check_schedule(schedule)
    _check_prediction(prediction)
    check_tensor(x0, "x0", floating=True)
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    ts = [int(t) for t in ts]
    if not ts or min(ts) < 0 or max(ts) > schedule.T - 1:
        raise ValueError(f"ts must be a non-empty list of time steps in [0, {schedule.T - 1}], got {ts}")
    try:
        device = next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        device = x0.device
    sched = schedule if schedule.device == device else schedule.to(device)
    noise_all = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    kwargs = model_kwargs or {}
    out = torch.zeros(len(ts), dtype=torch.float64)
    for i in range(0, x0.shape[0], batch_size):
        xb = x0[i:i + batch_size].to(device)
        nb = noise_all[i:i + batch_size].to(device)
        kb = {k: (v[i:i + batch_size].to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        for j, tv in enumerate(ts):
            t = torch.full((xb.shape[0],), tv, device=device, dtype=torch.long)
            pred = model(q_sample(sched, xb, t, nb), t, **kb)
            err = (pred.float() - target_for(prediction, sched, xb, nb, t).float()).pow(2)
            out[j] += err.flatten(1).mean(1).sum().cpu().double()
    return (out / x0.shape[0]).float()
