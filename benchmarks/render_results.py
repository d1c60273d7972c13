"""Render the latest benchmark JSON (``benchmarks/results/*.json``) as the book page ``book/results.md``.

    .venv/bin/python benchmarks/render_results.py            # rewrite book/results.md
    .venv/bin/python benchmarks/render_results.py --check    # exit 1 if book/results.md is out of date

Every table says on which machine, when and with which command its numbers were measured; a benchmark with no
JSON yet is listed with the command that produces it. ``tests/test_results_page.py`` checks that the page is up to
date with the JSON and that the tables carry the JSON's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE.parent / "book" / "results.md"

INTRO = """# Measured results

What the scripts in `benchmarks/` measured, rendered from their JSON output (`benchmarks/results/`) by
`benchmarks/render_results.py`. Every table names the machine, the date and the command; rerun the command on your
machine and the script to regenerate this page. Chapter 12 explains how the timings are taken and what bounds them.
Lower FID is better (minidiff's feature FID on the 1,000 held-out MNIST-5k digits, see `minidiff.metrics`).
"""


def _load(pattern: str) -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def _provenance(d: dict, name: str) -> str:
    return (f"*Measured {d.get('date', '?')} on {d.get('machine', '?')}, torch {d.get('torch', '?')}"
            + (", peers " + ", ".join(f"{k} {v}" for k, v in d["peers"].items()) if d.get("peers") else "")
            + f"; command `{d.get('command', '?')}`; data `benchmarks/results/{name}`.*\n")


def _table(head: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _missing(what: str, command: str) -> str:
    return f"Not measured yet. Run `{command}`.\n"


def _reference_footer(d: dict, name: str, caption: str) -> str:
    """Seed 0's sample grids of the shipped sweep ``name`` (``benchmarks/results/<name>_*.png``) and the line that
    says when, where and with which command it was measured."""
    out = []
    grids = sorted(RESULTS.glob(f"{name}_*.png"))
    if grids:
        out.append(f"\n{caption}:\n\n")
        out += [f"- `{g.stem[len(name) + 1:]}`: ![{g.stem}](../benchmarks/results/{g.name})\n" for g in grids]
    dates = sorted(r["date"] for r in d["runs"])
    out.append(f"\n*Measured {dates[0]} to {dates[-1]} on {d['machine']}, torch {d['torch']}; each run's command is in "
               f"`minidiff/assets/reference/{name}.json` (e.g. `{d['runs'][0]['command']}`).*\n")
    return "".join(out)


def time_to_quality() -> str:
    out = ["## Time to quality on a CPU\n\n",
           "Each contender trains on the 4,000 MNIST-5k training digits for the same wall-clock budget on 2 threads, "
           "then draws the same number of samples. Configurations: see the docstring of "
           "`benchmarks/time_to_quality.py` (each peer as its own documentation sets it up).\n\n"]
    runs = _load("time_to_quality_*s.json")
    if not runs:
        return "".join(out) + _missing("time to quality", "python benchmarks/time_to_quality.py --budget 300")
    for name, d in sorted(runs, key=lambda nd: nd[1]["budget_s"]):
        out.append(f"\n### {d['budget_s']:g} s of training, {d['n_samples']} samples\n\n")
        label = (lambda r: f"{r['contender']} (seed {r['seed']})") if len(d.get("seeds", [0])) > 1 else \
            (lambda r: r["contender"])
        rows = [[label(r), r["params"], r["train_steps"], float(r["images_per_s"]), r["sampler"], r["nfe"],
                 float(r["sample_seconds"]), float(r["fid"]), float(r["confidence"])] for r in d["rows"]]
        rows += [[f"*{k}*", "", "", "", "", "", "", float(v), ""] for k, v in d["baselines_fid"].items()]
        out.append(_table(["contender", "parameters", "training steps", "images/s", "sampler", "network calls",
                           "sampling s", "FID", "classifier confidence"], rows))
        s = d.get("summary", {})
        notes = []
        if "fid_ratio_best_peer_over_minidiff" in s:
            notes.append(f"best peer's FID / minidiff's FID = **{s['fid_ratio_best_peer_over_minidiff']:.1f}x**")
        md = next((r for r in d["rows"] if r["contender"] == "minidiff"), None)
        if md and md.get("extra_fid"):
            notes.append("minidiff with other samplers: " + ", ".join(
                f"{k.replace('_', ' ')} FID {v:.1f}" for k, v in md["extra_fid"].items())
                + (f" (1,000-step ancestral sampling took {md['ancestral_seconds']:.0f} s)"
                   if "ancestral_seconds" in md else ""))
        if "minidiff_ddim50_over_ancestral1000" in s:
            notes.append(f"DDIM-50 FID / 1,000-step ancestral FID = {s['minidiff_ddim50_over_ancestral1000']:.2f}")
        if "minidiff_best50_over_ancestral1000" in s:
            b = s["minidiff_best50_over_ancestral1000"]
            notes.append(f"best sampler at 50 network calls: {b['sampler']}, FID {b['fid']:.1f} = {b['ratio']:.2f}x the "
                         "1,000-step ancestral FID")
        if d.get("note"):
            notes.append(f"note: {d['note']}")
        out.append("\n" + "".join(f"- {n}\n" for n in notes) + "\n" + _provenance(d, name))
    return "".join(out)


def _median_spread(values: list[float]) -> str:
    import statistics

    med = statistics.median(values)
    return f"{med:,.1f}" if len(values) == 1 else f"{med:,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def unet_recipe() -> str:
    out = ["## What makes the U-Net learn fast: one lever at a time\n\n",
           "The U-Net of the time-to-quality table trained for a fixed wall-clock budget on 2 threads with one setting "
           "changed from the base recipe at a time (`benchmarks/unet_recipe.py`; the base and every change are listed "
           "there). FID of 500 digits drawn with DPM-Solver++(2M) SDE and with DDIM, 50 network calls each: the "
           "median over the seeds run, with the range in brackets. Rows are sorted by that median.\n\n"]
    path = RESULTS / "unet_recipe.json"
    if not path.exists():
        return "".join(out) + _missing("unet recipe", "python benchmarks/unet_recipe.py --recipes base min_snr")
    d = json.loads(path.read_text())
    groups: dict = {}
    for r in d["runs"]:
        groups.setdefault((r["budget_s"], r["threads"], r["recipe"]), []).append(r)
    import statistics

    rows = []
    for (budget, threads, name), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], statistics.median(r["fid"]["dpmpp2m_sde50"] for r in kv[1]))):
        changed = {k: v for k, v in rs[0]["settings"].items() if d["base"].get(k) != v and not
                   (isinstance(v, list) and list(d["base"].get(k, [])) == v)}
        rows.append([f"`{name}`", ", ".join(f"{k}={v}" for k, v in changed.items()) or "(base)", f"{budget:g} s",
                     len(rs), int(statistics.median(r["steps"] for r in rs)),
                     _median_spread([r["fid"]["dpmpp2m_sde50"] for r in rs]),
                     _median_spread([r["fid"]["ddim50"] for r in rs]),
                     float(statistics.median(r["confidence"]["dpmpp2m_sde50"] for r in rs))])
    out.append(_table(["recipe", "changed from the base", "budget", "seeds", "training steps",
                       "FID DPM-Solver++(2M) SDE", "FID DDIM", "classifier confidence"], rows))
    out.append(_recipe_samplers(groups))
    out.append(_grids_and_provenance(d, "unet_recipe", "unet_recipe_*s.png",
                                     "First seed's digits (DPM-Solver++(2M) SDE, 50 calls)"))
    return "".join(out)


SAMPLERS = {"dpmpp2m_sde50": "DPM-Solver++(2M) SDE, quadratic grid", "dpmpp2m_sde50_uniform":
            "DPM-Solver++(2M) SDE, uniform grid", "ancestral50": "ancestral (DDIM eta = 1)", "ddim50": "DDIM eta = 0"}


def _recipe_samplers(groups: dict) -> str:
    """Every sampler of ``unet_recipe.samplers`` on the same weights, for the recipes scored with all of them."""
    import statistics

    rows = []
    for (budget, _threads, name), rs in groups.items():
        rs = [r for r in rs if all(k in r["fid"] for k in SAMPLERS)]
        if rs:
            rows.append([f"`{name}`", f"{budget:g} s", len(rs)] +
                        [_median_spread([r["fid"][k] for r in rs]) for k in SAMPLERS])
    if not rows:
        return ""
    rows.sort(key=lambda row: (row[1], row[0]))
    return ("\n**The sampler, weights held fixed.** The same trained networks scored with four samplers of 50 network "
            "calls each (`unet_recipe.samplers`; `python benchmarks/unet_recipe.py --resample` scores a cached run "
            "with the samplers it lacks). FID median over seeds, range in brackets.\n\n" +
            _table(["recipe", "budget", "seeds"] + [f"FID {v}" for v in SAMPLERS.values()], rows))


def _grids_and_provenance(d: dict, name: str, pattern: str, caption: str) -> str:
    """The sample grids ``benchmarks/results/<pattern>`` as a list, then when, where and how the runs were made."""
    out = []
    grids = sorted(RESULTS.glob(pattern))
    if grids:
        out.append(f"\n{caption}:\n\n")
        prefix = pattern.split("*")[0]
        out += [f"- `{g.stem[len(prefix):]}`: ![{g.stem}](../benchmarks/results/{g.name})\n" for g in grids]
    dates = sorted(r["date"] for r in d["runs"])
    out.append(f"\n*Measured {dates[0]} to {dates[-1]} on {d['machine']}, torch {d['torch']}; each run's command is in "
               f"`benchmarks/results/{name}.json` (e.g. `{d['runs'][0]['command']}`).*\n")
    return "".join(out)


def unet_ablation() -> str:
    """Chapter 08's reference sweep (``benchmarks/unet_ablation.py``), shipped in ``minidiff/assets/reference``."""
    out = ["## The U-Net's parts at equal wall time (chapter 08)\n\n",
           "The full U-Net of the `cpu` profile (with attention at its lowest resolution), the same without attention, "
           "without skip connections, with an additive time embedding, and an MLP on flattened pixels, each trained "
           "for the same wall-clock seconds on 2 threads with chapter 04's recipe (`benchmarks/unet_ablation.py`; the "
           "recipe is the `cpu` profile's `unet` section). FID of 500 digits drawn with the profile's sampler: the "
           "mean over seeds with its 95% Student-t interval, and the range.\n\n"]
    path = HERE.parent / "minidiff" / "assets" / "reference" / "unet_ablation.json"
    if not path.exists():
        return "".join(out) + _missing("ablation", "python benchmarks/unet_ablation.py --seeds 0 1 2")
    import statistics

    sys.path.insert(0, str(HERE.parent))
    from minidiff.reference import mean_ci

    d = json.loads(path.read_text())
    rows = []
    for budget in sorted({r["budget_s"] for r in d["runs"]}):
        for name in ("full", "no attention", "no skips", "additive time", "MLP"):
            rs = [r for r in d["runs"] if r["variant"] == name and r["budget_s"] == budget]
            if rs:
                f = [r["fid"] for r in rs]
                rows.append([name, f"{budget:g} s", len(rs), rs[0]["params"], float(rs[0]["mflops"]),
                             int(statistics.median(r["steps"] for r in rs)), str(mean_ci(f)),
                             f"{min(f):.1f}-{max(f):.1f}", float(statistics.median(r["confidence"] for r in rs))])
    out.append(_table(["network", "budget", "seeds", "parameters", "MFLOPs / image", "training steps",
                       "FID (mean ± 95% CI)", "FID range", "classifier confidence"], rows))
    out.append(_reference_footer(d, "unet_ablation", "Seed 0's digits"))
    return "".join(out)


def dit_sweep() -> str:
    """Chapter 09's reference sweep (``benchmarks/dit_sweep.py``), shipped in ``minidiff/assets/reference``."""
    out = ["## DiT conditionings at equal compute, DiT sizes at equal steps (chapter 09)\n\n",
           "Class-conditional DiTs on the 7x7x4 latents of chapter 10's autoencoder, with chapter 04's recipe (the "
           "`cpu` profile's `dit` section; `benchmarks/dit_sweep.py`): the base DiT with each of the four "
           "conditionings, each trained for the base model's compute (steps x forward FLOPs), and the scaling sizes "
           "at equal steps, on 2 threads. FID of the digits drawn by the conditional model (as many of each "
           "label; how many: below the table): the mean over seeds with its 95% Student-t interval, and the range; "
           "accuracy is how often the shipped classifier reads the requested digit.\n\n"]
    path = HERE.parent / "minidiff" / "assets" / "reference" / "dit_sweep.json"
    if not path.exists():
        return "".join(out) + _missing("DiT sweep", "python benchmarks/dit_sweep.py --seeds 0 1 2")
    import statistics

    sys.path.insert(0, str(HERE.parent))
    from minidiff.reference import mean_ci

    d = json.loads(path.read_text())
    rec = d["recipe"]
    scaling = [f"{s}/{p}" for s, p in rec["scaling"]]
    base = f"{rec['base']}/{rec['base_patch']}"
    rows = []
    for name in [*rec["conditionings"], *(n for n in scaling if n != base)]:
        rs = [r for r in d["runs"] if r["model"] == name]
        if rs:
            f = [r["fid"] for r in rs]
            label = f"{base}, {name}" if name in rec["conditionings"] else f"{name}, adaln-zero"
            rows.append([label, len(rs), rs[0]["params"], float(rs[0]["gflops"]),
                         int(statistics.median(r["steps"] for r in rs)),
                         round(statistics.median(r["train_seconds"] for r in rs)), str(mean_ci(f)),
                         f"{min(f):.1f}-{max(f):.1f}", float(statistics.median(r["confidence"] for r in rs)),
                         float(statistics.median(r["accuracy"] for r in rs))])
    out.append(_table(["model, conditioning", "seeds", "parameters", "GFLOPs / image", "training steps",
                       "training s", "FID (mean ± 95% CI)", "FID range", "classifier confidence", "accuracy"], rows))
    out.append(f"\n{', '.join(sorted({str(r['samples']) for r in d['runs']}))} digits a run.\n")
    out.append(_reference_footer(d, "dit_sweep", "Seed 0's digits (each column asks for one digit, 0 to 9)"))
    return "".join(out)


def ssl_sweep() -> str:
    """Chapter 11's reference sweep (``benchmarks/ssl_sweep.py``), shipped in ``minidiff/assets/reference``."""
    out = ["## Self-supervised representations in diffusion training, equal steps and equal time (chapter 11)\n\n",
           "Unconditional latent denoisers (the `cpu` profile's `ssl_diffusion` section; `benchmarks/ssl_sweep.py`) trained "
           "by six recipes: the baseline, RCG (conditioned on chapter 02's frozen SimCLR representation, generated at "
           "sampling time by a small representation diffusion model), REPA, multi-task SimCLR with a dynamic and with "
           "a fixed weight, and the frozen encoder's features of the noisy input. Each run is read after all its steps "
           "and at the baseline's training time (its last EMA snapshot within the time of the same seed's baseline; "
           "RCG's representation model's training counts). FID of 500 unconditional digits: the mean over seeds with "
           "its 95% Student-t interval; *paired* is the recipe minus the baseline of the same seed.\n\n"]
    path = HERE.parent / "minidiff" / "assets" / "reference" / "ssl_sweep.json"
    if not path.exists():
        return "".join(out) + _missing("SSL sweep", "python benchmarks/ssl_sweep.py --seeds 0 1 2 --threads 1 --parallel 2")
    import statistics

    sys.path.insert(0, str(HERE.parent))
    from minidiff.reference import mean_ci

    d = json.loads(path.read_text())
    base = {r["seed"]: r for r in d["runs"] if r["recipe"] == "baseline"}
    rows = []
    for name in d["recipe"]["recipes"]:
        rs = [r for r in d["runs"] if r["recipe"] == name]
        if not rs:
            continue
        row = [name, len(rs), round(statistics.median(r["train_seconds"] + r["extra_seconds"] for r in rs))]
        for key in ("final", "equal_time"):
            got = [r for r in rs if key in r]          # a run with disturbed timing has no equal-time reading
            if not got:
                row += ["", "", "", ""]
                continue
            row += [int(statistics.median(r[key].get("step", r["steps"]) for r in got)),
                    str(mean_ci([r[key]["fid"] for r in got])),
                    "" if name == "baseline" else mean_ci([r[key]["fid"] - base[r["seed"]]["final"]["fid"]
                                                           for r in got if r["seed"] in base]).signed(),
                    float(statistics.median(r[key]["confidence"] for r in got))]
        rows.append(row)
    out.append(_table(["recipe", "seeds", "training s", "steps", "FID, equal steps", "paired", "confidence",
                       "steps at equal time", "FID, equal time", "paired", "confidence"], rows))
    backbone = d["recipe"].get("backbone", "dit")
    net = (f"latent U-Net of {d['recipe']['unet_channels']} channels" if backbone == "unet"
           else f"latent {d['recipe']['dit']}/{d['recipe']['patch']}")
    out.append(f"\nBackbone: the {net}. Two runs at a time on the 2 cores, one thread each; {d['recipe']['steps']:,} "
               f"steps; {', '.join(sorted({str(r['samples']) for r in d['runs']}))} digits a reading.\n")
    old = HERE.parent / "minidiff" / "assets" / "reference" / "ssl_sweep_dit.json"
    if backbone != "dit" and old.exists():              # the first backbone's sweep, kept for the comparison
        o = json.loads(old.read_text())
        b = [r for r in o["runs"] if r["recipe"] == "baseline"]
        out.append(f"\nThe same sweep on the first backbone, the latent {o['recipe']['dit']}/{o['recipe']['patch']} "
                   f"(`minidiff/assets/reference/ssl_sweep_dit.json`): its baseline took "
                   f"{statistics.median(r['train_seconds'] for r in b):.0f} s for {o['recipe']['steps']:,} steps and "
                   f"reached FID {mean_ci([r['final']['fid'] for r in b])}, confidence "
                   f"{statistics.median(r['final']['confidence'] for r in b):.2f}.\n")
    out.append(_reference_footer(d, "ssl_sweep", "Seed 0's digits after all steps"))
    return "".join(out)


def latent_to_quality() -> str:
    out = ["## Latent diffusion, DiT and guidance on a CPU\n\n",
           "Models trained on the 7x7x4 latents of a small autoencoder or on pixels for the same wall-clock budget on "
           "2 threads (`benchmarks/latent_to_quality.py`, whose docstring gives every setting); the autoencoder's "
           "own training time and its reconstruction FID (what encoding and decoding alone cost) are stated. "
           "Guidance scale `w`: `eps_null + w (eps_label - eps_null)`, so w = 0 is unconditional and w = 1 the "
           "conditional model; this is diffusers' `guidance_scale`, and Ho and Salimans' (2022) `w` is ours minus 1 "
           "(their `(1 + w) eps_label - w eps_null`). Accuracy is the fraction of guided digits the shipped "
           "classifier reads as the requested one. "
           "FID of 500 digits, DPM-Solver++(2M) SDE with 50 steps: the median over seeds with the range.\n\n"]
    path = RESULTS / "latent_to_quality.json"
    if not path.exists():
        return "".join(out) + _missing("latent", "python benchmarks/latent_to_quality.py --models latent-dit")
    import statistics

    d = json.loads(path.read_text())
    groups: dict = {}
    for r in d["runs"]:
        for key in r["results"]:
            groups.setdefault((r["budget_s"], r["model"], key), []).append(r)
    rows = []
    for (budget, model, key), rs in sorted(groups.items()):
        res = [r["results"][key] for r in rs]
        ae = [r for r in rs if "ae_seconds" in r]
        rows.append([f"`{model}`", key, f"{budget:g} s", len(rs), int(statistics.median(r["params"] for r in rs)),
                     int(statistics.median(r["steps"] for r in rs)),
                     (f"{statistics.median(r['ae_seconds'] for r in ae):.0f} s, FID "
                      f"{statistics.median(r['ae_recon_fid'] for r in ae):.1f}") if ae else "-",
                     _median_spread([x["fid"] for x in res]),
                     _median_spread([100 * x["accuracy"] for x in res]) if "accuracy" in res[0] else "-",
                     float(statistics.median(x["confidence"] for x in res))])
    out.append(_table(["model", "guidance", "budget", "seeds", "parameters", "training steps",
                       "autoencoder (training, reconstruction FID)", "FID", "requested-digit accuracy (%)",
                       "classifier confidence"], rows))
    curves = [(r["model"], r["seed"], r["budget_s"], r["curve"]) for r in d["runs"] if r.get("curve")]
    if curves:
        out.append("\nFID of 200 digits (25 solver steps) against training seconds, per run:\n\n")
        out.append(_table(["model", "seed", "budget", "FID at training seconds"],
                          [[f"`{m}`", s, f"{b:g} s", ", ".join(f"{c['seconds']:.0f} s: {c['fid200']:.0f}"
                                                                for c in cv)] for m, s, b, cv in curves]))
    for fig in sorted(RESULTS.glob("curves_latent_*s.png")):
        out.append(f"\n```{{figure}} ../benchmarks/results/{fig.name}\n:alt: FID and training loss against training "
                   f"seconds for each unconditional latent model\n\nUnconditional DiT and U-Net on the same latents at "
                   f"equal wall time ({fig.stem.rsplit('_', 1)[-1]}): FID of 200 digits and the training loss against "
                   f"training seconds, one line per run.\n```\n")
    out.append(_grids_and_provenance(d, "latent_to_quality", "latent_*s_*.png",
                                     "First seed's digits (guided grids: one column per requested digit 0-9)"))
    return "".join(out)


def recipe_vs_implementation() -> str:
    """Separate what minidiff's recipe buys from what its implementation buys (issue 18, target 4): a peer network as
    its documentation trains it, the same peer network with minidiff's whole recipe, and minidiff's network with it."""
    import statistics

    out = ["## What the recipe buys and what the implementation buys\n\n",
           "Each peer library twice: as its own documentation sets it up (the time-to-quality table), and as a "
           "network of about minidiff's size trained with minidiff's whole recipe (optimizer, schedule, clock-annealed "
           "learning rate, EMA, loss weighting, sampler, clock). The first ratio is what the recipe buys, the second "
           "what the implementation buys at an equal recipe: FID and training steps in the same wall-clock budget "
           "on the same 2 threads. A ratio below 1 means minidiff's side is worse.\n\n"]
    rows, notes = [], []

    def med(rs, f):
        return statistics.median(f(r) for r in rs)

    ttq = next((d for _, d in _load("time_to_quality_*s.json") if d["budget_s"] == 300), None)
    ur = RESULTS / "unet_recipe.json"
    urs = json.loads(ur.read_text())["runs"] if ur.exists() else []
    mine = [r for r in urs if r["recipe"] == "min_snr" and r["budget_s"] == 300]
    peer = [r for r in urs if r["recipe"] == "min_snr+diffusers_net" and r["budget_s"] == 300]
    doc = next((r for r in ttq["rows"] if r["contender"] == "diffusers"), None) if ttq else None
    if doc:
        rows.append(["U-Net, pixels, 300 s", "diffusers `UNet2DModel`", "its documentation's", 1, doc["params"],
                     doc["train_steps"], float(doc["fid"]), "-"])
    for label, net, rs in (("diffusers `UNet2DModel`", "diffusers", peer), ("minidiff `UNet`", "minidiff", mine)):
        if rs:
            rows.append(["U-Net, pixels, 300 s", label, "minidiff's", len(rs), int(med(rs, lambda r: r["params"])),
                         int(med(rs, lambda r: r["steps"])), _median_spread([r["fid"]["ddim50"] for r in rs]),
                         _median_spread([r["fid"]["dpmpp2m_sde50"] for r in rs])])
    if doc and peer:
        notes.append(f"U-Net, the recipe: diffusers' network as documented / with minidiff's recipe, FID with DDIM-50: "
                     f"**{doc['fid'] / med(peer, lambda r: r['fid']['ddim50']):.1f}x** (the documented setup is also "
                     f"a larger network, {doc['params']:,} parameters: the recipe includes the size)")
    if peer and mine:
        notes.append(f"U-Net, the implementation at an equal recipe: FID (DPM-Solver++ SDE) diffusers / minidiff "
                     f"**{med(peer, lambda r: r['fid']['dpmpp2m_sde50']) / med(mine, lambda r: r['fid']['dpmpp2m_sde50']):.2f}x**"
                     f", training steps minidiff / diffusers **{med(mine, lambda r: r['steps']) / med(peer, lambda r: r['steps']):.2f}x**")
    lq = RESULTS / "latent_to_quality.json"
    lrs = json.loads(lq.read_text())["runs"] if lq.exists() else []
    dit = {m: [r for r in lrs if r["model"] == m and r["budget_s"] == 600] for m in
           ("latent-dit-b64-diffusers", "latent-dit-b64")}
    for label, m in (("diffusers `DiTTransformer2DModel`", "latent-dit-b64-diffusers"), ("minidiff `DiT`", "latent-dit-b64")):
        if dit[m] and dit["latent-dit-b64-diffusers"]:
            rs = dit[m]
            rows.append(["DiT-Mini/1, latents, 600 s", label, "minidiff's", len(rs), int(med(rs, lambda r: r["params"])),
                         int(med(rs, lambda r: r["steps"])), "-",
                         _median_spread([r["results"]["unguided"]["fid"] for r in rs])])
    if all(dit.values()):
        a, b = dit["latent-dit-b64-diffusers"], dit["latent-dit-b64"]
        notes.append(f"DiT, the implementation at an equal recipe: FID diffusers / minidiff "
                     f"**{med(a, lambda r: r['results']['unguided']['fid']) / med(b, lambda r: r['results']['unguided']['fid']):.2f}x**"
                     f", training steps minidiff / diffusers **{med(b, lambda r: r['steps']) / med(a, lambda r: r['steps']):.2f}x**"
                     " (diffusers has no documented CPU recipe for a DiT, so there is no first ratio)")
        pairs = sorted(({r["seed"]: r for r in a}.keys() & {r["seed"]: r for r in b}.keys()))
        if pairs:
            by_a, by_b = {r["seed"]: r for r in a}, {r["seed"]: r for r in b}
            notes.append("DiT, paired by seed (the two networks of a seed trained back to back, so they share the "
                         "machine's speed on that day; the steps of different days differ): FID diffusers / minidiff "
                         + ", ".join(f"{by_a[s]['results']['unguided']['fid'] / by_b[s]['results']['unguided']['fid']:.2f}x"
                                     for s in pairs)
                         + "; training steps minidiff / diffusers "
                         + ", ".join(f"{by_b[s]['steps'] / by_a[s]['steps']:.2f}x" for s in pairs)
                         + f" (seeds {', '.join(map(str, pairs))})")
    if not rows:
        return "".join(out) + _missing("recipe vs implementation",
                                       "python benchmarks/unet_recipe.py --recipes min_snr min_snr+diffusers_net")
    out.append(_table(["model, budget", "network", "recipe", "seeds", "parameters", "training steps",
                       "FID DDIM-50", "FID DPM-Solver++(2M) SDE"], rows))
    out += [f"\n- {n}" for n in notes]
    out.append("\n")
    return "".join(out)


def train_throughput() -> str:
    out = ["## Training throughput\n\n",
           "Images per second of a full training step (forward, loss, backward, AdamW) at the same shape, batch and "
           "precision; `ratio` is the best minidiff row over diffusers' eager model.\n\n"]
    runs = _load("train_throughput_*.json")
    if not runs:
        return "".join(out) + _missing("throughput", "python benchmarks/train_throughput.py")
    for name, d in runs:
        cols = [c for c in ("diffusers eager", "minidiff eager", "minidiff fast", "minidiff fast + compile")
                if c in d["rows"][0]]
        out.append(f"\n### {d['machine']} ({d['precision']})\n\n")
        out.append(_table(["shape", "batch", "parameters minidiff / diffusers"] + cols + ["ratio"],
                          [[r["shape"], r["batch"], f"{r['params_minidiff']:,} / {r['params_diffusers']:,}"]
                           + [float(r[c]) for c in cols] + [float(r["ratio"])] for r in d["rows"]]))
        out.append("\n" + _provenance(d, name))
    return "".join(out)


def ssl() -> str:
    out = ["## Self-supervised learning against the clock\n\n",
           "kNN accuracy of SimCLR's encoder on the 1,000 held-out digits as training time grows (evaluation time "
           "not counted), next to a random encoder of the same architecture and kNN on raw pixels.\n\n"]
    runs = _load("ssl_knn_time_*.json")
    if not runs:
        return "".join(out) + _missing("ssl", "python benchmarks/ssl_knn_time.py")
    for name, d in runs:
        out.append(f"\n### {d['machine']}, `{d['profile']}` sizes, batch {d['batch']}\n\n")
        rows = [[c["step"], float(c["seconds"]), float(c["knn"])] for c in d["curve"]]
        rows += [[f"*{k}*", "", float(v)] for k, v in d["baselines"].items()]
        out.append(_table(["step", "training s", "kNN accuracy"], rows))
        out.append(f"\n{d['steps']:,} steps, {d['views_per_s']:,.0f} views/s.\n")
        if d.get("resnet18"):
            out.append("\n" + _table(["ResNet-18 SimCLR", "views/s"], [[k, float(v)] for k, v in d["resnet18"].items()]))
        out.append("\n" + _provenance(d, name))
    return "".join(out)


def kernels() -> str:
    out = ["## Fused kernels\n\n",
           "Median time of each Triton kernel against torch eager and `torch.compile` of its reference, and the "
           "bandwidth it achieves as a fraction of a device-to-device copy measured in the same run.\n\n"]
    runs = [(n, d) for n, d in _load("kernels_*.json") if n != "kernels_smoke.json"]
    if not runs:
        return "".join(out) + ("Not measured yet: this needs a CUDA GPU. Run `python benchmarks/bench_kernels.py` "
                               "on one (no GPU was available where this page was built).\n")
    for name, d in runs:
        out.append(f"\n### {d['device']} (copy: {d['copy_gb_s']:,.0f} GB/s)\n\n")
        out.append(_table(["kernel", "size", "Triton µs", "GB/s", "% of copy", "× eager", "× compile"],
                          [[r["kernel"], r["size"], 1e6 * r["triton_s"], float(r["gb_s"]), float(r["pct_copy"]),
                            float(r["speedup_eager"]), float(r["speedup_compile"])] for r in d["rows"]]))
        out.append("\n" + _provenance(d, name))
    return "".join(out)


def ddp_scaling() -> str:
    out = ["## Data parallelism on two CPU processes\n\n",
           "Chapter 04's training step (the package's `Step`, DistributedDataParallel under `torchrun` over gloo) at "
           "the `cpu` profile's global batch: one process with one thread, one process with two threads, and two "
           "processes with one thread each, each configuration launched several times (median and range). The "
           "all-reduce share is the time of one all-reduce of the gradients' bytes between the two processes, alone, "
           "over a step: an upper bound of what DDP cannot overlap with the backward pass (chapter 12, section 6).\n\n"]
    path = HERE.parent / "minidiff" / "assets" / "reference" / "ddp_scaling.json"
    if not path.exists():
        return "".join(out) + _missing("ddp", "python benchmarks/ddp_scaling.py")
    d = json.loads(path.read_text())
    out.append(_table(["processes x threads", "s / step", "images / s", "range", "speed-up", "all-reduce share"],
                      [[f"{r['processes']} x {r['threads']}", float(r["step_s"]), float(r["images_per_s"]),
                        "{:.0f}-{:.0f}".format(*r["images_per_s_range"]), f"{r['speedup']:.2f}x",
                        f"{100 * r['allreduce_share']:.1f}%" if "allreduce_share" in r else "-"] for r in d["runs"]]))
    out.append(f"\n{d['runs'][0]['params']:,} parameters: {d['gradient_bytes'] / 1e6:.2f} MB of fp32 gradients "
               f"all-reduced per step; {d['steps']} timed steps per launch.\n\n"
               f"*Measured {d['date']} on {d['machine']}, torch {d['torch']}; command `{d['command']}`; data "
               "`minidiff/assets/reference/ddp_scaling.json`.*\n")
    return "".join(out)


GPU_CHECK_JSON = "gpu_check.json"


def _gpu_check_script():
    """``scripts/gpu_check.py`` as a module: its ``summary_rows`` make the table, the same one it prints."""
    spec = importlib.util.spec_from_file_location("gpu_check", HERE.parent / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gpu_check() -> str:
    out = ["## GPU check\n\n",
           "`make gpu-check` (`scripts/gpu_check.py`) runs on one CUDA GPU, offline, in at most 8 minutes: every "
           "Triton kernel compiled against its torch reference in fp32, fp16 and bf16 (forward and backward), each "
           "kernel's bandwidth against a copy of the same bytes and its time against `torch.compile` of its reference, "
           "the U-Net and the DiT trained 50 steps with AMP, channels_last, `torch.compile` and fused AdamW (the DiT killed "
           "mid-run and resumed), and every chapter in the `gpu` profile under `MINIDIFF_SMOKE=1` (capped budgets, "
           "offline data).\n\n"]
    path = RESULTS / GPU_CHECK_JSON
    if not path.exists():
        return "".join(out) + ("The GPU check has not run yet: no GPU has been available to this project so far. On a "
                               "machine with one CUDA GPU run `make gpu-check`; it writes "
                               f"`benchmarks/results/{GPU_CHECK_JSON}`, and this section then shows its table.\n")
    d = json.loads(path.read_text())
    where = d["gpu"] if d.get("mode") != "cpu" else "CPU path (no GPU)"
    out.append(f"\n### {where}: {'passed' if d['ok'] else 'FAILED'} in {d['total_s']:.0f} s\n\n")
    cell = lambda v: " ".join(str(v).split()).replace("|", "\\|")   # noqa: E731  (one line, no column breaks)
    out.append(_table(["part", "item", "result", "detail"],
                      [[cell(v) for v in row] for row in _gpu_check_script().summary_rows(d)]))
    out.append(f"\nTriton {d.get('triton')}, CUDA {d.get('cuda')}, Python {d.get('python')}.\n\n"
               + _provenance(d, GPU_CHECK_JSON))
    return "".join(out)


def ddpm_fid() -> str:
    out = ["## DDPM sample quality across seeds\n\n",
           "Chapter 04's pipeline for one profile and several seeds (`benchmarks/ddpm_fid.py`).\n\n"]
    runs = _load("ddpm_fid_*.json")
    if not runs:
        return "".join(out) + _missing("ddpm", "python benchmarks/ddpm_fid.py --profile ci --seeds 0 1 2")
    for name, d in runs:
        prof = d["runs"][0]["profile"] if d["runs"] else "?"
        out.append(f"\n### profile `{prof}` ({d['machine']}, {d['threads']} threads, torch {d['torch']})\n\n")
        out.append(_table(["seed", "steps", "training s", "sampling s", "FID samples", "FID real", "FID blurred",
                           "FID noise"],
                          [[r["seed"], r["train_steps"], float(r["train_seconds"]), float(r["sample_seconds"]),
                            float(r["fid"]["samples"]), float(r["fid"]["real"]), float(r["fid"]["blurred"]),
                            float(r["fid"]["noise"])] for r in d["runs"]]))
        out.append(f"\n*Data `benchmarks/results/{name}`; command "
                   f"`python benchmarks/ddpm_fid.py --profile {prof} --seeds "
                   + " ".join(str(r["seed"]) for r in d["runs"]) + "`.*\n")
    return "".join(out)


def flow_vs_ddpm() -> str:
    """Chapter 13's reference run (``benchmarks/flow_vs_ddpm.py``), shipped in ``minidiff/assets/reference``."""
    out = ["## Flow matching against DDPM at equal wall time (chapter 13)\n\n",
           "Chapter 04's U-Net (the `cpu` profile's `ddpm` network) trained for the same wall-clock seconds on 2 "
           "threads with the same optimisation (the `cpu` profile's `flow` section), with flow matching (linear path, "
           "logit-normal times) or with chapter 04's DDPM recipe, predicting epsilon as chapter 04 does or v "
           "(`benchmarks/flow_vs_ddpm.py`). Every deterministic "
           "sampler of each model draws 500 digits from the same noise at each number of network calls; the flow "
           "model then does one reflow round (couplings from its ODE, half the budget again of training on them). "
           "FID: the mean over seeds with its 95% Student-t interval, and the range; the chord ratio (1 for "
           "straight paths) is that of 16-call paths.\n\n"]
    path = HERE.parent / "minidiff" / "assets" / "reference" / "flow_vs_ddpm.json"
    if not path.exists():
        return "".join(out) + _missing("flow vs DDPM", "python benchmarks/flow_vs_ddpm.py --seeds 0 1 2")
    import statistics

    sys.path.insert(0, str(HERE.parent))
    from minidiff.reference import mean_ci

    d = json.loads(path.read_text())
    rows = []
    label = {"flow": "flow", "ddpm": "DDPM, eps", "ddpm-v": "DDPM, v"}
    for method in label:
        rs = [r for r in d["runs"] if r["method"] == method]
        if not rs:
            continue
        steps = int(statistics.median(r["steps"] for r in rs))
        for sampler in dict.fromkeys(f["sampler"] for r in rs for f in r["fids"]):
            for n in sorted({f["nfe"] for r in rs for f in r["fids"] if f["sampler"] == sampler}):
                f = [x["fid"] for r in rs for x in r["fids"] if x["sampler"] == sampler and x["nfe"] == n]
                rows.append([label[method], steps, sampler, n, len(f), str(mean_ci(f)), f"{min(f):.1f}-{max(f):.1f}"])
        if all("reflow" in r for r in rs):
            for n in sorted({x["nfe"] for r in rs for x in r["reflow"]["fids"]}):
                f = [x["fid"] for r in rs for x in r["reflow"]["fids"] if x["nfe"] == n]
                rows.append(["flow + reflow", int(statistics.median(r["reflow"]["steps"] for r in rs)),
                             "flow Euler", n, len(f), str(mean_ci(f)), f"{min(f):.1f}-{max(f):.1f}"])
    out.append(_table(["model", "training steps", "sampler", "network calls", "seeds", "FID (mean ± 95% CI)",
                       "FID range"], rows))
    chords = []
    for method in label:
        rs = [r for r in d["runs"] if r["method"] == method]
        if rs:
            chords.append(f"{label[method]} ({rs[0]['path_sampler']}) {mean_ci([r['chord_ratio'] for r in rs]):.3f}")
    rf = [r["reflow"] for r in d["runs"] if r["method"] == "flow" and "reflow" in r]
    if rf:
        chords.append(f"flow after reflow {mean_ci([r['chord_ratio'] for r in rf]):.3f}")
        out.append(f"\nReflow's cost per run: {statistics.median(r['coupling_seconds'] for r in rf):.0f} s to draw "
                   f"{rf[0]['pairs']:,} couplings ({rf[0]['coupling_steps']} Heun steps) and "
                   f"{statistics.median(r['train_seconds'] for r in rf):.0f} s of training (medians).\n")
    out.append(f"\nChord ratio of the sampled paths: {'; '.join(chords)}.\n")
    out.append(_reference_footer(d, "flow_vs_ddpm", "Seed 0's digits (sampler and network calls)"))
    return "".join(out)


def render() -> str:
    return "\n".join([INTRO, time_to_quality(), unet_recipe(), unet_ablation(), dit_sweep(), ssl_sweep(),
                      flow_vs_ddpm(), latent_to_quality(),
                      recipe_vs_implementation(),
                      train_throughput(), ddp_scaling(), ssl(), kernels(), gpu_check(), ddpm_fid()])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python benchmarks/render_results.py")
            sys.exit(1)
        print(f"{PAGE} is up to date")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
