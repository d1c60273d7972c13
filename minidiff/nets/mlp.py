"""A time-conditioned MLP for 2-D toy diffusion: the denoiser of chapter 04's first experiment."""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import TimestepEmbedder


class _ResBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h, temb):
        y = self.lin1(self.act(self.norm(h))) + self.emb(temb)
        return h + self.lin2(self.act(y))


class TimeMLP(nn.Module):
    """``TimeMLP(dim=2)(x, t)`` maps points ``x`` (B, dim) and time steps ``t`` (B,) to a vector of the
    same shape as ``x`` (the predicted noise, x0 or v). Residual blocks, each told the time step. ``time_scale``
    multiplies ``t`` before its embedding (1000 for the continuous times in [0, 1] of chapter 13)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_scale: float = 1.0):
        super().__init__()
        if dim < 1 or hidden < 2 or depth < 1:
            raise ValueError(f"need dim >= 1, hidden >= 2, depth >= 1; got dim={dim}, hidden={hidden}, depth={depth}")
        self.dim = dim
        self.inp = nn.Linear(dim, hidden)
        self.temb = TimestepEmbedder(hidden, freq_dim=min(64, hidden - hidden % 2), scale=time_scale)
        self.blocks = nn.ModuleList(_ResBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) to match x, got {tuple(t.shape)}")
        h = self.inp(x)
        temb = self.temb(t)
        for blk in self.blocks:
            h = blk(h, temb)
        return self.out(h)


class ImageMLP(nn.Module):
    """``ImageMLP((1, 28, 28))(x, t)``: chapter 08's no-architecture baseline. The images (B, C, H, W) are flattened
    to vectors and denoised by a :class:`TimeMLP`, which knows nothing of pixels being neighbours: no convolutions,
    no resolutions, no skips. It is the fully connected denoiser of the tutorials this course grew from
    (784 -> 128 -> 784), widened to
    ``hidden`` units, made residual and told the time step, so that it can learn at all."""

    def __init__(self, shape=(1, 28, 28), hidden: int = 512, depth: int = 3):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
        self.shape = shape
        self.mlp = TimeMLP(dim=shape[0] * shape[1] * shape[2], hidden=hidden, depth=depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        return self.mlp(x.flatten(1), t).view_as(x)
