r"""A classifier of noisy images, :math:`p_\phi(y \mid x_t, t)`, for classifier guidance
(:func:`minidiff.diffusion.guidance.classifier_guided`; Dhariwal & Nichol 2021 use the U-Net's encoder half).

It is the down path of :class:`minidiff.nets.unet.UNet` (the same time-conditioned ``ResBlock``), pooled over space into
class logits: it must know how noisy its input is, since a digit at :math:`t` near :math:`T` is almost pure noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import TimestepEmbedder
from .unet import ResBlock, _groups, norm_silu


class NoisyClassifier(nn.Module):
    """``NoisyClassifier(in_channels, num_classes, base_channels, channel_mults, patch)(x_t, t)`` -> logits (B, K).

    ``patch`` folds ``patch x patch`` pixels into channels first (as the U-Net's ``patch``); each entry of
    ``channel_mults`` is one resolution with one time-conditioned residual block, halved between them."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, base_channels: int = 32, channel_mults=(1, 2),
                 patch: int = 2):
        super().__init__()
        if num_classes < 2 or base_channels < 1 or not channel_mults or patch < 1:
            raise ValueError(f"need num_classes >= 2, base_channels >= 1, non-empty channel_mults and patch >= 1; "
                             f"got {num_classes}, {base_channels}, {channel_mults}, {patch}")
        self.patch, self.in_channels, self.num_classes = patch, in_channels, num_classes
        emb = 4 * base_channels
        self.time_embed = TimestepEmbedder(emb, freq_dim=max(32, 2 * base_channels))
        self.conv_in = nn.Conv2d(in_channels * patch * patch, base_channels, 3, padding=1)
        blocks, ch = [], base_channels
        for i, m in enumerate(channel_mults):
            blocks.append(ResBlock(ch, base_channels * m, emb))
            ch = base_channels * m
            if i < len(channel_mults) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise ValueError(f"x must be (B, {self.in_channels}, H, W) with H and W divisible by patch {self.patch}, "
                             f"got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        e = self.time_embed(t)
        h = self.conv_in(F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x)
        for b in self.blocks:
            h = b(h, e) if isinstance(b, ResBlock) else b(h)
        return self.head(norm_silu(self.norm, h).mean(dim=(2, 3)))
