"""Which training levers make the pixel-space U-Net reach digits fastest on a CPU (issue 18, target 1).

    .venv/bin/python benchmarks/unet_recipe.py --recipes base min_snr v_min_snr --seeds 0 --budget 300
    .venv/bin/python benchmarks/unet_recipe.py --table              # the table of every run recorded so far

Every recipe trains the U-Net of ``benchmarks/time_to_quality.py`` on the 4,000 MNIST-5k training digits for
``--budget`` seconds of wall-clock time (a fresh process limited to ``--threads`` threads, the learning rate annealed
by time), then draws ``--samples`` digits with DPM-Solver++(2M) SDE and with DDIM (50 network calls each), scored by
minidiff's feature FID against the 1,000 held-out digits and by the shipped classifier's confidence.

A recipe is the base recipe (``BASE``) with a few fields changed (``RECIPES``): one lever at a time, so the table
reads as an ablation. Each run is appended to ``benchmarks/results/unet_recipe.json`` (one row per recipe, seed,
budget and thread count; a rerun replaces its row), and the table gives the median FID over the seeds recorded with
the spread (min-max). Run one recipe at a time and nothing else on the machine: the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "unet_recipe.json"

# the recipe of benchmarks/time_to_quality.py before this study: chapter 04's cpu-profile U-Net at T = 1000
BASE = dict(T=1000, schedule="cosine", prediction="eps", weighting="none", snr_gamma=5.0, base_channels=32,
            channel_mults=(1, 2), patch=2, attention=False, num_res_blocks=1, batch=64, lr=2e-3, warmup=100,
            min_lr_ratio=0.1, ema_decay=0.995, grad_clip=1.0, net="minidiff", amp="off")

RECIPES = {
    "base": {},
    "min_snr": dict(weighting="min_snr"),
    "v": dict(prediction="v"),
    "v_min_snr": dict(prediction="v", weighting="min_snr"),
    "x0_min_snr": dict(prediction="x0", weighting="min_snr"),
    "gamma_2": dict(snr_gamma=2.0),
    "gamma_10": dict(snr_gamma=10.0),
    "lr_3e-3": dict(lr=3e-3),
    "lr_1e-3": dict(lr=1e-3),
    "batch_32": dict(batch=32),
    "batch_128": dict(batch=128, lr=3e-3),
    "ema_0.999": dict(ema_decay=0.999),
    "ema_0.99": dict(ema_decay=0.99),
    "width_48": dict(base_channels=48),
    "width_24": dict(base_channels=24),
    "mults_122": dict(channel_mults=(1, 2, 2)),
    "T_200": dict(T=200),
    "min_lr_0": dict(min_lr_ratio=0.0),
    "warmup_20": dict(warmup=20),
    # the same recipe on diffusers' UNet2DModel of about the same size (block channels (32, 64), one ResNet block per
    # level, no attention, on the same 2x2 space-to-depth input): what the implementation buys, recipe held fixed
    "diffusers_net": dict(net="diffusers"),
    # bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX): the same network, more steps in the same seconds
    "bf16": dict(amp="bf16"),
}


def recipe(name: str) -> dict:
    """``BASE`` with the changes of ``name``, which may join several recipes with ``+`` (``v_min_snr+lr_3e-3``)."""
    out = dict(BASE)
    for part in name.split("+"):
        if part not in RECIPES:
            raise SystemExit(f"unknown recipe {part!r}; known: {', '.join(RECIPES)}")
        out.update(RECIPES[part])
    return out


def DiffusersUNet(R: dict):
    """diffusers' ``UNet2DModel`` behind minidiff's ``model(x, t)`` call, on the same 2x2 space-to-depth input."""
    import torch.nn.functional as F
    from diffusers import UNet2DModel
    from torch import nn

    p, n = R["patch"], len(R["channel_mults"])

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = UNet2DModel(sample_size=28 // p, in_channels=p * p, out_channels=p * p,
                                   layers_per_block=R["num_res_blocks"],
                                   block_out_channels=tuple(R["base_channels"] * m for m in R["channel_mults"]),
                                   down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                                   norm_num_groups=8)

        def forward(self, x, t):
            return F.pixel_shuffle(self.net(F.pixel_unshuffle(x, p), t).sample, p)

    return Wrapped()


def worker(name: str, seed: int, budget: float, samples: int) -> dict:
    import torch

    from minidiff import config, data
    from minidiff.diffusion import ddpm, schedules
    from minidiff.nets import count_parameters
    from minidiff.train import TrainConfig, train

    R = recipe(name)
    config.seed_everything(seed)
    x = data.load_images("mnist5k", "train", profile="cpu").x
    sched = schedules.make_schedule(R["schedule"], R["T"])
    net = build_net(R)

    def loss(m, b):
        return ddpm.ddpm_loss(m, sched, b, prediction=R["prediction"], weighting=R["weighting"],
                              snr_gamma=R["snr_gamma"])

    res = train(net, loss, data.TensorSampler(x, batch_size=R["batch"], seed=seed),
                TrainConfig(steps=10**7, lr=R["lr"], warmup=R["warmup"], min_lr_ratio=R["min_lr_ratio"],
                            ema_decay=R["ema_decay"], grad_clip=R["grad_clip"], max_seconds=budget, amp=R["amp"],
                            anneal_by_time=True, seed=seed, progress=False))
    out = {"recipe": name, "seed": seed, "budget_s": budget, "threads": torch.get_num_threads(),
           "params": count_parameters(net), "steps": res.step, "train_seconds": res.seconds,
           "final_loss": float(sum(res.history["loss"][-50:]) / len(res.history["loss"][-50:])),
           "settings": {k: v for k, v in R.items()}, "fid": {}, "confidence": {}, "sample_seconds": {}}
    ema = res.ema.eval()
    out["_ema"] = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}   # kept for --resample
    evaluate(out, ema, R, seed, samples)
    return out


def build_net(R: dict):
    """The recipe's network: minidiff's ``UNet`` or, for ``net="diffusers"``, :func:`DiffusersUNet`."""
    from minidiff.nets import UNet

    if R["net"] == "diffusers":
        return DiffusersUNet(R)
    return UNet(1, R["base_channels"], R["channel_mults"], num_res_blocks=R["num_res_blocks"],
                attention=R["attention"], patch=R["patch"])


def samplers(ema, R: dict) -> dict:
    """The samplers every run is scored with, 50 network calls each: DPM-Solver++(2M) SDE on its default quadratic
    grid and on a uniform one, DDIM (eta = 0, deterministic) and DDPM-style ancestral sampling (DDIM with eta = 1),
    both on a uniform grid. Each takes ``(n, generator)`` and returns ``n`` images."""
    from minidiff.diffusion import ddim, dpm_solver, schedules

    sched = schedules.make_schedule(R["schedule"], R["T"])
    common = dict(prediction=R["prediction"], clip_x0=True, progress=False)
    shape = lambda n: (n, 1, 28, 28)  # noqa: E731
    return {
        "dpmpp2m_sde50": lambda n, g: dpm_solver.dpmpp_2m_sample(ema, sched, shape(n), steps=50, sde=True,
                                                                 generator=g, **common),
        "ddim50": lambda n, g: ddim.ddim_sample(ema, sched, shape(n), steps=50, generator=g, **common),
        "dpmpp2m_sde50_uniform": lambda n, g: dpm_solver.dpmpp_2m_sample(ema, sched, shape(n), steps=50, sde=True,
                                                                         spacing="uniform", generator=g, **common),
        "ancestral50": lambda n, g: ddim.ddim_sample(ema, sched, shape(n), steps=50, eta=1.0, generator=g, **common),
    }


def evaluate(out: dict, ema, R: dict, seed: int, samples: int, only=None) -> None:
    """Draw ``samples`` digits with each sampler (or those in ``only``) and record FID against the held-out digits,
    the classifier's confidence and the sampling time in ``out``; the first 64 DPM-Solver++ digits go to
    ``out["_samples"]``."""
    import torch

    from minidiff import data, metrics

    heldout = metrics.Reference(data.load_images("mnist5k", "test", profile="cpu").x)
    for key, draw in samplers(ema, R).items():
        if only is not None and key not in only:
            continue
        g = torch.Generator().manual_seed(seed + 1)
        t0 = time.perf_counter()
        with torch.no_grad():
            s = torch.cat([draw(min(250, samples - i), g) for i in range(0, samples, 250)]).clamp(-1, 1)
        out["sample_seconds"][key] = time.perf_counter() - t0
        out["fid"][key] = metrics.fid(s, heldout)
        out["confidence"][key] = metrics.classifier_confidence(s)["mean_max_prob"]
        if key == "dpmpp2m_sde50":
            out["_samples"] = s[:64]


def resample(name: str, seed: int, budget: float, threads: int, samples: int) -> dict:
    """Score a cached run's EMA weights with every sampler of :func:`samplers` that its row lacks (no training)."""
    import torch

    R = recipe(name)
    cached = torch.load(_cache(name, seed, budget, threads), weights_only=False)
    if "_ema" not in cached:
        raise SystemExit(f"{name} seed {seed}: the cached run has no weights (it predates --resample); retrain it")
    row = next(r for r in _load() if (r["recipe"], r["seed"], r["budget_s"], r["threads"]) ==
               (name, seed, budget, threads))
    net = build_net(R)
    net.load_state_dict(cached["_ema"])
    missing = [k for k in samplers(net, R) if k not in row["fid"]]
    evaluate(row, net.eval(), R, seed, samples, only=missing)
    row.pop("_samples", None)
    return row


def _cache(name: str, seed: int, budget: float, threads: int) -> Path:
    return HERE / ".cache" / f"unet_recipe_{name}_{seed}_{budget:g}_{threads}.pt"


def load_runs(path: Path) -> list[dict]:
    """The runs recorded in a benchmark's JSON (none before the first)."""
    return json.loads(path.read_text())["runs"] if path.exists() else []


def record_run(path: Path, run: dict, key: tuple[str, ...], header: dict) -> list[dict]:
    """Add ``run`` to the JSON at ``path`` (replacing a run equal on the fields ``key``), with ``header`` and the
    machine, torch and Python versions, written atomically; returns all runs."""
    import platform

    import torch

    runs = [q for q in load_runs(path) if tuple(q[k] for k in key) != tuple(run[k] for k in key)] + [run]
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**header, "machine": machine(), "torch": torch.__version__,
                               "python": platform.python_version(), "runs": runs}, indent=1, default=list))
    os.replace(tmp, path)
    return runs


def _load() -> list[dict]:
    return load_runs(RESULTS)


def table(runs: list[dict], budget: float | None = None) -> str:
    """Median FID (DPM-Solver++(2M) SDE, 50 calls) per recipe over its seeds, with the spread."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if budget is None or r["budget_s"] == budget:
            groups.setdefault((r["recipe"], r["budget_s"], r["threads"]), []).append(r)
    lines = [f"{'recipe':<28}{'budget':>7}{'thr':>4}{'seeds':>6}{'steps':>7}{'FID dpm++':>11}{'spread':>15}"
             f"{'FID ddim':>10}{'conf':>6}{'unif':>7}{'anc':>7}"]
    for (name, b, thr), rs in sorted(groups.items(), key=lambda kv: statistics.median(
            r["fid"]["dpmpp2m_sde50"] for r in kv[1])):
        f = [r["fid"]["dpmpp2m_sde50"] for r in rs]
        lines.append(f"{name:<28}{b:>7g}{thr:>4}{len(rs):>6}{statistics.median(r['steps'] for r in rs):>7g}"
                     f"{statistics.median(f):>11.1f}{f'{min(f):.1f}-{max(f):.1f}':>15}"
                     f"{statistics.median(r['fid']['ddim50'] for r in rs):>10.1f}"
                     f"{statistics.median(r['confidence']['dpmpp2m_sde50'] for r in rs):>6.2f}"
                     + "".join(f"{statistics.median(v):>7.1f}" if (v := [r["fid"][k] for r in rs if k in r["fid"]])
                               else f"{'-':>7}" for k in ("dpmpp2m_sde50_uniform", "ancestral50")))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["base"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--table", action="store_true", help="print the table of the recorded runs and stop")
    ap.add_argument("--resample", action="store_true",
                    help="no training: score the cached weights of each recipe and seed with the samplers its row lacks")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        print(table(_load()))
        return
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        r = worker(args.worker, args.seeds[0], args.budget, args.samples)
        torch.save(r, args.out)
        return
    if args.resample:
        import torch

        torch.set_num_threads(args.threads)
        header = json.loads(RESULTS.read_text())
        header = {k: header[k] for k in ("benchmark", "base", "recipes")}
        for name in args.recipes:
            for seed in args.seeds:
                row = resample(name, seed, args.budget, args.threads, args.samples)
                record_run(RESULTS, row, ("recipe", "seed", "budget_s", "threads"), header)
                print(f"[{name} seed {seed}] " + ", ".join(f"{k} {v:.1f}" for k, v in row["fid"].items()), flush=True)
        print(table(_load()))
        return
    for name in args.recipes:
        if recipe(name)["net"] == "diffusers":                 # unknown names fail before any training
            sys.path.insert(0, str(HERE))
            from time_to_quality import ensure_peers

            ensure_peers()                                      # diffusers into benchmarks/.peers (first run only)
    for name in args.recipes:
        for seed in args.seeds:
            import torch

            out = _cache(name, seed, args.budget, args.threads)
            out.parent.mkdir(exist_ok=True)
            r = run_worker(__file__, name, seed, args, out, extra_path=(HERE / ".peers" / "site",))
            grid = r.pop("_samples")
            r.pop("_ema")                                        # the weights stay in the cache, not in the JSON
            save_grid(grid, HERE / ".cache" / f"unet_recipe_{name}_{seed}_{args.budget:g}.png")
            if seed == min(args.seeds):                          # the page shows the first seed's digits
                save_grid(grid, HERE / "results" / f"unet_recipe_{name}_{args.budget:g}s.png")
            r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            r["command"] = (f"python benchmarks/unet_recipe.py --recipes {name} --seeds {seed} --budget "
                            f"{args.budget:g} --threads {args.threads} --samples {args.samples}")
            record_run(RESULTS, r, ("recipe", "seed", "budget_s", "threads"),
                       {"benchmark": "unet_recipe", "base": BASE, "recipes": RECIPES})
            print(f"[{name} seed {seed}] {r['steps']} steps, FID dpm++ {r['fid']['dpmpp2m_sde50']:.1f}, "
                  f"ddim {r['fid']['ddim50']:.1f}, conf {r['confidence']['dpmpp2m_sde50']:.2f}", flush=True)
    print(table(_load()))


def run_worker(script: str, name: str, seed: int, args, out: Path, extra_path=(), extra_args=()) -> dict:
    """Train and score one run of ``script`` (its ``--worker`` mode) in a fresh process limited to ``args.threads``
    threads, with checkpoints off and no network; returns the dict the worker saved to ``out``."""
    import torch

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               MINIDIFF_CHECKPOINT_DIR="off", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), *map(str, extra_path)]))
    budget = f" {args.budget:g} s" if args.budget else ""      # a budget in steps (dit_sweep.py) is the worker's
    print(f"[{name} seed {seed}] training{budget} on {args.threads} thread(s) ...", flush=True)
    subprocess.run([sys.executable, script, "--worker", name, "--seeds", str(seed), "--budget", str(args.budget),
                    "--threads", str(args.threads), "--samples", str(args.samples), "--out", str(out),
                    *extra_args],
                   env=env, check=True)
    return torch.load(out, weights_only=False)


def add_sweep_args(ap) -> None:
    """The flags every reference sweep shares: seeds, threads, samples, --table, and the worker's own."""
    import argparse

    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--table", action="store_true", help="print the table of the recorded runs and stop")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)


def machine() -> str:
    import platform

    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def save_grid(x, path: Path) -> None:
    """Images in [-1, 1] as one PNG, 10 per row for 100 images (a guided 0-9 grid), else 8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torchvision

    grid = torchvision.utils.make_grid((x + 1) / 2, nrow=10 if x.shape[0] == 100 else 8, padding=1)[0]
    plt.imsave(path, grid.numpy(), cmap="gray", vmin=0, vmax=1)


if __name__ == "__main__":
    main()
