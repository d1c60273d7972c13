"""Checkpoints of a training run: written atomically, pruned, read safely, resumed exactly.

A checkpoint is one ``torch.save`` file ``ckpt_<step:08d>.pt`` holding plain tensors and containers:
``model``, ``ema``, ``optimizer``, ``scaler``, ``sampler`` (each a ``state_dict``, or None), ``step``,
``history``, ``rng`` (Python, NumPy, torch and CUDA generator states), ``elapsed`` (training seconds so far, see
:class:`minidiff.train.Clock`) and ``config`` (the :class:`~minidiff.train.TrainConfig` as a dict).

- :func:`save_checkpoint` writes atomically (temp file in the same folder, flush, fsync, ``os.replace``): a crash
  leaves the old file or the new one, never half a file;
- :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: a file that carries a pickled object is
  refused, never executed; :func:`latest_checkpoint` skips an unreadable newest file with a warning naming it;
- :class:`Checkpointer` is the folder of one run: it saves the parts of a run every so often, keeps the last
  ``keep`` files, and resumes from the newest readable one (refusing a checkpoint of another run).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read; the message names the file."""


_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")


def list_checkpoints(ckpt_dir) -> list[Path]:
    """Checkpoint files in ``ckpt_dir``, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _CKPT_RE.match(p.name)), key=lambda p: int(_CKPT_RE.match(p.name).group(1)))


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, flushed and fsynced, then
    ``os.replace`` (a crash leaves either the old file or the new one, never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``. Raises :class:`CheckpointError` naming the file when it
    is truncated, corrupted, or carries a pickled object that is not plain tensors and containers."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupted, or it carries a pickled "
                              f"object that weights_only loading refuses): {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a minidiff training checkpoint (no 'model'/'step' entries)")
    return state


def latest_checkpoint(ckpt_dir, map_location="cpu") -> tuple[dict, Path] | None:
    """The newest readable checkpoint in ``ckpt_dir`` as ``(state, path)``, or None if there is none. Unreadable
    newer files are reported with a warning naming them, and skipped."""
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return load_checkpoint(path, map_location), path
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
    return None


class Checkpointer:
    """The checkpoint folder of one run (``folder=None``: a run that keeps no checkpoints; then :meth:`save` does
    nothing and :meth:`resume` finds nothing).

    ``parts`` (given to :meth:`save` and :meth:`resume`) maps the names ``model``, ``ema``, ``optimizer``,
    ``scaler``, ``sampler`` to objects with ``state_dict`` / ``load_state_dict`` (or None, or an object without them,
    which is skipped); ``last`` is the newest file written or resumed from."""

    def __init__(self, folder, keep: int = 2, write: bool = True):
        self.folder = Path(folder) if folder is not None else None
        self.keep = keep
        self.write = write    # False: a reader (ranks > 0 of a data-parallel run resume from rank 0's files)
        self.last: Path | None = None
        if self.folder is not None and self.folder.is_dir() and write:   # half-written temp files of a killed run
            for stale in self.folder.glob(".ckpt_*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def holds(self, step: int) -> bool:
        """Whether the newest checkpoint is the one of ``step`` (so there is nothing new to save)."""
        return self.last is not None and self.last.name == f"ckpt_{step:08d}.pt"

    def save(self, parts: dict, *, step: int, history: dict, elapsed: float, config,
             rng_ranks: list | None = None) -> Path | None:
        """Write the checkpoint of ``step`` (atomically) and delete all but the newest ``keep`` files.
        ``rng_ranks``: every rank's RNG states of a data-parallel run, in rank order (restored rank by rank). A
        reader (``write=False``) writes nothing and only notes the step, so :meth:`holds` agrees with the writer."""
        if self.folder is None:
            return None
        if not self.write:
            self.last = self.folder / f"ckpt_{step:08d}.pt"
            return None
        state = {name: obj.state_dict() if hasattr(obj, "state_dict") else None for name, obj in parts.items()}
        state.update(step=step, history=history, rng=_rng_state(), elapsed=elapsed, config=_plain(asdict(config)))
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        self.last = save_checkpoint(state, self.folder / f"ckpt_{step:08d}.pt")
        for old in list_checkpoints(self.folder)[:-self.keep]:
            with contextlib.suppress(OSError):
                old.unlink()
        return self.last

    def resume(self, parts: dict, config, map_location="cpu", rank: int = 0, world_size: int = 1) -> dict | None:
        """Load the newest readable checkpoint into ``parts`` and restore every RNG state; return the checkpoint
        (its ``step``, ``history`` and ``elapsed`` are the caller's to use), or None when there is none. Raises
        :class:`CheckpointError` for a checkpoint of another run or one that does not fit ``parts``. Rank ``rank``
        of a data-parallel run restores its own RNG states when the checkpoint holds ``world_size`` of them."""
        found = latest_checkpoint(self.folder, map_location=map_location) if self.folder is not None else None
        if found is None:
            return None
        state, path = found
        _check_same_run(state.get("config") or {}, config, path)
        for name, obj in parts.items():
            saved = state.get(name)
            if obj is None or not hasattr(obj, "load_state_dict") or saved is None or saved == {}:
                continue
            try:
                obj.load_state_dict(saved)
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"checkpoint {path} does not match this {name}: {e}") from None
        per_rank = state.get("rng_ranks")
        _set_rng_state(per_rank[rank] if per_rank is not None and len(per_rank) == world_size else state["rng"])
        self.last = path
        return state


# Fields that define a run: resuming with other values would silently mix two runs. (steps and max_seconds may
# change: that is how a finished run is extended.) seed only when both runs name one: it acts at a fresh start.
_RUN_FIELDS = ("lr", "weight_decay", "betas", "warmup", "min_lr_ratio", "grad_clip", "ema_decay", "amp", "seed",
               "anneal_by_time")


def _check_same_run(saved: dict, cfg, path: Path) -> None:
    now = _plain(asdict(cfg))
    diff = [f"{k}={saved[k]!r} there, {now.get(k)!r} now" for k in _RUN_FIELDS
            if k in saved and saved[k] != now.get(k) and not (k == "seed" and None in (saved[k], now.get(k)))]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run ({'; '.join(diff)}). To start afresh, delete "
            f"{path.parent} or pass TrainConfig(resume=False); to continue that run, use its settings.")


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# ----------------------------------------------------------------------------- RNG states as plain tensors

def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": _np_state_to_tensor(), "python": _py_state_to_tensor()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_state_to_tensor():
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _py_state_to_tensor():
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
