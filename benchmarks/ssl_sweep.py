"""Chapter 11's reference sweep: six ways to use a self-supervised encoder in diffusion training, over seeds, read at
equal steps and at equal training time.

    .venv/bin/python benchmarks/ssl_sweep.py --seeds 0 1 2 3 4 --threads 1 --parallel 2   # the shipped sweep: 30 runs
    .venv/bin/python benchmarks/ssl_sweep.py --table          # the table of every run recorded so far

Every recipe of :data:`minidiff.recipes.SSL_RECIPES` with the ``cpu`` profile's chapter-11 section (profile ``cpu``,
section ``ssl_diffusion``): an unconditional denoiser of the section's backbone (the latent U-Net) on the latents of
chapter 10's autoencoder
(:func:`minidiff.recipes.shared_autoencoder`) with chapter 02's SimCLR encoder frozen
(:func:`minidiff.recipes.shared_simclr`; both trained once, seed 0, and kept in ``benchmarks/.cache``), trained by
:func:`minidiff.recipes.train_ssl_recipe` in a fresh process limited to ``--threads`` threads. Each run is read
twice: its EMA weights after ``steps`` steps (**equal steps**), and the EMA weights of the last snapshot (every 50
steps) whose training time, plus RCG's representation model's, is at most the same seed's baseline's training time
(**equal time**; the baseline runs first in each seed). The learning rate is constant after warmup, so a snapshot is
what a run of that length would give. Each reading draws ``--samples`` digits (the profile's sampler; RCG samples its
representations first, then the digits with guidance ``rcg_guidance`` on them, :func:`minidiff.recipes.rcg_guided`) and records the feature FID against the 1,000 held-out digits, the shipped classifier's
confidence and the entropy of its predicted classes (log 10 = 2.30 when every digit is as frequent); RCG's final
weights are also read without guidance (``final["unguided"]``). Also recorded:
steps, training seconds, the loss curve, sampling seconds. Runs are appended to
``minidiff/assets/reference/ssl_sweep.json`` (a rerun replaces its row; :mod:`minidiff.reference` loads it); chapter 11
plots that file and ``tests/test_results_page.py`` checks the chapter's sentences against it. Run it with nothing else
on the machine: equal time is measured. With ``--parallel 2 --threads 1`` two runs share the 2-core machine, one
thread each, the way the shipped file was made (every run's ``alongside`` says how many other runs were on the
machine when it started; the costliest recipes are scheduled first so that the last run alone is a short one).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "minidiff" / "assets" / "reference" / "ssl_sweep.json"   # shipped: chapter 11 plots it
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from unet_recipe import add_sweep_args, load_runs, record_run, run_worker, save_grid  # noqa: E402


def section(steps: int | None = None):
    """The ``cpu`` profile's chapter-11 section: the recipe of every run (``steps`` overrides its steps: a quick
    check of the script, never the shipped file)."""
    import dataclasses

    from minidiff.config import get_profile

    C = get_profile("cpu").ssl_diffusion
    return dataclasses.replace(C, steps=steps) if steps else C


def names() -> list[str]:
    return list(section().recipes)


def worker(name: str, seed: int, budget: float, samples: int, steps: int | None = None) -> dict:
    os.environ["MINIDIFF_CHECKPOINT_DIR"] = str(HERE / ".cache" / "runs")   # the shared models are kept here
    os.environ["MINIDIFF_PROFILE"] = "cpu"
    import torch

    from minidiff import config, data, metrics, recipes
    from minidiff.diffusion import schedules
    from minidiff.ssl_diffusion import FrozenEncoder

    P = config.get_profile("cpu")
    C = section(steps)
    train_set = data.load_images(C.dataset, "train", profile="cpu")
    reference = metrics.Reference(data.load_images(C.dataset, "test", profile="cpu").x)
    ae, ae_info = recipes.shared_autoencoder(C, train_set.x, progress=False)
    simclr, ssl_info = recipes.shared_simclr(C.encoder_section(P.ssl), train_set.x, progress=False)
    if name == "prepare":                        # the shared models, trained alone before the runs (SimCLR's budget is
        return {"ae": ae_info, "simclr": ssl_info}   # in seconds: it must not share the machine)
    encoder = FrozenEncoder(simclr.encoder, depth=C.encoder_depth)
    with torch.no_grad():
        z = ae.to_latent(train_set.x)
    parts = recipes.SSLParts(C, encoder, ae, train_set.x, z, schedules.make_schedule(C.schedule, C.T))
    extra, kwargs = 0.0, None
    if name == "rcg":                            # the representation generator's training counts towards its time
        rdm_run, rdm_sched = recipes.train_rdm(parts, seed=seed, progress=False)
        extra = rdm_run.seconds
        reps = recipes.sample_representations(rdm_run.ema.eval(), rdm_sched, samples, encoder.dim,
                                              generator=torch.Generator().manual_seed(seed + 2))
        kwargs = {"y": reps}
    config.seed_everything(seed)
    res = recipes.train_ssl_recipe(name, parts, seed=seed, progress=False)
    run, model = res["run"], res["model"]

    def read(state):
        model.load_state_dict(state)
        model.eval()
        t0 = time.perf_counter()
        sampler = recipes.rcg_guided(model, C, encoder.dim) if name == "rcg" else model
        s = recipes.draw(C, sampler, parts.schedule, (samples, *z.shape[1:]), model_kwargs=kwargs,
                         generator=torch.Generator().manual_seed(seed + 1), decode=ae.from_latent)
        seconds = time.perf_counter() - t0
        c = metrics.classifier_confidence(s)
        return {"fid": metrics.fid(s, reference), "confidence": c["mean_max_prob"], "entropy": c["class_entropy"],
                "sample_seconds": seconds}, s

    final, grid = read(res["snapshots"][-1][2])
    if name == "rcg" and C.rcg_guidance != 1:   # the same weights without guidance, for the record
        model.eval()
        s = recipes.draw(C, model, parts.schedule, (samples, *z.shape[1:]), model_kwargs=kwargs,
                         generator=torch.Generator().manual_seed(seed + 1), decode=ae.from_latent)
        c = metrics.classifier_confidence(s)
        final["unguided"] = {"fid": metrics.fid(s, reference), "confidence": c["mean_max_prob"],
                             "entropy": c["class_entropy"]}
    out = {"recipe": name, "seed": seed, "threads": torch.get_num_threads(),
           "params": sum(p.numel() for p in model.parameters() if p.requires_grad),   # the frozen encoder not
           "steps": run.step, "train_seconds": run.seconds, "extra_seconds": extra, "final": final}
    if budget:                                   # the baseline's training time of this seed
        step, seconds, state = recipes.at_time(res, budget - extra)
        out["equal_time"] = dict(final) if step == run.step else {**read(state)[0]}
        out["equal_time"].update(step=step, seconds=seconds + extra, budget=budget)
    loss = run.history["loss"]
    out["final_loss"] = float(sum(loss[-200:]) / len(loss[-200:]))
    out["loss_curve"] = [[i, float(sum(loss[i:i + 100]) / len(loss[i:i + 100]))] for i in range(0, len(loss), 100)]
    out.update(samples=samples, ae_seconds=ae_info["seconds"], simclr_seconds=ssl_info["seconds"],
               simclr_steps=ssl_info["steps"], _samples=grid[:64])
    return out


def summary(runs: list[dict]) -> dict:
    """Per recipe: seeds; FID, confidence and class entropy at equal steps and at equal time (mean with 95%
    interval, :func:`minidiff.reference.mean_ci`); paired differences to the baseline (recipe - baseline, same
    seed); medians of steps at equal time and of training seconds."""
    from minidiff.reference import mean_ci

    base = {r["seed"]: r for r in runs if r["recipe"] == "baseline"}
    out = {}
    for name in names():
        rs = sorted((r for r in runs if r["recipe"] == name), key=lambda r: r["seed"])
        if not rs:
            continue
        row = {"seeds": len(rs), "train_seconds": statistics.median(r["train_seconds"] + r["extra_seconds"]
                                                                      for r in rs),
               "params": rs[0]["params"], "steps": statistics.median(r["steps"] for r in rs)}
        for reading in ("final", "equal_time"):
            got = [r for r in rs if reading in r]
            if not got:
                continue
            f = [r[reading]["fid"] for r in got]
            row[reading] = {"fid": mean_ci(f), "fid_min": min(f), "fid_max": max(f),
                            "confidence": mean_ci([r[reading]["confidence"] for r in got]),
                            "entropy": mean_ci([r[reading]["entropy"] for r in got]),
                            "steps": statistics.median(r[reading].get("step", r["steps"]) for r in got)}
            paired = [r[reading]["fid"] - base[r["seed"]]["final"]["fid"] for r in got if r["seed"] in base]
            if name != "baseline" and len(paired) >= 2:
                row[reading]["paired"] = mean_ci(paired)
        out[name] = row
    return out


def table(runs: list[dict]) -> str:
    lines = [f"{'recipe':<20}{'seeds':>6}{'train s':>8}{'FID @steps':>12}{'95% CI':>9}{'conf':>6}"
             f"{'steps@time':>11}{'FID @time':>11}{'95% CI':>9}{'vs base @time':>15}"]
    for name, s in summary(runs).items():
        f, e = s["final"], s.get("equal_time")
        ci = f"+-{f['fid'].ci95:.1f}" if s["seeds"] > 1 else "-"
        line = (f"{name:<20}{s['seeds']:>6}{s['train_seconds']:>8.0f}{f['fid'].mean:>12.1f}{ci:>9}"
                f"{f['confidence'].mean:>6.2f}")
        if e:
            eci = f"+-{e['fid'].ci95:.1f}" if s["seeds"] > 1 else "-"
            pd = f"{e['paired'].mean:+.1f}+-{e['paired'].ci95:.1f}" if "paired" in e else "-"
            line += f"{e['steps']:>11g}{e['fid'].mean:>11.1f}{eci:>9}{pd:>15}"
        lines.append(line)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=names(), choices=names())
    add_sweep_args(ap)
    ap.add_argument("--steps", type=int, help="override the profile's steps (a quick check; writes --results)")
    ap.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    ap.add_argument("--recipe-major", action="store_true",
                    help="every seed of a recipe before the next (--recipes order), the multi-task pair last")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time (each with --threads threads)")
    ap.add_argument("--budget", type=float, default=0, help=argparse.SUPPRESS)   # the worker's equal-time budget
    args = ap.parse_args()
    if args.table:
        print(table(load_runs(args.results)))
        return
    import torch

    if args.worker:
        torch.set_num_threads(args.threads)
        torch.save(worker(args.worker, args.seeds[0], args.budget, args.samples, args.steps), args.out)
        return
    if args.steps and args.results == RESULTS:
        ap.error("--steps writes a quick check: give it its own --results file")
    C = section(args.steps)
    header = {"benchmark": "ssl_sweep", "recipe": {k: getattr(C, k) for k in C.__dataclass_fields__},
              "log_every": 10, "parallel": args.parallel}
    lock = threading.Lock()
    running = [0]
    baselines = {}                              # seed -> Future of that seed's baseline run

    def job(name, seed):
        wargs = argparse.Namespace(**vars(args))
        wargs.budget = baselines[seed].result()["train_seconds"] if name != "baseline" else 0
        out = HERE / ".cache" / f"ssl_sweep_{name}_{seed}_{args.threads}_{args.steps or C.steps}.pt"
        out.parent.mkdir(exist_ok=True)
        with lock:
            running[0] += 1
            alongside = running[0] - 1
        try:
            r = run_worker(__file__, name, seed, wargs, out,
                           extra_args=("--steps", str(args.steps)) if args.steps else ())
        finally:
            with lock:
                running[0] -= 1
        grid = r.pop("_samples")
        if name == "baseline":
            r["equal_time"] = {**r["final"], "step": r["steps"], "seconds": r["train_seconds"],
                               "budget": r["train_seconds"]}
        if seed == 0:                           # the results page shows seed 0's digits
            save_grid(grid, HERE / "results" / f"ssl_sweep_{name}.png")
        r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        r["alongside"] = alongside              # other runs on the machine when this one started
        r["command"] = (f"python benchmarks/ssl_sweep.py --recipes {name} --seeds {seed} --threads "
                        f"{args.threads} --samples {args.samples} --parallel {args.parallel}"
                        + (" --recipe-major" if args.recipe_major else ""))
        with lock:
            record_run(args.results, r, ("recipe", "seed", "threads"), header)
        e = r["equal_time"]
        print(f"[{name} seed {seed}] {r['steps']} steps in {r['train_seconds']:.0f} s (+{r['extra_seconds']:.0f}"
              f" s): FID {r['final']['fid']:.1f} (conf {r['final']['confidence']:.2f}); at the baseline's time "
              f"({e['step']} steps) FID {e['fid']:.1f}", flush=True)
        return r

    class Done:                                 # a recorded baseline, reused when only other recipes are asked for
        def __init__(self, r):
            self.r = r

        def result(self):
            return self.r

    prep = run_worker(__file__, "prepare", 0, argparse.Namespace(**{**vars(args), "threads": 2, "budget": 0}),
                      HERE / ".cache" / "ssl_sweep_prepare.pt")
    print(f"shared models: autoencoder {prep['ae']['steps']} steps, SimCLR {prep['simclr']['steps']} steps "
          f"({'loaded' if prep['simclr']['loaded'] else 'trained'})", flush=True)
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        todo = []
        for seed in args.seeds:                 # baselines first: their times are the other recipes' budgets
            old = next((r for r in load_runs(args.results) if r["recipe"] == "baseline" and r["seed"] == seed
                        and r["threads"] == args.threads), None)
            if "baseline" in args.recipes or old is None:
                baselines[seed] = pool.submit(job, "baseline", seed)
                todo.append(baselines[seed])
            else:
                baselines[seed] = Done(old)
        order = [n for n in args.recipes if n != "baseline"]
        if args.recipe_major:                   # every seed of one recipe before the next, in --recipes order; the
            cheap = [n for n in order if not n.startswith("multitask")]     # multi-task pair last, seed by seed
            pairs = [(n, s) for n in cheap for s in args.seeds]
            pairs += [(n, s) for s in args.seeds for n in order if n.startswith("multitask")]
            todo += [pool.submit(job, name, seed) for name, seed in pairs]
        else:                                   # seed-major, the costliest recipes first (the last run is a short one)
            order.sort(key=lambda n: not n.startswith("multitask"))
            todo += [pool.submit(job, name, seed) for seed in args.seeds for name in order]
        for f in todo:
            f.result()
    print(table(load_runs(args.results)))


if __name__ == "__main__":
    main()
