"""Time-to-quality on MNIST-5k, CPU: minidiff against denoising-diffusion-pytorch and diffusers, same wall-clock budget.

    .venv/bin/python benchmarks/time_to_quality.py --budget 300 --threads 2 --samples 500 --seeds 0 1 2

Every contender trains on the same 4,000 MNIST-5k digits for ``--budget`` seconds of wall-clock time (each in a fresh
process limited to ``--threads`` threads), then draws ``--samples`` images, which are scored by minidiff's feature FID
against the 1,000 held-out digits (and by the digit classifier's confidence: are they recognisable digits?).

Contenders, each with its own documented small-image configuration:

* ``minidiff``: a recipe of ``benchmarks/unet_recipe.py`` (``--recipe``, default ``min_snr``, the winner of that
  study: the cpu-profile U-Net with 32 base channels and 2x2 patches, T = 1000 cosine schedule, eps-prediction with
  min-SNR-5 loss weighting, EMA, the learning rate's cosine decay over the wall-clock budget; ``--recipe base`` is the
  same without the weighting, the recipe of the runs before 2026-12-03); sampled with DDIM, 50 network calls, and
  also with the 1,000-step ancestral sampler, DDIM with eta = 1 and DPM-Solver++(2M) (SDE and ODE) at 50 calls, to
  check the sampling target (50 calls within 10% of the 1,000-step FID).
* ``ddpm-pytorch``: lucidrains' ``denoising-diffusion-pytorch``, its README configuration: ``Unet(dim=64,
  dim_mults=(1, 2, 4, 8), flash_attn=True)``, ``GaussianDiffusion(timesteps=1000, sampling_timesteps=250)``, its
  ``Trainer`` defaults reproduced step for step (Adam lr 8e-5, betas (0.9, 0.99), batch 32 with 2 accumulation
  steps, gradient norm clipped at 1, EMA 0.995 updated every 10 steps). Its U-Net halves the resolution 3 times, so
  the digits are zero-padded to 32x32 and the samples cropped back to 28x28.
* ``diffusers``: the Hugging Face diffusion course's MNIST U-Net: ``UNet2DModel(sample_size=28, block_out_channels=
  (32, 64, 64), layers_per_block=2, attention in the two lower blocks)``, ``DDPMScheduler(1000,
  beta_schedule="squaredcos_cap_v2")``, Adam lr 1e-3, batch 128, epsilon prediction.

The peers are not dependencies of minidiff: the first run installs them from PyPI into ``benchmarks/.peers/``
(ignored by git) without touching the project's environment, against the torch already installed. Sampling uses each
library's own deterministic DDIM sampler with ``--peer-nfe`` network calls (default 50, the same as minidiff;
``--peer-nfe 0`` uses each library's documented default: 250 DDIM steps for denoising-diffusion-pytorch, 1,000
DDPM steps for diffusers).

Prints a table and writes ``benchmarks/results/time_to_quality_<budget>s.json``.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers" / "site"
PEER_PACKAGES = ("diffusers", "denoising-diffusion-pytorch")
CONTENDERS = ("minidiff", "ddpm-pytorch", "diffusers")


# ----------------------------------------------------------------------------------------------- peer installation
def ensure_peers() -> None:
    """Install the peers into ``benchmarks/.peers/site`` with what they need beyond the project's environment."""
    marker = PEERS / ".installed"
    if marker.exists():
        return
    print(f"installing {', '.join(PEER_PACKAGES)} into {PEERS} (first run only) ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # resolve against the project's environment (torch is already there), then install only what is missing
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report),
                        *PEER_PACKAGES], check=True)
        pins = [f"{p['metadata']['name']}=={p['metadata']['version']}" for p in json.loads(report.read_text())["install"]]
        if any(p.lower().startswith(("torch==", "torchvision==")) for p in pins):
            raise SystemExit(f"the peers would replace torch/torchvision ({pins}); install a compatible torch first")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(PEERS), *pins],
                       check=True)
    marker.write_text("\n".join(pins) + "\n")


def peer_versions() -> dict:
    marker = PEERS / ".installed"
    if not marker.exists():
        return {}
    pins = dict(line.split("==") for line in marker.read_text().split() if "==" in line)
    return {k: v for k, v in pins.items() if k in PEER_PACKAGES}


# ----------------------------------------------------------------------------------------------------- the workers
def _digits():
    from minidiff import data

    return data.load_images("mnist5k", "train", profile="cpu").x        # (4000, 1, 28, 28) in [-1, 1]


def _timed_loop(step_fn, budget: float) -> tuple[int, float]:
    """Call ``step_fn(step, seconds)`` until ``budget`` seconds have passed; returns (steps, seconds)."""
    t0 = time.perf_counter()
    step = 0
    while (elapsed := time.perf_counter() - t0) < budget:
        step_fn(step, elapsed)
        step += 1
    return step, time.perf_counter() - t0


def worker_minidiff(args) -> dict:
    import torch

    from minidiff import config, data
    from minidiff.diffusion import ddim, ddpm, dpm_solver, schedules
    from minidiff.nets import UNet, count_parameters
    from minidiff.train import TrainConfig, train
    from unet_recipe import recipe

    R = recipe(args.recipe)
    config.seed_everything(args.seed)
    x = _digits()
    sched = schedules.make_schedule(R["schedule"], R["T"])
    unet = UNet(1, R["base_channels"], R["channel_mults"], num_res_blocks=R["num_res_blocks"],
                attention=R["attention"], patch=R["patch"])
    res = train(unet, lambda m, b: ddpm.ddpm_loss(m, sched, b, prediction=R["prediction"], weighting=R["weighting"],
                                                  snr_gamma=R["snr_gamma"]),
                data.TensorSampler(x, batch_size=R["batch"], seed=args.seed),
                TrainConfig(steps=10**7, lr=R["lr"], warmup=R["warmup"], min_lr_ratio=R["min_lr_ratio"],
                            ema_decay=R["ema_decay"], grad_clip=R["grad_clip"], max_seconds=args.budget,
                            anneal_by_time=True, seed=args.seed, progress=False))
    out = {"params": count_parameters(unet), "train_steps": res.step, "train_seconds": res.seconds,
           "batch": R["batch"], "images_per_s": res.step * R["batch"] / res.seconds, "config": f"recipe "
           f"{args.recipe!r} of benchmarks/unet_recipe.py: U-Net (base {R['base_channels']}, mults "
           f"{R['channel_mults']}, patch {R['patch']}), T={R['T']} {R['schedule']}, {R['prediction']}-prediction, "
           f"loss weighting {R['weighting']}, lr {R['lr']}, batch {R['batch']}, EMA {R['ema_decay']}"}
    if R["prediction"] != "eps":
        raise SystemExit("the samplers below assume an eps-prediction recipe")
    g = torch.Generator().manual_seed(args.seed + 1)
    net = res.ema.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        out["samples"] = torch.cat([ddim.ddim_sample(net, sched, (n, 1, 28, 28), steps=50, generator=g, clip_x0=True,
                                                     progress=False) for n in _chunks(args.samples, 250)]).clamp(-1, 1)
    out["sample_seconds"], out["nfe"], out["sampler"] = time.perf_counter() - t0, 50, "DDIM, eta 0, 50 steps"
    extra = {}
    if not args.skip_ancestral:
        t0 = time.perf_counter()
        with torch.no_grad():
            extra["ancestral_1000"] = torch.cat([ddpm.sample(net, sched, (n, 1, 28, 28), generator=g, clip_x0=True,
                                                             progress=False)
                                                 for n in _chunks(args.samples, 250)]).clamp(-1, 1)
        out["ancestral_seconds"] = time.perf_counter() - t0
    with torch.no_grad():
        extra["ddim50_eta1"] = torch.cat([ddim.ddim_sample(net, sched, (n, 1, 28, 28), steps=50, eta=1.0, generator=g,
                                                           clip_x0=True, progress=False)
                                          for n in _chunks(args.samples, 250)]).clamp(-1, 1)
        for sde in (True, False):
            extra[f"dpmpp2m_{'sde' if sde else 'ode'}50"] = torch.cat([
                dpm_solver.dpmpp_2m_sample(net, sched, (n, 1, 28, 28), steps=50, sde=sde, generator=g, clip_x0=True,
                                           progress=False) for n in _chunks(args.samples, 250)]).clamp(-1, 1)
    out["extra_samples"] = extra
    return out


def worker_ddpm_pytorch(args) -> dict:
    import torch
    import torch.nn.functional as F
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    torch.manual_seed(args.seed)
    x = F.pad((_digits() + 1) / 2, (2, 2, 2, 2))                    # [0, 1], 32x32 (the library normalises itself)
    model = Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=1, flash_attn=True)
    nfe = args.peer_nfe or 250
    diffusion = GaussianDiffusion(model, image_size=32, timesteps=1000, sampling_timesteps=nfe)
    ema = EMA(diffusion, beta=0.995, update_every=10)
    opt = torch.optim.Adam(diffusion.parameters(), lr=8e-5, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(args.seed)
    batch, accumulate = 32, 2

    def step(_i, _s):
        for _ in range(accumulate):
            idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
            (diffusion(x[idx]) / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()

    steps, seconds = _timed_loop(step, args.budget)
    out = {"params": sum(p.numel() for p in model.parameters()), "train_steps": steps, "train_seconds": seconds,
           "batch": batch * accumulate, "images_per_s": steps * batch * accumulate / seconds,
           "config": "README: Unet(dim=64, dim_mults=(1,2,4,8), flash_attn=True), 1000 steps, Trainer defaults "
                     "(Adam 8e-5, batch 32 x 2 accumulation, EMA 0.995 every 10), 32x32 padded"}
    t0 = time.perf_counter()
    with torch.no_grad():
        s = torch.cat([ema.ema_model.sample(batch_size=n) for n in _chunks(args.samples, 50)])
    out["sample_seconds"], out["nfe"] = time.perf_counter() - t0, nfe
    out["sampler"] = f"its DDIM (sampling_timesteps={nfe})"
    out["samples"] = (s[:, :, 2:30, 2:30] * 2 - 1).clamp(-1, 1)
    return out


def worker_diffusers(args) -> dict:
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    torch.manual_seed(args.seed)
    x = _digits()
    net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64, 64),
                      down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    batch = 128

    def step(_i, _s):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        clean = x[idx]
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        loss = torch.nn.functional.mse_loss(net(sched.add_noise(clean, noise, t), t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps, seconds = _timed_loop(step, args.budget)
    out = {"params": sum(p.numel() for p in net.parameters()), "train_steps": steps, "train_seconds": seconds,
           "batch": batch, "images_per_s": steps * batch / seconds,
           "config": "HF course MNIST UNet2DModel (32, 64, 64), 2 layers/block, attention in 2 blocks; "
                     "DDPMScheduler(1000, squaredcos_cap_v2); Adam 1e-3, batch 128"}
    if args.peer_nfe:
        sampler = DDIMScheduler.from_config(sched.config)
        sampler.set_timesteps(args.peer_nfe)
        out["sampler"], out["nfe"] = f"DDIMScheduler, {args.peer_nfe} steps", args.peer_nfe
    else:
        sampler = sched
        sampler.set_timesteps(1000)
        out["sampler"], out["nfe"] = "DDPMScheduler, 1000 steps", 1000
    net.eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    chunks = []
    with torch.no_grad():
        for n in _chunks(args.samples, 250):
            s = torch.randn((n, 1, 28, 28), generator=g)
            for t in sampler.timesteps:
                s = sampler.step(net(s, t).sample, t, s, generator=g).prev_sample
            chunks.append(s)
    out["sample_seconds"] = time.perf_counter() - t0
    out["samples"] = torch.cat(chunks).clamp(-1, 1)
    return out


WORKERS = {"minidiff": worker_minidiff, "ddpm-pytorch": worker_ddpm_pytorch, "diffusers": worker_diffusers}


def _chunks(n: int, size: int):
    return [min(size, n - i) for i in range(0, n, size)]


# ------------------------------------------------------------------------------------------------------ the parent
CACHE = HERE / ".cache"


def run_contender(name: str, args) -> dict:
    """Run one contender in a fresh process; its result is kept in ``benchmarks/.cache`` (``--reuse`` loads it
    instead of running again, so a long benchmark can be completed contender by contender)."""
    import torch

    recipe = f"_{args.recipe}" if name == "minidiff" and args.recipe != "base" else ""   # base: the old cache name
    out = CACHE / (f"ttq_{name}{recipe}_{args.budget:g}s_{args.samples}_seed{args.seed}_nfe{args.peer_nfe}"
                   f"_t{args.threads}.pt")
    if args.reuse and out.exists():
        print(f"[{name}] reusing {out.relative_to(HERE.parent)}", flush=True)
        return torch.load(out, weights_only=False)
    CACHE.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               MINIDIFF_CHECKPOINT_DIR="off", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if name != "minidiff":
        env["PYTHONPATH"] = os.pathsep.join([str(PEERS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, __file__, "--worker", name, "--out", str(out), "--budget", str(args.budget),
           "--threads", str(args.threads), "--samples", str(args.samples), "--seed", str(args.seed),
           "--peer-nfe", str(args.peer_nfe), "--recipe", args.recipe] + (["--skip-ancestral"] if args.skip_ancestral
                                                                          else [])
    print(f"[{name}] training for {args.budget:g} s on {args.threads} thread(s), then sampling {args.samples} ...",
          flush=True)
    subprocess.run(cmd, env=env, check=True)
    return torch.load(out, weights_only=False)


def _without_note(argv: list[str]) -> list[str]:
    """The command line without ``--note TEXT`` (the note is kept in its own field and shown under the table)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per contender")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per contender and seed; the table "
                    "gives each run and the median with its spread")
    ap.add_argument("--recipe", default="min_snr", help="minidiff's recipe (benchmarks/unet_recipe.py RECIPES)")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peer-nfe", type=int, default=50, help="peer sampling steps; 0 = each library's default")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--skip-ancestral", action="store_true", help="skip minidiff's 1,000-step reference sampling")
    ap.add_argument("--reuse", action="store_true", help="reuse contenders' results kept in benchmarks/.cache")
    ap.add_argument("--note", default="", help="a remark on this run, shown under its table in book/results.md")
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    if args.worker:                                          # inside a fresh process with its own thread limit
        torch.set_num_threads(args.threads)
        res = WORKERS[args.worker](args)
        tmp = Path(args.out).with_suffix(".tmp")
        torch.save(res, tmp)
        os.replace(tmp, args.out)                            # never a half-written result
        return

    sys.path.insert(0, str(HERE.parent))
    from minidiff import data, metrics

    if any(c != "minidiff" for c in args.contenders):
        ensure_peers()
    heldout = metrics.Reference(data.load_images("mnist5k", "test", profile="cpu").x)   # feature statistics, once
    real = data.load_images("mnist5k", "train", profile="cpu").x[:args.samples]
    baselines = {"real training digits": metrics.fid(real, heldout),
                 "Gaussian noise": metrics.fid(torch.randn_like(real).clamp(-1, 1), heldout)}
    rows = []
    for name in args.contenders:
        for seed in args.seeds:
            args.seed = seed
            r = run_contender(name, args)
            samples = r.pop("samples")
            extra = r.pop("extra_samples", {})
            r.update(contender=name, seed=seed, fid=metrics.fid(samples, heldout),
                     confidence=metrics.classifier_confidence(samples)["mean_max_prob"])
            r["extra_fid"] = {k: metrics.fid(v, heldout) for k, v in extra.items()}
            rows.append(r)
            if seed == args.seeds[0]:
                grid = HERE / "results" / f"time_to_quality_{args.budget:g}s_{name}.png"
                _save_grid(samples[:64], grid)
            print(f"[{name} seed {seed}] {r['train_steps']} steps, FID {r['fid']:.1f}", flush=True)

    # one line per contender: the median over seeds (and the extra samplers' medians for minidiff)
    med = {}
    for name in args.contenders:
        rs = [r for r in rows if r["contender"] == name]
        m = dict(rs[0], fid=statistics.median(r["fid"] for r in rs), fid_range=[min(r["fid"] for r in rs),
                 max(r["fid"] for r in rs)], seeds=[r["seed"] for r in rs])
        m["extra_fid"] = {k: statistics.median(r["extra_fid"][k] for r in rs) for k in rs[0]["extra_fid"]}
        med[name] = m
    best_peer = min((m for n, m in med.items() if n != "minidiff"), key=lambda m: m["fid"], default=None)
    md = med.get("minidiff")
    print(f"\nTime to quality: {args.budget:g} s of training on {args.threads} CPU thread(s), {args.samples} samples, "
          f"feature FID against 1,000 held-out MNIST-5k digits (lower is better)\n")
    head = (f"{'contender':<14}{'seed':>5}{'params':>10}{'steps':>8}{'img/s':>8}{'sampler':>34}{'NFE':>6}"
            f"{'sample s':>10}{'FID':>9}{'conf':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['contender']:<14}{r['seed']:>5}{r['params']:>10,}{r['train_steps']:>8}{r['images_per_s']:>8.0f}"
              f"{r['sampler']:>34}{r['nfe']:>6}{r['sample_seconds']:>10.1f}{r['fid']:>9.1f}{r['confidence']:>7.2f}")
    if len(args.seeds) > 1:
        for name, m in med.items():
            print(f"{name + ' median':<14}{'':>79}{m['fid']:>9.1f}  (range {m['fid_range'][0]:.1f}-"
                  f"{m['fid_range'][1]:.1f})")
    for k, v in baselines.items():
        print(f"{'(' + k + ')':<48}{'':>37}{v:>9.1f}")
    summary = {}
    if md and best_peer:
        summary["fid_ratio_best_peer_over_minidiff"] = best_peer["fid"] / md["fid"]
        print(f"\nbest peer ({best_peer['contender']}) FID / minidiff FID = {summary['fid_ratio_best_peer_over_minidiff']:.1f}x"
              f" (target >= 10x)")
    if md and "ancestral_1000" in md["extra_fid"]:
        anc = md["extra_fid"]["ancestral_1000"]
        summary["minidiff_ddim50_over_ancestral1000"] = md["fid"] / anc
        fast = {"ddim50": md["fid"], **{k: v for k, v in md["extra_fid"].items() if k != "ancestral_1000"}}
        best = min(fast, key=fast.get)
        summary["minidiff_best50_over_ancestral1000"] = {"sampler": best, "fid": fast[best], "ratio": fast[best] / anc}
        print(f"minidiff sampling: ancestral 1,000 steps FID {anc:.1f} ({md['ancestral_seconds']:.1f} s); "
              f"DDIM 50 FID {md['fid']:.1f} = {md['fid'] / anc:.2f}x; "
              + ", ".join(f"{k} {v:.1f}" for k, v in md["extra_fid"].items() if k != "ancestral_1000")
              + f"; best at 50 calls: {best} = {fast[best] / anc:.2f}x (target: within 1.10x at <= 50 calls)")
    out = HERE / "results" / f"time_to_quality_{args.budget:g}s.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "time_to_quality", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/time_to_quality.py " + shlex.join(_without_note(sys.argv[1:])),
        "machine": _machine(args.threads),
        "torch": torch.__version__, "peers": peer_versions(), "budget_s": args.budget, "n_samples": args.samples,
        "seeds": args.seeds, "recipe": args.recipe, "rows": rows, "baselines_fid": baselines, "summary": summary, "note": args.note}, indent=2,
        default=float))
    print(f"wrote {out}")


def _machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {threads} thread(s), {platform.system()}"


def _save_grid(x, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torchvision

    grid = torchvision.utils.make_grid((x + 1) / 2, nrow=8, padding=1)[0]
    path.parent.mkdir(exist_ok=True)
    plt.imsave(path, grid.numpy(), cmap="gray", vmin=0, vmax=1)


if __name__ == "__main__":
    main()
