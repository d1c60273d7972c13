r"""A small convolutional autoencoder with a KL-regularised latent, for latent diffusion (Rombach et al. 2022).

Latent diffusion runs the diffusion process on :math:`z = \mathcal E(x)` instead of on pixels. The autoencoder is
trained first, on its own, to reconstruct images through a spatial latent (here 28x28x1 -> 7x7xC), with a small
KL penalty that keeps the latent close to :math:`\mathcal N(0, I)` in scale (their "KL-reg", weight about
:math:`10^{-6}` per element in the paper; larger here because the latent is tiny):

.. math:: \mathcal L_\text{AE} = \|x - \mathcal D(z)\|_1 + \lambda_\text{KL}\,\mathrm{KL}\big(q(z\mid x)\,\|\,\mathcal N(0, I)\big),\qquad z \sim q(z\mid x).

Diffusion then works with the latent's posterior mean, divided by its standard deviation over the training set
(``scale``) so that the diffusion model sees unit-variance data, as Rombach et al. do with their scale factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images
from ..ssl.vae import gaussian_kl


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class AutoencoderKL(nn.Module):
    """``encode(x) -> (mean, logvar)`` of shape (B, C, H/4, W/4); ``decode(z) -> x`` in [-1, 1] (tanh).

    ``latent_channels`` C and ``width`` set the size; two stride-2 stages give a 4x smaller side."""

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, width: int = 32):
        super().__init__()
        if latent_channels < 1 or width < 1:
            raise ValueError(f"latent_channels and width must be positive, got {latent_channels}, {width}")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 1, 1), _gn(w), nn.SiLU(),
            nn.Conv2d(w, w, 4, 2, 1), _gn(w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), _gn(2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * latent_channels, 3, 1, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * w, 3, 1, 1), _gn(2 * w), nn.SiLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), _gn(w), nn.SiLU(),
            nn.ConvTranspose2d(w, w, 4, 2, 1), _gn(w), nn.SiLU(),
            nn.Conv2d(w, in_channels, 3, 1, 1),
        )
        self.register_buffer("scale", torch.ones(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x, "x", channels=self.in_channels)
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"image sides must be divisible by 4, got {tuple(x.shape[-2:])}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-20, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must have shape (B, {self.latent_channels}, h, w), got {tuple(z.shape)}")
        return torch.tanh(self.decoder(z))

    def loss(self, x: torch.Tensor, kl_weight: float = 1e-3) -> torch.Tensor:
        """L1 reconstruction (mean per pixel) + ``kl_weight`` x KL (mean per latent element,
        :func:`minidiff.ssl.vae.gaussian_kl`)."""
        mean, logvar = self.encode(x)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        rec = F.l1_loss(self.decode(z), x)
        kl = gaussian_kl(mean, logvar, reduction="mean")
        return rec + kl_weight * kl

    @torch.no_grad()
    def fit_scale(self, x: torch.Tensor, batch_size: int = 500) -> float:
        """Set ``scale`` to the std of the latent means over ``x`` (so that ``to_latent`` has unit variance)."""
        was = self.training
        self.eval()
        dev = self.scale.device
        means = torch.cat([self.encode(x[i:i + batch_size].to(dev))[0] for i in range(0, len(x), batch_size)])
        self.scale.copy_(means.std())
        self.train(was)
        return float(self.scale)

    @torch.no_grad()
    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled posterior mean: the data of latent diffusion."""
        return self.encode(x)[0] / self.scale

    @torch.no_grad()
    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z * self.scale)
