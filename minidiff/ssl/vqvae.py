r"""The vector-quantised VAE (van den Oord, Vinyals & Kavukcuoglu 2017): a discrete latent from a learned codebook.

The encoder maps an image to a grid of vectors :math:`z_e(x) \in \mathbb R^{D}` (one per position); each is replaced
by its nearest codebook entry

.. math::

    z_q = e_c,\qquad c = \arg\min_j \lVert z_e - e_j \rVert_2, \qquad e_1, \dots, e_K \in \mathbb R^D
    \qquad \text{(eq. VQ-1)}

and the decoder reconstructs the image from :math:`z_q`. The argmin has no gradient, so the encoder is trained with
the **straight-through estimator**: the forward pass uses :math:`z_q`, the backward pass copies the decoder's
gradient to :math:`z_e` unchanged, :math:`z_e + \mathrm{sg}[z_q - z_e]` (eq. VQ-2; sg: stop-gradient). The loss is

.. math::

    \mathcal L = \lVert x - \hat x \rVert^2 + \lVert \mathrm{sg}[z_e] - e_c \rVert^2
    + \beta\,\lVert z_e - \mathrm{sg}[e_c] \rVert^2 \qquad \text{(eq. VQ-3)}

(reconstruction; the **codebook** term moves the chosen codes towards the encoder's outputs; the **commitment**
term, weight :math:`\beta = 0.25` in the paper, keeps the encoder close to its codes). Codes that no vector chooses
get no gradient and stay dead: :func:`codebook_stats` reports the fraction of codes used and the **perplexity**
:math:`\exp(H)` of their frequencies (:math:`K` when all are used equally, 1 when one code takes everything).

The prior over the discrete grid is learned afterwards (PixelCNN in the paper, a transformer in VQGAN); chapter 03
stops at the autoencoder, and chapter 10's latent diffusion uses a continuous KL-regularised one instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_tensor


class Quantized(NamedTuple):
    """What :class:`VectorQuantizer` returns: ``z_q`` (straight-through, shaped like the input), the chosen code
    ``indices`` (the input's shape without the channel dimension), the ``codebook`` and ``commitment`` losses (eq.
    VQ-3, unweighted; means over elements rather than the paper's sums), and the mean squared quantisation error
    ``error`` (detached)."""

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor
    error: torch.Tensor


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row (eq. VQ-1) for each row of ``z`` ``(M, D)``; ``codebook`` is ``(K, D)``.
    Uses :math:`\\lVert z\\rVert^2 - 2 z\\cdot e + \\lVert e\\rVert^2`, one matrix product."""
    check_tensor(z, "z", floating=True, ndim=2)
    check_tensor(codebook, "codebook", floating=True, ndim=2)
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z has {z.shape[1]} channels but the codebook's vectors have {codebook.shape[1]}")
    d = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(1)[None]
    return d.argmin(1)


class VectorQuantizer(nn.Module):
    """A codebook of ``num_codes`` vectors of size ``dim``; ``forward(z_e)`` with ``z_e`` ``(B, dim, H, W)`` (or
    ``(M, dim)``) returns :class:`Quantized`. The codes start uniform in :math:`\\pm 1/K`, as in the paper's code."""

    def __init__(self, num_codes: int = 64, dim: int = 16):
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise ValueError(f"need at least 2 codes of dimension at least 1, got num_codes={num_codes}, dim={dim}")
        self.num_codes, self.dim = num_codes, dim
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes))

    @torch.no_grad()
    def init_from(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codes to ``num_codes`` distinct encoder outputs drawn from ``z_e`` (a batch of
        ``(B, dim, H, W)`` or ``(M, dim)``): a data-dependent start, so that no code begins far from every
        vector and dies unused (the paper's uniform start leaves many codes dead on small data)."""
        flat = z_e if z_e.dim() == 2 else z_e.permute(0, 2, 3, 1).reshape(-1, self.dim)
        if flat.shape[0] < self.num_codes:
            raise ValueError(f"need at least {self.num_codes} vectors to initialise the codebook, got {flat.shape[0]}")
        pick = torch.randperm(flat.shape[0], generator=generator)[: self.num_codes]
        self.codebook.copy_(flat[pick.to(flat.device)])

    def forward(self, z_e: torch.Tensor) -> Quantized:
        if z_e.dim() not in (2, 4) or z_e.shape[1] != self.dim:
            raise ValueError(f"z_e must be (B, {self.dim}, H, W) or (M, {self.dim}), got {tuple(z_e.shape)}")
        flat = z_e if z_e.dim() == 2 else z_e.permute(0, 2, 3, 1).reshape(-1, self.dim)
        idx = nearest_code(flat.detach(), self.codebook.detach())
        q = self.codebook[idx]
        codebook_loss = F.mse_loss(q, flat.detach())              # moves the codes (eq. VQ-3, second term)
        commitment = F.mse_loss(flat, q.detach())                 # moves the encoder (third term)
        q_st = flat + (q - flat).detach()                          # straight-through (eq. VQ-2)
        if z_e.dim() == 4:
            b, _, h, w = z_e.shape
            q_st = q_st.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)
            idx = idx.reshape(b, h, w)
        return Quantized(q_st, idx, codebook_loss, commitment, codebook_loss.detach())


def codebook_stats(indices: torch.Tensor, num_codes: int) -> dict:
    """``{"usage": fraction of the codes chosen at least once, "perplexity": exp(entropy of the code frequencies)}``
    over all positions of ``indices``."""
    if indices.numel() == 0:
        raise ValueError("indices is empty")
    if indices.dtype.is_floating_point or int(indices.min()) < 0:
        raise ValueError(f"indices must be non-negative integer code numbers, got {indices.dtype} with minimum "
                         f"{indices.min().item()}")
    counts = torch.bincount(indices.flatten().long(), minlength=num_codes).double()
    if counts.numel() > num_codes:
        raise ValueError(f"indices go up to {counts.numel() - 1}, more than num_codes={num_codes}")
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"usage": (counts > 0).double().mean().item(), "perplexity": math.exp(entropy)}


class VQTerms(NamedTuple):
    """The VQ-VAE's loss (eq. VQ-3) and its parts, batch means: ``loss``, ``recon`` (squared error per pixel),
    ``codebook``, ``commitment``, and the ``indices`` chosen."""

    loss: torch.Tensor
    recon: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor
    indices: torch.Tensor


class VQVAE(nn.Module):
    """A convolutional VQ-VAE for ``size`` x ``size`` images in [-1, 1] (size divisible by 4): two strided convs down
    to a ``size/4`` grid of ``code_dim``-vectors, quantised with ``num_codes`` codes, and the mirror image up. A
    28 x 28 digit becomes 7 x 7 = 49 code indices, ``49 * log2(num_codes)`` bits."""

    def __init__(self, in_channels: int = 1, size: int = 28, num_codes: int = 64, code_dim: int = 16,
                 width: int = 32, beta: float = 0.25):
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be divisible by 4, got {size}")
        if width <= 0 or beta < 0:
            raise ValueError(f"width must be positive and beta non-negative, got width={width}, beta={beta}")
        self.in_channels, self.size, self.beta = in_channels, size, beta
        w = width
        self.enc = nn.Sequential(nn.Conv2d(in_channels, w, 4, 2, 1), nn.SiLU(), nn.Conv2d(w, w, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(w, code_dim, 1))
        self.quantizer = VectorQuantizer(num_codes, code_dim)
        self.dec = nn.Sequential(nn.Conv2d(code_dim, w, 3, 1, 1), nn.SiLU(), nn.ConvTranspose2d(w, w, 4, 2, 1),
                                 nn.SiLU(), nn.ConvTranspose2d(w, in_channels, 4, 2, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous encoder output :math:`z_e(x)`, ``(B, code_dim, size/4, size/4)``."""
        check_images(x, "x", channels=self.in_channels, size=self.size)
        return self.enc(x)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images from a grid of code indices ``(B, size/4, size/4)``."""
        if indices.dtype not in (torch.int64, torch.int32) or indices.dim() != 3:
            raise ValueError(f"indices must be an integer (B, H, W) grid, got {indices.dtype} {tuple(indices.shape)}")
        z = self.quantizer.codebook[indices.long()].permute(0, 3, 1, 2)
        return self.dec(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x`` through the quantised bottleneck."""
        return self.dec(self.quantizer(self.encode(x)).z_q)

    def loss(self, x: torch.Tensor) -> VQTerms:
        """Eq. VQ-3 on a batch: mean squared reconstruction error + codebook loss + ``beta`` * commitment loss."""
        q = self.quantizer(self.encode(x))
        recon = F.mse_loss(self.dec(q.z_q), x)
        return VQTerms(recon + q.codebook + self.beta * q.commitment, recon, q.codebook, q.commitment, q.indices)
