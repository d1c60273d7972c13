"""The bad-input table: wrong shapes, dtypes, devices, value ranges, schedule parameters, out-of-range time steps,
mismatched batches, empty datasets, unknown names. Each must raise ValueError or TypeError, before any work is
done, with a message that names the argument and says what was expected."""

import os

import pytest
import torch

from minidiff import config, data, metrics
from minidiff.diffusion import ddim, ddpm, guidance, schedules, sde
from minidiff.nets import clip, dit, unet
from minidiff.ssl import simclr
from minidiff.train import TrainConfig, train

S = schedules.make_schedule("linear", 100)
X = torch.zeros(4, 1, 28, 28)
T_OK = torch.zeros(4, dtype=torch.long)


def tiny_unet():
    return unet.UNet(**unet.unet_config("UNet-XS")) if hasattr(unet, "unet_config") else unet.UNet()


def tiny_dit():
    return dit.DiT(dit.dit_config("DiT-Tiny/4"))


CASES = [
    # schedules
    ("T zero", lambda: schedules.linear_betas(0), ValueError, r"T"),
    ("beta_start above beta_end", lambda: schedules.linear_betas(10, 0.5, 0.1), ValueError, r"beta_start"),
    ("cosine s negative", lambda: schedules.cosine_betas(10, s=-0.1), ValueError, r"\bs\b"),
    ("betas outside (0, 1)", lambda: schedules.NoiseSchedule(torch.tensor([0.1, 1.5])), ValueError, r"betas"),
    ("betas 2-D", lambda: schedules.NoiseSchedule(torch.full((2, 3), 0.1)), ValueError, r"betas"),
    ("unknown schedule", lambda: schedules.make_schedule("quadratik", 10), ValueError, r"quadratik"),
    # forward process and loss
    ("t out of range", lambda: ddpm.q_sample(S, X, torch.full((4,), 100)), ValueError, r"t must lie in \[0, 99\]"),
    ("t float dtype", lambda: ddpm.q_sample(S, X, torch.zeros(4)), TypeError, r"\bt\b.*int"),
    ("t batch mismatch", lambda: ddpm.q_sample(S, X, torch.zeros(3, dtype=torch.long)), ValueError, r"t must have shape \(4,\)"),
    ("noise shape mismatch", lambda: ddpm.q_sample(S, X, T_OK, torch.zeros(4, 1, 28, 27)), ValueError, r"noise"),
    ("x0 integer dtype", lambda: ddpm.q_sample(S, X.to(torch.uint8), T_OK), TypeError, r"x0.*float"),
    ("x0 not a tensor", lambda: ddpm.q_sample(S, X.numpy(), T_OK), TypeError, r"x0.*Tensor"),
    ("unknown prediction", lambda: ddpm.ddpm_loss(lambda x, t: x, S, X, prediction="score"), ValueError, r"prediction"),
    ("schedule not a NoiseSchedule", lambda: ddpm.q_sample(torch.ones(10), X, T_OK), TypeError, r"schedule"),
    ("model output shape", lambda: ddpm.p_sample_step(S, torch.zeros(4, 1, 28, 27), X, T_OK), ValueError, r"model_output"),
    # DDIM
    ("ddim t_prev not below t", lambda: ddim.ddim_step(S, X, X, 10, 20), ValueError, r"t_prev"),
    ("ddim eta negative", lambda: ddim.ddim_step(S, X, X, 20, 10, eta=-0.5), ValueError, r"eta"),
    ("more ddim steps than T", lambda: ddim.timesteps(100, 200), ValueError, r"\bn\b"),
    ("unknown ddim spacing", lambda: ddim.timesteps(100, 10, "log"), ValueError, r"spacing"),
    # SDEs
    ("VP beta_min negative", lambda: sde.VPSDE(beta_min=-1.0), ValueError, r"beta_min"),
    ("VE sigma_min above sigma_max", lambda: sde.VESDE(sigma_min=10.0, sigma_max=1.0), ValueError, r"sigma_min"),
    ("SDE time outside [0, 1]", lambda: sde.VPSDE().marginal_prob(X, torch.full((4,), 1.5)), ValueError, r"\bt\b"),
    # SSL and CLIP losses
    ("nt_xent views differ", lambda: simclr.nt_xent(torch.randn(8, 16), torch.randn(7, 16)), ValueError, r"z1.*z2"),
    ("nt_xent temperature zero", lambda: simclr.nt_xent(torch.randn(8, 16), torch.randn(8, 16), 0.0), ValueError, r"temperature"),
    ("clip batch mismatch", lambda: clip.clip_loss(torch.randn(8, 16), torch.randn(6, 16)), ValueError, r"image_emb.*text_emb"),
    ("label dropout rate", lambda: guidance.drop_labels(torch.zeros(4, dtype=torch.long), 1.5, 10), ValueError, r"p_uncond"),
    # networks
    ("U-Net wrong channels", lambda: tiny_unet()(torch.zeros(2, 3, 28, 28), torch.zeros(2, dtype=torch.long)), ValueError, r"x must have shape \(B, 1, H, W\)"),
    ("U-Net t batch mismatch", lambda: tiny_unet()(torch.zeros(2, 1, 28, 28), torch.zeros(3, dtype=torch.long)), ValueError, r"\bt\b"),
    ("DiT wrong image size", lambda: tiny_dit()(torch.zeros(2, 1, 32, 32), torch.zeros(2, dtype=torch.long)), ValueError, r"x must have shape \(B, 1, 28, 28\)"),
    ("patch size does not divide", lambda: dit.patchify(torch.zeros(1, 1, 28, 28), 5), ValueError, r"\bp\b|patch"),
    ("unknown DiT config", lambda: dit.dit_config("DiT-Huge/1"), ValueError, r"DiT-Huge/1"),
    # metrics
    ("FID on 3-channel images", lambda: metrics.fid(torch.zeros(10, 3, 28, 28), torch.zeros(10, 1, 28, 28)), ValueError, r"channel"),
    ("FID images out of [-1, 1]", lambda: metrics.fid(torch.full((10, 1, 28, 28), 255.0), torch.zeros(10, 1, 28, 28)), ValueError, r"\[-1, 1\]"),
    ("FID on one sample", lambda: metrics.fid_from_features(torch.randn(1, 8), torch.randn(10, 8)), ValueError, r"f_a|samples"),
    # data
    ("unknown dataset", lambda: data.load_images("imagenet"), ValueError, r"imagenet"),
    ("unknown split", lambda: data.mnist5k("validation"), ValueError, r"split"),
    ("unknown toy", lambda: data.toy_2d("spiral-of-doom", 10), ValueError, r"spiral-of-doom"),
    ("empty dataset", lambda: data.TensorSampler(torch.zeros(0, 2), batch_size=4), ValueError, r"empty"),
    ("batch_size zero", lambda: data.TensorSampler(torch.zeros(10, 2), batch_size=0), ValueError, r"batch_size"),
    ("tensors of different lengths", lambda: data.TensorSampler(torch.zeros(10, 2), torch.zeros(9), batch_size=4), ValueError, r"length|same"),
    # config and training
    ("unknown profile", lambda: config.get_profile("huge"), ValueError, r"huge.*ci, cpu, gpu|profile"),
    ("negative seed", lambda: config.seed_everything(-1), ValueError, r"seed"),
    ("unknown DPM-Solver++ variant in a profile", lambda: config.SamplingConfig(dpm_variants=("ode", "heun")), ValueError,
     r"dpm_variants.*'heun'"),
    ("negative learning rate", lambda: TrainConfig(lr=-1e-3), ValueError, r"\blr\b"),
    ("model not a Module", lambda: train(lambda x: x, None, iter([]), TrainConfig()), TypeError, r"model"),
]


def with_env(name, value, fn):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return fn()
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


CASES += [
    # devices and profiles chosen through the environment
    ("unknown device", lambda: with_env("MINIDIFF_DEVICE", "tpu9", config.device), ValueError, r"MINIDIFF_DEVICE='tpu9'"),
    ("unknown profile in the environment", lambda: with_env("MINIDIFF_PROFILE", "laptop", config.profile_name),
     ValueError, r"MINIDIFF_PROFILE='laptop'.*ci, cpu, gpu"),
]
if not torch.cuda.is_available():
    CASES.append(("CUDA asked for where there is none", lambda: with_env("MINIDIFF_DEVICE", "cuda", config.device),
                  ValueError, r"MINIDIFF_DEVICE='cuda' asks for CUDA"))


@pytest.mark.parametrize("what, call, exc, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(what, call, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        call()
    assert len(str(info.value)) >= 20, f"message too terse: {info.value}"


def test_table_size():
    assert len(CASES) >= 30
