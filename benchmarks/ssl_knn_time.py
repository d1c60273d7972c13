"""Self-supervised learning against the clock: kNN accuracy of SimCLR features on MNIST-5k as training time grows.

    .venv/bin/python benchmarks/ssl_knn_time.py --seconds 180 --threads 2 --eval-every 100

Trains chapter 02's SimCLR (the ``--profile`` sizes, ``cpu`` by default) for ``--seconds`` of wall-clock time and, every
``--eval-every`` steps, scores the encoder by k-nearest-neighbour accuracy on the 1,000 held-out digits with the 4,000
training digits as the labelled bank (the evaluation time is not counted as training time). Baselines in the same
run: the same architecture with random weights, and kNN on raw pixels. On a CUDA GPU it also measures the training
throughput of SimCLR with a CIFAR-sized ResNet-18 (``--resnet18``), eager against ``channels_last`` + bf16 + fused
AdamW. Prints a table and writes ``benchmarks/results/ssl_knn_time_<device>.json``.
"""

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from time_to_quality import _machine  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resnet18", action="store_true", help="also measure ResNet-18 SimCLR throughput (CUDA)")
    args = ap.parse_args()

    import torch

    from minidiff import config, data
    from minidiff.nets import count_parameters, make_encoder
    from minidiff.ssl import evaluate
    from minidiff.ssl.augment import digits_augment
    from minidiff.ssl.simclr import SimCLR
    from minidiff.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    device = config.device()
    S = config.get_profile(args.profile).ssl
    config.seed_everything(args.seed)
    tr = data.load_images("mnist5k", "train", device=device, profile=args.profile)
    te = data.load_images("mnist5k", "test", device=device, profile=args.profile)
    aug = digits_augment(S.aug_strength)
    k = S.knn_k

    @torch.no_grad()
    def knn(encoder) -> float:
        was = encoder.training
        encoder.eval()
        f_tr = torch.cat([encoder(x) for x in tr.x.split(500)])
        f_te = torch.cat([encoder(x) for x in te.x.split(500)])
        encoder.train(was)
        return evaluate.knn_accuracy(f_tr, tr.y, f_te, te.y, k=k)

    baselines = {"raw pixels": evaluate.knn_accuracy(tr.x.flatten(1), tr.y, te.x.flatten(1), te.y, k=k),
                 "random encoder": knn(make_encoder(S.encoder, 1, S.width).to(device))}
    model = SimCLR(make_encoder(S.encoder, 1, S.width), S.proj_hidden, S.proj_dim, S.temperature).to(device)
    t0 = time.perf_counter()
    res = train(model, lambda m, x: m(*aug.two_views(x)), data.TensorSampler(tr.x, batch_size=S.batch, seed=args.seed),
                TrainConfig(steps=10**7, lr=S.lr, weight_decay=S.weight_decay, warmup=10, grad_clip=None,
                            ema_decay=None, max_seconds=args.seconds, anneal_by_time=True, eval_every=args.eval_every,
                            seed=args.seed, desc="SimCLR"),
                evaluate=lambda step, m: {"knn": knn(m.encoder)})
    wall = time.perf_counter() - t0
    curve = [{"step": 0, "seconds": 0.0, "knn": baselines["random encoder"]}] + [
        {"step": e["step"], "seconds": round(e["time"], 1), "knn": e["knn"]} for e in res.history["eval"]]
    print(f"\nSimCLR on MNIST-5k ({args.profile} sizes: {S.encoder} width {S.width}, batch {S.batch}, "
          f"{count_parameters(model.encoder):,} encoder parameters), {device}, {args.threads} thread(s); "
          f"kNN (k={k}) accuracy on the 1,000 held-out digits\n")
    print(f"{'step':>6}{'train s':>9}{'kNN acc':>9}")
    for c in curve:
        print(f"{c['step']:>6}{c['seconds']:>9.1f}{c['knn']:>9.3f}")
    for name, v in baselines.items():
        print(f"({name}: {v:.3f})")
    first = next((c for c in curve if c["knn"] > baselines["raw pixels"]), None)
    print(f"\n{res.step} steps in {res.seconds:.0f} s of training ({wall:.0f} s with evaluation), "
          f"{res.step * S.batch * 2 / res.seconds:.0f} views/s; beats raw pixels after "
          + (f"{first['seconds']:.0f} s (step {first['step']})" if first else "never in this budget"))
    out = {"benchmark": "ssl_knn_time", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/ssl_knn_time.py " + shlex.join(sys.argv[1:]),
           "machine": torch.cuda.get_device_name() if device.type == "cuda" else _machine(args.threads),
           "torch": torch.__version__, "profile": args.profile, "batch": S.batch, "steps": res.step,
           "train_seconds": res.seconds, "views_per_s": res.step * S.batch * 2 / res.seconds, "curve": curve,
           "baselines": baselines}
    if args.resnet18:
        out["resnet18"] = resnet18_throughput(device)
    path = HERE / "results" / f"ssl_knn_time_{device.type}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


def resnet18_throughput(device, batch: int = 512, steps: int = 20) -> dict:
    """SimCLR training steps with a CIFAR ResNet-18 on 32x32 views: eager fp32 against channels_last + bf16 + fused."""
    import torch

    from minidiff.bench import timed
    from minidiff.nets import make_encoder
    from minidiff.ssl.simclr import SimCLR

    if device.type != "cuda":
        raise SystemExit("--resnet18 needs a CUDA GPU")
    x = torch.randn(batch, 3, 32, 32, device=device)
    res = {}
    for name, fast in (("eager fp32", False), ("channels_last + bf16 + fused AdamW", True)):
        model = SimCLR(make_encoder("resnet18", 3, 64)).to(device)
        xx = x
        if fast:
            model, xx = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fast or None)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=fast):
                loss = model(xx, xx.flip(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        res[name] = 2 * batch / timed(step, reps=1, warmup=3, number=steps).median
        print(f"ResNet-18 SimCLR, {name}: {res[name]:.0f} views/s")
    return res


if __name__ == "__main__":
    main()
