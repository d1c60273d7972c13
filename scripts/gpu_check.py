"""The GPU check: everything in minidiff that needs a CUDA GPU, in one offline command of at most 8 minutes.

    make gpu-check                                   # = .venv/bin/python scripts/gpu_check.py, on one CUDA GPU
    .venv/bin/python scripts/gpu_check.py --cpu --out /tmp/gpu-check    # its CPU path (tests/test_gpu_check.py)

Four parts, then one JSON and one table:

1. kernels: every Triton kernel of :mod:`minidiff.kernels` (``sampler_update``, ``layernorm_modulate`` and
   ``groupnorm_silu``, forward and backward for the latter two) compiled, at real sizes, in fp32, fp16 and bf16,
   against :mod:`minidiff.kernels.reference` computed in fp32 from the same inputs (relative tolerance 1e-5, 2e-3,
   2e-2; the absolute one is that times the largest reference value, at least 1, as in the package's self-check),
   plus the package's own self-check (``kernels.self_check``, what ``"auto"`` dispatch relies on) where it exists;
2. speed: each kernel at the largest size of ``benchmarks/bench_kernels.py`` (whose cases and timer are reused):
   achieved bandwidth against a ``clone`` of the same number of bytes, and time against ``torch.compile`` of its
   reference and eager torch;
3. training: the U-Net and the DiT for 50 steps each with AMP, channels_last, ``torch.compile`` and fused AdamW
   (:class:`minidiff.train.TrainConfig`); the DiT runs in a subprocess that is SIGKILLed after a checkpoint was
   written, then relaunched, and must resume from that checkpoint and finish all 50 steps;
4. chapters: every chapter listed in ``_toc.yml`` (chapters added later are included), top to bottom in a fresh
   kernel, in the ``gpu`` profile with ``MINIDIFF_SMOKE=1`` (budgets capped, downloads replaced by offline data:
   :func:`minidiff.config.smoke_profile`, :func:`minidiff.data.smoke_stand_in`), a few at a time, alongside part 3
   (parts 1 and 2 run alone: their timings need a quiet device).

Writes ``benchmarks/results/gpu_check.json`` (``--out DIR`` writes ``DIR/gpu_check.json`` instead) with the date,
machine, GPU, torch/Triton/CUDA versions and the command, prints one table, and exits 0 when every part passed (and
the whole check took at most 8 minutes), 1 otherwise. ``benchmarks/render_results.py`` shows the table on the
results page.

``--cpu`` is the path that runs without a GPU, in ``make test``: the kernels through Triton's interpreter at tiny
sizes (reported as skipped, with the reason, when Triton cannot be imported), the speed part as a smoke run (its
timings mean nothing), a few training steps without compile with the same kill and resume, and two fast chapters
under smoke on the CPU (``MINIDIFF_DEVICE=cpu``) at tiny sizes, that is in the ``ci`` profile (in the ``gpu`` profile
chapter 06's toy networks are 4x wider and alone took 90 s of the 2 cores, too much for ``make test``; ``--profile
gpu`` runs them so), alongside the other parts in single-threaded processes (``OMP_NUM_THREADS=1`` unless set).
"""

from __future__ import annotations

# Only the standard library at the top: the Triton interpreter switch must be set before anything imports triton,
# and benchmarks/render_results.py imports this file for its table.
import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results"
JSON_NAME = "gpu_check.json"
BUDGET_S = 480.0                                            # the whole check on one GPU, in seconds
PARTS = ("kernels", "speed", "training", "chapters")
TOLERANCES = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 2e-2}    # relative, per dtype (see the module docstring)
CPU_CHAPTERS = ("06_score_matching", "12_kernels_and_speed")   # two of the fastest chapters on a CPU
# (kernel, shapes) at real sizes on the GPU and tiny ones through the interpreter. groupnorm_silu: (B, C, H, W, groups)
GPU_SHAPES = {"sampler_update": [(256, 3, 64, 64), (100, 1, 28, 28)],
              "layernorm_modulate": [(128, 256, 384), (64, 49, 200)],
              "groupnorm_silu": [(64, 128, 32, 32, 32), (128, 96, 14, 14, 8)]}
CPU_SHAPES = {"sampler_update": [(3, 1, 8, 8)], "layernorm_modulate": [(2, 16, 48)],
              "groupnorm_silu": [(2, 16, 6, 6, 4)]}
# training: (model config, batch, steps, checkpoint every, kill at step) on the GPU and on the CPU path
GPU_TRAIN = {"unet": "UNet-L", "dit": "DiT-Mini/4", "batch": 128, "steps": 50, "ckpt_every": 10, "kill_at": 25}
CPU_TRAIN = {"unet": "UNet-XS", "dit": "DiT-Tiny/4", "batch": 8, "steps": 6, "ckpt_every": 2, "kill_at": 3}


def log(msg: str) -> None:
    """One progress line, flushed (the check runs for minutes)."""
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- chapters from the table of contents

def toc_chapters(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """Every notebook under ``chapters/`` that ``toc`` lists (at any depth), in reading order."""
    import yaml

    found: list[Path] = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith("chapters/"):
                path = (toc.parent / f).with_suffix(".ipynb")
                if not path.exists():
                    raise FileNotFoundError(f"{toc} lists {f}, but {path} does not exist")
                found.append(path)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(toc.read_text()))
    return found


# ----------------------------------------------------------------------------- part 1: kernels against the reference

def closeness(got, want, rtol: float) -> float:
    """The largest ``|got - want| / (atol + rtol |want|)`` with ``atol = rtol * max(1, max |want|)``: at most 1 when
    ``got`` matches ``want`` within the tolerance (``torch.isclose``'s rule); inf for nan/inf or a shape mismatch."""
    if got is None or tuple(got.shape) != tuple(want.shape):
        return math.inf
    got, want = got.detach().double(), want.detach().double()
    atol = rtol * max(1.0, want.abs().max().item())
    ratio = ((got - want).abs() / (atol + rtol * want.abs())).max().item()
    return ratio if math.isfinite(ratio) else math.inf


def _kernel_outputs(name: str, shape: tuple, dtype, dev) -> list[tuple[str, str, object, object]]:
    """``(direction, what, triton result, fp32 reference)`` for kernel ``name`` on random inputs of ``shape`` in
    ``dtype`` (the reference sees the same inputs upcast to fp32; GroupNorm's weight and bias stay fp32 as under
    autocast)."""
    import torch
    from minidiff import kernels
    from minidiff.diffusion.schedules import make_schedule
    from minidiff.kernels import reference

    g = torch.Generator().manual_seed(0)
    rnd = lambda *s, scale=1.0, shift=0.0: torch.randn(*s, generator=g) * scale + shift   # noqa: E731
    if name == "sampler_update":
        x, m, z = (rnd(*shape).to(dev, dtype) for _ in range(3))
        sched = make_schedule("cosine", 1000)
        t = torch.randint(1, 1000, (shape[0],), generator=g)
        out = []
        steps = (("DDPM step", kernels.ddpm_coefficients(sched, t, "eps"), False),
                 ("DDIM step eta=1, clipped x0", kernels.ddim_coefficients(sched, t, t - 1, 1.0), True))
        for what, coeffs, clip in steps:
            got = kernels.sampler_update(x, m, coeffs, z, clip)
            want = reference.sampler_update(x.float(), m.float(), coeffs, z.float(), clip)
            out.append(("forward", what, got, want))
        return out
    if name == "layernorm_modulate":
        B, N, D = shape
        args, dtypes, names = [rnd(B, N, D, scale=2.0, shift=0.5), rnd(B, D), rnd(B, D, scale=0.5)], [dtype] * 3, \
            ("x", "shift", "scale")
        fn = lambda mod, x, sh, sc: mod.layernorm_modulate(x, sh, sc, 1e-6)   # noqa: E731
    elif name == "groupnorm_silu":
        B, C, H, W, G = shape
        args = [rnd(B, C, H, W, scale=2.0, shift=-0.5), rnd(C, scale=0.3, shift=1.0), rnd(C, scale=0.3)]
        dtypes, names = [dtype, torch.float32, torch.float32], ("x", "weight", "bias")
        fn = lambda mod, x, w, b: mod.groupnorm_silu(x, G, w, b, 1e-5)   # noqa: E731
    else:
        raise ValueError(f"unknown kernel {name!r}")
    low = [a.to(dev, d).requires_grad_() for a, d in zip(args, dtypes)]
    high = [a.detach().float().requires_grad_() for a in low]
    got, want = fn(kernels, *low), fn(reference, *high)
    dy = rnd(*want.shape).to(dev, dtype)             # the same rounded upstream gradient for both
    got_grads = torch.autograd.grad(got, low, dy)
    want_grads = torch.autograd.grad(want, high, dy.float())
    return [("forward", "output", got, want)] + [("backward", f"d{n}", a, b)
                                                 for n, a, b in zip(names, got_grads, want_grads)]


def check_kernels(dev, cpu: bool) -> dict:
    """Part 1: every kernel, direction and dtype at :data:`GPU_SHAPES` (:data:`CPU_SHAPES` with ``cpu``)."""
    try:
        import triton   # noqa: F401
    except Exception as e:   # a missing or broken Triton raises anything from ImportError to RuntimeError
        reason = f"Triton cannot be imported: {type(e).__name__}: {e}"
        return {"status": "skipped" if cpu else "fail", "reason": reason, "rows": []}
    import torch
    from minidiff import kernels

    if not cpu and kernels.interpreter_on():
        return {"status": "fail", "reason": "TRITON_INTERPRET=1 is set: the kernels would be interpreted, not compiled",
                "rows": []}
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    shapes = CPU_SHAPES if cpu else GPU_SHAPES
    rows = []
    kernels.set_backend("triton")   # forced: no self-check, no fallback, so a broken kernel shows here
    try:
        for name, name_shapes in shapes.items():
            for dname, dtype in dtypes.items():
                worst: dict[str, dict] = {}
                for shape in name_shapes:
                    try:
                        outputs = _kernel_outputs(name, shape, dtype, dev)
                    except Exception as e:
                        outputs = [("forward", f"raised {type(e).__name__}: {str(e).strip()[:300]}", None, None)]
                    for direction, what, got, want in outputs:
                        ratio = math.inf if want is None else closeness(got, want, TOLERANCES[dname])
                        w = worst.setdefault(direction, {"ratio": -1.0})
                        if ratio > w["ratio"]:
                            w.update(ratio=ratio, worst=f"{what} at {'x'.join(map(str, shape))}")
                for direction, w in worst.items():
                    rows.append({"kernel": name, "direction": direction, "dtype": dname, "rtol": TOLERANCES[dname],
                                 "shapes": ["x".join(map(str, s)) for s in name_shapes],
                                 "error_over_tolerance": w["ratio"] if math.isfinite(w["ratio"]) else None,
                                 "worst": w["worst"], "ok": w["ratio"] <= 1.0})
                log(f"kernels: {name} {dname}: " + ", ".join(
                    f"{r['direction']} {'pass' if r['ok'] else 'FAIL'}" for r in rows[-len(worst):]))
    finally:
        kernels.set_backend("auto")
    rows += _self_checks(dev, dtypes)
    return {"status": "pass" if all(r["ok"] for r in rows) else "fail",
            "mode": "interpreter" if kernels.interpreter_on() else "compiled", "rows": rows}


def _self_checks(dev, dtypes: dict) -> list[dict]:
    """The package's own self-check per kernel and dtype (what ``"auto"`` dispatch runs before it uses a kernel),
    when this minidiff has one; each failure's warning is kept as the reason."""
    import warnings

    from minidiff import kernels

    check = getattr(kernels, "self_check", None)
    if check is None:
        return []
    rows = []
    for name in getattr(kernels, "KERNELS", CPU_SHAPES):
        for dname, dtype in dtypes.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    ok, why = bool(check(name, dtype, dev)), ""
                except Exception as e:
                    ok, why = False, f"raised {type(e).__name__}: {e}"
            why = why or "; ".join(str(w.message) for w in caught)
            rows.append({"kernel": name, "direction": "self-check", "dtype": dname, "ok": ok, "worst": why[:400]})
    return rows


# ----------------------------------------------------------------------------- part 2: speed

def _bench_kernels():
    """``benchmarks/bench_kernels.py`` as a module (its ``cases`` and ``timed`` are reused)."""
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "benchmarks" / "bench_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure_speed(dev, cpu: bool, reps: int) -> dict:
    """Part 2: each kernel of ``bench_kernels.cases`` at its largest size: the time of a ``clone`` of the same bytes
    over the kernel's time (the fraction of copy bandwidth it reaches), and ``torch.compile``/eager over Triton."""
    try:
        import triton   # noqa: F401
    except Exception as e:
        return {"status": "skipped" if cpu else "fail", "reason": f"Triton cannot be imported: {type(e).__name__}: {e}",
                "rows": []}
    import torch
    from minidiff import kernels

    bench = _bench_kernels()
    cuda = dev.type == "cuda"
    reps, warmup = (reps, 10) if cuda else (1, 0)
    largest: dict[str, tuple[str, int]] = {}
    for name, size, nbytes, *_ in bench.cases(dev, cpu):   # labels only: cases() builds each size's tensors lazily
        if nbytes > largest.get(name, ("", -1))[1]:
            largest[name] = (size, nbytes)
    rows = []
    kernels.set_backend("triton")
    try:
        for name, size, nbytes, fast, ref in bench.cases(dev, cpu):
            if largest[name][0] != size:
                continue
            t_fast = bench.timed(fast, reps, warmup).median
            buf = torch.empty(nbytes // 2, dtype=torch.uint8, device=dev)   # a clone reads and writes: nbytes moved
            t_copy = bench.timed(buf.clone, reps, warmup).median
            del buf
            t_eager = bench.timed(ref, reps, warmup).median
            t_comp = bench.timed(torch.compile(ref), reps, warmup).median if cuda else None
            rows.append({"kernel": name, "size": size, "bytes": nbytes, "triton_s": t_fast, "copy_s": t_copy,
                         "eager_s": t_eager, "compile_s": t_comp, "gb_s": nbytes / t_fast / 1e9,
                         "pct_copy": 100 * t_copy / t_fast, "speedup_eager": t_eager / t_fast,
                         "speedup_compile": t_comp / t_fast if t_comp else None})
            log(f"speed: {name} {size}: {rows[-1]['gb_s']:.1f} GB/s, {rows[-1]['pct_copy']:.0f}% of a copy")
    finally:
        kernels.set_backend("auto")
    out = {"status": "measured", "rows": rows, "reps": reps}
    if not cuda:
        out["note"] = "CPU path: Triton's interpreter and no torch.compile; the timings mean nothing"
    return out


# ----------------------------------------------------------------------------- part 3: training, killed and resumed

def train_run(model_name: str, ckpt_dir: Path, cpu: bool, kill_at: int | None = None) -> dict:
    """Train ``model_name`` (``"unet"`` or ``"dit"``) on MNIST-5k with every speed switch on (compile only on the
    GPU), checkpointing into ``ckpt_dir`` and resuming from it. With ``kill_at``, print ``at <step>`` after that
    step and wait for the parent to SIGKILL this process."""
    import torch
    from minidiff import data
    from minidiff.diffusion import ddpm
    from minidiff.diffusion.schedules import make_schedule
    from minidiff.nets import UNet, unet_config
    from minidiff.nets.dit import DiT, dit_config
    from minidiff.train import TrainConfig, _amp_settings, load_checkpoint, train

    spec = CPU_TRAIN if cpu else GPU_TRAIN
    dev = torch.device("cpu" if cpu else "cuda")
    torch.manual_seed(0)
    model = (UNet(in_channels=1, **unet_config(spec["unet"])) if model_name == "unet"
             else DiT(dit_config(spec["dit"]))).to(dev)
    sched = make_schedule("cosine", 1000).to(dev)
    batches = data.TensorSampler(data.mnist5k("train", device=dev).x, batch_size=spec["batch"], seed=0)
    cfg = TrainConfig(steps=spec["steps"], lr=1e-3, warmup=5, ema_decay=0.99, amp="auto", channels_last=True,
                      compile=not cpu, ckpt_dir=ckpt_dir, ckpt_every=spec["ckpt_every"], keep=2, log_every=1,
                      progress=False, desc=model_name)

    def stop_here(step, loss):
        if step == kill_at:   # the checkpoint of the last multiple of ckpt_every is on disk by now
            print(f"at {step}", flush=True)
            sys.stdin.readline()   # the parent SIGKILLs this process while it waits here

    t0 = time.perf_counter()
    r = train(model, lambda m, x: ddpm.ddpm_loss(m, sched, x), batches, cfg, callback=stop_here if kill_at else None)
    seconds = time.perf_counter() - t0
    opt = load_checkpoint(r.checkpoint)["optimizer"]["param_groups"][0]
    amp = _amp_settings(cfg.amp, dev)[0]
    losses = r.history["loss"]
    return {"model": model_name, "config": spec[model_name], "batch": spec["batch"], "steps": r.step,
            "steps_wanted": cfg.steps, "resumed_from": r.resumed_from, "seconds": seconds, "train_seconds": r.seconds,
            "first_loss": losses[0], "final_loss": losses[-1], "finite": all(math.isfinite(v) for v in losses),
            "amp": str(amp).replace("torch.", "") if amp else "off", "channels_last": cfg.channels_last,
            "compile": cfg.compile, "fused_adamw": bool(opt.get("fused")),
            "params": sum(p.numel() for p in r.model.parameters())}


def _worker_cmd(cpu: bool, *args) -> list[str]:
    """The command line that runs this script as one of its workers."""
    return [sys.executable, str(Path(__file__).resolve()), *args] + (["--cpu"] if cpu else [])


def check_training(work: Path, cpu: bool) -> dict:
    """Part 3: the U-Net straight through in this process; the DiT in a subprocess SIGKILLed at ``kill_at`` (after
    a checkpoint), then relaunched: it must resume from the last checkpoint before the kill and finish every step."""
    import torch
    from minidiff.train import list_checkpoints, load_checkpoint

    spec = CPU_TRAIN if cpu else GPU_TRAIN
    runs, problems = [], []
    log(f"training: {spec['unet']} for {spec['steps']} steps" + ("" if cpu else " (compiling first)"))
    try:
        runs.append(train_run("unet", work / "unet", cpu))
    except Exception as e:
        problems.append(f"unet raised {type(e).__name__}: {str(e)[:400]}")
    if not cpu:
        torch.cuda.empty_cache()
    log(f"training: {spec['dit']} in a subprocess, SIGKILLed at step {spec['kill_at']}, then resumed")
    ckpt, result = work / "dit", work / "dit.json"
    expected = (spec["kill_at"] - 1) // spec["ckpt_every"] * spec["ckpt_every"]   # its last checkpoint before the kill
    with open(work / "dit.log", "w") as errlog:
        p = subprocess.Popen(_worker_cmd(cpu, "--train-worker", "dit", "--ckpt", str(ckpt), "--kill-at",
                                         str(spec["kill_at"])), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=errlog, text=True, cwd=ROOT)
        hung = threading.Timer(600, p.kill)   # a worker that never gets to the kill point is stopped, and reported
        hung.start()
        line = p.stdout.readline()   # "at <kill_at>", or "" if the worker died first
        while line and not line.startswith("at "):   # anything else a library printed
            line = p.stdout.readline()
        hung.cancel()
        killed_at = None
        if line.strip() == f"at {spec['kill_at']}":
            p.send_signal(signal.SIGKILL)
            killed_at = spec["kill_at"]
        p.wait(timeout=60)
        if killed_at is None or p.returncode != -signal.SIGKILL:
            problems.append(f"the DiT run was not killed at step {spec['kill_at']} (said {line.strip()!r}, exit "
                            f"{p.returncode}): {_tail(work / 'dit.log')}")
        on_disk = [load_checkpoint(f)["step"] for f in list_checkpoints(ckpt)]
        if killed_at is not None and (not on_disk or max(on_disk) != expected):
            problems.append(f"after the kill the newest checkpoint is at step {max(on_disk, default=None)}, "
                            f"expected {expected}")
        if killed_at is not None:
            done = subprocess.run(_worker_cmd(cpu, "--train-worker", "dit", "--ckpt", str(ckpt), "--result",
                                              str(result)), stdout=errlog, stderr=errlog, cwd=ROOT, timeout=600)
            if done.returncode != 0 or not result.exists():
                problems.append(f"the resumed DiT run failed (exit {done.returncode}): {_tail(work / 'dit.log')}")
            else:
                run = json.loads(result.read_text())
                run.update(killed_at=killed_at, checkpoints_at_kill=on_disk)
                runs.append(run)
                if run["resumed_from"] != expected:
                    problems.append(f"the DiT resumed from step {run['resumed_from']}, expected {expected}")
    for run in runs:
        bad = [k for k, ok in (("steps", run["steps"] == run["steps_wanted"]), ("finite loss", run["finite"]),
                               ("fused AdamW", run["fused_adamw"] or cpu),
                               ("AMP", run["amp"] != "off" or cpu)) if not ok]
        run["ok"] = not bad
        if bad:
            problems.append(f"{run['model']}: " + ", ".join(bad) + " not as expected")
    return {"status": "fail" if problems or len(runs) < 2 else "pass", "problems": problems, "runs": runs}


def _tail(path: Path, n: int = 600) -> str:
    """The last ``n`` characters of a log file, for an error message."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-n:].strip() or "(no output)"


# ----------------------------------------------------------------------------- part 4: chapters

def run_chapter(path: Path, result: Path, timeout: float, keep: Path | None) -> None:
    """Execute one chapter top to bottom in a fresh kernel (working folder: the chapter's) and write
    ``{chapter, ok, seconds, error, failed_cell, banner}`` to ``result``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    ok, error = True, None
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as e:
        ok, error = False, f"{e.ename}: {e.evalue}"[:300]
    except Exception as e:   # timeouts, a dead kernel: the first line says which
        ok, error = False, f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
    seconds = time.perf_counter() - t0
    failed = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                   and any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    banner = next((ln for ln in text.splitlines() if ln.startswith("minidiff | profile=")), None)
    if keep is not None:
        nbformat.write(nb, keep / path.name)
    result.write_text(json.dumps({"chapter": path.stem, "ok": ok, "seconds": seconds, "error": error,
                                  "failed_cell": failed, "banner": banner}))


def chapter_paths(names: list[str] | None) -> list[Path]:
    """The notebooks of the chapters called ``names`` (default: every one in ``_toc.yml``)."""
    paths = toc_chapters()
    if names:
        by_name = {p.stem: p for p in paths}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown chapter(s) {', '.join(unknown)}; _toc.yml lists {', '.join(by_name)}")
        paths = [by_name[n] for n in names]
    return paths


def check_chapters(paths: list[Path], work: Path, cpu: bool, jobs: int, timeout: float, profile: str = "gpu") -> dict:
    """Part 4: the chapters ``paths`` in ``profile`` (the gpu profile on a GPU) under smoke, ``jobs`` at a time, each
    in its own process and kernel; a chapter past ``timeout`` is stopped."""
    env = dict(os.environ, MINIDIFF_PROFILE=profile, MINIDIFF_SMOKE="1", MINIDIFF_STATIC="1",
               MINIDIFF_CHECKPOINT_DIR="off")
    if cpu:
        env.update(MINIDIFF_DEVICE="cpu", TRITON_INTERPRET="1")
    else:
        env.pop("TRITON_INTERPRET", None)
        env.pop("MINIDIFF_DEVICE", None)
    (work / "notebooks").mkdir(exist_ok=True)
    pending, running, rows = list(paths), {}, []
    log(f"chapters: {len(paths)} in the {profile} profile under MINIDIFF_SMOKE=1, {jobs} at a time")
    while pending or running:
        while pending and len(running) < jobs:
            path = pending.pop(0)
            res = work / f"{path.stem}.json"
            logf = open(work / f"{path.stem}.log", "w")
            p = subprocess.Popen(_worker_cmd(cpu, "--chapter-worker", str(path), "--result", str(res), "--timeout",
                                             str(timeout), "--notebook-out", str(work / "notebooks")),
                                 env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
            running[path] = (p, res, logf, time.perf_counter())
        time.sleep(0.2)
        for path, (p, res, logf, t0) in list(running.items()):
            if p.poll() is None and time.perf_counter() - t0 > timeout + 60:
                os.killpg(p.pid, signal.SIGKILL)   # the worker's own session: it and its kernel
                p.wait()
            if p.poll() is None:
                continue
            logf.close()
            del running[path]
            if res.exists():
                row = json.loads(res.read_text())
            else:
                row = {"chapter": path.stem, "ok": False, "seconds": time.perf_counter() - t0, "failed_cell": None,
                       "banner": None, "error": f"the chapter worker exited with {p.returncode}: "
                                                f"{_tail(work / f'{path.stem}.log', 400)}"}
            if row["ok"] and not (row["banner"] or "").startswith(f"minidiff | profile={profile}"):
                row.update(ok=False, error=f"the chapter did not run in the {profile} profile (banner: {row['banner']!r})")
            rows.append(row)
            log(f"chapters: [{len(rows)}/{len(paths)}] {row['chapter']}: {'pass' if row['ok'] else 'FAIL'} "
                f"in {row['seconds']:.1f} s" + (f" ({row['error']})" if row["error"] else ""))
    order = {p.stem: i for i, p in enumerate(paths)}
    rows.sort(key=lambda r: order[r["chapter"]])
    return {"status": "pass" if all(r["ok"] for r in rows) else "fail", "jobs": jobs, "rows": rows}


# ----------------------------------------------------------------------------- the table

def summary_rows(info: dict) -> list[tuple[str, str, str, str]]:
    """``(part, item, result, detail)`` rows of the table for a gpu_check JSON (also used by the results page)."""
    rows = []
    k = info.get("kernels")
    if k is not None:
        if not k["rows"]:
            rows.append(("kernels", "all", k["status"], k.get("reason", "")))
        for r in k["rows"]:
            if r["direction"] == "self-check":
                rows.append(("kernels", f"{r['kernel']} self-check {r['dtype']}", "pass" if r["ok"] else "FAIL",
                             "passed" if r["ok"] else r["worst"]))
                continue
            e = r["error_over_tolerance"]
            rows.append(("kernels", f"{r['kernel']} {r['direction']} {r['dtype']}", "pass" if r["ok"] else "FAIL",
                         (f"{e:.2g}" if e is not None else "inf") + f" of the tolerance (rtol {r['rtol']:g}), worst: "
                         f"{r['worst']}"))
    s = info.get("speed")
    if s is not None:
        if not s["rows"]:
            rows.append(("speed", "all", s["status"], s.get("reason", "")))
        for r in s["rows"]:
            comp = f", {r['speedup_compile']:.2f}x torch.compile" if r.get("speedup_compile") else ""
            rows.append(("speed", f"{r['kernel']} {r['size']}", s["status"],
                         f"{r['gb_s']:,.1f} GB/s, {r['pct_copy']:.0f}% of a copy{comp}, {r['speedup_eager']:.2f}x eager"
                         + (" (interpreter)" if s.get("note") else "")))
    t = info.get("training")
    if t is not None:
        for r in t["runs"]:
            item = f"{r['model']} ({r['config']}), {r['steps']} steps"
            if r.get("killed_at"):
                item += f", killed at {r['killed_at']}, resumed from {r['resumed_from']}"
            rows.append(("training", item, "pass" if r["ok"] else "FAIL",
                         f"{r['seconds']:.1f} s, loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}, AMP {r['amp']}"
                         f"{', channels_last' if r['channels_last'] else ''}{', compile' if r['compile'] else ''}"
                         f"{', fused AdamW' if r['fused_adamw'] else ''}"))
        for p in t["problems"]:
            rows.append(("training", "problem", "FAIL", p))
    c = info.get("chapters")
    if c is not None:
        if not c["rows"]:
            rows.append(("chapters", "all", c["status"], c.get("reason", "")))
        for r in c["rows"]:
            rows.append(("chapters", r["chapter"], "pass" if r["ok"] else "FAIL", f"{r['seconds']:.1f} s"
                         + (f"; cell {r['failed_cell']}: {r['error']}" if r["error"] else "")))
    budget = f" (budget {info['budget_s']:.0f} s)" if info.get("budget_s") else ""
    rows.append(("total", f"{info['total_s']:.0f} s{budget}", "pass" if info["ok"] else "FAIL",
                 f"{info['gpu']}; torch {info['torch']}, Triton {info['triton']}"))
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    """``rows`` as aligned plain-text columns under a header."""
    head = ("part", "item", "result", "detail")
    width = [max(len(str(r[i])) for r in [head, *rows]) for i in range(3)]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, width)) + "  " + str(r[3])   # noqa: E731
    return "\n".join([line(head), "  ".join("-" * w for w in width) + "  ------", *map(line, rows)])


# ----------------------------------------------------------------------------- main

def _versions(cpu: bool) -> dict:
    """Versions, the GPU's name and the machine, for the JSON."""
    import importlib.metadata

    import torch

    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = None
    cuda = torch.cuda.is_available() and not cpu
    return {"torch": torch.__version__, "triton": triton, "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if cuda else "none (CPU path)",
            "machine": f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="the CPU path: Triton's interpreter, tiny sizes, two chapters")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"folder for {JSON_NAME} (default benchmarks/results; --cpu requires one)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    ap.add_argument("--chapters", nargs="+", default=None,
                    help="chapter names (default: all in _toc.yml; with --cpu: " + ", ".join(CPU_CHAPTERS) + ")")
    ap.add_argument("--profile", choices=("ci", "cpu", "gpu"), default=None,
                    help="the chapters' profile under smoke (default gpu; ci, tiny sizes, with --cpu)")
    ap.add_argument("--jobs", type=int, default=None, help="chapters at a time (default 4 on a GPU, 2 with --cpu)")
    ap.add_argument("--chapter-timeout", type=float, default=300.0, help="seconds a chapter may take (default 300)")
    ap.add_argument("--reps", type=int, default=30, help="timed repeats per measurement in the speed part")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, executed notebooks)")
    # the two worker modes this script starts itself
    ap.add_argument("--train-worker", choices=("unet", "dit"), help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--kill-at", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--chapter-worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--notebook-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.cpu:
        os.environ["TRITON_INTERPRET"] = "1"            # before anything imports triton
        os.environ.setdefault("MINIDIFF_DEVICE", "cpu")
        os.environ.setdefault("OMP_NUM_THREADS", "1")   # several processes share the cores: no threads spinning
    else:
        os.environ.pop("TRITON_INTERPRET", None)        # compiled kernels, never the interpreter

    if args.chapter_worker:
        run_chapter(args.chapter_worker, args.result, args.timeout, args.notebook_out)
        return 0
    if args.train_worker:
        run = train_run(args.train_worker, args.ckpt, args.cpu, args.kill_at)
        if args.result:
            args.result.write_text(json.dumps(run))
        return 0

    if args.cpu and args.out is None:
        ap.error(f"--cpu needs --out DIR: its {JSON_NAME} must not replace the GPU's in benchmarks/results")
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch, so the GPU check cannot run here. On a machine with one "
              "GPU run `make gpu-check`; without one, `python scripts/gpu_check.py --cpu --out DIR` runs its CPU path.",
              file=sys.stderr)
        return 2
    dev = torch.device("cpu" if args.cpu else "cuda")
    out = (args.out or DEFAULT_OUT) / JSON_NAME
    jobs = args.jobs or (2 if args.cpu else 4)
    chapters = chapter_paths(args.chapters or (list(CPU_CHAPTERS) if args.cpu else None))
    work = Path(tempfile.mkdtemp(prefix="minidiff-gpu-check-"))
    via_make = " (via make gpu-check)" if os.environ.get("MAKELEVEL") else ""
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python scripts/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]).strip()
            + via_make, "mode": "cpu" if args.cpu else "gpu", "budget_s": None if args.cpu else BUDGET_S,
            **_versions(args.cpu), "seconds": {}}
    log(f"{info['gpu']} | torch {info['torch']} | Triton {info['triton']} | parts: {', '.join(args.parts)} | "
        f"work folder {work}")

    def run_part(part):
        """``(part, its result, seconds)``; a part that raises is reported as failed and the others still run."""
        t0 = time.perf_counter()
        log(f"part {part}")
        try:
            if part == "kernels":
                result = check_kernels(dev, args.cpu)
            elif part == "speed":
                result = measure_speed(dev, args.cpu, args.reps)
            elif part == "training":
                result = check_training(work, args.cpu)
            else:
                result = check_chapters(chapters, work, args.cpu, jobs, args.chapter_timeout,
                                        args.profile or ("ci" if args.cpu else "gpu"))
        except Exception as e:   # a part that crashes is a failed part; the others still run
            result = {"status": "fail", "reason": f"{type(e).__name__}: {e}", "rows": [], "runs": [],
                      "problems": [f"the part raised {type(e).__name__}: {e}"]}
        if not args.cpu:
            torch.cuda.empty_cache()
        return part, result, time.perf_counter() - t0

    t_start = time.perf_counter()
    # The kernel checks and the speed part run alone on a GPU (the timings need a quiet device). The chapters then run
    # alongside the training part, which checks correctness (its seconds are not benchmark numbers), to stay within
    # the budget. On the CPU path the chapters start first and share the cores with everything else.
    alone = [p for p in args.parts if p in ("kernels", "speed")] if not args.cpu else []
    rest = [p for p in args.parts if p not in alone and p != "chapters"]
    done = [run_part(part) for part in alone]
    alongside = None
    if "chapters" in args.parts:
        if rest:
            alongside = ThreadPoolExecutor(1).submit(run_part, "chapters")
        else:
            rest.append("chapters")
    done += [run_part(part) for part in rest] + ([alongside.result()] if alongside else [])
    for part, result, seconds in sorted(done, key=lambda d: args.parts.index(d[0])):
        info[part], info["seconds"][part] = result, seconds
    if alongside:
        info["chapters"]["alongside_other_parts"] = True
    info["total_s"] = time.perf_counter() - t_start
    info["ok"] = (all(info[p]["status"] in ("pass", "skipped", "measured") for p in args.parts)
                  and (args.cpu or info["total_s"] <= BUDGET_S))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1) + "\n")
    print(format_table(summary_rows(info)), flush=True)
    log(f"{'PASS' if info['ok'] else 'FAIL'} in {info['total_s']:.0f} s; wrote {out}")
    if args.keep or not info["ok"]:
        log(f"logs and executed notebooks are in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if info["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
