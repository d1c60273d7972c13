"""scripts/gpu_check.py (``make gpu-check``): its CPU path end to end (the kernels through Triton's interpreter, the
speed part as a smoke run, training SIGKILLed and resumed, two chapters in the gpu profile under MINIDIFF_SMOKE=1),
and its pieces: the chapter list from _toc.yml, the tolerance rule, the table, the refusals."""

import datetime
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
COMMITTED = ROOT / "benchmarks" / "results" / "gpu_check.json"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _triton_imports() -> bool:
    return subprocess.run([sys.executable, "-c", "import triton"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_cpu_path_end_to_end(gc, tmp_path):
    before = COMMITTED.read_bytes() if COMMITTED.exists() else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIDIFF_", "TRITON_"))}   # it sets its own
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    info = json.loads((tmp_path / "gpu_check.json").read_text())
    assert info["mode"] == "cpu" and info["ok"] is True
    datetime.datetime.fromisoformat(info["date"])
    for key in ("machine", "gpu", "torch", "python"):
        assert info[key], key
    assert info["torch"] == torch.__version__ and "--cpu" in info["command"]

    # 1. every kernel, direction and dtype, through the interpreter (or skipped, saying why)
    k = info["kernels"]
    if _triton_imports():
        assert k["status"] == "pass" and k["mode"] == "interpreter" and info["triton"]
        checked = {(r["kernel"], r["direction"], r["dtype"]) for r in k["rows"]}
        for dtype in ("fp32", "fp16", "bf16"):
            for kernel in ("sampler_update", "layernorm_modulate", "groupnorm_silu"):
                assert (kernel, "forward", dtype) in checked
            for kernel in ("layernorm_modulate", "groupnorm_silu"):
                assert (kernel, "backward", dtype) in checked
        for r in k["rows"]:
            assert r["ok"] and (r["direction"] == "self-check" or 0 <= r["error_over_tolerance"] <= 1), r
        # 2. one speed row per kernel case of benchmarks/bench_kernels.py (at its largest size)
        cases = {c[0] for c in gc._bench_kernels().cases(torch.device("cpu"), True)}
        assert info["speed"]["status"] == "measured" and len(cases) >= 5
        assert sorted(r["kernel"] for r in info["speed"]["rows"]) == sorted(cases)
        assert all(r["bytes"] > 0 and r["triton_s"] > 0 and r["copy_s"] > 0 for r in info["speed"]["rows"])
    else:
        assert k["status"] == "skipped" and "Triton cannot be imported" in k["reason"]

    # 3. both models trained every step; the DiT was SIGKILLed after its checkpoint and resumed from it
    spec = gc.CPU_TRAIN
    runs = {r["model"]: r for r in info["training"]["runs"]}
    assert info["training"]["status"] == "pass" and set(runs) == {"unet", "dit"}, info["training"]
    for r in runs.values():
        assert r["ok"] and r["steps"] == spec["steps"] and r["finite"] and r["channels_last"]
    assert runs["unet"]["resumed_from"] is None
    last_ckpt = (spec["kill_at"] - 1) // spec["ckpt_every"] * spec["ckpt_every"]
    assert runs["dit"]["killed_at"] == spec["kill_at"] and max(runs["dit"]["checkpoints_at_kill"]) == last_ckpt
    assert runs["dit"]["resumed_from"] == last_ckpt > 0

    # 4. the two fast chapters under smoke on the CPU at tiny sizes (the ci profile), both passing
    rows = info["chapters"]["rows"]
    assert [r["chapter"] for r in rows] == list(gc.CPU_CHAPTERS)
    for r in rows:
        assert r["ok"], r
        assert r["banner"].startswith("minidiff | profile=ci | device=cpu") and "smoke run" in r["banner"], r["banner"]

    # one table, printed; the JSON went to the folder asked for, not over the GPU's
    table = gc.format_table(gc.summary_rows(info))
    assert table in proc.stdout
    assert all(r["chapter"] in table for r in rows) and "FAIL" not in table
    assert (COMMITTED.read_bytes() if COMMITTED.exists() else None) == before
    print(f"\nCPU path of the GPU check: {seconds:.0f} s (parts: "
          + ", ".join(f"{p} {s:.0f} s" for p, s in info["seconds"].items()) + ")")


def test_chapters_come_from_the_table_of_contents(gc, tmp_path):
    listed = [p.stem for p in gc.toc_chapters()]
    toc_text = (ROOT / "_toc.yml").read_text()
    assert listed and all(f"chapters/{n}" in toc_text for n in listed)
    assert set(gc.CPU_CHAPTERS) <= set(listed) and listed == sorted(listed)
    # a chapter added to the table of contents later is picked up, at any depth
    (tmp_path / "chapters").mkdir()
    for name in ("01_a", "02_b", "03_new"):
        shutil.copy(ROOT / "chapters" / f"{gc.CPU_CHAPTERS[0]}.ipynb", tmp_path / "chapters" / f"{name}.ipynb")
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n  - chapters:\n      - file: book/setup\n"
                   "      - file: chapters/01_a\n      - file: chapters/02_b\n        sections:\n"
                   "          - file: chapters/03_new\n")
    assert [p.stem for p in gc.toc_chapters(toc)] == ["01_a", "02_b", "03_new"]
    toc.write_text(toc.read_text() + "      - file: chapters/04_missing\n")
    with pytest.raises(FileNotFoundError, match="04_missing"):
        gc.toc_chapters(toc)


def test_closeness_follows_the_tolerance_rule(gc):
    want = torch.tensor([0.5, -2.0, 4.0])
    rtol = 2e-3
    atol = rtol * 4.0                     # rtol times the largest reference value (at least 1)
    assert gc.closeness(want.clone(), want, rtol) == 0
    inside = want + torch.tensor([0.0, 0.0, 0.9 * (atol + rtol * 4.0)])
    outside = want + torch.tensor([1.1 * (atol + rtol * 0.5), 0.0, 0.0])
    assert 0.85 < gc.closeness(inside, want, rtol) < 0.95
    assert 1.05 < gc.closeness(outside, want, rtol) < 1.15
    assert gc.closeness(torch.tensor([0.5, float("nan"), 4.0]), want, rtol) == math.inf
    assert gc.closeness(want[:2], want, rtol) == math.inf
    assert gc.closeness(None, want, rtol) == math.inf


def test_table_reports_failures(gc):
    info = {"ok": False, "total_s": 500.0, "budget_s": 480.0, "gpu": "Some GPU", "torch": "9.9", "triton": "3.0",
            "kernels": {"status": "fail", "rows": [
                {"kernel": "groupnorm_silu", "direction": "backward", "dtype": "bf16", "rtol": 2e-2, "shapes": ["2x3"],
                 "error_over_tolerance": 3.5, "worst": "dx at 2x3", "ok": False}]},
            "chapters": {"status": "fail", "rows": [
                {"chapter": "04_ddpm", "ok": False, "seconds": 12.5, "failed_cell": 7, "error": "AssertionError: x"},
                {"chapter": "06_score_matching", "ok": True, "seconds": 3.0, "failed_cell": None, "error": None}]},
            "training": {"status": "fail", "runs": [], "problems": ["the DiT resumed from step 0, expected 20"]}}
    rows = gc.summary_rows(info)
    assert ("kernels", "groupnorm_silu backward bf16", "FAIL",
            "3.5 of the tolerance (rtol 0.02), worst: dx at 2x3") in rows
    assert ("chapters", "04_ddpm", "FAIL", "12.5 s; cell 7: AssertionError: x") in rows
    assert ("chapters", "06_score_matching", "pass", "3.0 s") in rows
    assert ("training", "problem", "FAIL", "the DiT resumed from step 0, expected 20") in rows
    assert rows[-1][:3] == ("total", "500 s (budget 480 s)", "FAIL")
    assert gc.format_table(rows).splitlines()[0].split() == ["part", "item", "result", "detail"]


def test_without_triton_the_kernel_parts_are_skipped_with_the_reason(gc, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)      # "import triton" now raises ImportError
    for part in (gc.check_kernels(torch.device("cpu"), cpu=True), gc.measure_speed(torch.device("cpu"), True, 1)):
        assert part["status"] == "skipped"
        assert part["reason"].startswith("Triton cannot be imported: ModuleNotFoundError")
    assert gc.check_kernels(torch.device("cpu"), cpu=False)["status"] == "fail"    # on a GPU machine it must work


def test_refusals_say_what_to_do(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--cpu needs --out DIR" in proc.stderr
    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "make gpu-check" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
