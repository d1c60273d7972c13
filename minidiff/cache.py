"""A cache for finished artifacts: a sweep's numbers and samples, a trained model's weights.

Checkpoints (:mod:`minidiff.train`) let an interrupted training run resume. This module keeps what comes *after*
training, so that "Run all" after a runtime reset reuses it instead of computing it again::

    from minidiff.cache import cached
    results = cached("08_unet/ablation-full-seed0", lambda: run_variant("full"), config=C8)

- **Where.** Next to the checkpoints: ``<root>/<profile>/<key>.cache-<hash>.pt`` with the root of
  :func:`minidiff.config.checkpoint_dir` (``runs/``, a folder you set, or Google Drive after
  :func:`minidiff.config.use_google_drive`). ``<hash>`` is a SHA-256 of the canonical JSON of ``config``: a changed
  config is another entry, built afresh (entries of other configs stay, so switching back reuses them).
- **When.** Under the same rules as checkpoints: nothing is cached in the ``ci`` profile (unless
  ``$MINIDIFF_CHECKPOINT_DIR`` names a folder: ``make book`` gives each build its own, emptied at the start, so
  chapters executed in one build share what they trained) or with ``MINIDIFF_CHECKPOINT_DIR=off``;
  ``build_fn`` then simply runs every time.
- **What.** The value returned by ``build_fn`` may hold tensors, numbers, strings, ``None`` and lists, tuples and
  dicts of those. It is checked even when caching is off, so a value that could not be stored fails in the ``ci``
  profile, not after an hour on a GPU. A model is stored as its weights: pass it as ``model=`` (a module, or a
  dict of named modules) and let ``build_fn`` train it in place; on a hit its weights (and train/eval mode) are
  loaded back into the module you passed.
- **Safely.** Files are written atomically (:func:`minidiff.checkpoint.save_checkpoint`: temp file, fsync,
  ``os.replace``) and read with ``torch.load(weights_only=True)``, which refuses pickled objects instead of running
  them. An unreadable or mismatched file is reported with a warning naming it and rebuilt; a failed write is a
  warning (the value is still returned).
- **Same numbers.** The random-number state after ``build_fn`` (torch, NumPy, Python, CUDA) is stored with the
  value and restored on a hit, so the cells after a cached one draw the same random numbers as in the run that
  built it.

The cache knows the ``config`` you pass it, not your code: after changing the code of ``build_fn``, delete the file
(its path is printed on a hit, and :func:`cache_path` returns it).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
import warnings
from collections import OrderedDict
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .checkpoint import _rng_state, _set_rng_state, save_checkpoint
from .config.runtime import checkpoint_dir

FORMAT = 1
_KEY_PART = re.compile(r"^[A-Za-z0-9_.+=,-]+$")


# ----------------------------------------------------------------------------- keys, configs and paths

def _check_key(key) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"cache key must be a non-empty string like '08_unet/ablation-full-seed0', got {key!r}")
    parts = key.split("/")
    bad = [p for p in parts if p in ("", ".", "..") or not _KEY_PART.match(p)]
    if bad or key.startswith("/"):
        raise ValueError(f"cache key {key!r} must be a relative name of parts made of letters, digits and . _ - + = , "
                         f"separated by '/' (no empty part, '.' or '..'); e.g. '08_unet/ablation-full-seed0'")
    return key


def _canonical(obj, where: str = "config"):
    """``obj`` as plain JSON data with a stable form (dataclasses by type name and fields, tuples as lists)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, enum.Enum):
        return _canonical(obj.value, where)
    if isinstance(obj, (PurePath, torch.device, torch.dtype)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__qualname__,
                **{f.name: _canonical(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}}
    if isinstance(obj, (dict, MappingProxyType)):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{where} has a key of type {type(k).__name__}; config dict keys must be strings or "
                                f"numbers")
            out[str(k)] = _canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where} is a {type(obj).__name__}, which has no stable text form for the cache key; use "
                    f"numbers, strings, None, lists, tuples, dicts or dataclasses of those")


def config_hash(config=None) -> str:
    """The first 16 hex digits of the SHA-256 of ``config``'s canonical JSON (dataclasses, dicts, lists, tuples,
    numbers, strings, None; dict order does not matter)."""
    return hashlib.sha256(_config_text(config).encode()).hexdigest()[:16]


def _config_text(config) -> str:
    return json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_path(key: str, config=None) -> Path | None:
    """The file that holds ``key`` built with ``config``, or None when caching is off (see the module docstring)."""
    run = checkpoint_dir(_check_key(key))
    if run is None:
        return None
    return run.with_name(f"{run.name}.cache-{config_hash(config)}.pt")


# ----------------------------------------------------------------------------- values and modules

def _check_value(obj, where: str = "value") -> None:
    """Raise TypeError naming the first part of ``obj`` that ``torch.load(weights_only=True)`` would refuse."""
    if obj is None or type(obj) in (bool, int, float, str, torch.Tensor, nn.Parameter):   # exact types: NumPy's
        return                                                                        # float64 subclasses float
    if isinstance(obj, nn.Module):
        raise TypeError(f"{where} is a {type(obj).__name__} module, which cannot be cached as an object: pass it as "
                        f"cached(..., model=...) so that its weights are stored, or return its state_dict()")
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int, float):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; use string or number keys")
            _check_value(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        if type(obj) not in (list, tuple, torch.Size):
            raise TypeError(f"{where} is a {type(obj).__name__}; use a plain list, tuple or dict")
        for i, v in enumerate(obj):
            _check_value(v, f"{where}[{i}]")
        return
    hint = " (use .item() for a NumPy number, torch.as_tensor for an array)" if type(obj).__module__ == "numpy" else ""
    raise TypeError(f"{where} is a {type(obj).__name__}, which weights_only loading refuses{hint}; a cached value may "
                    f"hold tensors, numbers, strings, None and lists, tuples and dicts of those")


def _modules(model) -> dict[str, nn.Module]:
    if model is None:
        return {}
    if isinstance(model, nn.Module):
        return {"model": model}
    if isinstance(model, Mapping) and model and all(isinstance(k, str) and isinstance(m, nn.Module)
                                                    for k, m in model.items()):
        return dict(model)
    raise TypeError(f"model must be an nn.Module or a non-empty dict of name -> nn.Module, got {type(model).__name__}")


def _state_mismatch(stored: dict, modules: dict[str, nn.Module]) -> str | None:
    if set(stored) != set(modules):
        return f"it holds the modules {sorted(stored)}, not {sorted(modules)}"
    for name, m in modules.items():
        have = m.state_dict()
        saved = stored[name]
        if set(saved) != set(have):
            return f"module {name!r} has other parameters than the stored ones"
        for k, t in have.items():
            if tuple(saved[k].shape) != tuple(t.shape):
                return f"{name}.{k} has shape {tuple(t.shape)}, the stored one {tuple(saved[k].shape)}"
    return None


def _restore_rng(state: dict) -> None:
    state = dict(state)
    cuda = state.pop("cuda", None)
    _set_rng_state(state)
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- the cache

def cached(key: str, build_fn: Callable[[], Any], *, config=None, model=None, map_location="cpu"):
    """Return ``build_fn()``, computed once and then loaded from the checkpoint folder.

    ``key`` names the artifact (``"<chapter>/<what>"``, e.g. ``"10_latent_and_guidance/guidance-sweep"``; letters,
    digits and ``. _ - + = ,`` in parts separated by ``/``); ``config`` is what the artifact depends on (a profile
    section, a dict of settings: anything :func:`config_hash` accepts). ``model`` (an ``nn.Module`` or a dict of
    named modules) is trained in place by ``build_fn``; its weights are stored and, on a hit, loaded back into it.
    Tensors of a loaded value come back on ``map_location`` (default the CPU).

    Caching is off in the ``ci`` profile and with ``MINIDIFF_CHECKPOINT_DIR=off``; ``build_fn`` then runs every
    time (the value is still checked). See the module docstring for the file format and the guarantees.
    Raises ValueError for a bad key and TypeError for a value that could not be stored.
    """
    _check_key(key)
    if not callable(build_fn):
        raise TypeError(f"build_fn must be a function taking no arguments, got {type(build_fn).__name__}")
    modules = _modules(model)
    text = _config_text(config)
    path = cache_path(key, config)

    if path is not None and path.exists():
        problem = None
        try:
            entry = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:   # truncated, corrupted, or a pickled object that weights_only refuses
            entry, problem = None, f"it is unreadable ({type(e).__name__}: {str(e)[:200]})"
        if problem is None:
            if not isinstance(entry, dict) or entry.get("format") != FORMAT or "value" not in entry:
                problem = "it is not a minidiff cache file"
            elif entry.get("key") != key or entry.get("config") != text:
                problem = "it was built for another key or config"
            else:
                problem = _state_mismatch(entry.get("modules", {}), modules)
        if problem is None:
            for name, m in modules.items():
                m.load_state_dict(entry["modules"][name])
                m.train(bool(entry["training"][name]))
            if entry.get("rng") is not None:
                _restore_rng(entry["rng"])
            print(f"cached: {key} loaded from {path} (delete the file to compute it again)")
            return entry["value"]
        warnings.warn(f"cache file {path} is not used: {problem}; building it again", stacklevel=2)

    value = build_fn()
    _check_value(value)
    if path is None:
        return value
    entry = {"format": FORMAT, "key": key, "config": text, "value": value,
             "modules": {n: {k: t.detach().cpu() for k, t in m.state_dict().items()} for n, m in modules.items()},
             "training": {n: m.training for n, m in modules.items()}, "rng": _rng_state()}
    try:
        save_checkpoint(entry, path)
    except Exception as e:   # the value is computed: a cache that cannot be written must not lose it
        warnings.warn(f"could not write cache file {path} ({type(e).__name__}: {e}); the result is used but not "
                      f"cached", stacklevel=2)
    return value
