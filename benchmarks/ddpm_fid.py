"""Chapter 04's DDPM on digits, for one profile and several seeds: how good are the samples, and how stable is that?

    .venv/bin/python benchmarks/ddpm_fid.py --profile ci --seeds 0 1 2

Prints one row per seed and writes ``benchmarks/results/ddpm_fid_<profile>.json``. The notebook asserts that the
samples' FID is below 0.85x the blurred-digit baseline; this script shows the margin across seeds.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from minidiff import config, data, metrics
from minidiff.diffusion import ddpm, schedules
from minidiff.nets import UNet, count_parameters
from minidiff.train import TrainConfig, train


def run(profile: str, seed: int) -> dict:
    P = config.get_profile(profile)
    D = P.ddpm
    device = config.device()
    config.seed_everything(seed)
    train_set = data.load_images(D.dataset, "train", device=device, profile=profile)
    heldout = data.load_images(D.dataset, "test", profile=profile)
    sched = schedules.make_schedule(D.schedule, D.T).to(device)
    unet = UNet(1, D.base_channels, D.channel_mults, attention=D.attention, patch=D.patch).to(device)
    res = train(unet, lambda m, x: ddpm.ddpm_loss(m, sched, x, prediction=D.prediction),
                data.TensorSampler(train_set.x, batch_size=D.batch, seed=seed),
                TrainConfig(steps=D.steps, lr=D.lr, warmup=D.warmup, ema_decay=D.ema_decay, max_seconds=D.max_seconds,
                            seed=seed, progress=False))
    t0 = time.perf_counter()
    samples = torch.cat([ddpm.sample(res.ema, sched, (min(D.sample_batch, D.n_samples - i), 1, 28, 28),
                                     prediction=D.prediction, clip_x0=D.clip_x0, progress=False)
                         for i in range(0, D.n_samples, D.sample_batch)]).clamp(-1, 1).cpu()
    sample_s = time.perf_counter() - t0
    real = train_set.x[:D.n_samples].cpu()
    reference = metrics.Reference(heldout.x)
    fids = {
        "samples": metrics.fid(samples, reference),
        "real": metrics.fid(real, reference),
        "blurred": metrics.fid(metrics.gaussian_blur(real, D.blur_sigma), reference),
        "noise": metrics.fid(torch.randn_like(real).clamp(-1, 1), reference),
    }
    return {"profile": profile, "seed": seed, "params": count_parameters(unet), "train_steps": res.step,
            "train_seconds": round(res.seconds, 1), "stopped_by": res.stopped, "sample_seconds": round(sample_s, 1),
            "n_samples": D.n_samples, "T": D.T, "fid": {k: round(v, 1) for k, v in fids.items()},
            "kid_samples": round(metrics.kid(samples, reference, subsets=20)[0], 1),
            "confidence": metrics.classifier_confidence(samples)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, choices=config.PROFILE_NAMES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    profile = args.profile or config.profile_name()
    rows = []
    print(f"{'seed':>4} {'steps':>6} {'train s':>8} {'sample s':>9} {'FID samples':>12} {'real':>7} {'blurred':>8} "
          f"{'noise':>7} {'samples/blur':>13}")
    for seed in args.seeds:
        r = run(profile, seed)
        rows.append(r)
        f = r["fid"]
        print(f"{seed:4d} {r['train_steps']:6d} {r['train_seconds']:8.1f} {r['sample_seconds']:9.1f} {f['samples']:12.1f} "
              f"{f['real']:7.1f} {f['blurred']:8.1f} {f['noise']:7.1f} {f['samples'] / f['blurred']:13.2f}", flush=True)
    out = Path(__file__).parent / "results" / f"ddpm_fid_{profile}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                               "torch": torch.__version__, "device": str(config.device()), "runs": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
