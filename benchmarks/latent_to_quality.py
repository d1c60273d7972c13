"""Latent diffusion on a CPU: DiT and U-Net on an autoencoder's latents, guided and unguided (issue 18, targets 2-3).

    .venv/bin/python benchmarks/latent_to_quality.py --models latent-dit latent-unet --budget 600 --seeds 0 1 2
    .venv/bin/python benchmarks/latent_to_quality.py --models latent-unet-guided pixel-unet-guided --budget 300
    .venv/bin/python benchmarks/latent_to_quality.py --table

The autoencoder (``minidiff.nets.AutoencoderKL``, 28x28x1 -> 7x7x4, chapter 10's) is trained first, once per seed, for
``--ae-seconds`` of wall-clock time; that time is stated next to every latent row (it is paid once and reused by every
latent model), and so is its reconstruction FID, a floor under every latent model's FID. Then each model trains on
the 4,000 MNIST-5k training digits (their latents, divided by the latent std) for ``--budget`` seconds on ``--threads``
threads in a fresh process, with the learning rate annealed by time. During training, at a quarter, half,
three quarters and the end of the budget, the EMA model draws 200 digits (DPM-Solver++(2M) SDE, 25 calls) for a
curve of FID against training seconds (evaluation time is not training time). At the end it draws ``--samples``
digits with DPM-Solver++(2M) SDE at 50 network calls (50 guided calls count once per step, the guided batch being
doubled), scored by minidiff's feature FID against the 1,000 held-out digits and by the shipped classifier.

Models (``MODELS``): ``latent-dit`` (DiT-Mini/1: 49 tokens of the 7x7x4 latent; ``latent-dit-b64`` and
``latent-dit-b32`` the same at batch 64 and 32; ``latent-dit-b64-diffusers`` diffusers' ``DiTTransformer2DModel`` of
the same size with the same recipe), ``latent-unet`` (a U-Net at one
resolution, 7x7), ``pixel-dit`` (DiT-Mini/4 on pixels: 49 tokens of 4x4 pixels), and the class-conditional
``latent-unet-guided`` / ``pixel-unet-guided`` (labels dropped with probability 0.1 for classifier-free guidance). The
guidance scale ``w`` follows Ho & Salimans' eq. 6 as ``minidiff.diffusion.guidance.guided`` computes it:
``eps_null + w (eps_label - eps_null)``: w = 0 is unconditional, w = 1 the plain conditional model. Guided models
are scored at each ``--scales`` value on 50 requested digits of each class: FID, and the fraction the classifier
reads as the requested digit.

Each run is appended to ``benchmarks/results/latent_to_quality.json`` (a rerun replaces its row); ``--table`` prints
the median over seeds with the spread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from unet_recipe import load_runs, record_run, save_grid  # noqa: E402  (one grid and machine format)
RESULTS = HERE / "results" / "latent_to_quality.json"
CACHE = HERE / ".cache"

AE = dict(latent_channels=4, width=32, batch=64, lr=2e-3, kl_weight=1e-3)
MODELS = {
    "latent-dit": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=128, lr=1e-3, guided=False),
    # the same DiT at half the batch: twice the steps in the same seconds (a DiT step is the costly part on a CPU)
    "latent-dit-b64": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=64, lr=1e-3, guided=False),
    # a quarter of the batch: four times the steps of latent-dit in the same seconds
    "latent-dit-b32": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=32, lr=1e-3, guided=False),
    # latent-dit-b32 under bf16 autocast (a CPU with native bf16; attention stays fp32, nets.embeddings.attend)
    "latent-dit-b32-bf16": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=32, lr=1e-3,
                                guided=False, amp="bf16"),
    "latent-dit-b32-bf16-lr2e-3": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=32, lr=2e-3,
                                       guided=False, amp="bf16"),
    "latent-dit-b32-bf16-ema999": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=32, lr=1e-3,
                                       guided=False, amp="bf16", ema_decay=0.999),
    "latent-dit-b64-bf16": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=64, lr=1e-3,
                                guided=False, amp="bf16"),
    # diffusers' DiTTransformer2DModel at DiT-Mini's size (4 blocks, 4 heads of 32, MLP ratio 4, adaLN-Zero) with
    # latent-dit-b64's whole recipe: what the implementation buys, recipe held fixed
    "latent-dit-b64-diffusers": dict(kind="dit", space="latent", size="DiT-Mini", patch=1, batch=64, lr=1e-3,
                                     guided=False, net="diffusers"),
    "latent-unet": dict(kind="unet", space="latent", base_channels=64, batch=128, lr=2e-3, guided=False),
    "pixel-dit": dict(kind="dit", space="pixel", size="DiT-Mini", patch=4, batch=128, lr=1e-3, guided=False),
    "latent-unet-guided": dict(kind="unet", space="latent", base_channels=64, batch=128, lr=2e-3, guided=True),
    # the pixel U-Net keeps the winner of benchmarks/unet_recipe.py (eps with min-SNR, clipped x0 when sampling)
    "pixel-unet-guided": dict(kind="unet", space="pixel", base_channels=32, batch=64, lr=2e-3, guided=True,
                              prediction="eps"),
}
COMMON = dict(T=1000, schedule="cosine", prediction="v", weighting="min_snr", warmup=100, ema_decay=0.995,
              p_uncond=0.1, amp="off")


def _env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), MINIDIFF_CHECKPOINT_DIR="off",
                HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE / ".peers" / "site")]))


def ae_path(seed: int, seconds: float) -> Path:
    return CACHE / f"latent_ae_{seed}_{seconds:g}s.pt"


def worker_ae(seed: int, seconds: float) -> None:
    """Train the autoencoder for ``seconds`` and keep it (weights, scale, training time, reconstruction FID)."""
    import torch

    from minidiff import config, data, metrics
    from minidiff.nets import AutoencoderKL
    from minidiff.train import TrainConfig, train

    config.seed_everything(seed)
    x = data.load_images("mnist5k", "train", profile="cpu").x
    heldout = data.load_images("mnist5k", "test", profile="cpu").x
    ae = AutoencoderKL(1, AE["latent_channels"], AE["width"])
    res = train(ae, lambda m, b: m.loss(b, kl_weight=AE["kl_weight"]), data.TensorSampler(x, batch_size=AE["batch"],
                seed=seed), TrainConfig(steps=10**7, lr=AE["lr"], warmup=20, ema_decay=None, max_seconds=seconds,
                                       anneal_by_time=True, seed=seed, progress=False))
    ae.eval().fit_scale(x)
    with torch.no_grad():
        recon = ae.from_latent(ae.to_latent(heldout)).clamp(-1, 1)
    out = {"state": ae.state_dict(), "seconds": res.seconds, "steps": res.step,
           "recon_fid": metrics.fid(recon, metrics.Reference(heldout))}
    torch.save(out, ae_path(seed, seconds))


def DiffusersDiT(M: dict, channels: int, size: int):
    """diffusers' ``DiTTransformer2DModel`` of the size of ``M["size"]`` behind minidiff's ``model(x, t)`` call. The
    model is class-conditional by construction (adaLN-Zero on time + label); every image gets label 0, so the label
    embedding is one learned constant and the model is unconditional."""
    import torch
    from diffusers import DiTTransformer2DModel
    from torch import nn

    from minidiff.nets import dit_config

    c = dit_config(M["size"], patch=M["patch"])

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = DiTTransformer2DModel(num_attention_heads=c.heads, attention_head_dim=c.hidden // c.heads,
                                             in_channels=channels, num_layers=c.depth, sample_size=size,
                                             patch_size=M["patch"], num_embeds_ada_norm=1)

        def forward(self, x, t):
            return self.net(x, t, class_labels=torch.zeros_like(t)).sample

    return Wrapped()


def worker_model(name: str, seed: int, budget: float, samples: int, ae_seconds: float, scales: list[float]) -> dict:
    import torch

    from minidiff import config, data, metrics
    from minidiff.diffusion import dpm_solver, guidance, schedules
    from minidiff.nets import AutoencoderKL, DiT, UNet, count_parameters, dit_config
    from minidiff.recipes import train_ddpm
    from minidiff.train import TrainConfig

    M = {**COMMON, **MODELS[name]}
    config.seed_everything(seed)
    train_set = data.load_images("mnist5k", "train", profile="cpu")
    heldout = metrics.Reference(data.load_images("mnist5k", "test", profile="cpu").x)
    out = {"model": name, "seed": seed, "budget_s": budget, "threads": torch.get_num_threads(), "settings": M}
    if M["space"] == "latent":
        saved = torch.load(ae_path(seed, ae_seconds), weights_only=False)
        ae = AutoencoderKL(1, AE["latent_channels"], AE["width"])
        ae.load_state_dict(saved["state"])
        ae.eval()
        x = ae.to_latent(train_set.x)
        decode = ae.from_latent
        out.update(ae_seconds=saved["seconds"], ae_steps=saved["steps"], ae_recon_fid=saved["recon_fid"])
    else:
        x, decode = train_set.x, (lambda z: z)
    C, S = x.shape[1], x.shape[-1]
    classes = 10 if M["guided"] else None
    if M.get("net") == "diffusers":
        net = DiffusersDiT(M, C, S)
    elif M["kind"] == "dit":
        net = DiT(dit_config(M["size"], patch=M["patch"], input_size=S, in_channels=C, num_classes=classes))
    else:
        mults = (1,) if M["space"] == "latent" else (1, 2)
        net = UNet(C, M["base_channels"], mults, attention=False, patch=1 if M["space"] == "latent" else 2,
                   num_classes=classes)
    sched = schedules.make_schedule(M["schedule"], M["T"])
    clip = M["space"] == "pixel"

    def draw(model, n, steps, g, labels=None, scale=None):
        kw, fn = {}, model
        if labels is not None:
            fn = guidance.guided(model, scale, null_label=10)
            kw = {"model_kwargs": {"y": labels}}
        z = dpm_solver.dpmpp_2m_sample(fn, sched, (n, C, S, S), steps=steps, sde=True, prediction=M["prediction"],
                                       clip_x0=clip, generator=g, progress=False, **kw)
        return decode(z).clamp(-1, 1)

    curve = []
    marks = [budget * f for f in (0.25, 0.5, 0.75)]
    clock = {"start": 0.0, "in_eval": 0.0}        # training seconds = wall time since start - time in evaluate

    def evaluate(step, model):
        entered = time.perf_counter()
        seconds = entered - clock["start"] - clock["in_eval"]
        if marks and seconds >= marks[0]:
            marks.pop(0)
            g = torch.Generator().manual_seed(seed + 7)
            labels = torch.arange(200) % 10 if M["guided"] else None
            with torch.no_grad():
                s = draw(model, 200, 25, g, labels, 1.0 if M["guided"] else None)
            curve.append({"step": step, "seconds": seconds, "fid200": metrics.fid(s, heldout)})
        clock["in_eval"] += time.perf_counter() - entered
        return {}

    cfg = TrainConfig(steps=10**7, lr=M["lr"], warmup=M["warmup"], ema_decay=M["ema_decay"], max_seconds=budget,
                      anneal_by_time=True, seed=seed, progress=False, eval_every=10, amp=M["amp"])
    clock["start"] = time.perf_counter()
    run = train_ddpm(net, sched, x, train_set.y if M["guided"] else None, cfg=cfg, batch_size=M["batch"],
                     prediction=M["prediction"], p_uncond=M["p_uncond"] if M["guided"] else None,
                     weighting=M["weighting"], evaluate=evaluate)
    ema = run.ema.eval()
    out["_state"] = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}   # stays in the cache only
    out.update(params=count_parameters(net), steps=run.step, train_seconds=run.seconds,
               loss_curve=[(t, l) for t, l in zip(run.history["time"][::20], run.history["loss"][::20])])
    g = torch.Generator().manual_seed(seed + 1)
    results = {}
    with torch.no_grad():
        if M["guided"]:
            labels = torch.arange(samples) % 10
            for w in scales:
                t0 = time.perf_counter()
                s = draw(ema, samples, 50, g, labels, w)
                p = metrics.predict_proba(s)
                results[f"w={w:g}"] = {"fid": metrics.fid(s, heldout), "accuracy": float((p.argmax(1) == labels)
                                       .float().mean()), "confidence": float(p.max(1).values.mean()),
                                       "sample_seconds": time.perf_counter() - t0}
                out.setdefault("_samples", {})[f"w={w:g}"] = s[:100]
        else:
            t0 = time.perf_counter()
            s = draw(ema, samples, 50, g)
            results["unguided"] = {"fid": metrics.fid(s, heldout),
                                   "confidence": metrics.classifier_confidence(s)["mean_max_prob"],
                                   "sample_seconds": time.perf_counter() - t0}
            out["_samples"] = {"unguided": s[:64]}
    marks[:] = [0.0]
    clock.update(start=time.perf_counter() - run.seconds, in_eval=0.0)
    evaluate(run.step, ema)                          # the curve's last point: the same 200 digits at the end
    out.update(results=results, curve=curve)
    return out


def _load() -> list[dict]:
    return load_runs(RESULTS)


def table(runs: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        for key in r["results"]:
            groups.setdefault((r["model"], key, r["budget_s"], r["threads"]), []).append(r)
    lines = [f"{'model':<20}{'scale':>9}{'budget':>7}{'seeds':>6}{'steps':>7}{'AE s':>6}{'FID':>8}{'spread':>14}"
             f"{'acc':>6}{'conf':>6}"]
    for (name, key, b, thr), rs in sorted(groups.items()):
        f = [r["results"][key]["fid"] for r in rs]
        acc = [r["results"][key].get("accuracy") for r in rs]
        ae = statistics.median(r.get("ae_seconds", 0) for r in rs)
        lines.append(f"{name:<20}{key:>9}{b:>7g}{len(rs):>6}{statistics.median(r['steps'] for r in rs):>7g}"
                     f"{ae:>6.0f}{statistics.median(f):>8.1f}{f'{min(f):.1f}-{max(f):.1f}':>14}"
                     + (f"{statistics.median(acc):>6.2f}" if acc[0] is not None else f"{'':>6}")
                     + f"{statistics.median(r['results'][key]['confidence'] for r in rs):>6.2f}")
    return "\n".join(lines)


def plot_curves(runs: list[dict], budget: float, path: Path) -> bool:
    """FID (200 digits, 25 solver steps) and training loss against training seconds for the unguided models trained
    for ``budget`` seconds, one line per run, into ``path``; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted((r for r in runs if r["budget_s"] == budget and "unguided" in r["results"] and r.get("curve")),
                  key=lambda r: (r["model"], r["seed"]))
    if not runs:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        label = f"{r['model']} (seed {r['seed']})"
        line, = a.plot([c["seconds"] for c in r["curve"]], [c["fid200"] for c in r["curve"]], "o-", label=label)
        t, loss = zip(*r["loss_curve"])
        k = 5                                              # a running mean over 5 logged steps (100 training steps)
        smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
        b.plot(t, smooth, color=line.get_color(), label=label)
    a.set(xlabel="training seconds", ylabel="FID (200 digits)", yscale="log", title="sample quality")
    b.set(xlabel="training seconds", ylabel="loss (min-SNR weighted, running mean)", yscale="log",
          title="training loss")
    for ax in (a, b):
        ax.grid(alpha=.3, which="both")
    a.legend(fontsize=7)
    fig.suptitle(f"Unconditional models on the same autoencoder latents, {budget:g} s of training on 2 threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["latent-dit"], choices=list(MODELS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--budget", type=float, default=600.0)
    ap.add_argument("--ae-seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--scales", nargs="+", type=float, default=[1.0, 2.0, 3.0])
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.table:
        print(table(_load()))
        return
    import torch

    if args.worker:
        torch.set_num_threads(args.threads)
        if args.worker == "ae":
            worker_ae(args.seeds[0], args.ae_seconds)
        else:
            torch.save(worker_model(args.worker, args.seeds[0], args.budget, args.samples, args.ae_seconds,
                                    args.scales), args.out)
        return
    CACHE.mkdir(exist_ok=True)
    if any(MODELS[m].get("net") == "diffusers" for m in args.models):
        from time_to_quality import ensure_peers

        ensure_peers()                                          # diffusers into benchmarks/.peers (first run only)
    base = [sys.executable, __file__, "--threads", str(args.threads), "--samples", str(args.samples), "--budget",
            str(args.budget), "--ae-seconds", str(args.ae_seconds), "--scales", *map(str, args.scales)]
    for seed in args.seeds:
        if any(MODELS[m]["space"] == "latent" for m in args.models) and not ae_path(seed, args.ae_seconds).exists():
            print(f"[autoencoder seed {seed}] training {args.ae_seconds:g} s ...", flush=True)
            subprocess.run(base + ["--worker", "ae", "--seeds", str(seed)], env=_env(args.threads), check=True)
        for name in args.models:
            out = CACHE / f"latent_{name}_{seed}_{args.budget:g}_{args.threads}.pt"
            print(f"[{name} seed {seed}] training {args.budget:g} s on {args.threads} thread(s) ...", flush=True)
            subprocess.run(base + ["--worker", name, "--seeds", str(seed), "--out", str(out)], env=_env(args.threads),
                           check=True)
            r = torch.load(out, weights_only=False)
            r.pop("_state", None)                                # the weights stay in the cache, not in the JSON
            for key, s in r.pop("_samples").items():
                save_grid(s, CACHE / f"latent_{name}_{seed}_{args.budget:g}_{key}.png")
                if seed == min(args.seeds):                      # the page shows the first seed's digits
                    save_grid(s, HERE / "results" / f"latent_{name}_{args.budget:g}s_{key}.png")
            r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            r["command"] = (f"python benchmarks/latent_to_quality.py --models {name} --seeds {seed} --budget "
                            f"{args.budget:g} --ae-seconds {args.ae_seconds:g} --threads {args.threads} --samples "
                            f"{args.samples}" + (f" --scales {' '.join(f'{w:g}' for w in args.scales)}"
                                                  if MODELS[name]["guided"] else ""))
            record_run(RESULTS, r, ("model", "seed", "budget_s", "threads"), {
                "benchmark": "latent_to_quality", "autoencoder": AE, "common": COMMON, "models": MODELS})
            print(f"[{name} seed {seed}] {r['steps']} steps; " + ", ".join(
                f"{k}: FID {v['fid']:.1f}" + (f" acc {v['accuracy']:.2f}" if "accuracy" in v else "")
                for k, v in r["results"].items()) + "; curve " + ", ".join(
                f"{c['seconds']:.0f}s {c['fid200']:.0f}" for c in r["curve"]), flush=True)
    for b in sorted({r["budget_s"] for r in _load()}):
        plot_curves(_load(), b, HERE / "results" / f"curves_latent_{b:g}s.png")
    print(table(_load()))


if __name__ == "__main__":
    main()
