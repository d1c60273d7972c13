"""The runtime: which profile and device a chapter runs with, seeding, the banner, checkpoint folders, Google
Drive, and smoke runs.

The active profile is ``$MINIDIFF_PROFILE`` when set, else ``gpu`` when CUDA is available, else ``cpu``::

    from minidiff import config
    P = config.get_profile()          # frozen dataclass of sizes (minidiff.config.profiles)
    print(config.banner("04_ddpm"))   # one line: profile, device, expected runtime
    config.seed_everything(0)
"""

from __future__ import annotations

import os
import random
import re
import warnings
from dataclasses import fields, is_dataclass, replace

import numpy as np
import torch

from .profiles import PROFILES
from .schema import PROFILE_NAMES, Profile

PROFILE_ENV = "MINIDIFF_PROFILE"
CHECKPOINT_ENV = "MINIDIFF_CHECKPOINT_DIR"
DEVICE_ENV = "MINIDIFF_DEVICE"


# ----------------------------------------------------------------------------- smoke runs (MINIDIFF_SMOKE=1)
# A smoke run executes every code path of a profile quickly (the GPU check, scripts/gpu_check.py, runs each chapter
# in the gpu profile this way): every budget field of every section is capped, found by its name so that fields
# added later are capped too, and minidiff.data replaces every download by offline data. Models, shapes and batch
# sizes stay those of the profile.

SMOKE_ENV = "MINIDIFF_SMOKE"
SMOKE_MAX_SECONDS = 20.0   #: wall-clock budgets are capped at this (or at the ci value when that is smaller)
SMOKE_FIELDS = {           # kind of budget -> field-name pattern
    "steps": re.compile(r"(^|_)steps$|^warmup$|^eval_every$"),                 # step budgets and step counts
    "seconds": re.compile(r"(^|_)seconds$"),                                      # wall-clock budgets
    "count": re.compile(r"^n_|_(samples|images)$|(^|_)(reps|repeats)$"),          # samples, images, repeats
    "sweep": re.compile(r"(^|_)(steps|etas|nfe|scales|seeds|scaling|numel|variants|fractions)$"),   # tuples swept
}


def smoke() -> bool:
    """Whether ``$MINIDIFF_SMOKE`` asks for a smoke run (``1``; unset, empty or ``0``: no)."""
    value = os.environ.get(SMOKE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{SMOKE_ENV}={value!r} is not understood; expected 1 (smoke run) or 0 / unset (normal run)")
    return value == "1"


def smoke_kind(name: str, value) -> str | None:
    """The kind of budget a section field is (``"steps"``, ``"seconds"``, ``"count"``, ``"sweep"``), from its name
    and value (sweeps are tuples, the others numbers or ``None``), or ``None`` when it is not a budget."""
    if isinstance(value, tuple):
        return "sweep" if SMOKE_FIELDS["sweep"].search(name) else None
    if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
        return None
    return next((k for k in ("steps", "seconds", "count") if SMOKE_FIELDS[k].search(name)), None)


def smoke_profile(profile: Profile, reference: Profile | None = None) -> Profile:
    """``profile`` with every budget of every section capped for a smoke run: step budgets, sample counts and
    repeats at most the ``reference`` profile's value (default ``ci``: the smallest sizes at which every chapter's
    assertions are checked in CI), wall-clock budgets at most :data:`SMOKE_MAX_SECONDS` (``None``, no limit, becomes
    that cap), and a swept tuple replaced by the reference's when that one is shorter. Everything else is kept."""
    ref = reference or PROFILES["ci"]
    updates = {}
    for f in fields(profile):
        section = getattr(profile, f.name)
        if not is_dataclass(section):
            continue
        capped = {}
        for g in fields(section):
            value, ref_value = getattr(section, g.name), getattr(getattr(ref, f.name), g.name, None)
            kind = smoke_kind(g.name, value)
            if kind == "sweep":
                if isinstance(ref_value, tuple) and len(ref_value) < len(value):
                    capped[g.name] = ref_value
            elif kind == "seconds":
                limits = [v for v in (value, ref_value, SMOKE_MAX_SECONDS) if v is not None]
                capped[g.name] = type(SMOKE_MAX_SECONDS)(min(limits))
            elif kind is not None and value is not None and isinstance(ref_value, (int, float)) and ref_value < value:
                capped[g.name] = ref_value
        updates[f.name] = replace(section, **capped)
    note = (f" [smoke run, {SMOKE_ENV}=1: budgets capped at the {ref.name} profile's, seconds at "
            f"{SMOKE_MAX_SECONDS:g}; offline data]")
    return replace(profile, description=profile.description + note, **updates)


def profile_name() -> str:
    """The active profile's name: ``$MINIDIFF_PROFILE`` if set, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower()
    if name:
        if name not in PROFILES:
            raise ValueError(
                f"{PROFILE_ENV}={name!r} is not a known profile; expected one of {', '.join(PROFILE_NAMES)}"
            )
        return name
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """Return the :class:`Profile` called ``name`` (default: the active one, see :func:`profile_name`); with
    ``$MINIDIFF_SMOKE=1`` its budgets are capped by :func:`smoke_profile`."""
    if name is None:
        name = profile_name()
    if not isinstance(name, str) or name.lower() not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    profile = PROFILES[name.lower()]
    return smoke_profile(profile) if smoke() else profile


def device() -> torch.device:
    """The device chapters compute on: ``$MINIDIFF_DEVICE`` if set, else CUDA, else MPS, else CPU."""
    forced = os.environ.get(DEVICE_ENV, "").strip()
    if forced:
        try:
            dev = torch.device(forced)
        except RuntimeError as e:
            raise ValueError(f"{DEVICE_ENV}={forced!r} is not a valid torch device: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}={forced!r} asks for CUDA but torch sees no CUDA device")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA). Returns a CPU ``torch.Generator`` seeded the same.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def runtime_text(seconds: float, machine: str, estimate: bool = False) -> str:
    """A runtime in words: ``"about 45 s on 2 CPU cores"`` under a minute, else minutes to the half minute
    (``"about 4.5 min on 2 CPU cores"``), with ``" (estimate)"`` when it was not measured."""
    if not seconds > 0:
        raise ValueError(f"runtime must be a positive number of seconds, got {seconds!r}")
    amount = f"{seconds:.0f} s" if seconds < 60 else f"{round(seconds / 30) / 2:g} min"
    return f"about {amount} on {machine}" + (" (estimate)" if estimate else "")


def chapter_runtime(chapter: str, profile: Profile | None = None) -> str:
    """The expected runtime of ``chapter`` (e.g. ``"04_ddpm"``) in ``profile`` (default: the active one), in words."""
    p = profile or get_profile()
    if chapter not in p.runtime_s:
        return "not stated for this chapter"
    return runtime_text(p.runtime_s[chapter], p.runtime_on, chapter in p.runtime_estimates)


def banner(chapter: str | None = None, profile: Profile | None = None) -> str:
    """One line for the top of a notebook: profile, device, torch version and expected runtime.

    Warns (``UserWarning``) when a GPU-sized profile would run on a CPU.
    """
    p = profile or get_profile()
    dev = device()
    runtime = chapter_runtime(chapter, p) if chapter else None
    if p.name == "gpu" and dev.type != "cuda":
        warnings.warn(
            "profile 'gpu' is selected but no CUDA device is available: this chapter will be very slow. "
            f"Set {PROFILE_ENV}=cpu (or pick a GPU runtime on Colab: Runtime > Change runtime type).",
            stacklevel=2,
        )
    parts = [f"minidiff | profile={p.name}", f"device={dev}"]
    if dev.type == "cuda":
        parts[-1] += f" ({torch.cuda.get_device_name(dev)})"
    parts.append(f"torch={torch.__version__}")
    if runtime:
        parts.append(f"expected runtime: {runtime}")
    ckpt = checkpoint_dir("x", p.name)
    parts.append(f"checkpoints: {ckpt.parent if ckpt is not None else 'off'}")
    if smoke():
        parts.append(f"smoke run ({SMOKE_ENV}=1): budgets capped, offline data; numbers mean nothing")
    return " | ".join(parts)


def checkpoint_dir(run: str, profile: str | None = None):
    """The folder where the training run ``run`` (e.g. ``"04_ddpm/unet"``) keeps its checkpoints, or None for no
    checkpoints. Calling :func:`minidiff.train.train` again with the same folder resumes the run where it stopped,
    so after a disconnect, re-running the chapter (one "Run all") picks every long run up from its last checkpoint.

    ``$MINIDIFF_CHECKPOINT_DIR`` (set it with :func:`set_checkpoint_dir` or :func:`use_google_drive`) is the root;
    the run goes in ``<root>/<profile>/<run>`` (``<root>/<profile>-smoke/<run>`` under ``$MINIDIFF_SMOKE=1``).
    ``off`` disables checkpoints. Unset: ``runs/<profile>/<run>`` in the working folder for the ``cpu`` and ``gpu``
    profiles, and none for ``ci`` (short runs that must start fresh).
    """
    if not isinstance(run, str) or not run.strip() or ".." in run.split("/"):
        raise ValueError(f"run must be a non-empty relative name like '04_ddpm/unet', got {run!r}")
    name = profile or profile_name()
    root = os.environ.get(CHECKPOINT_ENV, "").strip()
    if root.lower() == "off" or (not root and name == "ci"):
        return None
    from pathlib import Path

    # a smoke run (capped budgets) keeps its own folders: a real run must never resume a smoke checkpoint
    return Path(root or "runs") / (f"{name}-smoke" if smoke() else name) / run


def set_checkpoint_dir(path) -> None:
    """Keep checkpoints under ``path`` (``"off"`` disables them) for the rest of this session."""
    os.environ[CHECKPOINT_ENV] = str(path)


def use_google_drive(folder: str = "minidiff-checkpoints", mountpoint: str = "/content/drive"):
    """On Colab: mount Google Drive and keep every checkpoint in ``MyDrive/<folder>``, so a long run survives a
    disconnect or a runtime reset (re-run the chapter and training resumes). Returns the folder."""
    import sys
    from pathlib import Path

    if "google.colab" not in sys.modules:
        raise RuntimeError("use_google_drive() works on Colab only; elsewhere call "
                           "config.set_checkpoint_dir('some/folder') (or set $MINIDIFF_CHECKPOINT_DIR)")
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mountpoint)
    root = Path(mountpoint) / "MyDrive" / folder
    root.mkdir(parents=True, exist_ok=True)
    set_checkpoint_dir(root)
    print(f"checkpoints go to {root}: after a disconnect, run the chapter again and training resumes")
    return root
