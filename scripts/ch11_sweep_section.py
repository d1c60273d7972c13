"""Write chapter 11's section "What the sweep shows" from the reference sweep's JSON.

    .venv/bin/python scripts/ch11_sweep_section.py          # rewrite the cell in chapters/11_ssl_meets_diffusion.ipynb
    .venv/bin/python scripts/ch11_sweep_section.py --print  # print it

Every number and every verdict of that section (lower/higher beyond the spread, not separable, in the regime or not)
is computed here from ``minidiff/assets/reference/ssl_sweep.json`` (and, for the backbone paragraph,
``ssl_sweep_dit.json``, the same sweep on the first backbone), so the text cannot drift from the file:
``tests/test_results_page.py`` regenerates the section and requires the notebook's cell to be identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTEBOOK = ROOT / "chapters" / "11_ssl_meets_diffusion.ipynb"
HEADING = "## What the sweep shows"
REGIME = (80.0, 0.9)                 # FID at most, classifier confidence at least (the course's "draws digits")


def _load(name):
    from minidiff.reference import load

    return load(name)


def _paired_word(p, n):
    lo, hi = p.mean - p.ci95, p.mean + p.ci95
    if n < 2:
        return f"{p.signed()} FID from one seed: not a result"
    if hi < 0:
        edge = " (barely: the interval ends within 1 FID of zero)" if hi > -1 else ""
        return f"{p.signed()} FID against the baseline (paired, {n} seeds): lower beyond the spread{edge}"
    if lo > 0:
        edge = " (barely: the interval starts within 1 FID of zero)" if lo < 1 else ""
        return f"{p.signed()} FID against the baseline (paired, {n} seeds): higher beyond the spread{edge}"
    return f"{p.signed()} FID against the baseline (paired, {n} seeds): the interval includes zero"


def _short(p, n):
    if n >= 2 and p.mean + p.ci95 < 0:
        return "better beyond the spread"
    if n >= 2 and p.mean - p.ci95 > 0:
        return "worse beyond the spread"
    return "not separable from the baseline"


def _pooled_mdd(runs, base, key, keep):
    from minidiff.reference import min_detectable_difference

    diffs = {}
    for r in runs:
        if r["recipe"] != "baseline" and key in r and keep(r["recipe"]):
            diffs.setdefault(r["recipe"], []).append(r[key]["fid"] - base[r["seed"]]["final"]["fid"])
    resid = [d - sum(v) / len(v) for v in diffs.values() for d in v]
    sd = (sum(x * x for x in resid) / sum(len(v) - 1 for v in diffs.values())) ** 0.5
    return min_detectable_difference(sd, len(base)), sd


def _seeds_for(sd, base_fid, share=0.2):
    """How many seeds a paired design needs to detect ``share`` of the baseline's FID with 80% power."""
    from minidiff.reference import min_detectable_difference

    return next(k for k in range(2, 10_000) if min_detectable_difference(sd, k) <= share * base_fid)


def stats(d):
    """Per recipe and reading: FID mean_ci, paired mean_ci, confidence mean, median steps, seeds; and the rows."""
    from minidiff.recipes import SSL_RECIPES
    from minidiff.reference import mean_ci

    runs = d["runs"]
    base = {r["seed"]: r for r in runs if r["recipe"] == "baseline"}
    out, rows = {}, []
    for name in d["recipe"]["recipes"]:
        rs = [r for r in runs if r["recipe"] == name]
        if not rs:
            continue
        st = {"n": len(rs), "seconds": statistics.median(r["train_seconds"] + r["extra_seconds"] for r in rs),
              "train_seconds": statistics.median(r["train_seconds"] for r in rs)}
        cells = [SSL_RECIPES[name], str(len(rs)), f"{st['seconds']:.0f}"]
        for key in ("final", "equal_time"):
            got = [r for r in rs if key in r]
            if not got:
                cells += ["–", "–", "–"]
                continue
            st[key] = {"fid": mean_ci([r[key]["fid"] for r in got]), "n": len(got),
                       "paired": mean_ci([r[key]["fid"] - base[r["seed"]]["final"]["fid"] for r in got]),
                       "confidence": statistics.mean(r[key]["confidence"] for r in got),
                       "steps": statistics.median(r[key].get("step", r["steps"]) for r in got)}
            cells += [f"{st[key]['steps']:,.0f}", str(st[key]["fid"]),
                      "–" if name == "baseline" else st[key]["paired"].signed()]
        out[name] = st
        rows.append("| " + " | ".join(cells) + " |")
    return out, rows, base


def section() -> str:
    from minidiff.recipes import SSL_RECIPES
    from minidiff.reference import mean_ci

    d = _load("ssl_sweep")
    runs, rec = d["runs"], d["recipe"]
    st, rows, base = stats(d)
    base_fid = statistics.mean(r["final"]["fid"] for r in base.values())
    in_regime = {n: s["final"]["fid"].mean <= REGIME[0] and s["final"]["confidence"] >= REGIME[1]
                 for n, s in st.items()}
    L = [HEADING, ""]
    seeds = " ".join(str(k) for k in sorted({r["seed"] for r in runs}))
    L.append(f"`benchmarks/ssl_sweep.py --seeds {seeds} --threads 1 --parallel 2` ({d['machine']}, two runs at a time, "
             f"one thread each; {rec['steps']:,} steps, "
             f"{'/'.join(str(k) for k in sorted({r['samples'] for r in runs}))} digits a reading). FID mean ± 95% interval over seeds; "
             "*vs baseline* is the paired difference, recipe minus the baseline of the same seed; *steps* at equal "
             "time is the median step each recipe had reached when its training time (plus the representation "
             "model's, for RCG) matched the baseline's; *confidence* is the classifier's mean confidence at equal "
             "steps:")
    L.append("")
    L.append("| recipe | seeds | training s | steps | FID, equal steps | vs baseline | steps | FID, equal time | "
             "vs baseline |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    L += rows
    L.append("")
    good = [SSL_RECIPES[n] for n in st if in_regime[n]]

    def why(n):
        f, c = st[n]["final"]["fid"].mean, st[n]["final"]["confidence"]
        return "; ".join(x for x in (f"FID {f:.1f}" if f > REGIME[0] else "",
                                     f"confidence {c:.2f}" if c < REGIME[1] else "") if x)

    bad = [f"{SSL_RECIPES[n]} ({why(n)})" for n in st if not in_regime[n]]
    L.append(f"**Where the models are.** The regime the course asks for is a mean FID of at most {REGIME[0]:.0f} with "
             f"a classifier confidence of at least {REGIME[1]}. At equal steps "
             + ("every recipe is in it" if not bad else
                f"in it: {'; '.join(good) or 'none'}; outside it: {'; '.join(bad)}")
             + ". Classifier confidence at equal steps: "
             + "; ".join(f"{SSL_RECIPES[n]} {s['final']['confidence']:.2f}" for n, s in st.items()) + ".")
    L.append("")
    try:
        old = _load("ssl_sweep_dit")
    except FileNotFoundError:
        old = None
    if old is not None and rec.get("backbone", "dit") != "dit":
        ob = [r for r in old["runs"] if r["recipe"] == "baseline"]
        ost, _, _ = stats(old)
        old_in = {n for n, s in ost.items()
                  if s["final"]["fid"].mean <= REGIME[0] and s["final"]["confidence"] >= REGIME[1]}
        oin = [f"{SSL_RECIPES[n].split(' (')[0]} (FID {ost[n]['final']['fid']})" for n in ost if n in old_in]
        verdict = (": short of the regime, which " + (f"only {' and '.join(oin)} reached" if oin else "no recipe reached")
                   + ". A baseline that does not draw digits makes every comparison with it weak, so the chapter "
                     "moved to the backbone that does." if "baseline" not in old_in else
                   ", in the regime too; the U-Net trains faster.")
        L.append(f"**Why not the DiT.** The same sweep on chapter 09's latent {old['recipe']['dit']}/"
                 f"{old['recipe']['patch']} (shipped as the reference run `ssl_sweep_dit`, same recipe and "
                 f"{old['recipe']['steps']:,} steps) took {statistics.median(r['train_seconds'] for r in ob):.0f} s per "
                 f"baseline run against the U-Net's {st['baseline']['train_seconds']:.0f} s, and its baseline reached FID "
                 f"{mean_ci([r['final']['fid'] for r in ob])} at confidence "
                 f"{statistics.mean(r['final']['confidence'] for r in ob):.2f}" + verdict)
        L.append("")
    L.append("**Reading it, recipe by recipe.**")
    L.append("")
    sec = {n: s["train_seconds"] for n, s in st.items()}
    if "rcg" in st:
        s = st["rcg"]
        rdm = statistics.median(r["extra_seconds"] for r in runs if r["recipe"] == "rcg")
        dit = [r["fid"] for r in _load("dit_sweep")["runs"] if r["model"] == "adaln-zero" and r["threads"] == 2]
        L.append(f"- **RCG** — equal steps: {_paired_word(s['final']['paired'], s['final']['n'])}; equal time: "
                 f"{_paired_word(s['equal_time']['paired'], s['equal_time']['n'])}. Extra training cost: {rdm:.0f} s "
                 f"for the representation model, and {s['train_seconds'] / st['baseline']['train_seconds']:.2f} times the "
                 "baseline's training time for the same steps"
                 + (f" (sampling with guidance at scale {rec['rcg_guidance']} costs two network evaluations per "
                    "step)" if rec["rcg_guidance"] > 1 else "")
                 + ". For scale: chapter 09's "
                 f"class-conditional DiT-Mini/1 reached FID {mean_ci(dit)} at 3,000 steps in its sweep; RCG uses no "
                 "label anywhere (the encoder, the representation model and the image model all train on unlabelled "
                 "digits).")
        ung = [r for r in runs if r["recipe"] == "rcg" and "unguided" in r["final"]]
        if len(ung) >= 2:
            fid_u = mean_ci([r["final"]["unguided"]["fid"] for r in ung])
            conf_u = statistics.mean(r["final"]["unguided"]["confidence"] for r in ung)
            vs_base = mean_ci([r["final"]["unguided"]["fid"] - base[r["seed"]]["final"]["fid"] for r in ung])
            vs_guided = mean_ci([r["final"]["unguided"]["fid"] - r["final"]["fid"] for r in ung])
            L[-1] += (f" The same weights sampled without guidance (recorded for {len(ung)} seeds): FID {fid_u}, "
                      f"confidence {conf_u:.2f}; {_paired_word(vs_base, len(ung))}")
            lo, hi = vs_guided.mean - vs_guided.ci95, vs_guided.mean + vs_guided.ci95
            if hi < 0:
                L[-1] += (f"; and {vs_guided.signed()} FID against guided sampling of the same weights (paired): "
                          "guidance buys confidence with diversity, and FID counts the diversity.")
            elif lo > 0:
                L[-1] += f"; and {vs_guided.signed()} FID against guided sampling (paired): guidance helps FID too."
            else:
                L[-1] += (f"; and {vs_guided.signed()} FID against guided sampling (paired): the seeds do not separate "
                          "the two.")
    if "repa" in st:
        s = st["repa"]
        L.append(f"- **REPA** — equal steps: {_paired_word(s['final']['paired'], s['final']['n'])}; equal time: "
                 f"{_paired_word(s['equal_time']['paired'], s['equal_time']['n'])}. A step costs "
                 f"{100 * (sec['repa'] / sec['baseline'] - 1):.0f}% more (the frozen encoder runs on every batch, the "
                 f"projector trains), so at the baseline's time it had run about {s['equal_time']['steps']:,.0f} "
                 "steps.")
    if "noisy-features" in st:
        s = st["noisy-features"]
        L.append(f"- **SSL features of x_t** — equal steps: {_paired_word(s['final']['paired'], s['final']['n'])}; "
                 f"equal time: {_paired_word(s['equal_time']['paired'], s['equal_time']['n'])}. A step costs "
                 f"{100 * (sec['noisy-features'] / sec['baseline'] - 1):.0f}% more (every network call decodes the "
                 "noisy latent and runs the encoder on it).")
    for n in ("multitask-dynamic", "multitask-fixed"):
        if n not in st:
            continue
        s = st[n]
        line = (f"- **{SSL_RECIPES[n]}** — equal steps: {_paired_word(s['final']['paired'], s['final']['n'])}; "
                f"equal time: {_paired_word(s['equal_time']['paired'], s['equal_time']['n'])}.")
        if n == "multitask-dynamic":
            line += (f" A step costs {sec[n] / sec['baseline']:.1f} times the baseline's (each batch is augmented "
                     "twice in pixels, encoded to latents and passed through the shared blocks again for the "
                     f"contrastive loss), so at the baseline's time it had run about {s['equal_time']['steps']:,.0f} "
                     "steps.")
        elif "multitask-dynamic" in st:
            fixed = {r["seed"]: r for r in runs if r["recipe"] == "multitask-fixed"}
            dvf = mean_ci([r["final"]["fid"] - fixed[r["seed"]]["final"]["fid"] for r in runs
                           if r["recipe"] == "multitask-dynamic" and r["seed"] in fixed])
            lo, hi = dvf.mean - dvf.ci95, dvf.mean + dvf.ci95
            word = ("the dynamic schedule is better beyond the spread" if hi < 0 else
                    "the dynamic schedule is worse beyond the spread" if lo > 0 else
                    "the interval includes zero: the seeds do not separate the two schedules")
            sign = dvf.signed() if abs(dvf.mean) >= 0.05 else f"0.0 ± {dvf.ci95:.1f}"
            line += (f" Dynamic against fixed weight (the source article's proposal against its control): "
                     f"{sign} FID at equal steps, paired by seed: {word}.")
        L.append(line)
    L.append("")
    m1, sd1 = _pooled_mdd(runs, base, "final", lambda n: True)
    m2, sd2 = _pooled_mdd(runs, base, "equal_time", lambda n: True)
    c1, sc1 = _pooled_mdd(runs, base, "final", lambda n: not n.startswith("multitask"))
    c2, sc2 = _pooled_mdd(runs, base, "equal_time", lambda n: not n.startswith("multitask"))
    small = max(m1, m2, c1, c2) <= 0.2 * base_fid
    L.append(f"**How sure.** With {len(base)} seeds and paired differences whose spread is {sd1:.1f} FID at equal "
             f"steps and {sd2:.1f} at equal time (pooled over the recipes), a paired $t$-test at level 0.05 detects "
             f"with 80% probability differences of at least {m1:.1f} FID at equal steps ({100 * m1 / base_fid:.0f}% of "
             f"the baseline's {base_fid:.1f}) and {m2:.1f} FID at equal time ({100 * m2 / base_fid:.0f}% of the "
             f"baseline's {base_fid:.1f}). Pooled without the multi-task pair (spread {sc1:.1f} and {sc2:.1f}) the "
             f"design detects {c1:.1f} FID ({100 * c1 / base_fid:.0f}%) at equal steps and {c2:.1f} FID "
             f"({100 * c2 / base_fid:.0f}%) at equal time. "
             + ("All of these are within 20% of the baseline's FID." if small else
                "That is above 20% of the baseline's FID: smaller effects pass unseen. "
                + (f"The sweep has {len(base)} seeds instead of the planned 3 for this reason; to" if len(base) > 3
                   else "To")
                + f" detect 20% at equal steps with this spread would take about {_seeds_for(sd1, base_fid)} "
                "seeds, more than this sweep's budget."))
    L.append("")
    words = {n: (_short(s["final"]["paired"], s["final"]["n"]), _short(s["equal_time"]["paired"],
                                                                        s["equal_time"]["n"]))
             for n, s in st.items() if n != "baseline"}
    better = [SSL_RECIPES[n] for n, w in words.items() if w == ("better beyond the spread",) * 2]
    any_better = any("better beyond the spread" in w for w in words.values())
    parts = [f"{SSL_RECIPES[n]} is {w[0]} at equal steps and {w[1]} at equal time" for n, w in words.items()
             if SSL_RECIPES[n] not in better]
    L.append("**Conclusion.** "
             + ("On a baseline that draws digits, " if in_regime["baseline"] else
                "On a baseline short of the digit regime (so read this with care), ")
             + (f"the thesis holds beyond the spread at both readings for {' and '.join(better)}; " if better else
                "no recipe is better than the baseline beyond the spread at both readings; " if any_better else
                "no recipe is better than the baseline beyond the spread at either reading; ")
             + "; ".join(parts) + ". Where an interval includes zero this does not say the recipe cannot help, only "
             "that at this scale its effect, if any, is smaller than what the seeds resolve (the power statement "
             "above).")
    return "\n".join(L) + "\n"


SUMMARY_BULLET = "- Here, on"


def summary_bullet() -> str:
    """The summary's last bullet: which recipes the sweep finds better or worse than the baseline at both readings."""
    from minidiff.recipes import SSL_RECIPES

    st, _, _ = stats(_load("ssl_sweep"))
    w = {n: (_short(s["final"]["paired"], s["final"]["n"]), _short(s["equal_time"]["paired"], s["equal_time"]["n"]))
         for n, s in st.items() if n != "baseline"}
    better = [SSL_RECIPES[n] for n, v in w.items() if v == ("better beyond the spread",) * 2]
    readings = ("equal steps", "equal time")
    worse = [f"{SSL_RECIPES[n]} (at {' and '.join(r for r, x in zip(readings, v) if x.startswith('worse'))})"
             for n, v in w.items() if any(x.startswith("worse") for x in v)]
    text = (f"{SUMMARY_BULLET} an unconditional latent U-Net that draws digits, "
            + (f"better than the baseline beyond the spread at equal steps and at equal time: {'; '.join(better)}"
               if better else "no recipe is better than the baseline beyond the spread at both readings"
               if any("better" in x for v in w.values() for x in v) else
               "no recipe is better than the baseline beyond the spread at either reading")
            + (f"; worse beyond the spread: {'; '.join(worse)}" if worse else "")
            + "; the section above gives every recipe's numbers and how sure they are.")
    import textwrap

    return textwrap.fill(text, width=116, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def _summary_cell(nb):
    cells = [c for c in nb["cells"] if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Summary")]
    if len(cells) != 1:
        raise SystemExit(f"expected one '## Summary' cell in {NOTEBOOK.name}, found {len(cells)}")
    return cells[0]


def summary_of(nb) -> str:
    """The bullet of the notebook's summary that :func:`summary_bullet` writes (as it stands in the notebook)."""
    text = "".join(_summary_cell(nb)["source"])
    i = text.index(SUMMARY_BULLET)
    j = text.find("\n- ", i + 1)
    return text[i:] if j < 0 else text[i:j]


def write(text: str) -> None:
    nb = json.loads(NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "markdown" and "".join(c["source"]).startswith(HEADING)]
    if len(cells) != 1:
        raise SystemExit(f"expected one markdown cell starting with {HEADING!r} in {NOTEBOOK.name}, found {len(cells)}")
    cells[0]["source"] = text.splitlines(keepends=True)
    summary = _summary_cell(nb)
    old = summary_of(nb)
    summary["source"] = "".join(summary["source"]).replace(old, summary_bullet() + ("\n" if old.endswith("\n")
                                                                                     else "")).splitlines(keepends=True)
    NOTEBOOK.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args()
    text = section()
    if args.print:
        print(text)
    else:
        write(text)
        print(f"wrote {HEADING!r} of {NOTEBOOK.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
