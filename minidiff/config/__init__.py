"""Every size a chapter runs with, and the runtime around it.

Three modules, read in this order:

- :mod:`~minidiff.config.schema`: the dataclasses (one per chapter, :class:`Profile` gathering them, and
  :class:`TrainConfig`, the hyper-parameters of :func:`minidiff.train.train`);
- :mod:`~minidiff.config.profiles`: the values: ``cpu`` in full, ``ci`` and ``gpu`` as what differs from it;
- :mod:`~minidiff.config.runtime`: the active profile (``$MINIDIFF_PROFILE``, capped by ``$MINIDIFF_SMOKE=1``),
  device, seeding, the banner, checkpoint folders and Google Drive.

Chapters use them through this package::

    from minidiff import config
    P = config.get_profile()          # frozen dataclass of sizes
    print(config.banner("04_ddpm"))   # one line: profile, device, expected runtime
    print(P.summary("ddpm"))          # one line: the sizes the chapter runs with
    cfg = P.ddpm.train_config(desc="DDPM", ckpt_dir=config.checkpoint_dir("04_ddpm/unet"))
"""

from .profiles import CI, CPU, GPU, PROFILES, derive, with_overrides  # noqa: F401
from .runtime import (CHECKPOINT_ENV, DEVICE_ENV, PROFILE_ENV, SMOKE_ENV, SMOKE_FIELDS, SMOKE_MAX_SECONDS,  # noqa: F401
                      banner, chapter_runtime, checkpoint_dir, device, get_profile, profile_name, runtime_text,
                      seed_everything, set_checkpoint_dir, smoke, smoke_kind, smoke_profile, use_google_drive)
from .schema import (PROFILE_NAMES, TRAIN_FIELDS, DiTChapterConfig, FlowChapterConfig, GuidanceChapterConfig,  # noqa: F401
                     ImageDiffusionConfig, KernelsChapterConfig, Profile, RotationConfig, SamplingConfig, SSLConfig,
                     SSLDiffusionConfig, ToyDiffusionConfig, TrainConfig, UNetChapterConfig, VAEConfig)

_MOVED = {"cached": "minidiff.cache.cached", "cache_path": "minidiff.cache.cache_path"}


def __getattr__(name):
    # config.cached lived here until the cache moved out of config (config -> cache -> config was an import cycle)
    if name in _MOVED:
        raise AttributeError(f"config.{name} has moved: use `from minidiff.cache import {name}` ({_MOVED[name]})")
    raise AttributeError(f"module 'minidiff.config' has no attribute {name!r}")
