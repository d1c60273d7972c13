r"""Sinusoidal timestep embeddings (Vaswani et al. 2017, sec. 3.5; used for diffusion by Ho et al. 2020).

.. math::

    \mathrm{emb}(t)_{i} = \cos(t\,\omega_i), \quad \mathrm{emb}(t)_{i + d/2} = \sin(t\,\omega_i), \quad
    \omega_i = \text{max\_period}^{-i/(d/2)}, \quad i = 0, \dots, d/2 - 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Embed ``t`` (shape ``(B,)``, integer or float) into ``(B, dim)`` sinusoids (see module docstring)."""
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be an even int >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding followed by a two-layer MLP (as in DiT's ``TimestepEmbedder``)."""

    def __init__(self, dim: int, freq_dim: int = 64, scale: float = 1.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.scale = scale  # multiply t first, e.g. 1000 for continuous t in [0, 1]
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t * self.scale if self.scale != 1.0 else t, self.freq_dim))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v)`` (softmax(q k^T / sqrt(d)) v) for the attention layers of the
    networks. Under bf16 autocast on a CPU it runs in fp32: torch's CPU flash-attention kernel is several times slower
    in bf16 than in fp32 in the backward pass (profiled on a DiT step, Zen 4, torch 2.14), while the matrix products
    around it gain from bf16. The result is cast back to the inputs' dtype."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)
