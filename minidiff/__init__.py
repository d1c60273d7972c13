"""minidiff: the small, tested package behind the minidiff course.

One module per idea (see the package map in README.md): ``config`` (profiles, device, seeding),
``data`` (datasets as tensors), ``train`` (the one training loop), ``metrics`` (feature-space FID/KID),
``viz`` (plots), ``nets`` (MLP, U-Net), ``diffusion`` (schedules, DDPM).
"""

__version__ = "0.1.0"

from . import config  # noqa: F401  (light; the other modules are imported on use)

__all__ = ["config", "__version__"]
