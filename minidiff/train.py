"""The one training loop every chapter uses.

``train(model, loss_fn, batches, cfg)`` runs AdamW with linear warmup and cosine decay, gradient
clipping, an exponential moving average (EMA) of the weights, mixed precision on GPU (bf16 where
supported, else fp16 with a gradient scaler), a step budget and a wall-clock budget, a progress bar with the
running loss (``tqdm.auto``'s widget in a live notebook, plain text elsewhere), and a history for plots.

Training state is never lost:

- with ``cfg.ckpt_dir`` set, a checkpoint is written every ``cfg.ckpt_every`` steps and at the end,
  atomically (temp file, fsync, ``os.replace``), keeping the last ``cfg.keep`` files;
- calling ``train`` again with the same ``ckpt_dir`` resumes exactly where it stopped: model, EMA,
  optimizer, LR schedule, gradient scaler, step, history, the batch sampler and every RNG state, so an
  interrupted-and-resumed run ends with the same weights as an uninterrupted one (on CPU);
- checkpoints are read with ``torch.load(weights_only=True)``: a file that carries a pickled object is
  refused, never executed; an unreadable newest file is reported by name and the previous one is used;
- a nan/inf loss stops training with :class:`TrainingDiverged` *before* the bad update, so the last
  good checkpoint (and the in-memory weights) stay intact.

The wall-clock budget ``cfg.max_seconds`` is cumulative across resumes: each checkpoint stores the training time
so far (``elapsed``: time spent in training steps, not in evaluation, up to that checkpoint), and a resumed call
only trains for what is left of the budget. A run whose budget is already spent returns at once with
``stopped == "time"``; to train longer, raise ``max_seconds`` (or ``steps``). Work done after the last checkpoint
of an interrupted call is redone on resume, and so is not counted twice. ``anneal_by_time`` follows the same
cumulative clock.

Example::

    cfg = TrainConfig(steps=2000, lr=2e-3, ckpt_dir="runs/ddpm")
    result = train(model, lambda m, x: ddpm_loss(m, schedule, x), TensorSampler(data.x, batch_size=128), cfg)
    result.ema  # the EMA copy of the model, for sampling
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from ._progress import tqdm
from .config.schema import TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss became nan or inf; the message names the step and the last good checkpoint."""


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read; the message names the file."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model, its EMA copy (or the model itself when EMA is off),
    the history (``step``, ``loss``, ``lr``, ``time``), the number of steps done and why training stopped
    (``"steps"`` or ``"time"``). ``seconds`` and ``history["time"]`` are cumulative training time, counting the
    earlier calls of a resumed run."""

    model: nn.Module
    ema: nn.Module
    history: dict
    step: int
    stopped: str
    seconds: float
    checkpoint: Path | None = None
    resumed_from: int | None = None


def lr_at(step: int, cfg: TrainConfig, seconds: float | None = None) -> float:
    """Learning rate at ``step``: linear warmup over ``cfg.warmup`` steps, then cosine decay from ``cfg.lr`` to
    ``cfg.min_lr_ratio * cfg.lr`` at ``cfg.steps``. With ``cfg.anneal_by_time``, ``seconds`` of training out of
    ``cfg.max_seconds`` also count as progress (the larger of the two fractions wins); :func:`train` passes the
    cumulative training time of the run, so a resumed run continues the decay where it stopped."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    if cfg.anneal_by_time and seconds is not None:
        progress = max(progress, min(1.0, seconds / cfg.max_seconds))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    r"""Exponential moving average of a model's parameters (Polyak averaging):
    :math:`\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta` with the warm-up ``d = min(decay, (1+n)/(10+n))``
    so short runs are not dominated by the random initialisation. Buffers are copied. Uses ``torch._foreach_lerp_``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = [p for p in self.model.parameters() if p.dtype.is_floating_point]
        src_p = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        torch._foreach_lerp_(ema_p, src_p, 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


# ----------------------------------------------------------------------------- checkpoints

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


# ----------------------------------------------------------------------------- the loop

def _native_bf16() -> bool:
    """True on GPUs with hardware bf16 (Ampere and newer). A T4 only emulates it, slowly, so it gets fp16."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        return torch.cuda.get_device_capability()[0] >= 8


def _amp_settings(amp: str, device: torch.device):
    if device.type != "cuda" or amp == "off":
        if amp in ("bf16", "fp16") and device.type != "cuda":
            warnings.warn(f"amp={amp!r} requested on {device}; mixed precision is only used on CUDA, running in fp32",
                          stacklevel=3)
        return None, None
    if amp == "auto":
        amp = "bf16" if _native_bf16() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


def train(model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor], batches: Iterator, cfg: TrainConfig,
          optimizer: torch.optim.Optimizer | None = None, callback: Callable[[int, float], None] | None = None,
          evaluate: Callable[[int, nn.Module], dict] | None = None) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over batches drawn from ``batches``.

    ``batches`` is an iterator (e.g. :class:`minidiff.data.TensorSampler`); if it has ``state_dict`` /
    ``load_state_dict`` its position is checkpointed too. ``callback(step, loss)`` is called after each step.
    ``evaluate(step, model)`` is called with the EMA model (in eval mode) every ``cfg.eval_every`` steps and at the
    end; its dict goes into ``history["eval"]`` with the step and the training time, which (like ``max_seconds``)
    does not count the time spent evaluating, so curves against wall time show training time.
    See the module docstring for checkpointing, resume and the nan guard.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device = params[0].device
    amp_dtype, scaler = _amp_settings(cfg.amp, device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    fwd_model = torch.compile(model) if cfg.compile else model   # shares parameters with model
    if optimizer is None:
        fused = device.type == "cuda"
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                      **({"fused": True} if fused else {}))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    history = {"step": [], "loss": [], "lr": [], "time": []}
    step, elapsed_before, resumed_from = 0, 0.0, None
    ckpt_dir = Path(cfg.ckpt_dir) if cfg.ckpt_dir is not None else None
    last_ckpt: Path | None = None

    if ckpt_dir is not None:   # half-written temp files of a run that was killed while saving
        for stale in ckpt_dir.glob(".ckpt_*.tmp") if ckpt_dir.is_dir() else []:
            with contextlib.suppress(OSError):
                stale.unlink()
    if ckpt_dir is not None and cfg.resume:
        found = latest_checkpoint(ckpt_dir, map_location=device)
        if found is not None:
            state, last_ckpt = found
            _check_same_run(state.get("config") or {}, cfg, last_ckpt)
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"checkpoint {last_ckpt} does not match this model/optimizer: {e}") from None
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if hasattr(batches, "load_state_dict") and state.get("sampler") is not None:
                batches.load_state_dict(state["sampler"])
            _set_rng_state(state["rng"])
            history = {k: list(v) for k, v in state["history"].items()}
            step = resumed_from = int(state["step"])
            elapsed_before = float(state.get("elapsed", 0.0))

    def checkpoint_state() -> dict:
        return {
            "model": model.state_dict(), "ema": ema.state_dict() if ema else None, "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler else None, "step": step, "history": history, "rng": _rng_state(),
            "sampler": batches.state_dict() if hasattr(batches, "state_dict") else None,
            "elapsed": elapsed(), "config": _plain(asdict(cfg)),
        }

    def write_checkpoint():
        nonlocal last_ckpt
        last_ckpt = save_checkpoint(checkpoint_state(), ckpt_dir / f"ckpt_{step:08d}.pt")
        for old in list_checkpoints(ckpt_dir)[:-cfg.keep]:
            with contextlib.suppress(OSError):
                old.unlink()

    if evaluate is not None and cfg.eval_every is None:
        raise ValueError("evaluate needs cfg.eval_every (how many steps between evaluations)")
    if evaluate is not None:
        history.setdefault("eval", [])
    paused = 0.0   # seconds spent evaluating: not training time

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start - paused

    def run_eval():
        nonlocal paused
        t0 = time.perf_counter()
        target = ema.model if ema is not None else model
        was = target.training
        target.eval()
        with torch.no_grad():
            res = evaluate(step, target)
        target.train(was)
        model.train()
        if not isinstance(res, dict):
            raise TypeError(f"evaluate must return a dict of numbers, got {type(res).__name__}")
        history["eval"].append({"step": step, "time": elapsed(), **{k: float(v) for k, v in res.items()}})
        paused += time.perf_counter() - t0

    model.train()
    t_start = time.perf_counter()
    stopped = "steps"
    running = None
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), desc=cfg.desc, disable=not cfg.progress,
               dynamic_ncols=True, leave=True)
    try:
        while step < cfg.steps:
            seconds = elapsed()   # cumulative training time: earlier calls of a resumed run count too
            if cfg.max_seconds is not None and seconds >= cfg.max_seconds:
                stopped = "time"
                break
            lr = lr_at(step, cfg, seconds)
            for g in optimizer.param_groups:
                g["lr"] = lr
            batch = next(batches)
            if cfg.channels_last:
                batch = _to_channels_last(batch)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
                loss = loss_fn(fwd_model, batch)
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                                f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"loss became {loss_value} at step {step}; training stopped before applying this update, so the "
                    f"weights in memory are those after step {step - 1} and {where}. Try a lower learning rate "
                    f"(now {lr:.3g}), gradient clipping, or check the data for nan/inf.")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update(model)
            step += 1
            running = loss_value if running is None else 0.95 * running + 0.05 * loss_value
            if step % cfg.log_every == 0 or step == cfg.steps:
                history["step"].append(step)
                history["loss"].append(loss_value)
                history["lr"].append(lr)
                history["time"].append(elapsed())
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(step, loss_value)
            if evaluate is not None and step % cfg.eval_every == 0:
                run_eval()
            if ckpt_dir is not None and step % cfg.ckpt_every == 0 and step < cfg.steps:
                write_checkpoint()
        if evaluate is not None and (not history["eval"] or history["eval"][-1]["step"] != step):
            run_eval()
    finally:
        bar.close()
    if ckpt_dir is not None and (last_ckpt is None or not last_ckpt.name.endswith(f"{step:08d}.pt")):
        write_checkpoint()
    model.eval()
    return TrainResult(model=model, ema=ema.model if ema else model, history=history, step=step, stopped=stopped,
                       seconds=elapsed(), checkpoint=last_ckpt,
                       resumed_from=resumed_from)


# Fields that define a run: resuming with other values would silently mix two runs. (steps and max_seconds may
# change: that is how a finished run is extended.)
_RUN_FIELDS = ("lr", "weight_decay", "betas", "warmup", "min_lr_ratio", "grad_clip", "ema_decay", "amp", "seed",
               "anneal_by_time")


def _check_same_run(saved: dict, cfg: TrainConfig, path: Path) -> None:
    now = _plain(asdict(cfg))
    diff = [f"{k}={saved[k]!r} there, {now[k]!r} now" for k in _RUN_FIELDS if k in saved and saved[k] != now[k]]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run ({'; '.join(diff)}). To start afresh, delete "
            f"{path.parent} or pass TrainConfig(resume=False); to continue that run, use its settings.")


def _to_channels_last(batch):
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_channels_last(b) for b in batch)
    return batch


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
