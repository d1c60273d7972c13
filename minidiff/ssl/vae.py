r"""Variational autoencoders (Kingma & Welling 2014) and the evidence lower bound.

A VAE has an encoder :math:`q_\phi(z\mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x))`, a prior
:math:`p(z) = \mathcal N(0, I)` and a decoder :math:`p_\theta(x\mid z)`. For every :math:`x`,

.. math::

    \log p_\theta(x) \;\ge\; \mathrm{ELBO}(x) =
    \underbrace{\mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]}_{-\text{reconstruction}}
    \;-\; \underbrace{\mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)}_{\text{rate}}
    \qquad \text{(eq. VAE-1)}

with the gap equal to :math:`\mathrm{KL}(q_\phi(z\mid x)\,\|\,p_\theta(z\mid x))`. For the Gaussian encoder and
prior the KL term has a closed form (Kingma & Welling 2014, appendix B):

.. math::

    \mathrm{KL} = \tfrac12 \sum_{j=1}^{d} \big(\mu_j^2 + \sigma_j^2 - \log \sigma_j^2 - 1\big).
    \qquad \text{(eq. VAE-2)}

The expectation is estimated with the **reparameterisation trick** :math:`z = \mu + \sigma \odot \epsilon`,
:math:`\epsilon\sim\mathcal N(0, I)` (eq. VAE-3), which makes the sample a differentiable function of
:math:`(\mu, \sigma)`. The :math:`\beta`-VAE (Higgins et al. 2017) weights the KL term by :math:`\beta`.

Two likelihoods: ``"bernoulli"`` on binarised digits (pixel on/off; :math:`-\log p(x\mid z)` is the binary
cross-entropy summed over pixels, a proper discrete likelihood, so the negative ELBO is in nats per image and
comparable with the literature), and ``"gaussian"`` with a fixed standard deviation for natural images.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_tensor


class ELBOTerms(NamedTuple):
    """Per-image averages in nats: ``recon`` = E_q[-log p(x|z)], ``kl`` = KL(q(z|x) || p(z)),
    ``loss`` = recon + beta * kl (the training objective), ``nelbo`` = recon + kl (the negative ELBO)."""

    recon: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor
    nelbo: torch.Tensor


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    r"""z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) (eq. VAE-3)."""
    check_tensor(mu, "mu", floating=True)
    if logvar.shape != mu.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + (0.5 * logvar).exp() * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    r"""The KL divergence of a diagonal Gaussian from the standard normal (Kingma & Welling 2014, appendix B;
    eq. VAE-2 of the module docstring), with :math:`\sigma_j^2 = \exp(\text{logvar}_j)`:

    .. math:: \mathrm{KL}\big(\mathcal N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,\mathcal N(0, I)\big)
              = \tfrac12 \sum_j \big(\mu_j^2 + \sigma_j^2 - \log \sigma_j^2 - 1\big).

    ``reduction="sum"``: per row, summed over the last dimension (the VAE's rate, nats per image);
    ``"none"``: the term of each element; ``"mean"``: the mean over all elements (the latent autoencoder's KL-reg,
    :meth:`minidiff.nets.autoencoder.AutoencoderKL.loss`). The package's one KL term."""
    check_tensor(mu, "mu", floating=True)
    if logvar.shape != mu.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if reduction not in ("sum", "none", "mean"):
        raise ValueError(f"reduction must be 'sum', 'none' or 'mean', got {reduction!r}")
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)
    return kl.sum(-1) if reduction == "sum" else kl.mean() if reduction == "mean" else kl


def binarize(x: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Pixels above ``threshold`` (images in [-1, 1]) become 1, the rest 0: the data of the Bernoulli likelihood."""
    return (x > threshold).to(x.dtype)


class VAE(nn.Module):
    """A convolutional VAE for ``size`` x ``size`` images (size divisible by 4): two strided convs down to
    ``size/4``, a linear map to ``(mu, logvar)`` of a ``latent_dim``-dimensional latent, and the mirror image up.

    ``likelihood="bernoulli"``: the decoder outputs logits of pixel-on probabilities for binarised images.
    ``likelihood="gaussian"``: the decoder outputs means in [-1, 1] with a fixed ``sigma``.
    """

    def __init__(self, in_channels: int = 1, size: int = 28, latent_dim: int = 16, width: int = 32,
                 likelihood: str = "bernoulli", sigma: float = 0.1):
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be divisible by 4, got {size}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if latent_dim <= 0 or width <= 0 or sigma <= 0:
            raise ValueError("latent_dim, width and sigma must be positive")
        self.in_channels, self.size, self.latent_dim = in_channels, size, latent_dim
        self.likelihood, self.sigma = likelihood, sigma
        s, w = size // 4, width
        self.enc = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(w, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(2 * w * s * s, 2 * latent_dim)
        self.from_z = nn.Sequential(nn.Linear(latent_dim, 2 * w * s * s), nn.SiLU(), nn.Unflatten(1, (2 * w, s, s)))
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(w, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, in_channels, 3, 1, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z|x), each ``(B, latent_dim)``."""
        check_images(x, "x", channels=self.in_channels, size=self.size)
        mu, logvar = self.to_stats(self.enc(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: Bernoulli logits or Gaussian means, ``(B, C, size, size)``."""
        check_tensor(z, "z", ndim=2, floating=True)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        out = self.dec(self.from_z(z))
        return out if self.likelihood == "bernoulli" else torch.tanh(out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean mu(x): the representation used for probes."""
        return self.encode(x)[0]

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> an image in [-1, 1] (the pixel-on probability for Bernoulli)."""
        return torch.sigmoid(out) * 2 - 1 if self.likelihood == "bernoulli" else out

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Data as the likelihood sees it: binarised (0/1) for Bernoulli, unchanged for Gaussian."""
        return binarize(x) if self.likelihood == "bernoulli" else x

    def neg_log_likelihood(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image in nats, summed over pixels."""
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, target, reduction="none").flatten(1).sum(1)
        d = target[0].numel()
        se = (out - target).pow(2).flatten(1).sum(1)
        return 0.5 * se / self.sigma ** 2 + d * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Images decoded from z ~ N(0, temperature^2 I) (the decoder's mean), in [-1, 1]."""
        dev = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(dev) * temperature
        return self.mean_image(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of each image."""
        return self.mean_image(self.decode(self.encode(x)[0]))

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode the straight line between the posterior means of ``x_a`` and ``x_b`` (each ``(1, C, H, W)`` or
        ``(B, C, H, W)``): returns ``(steps, B, C, H, W)``."""
        if x_a.shape != x_b.shape:
            raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        za, zb = self.encode(x_a)[0], self.encode(x_b)[0]
        w = torch.linspace(0, 1, steps, device=za.device).view(-1, 1, 1)
        z = (1 - w) * za[None] + w * zb[None]
        return self.mean_image(self.decode(z.flatten(0, 1))).view(steps, *x_a.shape)


def elbo(model: VAE, x: torch.Tensor, beta: float = 1.0, n_samples: int = 1) -> ELBOTerms:
    r"""The ELBO's two terms for images ``x`` in [-1, 1] (eq. VAE-1), as per-image means in nats.

    The reconstruction term is a Monte-Carlo estimate with ``n_samples`` reparameterised samples (eq. VAE-3);
    the KL term is exact (eq. VAE-2). Returns :class:`ELBOTerms` (``loss`` = recon + beta kl for training,
    ``nelbo`` = recon + kl, the bound on -log p(x) to report)."""
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a minidiff.ssl.vae.VAE, got {type(model).__name__}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    mu, logvar = model.encode(x)
    target = model.prepare(x)
    recon = 0.0
    for _ in range(n_samples):
        recon = recon + model.neg_log_likelihood(model.decode(reparameterize(mu, logvar)), target)
    recon = (recon / n_samples).mean()
    kl = gaussian_kl(mu, logvar).mean()
    return ELBOTerms(recon=recon, kl=kl, loss=recon + beta * kl, nelbo=recon + kl)


@torch.no_grad()
def evaluate_nelbo(model: VAE, x: torch.Tensor, batch_size: int = 500, n_samples: int = 1, seed: int = 0) -> dict:
    """Held-out negative ELBO and its two terms in nats per image (eval mode, batched, seeded)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    g = torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else [])
    with g:
        torch.manual_seed(seed)
        tot = {"recon": 0.0, "kl": 0.0, "nelbo": 0.0}
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev)
            t = elbo(model, xb, 1.0, n_samples)
            for k in tot:
                tot[k] += float(getattr(t, k)) * xb.shape[0]
    model.train(was)
    return {k: v / x.shape[0] for k, v in tot.items()}


@torch.no_grad()
def importance_weighted_nll(model: VAE, x: torch.Tensor, k: int = 16) -> torch.Tensor:
    r"""The importance-weighted bound of Burda et al. (2016, eq. 8), negated, per image in nats:

    .. math:: -\log \frac1k \sum_{i=1}^{k} \frac{p_\theta(x\mid z_i)\,p(z_i)}{q_\phi(z_i\mid x)}, \quad z_i\sim q_\phi(z\mid x).

    ``k = 1`` is an unbiased estimate of the negative ELBO; the bound tightens towards :math:`-\log p(x)` as
    ``k`` grows (``E[L_k] <= E[L_{k+1}]``). Returns ``(B,)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mu, logvar = model.encode(x)
    target = model.prepare(x)
    std = (0.5 * logvar).exp()
    logw = []
    for _ in range(k):
        z = mu + std * torch.randn_like(mu)
        log_px_z = -model.neg_log_likelihood(model.decode(z), target)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
        log_qz = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
        logw.append(log_px_z + log_pz - log_qz)
    logw = torch.stack(logw)  # (k, B)
    return -(torch.logsumexp(logw, 0) - math.log(k))
