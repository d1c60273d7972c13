"""A compact diffusion U-Net (Ho et al. 2020, appendix B; Ronneberger et al. 2015), small enough for
28x28 digits on a CPU. Chapter 08 takes it apart; chapter 04 only uses it.

Shape of the network, for ``channel_mults=(1, 2, 2)`` and 28x28 inputs::

    conv_in -> [ResBlock]x n @28 -> down -> [ResBlock]x n @14 -> down -> [ResBlock(+attn)]x n @7
            -> middle: ResBlock, attn, ResBlock @7
            -> up path mirroring the down path, each block fed the matching skip (concatenated)
            -> GroupNorm, SiLU, conv_out (zero-initialised: the untrained net predicts 0)

Every ResBlock receives the timestep embedding as a per-channel scale and shift after its second
GroupNorm (FiLM, as in Dhariwal & Nichol 2021's "AdaGN"): ``h = norm(h) * (1 + scale) + shift``.

Chapter 08 ablates the parts: ``skip_connections=False`` drops the concatenated skips (the up path then sees
only what passed through the bottleneck), ``attention=False`` drops self-attention, and ``time_conditioning=
"add"`` replaces the scale-and-shift by a plain added bias (``h = norm(h) + shift``, as in Ho et al. 2020).
Named sizes are in :data:`UNET_CONFIGS`; :func:`count_flops` measures any of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from .._checks import condition_vector
from .embeddings import TimestepEmbedder, attend

#: Named sizes (keyword arguments of :class:`UNet`) used across the course; chapter 08 prints their parameter counts.
UNET_CONFIGS = {
    "UNet-XS": dict(base_channels=16, channel_mults=(1, 2), attention=False, patch=2),   # ci profile
    "UNet-S": dict(base_channels=32, channel_mults=(1, 2), attention=False, patch=2),    # cpu profile
    "UNet-M": dict(base_channels=32, channel_mults=(1, 2, 2), attention=True, patch=1),
    "UNet-L": dict(base_channels=64, channel_mults=(1, 2, 2), attention=True, patch=1),  # gpu profile
    "UNet-DDPM-CIFAR": dict(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention=True,
                            dropout=0.1),   # Ho et al. 2020's CIFAR-10 shape (attention at 16x16 there)
}


def unet_config(name: str, **overrides) -> dict:
    """Keyword arguments of a named U-Net from :data:`UNET_CONFIGS`, with fields overridden:
    ``UNet(**unet_config("UNet-S", num_classes=10))``."""
    if name not in UNET_CONFIGS:
        raise ValueError(f"unknown U-Net config {name!r}; expected one of {', '.join(UNET_CONFIGS)}")
    return {**UNET_CONFIGS[name], **overrides}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, *inputs, **kwargs) -> int:
    """Floating-point operations of one forward pass ``model(*inputs, **kwargs)``, counted by
    ``torch.utils.flop_counter`` (2 per multiply-add of the matrix products and convolutions, which dominate;
    normalisations and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs, **kwargs)
    return int(counter.get_total_flops())


def _groups(ch: int) -> int:
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``silu(norm(x))``: one fused Triton kernel on CUDA (forward and backward, :func:`minidiff.kernels.groupnorm_silu`),
    plain torch elsewhere."""
    if norm.affine and kernels.uses_triton(x):
        return kernels.groupnorm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.silu(norm(x))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then GroupNorm modulated by the time embedding, SiLU, dropout, conv; plus a skip.

    ``time_conditioning="scale_shift"``: ``norm(h) * (1 + scale) + shift``; ``"add"``: ``norm(h) + shift``."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0, time_conditioning: str = "scale_shift"):
        super().__init__()
        if time_conditioning not in ("scale_shift", "add"):
            raise ValueError(f"time_conditioning must be 'scale_shift' or 'add', got {time_conditioning!r}")
        self.scale_shift = time_conditioning == "scale_shift"
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, (2 if self.scale_shift else 1) * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h) + e
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, via ``F.scaled_dot_product_attention``."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        if ch % heads:
            heads = 1
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, d)
        out = attend(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class CrossAttentionBlock(nn.Module):
    r"""Cross-attention (Rombach et al. 2022, eq. 3): the H*W positions ask (queries), a sequence of condition tokens
    ``context`` (B, L, context_dim), e.g. the words of a caption, answers (keys and values):
    :math:`\mathrm{softmax}(Q K^\top / \sqrt d)\,V` with :math:`Q = W_Q\,\mathrm{GN}(h)`,
    :math:`K = W_K c`, :math:`V = W_V c`. Each position reads the words it needs, wherever they stand in the
    caption, instead of one pooled vector for the whole image. The output projection starts at zero, so the block
    starts as the identity; an all-zero context (the empty caption) gives every position the same value vector,
    whatever its length. Nothing is masked: zero (padding) tokens still take attention weight through the key and
    value biases, as in Stable Diffusion's padded captions."""

    def __init__(self, ch: int, context_dim: int, heads: int = 4):
        super().__init__()
        if ch % heads:
            heads = 1
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Linear(context_dim, 2 * ch)
        self.proj = zero_module(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.q(self.norm(x)).reshape(B, self.heads, C // self.heads, H * W).transpose(-1, -2)   # (B, h, HW, d)
        k, v = self.kv(context).reshape(B, context.shape[1], 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v)                                                                        # (B, h, HW, d)
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """``UNet(in_channels, base_channels, channel_mults, ...)(x, t)`` -> tensor shaped like ``x``.

    - ``channel_mults``: one entry per resolution; the image side must be divisible by
      ``2 ** (len(channel_mults) - 1)``.
    - ``attention``: self-attention at the lowest resolution and in the middle.
    - ``num_classes``: optional class conditioning (an embedding added to the time embedding; index
      ``num_classes`` is the "no label" token used by classifier-free guidance later in the course). The U-Net never
      drops labels itself: training with null labels is :func:`minidiff.recipes.train_ddpm`'s ``p_uncond``.
    - ``cond_dim``: optional conditioning by a vector ``y`` of shape (B, cond_dim) (a text or feature embedding),
      linearly projected and added to the time embedding; the zero vector is the "no condition" input.
    - ``context_dim``: optional conditioning by a sequence of tokens ``y`` of shape (B, L, context_dim) (the words of
      a caption), read by a :class:`CrossAttentionBlock` after every block at the lowest resolution and in the
      middle; the all-zero sequence is the "no condition" input.
    - ``patch``: space-to-depth factor applied first (``pixel_unshuffle``), a cheap way to shrink the grid on CPU.
    - ``skip_connections``, ``time_conditioning``: ablation switches (module docstring).
    - ``time_scale``: ``t`` is multiplied by it before the sinusoidal embedding: 1 for the integer steps of
      chapter 04, 1000 for the continuous times in [0, 1] of flow matching (chapter 13).
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, channel_mults=(1, 2, 2), num_res_blocks: int = 1,
                 attention: bool = True, dropout: float = 0.0, num_classes: int | None = None, out_channels: int | None = None,
                 patch: int = 1, cond_dim: int | None = None, skip_connections: bool = True,
                 time_conditioning: str = "scale_shift", context_dim: int | None = None, time_scale: float = 1.0):
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.patch = patch
        if base_channels < 1 or not channel_mults or num_res_blocks < 1:
            raise ValueError(f"need base_channels >= 1, non-empty channel_mults, num_res_blocks >= 1; got "
                             f"{base_channels}, {channel_mults}, {num_res_blocks}")
        self.in_channels = in_channels
        self.channel_mults = tuple(channel_mults)
        self.num_classes = num_classes
        self.skip_connections = skip_connections
        emb_dim = 4 * base_channels
        self.time_embed = TimestepEmbedder(emb_dim, freq_dim=base_channels * 2 if base_channels >= 16 else 32,
                                           scale=time_scale)
        if sum(bool(c) for c in (num_classes, cond_dim, context_dim)) > 1:
            raise ValueError("give one of num_classes (labels), cond_dim (vectors) or context_dim (token sequences)")
        self.context_dim = context_dim
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.cond_dim = cond_dim
        self.cond_proj = nn.Linear(cond_dim, emb_dim) if cond_dim else None
        self.conv_in = nn.Conv2d(in_channels * patch * patch, base_channels, 3, padding=1)

        chans = [base_channels * m for m in self.channel_mults]
        res = lambda cin, cout: ResBlock(cin, cout, emb_dim, dropout, time_conditioning)  # noqa: E731
        self.down = nn.ModuleList()
        skip_ch = [base_channels]
        ch = base_channels
        n_levels = len(chans)
        for level, cout in enumerate(chans):
            for _ in range(num_res_blocks):
                blocks = nn.ModuleList([res(ch, cout)])
                if attention and level == n_levels - 1:
                    blocks.append(AttentionBlock(cout))
                if context_dim and level == n_levels - 1:
                    blocks.append(CrossAttentionBlock(cout, context_dim))
                self.down.append(blocks)
                ch = cout
                skip_ch.append(ch)
            if level != n_levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([res(ch, ch)] + ([AttentionBlock(ch)] if attention else [])
                                 + ([CrossAttentionBlock(ch, context_dim)] if context_dim else []) + [res(ch, ch)])
        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            cout = chans[level]
            for _ in range(num_res_blocks + 1):
                skip = skip_ch.pop() if skip_connections else 0
                blocks = nn.ModuleList([res(ch + skip, cout)])
                if attention and level == n_levels - 1:
                    blocks.append(AttentionBlock(cout))
                if context_dim and level == n_levels - 1:
                    blocks.append(CrossAttentionBlock(cout, context_dim))
                self.up.append(blocks)
                ch = cout
            if level != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]))
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, (out_channels or in_channels) * patch * patch, 3, padding=1)))
        self._factor = patch * 2 ** (n_levels - 1)

    @property
    def hidden_blocks(self) -> int:
        """How many ResBlocks the down path and the middle hold: the valid ``return_hidden`` indices are
        1..hidden_blocks."""
        return sum(isinstance(m, ResBlock) for blocks in self.down for m in blocks) + \
            sum(isinstance(m, ResBlock) for m in self.mid)

    def hidden_dim(self, k: int) -> int:
        """Channels of the hidden state after ResBlock ``k`` of the down path and middle (``return_hidden=k``)."""
        self._check_hidden(k)
        res = [m for blocks in self.down for m in blocks if isinstance(m, ResBlock)] + \
              [m for m in self.mid if isinstance(m, ResBlock)]
        return res[k - 1].conv1.out_channels

    def _check_hidden(self, k):
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.hidden_blocks):
            raise ValueError(f"return_hidden must be a ResBlock index in 1..{self.hidden_blocks} (down path, then "
                             f"middle), got {k!r}")

    def features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, depth: int = 1):
        """The hidden tokens after ResBlock ``depth`` (B, H*W, C), without running the rest of the network: the
        shared trunk of multi-task training (chapter 11)."""
        self._check_hidden(depth)
        return self._run(x, t, y, depth, stop=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                return_hidden: int | None = None):
        """The prediction for ``x`` at steps ``t``; with ``return_hidden=k`` also the hidden state after the
        ``k``-th ResBlock of the down path and middle, as tokens (B, H*W, C) in row-major order (what
        representation alignment reads, chapter 11)."""
        self._check_hidden(return_hidden)
        return self._run(x, t, y, return_hidden)

    def _run(self, x, t, y, return_hidden=None, stop=False):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % self._factor or x.shape[-2] % self._factor:
            raise ValueError(f"image side must be divisible by {self._factor} for channel_mults={self.channel_mults}, "
                             f"got {tuple(x.shape[-2:])}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) to match the batch, got {tuple(t.shape)}")
        emb = self.time_embed(t)
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            if y.dtype != torch.long or y.shape != (x.shape[0],):
                raise ValueError(f"labels y must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
            emb = emb + self.label_embed(y)
        elif self.cond_proj is not None:
            emb = emb + self.cond_proj(condition_vector(y, x, self.cond_dim))
        elif self.context_dim:
            if y is None:
                y = torch.zeros(x.shape[0], 1, self.context_dim, device=x.device, dtype=x.dtype)
            if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.ndim != 3 \
                    or y.shape[0] != x.shape[0] or y.shape[2] != self.context_dim or y.shape[1] < 1:
                got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(f"context y must be a float tensor ({x.shape[0]}, L, {self.context_dim}) with L >= 1 "
                                 f"(all zeros for no condition), got {got}")
            if y.device != x.device or y.dtype != x.dtype:
                raise ValueError(f"context y must be on x's device with x's dtype ({x.device}, {x.dtype}), got "
                                 f"{y.device}, {y.dtype}")
        elif y is not None:
            raise ValueError("this UNet was built without num_classes, cond_dim or context_dim, so it takes no "
                             "conditioning y")
        if self.patch > 1:  # space-to-depth: (B, C, H, W) -> (B, C*p*p, H/p, W/p)
            x = F.pixel_unshuffle(x, self.patch)
        h = self.conv_in(x)
        skips = [h]
        hidden, n = None, 0

        def apply(m, h):
            nonlocal hidden, n
            if isinstance(m, ResBlock):
                h, n = m(h, emb), n + 1
                if n == return_hidden:
                    hidden = h.flatten(2).transpose(1, 2)
                return h
            return m(h, y) if isinstance(m, CrossAttentionBlock) else m(h)

        for blocks in self.down:
            for m in blocks:
                h = apply(m, h)
                if stop and hidden is not None:
                    return hidden
            skips.append(h)
        for m in self.mid:
            h = apply(m, h)
            if stop and hidden is not None:
                return hidden
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock) and self.skip_connections:
                h = torch.cat([h, skips.pop()], dim=1)
            for m in blocks:
                h = apply(m, h)
        h = self.out(h)
        out = F.pixel_shuffle(h, self.patch) if self.patch > 1 else h
        return (out, hidden) if return_hidden is not None else out
