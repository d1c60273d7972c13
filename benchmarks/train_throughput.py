"""Training throughput (images/s) of minidiff's U-Net and DiT against diffusers' eager models at the same config.

    .venv/bin/python benchmarks/train_throughput.py                 # CPU: 2 threads, small shapes
    .venv/bin/python benchmarks/train_throughput.py --gpu-shapes    # CUDA: DiT-S/2, DiT-B/4 and the 64-wide U-Net

A training step is: forward on a noisy batch, MSE to a target, backward, optimizer step (AdamW), as in
``minidiff.train``. Contenders at one shape:

* ``diffusers eager``: ``UNet2DModel`` with the same widths, one ResNet block per level and attention at the same
  levels, or ``DiTTransformer2DModel`` (adaLN-Zero) with the same depth, width, heads and patch size; torch AdamW.
* ``minidiff eager``: the package's model, plain torch (``MINIDIFF_KERNELS=torch``), torch AdamW.
* ``minidiff fast``: what ``minidiff.train`` switches on for the device: on CUDA the Triton kernels (GroupNorm+SiLU,
  LayerNorm+modulate), ``channels_last`` for the U-Net and fused AdamW; on the CPU the same model as eager (the
  switches are CUDA-only), so the two rows measure noise.
* ``minidiff fast + compile`` (``--compile``): the same under ``torch.compile``.

All contenders use the same batch and precision (bf16 autocast on CUDA, fp32 on the CPU). Timing: ``--warmup``
steps, then the median of ``--repeats`` timings of ``--steps`` steps (:func:`minidiff.bench.timed`, which
synchronises the GPU around its clock readings). diffusers is installed into ``benchmarks/.peers`` on first use (see ``time_to_quality.py``).
Prints a table and writes ``benchmarks/results/train_throughput_<device>.json``.
"""

import argparse
import contextlib
import datetime
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from time_to_quality import PEERS, _machine, ensure_peers, peer_versions  # noqa: E402


def unet_pair(base: int, mults: tuple, attention: bool, size: int, channels: int):
    from diffusers import UNet2DModel

    from minidiff.nets import UNet

    ours = UNet(channels, base, mults, attention=attention, patch=1)
    n = len(mults)
    down = tuple("AttnDownBlock2D" if attention and i == n - 1 else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if attention and i == 0 else "UpBlock2D" for i in range(n))
    theirs = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                         block_out_channels=tuple(base * m for m in mults), down_block_types=down, up_block_types=up,
                         norm_num_groups=min(32, base))
    return ours, theirs


def dit_pair(name: str, size: int, channels: int):
    from diffusers import DiTTransformer2DModel

    from minidiff.nets.dit import DiT, dit_config

    cfg = dit_config(name, input_size=size, in_channels=channels, num_classes=10)
    ours = DiT(cfg)
    theirs = DiTTransformer2DModel(num_attention_heads=cfg.heads, attention_head_dim=cfg.hidden // cfg.heads,
                                   in_channels=channels, out_channels=channels, num_layers=cfg.depth, sample_size=size,
                                   patch_size=cfg.patch, num_embeds_ada_norm=10)
    return ours, theirs


def measure(model, call, batch: int, channels: int, size: int, device, amp, args, channels_last=False,
            fused=False) -> float:
    import torch

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    target = torch.randn_like(x)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            loss = torch.nn.functional.mse_loss(call(model, x, t, y).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    from minidiff.bench import timed

    return batch / timed(step, reps=args.repeats, warmup=args.warmup, number=args.steps).median


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on the CPU, 256 on CUDA")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gpu-shapes", action="store_true", help="the larger shapes (needs CUDA)")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row (long one-off compile)")
    args = ap.parse_args()

    ensure_peers()
    sys.path.insert(0, str(PEERS))
    import torch

    from minidiff import config, kernels

    torch.set_num_threads(args.threads)
    device = config.device()
    cuda = device.type == "cuda"
    if args.gpu_shapes and not cuda:
        raise SystemExit("--gpu-shapes needs a CUDA GPU")
    batch = args.batch or (256 if cuda else 64)
    if args.gpu_shapes:
        shapes = [("U-Net 64x(1,2,2), attn", "unet", dict(base=64, mults=(1, 2, 2), attention=True), 32, 3),
                  ("DiT-S/2", "dit", dict(name="DiT-S/2"), 32, 4), ("DiT-B/4", "dit", dict(name="DiT-B/4"), 32, 4)]
    else:
        shapes = [("U-Net 32x(1,2,2), attn", "unet", dict(base=32, mults=(1, 2, 2), attention=True), 28, 1),
                  ("DiT-Mini/4", "dit", dict(name="DiT-Mini/4"), 28, 1)]
    amp = cuda
    rows = []
    for label, kind, kw, size, ch in shapes:
        ours, theirs = (unet_pair(**kw, size=size, channels=ch) if kind == "unet" else dit_pair(**kw, size=size,
                                                                                                  channels=ch))
        ours_call = lambda m, x, t, y: m(x, t, y) if kind == "dit" else m(x, t)               # noqa: E731
        if kind == "unet":
            theirs_call = lambda m, x, t, y: m(x, t).sample                                  # noqa: E731
        else:
            theirs_call = lambda m, x, t, y: m(x, t, class_labels=y).sample                  # noqa: E731
        n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
        res = {"shape": label, "batch": batch, "params_minidiff": n_ours, "params_diffusers": n_theirs}
        res["diffusers eager"] = measure(theirs, theirs_call, batch, ch, size, device, amp, args)
        kernels.set_backend("torch")
        res["minidiff eager"] = measure(ours, ours_call, batch, ch, size, device, amp, args)
        kernels.set_backend("auto")
        res["minidiff fast"] = measure(ours, ours_call, batch, ch, size, device, amp, args,
                                       channels_last=cuda and kind == "unet", fused=cuda)
        if args.compile:
            res["minidiff fast + compile"] = measure(torch.compile(ours), ours_call, batch, ch, size, device, amp,
                                                     args, channels_last=cuda and kind == "unet", fused=cuda)
        rows.append(res)
        print(f"{label}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in res.items() if "eager" in k or "fast" in k),
              flush=True)

    cols = [c for c in ("diffusers eager", "minidiff eager", "minidiff fast", "minidiff fast + compile") if c in rows[0]]
    print(f"\nTraining throughput, images/s ({device}, batch {batch}, {'bf16 autocast' if amp else 'fp32'}); "
          f"ratio = best minidiff / diffusers eager\n")
    head = f"{'shape':<24}{'params (ours/theirs)':>24}" + "".join(f"{c:>24}" for c in cols) + f"{'ratio':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        r["ratio"] = max(r[c] for c in cols if c.startswith("minidiff")) / r["diffusers eager"]
        print(f"{r['shape']:<24}{r['params_minidiff']:>12,}/{r['params_diffusers']:<11,}"
              + "".join(f"{r[c]:>24.0f}" for c in cols) + f"{r['ratio']:>8.2f}")
    out = HERE / "results" / f"train_throughput_{device.type}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "train_throughput", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/train_throughput.py " + shlex.join(sys.argv[1:]),
        "machine": torch.cuda.get_device_name() if cuda else _machine(args.threads), "torch": torch.__version__,
        "peers": peer_versions(), "precision": "bf16 autocast" if amp else "fp32", "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
