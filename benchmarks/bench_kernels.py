"""The fused kernels against torch eager and torch.compile of their references, as achieved bandwidth.

    .venv/bin/python benchmarks/bench_kernels.py            # on a CUDA GPU: prints a table, writes JSON
    TRITON_INTERPRET=1 .venv/bin/python benchmarks/bench_kernels.py --smoke   # CPU: runs every path once, tiny sizes

For each kernel and size: the median time over repeated runs (:func:`minidiff.bench.timed`, after warm-up), the bytes the operation
must move at least (inputs read once, outputs written once), the achieved GB/s and its fraction of the bandwidth of a
device-to-device copy measured in the same run, and the speed-up over eager and compiled torch. Writes
``benchmarks/results/kernels_<device>.json``. The --smoke mode checks the script and the kernels' agreement with the
references on CPU through Triton's interpreter; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from minidiff import kernels
from minidiff.diffusion.schedules import make_schedule
from minidiff.bench import timed
from minidiff.kernels import reference


def cases(dev, smoke: bool):
    """(name, size label, bytes moved, triton fn, reference fn, check tensors)"""
    sched = make_schedule("cosine", 1000)
    f32 = 4
    sizes = [(8, 1, 28, 28)] if smoke else [(256, 1, 28, 28), (256, 3, 64, 64), (64, 4, 256, 256)]
    for shape in sizes:
        B = shape[0]
        n = torch.Size(shape).numel()
        x, m, z = (torch.randn(shape, device=dev) for _ in range(3))
        t = torch.randint(1, 1000, (B,))
        c = kernels.ddim_coefficients(sched, t, t - 1, 1.0).to(dev)
        yield ("sampler step (DDIM, eta=1)", "x".join(map(str, shape)), 4 * n * f32,
               lambda: kernels.sampler_update(x, m, c, z), lambda: reference.sampler_update(x, m, c, z))
    for B, N, D in ([(2, 16, 64)] if smoke else [(256, 256, 384), (64, 1024, 768), (32, 4096, 1152)]):
        x = torch.randn(B, N, D, device=dev, requires_grad=True)
        sh, sc = (torch.randn(B, D, device=dev, requires_grad=True) for _ in range(2))
        dy = torch.randn(B, N, D, device=dev)
        yield ("LayerNorm+modulate fwd", f"{B}x{N}x{D}", 2 * x.numel() * f32,
               lambda: kernels.layernorm_modulate(x, sh, sc), lambda: reference.layernorm_modulate(x, sh, sc))
        yield ("LayerNorm+modulate fwd+bwd", f"{B}x{N}x{D}", 6 * x.numel() * f32,
               lambda: torch.autograd.grad(kernels.layernorm_modulate(x, sh, sc), (x, sh, sc), dy),
               lambda: torch.autograd.grad(reference.layernorm_modulate(x, sh, sc), (x, sh, sc), dy))
    for B, C, H, G in ([(2, 16, 8, 8)] if smoke else [(128, 64, 28, 8), (64, 128, 32, 32), (16, 256, 64, 32)]):
        x = torch.randn(B, C, H, H, device=dev, requires_grad=True)
        w, b = torch.ones(C, device=dev, requires_grad=True), torch.zeros(C, device=dev, requires_grad=True)
        dy = torch.randn_like(x)
        yield ("GroupNorm+SiLU fwd", f"{B}x{C}x{H}x{H}/G{G}", 2 * x.numel() * f32,
               lambda: kernels.groupnorm_silu(x, G, w, b), lambda: reference.groupnorm_silu(x, G, w, b))
        yield ("GroupNorm+SiLU fwd+bwd", f"{B}x{C}x{H}x{H}/G{G}", 5 * x.numel() * f32,
               lambda: torch.autograd.grad(kernels.groupnorm_silu(x, G, w, b), (x, w, b), dy),
               lambda: torch.autograd.grad(reference.groupnorm_silu(x, G, w, b), (x, w, b), dy))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, interpreter, tiny sizes: check the script runs")
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("no CUDA device: the kernel benchmark needs a GPU (use --smoke with TRITON_INTERPRET=1 to test the script)")
        return
    dev = torch.device("cuda" if cuda else "cpu")
    reps, warmup = (args.reps, 10) if cuda else (1, 0)
    kernels.set_backend("triton")
    rows = []
    copy_gbs = None
    if cuda:
        big = torch.empty(256 * 2 ** 20, device=dev)
        out = torch.empty_like(big)
        copy_gbs = 2 * big.numel() * 4 / timed(lambda: out.copy_(big), reps, warmup).median / 1e9
        print(f"device-to-device copy: {copy_gbs:.0f} GB/s ({torch.cuda.get_device_name()})")
    print(f"{'kernel':28s} {'size':22s} {'triton us':>10s} {'GB/s':>7s} {'% copy':>7s} {'eager us':>9s} "
          f"{'compile us':>10s} {'x eager':>8s} {'x compile':>9s}")
    for name, size, nbytes, fast, ref in cases(dev, args.smoke):
        a, b = fast(), ref()
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            torch.testing.assert_close(u, v, rtol=1e-3, atol=1e-4)
        t_fast = timed(fast, reps, warmup).median
        t_ref = timed(ref, reps, warmup).median
        t_comp = timed(torch.compile(ref), reps, warmup).median if cuda else float("nan")
        gbs = nbytes / t_fast / 1e9
        row = dict(kernel=name, size=size, bytes=nbytes, triton_s=t_fast, eager_s=t_ref, compile_s=t_comp, gb_s=gbs,
                   pct_copy=100 * gbs / copy_gbs if copy_gbs else None, speedup_eager=t_ref / t_fast,
                   speedup_compile=t_comp / t_fast)
        rows.append(row)
        pct = f"{row['pct_copy']:.0f}%" if copy_gbs else "-"
        print(f"{name:28s} {size:22s} {1e6 * t_fast:10.1f} {gbs:7.0f} {pct:>7s} {1e6 * t_ref:9.1f} "
              f"{1e6 * t_comp:10.1f} {t_ref / t_fast:8.2f} {t_comp / t_fast:9.2f}")
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), machine=platform.node(),
                device=torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter, smoke test)",
                torch=torch.__version__, copy_gb_s=copy_gbs, command="benchmarks/bench_kernels.py"
                + (" --smoke" if args.smoke else ""), rows=rows)
    out = Path(__file__).with_name("results") / f"kernels_{'smoke' if args.smoke else 'cuda'}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
