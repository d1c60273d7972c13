r"""Score-based generative modelling through stochastic differential equations (Song et al. 2021, "score SDE").

A forward SDE :math:`dx = f(x,t)\,dt + g(t)\,dw` on :math:`t\in[0,1]` turns data into noise. Anderson (1982) gives
its time reversal (Song et al. 2021, eq. 6), which needs only the score of the marginals :math:`p_t`:

.. math:: dx = \big[f(x,t) - g(t)^2\,\nabla_x\log p_t(x)\big]\,dt + g(t)\,d\bar w ,

and the **probability-flow ODE** (eq. 13) has the same marginals with no noise at all:

.. math:: \frac{dx}{dt} = f(x,t) - \tfrac12\,g(t)^2\,\nabla_x\log p_t(x) .

The three processes of the paper (appendix B; :math:`\beta(t) = \beta_0 + t(\beta_1-\beta_0)`):

===========  ==========================  ================================================  ==========================================
SDE          drift :math:`f`             diffusion :math:`g`                               marginal :math:`p_{0t}(x\mid x_0)`
===========  ==========================  ================================================  ==========================================
VP           :math:`-\frac12\beta(t)x`   :math:`\sqrt{\beta(t)}`                           :math:`\mathcal N(m_t x_0, (1-m_t^2) I)`
sub-VP       :math:`-\frac12\beta(t)x`   :math:`\sqrt{\beta(t)(1-m_t^4)}`                  :math:`\mathcal N(m_t x_0, (1-m_t^2)^2 I)`
VE           :math:`0`                   :math:`\sigma(t)\sqrt{2\log(\sigma_1/\sigma_0)}`  :math:`\mathcal N(x_0, \sigma(t)^2 I)`
===========  ==========================  ================================================  ==========================================

with :math:`m_t = \exp\!\big(-\tfrac14 t^2(\beta_1-\beta_0) - \tfrac12 t\beta_0\big)` and
:math:`\sigma(t) = \sigma_0(\sigma_1/\sigma_0)^t`. DDPM is the VP SDE discretised with :math:`\beta_i = \beta(t_i)/N`
(eq. 11 of the paper), NCSN the VE SDE.

Samplers live apart from the processes: :func:`euler_maruyama`, :func:`pc_sample` (predictor-corrector with a
Langevin corrector), :func:`ode_sample` (probability flow, Euler/Heun/RK4) and :func:`log_likelihood` (the
instantaneous change of variables along the PF ODE with a Hutchinson trace estimator, eq. 39).
``score_fn(x, t)`` always takes ``t`` as a float tensor ``(B,)`` in ``[eps, 1]``.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import torch

from .._checks import check_tensor
from .._progress import tqdm
from .ddpm import _check_shape, _check_start, _model_device


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _check_t(t, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
    if not t.is_floating_point():
        raise TypeError(f"t must be a float tensor of times in [0, 1], got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must have shape ({x.shape[0]},), one time per example, got {tuple(t.shape)}")
    if (t < 0).any() or (t > 1).any():
        raise ValueError(f"t (continuous times) must lie in [0, 1], got [{float(t.min()):.3g}, {float(t.max()):.3g}]")
    return t


class SDE(abc.ABC):
    """A forward SDE on t in [0, 1]. Subclasses give the drift and diffusion, the Gaussian marginal and the prior."""

    T: float = 1.0

    @abc.abstractmethod
    def drift_diffusion(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(x, t), g(t))`` with ``g`` of shape ``(B,)``."""

    @abc.abstractmethod
    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(B, ...)`` and std ``(B,)`` of p_0t(x_t | x_0)."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """The std of the prior N(0, std^2 I) at t = 1."""

    def prior_sample(self, shape, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        return self.prior_std() * torch.randn(tuple(shape), generator=generator).to(device)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) per example."""
        s = self.prior_std()
        d = z[0].numel()
        return -0.5 * d * math.log(2 * math.pi * s ** 2) - 0.5 * z.flatten(1).pow(2).sum(1) / s ** 2

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None):
        """Sample x_t ~ p_0t(. | x0); returns ``(x_t, noise, std)``."""
        t = _check_t(t, x0)
        mean, std = self.marginal_prob(x0, t)
        noise = torch.randn_like(x0) if noise is None else noise
        return mean + _bcast(std, x0) * noise, noise, std

    def reverse(self, score_fn: Callable, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (eq. 6) or, with ``probability_flow=True``, the probability-flow ODE (eq. 13)."""
        return ReverseSDE(self, score_fn, probability_flow)


class VPSDE(SDE):
    """Variance-preserving SDE (the continuous DDPM): f = -beta(t) x / 2, g = sqrt(beta(t))."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_0, self.beta_1, self.N = beta_min, beta_max, N

    def beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t):
        return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def drift_diffusion(self, x, t):
        t = _check_t(t, x)
        b = self.beta(t)
        return -0.5 * _bcast(b, x) * x, b.sqrt()

    def marginal_prob(self, x0, t):
        t = _check_t(t, x0)
        lm = self.log_mean_coeff(t)
        return _bcast(lm.exp(), x0) * x0, (1 - (2 * lm).exp()).sqrt()

    def prior_std(self):
        return 1.0


class subVPSDE(VPSDE):
    """Sub-VP SDE: the VP drift with a smaller diffusion, whose variance stays below the VP one (eq. 17)."""

    def drift_diffusion(self, x, t):
        t = _check_t(t, x)
        b = self.beta(t)
        disc = 1 - torch.exp(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t ** 2)
        return -0.5 * _bcast(b, x) * x, (b * disc).sqrt()

    def marginal_prob(self, x0, t):
        t = _check_t(t, x0)
        lm = self.log_mean_coeff(t)
        return _bcast(lm.exp(), x0) * x0, 1 - (2 * lm).exp()


class VESDE(SDE):
    """Variance-exploding SDE (the continuous NCSN): f = 0, g = sigma(t) sqrt(2 log(sigma_max / sigma_min)).
    ``marginal_prob`` gives std sigma(t), as score_sde does; started from x0 at t = 0 the SDE adds only
    sigma(t)^2 - sigma_min^2, so sigma(t) treats the data as carrying noise sigma_min already (chapter 07 checks the
    integral)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_diffusion(self, x, t):
        t = _check_t(t, x)
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    def marginal_prob(self, x0, t):
        t = _check_t(t, x0)
        return x0, self.sigma(t)

    def prior_std(self):
        return self.sigma_max


class ReverseSDE:
    """Reverse-time dynamics of ``sde`` given a score: drift f - g^2 s (SDE) or f - g^2 s / 2 (ODE), run from t=1
    down to t=eps. ``drift_diffusion`` returns the *reverse* drift and the diffusion (0 for the ODE)."""

    def __init__(self, sde: SDE, score_fn: Callable, probability_flow: bool = False):
        self.sde, self.score_fn, self.probability_flow = sde, score_fn, probability_flow

    def drift_diffusion(self, x, t):
        f, g = self.sde.drift_diffusion(x, t)
        s = self.score_fn(x, t)
        coef = 0.5 if self.probability_flow else 1.0
        drift = f - coef * _bcast(g, x) ** 2 * s
        return drift, (torch.zeros_like(g) if self.probability_flow else g)


def _time_grid(steps: int, eps: float, device) -> torch.Tensor:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not 0 < eps < 1:
        raise ValueError(f"eps (the last time) must be in (0, 1), got {eps}")
    return torch.linspace(1.0, eps, steps + 1, device=device)


def _randn(shape, generator, device):
    return torch.randn(tuple(shape), generator=generator, device=generator.device if generator else device).to(device)


def _setup(model, sde: SDE, shape, steps: int, eps: float, x_T, generator, model_kwargs, device):
    """Checks, the device, the score function with its keyword arguments, the time grid and the start."""
    if not isinstance(sde, SDE):
        raise TypeError(f"schedule must be an SDE (VPSDE, subVPSDE, VESDE), got {type(sde).__name__}")
    shape = _check_shape(shape)
    _check_start(x_T, shape)
    device = _model_device(model, device, x_T)
    score_fn = model if not model_kwargs else (lambda x, t: model(x, t, **model_kwargs))
    ts = _time_grid(steps, eps, device)
    x = sde.prior_sample(shape, generator, device) if x_T is None else x_T.to(device)
    return shape, device, score_fn, ts, x


@torch.no_grad()
def euler_maruyama(model: Callable, schedule: SDE, shape, *, steps: int = 500, eps: float = 1e-3,
                   denoise: bool = True, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   model_kwargs: dict | None = None, return_trajectory: bool = False, progress: bool = True,
                   device=None):
    r"""Euler–Maruyama on the reverse SDE of ``schedule`` (an :class:`SDE`) with the score ``model(x, t)``:
    :math:`x \leftarrow x - [f - g^2 s]\,\Delta t + g\sqrt{\Delta t}\,z` with :math:`\Delta t = (1-\epsilon)/n`
    (``steps`` score evaluations). ``denoise`` drops the noise of the last step (returns its mean), as Song et al. do.
    The common arguments are those of :data:`minidiff.diffusion.ddpm.SAMPLER_ARGS`."""
    shape, device, score_fn, ts, x = _setup(model, schedule, shape, steps, eps, x_T, generator, model_kwargs, device)
    rev = schedule.reverse(score_fn)
    traj = [(1.0, x.cpu())] if return_trajectory else None
    for i in tqdm(range(steps), desc="Euler-Maruyama", disable=not progress, leave=False):
        t, dt = ts[i], ts[i] - ts[i + 1]
        tb = t.expand(shape[0])
        drift, g = rev.drift_diffusion(x, tb)
        mean = x - drift * dt
        last = i == steps - 1
        x = mean if (last and denoise) else mean + _bcast(g, x) * dt.sqrt() * _randn(shape, generator, device)
        if traj is not None:
            traj.append((float(ts[i + 1]), x.cpu()))
    return (x, traj) if return_trajectory else x


def _langevin_step_size(sde: SDE, score: torch.Tensor, z: torch.Tensor, snr: float, t: torch.Tensor):
    r"""Song et al. 2021, Algorithms 4-5: :math:`\epsilon = 2\alpha\,(r\,\|z\|/\|s\|)^2` (norms averaged over the batch), with
    :math:`\alpha = 1` for VE and :math:`\alpha_i = 1-\beta_i`, :math:`\beta_i = \beta(t)\Delta t`, for VP/sub-VP."""
    s_norm = score.flatten(1).norm(dim=1).mean().clamp_min(1e-12)   # batch averages, as in the paper's code:
    z_norm = z.flatten(1).norm(dim=1).mean()                          # per-example norms are noisy in low dimension
    alpha = 1 - sde.beta(t) / sde.N if isinstance(sde, VPSDE) else torch.ones_like(t)
    return 2 * alpha * (snr * z_norm / s_norm) ** 2


@torch.no_grad()
def pc_sample(model: Callable, schedule: SDE, shape, *, steps: int = 500, snr: float = 0.16, n_corrector: int = 1,
              eps: float = 1e-3, denoise: bool = True, x_T: torch.Tensor | None = None,
              generator: torch.Generator | None = None, model_kwargs: dict | None = None,
              return_trajectory: bool = False, progress: bool = True, device=None):
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1): each step, ``n_corrector`` Langevin corrector
    steps at the current time with the signal-to-noise step size (``_langevin_step_size``), then one
    Euler–Maruyama predictor step. Score evaluations: ``steps * (1 + n_corrector)``. The common arguments are those
    of :data:`minidiff.diffusion.ddpm.SAMPLER_ARGS`."""
    if snr <= 0 or n_corrector < 0:
        raise ValueError(f"snr must be > 0 and n_corrector >= 0, got {snr}, {n_corrector}")
    shape, device, score_fn, ts, x = _setup(model, schedule, shape, steps, eps, x_T, generator, model_kwargs, device)
    rev = schedule.reverse(score_fn)
    traj = [(1.0, x.cpu())] if return_trajectory else None
    for i in tqdm(range(steps), desc="predictor-corrector", disable=not progress, leave=False):
        t, dt = ts[i], ts[i] - ts[i + 1]
        tb = t.expand(shape[0])
        for _ in range(n_corrector):
            s = score_fn(x, tb)
            z = _randn(shape, generator, device)
            step = _bcast(_langevin_step_size(schedule, s, z, snr, tb), x)
            x = x + step * s + (2 * step).sqrt() * z
        drift, g = rev.drift_diffusion(x, tb)
        mean = x - drift * dt
        last = i == steps - 1
        x = mean if (last and denoise) else mean + _bcast(g, x) * dt.sqrt() * _randn(shape, generator, device)
        if traj is not None:
            traj.append((float(ts[i + 1]), x.cpu()))
    return (x, traj) if return_trajectory else x


def _map(fn, *ys):
    """``fn`` applied to tensors, or element-wise to tuples of tensors (an augmented ODE state)."""
    return tuple(fn(*a) for a in zip(*ys)) if isinstance(ys[0], tuple) else fn(*ys)


def _ode_step(v: Callable, y, t, h, method: str):
    r"""One fixed step :math:`t \to t + h` of :math:`dy/dt = v(y, t)` (``h < 0`` integrates towards t = 0) by Euler,
    Heun (the explicit trapezoid) or the classical fourth-order Runge-Kutta rule
    :math:`y + \tfrac h6(k_1 + 2k_2 + 2k_3 + k_4)`. ``y`` (and ``v``'s value) is a tensor or a tuple of tensors, so
    the same step integrates the probability-flow ODE (:func:`ode_sample`) and its augmented state with the log-density
    (:func:`log_likelihood`). The package's one RK4 step."""
    if method == "euler":
        return _map(lambda y, k: y + h * k, y, v(y, t))
    if method == "heun":
        k1 = v(y, t)
        k2 = v(_map(lambda y, k: y + h * k, y, k1), t + h)
        return _map(lambda y, a, b: y + 0.5 * h * (a + b), y, k1, k2)
    if method == "rk4":
        k1 = v(y, t)
        k2 = v(_map(lambda y, k: y + 0.5 * h * k, y, k1), t + 0.5 * h)
        k3 = v(_map(lambda y, k: y + 0.5 * h * k, y, k2), t + 0.5 * h)
        k4 = v(_map(lambda y, k: y + h * k, y, k3), t + h)
        return _map(lambda y, a, b, c, d: y + h / 6 * (a + 2 * b + 2 * c + d), y, k1, k2, k3, k4)
    raise ValueError(f"method must be 'euler', 'heun' or 'rk4', got {method!r}")


ODE_EVALS = {"euler": 1, "heun": 2, "rk4": 4}


@torch.no_grad()
def ode_sample(model: Callable, schedule: SDE, shape, *, steps: int = 100, method: str = "heun", eps: float = 1e-3,
               x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
               model_kwargs: dict | None = None, return_trajectory: bool = False, progress: bool = True, device=None):
    r"""Integrate the probability-flow ODE (eq. 13) of ``schedule`` (an :class:`SDE`) from t = 1 to ``eps`` with a
    fixed-step ``method`` (``"euler"``, ``"heun"`` or ``"rk4"``, ``_ode_step``); score evaluations:
    ``steps * ODE_EVALS[method]``. Deterministic given ``x_T``. The common arguments are those of
    :data:`minidiff.diffusion.ddpm.SAMPLER_ARGS`."""
    if method not in ODE_EVALS:
        raise ValueError(f"method must be one of {tuple(ODE_EVALS)}, got {method!r}")
    shape, device, score_fn, ts, x = _setup(model, schedule, shape, steps, eps, x_T, generator, model_kwargs, device)
    rev = schedule.reverse(score_fn, probability_flow=True)
    v = lambda y, t: rev.drift_diffusion(y, t.expand(shape[0]) if t.ndim == 0 else t)[0]
    traj = [(1.0, x.cpu())] if return_trajectory else None
    for i in tqdm(range(steps), desc=f"PF-ODE ({method})", disable=not progress, leave=False):
        x = _ode_step(v, x, ts[i], ts[i + 1] - ts[i], method)
        if traj is not None:
            traj.append((float(ts[i + 1]), x.cpu()))
    return (x, traj) if return_trajectory else x


def divergence(v: Callable, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor | None = None):
    """``(v(x, t), div_x v(x, t))``: the divergence exactly (one backward pass per dimension) when ``probes`` is None,
    else Hutchinson's estimator E[z^T (dv/dx) z] averaged over the given probe vectors (n_probes, B, ...)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = v(x, t)
        if probes is None:
            d = x[0].numel()
            flat = out.flatten(1)
            div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for j in range(d):
                g, = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=j < d - 1)
                div = div + g.flatten(1)[:, j]
        else:
            div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for k, z in enumerate(probes):
                g, = torch.autograd.grad((out * z).sum(), x, retain_graph=k < len(probes) - 1)
                div = div + (g * z).flatten(1).sum(1)
            div = div / len(probes)
    return out.detach(), div.detach()


def log_likelihood(sde: SDE, score_fn: Callable, x0: torch.Tensor, n_steps: int = 100, method: str = "rk4",
                   eps: float = 1e-5, hutchinson: bool = True, n_probes: int = 1,
                   generator: torch.Generator | None = None, prior_logp: Callable | None = None,
                   progress: bool = False) -> torch.Tensor:
    r"""Log-density :math:`\log p_\epsilon(x_0)` (nats per example) by the instantaneous change of variables along the
    probability-flow ODE (Song et al. 2021, eq. 39; Chen et al. 2018):

    .. math:: \log p_0(x(0)) = \log p_1(x(1)) + \int_0^1 \nabla\cdot v(x(t), t)\,dt,\qquad v = f - \tfrac12 g^2 s .

    Integrates :math:`x` and the divergence forwards from ``eps`` to 1 with a fixed-step Euler/Heun/RK4 scheme.
    The divergence is exact for ``hutchinson=False`` (d backward passes: small d only) and otherwise estimated with
    ``n_probes`` Rademacher vectors drawn once per example (Hutchinson 1989; Grathwohl et al. 2019).
    ``prior_logp(x_1)`` replaces the model's prior N(0, std_1^2 I) at t = 1 (e.g. by the exact p_1 in tests)."""
    check_tensor(x0, "x0", floating=True)
    if method not in ODE_EVALS:
        raise ValueError(f"method must be one of {tuple(ODE_EVALS)}, got {method!r}")
    rev = sde.reverse(score_fn, probability_flow=True)
    B = x0.shape[0]
    v = lambda y, t: rev.drift_diffusion(y, t.expand(B) if t.ndim == 0 else t)[0]
    probes = None
    if hutchinson:
        if n_probes < 1:
            raise ValueError(f"n_probes must be >= 1, got {n_probes}")
        r = torch.randint(0, 2, (n_probes, *x0.shape), generator=generator).to(x0.device, x0.dtype)
        probes = 2 * r - 1
    ts = torch.linspace(eps, 1.0, n_steps + 1, device=x0.device, dtype=x0.dtype)
    x = x0.detach()
    delta = torch.zeros(B, device=x0.device, dtype=x0.dtype)   # accumulates the integral of the divergence

    def aug(y, t):          # the augmented state (x, delta): dx/dt = v, d delta/dt = div v
        return divergence(v, y[0], t, probes)

    for i in tqdm(range(n_steps), desc="PF-ODE likelihood", disable=not progress, leave=False):
        x, delta = _ode_step(aug, (x, delta), ts[i], ts[i + 1] - ts[i], method)
    return (sde.prior_logp(x) if prior_logp is None else prior_logp(x)) + delta


def bits_per_dim(log_p: torch.Tensor, dim: int, data_range: float = 2.0, levels: int = 256) -> torch.Tensor:
    r"""Convert a continuous log-density (nats) of data scaled to an interval of width ``data_range`` into bits per
    dimension of the ``levels``-level discrete data it dequantises: :math:`-\log_2 p(x)/D + \log_2(\text{levels}/\text{range})`
    (7 bits of offset for 8-bit images in [-1, 1])."""
    return -log_p / (dim * math.log(2)) + math.log2(levels / data_range)


def score_from_eps_model(model: Callable, schedule, clip_x0: bool = False) -> Callable:
    r"""Turn a DDPM noise-prediction network trained on ``schedule`` (T discrete steps) into a continuous-time score
    :math:`s(x,t) = -\epsilon_\theta(x, i)/\sqrt{1-\bar\alpha_i}` with :math:`i = \mathrm{round}(tT) - 1` (clamped), the
    discrete step whose noise level matches time :math:`t` (eq. 11 of the score-SDE paper). Use it with a
    :class:`VPSDE` whose ``beta_min, beta_max`` equal ``T * beta_1, T * beta_T`` of a linear schedule.

    ``clip_x0=True`` applies chapter 04's guard inside the score: the implied clean image
    :math:`\hat x_0 = (x - \sqrt{1-\bar\alpha_i}\,\epsilon_\theta)/\sqrt{\bar\alpha_i}` is clamped to [-1, 1] and the noise
    re-derived from it, which keeps an under-trained network from pushing samples far outside the data range."""
    T = schedule.T
    tables: dict = {}

    def table(name, x):
        # the schedule's float64 CPU table, cast to x's dtype on the CPU and then moved (once per device and dtype):
        # no float64 tensor reaches x's device, whatever dtype the schedule itself holds
        key = (name, x.device, x.dtype)
        if key not in tables:
            tables[key] = schedule.table64(name).to(x.dtype).to(x.device)
        return tables[key]

    def score(x, t):
        i = (t * T).round().long().clamp(1, T) - 1
        std = _bcast(table("sqrt_one_minus_alphas_cumprod", x)[i], x)
        eps = model(x, i)
        if clip_x0:
            m = _bcast(table("sqrt_alphas_cumprod", x)[i], x)
            x0 = ((x - std * eps) / m).clamp(-1, 1)
            eps = (x - m * x0) / std
        return -eps / std

    return score
