"""book/results.md is rendered from the benchmark JSON: up to date, and carrying the JSON's numbers."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def render_results():
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "benchmarks" / "render_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_page_is_up_to_date(render_results):
    page = ROOT / "book" / "results.md"
    assert page.exists(), "book/results.md is missing: run python benchmarks/render_results.py"
    assert page.read_text() == render_results.render(), \
        "book/results.md does not match benchmarks/results/*.json: run python benchmarks/render_results.py"


def test_page_is_in_the_table_of_contents():
    assert "file: book/results" in (ROOT / "_toc.yml").read_text()


def test_tables_carry_the_json_numbers(render_results, tmp_path, monkeypatch):
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    empty = render_results.render()
    for command in ("benchmarks/time_to_quality.py", "benchmarks/train_throughput.py", "benchmarks/ssl_knn_time.py",
                    "benchmarks/bench_kernels.py", "benchmarks/ddpm_fid.py", "make gpu-check"):
        assert command in empty                      # each missing benchmark says how to produce it
    row = dict(contender="minidiff", params=123456, train_steps=789, images_per_s=321.5, sampler="DDIM, 50 steps",
               nfe=50, sample_seconds=4.25, fid=42.75, confidence=0.975, extra_fid={"ancestral_1000": 40.5},
               ancestral_seconds=61.0)
    peer = dict(row, contender="diffusers", params=654321, train_steps=111, fid=987.5, extra_fid={})
    (tmp_path / "time_to_quality_300s.json").write_text(json.dumps(dict(
        budget_s=300.0, n_samples=500, date="2026-01-02T03:04:05+00:00", machine="Test CPU, 2 cores",
        command="python benchmarks/time_to_quality.py --budget 300", torch="9.9", peers={"diffusers": "0.1"},
        rows=[row, peer], baselines_fid={"Gaussian noise": 1500.25},
        summary={"fid_ratio_best_peer_over_minidiff": 987.5 / 42.75, "minidiff_ddim50_over_ancestral1000": 1.07})))
    page = render_results.render()
    for text in ("| minidiff | 123,456 | 789 | 321.5 | DDIM, 50 steps | 50 | 4.25 | 42.8 | 0.975 |",
                 "| diffusers | 654,321 | 111 |", "987.5", "1,500.2", "**23.1x**", "ancestral 1000 FID 40.5",
                 "2026-01-02T03:04:05+00:00", "Test CPU, 2 cores", "`python benchmarks/time_to_quality.py --budget 300`",
                 "diffusers 0.1", "= 1.07"):
        assert text in page, text
    assert "Not measured yet" not in page.split("## What makes")[0]   # gone once there is data


def test_chapter05_quotes_the_benchmark_json():
    """Chapter 05 quotes the time-to-quality sampler comparison; its table must match the committed JSON."""
    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "05_sampling.ipynb").read_text())["cells"]
                  if c["cell_type"] == "markdown")
    for budget, label in ((300, "300 s"), (1200, "1,200 s")):
        d = json.loads((ROOT / "benchmarks" / "results" / f"time_to_quality_{budget}s.json").read_text())
        md = next(r for r in d["rows"] if r["contender"] == "minidiff")
        x = md["extra_fid"]
        cells = [x["ancestral_1000"], md["fid"], x["ddim50_eta1"], x["dpmpp2m_ode50"], x["dpmpp2m_sde50"]]
        best = min(cells[1:])
        want = f"| {label} | " + " | ".join(f"**{v:.1f}**" if v == best else f"{v:.1f}" for v in cells) + " |"
        assert want in src, f"chapter 05's table row for {label} should read: {want}"


def test_chapter05_prose_claims_hold_for_the_json():
    """The sentences around chapter 05's table: DPM-Solver++(2M) SDE at 50 calls is within 10% of the 1,000-step
    sampler at both budgets, DDIM only after 1,200 s, and at 1,200 s eta = 0 beats eta = 1 (the paper's order)."""
    fid = {}
    for budget in (300, 1200):
        d = json.loads((ROOT / "benchmarks" / "results" / f"time_to_quality_{budget}s.json").read_text())
        md = next(r for r in d["rows"] if r["contender"] == "minidiff")
        fid[budget] = dict(md["extra_fid"], ddim50=md["fid"])
    for budget in (300, 1200):
        assert fid[budget]["dpmpp2m_sde50"] <= 1.1 * fid[budget]["ancestral_1000"], budget
    assert fid[300]["ddim50"] > 1.1 * fid[300]["ancestral_1000"] and fid[1200]["ddim50"] <= 1.1 * fid[1200]["ancestral_1000"]
    assert fid[1200]["ddim50"] < fid[1200]["ddim50_eta1"]
    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "05_sampling.ipynb").read_text())["cells"]
                  if c["cell_type"] == "markdown")
    assert (f"gives at 50 steps FID {fid[1200]['ddim50']:.1f} at $\\eta = 0$ and {fid[1200]['ddim50_eta1']:.1f} "
            f"at $\\eta = 1$") in " ".join(src.split())


def test_chapter08_quotes_the_recipe_study_on_the_prediction_target():
    """Chapter 08's aside on x0- against eps-prediction quotes seed 0 of benchmarks/results/unet_recipe.json."""
    src = " ".join("".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "08_unet.ipynb")
                                                                  .read_text())["cells"]
                           if c["cell_type"] == "markdown").split())
    runs = json.loads((ROOT / "benchmarks" / "results" / "unet_recipe.json").read_text())["runs"]
    fid = {r["recipe"]: r["fid"]["dpmpp2m_sde50"] for r in runs if r["seed"] == 0 and r["budget_s"] == 300}
    assert (f"measured FID {fid['x0_min_snr']:.1f} for $x_0$ after 300 s, one seed, against "
            f"{fid['min_snr']:.1f} for $\\epsilon$") in src


def test_gpu_check_section(render_results, tmp_path, monkeypatch):
    """Without benchmarks/results/gpu_check.json the page says plainly that the GPU check has not run and how to run
    it; with one, it shows the check's table (the rows scripts/gpu_check.py prints) and where it was measured."""
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    section = render_results.gpu_check()
    assert section.startswith("## GPU check") and "has not run yet" in section and "`make gpu-check`" in section
    assert "| part |" not in section
    (tmp_path / "gpu_check.json").write_text(json.dumps({
        "date": "2027-01-02T03:04:05+00:00", "machine": "gpu-box, x86_64, 16 CPUs, Linux", "gpu": "NVIDIA H200",
        "torch": "9.9", "triton": "3.9.0", "cuda": "13.0", "python": "3.11.7", "mode": "gpu", "ok": False,
        "command": "python scripts/gpu_check.py (via make gpu-check)", "budget_s": 480.0, "total_s": 431.6,
        "kernels": {"status": "pass", "mode": "compiled", "rows": [
            {"kernel": "layernorm_modulate", "direction": "backward", "dtype": "bf16", "rtol": 0.02,
             "shapes": ["128x256x384"], "error_over_tolerance": 0.125, "worst": "dx at 128x256x384", "ok": True}]},
        "speed": {"status": "measured", "reps": 30, "rows": [
            {"kernel": "GroupNorm+SiLU fwd", "size": "16x256x64x64/G32", "bytes": 134217728, "triton_s": 5.5e-5,
             "copy_s": 5e-5, "eager_s": 2e-4, "compile_s": 8.25e-5, "gb_s": 2440.3, "pct_copy": 90.9,
             "speedup_eager": 3.64, "speedup_compile": 1.5}]},
        "training": {"status": "pass", "problems": [], "runs": [
            {"model": "dit", "config": "DiT-Mini/4", "steps": 50, "steps_wanted": 50, "resumed_from": 20,
             "killed_at": 25, "seconds": 21.25, "first_loss": 1.0123, "final_loss": 0.0987, "finite": True,
             "amp": "bfloat16", "channels_last": True, "compile": True, "fused_adamw": True, "ok": True}]},
        "chapters": {"status": "fail", "jobs": 4, "rows": [
            {"chapter": "09_dit", "ok": False, "seconds": 48.5, "failed_cell": 12, "banner": None,
             "error": "AssertionError: a | b"}]}}))
    section = render_results.gpu_check()
    assert "has not run yet" not in section
    for text in ("### NVIDIA H200: FAILED in 432 s",
                 "| kernels | layernorm_modulate backward bf16 | pass | 0.12 of the tolerance (rtol 0.02), worst: "
                 "dx at 128x256x384 |",
                 "| speed | GroupNorm+SiLU fwd 16x256x64x64/G32 | measured | 2,440.3 GB/s, 91% of a copy, 1.50x "
                 "torch.compile, 3.64x eager |",
                 "| training | dit (DiT-Mini/4), 50 steps, killed at 25, resumed from 20 | pass | 21.2 s, "
                 "loss 1.012 -> 0.099, AMP bfloat16, channels_last, compile, fused AdamW |",
                 "| chapters | 09_dit | FAIL | 48.5 s; cell 12: AssertionError: a \\| b |",
                 "| total | 432 s (budget 480 s) | FAIL |", "Triton 3.9.0, CUDA 13.0",
                 "2027-01-02T03:04:05+00:00", "gpu-box, x86_64, 16 CPUs",
                 "`python scripts/gpu_check.py (via make gpu-check)`",
                 "data `benchmarks/results/gpu_check.json`"):
        assert text in section, text
    assert section in render_results.render()


def _recipe_run(recipe, seed, fid, steps=1000, **settings):
    base = dict(T=1000, prediction="eps", weighting="none", lr=0.002)
    return dict(recipe=recipe, seed=seed, budget_s=300.0, threads=2, params=1000, steps=steps, train_seconds=300.0,
                final_loss=0.1, settings={**base, **settings}, fid={"dpmpp2m_sde50": fid, "ddim50": fid + 10},
                confidence={"dpmpp2m_sde50": 0.9, "ddim50": 0.8}, sample_seconds={}, date=f"2026-12-0{seed + 1}T00:00",
                command=f"python benchmarks/unet_recipe.py --recipes {recipe} --seeds {seed}")


def test_recipe_section_gives_median_and_spread_over_seeds(render_results, tmp_path, monkeypatch):
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    assert "python benchmarks/unet_recipe.py" in render_results.unet_recipe()       # says how to produce it
    runs = [_recipe_run("base", s, f) for s, f in ((0, 41.0), (1, 45.5), (2, 39.0))]
    runs += [_recipe_run("min_snr", s, f, weighting="min_snr") for s, f in ((0, 30.25), (1, 28.0), (2, 33.5))]
    (tmp_path / "unet_recipe.json").write_text(json.dumps(dict(
        machine="Test CPU, 2 cores", torch="9.9", base=dict(T=1000, prediction="eps", weighting="none", lr=0.002),
        recipes={}, runs=runs)))
    section = render_results.unet_recipe()
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    assert lines[0].startswith("| `min_snr` | weighting=min_snr | 300 s | 3 | 1,000 | 30.2 (28.0-33.5) | 40.2 (38.0-43.5)")
    assert lines[1].startswith("| `base` | (base) | 300 s | 3 | 1,000 | 41.0 (39.0-45.5) |")
    assert "2026-12-01T00:00 to 2026-12-03T00:00 on Test CPU, 2 cores" in section
    assert section in render_results.render()


def test_recipe_section_compares_samplers_only_on_runs_scored_with_all(render_results, tmp_path, monkeypatch):
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    runs = [_recipe_run("min_snr", s, f, weighting="min_snr") for s, f in ((0, 30.0), (1, 34.0), (2, 32.0))]
    for r, (u, a) in zip(runs[:2], ((27.5, 40.0), (29.5, 44.0))):      # seed 2 lacks the extra samplers
        r["fid"].update(dpmpp2m_sde50_uniform=u, ancestral50=a)
    (tmp_path / "unet_recipe.json").write_text(json.dumps(dict(machine="Test CPU", torch="9.9", base=dict(T=1000),
                                                               recipes={}, runs=runs)))
    section = render_results.unet_recipe()
    assert "The sampler, weights held fixed" in section
    # two seeds have every sampler: medians of (30, 34), (27.5, 29.5), (40, 44), (40, 44)
    assert "| `min_snr` | 300 s | 2 | 32.0 (30.0-34.0) | 28.5 (27.5-29.5) | 42.0 (40.0-44.0) | 42.0 (40.0-44.0) |" \
        in section
    for r in runs:
        r["fid"].pop("ancestral50", None)
    (tmp_path / "unet_recipe.json").write_text(json.dumps(dict(machine="Test CPU", torch="9.9", base=dict(T=1000),
                                                               recipes={}, runs=runs)))
    assert "The sampler, weights held fixed" not in render_results.unet_recipe()


def test_latent_section_states_autoencoder_time_and_accuracy(render_results, tmp_path, monkeypatch):
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    assert "python benchmarks/latent_to_quality.py" in render_results.latent_to_quality()
    run = dict(model="latent-unet-guided", seed=0, budget_s=300.0, threads=2, params=5000, steps=4321,
               ae_seconds=61.5, ae_recon_fid=3.25, date="2026-12-03T01:02", command="python benchmarks/x.py",
               results={"w=1": {"fid": 35.5, "accuracy": 0.875, "confidence": 0.9},
                        "w=3": {"fid": 48.25, "accuracy": 0.984, "confidence": 0.97}},
               curve=[{"step": 100, "seconds": 75.0, "fid200": 300.4}, {"step": 4321, "seconds": 300.0, "fid200": 60.6}])
    (tmp_path / "latent_to_quality.json").write_text(json.dumps(dict(machine="Test CPU", torch="9.9", runs=[run])))
    section = render_results.latent_to_quality()
    for text in ("| `latent-unet-guided` | w=1 | 300 s | 1 | 5,000 | 4,321 | 62 s, FID 3.2 | 35.5 | 87.5 |",
                 "| `latent-unet-guided` | w=3 | 300 s | 1 | 5,000 | 4,321 | 62 s, FID 3.2 | 48.2 | 98.4 |",
                 "75 s: 300, 300 s: 61", "on Test CPU, torch 9.9"):
        assert text in section, text


def test_chapter04_quotes_the_recipe_study():
    """Chapter 04's min-SNR paragraph quotes the median FID (and range) of the base and min-SNR recipes from
    benchmarks/results/unet_recipe.json; the sentence must match the JSON."""
    import statistics

    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "04_ddpm.ipynb").read_text())["cells"]
                  if c["cell_type"] == "markdown")
    runs = json.loads((ROOT / "benchmarks" / "results" / "unet_recipe.json").read_text())["runs"]
    for name in ("base", "min_snr", "min_snr+bf16"):
        f = sorted(r["fid"]["dpmpp2m_sde50"] for r in runs if r["recipe"] == name and r["budget_s"] == 300)
        assert len(f) >= 3, f"the chapter's claim needs 3 seeds of {name}"
        want = f"{statistics.median(f):.1f} ({f[0]:.1f}-{f[-1]:.1f}, {len(f)} seeds)"
        assert want in src, f"chapter 04 should quote {name} as {want}"
    # bf16: "took S steps instead of S'" (medians) and "lower than the fp32 run of the same seed for every seed"
    by = {(r["recipe"], r["seed"]): r for r in runs if r["budget_s"] == 300}
    steps = {n: statistics.median(r["steps"] for (m, _), r in by.items() if m == n) for n in ("min_snr", "min_snr+bf16")}
    assert f"took {steps['min_snr+bf16']:,.0f} steps instead of {steps['min_snr']:,.0f}" in src
    seeds = [s for (m, s) in by if m == "min_snr+bf16"]
    assert all(by["min_snr+bf16", s]["fid"]["dpmpp2m_sde50"] < by["min_snr", s]["fid"]["dpmpp2m_sde50"] for s in seeds)


def test_recipe_names_compose_and_unknown_ones_are_refused():
    spec = importlib.util.spec_from_file_location("unet_recipe", ROOT / "benchmarks" / "unet_recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.recipe("min_snr+lr_3e-3")
    assert (r["weighting"], r["lr"], r["prediction"]) == ("min_snr", 3e-3, "eps")
    assert mod.recipe("base") == mod.BASE and mod.BASE["weighting"] == "none"
    with pytest.raises(SystemExit, match="unknown recipe 'min-snr'"):
        mod.recipe("min-snr")


def test_a_rerun_replaces_its_row_and_keeps_the_others(tmp_path):
    spec = importlib.util.spec_from_file_location("unet_recipe", ROOT / "benchmarks" / "unet_recipe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path, key = tmp_path / "r.json", ("recipe", "seed")
    mod.record_run(path, dict(recipe="a", seed=0, fid=1.0), key, {"benchmark": "x"})
    mod.record_run(path, dict(recipe="a", seed=1, fid=2.0), key, {"benchmark": "x"})
    mod.record_run(path, dict(recipe="a", seed=0, fid=3.0), key, {"benchmark": "x"})
    d = json.loads(path.read_text())
    assert sorted((r["seed"], r["fid"]) for r in d["runs"]) == [(0, 3.0), (1, 2.0)]
    assert d["benchmark"] == "x" and d["machine"] and d["torch"] and not (tmp_path / "r.tmp").exists()


def test_latent_curves_plot_only_unguided_runs_of_the_budget(tmp_path):
    spec = importlib.util.spec_from_file_location("latent_to_quality", ROOT / "benchmarks" / "latent_to_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    run = dict(model="latent-dit", seed=0, budget_s=600.0, results={"unguided": {"fid": 80.0}},
               curve=[{"seconds": 150.0, "fid200": 150.0}, {"seconds": 600.0, "fid200": 80.0}],
               loss_curve=[[float(t), 0.5 / (1 + t)] for t in range(0, 600, 30)])
    guided = dict(run, model="latent-unet-guided", results={"w=1": {"fid": 20.0}})
    assert not mod.plot_curves([guided], 600.0, tmp_path / "a.png") and not (tmp_path / "a.png").exists()
    assert not mod.plot_curves([run], 300.0, tmp_path / "b.png")            # another budget: nothing to draw
    assert mod.plot_curves([run, guided], 600.0, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recipe_vs_implementation_gives_both_ratios(render_results, tmp_path, monkeypatch):
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    assert "Not measured yet" in render_results.recipe_vs_implementation()
    doc = dict(contender="diffusers", params=1_700_000, train_steps=100, fid=1000.0)
    (tmp_path / "time_to_quality_300s.json").write_text(json.dumps(dict(budget_s=300, rows=[doc])))
    runs = [_recipe_run("min_snr", s, f, steps=2500, weighting="min_snr") for s, f in ((0, 30.0), (1, 40.0), (2, 35.0))]
    runs.append(_recipe_run("min_snr+diffusers_net", 0, 70.0, steps=2000, weighting="min_snr"))
    (tmp_path / "unet_recipe.json").write_text(json.dumps(dict(runs=runs)))
    lat = [dict(model=m, seed=0, budget_s=600.0, params=800_000, steps=st, results={"unguided": {"fid": f}})
           for m, st, f in (("latent-dit-b64", 3000, 80.0), ("latent-dit-b64-diffusers", 4000, 64.0))]
    (tmp_path / "latent_to_quality.json").write_text(json.dumps(dict(runs=lat)))
    section = render_results.recipe_vs_implementation()
    for text in ("| U-Net, pixels, 300 s | diffusers `UNet2DModel` | its documentation's | 1 | 1,700,000 | 100 | "
                 "1,000.0 | - |",
                 "| U-Net, pixels, 300 s | minidiff `UNet` | minidiff's | 3 | 1,000 | 2,500 | 45.0 (40.0-50.0) | "
                 "35.0 (30.0-40.0) |",
                 "FID with DDIM-50: **12.5x**",                      # 1000 / (70 + 10)
                 "FID (DPM-Solver++ SDE) diffusers / minidiff **2.00x**, training steps minidiff / diffusers **1.25x**",
                 # where minidiff's implementation is worse and slower, the ratios say so (below 1)
                 "DiT, the implementation at an equal recipe: FID diffusers / minidiff **0.80x**, training steps "
                 "minidiff / diffusers **0.75x**"):
        assert text in section, text


def test_chapter10_quotes_the_latent_study():
    """Chapter 10's reference numbers (guided pixel and latent U-Nets, 300 s) are the medians and ranges over seeds in
    benchmarks/results/latent_to_quality.json; its claims about them (FID at w = 1 below w = 2, the scales the JSON
    has, the latent model ahead after 75 s and level at 300 s) must hold for the JSON."""
    import statistics

    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "10_latent_and_guidance.ipynb")
                                                           .read_text())["cells"] if c["cell_type"] == "markdown")
    runs = [r for r in json.loads((ROOT / "benchmarks" / "results" / "latent_to_quality.json").read_text())["runs"]
            if r["budget_s"] == 300 and r["model"] in ("pixel-unet-guided", "latent-unet-guided")]

    def spread(values):
        v = sorted(values)
        assert len(v) >= 3, "the chapter's claims need 3 seeds"
        return f"{statistics.median(v):.1f} ({v[0]:.1f}-{v[-1]:.1f}, {len(v)} seeds)"

    def of(model, key, field):
        return [r["results"][key][field] for r in runs if r["model"] == model]

    ws = ("1", "2", "3")                               # the table's rows, whole: a swapped column fails
    acc_row = " | ".join(f"{100 * statistics.median(of('pixel-unet-guided', f'w={w}', 'accuracy')):.1f}%" for w in ws)
    fid_row = " | ".join(spread(of("pixel-unet-guided", f"w={w}", "fid")) for w in ws)
    assert f"| requested digit recognised | {acc_row} |" in src
    assert f"| feature FID | {fid_row} |" in src
    fid = {(m, w): statistics.median(of(m, f"w={w}", "fid")) for m in ("pixel-unet-guided", "latent-unet-guided")
           for w in ("1", "2")}
    assert all(fid[m, "1"] < fid[m, "2"] for m in ("pixel-unet-guided", "latent-unet-guided"))   # best FID at w = 1
    assert spread(of("latent-unet-guided", "w=1", "fid")) in src
    assert spread(of("latent-unet-guided", "w=1.5", "fid")) in src
    assert f"{100 * statistics.median(of('latent-unet-guided', 'w=1.5', 'accuracy')):.1f}% of requested" in src
    early = {m: [r["curve"][0]["fid200"] for r in runs if r["model"] == m] for m in ("pixel-unet-guided",
                                                                                    "latent-unet-guided")}
    assert all(abs(r["curve"][0]["seconds"] - 75) < 5 for r in runs)
    assert f"after 75 s its FID is {spread(early['latent-unet-guided'])} against the pixel model's\n" \
           f"{spread(early['pixel-unet-guided'])}" in src
    assert statistics.median(early["latent-unet-guided"]) < min(early["pixel-unet-guided"])    # "ahead early"
    a, b = (sorted(of(m, "w=1", "fid")) for m in ("latent-unet-guided", "pixel-unet-guided"))
    assert a[0] <= b[-1] and b[0] <= a[-1], "'level at 300 s' needs overlapping ranges"
    steps = {m: statistics.median(r["steps"] for r in runs if r["model"] == m) for m in early}
    assert f"which took {steps['latent-unet-guided']:,.0f} steps, against" in src
    assert f"the pixel model's {steps['pixel-unet-guided']:,.0f}" in src


def test_chapter08_quotes_the_ablation_sweep():
    """Chapter 08's table of the reference sweep (minidiff/assets/reference/unet_ablation.json) must carry the file's
    numbers, whole rows, for every network; the claims about them are asserted in the chapter itself, against the
    same file, in every profile."""
    import statistics

    from minidiff.config.schema import UNetChapterConfig
    from minidiff.reference import load, mean_ci

    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "08_unet.ipynb").read_text())["cells"]
                  if c["cell_type"] == "markdown")
    runs = load("unet_ablation")["runs"]
    budget = max(r["budget_s"] for r in runs)
    for name in UNetChapterConfig.VARIANTS:
        rs = [r for r in runs if r["variant"] == name and r["budget_s"] == budget]
        assert len(rs) >= 3, f"{name}: the chapter's claims need 3 seeds"
        f = [r["fid"] for r in rs]
        row = (f"| {name} | {len(rs)} | {statistics.median(r['steps'] for r in rs):,.0f} | {mean_ci(f)} | "
               f"{min(f):.1f}-{max(f):.1f} |")
        assert row in src, f"chapter 08's table lacks the row {row}"
    assert f"{budget:g} s each, over three seeds" in src
    # the numbers the bullets repeat
    by = {n: {r["seed"]: r for r in runs if r["variant"] == n and r["budget_s"] == budget}
          for n in UNetChapterConfig.VARIANTS}
    fid = {n: mean_ci([r["fid"] for r in rs.values()]) for n, rs in by.items()}
    assert f"{fid['no attention']} against {fid['full']}" in src
    steps = {n: statistics.median(r["steps"] for r in rs.values()) for n, rs in by.items()}
    assert f"takes {steps['no attention'] / steps['full']:.2f} times the steps" in src
    gaps = [by["no skips"][s]["fid"] - by["full"][s]["fid"] for s in by["full"]]
    assert f"by {min(gaps):.0f} to {max(gaps):.0f}" in src
    params = by["MLP"][0]["params"] / by["full"][0]["params"]
    assert f"with {params:.0f} times the parameters" in src
    add0 = [by["additive time"][s]["loss_by_t"][0] / by["full"][s]["loss_by_t"][0] - 1 for s in by["full"]]
    assert f"(by {100 * min(add0):.0f}% to\n  {100 * max(add0):.0f}%," in src


def test_chapter09_quotes_the_dit_sweep():
    """Chapter 09's tables of the reference sweep (minidiff/assets/reference/dit_sweep.json) carry the file's numbers,
    whole rows, for every conditioning and every size; the claims about them are asserted in the chapter itself,
    against the same file, in every profile."""
    import statistics

    from minidiff.reference import load, mean_ci

    src = "".join("".join(c["source"]) for c in json.loads((ROOT / "chapters" / "09_dit.ipynb").read_text())["cells"]
                  if c["cell_type"] == "markdown")
    ref = load("dit_sweep")
    rec, runs = ref["recipe"], [r for r in ref["runs"] if r["threads"] == 2]
    base = f"{rec['base']}/{rec['base_patch']}"

    def rows(name):
        rs = [r for r in runs if r["model"] == ("adaln-zero" if name == base else name)]
        assert len(rs) >= 3, f"{name}: the chapter's claims need 3 seeds"
        return rs

    for c in rec["conditionings"]:
        rs = rows(c)
        f = [r["fid"] for r in rs]
        row = (f"| {c} | {len(rs)} | {statistics.median(r['steps'] for r in rs):,.0f} | {mean_ci(f)} | "
               f"{min(f):.1f}-{max(f):.1f} | {statistics.median(r['confidence'] for r in rs):.2f} |")
        assert row in src, f"chapter 09's conditioning table lacks the row {row}"
    for s, p in rec["scaling"]:
        rs = rows(f"{s}/{p}")
        f = [r["fid"] for r in rs]
        row = (f"| {s}/{p} | {rs[0]['gflops']:.4f} | {len(rs)} | {mean_ci(f)} | {min(f):.1f}-{max(f):.1f} | "
               f"{statistics.median(r['confidence'] for r in rs):.2f} |")
        assert row in src, f"chapter 09's scaling table lacks the row {row}"
    assert f"{rec['steps']:,} steps" in src

    def paired(a, b):
        ra, rb = {r["seed"]: r for r in rows(a)}, {r["seed"]: r for r in rows(b)}
        return mean_ci([ra[s]["fid"] - rb[s]["fid"] for s in ra])

    flat = " ".join(src.split())
    sizes = [f"{s}/{p}" for s, p in rec["scaling"]]
    for a, b in zip(sizes, sizes[1:]):                       # each step up in size, paired by seed
        assert f"{a} minus {b} {paired(a, b)}" in flat, (a, b)
    label = {"adaln": "adaLN", "in-context": "in-context", "cross-attention": "cross-attention"}
    for c in rec["conditionings"][1:]:                       # each conditioning against adaLN-Zero
        assert f"{label[c]} {paired(c, base)}" in flat, c
    # the other numbers of the bullets
    tiny, micro, mini = sizes
    assert f"removes {paired(tiny, micro).mean:.1f} of the {paired(tiny, mini).mean:.1f} FID" in flat
    secs = {n: statistics.median(r["train_seconds"] for r in rows(n)) for n in sizes}
    assert f"took {secs[mini]:.0f} s against {secs[tiny]:.0f} s" in flat and round(secs[mini] / secs[tiny]) == 4
    fewer = 1 - statistics.median(r["steps"] for r in rows("cross-attention")) / rec["steps"]
    assert f"trains {100 * fewer:.0f}% fewer steps" in flat
    spread = {n: max(r["fid"] for r in rows(n)) - min(r["fid"] for r in rows(n)) for n in sizes}
    assert round(spread[tiny]) == 20 and max(spread[micro], spread[mini]) < 2
    assert "one time in 64" in flat and all(                 # first of four in every seed: (1/4)^3
        min(rec["conditionings"], key=lambda c: {r["seed"]: r for r in rows(c)}[s]["fid"]) == "adaln-zero"
        for s in (0, 1, 2))


def _ssl_sweep_rows():
    """Chapter 11's table rows, from the shipped sweep: per recipe, seeds, median training seconds, and at equal steps
    and at equal time the FID mean ± CI, the paired difference to the baseline and the median steps."""
    import statistics

    from minidiff.recipes import SSL_RECIPES
    from minidiff.reference import load, mean_ci

    ref = load("ssl_sweep")
    runs = ref["runs"]
    base = {r["seed"]: r for r in runs if r["recipe"] == "baseline"}
    rows = {}
    for name in ref["recipe"]["recipes"]:
        rs = [r for r in runs if r["recipe"] == name]
        if not rs:                                     # a recipe not run yet: the chapter says so in words
            continue
        cells = [SSL_RECIPES[name], str(len(rs)),
                 f"{statistics.median(r['train_seconds'] + r['extra_seconds'] for r in rs):.0f}"]
        for key in ("final", "equal_time"):
            got = [r for r in rs if key in r]          # a run with disturbed timing has no equal-time reading
            if not got:
                cells += ["–", "–", "–"]
                continue
            paired = mean_ci([r[key]["fid"] - base[r["seed"]]["final"]["fid"] for r in got])
            cells += [f"{statistics.median(r[key].get('step', r['steps']) for r in got):,.0f}",
                      str(mean_ci([r[key]["fid"] for r in got])), "–" if name == "baseline" else paired.signed()]
        rows[name] = "| " + " | ".join(cells) + " |"
    return ref, rows


def test_chapter11_quotes_the_ssl_sweep():
    """Chapter 11's table of the reference sweep (minidiff/assets/reference/ssl_sweep.json) carries the file's
    numbers, whole rows, for every recipe, and its power statement the file's minimal detectable differences."""
    from minidiff.reference import min_detectable_difference

    src = "".join("".join(c["source"]) for c in json.loads(
        (ROOT / "chapters" / "11_ssl_meets_diffusion.ipynb").read_text())["cells"] if c["cell_type"] == "markdown")
    ref, rows = _ssl_sweep_rows()
    for name, row in rows.items():
        assert row in src, f"chapter 11's table lacks the row {row}"
    flat = " ".join(src.split())
    runs = ref["runs"]
    base = {r["seed"]: r for r in runs if r["recipe"] == "baseline"}
    base_fid = sum(r["final"]["fid"] for r in base.values()) / len(base)
    for key, label in (("final", "equal steps"), ("equal_time", "equal time")):
        diffs = {}
        for r in runs:
            if r["recipe"] != "baseline" and key in r:
                diffs.setdefault(r["recipe"], []).append(r[key]["fid"] - base[r["seed"]]["final"]["fid"])
        resid = [d - sum(v) / len(v) for v in diffs.values() for d in v]
        sd = (sum(x * x for x in resid) / sum(len(v) - 1 for v in diffs.values())) ** 0.5
        mdd = min_detectable_difference(sd, len(base))
        assert f"{mdd:.1f} FID at {label} ({100 * mdd / base_fid:.0f}% of the baseline's {base_fid:.1f})" in flat, label
        core = {k: v for k, v in diffs.items() if not k.startswith("multitask")}     # the figure without that pair
        resid = [d - sum(v) / len(v) for v in core.values() for d in v]
        sd = (sum(x * x for x in resid) / sum(len(v) - 1 for v in core.values())) ** 0.5
        mdd = min_detectable_difference(sd, len(base))
        assert f"{mdd:.1f} FID ({100 * mdd / base_fid:.0f}%) at {label}" in flat, f"{label}, without multi-task"
    # the class-conditional reference point quoted from chapter 09's sweep
    from minidiff.reference import load, mean_ci
    dit = [r["fid"] for r in load("dit_sweep")["runs"] if r["model"] == "adaln-zero" and r["threads"] == 2]
    assert f"DiT-Mini/1 reached FID {mean_ci(dit)} at 3,000 steps" in flat


def test_chapter11_sweep_section_is_the_generated_one():
    """Chapter 11's "What the sweep shows" is written by scripts/ch11_sweep_section.py from the shipped JSON: every
    number and every verdict in it (beyond the spread or not, in the digit regime or not) is the file's; regenerate it
    after a sweep, never edit it by hand."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ch11_sweep_section", ROOT / "scripts" / "ch11_sweep_section.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cells = ["".join(c["source"]) for c in json.loads(mod.NOTEBOOK.read_text())["cells"]
             if c["cell_type"] == "markdown" and "".join(c["source"]).startswith(mod.HEADING)]
    assert cells == [mod.section()], "run: python scripts/ch11_sweep_section.py"
    nb = json.loads(mod.NOTEBOOK.read_text())
    assert mod.summary_of(nb).rstrip("\n") == mod.summary_bullet(), "run: python scripts/ch11_sweep_section.py"


def test_chapter13_reference_run_is_the_profiles_recipe_over_three_seeds():
    """Chapter 13 plots minidiff/assets/reference/flow_vs_ddpm.json and asserts its sentences against it (in every
    profile, under nbval). Here: the file is a fair comparison of the recipe the chapter describes. Every model trained
    for the same budget, the cpu profile's ``flow.max_seconds``, over the same three seeds; the recipe recorded is
    the profile's (a changed profile needs a rerun); and each model was scored at every network-call count of the
    profile."""
    from minidiff import config, recipes
    from minidiff.reference import load

    d = load("flow_vs_ddpm")
    F = config.get_profile("cpu").flow
    rec = d["recipe"]["flow"]
    for k, v in rec.items():
        got = getattr(F, k)
        assert (list(got) if isinstance(got, tuple) else got) == v, f"flow.{k}: profile {got!r}, reference {v!r}"
    for method in ("flow", "ddpm", "ddpm-v"):
        rs = [r for r in d["runs"] if r["method"] == method]
        assert sorted(r["seed"] for r in rs) == [0, 1, 2], method
        for r in rs:
            assert r["budget_s"] == F.max_seconds and abs(r["train_seconds"] - F.max_seconds) < 5, r["command"]
            family = "flow" if method == "flow" else "ddpm"
            for sampler, (fam, _) in recipes.NFE_SAMPLERS.items():
                if fam == family:
                    got = sorted(f["nfe"] for f in r["fids"] if f["sampler"] == sampler)
                    assert got == recipes.nfe_points(sampler, F.nfe), (method, sampler, got)
    # the chapter reads the file and asserts its claims against it
    src = "".join("".join(c["source"]) for c in
                  json.loads((ROOT / "chapters" / "13_flow_matching.ipynb").read_text())["cells"])
    assert 'reference.load("flow_vs_ddpm")' in src and "{glue:text}`ref-" in src
