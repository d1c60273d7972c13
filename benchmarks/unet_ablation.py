"""Chapter 08's reference sweep: the U-Net's parts and an MLP baseline, each at equal wall time, over seeds.

    .venv/bin/python benchmarks/unet_ablation.py --seeds 0 1 2      # the shipped sweep: 180 s a run, about an hour
    .venv/bin/python benchmarks/unet_ablation.py --table          # the table of every run recorded so far

Every network of :func:`minidiff.recipes.unet_ablations` (the full U-Net with attention, without attention, without
skips, with an additive time embedding, an MLP on flattened pixels) trains on the 4,000 MNIST-5k training digits
with the ``cpu`` profile's chapter-08 recipe (``minidiff.config`` profile ``cpu``, section ``unet``) for ``--budget``
seconds of wall-clock time (the learning rate annealed by the clock) in a fresh process limited to ``--threads``
threads, then draws ``--samples`` digits with the profile's sampler. Recorded per run: training steps, feature FID
against the 1,000 held-out digits, the shipped classifier's confidence, and the held-out loss at the profile's fixed
time steps (``ddpm.loss_by_timestep``). Runs are appended to ``minidiff/assets/reference/unet_ablation.json`` (a
rerun replaces its row; :mod:`minidiff.reference` loads it); chapter 08 plots that file and ``tests/test_results_page.py`` checks the chapter's sentences
against it. Run it with nothing else on the machine: the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "minidiff" / "assets" / "reference" / "unet_ablation.json"   # shipped: chapter 08 plots it
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from unet_recipe import add_sweep_args, load_runs, record_run, run_worker, save_grid  # noqa: E402

from minidiff.config.schema import UNetChapterConfig  # noqa: E402

VARIANTS = UNetChapterConfig.VARIANTS


def slug(name: str) -> str:
    return name.replace(" ", "_")


def section():
    """The ``cpu`` profile's chapter-08 section: the recipe every run uses (its ``max_seconds`` replaced by the
    budget)."""
    from minidiff.config import get_profile

    return get_profile("cpu").unet


def worker(name: str, seed: int, budget: float, samples: int) -> dict:
    import torch

    from minidiff import config, data, metrics, recipes
    from minidiff.diffusion import ddim, ddpm, dpm_solver, schedules
    from minidiff.nets import count_flops, count_parameters

    C = section()
    config.seed_everything(seed)
    x = data.load_images(C.dataset, "train", profile="cpu").x
    heldout = data.load_images(C.dataset, "test", profile="cpu").x
    sched = schedules.make_schedule(C.schedule, C.T)
    net = recipes.unet_ablations(C, tuple(x.shape[1:]))[name]()
    run = recipes.train_ddpm(net, sched, x, cfg=C.train_config(max_seconds=budget, seed=seed, progress=False),
                             batch_size=C.batch, prediction=C.prediction, weighting=C.weighting, seed=seed)
    ema = run.ema.eval()
    sample = {"ddim": ddim.ddim_sample, "dpmpp_2m_sde": dpm_solver.dpmpp_2m_sample}[C.sampler]
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        s = torch.cat([sample(ema, sched, (min(250, samples - i), *x.shape[1:]), steps=C.sample_steps,
                              prediction=C.prediction, clip_x0=True, generator=g, progress=False)
                       for i in range(0, samples, 250)]).clamp(-1, 1)
    ts = [round(f * (C.T - 1)) for f in C.loss_t_fractions]
    loss = run.history["loss"][-50:]
    return {"variant": name, "seed": seed, "budget_s": budget, "threads": torch.get_num_threads(),
            "params": count_parameters(net),
            "mflops": count_flops(net, x[:1], torch.zeros(1, dtype=torch.long)) / 1e6,
            "steps": run.step, "train_seconds": run.seconds, "final_loss": float(sum(loss) / len(loss)),
            "fid": metrics.fid(s, metrics.Reference(heldout)),
            "confidence": metrics.classifier_confidence(s)["mean_max_prob"],
            "ts": ts, "loss_by_t": ddpm.loss_by_timestep(ema, sched, heldout[:C.eval_images], ts,
                                                         prediction=C.prediction).tolist(),
            "_samples": s[:64]}


def summary(runs: list[dict], budget: float | None = None) -> dict:
    """Per variant (at ``budget``, or at the largest budget recorded): seeds, the FID's mean with its 95% interval
    (:func:`minidiff.reference.mean_ci`), min-max, and the medians of steps and confidence."""
    from minidiff.reference import mean_ci

    if budget is None and runs:
        budget = max(r["budget_s"] for r in runs)
    out = {}
    for name in VARIANTS:
        rs = [r for r in runs if r["variant"] == name and r["budget_s"] == budget]
        if rs:
            f = [r["fid"] for r in rs]
            out[name] = {"seeds": len(rs), "fid": mean_ci(f), "fid_min": min(f), "fid_max": max(f),
                         "steps": statistics.median(r["steps"] for r in rs),
                         "confidence": statistics.median(r["confidence"] for r in rs),
                         "params": rs[0]["params"], "mflops": rs[0]["mflops"]}
    return out


def table(runs: list[dict]) -> str:
    lines = [f"{'variant':<15}{'budget':>7}{'seeds':>6}{'steps':>7}{'params':>12}{'MFLOPs':>8}{'FID mean':>10}"
             f"{'95% CI':>9}{'min-max':>14}{'conf':>6}"]
    for b in sorted({r["budget_s"] for r in runs}):
        for name, s in summary(runs, b).items():
            ci = f"+-{s['fid'].ci95:.1f}" if s["seeds"] > 1 else "-"
            lines.append(f"{name:<15}{b:>7g}{s['seeds']:>6}{s['steps']:>7g}{s['params']:>12,d}{s['mflops']:>8.1f}"
                         f"{s['fid'].mean:>10.1f}{ci:>9}{s['fid_min']:>7.1f}-{s['fid_max']:<6.1f}"
                         f"{s['confidence']:>6.2f}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--budget", type=float, default=section().max_seconds,
                    help="training seconds per run (default: the cpu profile's, the shipped sweep's)")
    add_sweep_args(ap)
    args = ap.parse_args()
    if args.table:
        print(table(load_runs(RESULTS)))
        return
    import torch

    if args.worker:
        torch.set_num_threads(args.threads)
        torch.save(worker(args.worker, args.seeds[0], args.budget, args.samples), args.out)
        return
    C = section()
    header = {"benchmark": "unet_ablation", "recipe": {k: getattr(C, k) for k in C.__dataclass_fields__
                                                       if k not in ("max_seconds", "steps")}}
    for seed in args.seeds:                     # seed-major: an interrupted sweep leaves whole seeds
        for name in args.variants:
            out = HERE / ".cache" / f"unet_ablation_{slug(name)}_{seed}_{args.budget:g}_{args.threads}.pt"
            out.parent.mkdir(exist_ok=True)
            r = run_worker(__file__, name, seed, args, out)
            grid = r.pop("_samples")
            if seed == 0:                       # the chapter shows seed 0's digits
                save_grid(grid, HERE / "results" / f"unet_ablation_{slug(name)}_{args.budget:g}s.png")
            r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            r["command"] = (f"python benchmarks/unet_ablation.py --variants '{name}' --seeds {seed} --budget "
                            f"{args.budget:g} --threads {args.threads} --samples {args.samples}")
            record_run(RESULTS, r, ("variant", "seed", "budget_s", "threads"), header)
            print(f"[{name} seed {seed}] {r['steps']} steps, FID {r['fid']:.1f}, conf {r['confidence']:.2f}",
                  flush=True)
    print(table(load_runs(RESULTS)))


if __name__ == "__main__":
    main()
