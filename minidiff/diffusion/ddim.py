r"""Denoising diffusion implicit models (Song, Meng & Ermon 2021): fast, optionally deterministic sampling from
a network trained with the DDPM objective, on any sub-sequence of the training time steps.

The generalised reverse step (Song et al. 2021, eq. 12), from step :math:`t` to an earlier step :math:`s`
(``t_prev``; :math:`s = -1` means the clean data, :math:`\bar\alpha_{-1} = 1`):

.. math::

    x_s = \sqrt{\bar\alpha_s}\,\underbrace{\frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}}}_{\hat x_0}
    + \sqrt{1-\bar\alpha_s-\sigma_t^2}\;\epsilon_\theta(x_t, t) + \sigma_t\, z,

    \sigma_t = \eta\,\sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}\,\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_s}}
    \qquad \text{(eq. 16)}.

``eta = 0`` is DDIM: no noise, a deterministic map from :math:`x_T` to :math:`x_0` (an ODE discretisation, chapter
07). ``eta = 1`` with consecutive steps is DDPM's ancestral sampler with the posterior variance
:math:`\tilde\beta_t`. Because the DDPM objective only constrains the marginals :math:`q(x_t\mid x_0)`, every
``eta`` and every sub-sequence is a valid sampler for the same trained network.

Determinism also gives an *encoder*: running the eta = 0 update forwards in time maps an image to the noise
:math:`x_T` that decodes back to it (:func:`ddim_encode`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .. import kernels
from .._checks import check_same_shape, check_tensor
from .._progress import tqdm
from .ddpm import _check_prediction, _check_schedule, _check_shape, _check_start, _model_device, predict_x0_eps
from .schedules import NoiseSchedule

SPACINGS = ("uniform", "quadratic")


def _as_steps(t, batch: int, T: int, name: str, allow_minus_one: bool, device) -> torch.Tensor:
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.full((batch,), t, dtype=torch.long, device=device)
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an int or an int64 tensor of shape ({batch},), got {t!r:.60}")
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
    lo = -1 if allow_minus_one else 0
    if int(t.min()) < lo or int(t.max()) > T - 1:
        raise ValueError(f"{name} must lie in [{lo}, {T - 1}] for a schedule of T={T} steps, got values in "
                         f"[{int(t.min())}, {int(t.max())}]")
    return t.to(device)


def _abar64(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """abar_t with abar_{-1} = 1, float64 on the CPU, shape ``(B,)``, from the schedule's float64 table."""
    t = t.reshape(-1).cpu()
    a = schedule.table64("alphas_cumprod")
    return torch.where(t >= 0, a[t.clamp(min=0)], torch.ones((), dtype=torch.float64))


def _coef(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example coefficient ``(B,)`` computed in float64 on the CPU, cast to ``x``'s dtype there, then moved to
    ``x``'s device and shaped ``(B, 1, ..., 1)`` to broadcast: no float64 tensor reaches the device (MPS has none)."""
    return c.to(x.dtype).to(x.device).reshape(-1, *([1] * (x.ndim - 1)))


def ddim_sigma(schedule: NoiseSchedule, t, t_prev, eta: float = 0.0) -> torch.Tensor:
    r""":math:`\sigma_t` of eq. 16 for the step ``t -> t_prev`` (tensors or ints; ``t_prev = -1`` allowed), in float64
    on the CPU, shape ``(B,)``."""
    t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
    s = torch.as_tensor(t_prev, dtype=torch.long).reshape(-1)
    a_t, a_s = _abar64(schedule, t), _abar64(schedule, s)
    return eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp(min=0).sqrt()


def ddim_step(schedule: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, t, t_prev, eta: float = 0.0,
              noise: torch.Tensor | None = None, prediction: str = "eps", clip_x0: bool = False) -> torch.Tensor:
    r"""One generalised DDIM step :math:`x_t \to x_{t_\text{prev}}` (Song et al. 2021, eq. 12, with
    :math:`\sigma_t` of eq. 16; see the module docstring). ``eps`` is the network output (an epsilon prediction unless
    ``prediction`` says otherwise); ``t`` and ``t_prev`` are ints or int64 ``(B,)`` tensors with ``t_prev < t``;
    ``t_prev = -1`` means :math:`\bar\alpha = 1` (the clean image). ``eta`` in [0, 1] scales the injected noise.

    Precision: the coefficients :math:`\sqrt{\bar\alpha_s}`, :math:`\sqrt{1-\bar\alpha_s-\sigma_t^2}` and
    :math:`\sigma_t` are computed in float64 on the CPU and rounded once to ``x_t``'s dtype; the arithmetic on the
    images runs in ``x_t``'s dtype on its device (float32 for a float32 model)."""
    _check_schedule(schedule)
    check_tensor(x_t, "x_t", floating=True)
    check_same_shape(eps, x_t, "eps", "x_t")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 = DDIM, 1 = DDPM-like), got {eta}")
    B = x_t.shape[0]
    t = _as_steps(t, B, schedule.T, "t", False, x_t.device)
    s = _as_steps(t_prev, B, schedule.T, "t_prev", True, x_t.device)
    if (s >= t).any():
        raise ValueError("t_prev must be smaller than t (sampling goes backwards in time)")
    if kernels.uses_triton(x_t):   # the same step, fused into one pass over memory (minidiff.kernels)
        if eta > 0 and noise is None:
            noise = torch.randn_like(x_t)
        if noise is not None:
            check_same_shape(noise, x_t, "noise", "x_t")
        return kernels.sampler_update(x_t, eps, kernels.ddim_coefficients(schedule, t, s, eta, prediction),
                                      noise if eta > 0 else None, clip_x0)
    x0, eps_hat = predict_x0_eps(schedule, eps, x_t, t, prediction)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        a_t = _abar64(schedule, t)
        # keep eps consistent with the clipped x0
        eps_hat = (x_t - _coef(a_t.sqrt(), x_t) * x0) / _coef((1 - a_t).sqrt(), x_t)
    a_s = _abar64(schedule, s)
    sigma = ddim_sigma(schedule, t, s, eta)
    dir_coef = (1 - a_s - sigma ** 2).clamp(min=0).sqrt()
    out = _coef(a_s.sqrt(), x_t) * x0 + _coef(dir_coef, x_t) * eps_hat
    if eta > 0:
        if noise is None:
            noise = torch.randn_like(x_t)
        check_same_shape(noise, x_t, "noise", "x_t")
        out = out + _coef(sigma, x_t) * noise
    return out


def timesteps(T: int, n: int, spacing: str = "uniform") -> torch.Tensor:
    r"""An increasing sub-sequence of ``n`` steps of ``0..T-1`` ending at ``T-1``.

    ``uniform``: evenly spaced (Song et al. 2021 use :math:`\tau_i = \lfloor c\,i\rfloor`); ``quadratic``: spaced as
    :math:`\tau_i \propto i^2`, denser near :math:`t = 0` where the image's details form (their CIFAR-10 choice)."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(f"n (the number of steps) must be an int in [1, T={T}], got {n!r}")
    if n == 1:
        return torch.tensor([T - 1])
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    raw = (u * (T - 1)) if spacing == "uniform" else (u ** 2 * (T - 1))
    steps = raw.round().long().tolist()
    for i in range(1, n):            # strictly increasing (quadratic spacing crowds the first steps)
        steps[i] = max(steps[i], steps[i - 1] + 1)
    for i in range(n - 2, -1, -1):   # and still ending at T-1
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return torch.tensor(steps)


def _sampler_setup(model, schedule: NoiseSchedule, shape, steps: int, spacing: str, prediction: str, x_T, device,
                   generator):
    """What every sampler on a sub-sequence needs: checks, the device, a noise source on the generator's device, the
    start x_T, and the ``(t, t_prev)`` pairs from ``T-1`` down to ``(t_0, -1)``."""
    _check_schedule(schedule)
    _check_prediction(prediction)
    shape = _check_shape(shape)
    _check_start(x_T, shape)
    device = _model_device(model, device, x_T)
    gen_device = generator.device if generator is not None else device

    def randn():
        return torch.randn(shape, generator=generator, device=gen_device).to(device)

    x = x_T.to(device) if x_T is not None else randn()
    seq = timesteps(schedule.T, steps, spacing).tolist()
    prev = [-1] + seq[:-1]
    return device, randn, x, list(zip(reversed(seq), reversed(prev)))


@torch.no_grad()
def ddim_sample(model: Callable, schedule: NoiseSchedule, shape: tuple[int, ...], *, steps: int = 50,
                spacing: str = "uniform", eta: float = 0.0, prediction: str = "eps", clip_x0: bool = False,
                x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                model_kwargs: dict | None = None, return_trajectory: bool = False, progress: bool = True, device=None):
    """Sample with :func:`ddim_step` on ``timesteps(T, steps, spacing)``: ``steps`` network calls. Starts from
    ``x_T`` when given (e.g. from :func:`ddim_encode`), else from N(0, I). Returns the samples, or
    ``(samples, trajectory)`` with a list of ``(t, x_t)`` on the CPU. The common arguments are those of
    :data:`minidiff.diffusion.ddpm.SAMPLER_ARGS`."""
    device, randn, x, pairs = _sampler_setup(model, schedule, shape, steps, spacing, prediction, x_T, device, generator)
    traj = [(schedule.T, x.cpu())] if return_trajectory else None
    B = shape[0]
    for t, s in tqdm(pairs, desc=f"DDIM {steps} steps", disable=not progress, leave=False):
        tt = torch.full((B,), t, dtype=torch.long, device=device)
        out = model(x, tt, **(model_kwargs or {}))
        # at the last step (t_prev = -1) sigma is 0, so the noise drawn there is multiplied by 0
        x = ddim_step(schedule, out, x, tt, s, eta=eta, noise=randn() if eta > 0 else None, prediction=prediction,
                      clip_x0=clip_x0)
        if traj is not None:
            traj.append((s, x.cpu()))
    return (x, traj) if return_trajectory else x


@torch.no_grad()
def ddim_encode(model: Callable, schedule: NoiseSchedule, x0: torch.Tensor, steps: int = 50, spacing: str = "uniform",
                prediction: str = "eps", device=None, progress: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    r"""Deterministic encoding :math:`x_0 \to x_T`: the eta = 0 update of eq. 12 run forwards in time,
    :math:`x_{t} = \sqrt{\bar\alpha_t}\hat x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_s, s)` from :math:`s` to the next
    step :math:`t` (the network is evaluated at the earlier point, the Euler step of the probability-flow ODE
    in reverse). :func:`ddim_sample` with the same ``steps`` and ``spacing`` maps the result back to about ``x0``."""
    _check_schedule(schedule)
    _check_prediction(prediction)
    check_tensor(x0, "x0", floating=True)
    device = _model_device(model, device)
    x = x0.to(device)
    seq = timesteps(schedule.T, steps, spacing).tolist()
    B = x.shape[0]
    prev = -1
    for t in tqdm(seq, desc="DDIM encode", disable=not progress, leave=False):
        s_eval = max(prev, seq[0]) if prev < 0 else prev     # at the clean image, ask the network at the first step
        ss = torch.full((B,), s_eval, dtype=torch.long, device=device)
        out = model(x, ss, **(model_kwargs or {}))
        if prev < 0:
            _, eps = predict_x0_eps(schedule, out, x, ss, prediction)
            x0_hat = x
        else:
            x0_hat, eps = predict_x0_eps(schedule, out, x, ss, prediction)
        a_t = float(schedule.table64("alphas_cumprod")[t])      # a Python float: the images stay in x's dtype
        x = math.sqrt(a_t) * x0_hat + math.sqrt(1 - a_t) * eps
        prev = t
    return x


def slerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    r"""Spherical interpolation between noise tensors (Shoemake 1985), per example:
    :math:`\frac{\sin((1-w)\theta)}{\sin\theta}a + \frac{\sin(w\theta)}{\sin\theta}b` with :math:`\theta` the angle between
    the flattened ``a`` and ``b``. Keeps the norm typical of Gaussian noise, which straight lines do not (the
    midpoint of two independent N(0, I) vectors has only ~0.71 of their norm). ``w`` is a number or ``(K,)``;
    returns ``(K, *a.shape)`` for a tensor ``w``."""
    check_same_shape(a, b, "a", "b")
    w_t = torch.as_tensor(w, dtype=a.dtype, device=a.device)
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    theta = cos.clamp(-1 + 1e-7, 1 - 1e-7).acos().view(-1, *([1] * (a.ndim - 1)))
    ws = w_t.reshape(-1, *([1] * a.ndim)) if w_t.ndim else w_t
    out = (torch.sin((1 - ws) * theta) * a + torch.sin(ws * theta) * b) / torch.sin(theta)
    return out
