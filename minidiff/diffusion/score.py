r"""Score-based generative modelling: denoising score matching and (annealed) Langevin dynamics.

The **score** of a density is :math:`\nabla_x \log p(x)`: a vector field pointing towards higher density. Given it,
**Langevin dynamics** samples from :math:`p` (Song & Ermon 2019, eq. 2):

.. math:: x_{k+1} = x_k + \tfrac{\alpha}{2}\,\nabla_x\log p(x_k) + \sqrt{\alpha}\,z_k,\qquad z_k\sim\mathcal N(0, I).

**Denoising score matching** (Vincent 2011) learns the score of the data smoothed by Gaussian noise of scale
:math:`\sigma` without knowing any density: with :math:`\tilde x = x + \sigma z`,

.. math::

    \mathcal L_\text{DSM}(\theta;\sigma) = \tfrac12\,\mathbb E_{x, z}\Big\|s_\theta(\tilde x, \sigma) + \frac{z}{\sigma}\Big\|^2 ,
    \qquad \text{(DSM)}

whose minimiser is :math:`s^*(\tilde x,\sigma) = \nabla_{\tilde x}\log p_\sigma(\tilde x)`, the score of
:math:`p_\sigma = p * \mathcal N(0, \sigma^2 I)`. NCSN (Song & Ermon 2019) trains one network for a geometric sequence
:math:`\sigma_1 > \dots > \sigma_L` with the weight :math:`\lambda(\sigma) = \sigma^2` (eq. 6) and samples by **annealed
Langevin dynamics** (Algorithm 1): a few Langevin steps at each noise level, from the largest to the smallest, with
step size :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`.

**The eps <-> score relation.** DDPM's noise prediction is a scaled score: since
:math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`,
:math:`\nabla\log q(x_t) = -\mathbb E[\epsilon\mid x_t]/\sqrt{1-\bar\alpha_t}`, so
:math:`s_\theta(x_t, t) = -\epsilon_\theta(x_t, t)/\sqrt{1-\bar\alpha_t}` (Song et al. 2021, and chapter 06).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_same_shape, check_tensor
from .._progress import tqdm
from .ddpm import _check_shape, _check_start, _model_device


def eps_to_score(eps: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    r""":math:`s = -\epsilon / \sigma_t` where ``std`` = :math:`\sqrt{1-\bar\alpha_t}` (or the SDE's marginal std)."""
    std = torch.as_tensor(std, dtype=eps.dtype, device=eps.device)
    if (std <= 0).any():
        raise ValueError("std must be positive")
    return -eps / std


def score_to_eps(score: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    r""":math:`\epsilon = -\sigma_t\,s` (inverse of :func:`eps_to_score`)."""
    return -score * torch.as_tensor(std, dtype=score.dtype, device=score.device)


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    r"""``n`` noise levels from ``sigma_max`` down to ``sigma_min`` with a constant ratio (NCSN's sequence)."""
    if not (sigma_max > sigma_min > 0):
        raise ValueError(f"need sigma_max > sigma_min > 0, got {sigma_max}, {sigma_min}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n))


def dsm_loss(score_model: Callable, x0: torch.Tensor, sigmas: torch.Tensor, noise: torch.Tensor | None = None,
             sigma_idx: torch.Tensor | None = None) -> torch.Tensor:
    r"""NCSN's denoising score matching loss (eq. DSM above, weighted by :math:`\sigma^2`, averaged over a random
    noise level per example): :math:`\tfrac12\,\mathbb E\,\|\sigma s_\theta(x+\sigma z, \sigma) + z\|^2`.
    ``score_model(x, sigma)`` takes ``sigma`` as a float tensor ``(B,)``."""
    check_tensor(x0, "x0", floating=True)
    check_tensor(sigmas, "sigmas", ndim=1, floating=True)
    if x0.ndim < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty batch (B, ...), got shape {tuple(x0.shape)}")
    if (sigmas <= 0).any():
        raise ValueError("every sigma must be positive")
    B = x0.shape[0]
    if sigma_idx is None:
        sigma_idx = torch.randint(0, len(sigmas), (B,), device=x0.device)
    sig = sigmas.to(x0.device)[sigma_idx]
    if noise is None:
        noise = torch.randn_like(x0)
    check_same_shape(noise, x0, "noise", "x0")
    s = sig.view(B, *([1] * (x0.ndim - 1)))
    out = score_model(x0 + s * noise, sig)
    if not isinstance(out, torch.Tensor) or out.shape != x0.shape:
        raise ValueError(f"score_model(x, sigma) must return a tensor shaped like x0 {tuple(x0.shape)}")
    return 0.5 * (s * out + noise).pow(2).flatten(1).sum(1).mean()


@torch.no_grad()
def langevin(score_fn: Callable, x: torch.Tensor, step_size: float, n_steps: int,
             generator: torch.Generator | None = None, return_trajectory: bool = False, every: int = 1):
    r"""Unadjusted Langevin dynamics :math:`x \leftarrow x + \frac{\alpha}{2}s(x) + \sqrt\alpha\,z` for ``n_steps``
    (Song & Ermon 2019, eq. 2). ``score_fn(x)`` returns the score. Returns ``x`` (and the trajectory)."""
    check_tensor(x, "x", floating=True)
    if not step_size > 0 or n_steps < 1:
        raise ValueError(f"step_size must be > 0 and n_steps >= 1, got {step_size}, {n_steps}")
    traj = [x.cpu()] if return_trajectory else None
    for k in range(n_steps):
        z = torch.randn(x.shape, generator=generator, device=generator.device if generator else x.device).to(x.device)
        x = x + 0.5 * step_size * score_fn(x) + math.sqrt(step_size) * z
        if traj is not None and (k + 1) % every == 0:
            traj.append(x.cpu())
    return (x, traj) if return_trajectory else x


@torch.no_grad()
def annealed_langevin(model: Callable, schedule: torch.Tensor, shape, *, steps: int = 100, eps: float = 2e-5,
                      denoise: bool = True, x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      model_kwargs: dict | None = None, return_trajectory: bool = False, progress: bool = True,
                      device=None):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) with the noise-conditional score
    ``model(x, sigma)``: for each noise level :math:`\sigma_i` of ``schedule`` (a decreasing 1-D tensor, NCSN's
    noise levels), from the largest, ``steps`` Langevin steps with :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`.
    Starts from ``x_T``, else from :math:`\mathcal N(0, \sigma_1^2 I)`.

    ``denoise=True`` ends with one Tweedie step :math:`x + \sigma_L^2 s(x, \sigma_L)`, the posterior mean of the clean
    data (Song & Ermon 2020), which removes the last level's noise. The trajectory holds ``(sigma, x)``: the start
    (at :math:`\sigma_1`), then ``x`` after every level. The common arguments are those of
    :data:`minidiff.diffusion.ddpm.SAMPLER_ARGS`."""
    sigmas = schedule
    check_tensor(sigmas, "sigmas (the schedule)", ndim=1, floating=True)
    if (sigmas[1:] > sigmas[:-1]).any():
        raise ValueError("sigmas must be in decreasing order (largest noise first)")
    shape = _check_shape(shape)
    _check_start(x_T, shape)
    device = _model_device(model, device, x_T)
    score_fn = model if not model_kwargs else (lambda x, s: model(x, s, **model_kwargs))
    if x_T is None:
        x_T = float(sigmas[0]) * torch.randn(shape, generator=generator,
                                             device=generator.device if generator else device)
    x = x_T.to(device)
    sigma_L = float(sigmas[-1])
    traj = [(float(sigmas[0]), x.cpu())] if return_trajectory else None
    B = x.shape[0]
    for sig in tqdm(sigmas.tolist(), desc="annealed Langevin", disable=not progress, leave=False):
        alpha = eps * sig ** 2 / sigma_L ** 2
        s = torch.full((B,), sig, device=x.device, dtype=x.dtype)
        x = langevin(lambda y: score_fn(y, s), x, alpha, steps, generator)
        if traj is not None:
            traj.append((sig, x.cpu()))
    if denoise:
        s = torch.full((B,), sigma_L, device=x.device, dtype=x.dtype)
        x = x + sigma_L ** 2 * score_fn(x, s)
    return (x, traj) if return_trajectory else x


class GaussianMixture:
    r"""An isotropic Gaussian mixture :math:`\sum_k w_k\,\mathcal N(\mu_k, s_k^2 I)` with exact log-density, score and
    samples, also of its noisy version :math:`p_\sigma = p * \mathcal N(0,\sigma^2 I)` (component stds
    :math:`\sqrt{s_k^2+\sigma^2}`). The analytic reference for the score-matching chapter and the tests."""

    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float32)
        if self.means.ndim != 2:
            raise ValueError(f"means must be (K, d), got shape {tuple(self.means.shape)}")
        K = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float32).expand(K).clone()
        w = torch.full((K,), 1.0 / K) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (K,) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-5:
            raise ValueError("weights must be K non-negative numbers summing to 1")
        if (self.stds <= 0).any():
            raise ValueError("stds must be positive")
        self.weights = w

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _parts(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        var = self.stds.to(x.device) ** 2 + (sigma.reshape(-1, 1) ** 2 if sigma.ndim else sigma ** 2)  # (B|1, K)
        var = var.reshape(-1, len(self.stds))
        diff = x[:, None, :] - self.means.to(x.device)[None]                                          # (B, K, d)
        d = self.dim
        logc = (self.weights.to(x.device).log() - 0.5 * d * torch.log(2 * math.pi * var)
                - 0.5 * diff.pow(2).sum(-1) / var)                                                      # (B, K)
        return logc, diff, var

    def responsibilities(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """p(component k | x) under the noisy mixture p_sigma, shape (B, K)."""
        return torch.softmax(self._parts(x, sigma)[0], 1)

    def component_stds(self, sigma=0.0) -> torch.Tensor:
        """Standard deviations sqrt(s_k^2 + sigma^2) of the components of p_sigma, shape (K,)."""
        return (self.stds ** 2 + float(sigma) ** 2).sqrt()

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        logc, _, _ = self._parts(x, sigma)
        return torch.logsumexp(logc, 1)

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """Exact :math:`\\nabla_x \\log p_\\sigma(x)`: the responsibility-weighted sum of component scores."""
        logc, diff, var = self._parts(x, sigma)
        r = torch.softmax(logc, 1)                                    # responsibilities (B, K)
        return -(r[..., None] * diff / var[..., None]).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k, None] * torch.randn(n, self.dim, generator=generator)


class NoiseConditionalScore(torch.nn.Module):
    r"""A noise-conditional score network :math:`s_\theta(x, \sigma) = \mathrm{net}(x, c\log\sigma)/\sigma`.

    Dividing by :math:`\sigma` builds in the scale of the true score, :math:`\|\nabla\log p_\sigma\| \approx \sqrt d/\sigma`, so the
    network only outputs unit-scale vectors (Song & Ermon 2020, "NCSNv2", technique 3). ``net(x, t)`` is any
    time-conditioned network, e.g. :class:`minidiff.nets.TimeMLP`; :math:`\log\sigma` is scaled by ``c`` before its
    sinusoidal embedding."""

    def __init__(self, net: torch.nn.Module, c: float = 100.0):
        super().__init__()
        self.net, self.c = net, c

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not isinstance(sigma, torch.Tensor) or sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a float tensor of shape ({x.shape[0]},), got {getattr(sigma, 'shape', sigma)}")
        return self.net(x, self.c * sigma.log()) / sigma.view(-1, *([1] * (x.ndim - 1)))
