"""A small training run for tests/test_distributed.py, launched under torchrun or in one process.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_target.py OUT --steps 12 [--stop-at 8]
        [--ckpt DIR] [--batch 16]

Chapter 04's loss (eq. 14) on 2-D points with a TimeMLP, the time step and the noise of each example fixed in the
data (``ddpm_loss`` takes them), so no random number depends on how many processes share the batch. Each rank writes
its final weights to ``OUT/weights-rank<r>.pt`` and every checkpoint file it writes to ``OUT/writes-rank<r>.txt``;
``--stop-at S`` ends every rank abruptly (``os._exit``, as a kill would) right after step S.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

from minidiff import checkpoint, data, distributed
from minidiff.diffusion import ddpm, schedules
from minidiff.nets import TimeMLP
from minidiff.train import TrainConfig, train

N_POINTS, T = 256, 50


def dataset():
    """Points, and a time step and a noise vector for each (fixed by the data, not by the process)."""
    g = torch.Generator().manual_seed(1)
    x = data.toy_2d("moons", N_POINTS, seed=0)
    return x, torch.randint(0, T, (N_POINTS,), generator=g), torch.randn(N_POINTS, 2, generator=g)


def make_model():
    torch.manual_seed(0)
    return TimeMLP(dim=2, hidden=32, depth=2)


def config(steps, ckpt=None):
    return TrainConfig(steps=steps, lr=1e-2, warmup=2, ema_decay=0.9, ckpt_dir=ckpt, ckpt_every=5, seed=0,
                       progress=False, log_every=1)


def run(steps, batch, ckpt=None, callback=None, world_size=None, rank=None):
    sched = schedules.make_schedule("linear", T)
    x, t, noise = dataset()
    model = make_model()
    batches = data.TensorSampler(x, t, noise, batch_size=batch, seed=0, rank=rank, world_size=world_size)
    loss = lambda m, b: ddpm.ddpm_loss(m, sched, b[0], t=b[1], noise=b[2])  # noqa: E731
    return train(model, loss, batches, config(steps, ckpt), callback=callback)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--stop-at", type=int, default=None)
    ap.add_argument("--ckpt", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    distributed.setup()
    rank = distributed.rank()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"writes-rank{rank}.txt"
    log.touch()
    save = checkpoint.save_checkpoint

    def recorded(state, path):                     # every checkpoint file this rank writes
        with log.open("a") as f:
            f.write(f"{path}\n")
        return save(state, path)

    checkpoint.save_checkpoint = recorded

    def stop(step, loss):
        if args.stop_at is not None and step == args.stop_at:
            sys.stdout.flush()
            os._exit(17)                           # no cleanup, no final checkpoint: as if killed

    result = run(args.steps, args.batch, args.ckpt, callback=stop)
    ema = result.ema.state_dict() if result.ema is not result.model else None
    torch.save({"model": result.model.state_dict(), "ema": ema, "step": result.step,
                "loss": result.history["loss"]}, args.out / f"weights-rank{rank}.pt")


if __name__ == "__main__":
    main()
