r"""Pure-torch references of the fused kernels: the definitions the Triton kernels are tested against, and what
runs everywhere Triton does not (CPU, MPS, no Triton installed).

- :func:`sampler_update`: one reverse-diffusion step in the common form used by both samplers,

  .. math::
     \hat x_0 = k_1 x_t + k_2 m,\quad \hat\epsilon = k_3 x_t + k_4 m,\quad
     \hat x_0 \leftarrow \mathrm{clip}(\hat x_0),\ \hat\epsilon \leftarrow (x_t - a\,\hat x_0)/s \ \text{(if clipping)},

  .. math:: x_\text{prev} = A\,\hat x_0 + B\,\hat\epsilon + C\,x_t + D\,z,

  with per-example coefficients; :func:`ddpm_coefficients` and :func:`ddim_coefficients` give them for the DDPM
  ancestral step (Ho et al. 2020, eq. 7 and 11: :math:`A, C` the posterior-mean coefficients, :math:`D^2 = \tilde\beta_t`)
  and the DDIM step (Song et al. 2021, eq. 12: :math:`A = \sqrt{\bar\alpha_{t'}}`,
  :math:`B = \sqrt{1-\bar\alpha_{t'}-\sigma^2}`, :math:`D = \sigma`).
- :func:`layernorm_modulate`: :math:`\mathrm{LN}(x)\,(1 + \text{scale}) + \text{shift}` over the last dimension, no
  affine parameters, per-example shift/scale broadcast over tokens (DiT's adaLN, Peebles & Xie 2023, sec. 3.2).
- :func:`groupnorm_silu`: :math:`\mathrm{SiLU}(\mathrm{GroupNorm}(x))` with per-channel affine parameters (the U-Net's
  residual blocks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: column order of the per-example coefficient table of sampler_update
COEFFS = ("k1", "k2", "k3", "k4", "a", "s", "A", "B", "C", "D")


def _prediction_coefficients(a: torch.Tensor, s: torch.Tensor, prediction: str):
    """(k1, k2, k3, k4) with x0 = k1 x_t + k2 m and eps = k3 x_t + k4 m for a network output m (see
    :func:`minidiff.diffusion.ddpm.predict_x0_eps`)."""
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    if prediction == "eps":
        return 1 / a, -s / a, zero, one
    if prediction == "x0":
        return zero, one, 1 / s, -a / s
    if prediction == "v":
        return a, -s, s, a
    raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")


def ddpm_coefficients(schedule, t: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
    """(B, 10) coefficient table (columns :data:`COEFFS`) of the ancestral step at int64 steps ``t``."""
    t = t.long().cpu()
    ac = schedule.table64("alphas_cumprod")
    a, s = ac[t].sqrt(), (1 - ac[t]).sqrt()
    k = _prediction_coefficients(a, s, prediction)
    g = lambda name: schedule.table64(name)[t]
    zero = torch.zeros_like(a)
    return torch.stack([*k, a, s, g("posterior_coef_x0"), zero, g("posterior_coef_xt"), g("posterior_variance").sqrt()], 1)


def ddim_coefficients(schedule, t: torch.Tensor, t_prev: torch.Tensor, eta: float = 0.0,
                      prediction: str = "eps") -> torch.Tensor:
    """(B, 10) coefficient table of the DDIM step ``t -> t_prev`` (``t_prev = -1``: abar = 1), eq. 12 and 16."""
    t, t_prev = t.long().cpu(), t_prev.long().cpu()
    ac = schedule.table64("alphas_cumprod")
    a_t = ac[t]
    a_s = torch.where(t_prev >= 0, ac[t_prev.clamp(min=0)], torch.ones_like(a_t))
    a, s = a_t.sqrt(), (1 - a_t).sqrt()
    k = _prediction_coefficients(a, s, prediction)
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).clamp(min=0).sqrt()
    zero = torch.zeros_like(a)
    return torch.stack([*k, a, s, a_s.sqrt(), (1 - a_s - sigma ** 2).clamp(min=0).sqrt(), zero, sigma], 1)


def sampler_update(x_t: torch.Tensor, model_out: torch.Tensor, coeffs: torch.Tensor, noise: torch.Tensor | None = None,
                   clip_x0: bool = False) -> torch.Tensor:
    """Reference of the fused sampler step (see the module docstring); ``coeffs`` is (B, 10)."""
    c = coeffs.to(torch.float32).to(x_t.device).reshape(   # cast on the CPU first: MPS has no float64
        coeffs.shape[0], 10, *([1] * (x_t.ndim - 1)))
    k1, k2, k3, k4, a, s, A, B, C, D = c.unbind(1)
    xf, mf = x_t.float(), model_out.float()
    x0 = k1 * xf + k2 * mf
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        eps = (xf - a * x0) / s
    else:
        eps = k3 * xf + k4 * mf
    out = A * x0 + B * eps + C * xf
    if noise is not None:
        out = out + D * noise.float()
    return out.to(x_t.dtype)


def layernorm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``LN(x) * (1 + scale[:, None]) + shift[:, None]`` for ``x`` (B, N, D) and ``shift``/``scale`` (B, D)."""
    y = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return y * (1 + scale[:, None]) + shift[:, None]


def groupnorm_silu(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   eps: float = 1e-5) -> torch.Tensor:
    """``silu(group_norm(x))`` for ``x`` (B, C, H, W)."""
    return F.silu(F.group_norm(x, num_groups, weight, bias, eps))
