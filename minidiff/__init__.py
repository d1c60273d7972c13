"""minidiff: the small, tested package behind the minidiff course.

One module per idea (see the package map in README.md and the API reference of the book): :mod:`~minidiff.config`
(profiles, device, seeding), :mod:`~minidiff.data` (datasets as tensors), :mod:`~minidiff.nets` (MLP, U-Net, DiT,
encoders, autoencoder, CLIP), :mod:`~minidiff.diffusion` (schedules, DDPM, DDIM, DPM-Solver, score matching, SDEs,
guidance), :mod:`~minidiff.ssl` (self-supervised learning), :mod:`~minidiff.metrics` (feature-space FID/KID),
:mod:`~minidiff.train` (the one training loop) with :mod:`~minidiff.checkpoint` and :mod:`~minidiff.recipes`,
:mod:`~minidiff.kernels` (fused kernels), :mod:`~minidiff.viz` (plots), :mod:`~minidiff.reference` (the shipped
reference runs of the multi-seed sweeps).
"""

__version__ = "0.1.0"

from . import config  # noqa: F401  (light; the other modules are imported on use)

__all__ = ["config", "__version__"]
