"""The one training loop every chapter uses.

``train(model, loss_fn, batches, cfg)`` runs AdamW with linear warmup and cosine decay, gradient
clipping, an exponential moving average (EMA) of the weights, mixed precision on GPU (bf16 where
supported, else fp16 with a gradient scaler), a step budget and a wall-clock budget, a progress bar with the
running loss (``tqdm.auto``'s widget in a live notebook, plain text elsewhere), and a history for plots.

It is built from three parts, each readable on its own:

- :class:`Step`: one optimisation step (autocast, the nan guard, backward, clipping, optimizer, EMA);
- :class:`Clock`: training time, cumulative across resumes and paused while evaluating or saving;
- :class:`~minidiff.checkpoint.Checkpointer`: the run's checkpoint folder (atomic writes, pruning, resume).

Training state is never lost:

- with ``cfg.ckpt_dir`` set, a checkpoint is written every ``cfg.ckpt_every`` steps and at the end,
  atomically (temp file, fsync, ``os.replace``), keeping the last ``cfg.keep`` files;
- calling ``train`` again with the same ``ckpt_dir`` resumes exactly where it stopped: model, EMA,
  optimizer, LR schedule, gradient scaler, step, history, the batch sampler and every RNG state, so an
  interrupted-and-resumed run ends with the same weights as an uninterrupted one (on CPU);
- checkpoints are read with ``torch.load(weights_only=True)``: a file that carries a pickled object is
  refused, never executed; an unreadable newest file is reported by name and the previous one is used;
- a nan/inf loss or gradient stops training with :class:`TrainingDiverged` *before* the bad update: the weights,
  the optimizer state and the EMA stay those after the previous step, and the last good checkpoint stays intact.
  (Under fp16 mixed precision, a non-finite gradient is the gradient scaler's business instead: it skips that
  update and lowers its scale, as usual.)

The wall-clock budget ``cfg.max_seconds`` is cumulative across resumes: each checkpoint stores the training time
so far (``elapsed``: time spent in training steps, not in evaluation or checkpoint writes, up to that checkpoint),
and a resumed call only trains for what is left of the budget. A run whose budget is already spent returns at once
with ``stopped == "time"``; to train longer, raise ``max_seconds`` (or ``steps``). Work done after the last
checkpoint of an interrupted call is redone on resume, and so is not counted twice. ``anneal_by_time`` follows the
same cumulative clock.

Data parallel: launched by ``torchrun --nproc_per_node=N`` the same call trains on N processes with PyTorch's
``DistributedDataParallel`` (NCCL on GPUs, gloo on the CPU; :mod:`minidiff.distributed`): each rank computes the
loss on its shard of the global batch, the gradients are averaged in ``backward``, rank 0 keeps the EMA, the
progress bar and the checkpoints (with every rank's RNG states), every rank resumes from them, and a nan on one
rank stops all. The loss function receives the DDP-wrapped model: call it (``m(x, t)``), as the diffusion losses do.
Outside torchrun nothing changes. ``python -m minidiff.train --chapter 04_ddpm`` trains a chapter's model from its
profile, so ``torchrun --nproc_per_node=2 -m minidiff.train --chapter 04_ddpm`` is data-parallel training in one
line.

Randomness: ``train`` draws from the global torch RNG (e.g. the noise of a diffusion loss, dropout) and leaves
the data order to ``batches`` (a :class:`minidiff.data.TensorSampler` has its own seed). ``cfg.seed``, when given,
seeds Python, NumPy and torch at the start of a fresh run; a resumed run restores the RNG states of its checkpoint
instead. With ``cfg.seed=None`` (the default) the RNGs are left as the caller seeded them.

Example::

    cfg = TrainConfig(steps=2000, lr=2e-3, ckpt_dir="runs/ddpm")
    result = train(model, lambda m, x: ddpm_loss(m, schedule, x), TensorSampler(data.x, batch_size=128), cfg)
    result.ema  # the EMA copy of the model, for sampling
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from . import distributed
from ._progress import tqdm
from .checkpoint import (CheckpointError, Checkpointer, _rng_state, latest_checkpoint,  # noqa: F401
                         list_checkpoints, load_checkpoint, save_checkpoint)
from .config import seed_everything
from .config.schema import TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became nan or inf; the message names the step and the last good checkpoint."""


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


# ----------------------------------------------------------------------------- the clock

class Clock:
    """Training time in seconds. It starts from ``seconds`` (the ``elapsed`` of the checkpoint a run resumes from,
    so the time is cumulative across resumes), runs between :meth:`start` and :meth:`stop`, and stands still inside
    ``with clock.paused():`` (evaluation, checkpoint writes), so ``max_seconds``, ``anneal_by_time`` and
    ``history["time"]`` count training only."""

    def __init__(self, seconds: float = 0.0):
        self._seconds = float(seconds)   # time banked by earlier calls and earlier running spells
        self._since = None               # perf_counter() when the clock last started; None while stopped

    def start(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            self._seconds += time.perf_counter() - self._since
            self._since = None

    def elapsed(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self._seconds + running

    @contextlib.contextmanager
    def paused(self):
        was_running = self._since is not None
        self.stop()
        try:
            yield self
        finally:
            if was_running:
                self.start()


# ----------------------------------------------------------------------------- the step

def _native_bf16() -> bool:
    """True on GPUs with hardware bf16 (Ampere and newer). A T4 only emulates it, slowly, so it gets fp16."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        return torch.cuda.get_device_capability()[0] >= 8


def _native_cpu_bf16() -> bool:
    """True on CPUs whose instructions do bf16 matrix products natively (AVX512-BF16 or AMX: recent Xeon, Zen 4 and
    newer). Elsewhere bf16 on a CPU is emulated and slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _amp_settings(amp: str, device: torch.device):
    """``(autocast dtype or None, GradScaler or None)`` for ``TrainConfig.amp``: on CUDA ``"auto"`` is bf16 where
    the GPU has it natively, else fp16 with a scaler; on a CPU only an explicit ``"bf16"`` turns autocast on, and only
    where the CPU does bf16 natively (:func:`_native_cpu_bf16`); ``"auto"`` stays fp32 there."""
    if device.type == "cpu" and amp == "bf16":   # the value itself is checked by TrainConfig
        if _native_cpu_bf16():
            return torch.bfloat16, None
        warnings.warn("amp='bf16' requested on a CPU without native bf16 (AVX512-BF16 or AMX); it would be emulated "
                      "and slower, running in fp32", stacklevel=4)
        return None, None
    if device.type != "cuda" or amp == "off":
        if amp == "fp16" and device.type != "cuda":
            warnings.warn(f"amp={amp!r} requested on {device}; fp16 autocast is only used on CUDA, running in fp32",
                          stacklevel=4)
        return None, None
    if amp == "auto":
        amp = "bf16" if _native_bf16() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


def _to_channels_last(batch):
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_channels_last(b) for b in batch)
    return batch


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if hasattr(nn.utils, "get_total_norm"):
        return nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class Step:
    """One optimisation step, and what it updates: the model, the optimizer (AdamW unless one is given), the
    gradient scaler (fp16 only) and the EMA.

    ``step(batch, lr, n)`` sets the learning rate, computes ``loss_fn(model, batch)`` under autocast, back-propagates,
    clips the gradient norm to ``cfg.grad_clip``, steps the optimizer and updates the EMA; it returns the loss as a
    float. ``n`` is the number of steps done before this one (the step's index from 0, for messages). A nan/inf
    loss (checked before backward) or gradient norm (checked before the optimizer) raises :class:`TrainingDiverged`
    and changes nothing: a bad gradient is dropped, and weights, optimizer state and EMA stay as they were.
    ``checkpointer`` only serves that message (it names the last good checkpoint)."""

    def __init__(self, model: nn.Module, loss_fn: Callable, cfg: TrainConfig,
                 optimizer: torch.optim.Optimizer | None = None, checkpointer: Checkpointer | None = None):
        self.model, self.loss_fn, self.checkpointer = model, loss_fn, checkpointer
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.device = self.params[0].device
        self.amp_dtype, self.scaler = _amp_settings(cfg.amp, self.device)
        self.channels_last, self.grad_clip = cfg.channels_last, cfg.grad_clip
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        # under torchrun: DistributedDataParallel around the model (gradients averaged over the ranks in backward)
        self.world = distributed.world_size()
        wrapped = distributed.wrap(model)
        self.forward_model = torch.compile(wrapped) if cfg.compile else wrapped   # shares parameters with model
        if optimizer is None:
            fused = {"fused": True} if self.device.type == "cuda" else {}
            optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                          **fused)
        self.optimizer = optimizer
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None and distributed.is_main() else None

    def __call__(self, batch, lr: float, n: int) -> float:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if self.channels_last:
            batch = _to_channels_last(batch)
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None \
            else contextlib.nullcontext()
        with autocast:
            loss = self.loss_fn(self.forward_model, batch)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                            f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
        loss_value = float(loss.detach())
        if self.world > 1:     # one all-reduce: the loss averaged over the ranks, and any rank's nan stops all
            local = loss_value
            loss_value, bad = distributed.mean_and_any(local, not math.isfinite(local))
            if bad:
                raise self._diverged(f"loss became nan or inf on at least one of {self.world} ranks (here {local})",
                                     n, lr)
        elif not math.isfinite(loss_value):
            raise self._diverged(f"loss became {loss_value}", n, lr)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        elif self.scaler is None:
            norm = _grad_norm(self.params)
        if self.scaler is not None:      # fp16: the scaler skips a non-finite update and lowers its scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if not math.isfinite(norm_value := float(norm)):
                self.optimizer.zero_grad(set_to_none=True)
                raise self._diverged(f"gradient norm became {norm_value}", n, lr)
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss_value

    def _diverged(self, what: str, n: int, lr: float) -> TrainingDiverged:
        last = self.checkpointer.last if self.checkpointer is not None else None
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return TrainingDiverged(
            f"{what} at step {n}; training stopped before applying this update, so the weights, optimizer state and "
            f"EMA in memory are those after the {n} steps done before it, and {where}. Try a lower learning rate "
            f"(now {lr:.3g}), gradient clipping, or check the data for nan/inf.")


# ----------------------------------------------------------------------------- the loop

def train(model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor], batches: Iterator, cfg: TrainConfig,
          optimizer: torch.optim.Optimizer | None = None, callback: Callable[[int, float], None] | None = None,
          evaluate: Callable[[int, nn.Module], dict] | None = None) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over batches drawn from ``batches``.

    ``batches`` is an iterator (e.g. :class:`minidiff.data.TensorSampler`); if it has ``state_dict`` /
    ``load_state_dict`` its position is checkpointed too. ``callback(step, loss)`` is called after each step.
    ``evaluate(step, model)`` is called with the EMA model (in eval mode) every ``cfg.eval_every`` steps and at the
    end; its dict goes into ``history["eval"]`` with the step and the training time, which (like ``max_seconds``)
    does not count the time spent evaluating, so curves against wall time show training time.
    See the module docstring for checkpointing, resume, seeding and the nan guard.
    """
    _check_arguments(model, cfg, evaluate)
    parallel = distributed.setup()      # under torchrun: the process group (a no-op in one process)
    main = distributed.is_main()
    ckpt = Checkpointer(cfg.ckpt_dir, keep=cfg.keep, write=main)   # every rank reads, rank 0 writes
    step_fn = Step(model, loss_fn, cfg, optimizer, checkpointer=ckpt)
    parts = {"model": model, "ema": step_fn.ema, "optimizer": step_fn.optimizer, "scaler": step_fn.scaler,
             "sampler": batches}
    resumed = ckpt.resume(parts, cfg, map_location=step_fn.device, rank=distributed.rank(),
                          world_size=distributed.world_size()) if cfg.resume else None
    if resumed is None and cfg.seed is not None:
        seed_everything(cfg.seed)   # a fresh run; a resumed one got its RNG states back from the checkpoint
    start = resumed or {"step": 0, "history": {"step": [], "loss": [], "lr": [], "time": []}, "elapsed": 0.0}
    step = int(start["step"])
    history = {k: list(v) for k, v in start["history"].items()}
    if evaluate is not None:
        history.setdefault("eval", [])
    clock = Clock(float(start.get("elapsed", 0.0)))
    stopped, running = "steps", None
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), desc=cfg.desc, disable=not (cfg.progress and main),
               dynamic_ncols=True, leave=True)

    def save():     # every rank takes part (its RNG states go into rank 0's file); rank 0 writes
        with clock.paused():
            ckpt.save(parts, step=step, history=history, elapsed=clock.elapsed(), config=cfg,
                      rng_ranks=distributed.gather(_rng_state()) if parallel else None)

    model.train()
    clock.start()
    try:
        while step < cfg.steps:
            seconds = clock.elapsed()   # cumulative training time: earlier calls of a resumed run count too
            if parallel and (cfg.max_seconds is not None or cfg.anneal_by_time):
                seconds = distributed.mean(seconds)   # one clock for all ranks, so all stop at the same step
            if cfg.max_seconds is not None and seconds >= cfg.max_seconds:
                stopped = "time"
                break
            lr = lr_at(step, cfg, seconds)
            loss = step_fn(next(batches), lr, step)
            step += 1
            running = loss if running is None else 0.95 * running + 0.05 * loss
            if step % cfg.log_every == 0 or step == cfg.steps:
                for key, value in (("step", step), ("loss", loss), ("lr", lr), ("time", clock.elapsed())):
                    history[key].append(value)
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(step, loss)
            if evaluate is not None and step % cfg.eval_every == 0 and main:
                _evaluate(evaluate, step, model, step_fn.ema, history, clock)
            if step % cfg.ckpt_every == 0 and step < cfg.steps:
                save()
        if evaluate is not None and main and (not history["eval"] or history["eval"][-1]["step"] != step):
            _evaluate(evaluate, step, model, step_fn.ema, history, clock)
    finally:
        clock.stop()
        bar.close()
    if not ckpt.holds(step):
        save()
    distributed.barrier()     # rank 0's last checkpoint is on disk before any rank returns
    model.eval()
    return TrainResult(model=model, ema=step_fn.ema.model if step_fn.ema else model, history=history, step=step,
                       stopped=stopped, seconds=clock.elapsed(), checkpoint=ckpt.last,
                       resumed_from=int(resumed["step"]) if resumed else None)


def _check_arguments(model, cfg, evaluate) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if evaluate is not None and cfg.eval_every is None:
        raise ValueError("evaluate needs cfg.eval_every (how many steps between evaluations)")


def _evaluate(evaluate, step: int, model: nn.Module, ema: EMA | None, history: dict, clock: Clock) -> None:
    """``evaluate(step, m)`` on the EMA model (else the model) in eval mode without gradients, its numbers into
    ``history["eval"]``; the clock stands still meanwhile (evaluation is not training time)."""
    with clock.paused():
        target = ema.model if ema is not None else model
        was = target.training
        target.eval()
        with torch.no_grad():
            res = evaluate(step, target)
        target.train(was)
        model.train()
        if not isinstance(res, dict):
            raise TypeError(f"evaluate must return a dict of numbers, got {type(res).__name__}")
        history["eval"].append({"step": step, "time": clock.elapsed(), **{k: float(v) for k, v in res.items()}})


# ----------------------------------------------------------------------------- python -m minidiff.train

def _chapter_04_ddpm(profile, device, steps: int | None, ckpt_dir, seed: int):
    """Chapter 04's U-Net on its digits with eq. 14, as the chapter trains it (its profile's sizes)."""
    from . import data
    from .diffusion import ddpm, schedules
    from .nets import UNet

    D = profile.ddpm
    train_set = data.load_images(D.dataset, "train", device=device)
    sched = schedules.make_schedule(D.schedule, D.T).to(device)
    torch.manual_seed(seed)             # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = UNet(in_channels=train_set.x.shape[1], base_channels=D.base_channels, channel_mults=D.channel_mults,
                 attention=D.attention, patch=D.patch).to(device)
    cfg = D.train_config(desc="DDPM (chapter 04)", ckpt_dir=ckpt_dir, seed=seed,
                         **({"steps": steps, "max_seconds": None} if steps else {}))
    return train(model, lambda m, x: ddpm.ddpm_loss(m, sched, x, prediction=D.prediction, weighting=D.weighting),
                 data.TensorSampler(train_set.x, batch_size=D.batch, seed=seed), cfg)


CHAPTERS = {"04_ddpm": _chapter_04_ddpm}


def main(argv=None) -> int:
    """``python -m minidiff.train --chapter 04_ddpm [--steps N] [--ckpt-dir DIR]``: train a chapter's model from
    its profile (``$MINIDIFF_PROFILE``). Under ``torchrun --nproc_per_node=N -m minidiff.train ...`` it trains
    data-parallel on N processes; run again with the same folder, it resumes."""
    import argparse

    from . import config

    ap = argparse.ArgumentParser(prog="python -m minidiff.train", description=main.__doc__.split("\n")[0])
    ap.add_argument("--chapter", required=True, choices=sorted(CHAPTERS), help="whose model to train")
    ap.add_argument("--steps", type=int, default=None, help="a step budget instead of the profile's (no time limit)")
    ap.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default: config.checkpoint_dir of the "
                    "chapter's run; none in the ci profile)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be positive, got {args.steps}")
    parallel = distributed.setup()
    profile = config.get_profile()
    device = distributed.device() if parallel else config.device()
    ckpt_dir = args.ckpt_dir or config.checkpoint_dir(f"{args.chapter}/torchrun")
    run = CHAPTERS[args.chapter](profile, device, args.steps, ckpt_dir, args.seed)
    if distributed.is_main():
        world = distributed.world_size()
        print(f"{args.chapter}: {run.step} steps in {run.seconds:.1f} s on {world} process{'es' * (world > 1)} "
              f"({profile.name} profile, {device}); final loss {run.history['loss'][-1]:.4f}; "
              f"checkpoint {run.checkpoint or 'not kept (no folder)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
