r"""Sinusoidal timestep embeddings (Vaswani et al. 2017, sec. 3.5; used for diffusion by Ho et al. 2020).

.. math::

    \mathrm{emb}(t)_{i} = \cos(t\,\omega_i), \quad \mathrm{emb}(t)_{i + d/2} = \sin(t\,\omega_i), \quad
    \omega_i = \text{max\_period}^{-i/(d/2)}, \quad i = 0, \dots, d/2 - 1.
"""

from __future__ import annotations

import math

import torch
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
