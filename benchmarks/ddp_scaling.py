"""Data-parallel scaling of chapter 04's training step on this machine: one process against two (torchrun, gloo).

    python benchmarks/ddp_scaling.py [--steps 30] [--repeats 3] [--profile cpu] [--out ...ddp_scaling.json]

The workload is chapter 04's U-Net and loss at the profile's sizes and global batch. Three ways to spend the
machine's cores are timed in the same run: one process with one thread, one process with two threads (torch's
intra-op parallelism), and two processes with one thread each under ``torchrun`` (DistributedDataParallel over gloo,
each rank on half the batch). Reported: images per second, the speed-up over one process with one thread, the
bytes all-reduced per step (the fp32 gradients: 4 bytes a parameter) and the time an all-reduce of that many bytes
takes between the two processes, as a share of a step (an upper bound of what DDP cannot hide behind the backward
pass). The JSON goes to the reference folder that chapter 12 and the results page read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _workload(profile_name: str):
    from minidiff import config, data
    from minidiff.diffusion import ddpm, schedules
    from minidiff.nets import UNet, count_parameters

    D = config.get_profile(profile_name).ddpm
    x = data.load_images(D.dataset, "train").x
    sched = schedules.make_schedule(D.schedule, D.T)
    torch.manual_seed(0)
    model = UNet(in_channels=x.shape[1], base_channels=D.base_channels, channel_mults=D.channel_mults,
                 attention=D.attention, patch=D.patch)
    loss = lambda m, b: ddpm.ddpm_loss(m, sched, b, prediction=D.prediction, weighting=D.weighting)  # noqa: E731
    cfg = D.train_config(progress=False, compile=False, amp="off")
    return D, x, model, loss, cfg, count_parameters(model)


def time_steps(profile_name: str, steps: int, warmup: int = 5) -> dict:
    """Median seconds per training step (the package's Step: DDP under torchrun) of chapter 04's model."""
    from minidiff import data, distributed
    from minidiff.train import Step

    distributed.setup()
    D, x, model, loss, cfg, n_params = _workload(profile_name)
    step = Step(model, loss, cfg)
    batches = data.TensorSampler(x, batch_size=D.batch, seed=0)
    times = []
    for i in range(warmup + steps):
        distributed.barrier()
        t0 = time.perf_counter()
        step(next(batches), cfg.lr, i)
        dt = distributed.mean(time.perf_counter() - t0)
        if i >= warmup:
            times.append(dt)
    out = {"step_s": statistics.median(times), "batch": D.batch, "params": n_params}
    if distributed.active():                 # an all-reduce of the gradients' bytes, alone
        import torch.distributed as dist

        flat = torch.zeros(n_params)
        reps = []
        for _ in range(20):
            distributed.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            reps.append(time.perf_counter() - t0)
        out["allreduce_s"] = statistics.median(reps[3:])
    return out


def worker(args) -> int:
    torch.set_num_threads(args.threads)
    res = time_steps(args.profile, args.steps)
    from minidiff import distributed

    if distributed.is_main():
        Path(args.result).write_text(json.dumps(res))
    return 0


def run_config(procs: int, threads: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--steps", str(args.steps),
               "--profile", args.profile, "--result", str(result)]
        if procs > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                   *cmd[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        res = json.loads(result.read_text())
    res.update(processes=procs, threads=threads, images_per_s=res["batch"] / res["step_s"])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="launches of each configuration (median and range)")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "minidiff" / "assets" / "reference" / "ddp_scaling.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    rows = []
    for procs, threads in ((1, 1), (1, 2), (2, 1)):      # interleaved repeats would share the machine's drift
        runs = [run_config(procs, threads, args) for _ in range(args.repeats)]
        row = dict(runs[0])
        for key in ("step_s", "images_per_s", "allreduce_s"):
            if key in row:
                row[key] = statistics.median(r[key] for r in runs)
        row["images_per_s_range"] = [min(r["images_per_s"] for r in runs), max(r["images_per_s"] for r in runs)]
        row["repeats"] = len(runs)
        rows.append(row)
    base = rows[0]["images_per_s"]
    print(f"chapter 04's U-Net, {args.profile} profile: global batch {rows[0]['batch']}, "
          f"{rows[0]['params']:,} parameters = {4 * rows[0]['params'] / 1e6:.2f} MB of fp32 gradients a step")
    print(f"{'processes x threads':>20s} {'s / step':>9s} {'images / s (range)':>22s} {'speed-up':>9s} "
          f"{'all-reduce share':>17s}")
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
        share = r.get("allreduce_s", 0.0) / r["step_s"]
        if "allreduce_s" in r:
            r["allreduce_share"] = share
        lo, hi = r["images_per_s_range"]
        print(f"{r['processes']:>11d} x {r['threads']:<6d} {r['step_s']:9.3f} {r['images_per_s']:8.1f} ({lo:.0f}-{hi:.0f})"
              f"{'':>2s}"
              f"{r['speedup']:8.2f}x {(f'{100 * share:.1f}%' if 'allreduce_s' in r else '-'):>17s}")
    record = {"benchmark": "ddp_scaling",
              "command": ("python benchmarks/ddp_scaling.py " + " ".join(argv or sys.argv[1:])).strip(),
              "date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "torch": torch.__version__, "profile": args.profile, "steps": args.steps, "runs": rows,
              "gradient_bytes": 4 * rows[0]["params"]}
    for r in rows:                      # each run says how it was made, as every shipped reference run does
        r.update(command=record["command"], date=record["date"])
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
