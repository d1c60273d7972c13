r"""Noise schedules for the discrete diffusion process of Ho et al. (2020).

Notation (chapter 04, ``book/notation.md``): for :math:`t = 0, \dots, T-1` (index 0 is the least
noisy step),

.. math::

    \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s=0}^{t} \alpha_s, \qquad
    \mathrm{SNR}(t) = \frac{\bar\alpha_t}{1 - \bar\alpha_t}.

The forward marginal is :math:`q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)`
(Ho et al. 2020, eq. 4).
"""

from __future__ import annotations

import copy
import math

import torch

from .._checks import check_positive_int


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    r"""The linear schedule of Ho et al. (2020, sec. 4): :math:`\beta_t` evenly spaced from
    ``beta_start`` to ``beta_end`` over ``T`` steps. Returns float64, shape ``(T,)``."""
    check_positive_int(T, "T")
    if not (0.0 < beta_start <= beta_end < 1.0):
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    r"""The cosine schedule of Nichol & Dhariwal (2021, eq. 17).

    .. math::

        \bar\alpha(t) = \frac{f(t)}{f(0)}, \quad f(t) = \cos^2\!\Big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\Big),
        \quad \beta_t = \min\Big(1 - \frac{\bar\alpha(t+1)}{\bar\alpha(t)},\ 0.999\Big)

    for index ``t = 0..T-1`` (the paper's step ``t+1``). Returns float64, shape ``(T,)``.
    """
    check_positive_int(T, "T")
    if not s >= 0:
        raise ValueError(f"offset s must be >= 0, got {s}")
    if not (0.0 < max_beta < 1.0):
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(min=0.0, max=max_beta)


class NoiseSchedule:
    r"""Everything derived from a sequence of :math:`\beta_t`, as 1-D tensors of length ``T``.

    Attributes (all float32 by default, computed in float64):

    - ``betas``, ``alphas`` :math:`=1-\beta_t`, ``alphas_cumprod`` :math:`=\bar\alpha_t`,
      ``alphas_cumprod_prev`` :math:`=\bar\alpha_{t-1}` (with :math:`\bar\alpha_{-1} = 1`),
    - ``snr`` :math:`=\bar\alpha_t / (1-\bar\alpha_t)`,
    - ``posterior_variance`` :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t`
      (Ho et al. 2020, eq. 7), and the posterior-mean coefficients ``posterior_coef_x0``
      :math:`= \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}` and ``posterior_coef_xt``
      :math:`= \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}`.
    """

    def __init__(self, betas: torch.Tensor, dtype: torch.dtype = torch.float32):
        if not isinstance(betas, torch.Tensor):
            betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        b = betas.detach().to("cpu", torch.float64)
        if not torch.isfinite(b).all():
            raise ValueError("betas contain nan or inf")
        if (b <= 0).any() or (b >= 1).any():
            raise ValueError(f"betas: every beta must lie in (0, 1), got min {b.min().item():.3g} and max {b.max().item():.3g}")
        self.T = b.numel()
        alphas = 1 - b
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self._f64 = {
            "betas": b,
            "alphas": alphas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - abar).sqrt(),
            "snr": abar / (1 - abar),
            "posterior_variance": (1 - abar_prev) / (1 - abar) * b,
            "posterior_coef_x0": abar_prev.sqrt() * b / (1 - abar),
            "posterior_coef_xt": alphas.sqrt() * (1 - abar_prev) / (1 - abar),
        }
        self.dtype = dtype
        self.device = torch.device("cpu")
        self._materialise()

    def _materialise(self):
        # cast on the CPU first, then move: the float64 tables never reach the device (MPS has no float64)
        for k, v in self._f64.items():
            setattr(self, k, v.to(self.dtype).to(self.device))

    def to(self, device=None, dtype: torch.dtype | None = None) -> "NoiseSchedule":
        """A copy of the schedule with its tensors on ``device`` and/or cast to ``dtype``, like :meth:`torch.Tensor.to`:
        the schedule itself is left as it is (``self`` is returned when it already has that device and dtype). The
        tensors are cast from the float64 tables on the CPU and then moved, so no float64 tensor reaches the device
        unless ``dtype=torch.float64`` is asked for. ``schedule.to(torch.float64)`` casts only."""
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError("give the dtype once: to(dtype) or to(device, dtype)")
            device, dtype = None, device
        device = self.device if device is None else torch.device(device)
        dtype = self.dtype if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        if device == self.device and dtype == self.dtype:
            return self
        new = copy.copy(self)          # shares the read-only float64 tables, gets its own device, dtype and tensors
        new.device, new.dtype = device, dtype
        new._materialise()
        return new

    def table64(self, name: str) -> torch.Tensor:
        """The float64 CPU table ``name`` (e.g. ``"alphas_cumprod"``) that the attributes are cast from: samplers
        compute their step coefficients from it on the CPU, then cast them to the images' dtype and move them."""
        if name not in self._f64:
            raise ValueError(f"unknown schedule table {name!r}; expected one of {sorted(self._f64)}")
        return self._f64[name]

    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        a = self._f64["alphas_cumprod"]
        return f"NoiseSchedule(T={self.T}, abar[0]={a[0]:.5f}, abar[T-1]={a[-1]:.2e}, device={self.device})"

    def gather(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """``getattr(self, name)[t]`` reshaped to ``(B, 1, ..., 1)`` to broadcast over ``ndim`` dims."""
        v = getattr(self, name)
        if v.device != t.device:
            v = v.to(t.device)
        return v[t].reshape(-1, *([1] * (ndim - 1)))


def make_schedule(kind: str, T: int) -> NoiseSchedule:
    """``make_schedule("linear" | "cosine", T)``. The linear schedule is rescaled by ``1000 / T`` so that
    short chains end as noisy as Ho et al.'s 1000-step chain (the usual convention)."""
    if kind == "linear":
        scale = 1000 / T
        return NoiseSchedule(linear_betas(T, 1e-4 * scale, min(0.02 * scale, 0.999)))
    if kind == "cosine":
        return NoiseSchedule(cosine_betas(T))
    raise ValueError(f"unknown schedule {kind!r}; expected 'linear' or 'cosine'")
