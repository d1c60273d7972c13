"""Fused kernels: Triton on CUDA, the pure-torch reference (:mod:`minidiff.kernels.reference`) everywhere else.

Three operations, each a single pass over memory on the GPU:

- :func:`sampler_update`: the DDPM ancestral step and the DDIM step (used by
  :func:`minidiff.diffusion.ddpm.p_sample_step` and :func:`minidiff.diffusion.ddim.ddim_step`);
- :func:`layernorm_modulate`: LayerNorm + adaLN modulate, forward and backward (used by the DiT blocks);
- :func:`groupnorm_silu`: GroupNorm + SiLU, forward and backward (used by the U-Net residual blocks).

Dispatch is chosen by :func:`set_backend` or ``$MINIDIFF_KERNELS``: ``"auto"`` (default: Triton for CUDA tensors
when Triton is installed, else torch), ``"triton"`` (always Triton; on CPU only through Triton's interpreter,
``TRITON_INTERPRET=1`` set before ``triton`` is imported, which is how the tests run the kernels) or ``"torch"``
(always the reference).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from . import reference
from .reference import COEFFS, ddim_coefficients, ddpm_coefficients  # noqa: F401

BACKENDS = ("auto", "triton", "torch")
_backend = os.environ.get("MINIDIFF_KERNELS", "auto").strip().lower() or "auto"
if _backend not in BACKENDS:
    raise ValueError(f"MINIDIFF_KERNELS={_backend!r} is not a kernel backend; expected one of {', '.join(BACKENDS)}")


def set_backend(name: str) -> None:
    """Force the kernels: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _backend = name


def get_backend() -> str:
    return _backend


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when Triton can be imported."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def uses_triton(x: torch.Tensor) -> bool:
    """Whether an operation on ``x`` runs the Triton kernel under the current backend."""
    if _backend == "torch":
        return False
    if _backend == "triton":
        if not triton_available():
            raise RuntimeError("kernel backend 'triton' was forced but Triton is not installed (pip install triton)")
        if not x.is_cuda and not interpreter_on():
            raise RuntimeError("kernel backend 'triton' on a CPU tensor needs Triton's interpreter: set "
                               "TRITON_INTERPRET=1 before triton is imported (or use set_backend('auto'))")
        return True
    return x.is_cuda and triton_available()


def _ops():
    from . import triton_ops

    return triton_ops


def sampler_update(x_t: torch.Tensor, model_out: torch.Tensor, coeffs: torch.Tensor,
                   noise: torch.Tensor | None = None, clip_x0: bool = False) -> torch.Tensor:
    """One fused reverse-diffusion step; ``coeffs`` from :func:`ddpm_coefficients` or :func:`ddim_coefficients`
    (the formula is in :mod:`minidiff.kernels.reference`)."""
    if model_out.shape != x_t.shape or (noise is not None and noise.shape != x_t.shape):
        raise ValueError(f"model_out and noise must be shaped like x_t {tuple(x_t.shape)}, got "
                         f"{tuple(model_out.shape)} and {None if noise is None else tuple(noise.shape)}")
    if coeffs.shape != (x_t.shape[0], len(COEFFS)):
        raise ValueError(f"coeffs must be ({x_t.shape[0]}, {len(COEFFS)}), got {tuple(coeffs.shape)}")
    if uses_triton(x_t):
        return _ops().sampler_update(x_t, model_out, coeffs, noise, clip_x0)
    return reference.sampler_update(x_t, model_out, coeffs, noise, clip_x0)


def layernorm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` for ``x`` (B, N, D), ``shift``/``scale`` (B, D)."""
    if x.ndim != 3 or shift.shape != (x.shape[0], x.shape[2]) or scale.shape != shift.shape:
        raise ValueError(f"x must be (B, N, D) and shift, scale (B, D); got {tuple(x.shape)}, {tuple(shift.shape)}, "
                         f"{tuple(scale.shape)}")
    if uses_triton(x):
        return _ops().layernorm_modulate(x, shift, scale, eps)
    return reference.layernorm_modulate(x, shift, scale, eps)


def groupnorm_silu(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float = 1e-5) -> torch.Tensor:
    """``SiLU(GroupNorm(x))`` for ``x`` (B, C, H, W) with per-channel ``weight`` and ``bias``."""
    if x.ndim != 4 or x.shape[1] % num_groups:
        raise ValueError(f"x must be (B, C, H, W) with C divisible by num_groups={num_groups}, got {tuple(x.shape)}")
    if uses_triton(x) and weight is not None and bias is not None:
        return _ops().groupnorm_silu(x, num_groups, weight, bias, eps)
    return reference.groupnorm_silu(x, num_groups, weight, bias, eps)
