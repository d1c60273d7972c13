"""Chapter 09's reference sweep: DiT conditionings at equal compute and DiT sizes at equal steps, over seeds.

    .venv/bin/python benchmarks/dit_sweep.py --seeds 0 1 2      # the shipped sweep: 18 runs, about 50 minutes
    .venv/bin/python benchmarks/dit_sweep.py --table          # the table of every run recorded so far

Every model of :func:`minidiff.recipes.dit_models` with the ``cpu`` profile's chapter-09 section (``minidiff.config``
profile ``cpu``, section ``dit``): the base DiT with each of the four conditionings (adaLN-Zero, adaLN, in-context,
cross-attention), each trained for the base model's compute (:func:`minidiff.recipes.dit_steps`), and the scaling
sizes at equal steps. All train class-conditionally on the latents of chapter 10's autoencoder
(:func:`minidiff.recipes.shared_autoencoder`, seed 0, trained once and kept in ``benchmarks/.cache``) in a fresh
process limited to ``--threads`` threads, then draw ``--samples`` digits (as many of each label, the conditional model,
the profile's sampler). Recorded per run: training steps and seconds, forward GFLOPs per image, the training loss
(logged every ``log_every`` steps: ``final_loss`` is the mean of the last 200 logged values, ``loss_curve`` the
means of chunks of 100 values, by the chunk's first index), feature FID against the 1,000 held-out digits, the
shipped classifier's confidence and the fraction it reads as the requested label. Runs are appended to
``minidiff/assets/reference/dit_sweep.json`` (a rerun replaces its row; :mod:`minidiff.reference` loads it);
chapter 09 plots that file and ``tests/test_results_page.py`` checks the chapter's sentences against it. Run it
with nothing else on the machine: the training seconds are recorded too.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "minidiff" / "assets" / "reference" / "dit_sweep.json"   # shipped: chapter 09 plots it
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from unet_recipe import add_sweep_args, load_runs, record_run, run_worker, save_grid  # noqa: E402


def section():
    """The ``cpu`` profile's chapter-09 section: the recipe and the models of every run."""
    from minidiff.config import get_profile

    return get_profile("cpu").dit


def names() -> list[str]:
    C = section()
    return [*C.conditionings, *(f"{s}/{p}" for s, p in C.scaling if (s, p) != (C.base, C.base_patch))]


def slug(name: str) -> str:
    return name.replace("/", "_")


def worker(name: str, seed: int, samples: int) -> dict:
    os.environ["MINIDIFF_CHECKPOINT_DIR"] = str(HERE / ".cache" / "runs")   # the shared autoencoder is kept here
    os.environ["MINIDIFF_PROFILE"] = "cpu"
    import torch

    from minidiff import config, data, metrics, recipes
    from minidiff.diffusion import schedules
    from minidiff.nets import count_parameters, dit_flops

    C = section()
    train_set = data.load_images(C.dataset, "train", profile="cpu")
    heldout = data.load_images(C.dataset, "test", profile="cpu").x
    ae, ae_info = recipes.shared_autoencoder(C, train_set.x, progress=False)
    with torch.no_grad():
        z = ae.to_latent(train_set.x)
    sched = schedules.make_schedule(C.schedule, C.T)
    config.seed_everything(seed)
    net = recipes.dit_models(C, tuple(z.shape[1:]))[name]()
    steps = recipes.dit_steps(C, name, tuple(z.shape[1:]))
    run = recipes.train_ddpm(net, sched, z, train_set.y, cfg=C.train_config(steps=steps, seed=seed, progress=False),
                             batch_size=C.batch, prediction=C.prediction, p_uncond=C.p_uncond,
                             weighting=C.weighting, seed=seed)
    labels = torch.arange(samples) % 10
    s = recipes.draw(C, run.ema.eval(), sched, (samples, *z.shape[1:]), model_kwargs={"y": labels},
                     generator=torch.Generator().manual_seed(seed + 1), decode=ae.from_latent)
    p = metrics.predict_proba(s)
    loss = run.history["loss"]
    return {"model": name, "seed": seed, "threads": torch.get_num_threads(), "params": count_parameters(net),
            "gflops": dit_flops(net.cfg) / 1e9, "steps": run.step, "train_seconds": run.seconds,
            "final_loss": float(sum(loss[-200:]) / len(loss[-200:])),
            "loss_curve": [[i, float(sum(loss[i:i + 100]) / len(loss[i:i + 100]))] for i in range(0, len(loss), 100)],
            "fid": metrics.fid(s, metrics.Reference(heldout)),
            "confidence": float(p.max(1).values.mean()), "accuracy": float((p.argmax(1) == labels).float().mean()),
            "ae_seconds": ae_info["seconds"], "samples": samples, "_samples": s[:100]}


def summary(runs: list[dict]) -> dict:
    """Per model: seeds, the FID's and the final loss's mean with 95% interval (:func:`minidiff.reference.mean_ci`),
    FID min-max, and the medians of steps, training seconds, confidence and accuracy."""
    from minidiff.reference import mean_ci

    out = {}
    for name in names():
        rs = [r for r in runs if r["model"] == name]
        if rs:
            f = [r["fid"] for r in rs]
            out[name] = {"seeds": len(rs), "fid": mean_ci(f), "fid_min": min(f), "fid_max": max(f),
                         "loss": mean_ci([r["final_loss"] for r in rs]), "gflops": rs[0]["gflops"],
                         "params": rs[0]["params"], "steps": statistics.median(r["steps"] for r in rs),
                         "train_seconds": statistics.median(r["train_seconds"] for r in rs),
                         "confidence": statistics.median(r["confidence"] for r in rs),
                         "accuracy": statistics.median(r["accuracy"] for r in rs)}
    return out


def table(runs: list[dict]) -> str:
    lines = [f"{'model':<16}{'seeds':>6}{'steps':>7}{'train s':>8}{'params':>10}{'GFLOPs':>8}{'loss':>8}"
             f"{'FID mean':>10}{'95% CI':>9}{'min-max':>14}{'conf':>6}{'acc':>6}"]
    for name, s in summary(runs).items():
        ci = f"+-{s['fid'].ci95:.1f}" if s["seeds"] > 1 else "-"
        lines.append(f"{name:<16}{s['seeds']:>6}{s['steps']:>7g}{s['train_seconds']:>8.0f}{s['params']:>10,d}"
                     f"{s['gflops']:>8.4f}{s['loss'].mean:>8.4f}{s['fid'].mean:>10.1f}{ci:>9}"
                     f"{s['fid_min']:>7.1f}-{s['fid_max']:<6.1f}{s['confidence']:>6.2f}{s['accuracy']:>6.2f}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=names(), choices=names())
    add_sweep_args(ap)
    ap.add_argument("--budget", help=argparse.SUPPRESS)      # run_worker passes it; the budget is steps here
    args = ap.parse_args()
    if args.table:
        print(table(load_runs(RESULTS)))
        return
    import torch

    if args.worker:
        torch.set_num_threads(args.threads)
        torch.save(worker(args.worker, args.seeds[0], args.samples), args.out)
        return
    C = section()
    args.budget = 0
    from minidiff.train import TrainConfig

    header = {"benchmark": "dit_sweep", "recipe": {k: getattr(C, k) for k in C.__dataclass_fields__},
              "log_every": TrainConfig().log_every}      # the training loss is logged every log_every steps
    for seed in args.seeds:                     # seed-major: an interrupted sweep leaves whole seeds
        for name in args.models:
            out = HERE / ".cache" / f"dit_sweep_{slug(name)}_{seed}_{args.threads}.pt"
            out.parent.mkdir(exist_ok=True)
            r = run_worker(__file__, name, seed, args, out)
            grid = r.pop("_samples")
            if seed == 0:                       # the results page shows seed 0's digits
                save_grid(grid, HERE / "results" / f"dit_sweep_{slug(name)}.png")
            r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            r["command"] = (f"python benchmarks/dit_sweep.py --models '{name}' --seeds {seed} --threads "
                            f"{args.threads} --samples {args.samples}")
            record_run(RESULTS, r, ("model", "seed", "threads"), header)
            print(f"[{name} seed {seed}] {r['steps']} steps in {r['train_seconds']:.0f} s, FID {r['fid']:.1f}, "
                  f"conf {r['confidence']:.2f}, acc {r['accuracy']:.2f}", flush=True)
    print(table(load_runs(RESULTS)))


if __name__ == "__main__":
    main()
