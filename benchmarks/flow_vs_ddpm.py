"""Chapter 13's reference run: flow matching against DDPM with the same U-Net and the same wall-clock budget, over seeds.

    .venv/bin/python benchmarks/flow_vs_ddpm.py --seeds 0 1 2       # the shipped run: 150 s a model, about 40 min
    .venv/bin/python benchmarks/flow_vs_ddpm.py --table             # the table of every run recorded so far

Each run trains chapter 04's U-Net (the ``cpu`` profile's ``ddpm`` network) on the 4,000 MNIST-5k training digits for
``--budget`` seconds in a fresh process limited to ``--threads`` threads, with the ``cpu`` profile's chapter-13
optimisation (section ``flow``: batch, learning rate annealed by the clock, EMA), either with flow matching (the
section's path and time sampling) or with chapter 04's DDPM objective (section ``ddpm``: schedule, T, loss
weighting), predicting chapter 04's epsilon (method ``ddpm``) or v (``ddpm-v``, Salimans & Ho 2022: a few-step
sampler's first step then has a well-defined clean-image estimate, where epsilon's divides by a nearly zero
:math:`\sqrt{\bar\alpha}`). Then every deterministic sampler of its family (``minidiff.recipes.NFE_SAMPLERS``: flow Euler and
Heun; DDIM and DPM-Solver++(2M)) draws ``--samples`` digits from the same noise at each number of network calls of
the section's ``nfe``, and the feature FID against the 1,000 held-out digits is recorded, with the straightness of
the sampled paths (16 calls). The flow run then does one reflow round: couplings from its ODE (Heun, the section's
``coupling_steps``), ``--budget``/2 more seconds of training on them, FID at 1, 2 and 4 Euler steps. Runs are
appended to ``minidiff/assets/reference/flow_vs_ddpm.json`` (a rerun replaces its row); chapter 13 plots that file and
``tests/test_results_page.py`` checks the chapter's sentences against it. Run it with nothing else on the machine:
the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "minidiff" / "assets" / "reference" / "flow_vs_ddpm.json"   # shipped: chapter 13 plots it
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from unet_recipe import add_sweep_args, load_runs, record_run, run_worker, save_grid  # noqa: E402

METHODS = ("flow", "ddpm", "ddpm-v")
#: the DDPM runs' prediction target: chapter 04's (the cpu profile's ddpm section, epsilon) or v (Salimans & Ho)
PREDICTION = {"ddpm": None, "ddpm-v": "v"}
REFLOW_NFE = (1, 2, 4)


def profile():
    from minidiff.config import get_profile

    return get_profile("cpu")


def unet(P, time_scale: float):
    from minidiff.nets import UNet

    D = P.ddpm
    return UNet(1, D.base_channels, D.channel_mults, attention=D.attention, patch=D.patch, time_scale=time_scale)


def _paths(sampler, model, process, x_T, prediction):
    """Chord ratio and Liu et al.'s straightness of 16-call paths from ``x_T``, times in [0, 1] for both families."""
    from minidiff import recipes
    from minidiff.diffusion import flow

    _, traj = recipes.draw_nfe(sampler, model, process, tuple(x_T.shape), nfe=16, prediction=prediction, x_T=x_T,
                               return_trajectory=True, batch=len(x_T))
    if not sampler.startswith("flow"):                  # DDIM records step indices: t = (s + 1) / T, -1 -> 0
        traj = [((s + 1) / process.T, x) for s, x in traj]
    return float(flow.chord_ratio(traj).mean()), float(flow.straightness(traj).mean())


def worker(method: str, seed: int, budget: float, samples: int) -> dict:
    import torch

    from minidiff import config, data, metrics, recipes
    from minidiff.diffusion import flow, schedules
    from minidiff.nets import count_parameters

    P = profile()
    F, D = P.flow, P.ddpm
    config.seed_everything(seed)
    x = data.load_images(F.dataset, "train", profile="cpu").x
    reference = metrics.Reference(data.load_images(F.dataset, "test", profile="cpu").x)
    cfg = F.train_config(max_seconds=budget, seed=seed, progress=False)
    prediction = PREDICTION.get(method) or D.prediction
    if method == "flow":
        process = flow.Path(F.path)
        net = unet(P, 1000.0)
        run = recipes.train_flow(net, process, x, cfg=cfg, batch_size=F.batch, time_sampling=F.time_sampling,
                                 seed=seed)
    else:
        process = schedules.make_schedule(D.schedule, D.T)
        net = unet(P, 1.0)
        run = recipes.train_ddpm(net, process, x, cfg=cfg, batch_size=F.batch, prediction=prediction,
                                 weighting=D.weighting, seed=seed)
    ema = run.ema.eval()
    x_T = torch.randn(samples, *x.shape[1:], generator=torch.Generator().manual_seed(1000 + seed))
    fids, grids = [], {}
    for sampler, (family, _) in recipes.NFE_SAMPLERS.items():
        if family != method.split("-")[0]:
            continue
        for n in recipes.nfe_points(sampler, F.nfe):
            t0 = time.perf_counter()
            s = recipes.draw_nfe(sampler, ema, process, tuple(x_T.shape), nfe=n, prediction=prediction, x_T=x_T)
            fids.append({"sampler": sampler, "nfe": n, "fid": metrics.fid(s, reference),
                         "seconds": time.perf_counter() - t0})
            grids[(sampler, n)] = s[:32]
    main_sampler = "flow Euler" if method == "flow" else "DDIM"
    chord, straight = _paths(main_sampler, ema, process, x_T[:100], prediction)
    out = {"method": method, "prediction": prediction if method != "flow" else "velocity", "seed": seed,
           "budget_s": budget, "threads": torch.get_num_threads(),
           "params": count_parameters(net), "steps": run.step, "train_seconds": run.seconds,
           "final_loss": float(sum(run.history["loss"][-50:]) / len(run.history["loss"][-50:])),
           "fids": fids, "path_sampler": main_sampler, "chord_ratio": chord, "straightness": straight,
           "_grids": grids}
    if method == "flow":                               # one reflow round, its cost recorded
        t0 = time.perf_counter()
        x0, noise = flow.reflow_couplings(ema, process, len(x), tuple(x.shape[1:]), steps=F.coupling_steps,
                                          method="heun", generator=torch.Generator().manual_seed(2000 + seed),
                                          progress=False)
        couple_s = time.perf_counter() - t0
        net2 = unet(P, 1000.0)
        net2.load_state_dict(ema.state_dict())
        run2 = recipes.train_flow(net2, process, x0, noise=noise, time_sampling="uniform", seed=seed,
                                  cfg=F.train_config(max_seconds=budget / 2, seed=seed, progress=False, warmup=0),
                                  batch_size=F.batch)
        ema2 = run2.ema.eval()
        reflow = []
        for n in REFLOW_NFE:
            s = recipes.draw_nfe("flow Euler", ema2, process, tuple(x_T.shape), nfe=n, x_T=x_T)
            reflow.append({"nfe": n, "fid": metrics.fid(s, reference)})
            grids[("reflow Euler", n)] = s[:32]
        chord2, straight2 = _paths("flow Euler", ema2, process, x_T[:100], D.prediction)
        out["reflow"] = {"pairs": len(x0), "coupling_steps": F.coupling_steps, "coupling_seconds": couple_s,
                         "steps": run2.step, "train_seconds": run2.seconds, "fids": reflow, "chord_ratio": chord2,
                         "straightness": straight2}
    return out


def fid_at(run: dict, sampler: str, nfe: int) -> float:
    return next(f["fid"] for f in run["fids"] if f["sampler"] == sampler and f["nfe"] == nfe)


def table(runs: list[dict]) -> str:
    from minidiff.reference import mean_ci

    lines = []
    for method in METHODS:
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        lines.append(f"{method}: {len(rs)} seed(s), {sum(r['steps'] for r in rs) / len(rs):.0f} steps in "
                     f"{sum(r['train_seconds'] for r in rs) / len(rs):.0f} s, chord ratio "
                     f"{mean_ci([r['chord_ratio'] for r in rs]):.3f}")
        for sampler in dict.fromkeys(f["sampler"] for f in rs[0]["fids"]):
            cells = [f"{n:>3}: {mean_ci([fid_at(r, sampler, n) for r in rs])}"
                     for n in dict.fromkeys(f["nfe"] for f in rs[0]["fids"] if f["sampler"] == sampler)]
            lines.append(f"  {sampler:<18}" + "  ".join(cells))
        if method == "flow" and all("reflow" in r for r in rs):
            cells = [f"{n:>3}: {mean_ci([next(f['fid'] for f in r['reflow']['fids'] if f['nfe'] == n) for r in rs])}"
                     for n in REFLOW_NFE]
            lines.append(f"  {'reflow Euler':<18}" + "  ".join(cells) + f"   chord ratio "
                         f"{mean_ci([r['reflow']['chord_ratio'] for r in rs])}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--budget", type=float, default=profile().flow.max_seconds,
                    help="training seconds per model (default: the cpu profile's, the shipped run's)")
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
    P = profile()
    header = {"benchmark": "flow_vs_ddpm",
              "recipe": {"flow": {k: getattr(P.flow, k) for k in P.flow.__dataclass_fields__ if not k.startswith("toy")
                                  and k not in ("max_seconds", "steps")},
                         "ddpm": {k: getattr(P.ddpm, k) for k in ("T", "schedule", "prediction", "weighting",
                                                                  "base_channels", "channel_mults", "attention",
                                                                  "patch")}}}
    for seed in args.seeds:                     # seed-major: an interrupted sweep leaves whole seeds
        for method in args.methods:
            out = HERE / ".cache" / f"flow_vs_ddpm_{method}_{seed}_{args.budget:g}_{args.threads}.pt"
            out.parent.mkdir(exist_ok=True)
            r = run_worker(__file__, method, seed, args, out)
            grids = r.pop("_grids")
            if seed == 0:                       # the chapter shows seed 0's digits
                for (sampler, n), g in grids.items():
                    if n in (1, 4, 16):
                            label = sampler.replace(" ", "_").replace("++(2M)", "")
                        label = label if method == "flow" else f"{method}_{label}"
                        save_grid(g, HERE / "results" / f"flow_vs_ddpm_{label}_{n}.png")
            r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            r["command"] = (f"python benchmarks/flow_vs_ddpm.py --methods {method} --seeds {seed} --budget "
                            f"{args.budget:g} --threads {args.threads} --samples {args.samples}")
            record_run(RESULTS, r, ("method", "seed", "budget_s", "threads"), header)
            best = min(r["fids"], key=lambda f: f["fid"])
            print(f"[{method} seed {seed}] {r['steps']} steps, best FID {best['fid']:.1f} ({best['sampler']}, "
                  f"{best['nfe']} calls)", flush=True)
    print(table(load_runs(RESULTS)))


if __name__ == "__main__":
    main()
