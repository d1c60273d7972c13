"""One short pass through the ci profile's main pipelines, printing every number as JSON (tests/test_determinism.py
runs it twice in fresh processes and compares). Usage: python tests/determinism_target.py SEED"""

import json
import sys

import torch

from minidiff import config, data, metrics
from minidiff.diffusion import ddim, ddpm, schedules
from minidiff.nets import UNet, make_encoder
from minidiff.ssl.augment import digits_augment
from minidiff.ssl.simclr import SimCLR
from minidiff.train import TrainConfig, train


def main(seed: int):
    P = config.get_profile("ci")
    out = {}
    # chapter 04: DDPM U-Net on MNIST-5k, then DDIM samples and their FID
    config.seed_everything(seed)
    D = P.ddpm
    x = data.load_images(D.dataset, "train").x
    heldout = data.load_images(D.dataset, "test").x
    sched = schedules.make_schedule(D.schedule, D.T)
    unet = UNet(in_channels=1, base_channels=D.base_channels, channel_mults=D.channel_mults, attention=D.attention,
                patch=D.patch)
    run = train(unet, lambda m, xb: ddpm.ddpm_loss(m, sched, xb, prediction=D.prediction),
                data.TensorSampler(x, batch_size=D.batch, seed=seed),
                TrainConfig(steps=30, lr=D.lr, warmup=5, ema_decay=D.ema_decay, progress=False, seed=seed, log_every=1))
    out["ddpm_loss"] = run.history["loss"]
    g = torch.Generator().manual_seed(seed)
    samples = ddim.ddim_sample(run.ema, sched, (64, 1, 28, 28), steps=10, generator=g, clip_x0=True, progress=False)
    out["samples_sum"] = float(samples.double().sum())
    out["fid"] = metrics.fid(samples.clamp(-1, 1), heldout)
    # chapter 02: SimCLR with the batched random augmentations
    config.seed_everything(seed)
    S = P.ssl
    aug = digits_augment(S.aug_strength)
    model = SimCLR(make_encoder(S.encoder, 1, S.width), S.proj_hidden, S.proj_dim, S.temperature)
    r = train(model, lambda m, xb: m(*aug.two_views(xb)), data.TensorSampler(x, batch_size=S.batch, seed=seed),
              TrainConfig(steps=8, lr=S.lr, warmup=2, ema_decay=None, progress=False, log_every=1))
    out["simclr_loss"] = r.history["loss"]
    print(json.dumps(out))


if __name__ == "__main__":
    main(int(sys.argv[1]))
