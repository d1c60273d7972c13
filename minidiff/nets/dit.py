r"""Diffusion Transformers (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

The image (or latent) is cut into :math:`p \times p` patches, each linearly embedded into a token; a stack of
Transformer blocks processes the :math:`(H/p)(W/p)` tokens; a final layer maps every token back to a patch of the
prediction. The time step and the class label enter through **adaptive LayerNorm with zero init (adaLN-Zero)**:
an MLP of the conditioning vector :math:`c` produces, for each block, a shift, scale and gate for the attention
and for the MLP branch (paper, sec. 3.2 and fig. 3):

.. math::

    x \leftarrow x + \alpha_1 \odot \mathrm{Attn}\big(\mathrm{LN}(x)(1+\gamma_1) + \beta_1\big), \qquad
    x \leftarrow x + \alpha_2 \odot \mathrm{MLP}\big(\mathrm{LN}(x)(1+\gamma_2) + \beta_2\big),

with :math:`(\beta_1,\gamma_1,\alpha_1,\beta_2,\gamma_2,\alpha_2) = \mathrm{Linear}(\mathrm{SiLU}(c))`. The linear layer is
initialised to zero, so every gate :math:`\alpha` starts at 0: **each block starts as the identity**, and the final
layer (also zero-initialised) makes the whole network output zero at initialisation. This is what made DiT train
stably and scale.

Compute: the forward FLOPs are dominated by the blocks, about :math:`L\,(24\,N d^2 + 4\,N^2 d)` for :math:`L` blocks,
:math:`N` tokens and width :math:`d` (see :func:`dit_flops` for the exact count), so quality follows GFLOPs as depth,
width or the number of tokens (smaller patches) grow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from .._checks import condition_vector
from .embeddings import TimestepEmbedder, attend, timestep_embedding


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` with per-example (B, d) shift/scale broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


def norm_modulate(norm: nn.LayerNorm, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``modulate(norm(x), shift, scale)`` for a LayerNorm without affine parameters: one fused Triton kernel on CUDA
    (forward and backward, :func:`minidiff.kernels.layernorm_modulate`), plain torch elsewhere."""
    if norm.weight is None and x.ndim == 3 and kernels.uses_triton(x):
        return kernels.layernorm_modulate(x, shift, scale, norm.eps)
    return modulate(norm(x), shift, scale)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C): non-overlapping patches in row-major order, each flattened."""
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"image side must be divisible by the patch size {p}, got {H}x{W}")
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, p: int, C: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    B, T, D = tokens.shape
    if T != (H // p) * (W // p) or D != p * p * C:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not tile a {C}x{H}x{W} image with patch {p}")
    x = tokens.reshape(B, H // p, W // p, p, p, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, C, H, W)


def sincos_pos_embed(d: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (grid*grid, d): half the channels encode the row, half the column."""
    if d % 4:
        raise ValueError(f"hidden size must be divisible by 4 for 2-D sincos embeddings, got {d}")
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    emb_r = timestep_embedding(rows.flatten(), d // 2, max_period=10000.0)
    emb_c = timestep_embedding(cols.flatten(), d // 2, max_period=10000.0)
    return torch.cat([emb_r, emb_c], dim=1)


class LabelEmbedder(nn.Module):
    """Class labels -> vectors, with an extra "null" label (index ``num_classes``) used for classifier-free guidance.
    In training mode, labels are replaced by the null label with probability ``dropout`` (DiT's own label dropout,
    for a training loop that passes the true labels, like chapter 09's).

    A loop that drops labels itself must not have them dropped a second time here:
    :func:`minidiff.recipes.train_ddpm` with ``p_uncond`` switches this dropout off while it trains
    (:func:`set_label_dropouts`), so its ``p_uncond`` is the one rate of null labels."""

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.1):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"label dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.dropout = num_classes, dropout
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor, force_drop: torch.Tensor | None = None) -> torch.Tensor:
        if y.dtype != torch.long or y.ndim != 1:
            raise TypeError(f"labels must be an int64 tensor (B,), got {y.dtype} {tuple(y.shape)}")
        if int(y.min()) < 0 or int(y.max()) > self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null), got "
                             f"[{int(y.min())}, {int(y.max())}]")
        if self.training and self.dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        if force_drop is not None:
            y = torch.where(force_drop, torch.full_like(y, self.num_classes), y)
        return self.table(y)


def label_dropouts(model: nn.Module) -> list[float]:
    """The ``dropout`` of every :class:`LabelEmbedder` inside ``model``, in ``model.modules()`` order (empty for a
    model that drops no labels on its own, e.g. a U-Net or a DiT without ``num_classes``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [m.dropout for m in model.modules() if isinstance(m, LabelEmbedder)]


def set_label_dropouts(model: nn.Module, rates) -> None:
    """Set the ``dropout`` of the :class:`LabelEmbedder` modules inside ``model`` to ``rates`` (one per embedder, in
    the order of :func:`label_dropouts`, or one number for all of them)."""
    embedders = [m for m in model.modules() if isinstance(m, LabelEmbedder)]
    rates = [float(rates)] * len(embedders) if isinstance(rates, (int, float)) else [float(r) for r in rates]
    if len(rates) != len(embedders):
        raise ValueError(f"model has {len(embedders)} label embedders, got {len(rates)} dropout rates")
    for m, r in zip(embedders, rates):
        if not 0 <= r < 1:
            raise ValueError(f"label dropout must be in [0, 1), got {r}")
        m.dropout = r


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    """Multi-head attention from the image tokens (queries) to a short sequence of conditioning tokens."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        h = self.heads
        q = self.q(x).reshape(B, T, h, D // h).transpose(1, 2)
        k, v = self.kv(ctx).reshape(B, ctx.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


CONDITIONINGS = ("adaln-zero", "adaln", "in-context", "cross-attention")


class DiTBlock(nn.Module):
    """A Transformer block conditioned in one of the paper's four ways (sec. 3.2, fig. 3):

    - ``"adaln-zero"`` (default): shift/scale/gate from the conditioning vector, regressed by a zero-initialised
      linear layer, so the block starts as the identity (see the module docstring);
    - ``"adaln"``: the same shift/scale without gates, ordinary initialisation;
    - ``"in-context"``: plain pre-norm block; the time and label embeddings are extra tokens in the sequence;
    - ``"cross-attention"``: an extra cross-attention layer from the image tokens to the two conditioning tokens.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, conditioning: str = "adaln-zero"):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning = conditioning
        ada = conditioning.startswith("adaln")
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not ada, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not ada, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        if ada:
            self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, (6 if conditioning == "adaln-zero" else 4) * dim))
            if conditioning == "adaln-zero":
                nn.init.zeros_(self.adaLN[1].weight)
                nn.init.zeros_(self.adaLN[1].bias)
        if conditioning == "cross-attention":
            self.norm_x = nn.LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, heads)

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """``c`` (B, d) is the summed conditioning vector; ``ctx`` (B, 2, d) the conditioning tokens."""
        if self.conditioning == "adaln-zero":
            shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=1)
            x = x + gate1[:, None] * self.attn(norm_modulate(self.norm1, x, shift1, scale1))
            return x + gate2[:, None] * self.mlp(norm_modulate(self.norm2, x, shift2, scale2))
        if self.conditioning == "adaln":
            shift1, scale1, shift2, scale2 = self.adaLN(c).chunk(4, dim=1)
            x = x + self.attn(norm_modulate(self.norm1, x, shift1, scale1))
            return x + self.mlp(norm_modulate(self.norm2, x, shift2, scale2))
        x = x + self.attn(self.norm1(x))
        if self.conditioning == "cross-attention":
            x = x + self.cross(self.norm_x(x), ctx)
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """(ada)LN then a zero-initialised linear map from each token to its patch of the output. With ``adaptive``
    the norm is modulated by the conditioning vector (shift, scale; zero-initialised as well)."""

    def __init__(self, dim: int, patch: int, out_channels: int, adaptive: bool = True):
        super().__init__()
        self.adaptive = adaptive
        self.norm = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        zero = [self.linear]
        if adaptive:
            self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
            zero.append(self.adaLN[1])
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if not self.adaptive:
            return self.linear(self.norm(x))
        shift, scale = self.adaLN(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


@dataclass(frozen=True)
class DiTConfig:
    """Shape of a DiT: ``depth`` blocks of width ``hidden`` with ``heads`` heads, on ``patch`` x ``patch`` patches."""

    input_size: int = 28
    in_channels: int = 1
    patch: int = 4
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int | None = None
    class_dropout: float = 0.1           # the DiT's own label dropout in training mode (see LabelEmbedder)
    conditioning: str = "adaln-zero"
    cond_dim: int | None = None          # condition on a vector y (B, cond_dim) instead of a label; zeros = none


#: DiT sizes (hidden, depth, heads): tiny ones that train on a CPU, and the paper's S/B/L/XL (Peebles & Xie 2023,
#: Table 1). A model is a size and a patch, named like the paper's: "DiT-S/2" is DiT-S on 2x2 patches.
DIT_SIZES = {
    "DiT-Tiny": dict(hidden=64, depth=2, heads=4),
    "DiT-Micro": dict(hidden=96, depth=3, heads=4),
    "DiT-Mini": dict(hidden=128, depth=4, heads=4),
    "DiT-S": dict(hidden=384, depth=12, heads=6),
    "DiT-B": dict(hidden=768, depth=12, heads=12),
    "DiT-L": dict(hidden=1024, depth=24, heads=16),
    "DiT-XL": dict(hidden=1152, depth=28, heads=16),
}
# the named configurations "size/patch" of the course and the paper (any size/patch works with dit_config)
DIT_CONFIGS = {f"{size}/{p}": {**DIT_SIZES[size], "patch": p}
               for size, patches in (("DiT-Tiny", (4, 2)), ("DiT-Mini", (4, 2)), ("DiT-S", (8, 4, 2)),
                                     ("DiT-B", (4, 2)), ("DiT-L", (2,)), ("DiT-XL", (2,)))
               for p in patches}


def dit_config(name: str, **overrides) -> DiTConfig:
    """A DiT of a named size (:data:`DIT_SIZES`) with fields overridden. ``name`` is a size and its patch, like the
    paper's ``"DiT-S/4"`` (DiT-S on 4x4 patches), or a size alone with the patch given as ``patch=``; e.g.
    ``dit_config("DiT-S/4", input_size=32, in_channels=3)`` or ``dit_config("DiT-Tiny", patch=7)``. A name whose
    patch disagrees with ``patch=`` is refused: ``"DiT-Tiny/4", patch=7`` is ``"DiT-Tiny/7"``."""
    size, slash, patch = name.partition("/") if isinstance(name, str) else ("", "", "")
    if size not in DIT_SIZES or (slash and (not patch.isdigit() or int(patch) < 1)):
        raise ValueError(f"unknown DiT config {name!r}; expected a size of {', '.join(DIT_SIZES)} with its patch, "
                         f"e.g. 'DiT-S/2', or a size alone with patch=...")
    if patch:
        if overrides.get("patch", int(patch)) != int(patch):
            q = overrides["patch"]
            raise ValueError(f"DiT config {name!r} has patch {patch}, but patch={q!r} was given: ask for "
                             f"'{size}/{q}' (or '{size}' with patch={q!r})")
        overrides = {**overrides, "patch": int(patch)}
    elif "patch" not in overrides:
        raise ValueError(f"DiT config {name!r} names a size without a patch: ask for e.g. '{size}/4', or give patch=")
    return DiTConfig(**{**DIT_SIZES[size], **overrides})


class DiT(nn.Module):
    """``DiT(cfg)(x, t, y=None)`` -> a tensor shaped like ``x`` (the predicted noise). ``y`` are class labels when
    ``cfg.num_classes`` is set (``None`` means the null label, i.e. unconditional); the null label is
    ``num_classes``. In training mode the labels are dropped with probability ``cfg.class_dropout``, except under
    :func:`minidiff.recipes.train_ddpm` with ``p_uncond``, which drops them itself (once)."""

    def __init__(self, cfg: DiTConfig = DiTConfig()):
        super().__init__()
        if cfg.input_size % cfg.patch:
            raise ValueError(f"input_size {cfg.input_size} is not divisible by the patch size {cfg.patch}")
        self.cfg = cfg
        self.num_classes = cfg.num_classes   # the null label, as on the U-Net (train_ddpm and guidance read it)
        d, p = cfg.hidden, cfg.patch
        self.grid = cfg.input_size // p
        self.x_embed = nn.Linear(p * p * cfg.in_channels, d)
        self.register_buffer("pos_embed", sincos_pos_embed(d, self.grid)[None], persistent=False)
        self.t_embed = TimestepEmbedder(d, freq_dim=256 if d >= 256 else 64)
        if cfg.num_classes and cfg.cond_dim:
            raise ValueError("give num_classes (labels) or cond_dim (vectors), not both")
        self.y_embed = LabelEmbedder(cfg.num_classes, d, cfg.class_dropout) if cfg.num_classes else None
        # a condition vector (e.g. self-supervised features, chapter 11) enters like the label embedding
        self.c_embed = nn.Sequential(nn.Linear(cfg.cond_dim, d), nn.SiLU(), nn.Linear(d, d)) if cfg.cond_dim else None
        if cfg.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {cfg.conditioning!r}")
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio, cfg.conditioning) for _ in range(cfg.depth))
        self.final = FinalLayer(d, p, cfg.in_channels, adaptive=cfg.conditioning.startswith("adaln"))
        nn.init.xavier_uniform_(self.x_embed.weight)
        nn.init.zeros_(self.x_embed.bias)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def hidden_blocks(self) -> int:
        """The valid ``return_hidden`` indices are 1..hidden_blocks (the blocks)."""
        return self.cfg.depth

    def hidden_dim(self, k: int) -> int:
        """Width of the image tokens after block ``k`` (``return_hidden=k``): the model's width."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.cfg.depth:
            raise ValueError(f"return_hidden must be a block index in 1..{self.cfg.depth}, got {k!r}")
        return self.cfg.hidden

    def features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, depth: int = 1):
        """The image tokens after block ``depth`` (B, N, d), without running the later blocks: the shared trunk of
        multi-task training (chapter 11)."""
        return self.forward(x, t, y, return_hidden=depth, _stop=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                return_hidden: int | None = None, _stop: bool = False):
        """The prediction for ``x`` at steps ``t``; with ``return_hidden=k`` also the image tokens after block ``k``
        (B, T, d), the hidden state that representation alignment (REPA, chapter 11) reads."""
        cfg = self.cfg
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.input_size, cfg.input_size):
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}), "
                             f"got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) to match the batch, got {tuple(t.shape)}")
        if return_hidden is not None and (isinstance(return_hidden, bool) or not isinstance(return_hidden, int)
                                          or not 1 <= return_hidden <= cfg.depth):
            raise ValueError(f"return_hidden must be a block index in 1..{cfg.depth}, got {return_hidden}")
        h = self.x_embed(patchify(x, cfg.patch)) + self.pos_embed
        t_emb = self.t_embed(t)
        if self.y_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), cfg.num_classes, dtype=torch.long, device=x.device)
            y_emb = self.y_embed(y)
        elif self.c_embed is not None:
            y_emb = self.c_embed(condition_vector(y, x, cfg.cond_dim))
        elif y is not None:
            raise ValueError("this DiT was built without num_classes or cond_dim, so it takes no condition y")
        else:
            y_emb = torch.zeros_like(t_emb)
        c = t_emb + y_emb
        ctx = torch.stack([t_emb, y_emb], dim=1)             # (B, 2, d): tokens for in-context / cross-attention
        n_ctx = 2 if cfg.conditioning == "in-context" else 0
        if n_ctx:
            h = torch.cat([ctx, h], dim=1)
        hidden = None
        for i, blk in enumerate(self.blocks):
            h = blk(h, c, ctx)
            if return_hidden == i + 1:
                hidden = h[:, n_ctx:]
                if _stop:
                    return hidden
        if n_ctx:
            h = h[:, n_ctx:]
        out = unpatchify(self.final(h, c), cfg.patch, cfg.in_channels, cfg.input_size, cfg.input_size)
        return (out, hidden) if return_hidden is not None else out


def dit_flops(cfg: DiTConfig) -> int:
    r"""Forward FLOPs (2 per multiply-add) of the token path of one image: patch embedding, the blocks (QKV and
    output projections :math:`8Nd^2`, attention scores and weighted sum :math:`4N^2d`, MLP :math:`4 r N d^2` with
    ratio :math:`r`) and the final projection. In-context conditioning runs the blocks on :math:`N+2` tokens;
    cross-attention adds a query and output projection per token, keys/values of the 2 conditioning tokens, and
    :math:`2 \cdot 2 \cdot 2Nd` for the attention itself. The per-image conditioning MLPs are left out (under 2% for the tiny
    configs, far less for the large ones)."""
    N = (cfg.input_size // cfg.patch) ** 2
    d = cfg.hidden
    pd = cfg.patch * cfg.patch * cfg.in_channels
    hidden = int(d * cfg.mlp_ratio)
    Nb = N + 2 if cfg.conditioning == "in-context" else N
    per_block = 2 * Nb * d * 3 * d + 2 * Nb * Nb * d * 2 + 2 * Nb * d * d + 2 * Nb * d * hidden * 2
    if cfg.conditioning == "cross-attention":
        per_block += 2 * N * d * d + 2 * 2 * d * 2 * d + 2 * N * 2 * d * 2 + 2 * N * d * d
    return 2 * N * pd * d + cfg.depth * per_block + 2 * N * d * pd
