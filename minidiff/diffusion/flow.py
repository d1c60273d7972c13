r"""Flow matching and rectified flow (Lipman et al. 2023; Liu, Gong & Liu 2023; Albergo & Vanden-Eijnden 2023), and
EDM's design view of diffusion (Karras et al. 2022). Chapter 13 derives every formula here.

**One interpolant.** Data :math:`x_0` and noise :math:`\epsilon \sim \mathcal N(0, I)` are joined by a path on
:math:`t \in [0, 1]` (t = 0 is the data, t = 1 the noise, as in the rest of the course and in Stable Diffusion 3):

.. math:: x_t = a_t\,x_0 + b_t\,\epsilon, \qquad a_0 = 1,\ b_0 = 0,\quad a_1 \approx 0,\ b_1 = 1 .

=========  ==========================================  =============================================
path       :math:`a_t`                                 :math:`b_t`
=========  ==========================================  =============================================
linear     :math:`1 - t` (rectified flow, SD3)          :math:`t`
cosine     :math:`\cos(\pi t/2)`                       :math:`\sin(\pi t/2)`
vp         :math:`m_t` of the VP SDE (chapter 07)      :math:`\sqrt{1 - m_t^2}`
=========  ==========================================  =============================================

**The velocity target** (conditional flow matching, Lipman et al. 2023, eq. 14 with their Gaussian paths; the linear
case is Liu et al.'s rectified flow, eq. 1): along one pair the point moves with
:math:`\dot x_t = \dot a_t x_0 + \dot b_t \epsilon` (for the linear path :math:`\epsilon - x_0`, a constant), and the
network regresses it:

.. math:: L_\text{CFM} = \mathbb E_{t, x_0, \epsilon}\,\big\|v_\theta(x_t, t) - (\dot a_t x_0 + \dot b_t\epsilon)\big\|^2 .

The minimiser is the conditional mean :math:`v^*(x, t) = \mathbb E[\dot a_t x_0 + \dot b_t \epsilon \mid x_t = x]`,
whose ODE :math:`dx/dt = v^*(x, t)`, run from :math:`t = 1` to 0, carries :math:`\mathcal N(0, I)` to the data
distribution (the marginals of the interpolant are preserved). Closed forms of :math:`v^*`: :func:`gaussian_velocity`
(Gaussian data) and :func:`points_velocity` (a finite set of points).

**The link to chapter 04.** From an :math:`\epsilon`-prediction, :math:`\hat x_0 = (x_t - b_t\hat\epsilon)/a_t` and

.. math:: v = \frac{\dot a_t}{a_t}\,x_t + \Big(\dot b_t - \frac{\dot a_t}{a_t}\,b_t\Big)\hat\epsilon ,

(:func:`velocity_from_eps`); for the VP path this is exactly the probability-flow ODE of chapter 07,
:math:`f - \tfrac12 g^2 \nabla\log p_t` with :math:`\nabla \log p_t = -\hat\epsilon / b_t` (the tests check both).

**Time sampling.** Uniform :math:`t`, or the logit-normal of Stable Diffusion 3 (Esser et al. 2024, eq. 19):
:math:`t = \mathrm{sigmoid}(n)`, :math:`n \sim \mathcal N(m, s^2)`, which spends training on the middle of the path.
For the linear path :math:`x_t/(1-t) = x_0 + \sigma\epsilon` with :math:`\sigma = t/(1-t)`, so
:math:`\log\sigma = \mathrm{logit}(t)`: the logit-normal is EDM's log-normal noise-level distribution
(:func:`edm_sigmas`) in other coordinates.

**Samplers** (:func:`flow_sample`): Euler and Heun (the last step is an Euler step, as in EDM's Algorithm 1, so Heun
costs :math:`2\,\text{steps} - 1` network calls) from :math:`t = 1` to :math:`t = 0` on a uniform grid.

**Reflow** (Liu et al. 2023, sec. 2.3): pair each noise :math:`\epsilon` with the image the trained model's ODE draws
from it (:func:`reflow_couplings`), then train again with :math:`x_0` and :math:`\epsilon` *coupled* (``noise=`` in
:func:`flow_loss`). Paths of the new model cross less and are straighter (:func:`straightness`), so a few Euler steps
suffice.

**EDM** (Karras et al. 2022, Table 1): the denoiser :math:`D(x;\sigma) = c_\text{skip}x + c_\text{out}
F(c_\text{in}x; c_\text{noise})` with :func:`edm_preconditioning`, noise levels :math:`\ln\sigma \sim
\mathcal N(P_\text{mean}, P_\text{std}^2)` (:func:`edm_sigmas`) and loss weight :math:`\lambda(\sigma) =
(\sigma^2 + \sigma_\text{data}^2)/(\sigma\,\sigma_\text{data})^2`.

A model is any callable ``model(x_t, t)`` with ``t`` a float tensor ``(B,)`` in ``[0, 1]`` (the course's networks
take ``time_scale=1000`` to embed it, chapter 13).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .._checks import check_same_shape, check_tensor
from .._progress import tqdm
from .ddpm import _check_shape, _check_start, _model_device
from .sde import VPSDE

PATHS = ("linear", "cosine", "vp")
TIME_SAMPLINGS = ("uniform", "logit_normal")
METHODS = ("euler", "heun")


class Path:
    r"""The interpolant :math:`x_t = a_t x_0 + b_t\epsilon` of one ``kind`` (``"linear"``, ``"cosine"`` or ``"vp"``,
    module docstring), with its time derivatives. ``vp`` uses the VP SDE of chapter 07 (``beta_min``, ``beta_max``).
    Every method takes ``t`` as a float tensor and returns tensors shaped like it."""

    def __init__(self, kind: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0):
        if kind not in PATHS:
            raise ValueError(f"path kind must be one of {PATHS}, got {kind!r}")
        self.kind = kind
        self.sde = VPSDE(beta_min, beta_max) if kind == "vp" else None

    def __repr__(self) -> str:
        return f"Path({self.kind!r})"

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r""":math:`(a_t, b_t, \dot a_t, \dot b_t)`."""
        if self.kind == "linear":
            one = torch.ones_like(t)
            return 1 - t, t, -one, one
        if self.kind == "cosine":
            h = math.pi / 2
            return torch.cos(h * t), torch.sin(h * t), -h * torch.sin(h * t), h * torch.cos(h * t)
        m = self.sde.log_mean_coeff(t).exp()
        dm = -0.5 * self.sde.beta(t) * m                  # d/dt exp(log m_t) = m_t * d log m_t / dt
        b = (1 - m ** 2).clamp(min=0).sqrt()
        db = -m * dm / b.clamp(min=1e-12)
        return m, b, dm, db

    def prior_sample(self, shape, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """Noise at t = 1: N(0, I) (for ``vp`` the true marginal there is N(m_1 x_0, (1 - m_1^2) I), m_1 ~ 0.007)."""
        gen_device = generator.device if generator is not None else "cpu"
        return torch.randn(tuple(shape), generator=generator, device=gen_device).to(device)


def as_path(path) -> Path:
    """A :class:`Path` from a path or its kind's name."""
    if isinstance(path, Path):
        return path
    if isinstance(path, str):
        return Path(path)
    raise TypeError(f"path must be a Path or one of {PATHS}, got {type(path).__name__}")


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def _check_times(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.full((x.shape[0],), float(t), device=x.device)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor ({x.shape[0]},) of times in [0, 1], got "
                        f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},), one time per example, got {tuple(t.shape)}")
    if x.shape[0] and ((t < 0).any() or (t > 1).any()):
        raise ValueError(f"{name} must lie in [0, 1] (0 = data, 1 = noise), got "
                         f"[{float(t.min()):.3g}, {float(t.max()):.3g}]")
    return t


def _hi(t: torch.Tensor) -> torch.Tensor:
    """Times in at least float32 (the coefficients of half-precision times would round badly)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _check_batch(x, name: str) -> torch.Tensor:
    check_tensor(x, name, floating=True)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    return x


def _coefficients_at(path, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
    r"""The path's :math:`a_t, b_t, \dot a_t, \dot b_t` at ``t``, shaped to broadcast against ``x0``, once the pair
    ``(x0, noise)`` and the times are checked."""
    path = as_path(path)
    _check_batch(x0, "x0")
    check_same_shape(x0, noise, "x0", "noise")
    t = _check_times(t, x0)
    return [_bcast(c, x0) for c in path.coefficients(_hi(t))]


def interpolate(path, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r""":math:`x_t = a_t x_0 + b_t \epsilon` (module docstring)."""
    a, b, _, _ = _coefficients_at(path, x0, t, noise)
    return a * x0 + b * noise


def velocity_target(path, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r"""The conditional velocity :math:`\dot a_t x_0 + \dot b_t \epsilon` (for the linear path :math:`\epsilon - x_0`)."""
    _, _, da, db = _coefficients_at(path, x0, t, noise)
    return da * x0 + db * noise


def sample_times(n: int, kind: str = "logit_normal", *, mean: float = 0.0, std: float = 1.0,
                 generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    r"""``n`` training times in (0, 1): ``"uniform"``, or ``"logit_normal"`` (Esser et al. 2024, eq. 19):
    :math:`t = \mathrm{sigmoid}(u)`, :math:`u \sim \mathcal N(\text{mean}, \text{std}^2)`."""
    if kind not in TIME_SAMPLINGS:
        raise ValueError(f"time sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    gen_device = generator.device if generator is not None else device
    if kind == "uniform":
        t = torch.rand(n, generator=generator, device=gen_device)
    else:
        t = torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=gen_device))
    return t.to(device)


def flow_loss(model: Callable, path, x0: torch.Tensor, *, time_sampling: str = "logit_normal",
              t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
              model_kwargs: dict | None = None) -> torch.Tensor:
    r"""The conditional flow-matching loss :math:`L_\text{CFM}` (module docstring): the mean squared error between
    ``model(x_t, t)`` and the velocity :math:`\dot a_t x_0 + \dot b_t\epsilon`, with ``t`` drawn by ``time_sampling``
    and :math:`\epsilon \sim \mathcal N(0, I)` unless given. Reflow passes ``noise``: the noise each ``x0`` was drawn
    from (the coupling)."""
    path = as_path(path)
    _check_batch(x0, "x0")
    B = x0.shape[0]
    t = sample_times(B, time_sampling, device=x0.device) if t is None else _check_times(t, x0)
    if noise is None:
        noise = torch.randn_like(x0)
    else:
        check_same_shape(x0, noise, "x0", "noise")
    x_t = interpolate(path, x0, t, noise)
    out = model(x_t, t, **(model_kwargs or {}))
    if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model(x_t, t) must return a tensor shaped like x0 {tuple(x0.shape)}, got {got}")
    return F.mse_loss(out.float(), velocity_target(path, x0, t, noise).float())


def velocity_from_eps(path, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""The velocity of an :math:`\epsilon`-prediction: :math:`\frac{\dot a_t}{a_t}x_t + (\dot b_t -
    \frac{\dot a_t}{a_t}b_t)\hat\epsilon` (module docstring). Needs :math:`a_t > 0` (not the linear path's t = 1)."""
    path = as_path(path)
    check_same_shape(eps, x_t, "eps", "x_t")
    t = _check_times(t, x_t)
    a, b, da, db = path.coefficients(_hi(t))
    if (a <= 0).any():
        raise ValueError("velocity_from_eps needs a_t > 0: at t = 1 of the linear path x_t holds no data")
    r = da / a
    return _bcast(r, x_t) * x_t + _bcast(db - r * b, x_t) * eps


def x0_from_velocity(path, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""The clean-image estimate of a velocity: solving :math:`x_t = a x_0 + b\epsilon`, :math:`v = \dot a x_0 + \dot
    b\epsilon` for :math:`x_0` gives :math:`\hat x_0 = (\dot b\,x_t - b\,v)/(a\dot b - \dot a b)` (linear path:
    :math:`x_t - t\,v`)."""
    path = as_path(path)
    check_same_shape(v, x_t, "v", "x_t")
    t = _check_times(t, x_t)
    a, b, da, db = path.coefficients(_hi(t))
    det = a * db - da * b
    return (_bcast(db, x_t) * x_t - _bcast(b, x_t) * v) / _bcast(det, x_t)


# ----------------------------------------------------------------------------- closed-form velocity fields

def gaussian_velocity(path, mean: torch.Tensor, cov: torch.Tensor) -> Callable:
    r"""The optimal velocity :math:`v^*(x, t)` for Gaussian data :math:`x_0 \sim \mathcal N(\mu, \Sigma)`. With
    :math:`x_t \sim \mathcal N(a\mu, a^2\Sigma + b^2 I)` and the Gaussian conditional means
    :math:`\mathbb E[x_0\mid x_t]`, :math:`\mathbb E[\epsilon\mid x_t]`:

    .. math:: v^*(x, t) = \dot a\,\mu + (a\dot a\,\Sigma + b\dot b\, I)(a^2\Sigma + b^2 I)^{-1}(x - a\mu),

    computed in the eigenbasis of :math:`\Sigma`. Returns ``v(x, t)`` for ``x`` of shape ``(B, d)``."""
    path = as_path(path)
    check_tensor(mean, "mean", ndim=1, floating=True)
    check_tensor(cov, "cov", ndim=2, floating=True)
    d = mean.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"cov must be ({d}, {d}) to match mean, got {tuple(cov.shape)}")
    lam, U = torch.linalg.eigh(cov.double())
    if (lam < -1e-9 * lam.abs().max().clamp(min=1)).any():
        raise ValueError("cov must be positive semi-definite")
    lam, mu = lam.clamp(min=0), mean.double()

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"x must have shape (B, {d}), got {tuple(x.shape)}")
        a, b, da, db = (c.double()[:, None] for c in path.coefficients(_check_times(t, x).double()))
        gain = (a * da * lam + b * db) / (a ** 2 * lam + b ** 2)          # (B, d) in the eigenbasis
        z = (x.double() - a * mu) @ U
        return (da * mu + (gain * z) @ U.T).to(x.dtype)

    return v


def points_velocity(path, points: torch.Tensor) -> Callable:
    r"""The optimal velocity when the data are the finite set ``points`` ``(K, ...)``, equally likely: the posterior
    over which point :math:`y_k` produced :math:`x_t` is the softmax of :math:`-\|x - a y_k\|^2 / 2b^2`, so
    :math:`\hat x_0 = \sum_k w_k y_k`, :math:`\hat\epsilon = (x - a\hat x_0)/b` and :math:`v^* = \dot a\hat x_0 +
    \dot b\hat\epsilon`. With one point every path is a straight line to it. Needs ``t > 0``."""
    path = as_path(path)
    _check_batch(points, "points")
    Y = points.double().flatten(1)

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != points.shape[1:]:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, points.shape[1:]))}), got {tuple(x.shape)}")
        t = _check_times(t, x)
        if (t <= 0).any():
            raise ValueError("points_velocity needs t > 0 (at t = 0 the field is undefined between the points)")
        a, b, da, db = (c.double()[:, None] for c in path.coefficients(t.double()))
        xf = x.double().flatten(1)
        # -||x - a y_k||^2 / 2b^2 without the term in ||x||^2, which is the same for every k
        logits = (2 * a * (xf @ Y.T) - a ** 2 * Y.pow(2).sum(1)) / (2 * b ** 2)
        x0 = torch.softmax(logits, dim=1) @ Y
        eps = (xf - a * x0) / b
        return (da * x0 + db * eps).reshape(x.shape).to(x.dtype)

    return v


# ----------------------------------------------------------------------------- sampling

@torch.no_grad()
def flow_sample(model: Callable, schedule, shape: tuple[int, ...], *, steps: int = 20, method: str = "euler",
                x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                model_kwargs: dict | None = None, return_trajectory: bool = False, progress: bool = True,
                device=None):
    r"""Integrate :math:`dx/dt = v_\theta(x, t)` from :math:`t = 1` (noise ``x_T``, else N(0, I)) to :math:`t = 0`
    on ``steps`` equal steps: ``"euler"`` (``steps`` network calls) or ``"heun"`` (Heun's second-order step, the
    last step Euler as in EDM's Algorithm 1: ``2 steps - 1`` calls; :func:`nfe`). Returns the samples, or
    ``(samples, trajectory)`` with ``return_trajectory=True``: a list of ``(t, x_t)`` on the CPU at every step. The
    common arguments are those of :data:`minidiff.diffusion.ddpm.SAMPLER_ARGS`; ``schedule`` is the :class:`Path` (or
    its kind's name) the model was trained on."""
    path = as_path(schedule)
    shape = _check_shape(shape)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_start(x_T, shape)
    device = _model_device(model, device, x_T)
    x = path.prior_sample(shape, generator, device) if x_T is None else x_T.to(device)
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    kw = model_kwargs or {}
    B = shape[0]

    def vel(y, tv):
        out = model(y, torch.full((B,), tv, device=device, dtype=torch.float32), **kw)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:   # no silent broadcast into x
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model(x_t, t) must return a velocity shaped like x_t {tuple(y.shape)}, got {got}")
        return out

    traj = [(1.0, x.cpu())] if return_trajectory else None
    for i in tqdm(range(steps), desc=f"flow {method} {steps} steps", disable=not progress, leave=False):
        t, s = ts[i], ts[i + 1]
        h = s - t                                      # negative: time runs from 1 to 0
        v = vel(x, t)
        x_next = x + h * v
        if method == "heun" and i < steps - 1:
            x_next = x + h * 0.5 * (v + vel(x_next, s))
        x = x_next
        if traj is not None:
            traj.append((s, x.cpu()))
    return (x, traj) if return_trajectory else x


def nfe(steps: int, method: str) -> int:
    """Network calls of :func:`flow_sample`: ``steps`` for Euler, ``2 steps - 1`` for Heun."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return steps if method == "euler" else 2 * steps - 1


def straightness(trajectory) -> torch.Tensor:
    r"""How far the sampled paths are from straight lines, per sample ``(B,)``: Liu et al. (2023, eq. 4)'s
    :math:`S = \int_0^1 \|(x_0 - x_1) - \dot x_t\|^2 dt`, with :math:`\dot x_t` the velocity of each recorded segment
    (taken along the direction of sampling, from t = 1 to 0), divided by the dimension. Zero exactly for straight
    paths travelled at constant speed. ``trajectory`` is a list of ``(t, x_t)``, e.g. from
    ``flow_sample(..., return_trajectory=True)`` or a DDIM trajectory with times rescaled to [0, 1]."""
    ts, xs = _trajectory(trajectory)
    span = ts[-1] - ts[0]
    chord = (xs[-1] - xs[0]) / span                                          # (B, d) average velocity
    total = torch.zeros(xs.shape[1], dtype=torch.float64)
    for k in range(len(ts) - 1):
        dt = ts[k + 1] - ts[k]
        seg = (xs[k + 1] - xs[k]) / dt
        total += (seg - chord).pow(2).mean(1) * abs(dt)
    return total / abs(span)


def chord_ratio(trajectory) -> torch.Tensor:
    r"""Straight-line distance between the ends of each path over its length, per sample ``(B,)``: 1 for a straight
    path, smaller the more it bends."""
    _, xs = _trajectory(trajectory)
    arc = (xs[1:] - xs[:-1]).norm(dim=2).sum(0)
    return (xs[-1] - xs[0]).norm(dim=1) / arc.clamp(min=1e-12)


def _trajectory(trajectory):
    if not isinstance(trajectory, (list, tuple)) or len(trajectory) < 2:
        raise ValueError("trajectory must be a list of at least two (t, x_t) pairs")
    ts = torch.tensor([float(t) for t, _ in trajectory], dtype=torch.float64)
    if not ((ts[1:] < ts[:-1]).all() or (ts[1:] > ts[:-1]).all()):
        raise ValueError("the times of a trajectory must be strictly monotonic")
    xs = torch.stack([x.detach().cpu().double().flatten(1) for _, x in trajectory])
    return ts, xs


@torch.no_grad()
def reflow_couplings(model: Callable, path, n: int, shape: tuple[int, ...], *, steps: int = 20,
                     method: str = "heun", batch: int = 500, generator: torch.Generator | None = None,
                     model_kwargs: dict | None = None, progress: bool = True, device=None):
    r"""The couplings of one reflow round (Liu et al. 2023, Algorithm 1): ``n`` noises :math:`\epsilon` and the images
    :math:`x_0` that ``model``'s ODE draws from them (:func:`flow_sample`, ``steps`` and ``method``), ``batch`` at a
    time; ``shape`` is one sample's shape. Returns ``(x0, noise)`` on the CPU; train on them with
    ``flow_loss(..., noise=noise)`` (uniform time sampling, as in the paper)."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    path = as_path(path)
    shape = tuple(shape)
    xs, ns = [], []
    for i in tqdm(range(0, n, batch), desc="reflow couplings", disable=not progress, leave=False):
        m = min(batch, n - i)
        noise = path.prior_sample((m, *shape), generator)
        xs.append(flow_sample(model, path, (m, *shape), steps=steps, method=method, x_T=noise,
                              model_kwargs=model_kwargs, progress=False, device=device).cpu())
        ns.append(noise.cpu())
    return torch.cat(xs), torch.cat(ns)


# ----------------------------------------------------------------------------- EDM's design view

def edm_preconditioning(sigma: torch.Tensor, sigma_data: float = 0.5):
    r"""EDM's preconditioning (Karras et al. 2022, Table 1): :math:`c_\text{skip} = \sigma_d^2/(\sigma^2+\sigma_d^2)`,
    :math:`c_\text{out} = \sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_\text{in} = 1/\sqrt{\sigma^2+\sigma_d^2}`,
    :math:`c_\text{noise} = \tfrac14\ln\sigma`, chosen so that the network's input and its training target both
    have unit variance at every noise level. Returns ``(c_skip, c_out, c_in, c_noise)``."""
    check_tensor(sigma, "sigma", floating=True)
    if (sigma <= 0).any():
        raise ValueError("sigma (noise levels) must be > 0")
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}")
    s2 = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / s2, sigma * sigma_data / s2.sqrt(), 1 / s2.sqrt(), sigma.log() / 4


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    r"""EDM's :math:`\lambda(\sigma) = (\sigma^2 + \sigma_d^2)/(\sigma\sigma_d)^2 = 1/c_\text{out}^2`: the weight
    of the denoiser's squared error that makes the network's own error unit-weighted."""
    return 1 / edm_preconditioning(sigma, sigma_data)[1] ** 2


def edm_sigmas(n: int, p_mean: float = -1.2, p_std: float = 1.2, generator: torch.Generator | None = None,
               device="cpu") -> torch.Tensor:
    r"""EDM's training noise levels: :math:`\ln\sigma \sim \mathcal N(P_\text{mean}, P_\text{std}^2)` (Karras et al.
    2022, Table 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    gen_device = generator.device if generator is not None else device
    return (p_mean + p_std * torch.randn(n, generator=generator, device=gen_device)).exp().to(device)


def sigma_of_t(path, t: torch.Tensor) -> torch.Tensor:
    r"""The EDM noise level of time ``t`` on ``path``: :math:`x_t / a_t = x_0 + (b_t/a_t)\epsilon`, so
    :math:`\sigma = b_t / a_t` (linear path: :math:`t/(1-t)`; chapter 04's schedules: :math:`1/\sqrt{\mathrm{SNR}}`)."""
    a, b, _, _ = as_path(path).coefficients(t)
    return b / a
