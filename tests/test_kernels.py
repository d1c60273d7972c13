"""The fused kernels against independent references, forward and backward, at several shapes (ragged ones included)
and in float32, float16 and bfloat16, with the Triton backend forced (no self-check, no fallback).

Without a CUDA device the Triton kernels run through Triton's interpreter: tests/conftest.py sets TRITON_INTERPRET=1
before anything imports triton. The interpreter runs all three dtypes on CPU (checked with triton 3.8), so no dtype
is skipped. Where Triton does not import these tests are skipped, saying why, unless the installed torch wheel
requires Triton on this platform: then a Triton that does not import is a broken installation and they fail.
The self-check and the fallback of the ``auto`` backend are tested in tests/test_kernel_selfcheck.py.
"""

import os
import sys

import pytest
import torch

from minidiff import kernels
from minidiff.diffusion import ddim, ddpm
from minidiff.diffusion.schedules import make_schedule
from minidiff.kernels import reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SCHED = make_schedule("cosine", 100)

# Tolerances of the kernel-vs-reference comparisons (issue 16): relative 1e-5 / 2e-3 / 2e-2, and an absolute part of
# the same size for values near zero (the data here are O(1), so this is relative to the scale of the terms). The
# low-precision kernels compute in fp32 and round once; their references are computed in fp32 or float64 from the
# same rounded inputs, so the only difference is that one rounding (at most half an ulp: 4.9e-4 in fp16, 3.9e-3 in
# bf16) plus fp32 noise.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=2e-3),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
DTYPES = [pytest.param(dt, id=str(dt).removeprefix("torch.")) for dt in TOL]


@pytest.fixture(autouse=True)
def force_triton(triton_present):
    if not torch.cuda.is_available():
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.fail("triton was imported before TRITON_INTERPRET=1 was set; the kernels cannot run on CPU")
        assert kernels.interpreter_on()
    kernels.set_backend("triton")
    yield
    kernels.set_backend("auto")


# ----------------------------------------------------------------------------- sampler step

def _x0_eps(a, s, x, m, prediction, clip):
    """(x0, eps) from a network output m in float64: Ho et al. 2020 eq. 15 (eps), x0 directly, or Salimans & Ho
    2022's v = a eps - s x0; with clipping, x0 is clamped to [-1, 1] and eps recomputed from it."""
    if prediction == "eps":
        x0, eps = (x - s * m) / a, m
    elif prediction == "x0":
        x0, eps = m, (x - a * m) / s
    else:
        x0, eps = a * x - s * m, s * x + a * m
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x - a * x0) / s
    return x0, eps


def _abar(t):
    """abar_t from the betas in float64 (not from the schedule's tables), with abar_{-1} = 1."""
    abar = torch.cumprod(1 - SCHED.betas.double().cpu(), 0)
    return torch.where(t >= 0, abar[t.clamp(min=0)], torch.ones((), dtype=torch.float64))


def ddpm_step_truth(m, x, t, z, prediction, clip):
    """Ho et al. (2020) eq. 6-7: the posterior mean of q(x_{t-1} | x_t, x0) plus sqrt(beta_tilde_t) z, in float64."""
    view = (-1,) + (1,) * (x.ndim - 1)
    beta = SCHED.betas.double().cpu()[t].reshape(view)
    at, ap = _abar(t).reshape(view), _abar(t - 1).reshape(view)
    x, m, z = x.double().cpu(), m.double().cpu(), z.double().cpu()
    x0, _ = _x0_eps(at.sqrt(), (1 - at).sqrt(), x, m, prediction, clip)
    mean = ap.sqrt() * beta / (1 - at) * x0 + (1 - beta).sqrt() * (1 - ap) / (1 - at) * x
    return mean + ((1 - ap) / (1 - at) * beta).sqrt() * z


def ddim_step_truth(m, x, t, t_prev, eta, z, prediction, clip):
    """Song et al. (2021) eq. 12 with sigma from eq. 16, in float64."""
    view = (-1,) + (1,) * (x.ndim - 1)
    at, a_s = _abar(t).reshape(view), _abar(t_prev).reshape(view)
    x, m, z = x.double().cpu(), m.double().cpu(), z.double().cpu()
    x0, eps = _x0_eps(at.sqrt(), (1 - at).sqrt(), x, m, prediction, clip)
    sigma = eta * ((1 - a_s) / (1 - at) * (1 - at / a_s)).sqrt()
    return a_s.sqrt() * x0 + (1 - a_s - sigma ** 2).sqrt() * eps + sigma * z


def _close(got, want, dtype, what):
    assert got.dtype == dtype, f"{what}: the kernel returned {got.dtype} for {dtype} inputs"
    torch.testing.assert_close(got.double().cpu(), want, **TOL[dtype], msg=lambda m: f"{what} in {dtype}: {m}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 5, 7), (5, 4, 1, 1)])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [False, True])
def test_sampler_update_matches_the_ddpm_and_ddim_formulas(shape, prediction, clip, dtype):
    """Expected values come from the formulas in float64 (and the package's torch path must agree with them in
    float32), never from the Triton path being tested."""
    g = torch.Generator().manual_seed(0)
    x, m, z = (torch.randn(shape, generator=g).to(dtype) for _ in range(3))   # the truth sees the same rounded inputs
    B = shape[0]
    t = torch.randint(1, 100, (B,), generator=g)
    t[0] = 0                                   # the last step: beta_tilde = 0, abar_{t-1} = 1
    dev = lambda *a: [v.to(DEV) for v in a]
    xd, md, zd, td = dev(x, m, z, t)
    # DDPM ancestral step
    want = ddpm_step_truth(m, x, t, z, prediction, clip)
    if dtype == torch.float32:
        kernels.set_backend("torch")
        torch_path = ddpm.p_sample_step(SCHED.to(DEV), md, xd, td, noise=zd, prediction=prediction, clip_x0=clip)
        kernels.set_backend("triton")
        _close(torch_path, want, dtype, "ddpm.p_sample_step on the torch backend")
    got = kernels.sampler_update(xd, md, kernels.ddpm_coefficients(SCHED, t, prediction), zd, clip)
    _close(got, want, dtype, "fused DDPM step")
    # DDIM step, with and without noise, t_prev = -1 included
    for eta in (0.0, 0.7):
        t_prev = torch.clamp(t - 7, min=-1)
        want = ddim_step_truth(m, x, t, t_prev, eta, z, prediction, clip)
        if dtype == torch.float32:
            kernels.set_backend("torch")
            torch_path = ddim.ddim_step(SCHED.to(DEV), md, xd, td, t_prev.to(DEV), eta=eta, noise=zd,
                                        prediction=prediction, clip_x0=clip)
            kernels.set_backend("triton")
            _close(torch_path, want, dtype, f"ddim.ddim_step(eta={eta}) on the torch backend")
        got = kernels.sampler_update(xd, md, kernels.ddim_coefficients(SCHED, t, t_prev, eta, prediction),
                                     zd if eta > 0 else None, clip)
        _close(got, want, dtype, f"fused DDIM step (eta={eta})")


# ----------------------------------------------------------------------------- normalisation kernels

def _against_reference(fn, ref, inputs, dtype, names):
    """Forward and backward of ``fn`` on ``inputs`` rounded to ``dtype`` against ``ref`` on the same values in fp32."""
    g = torch.Generator().manual_seed(3)
    low = [v.to(dtype).to(DEV).requires_grad_() for v in inputs]
    high = [v.detach().float().requires_grad_() for v in low]
    y, y_ref = fn(*low), ref(*high)
    dy = torch.randn(y_ref.shape, generator=g).to(dtype).to(DEV)
    grads = torch.autograd.grad(y, low, dy)
    grads_ref = torch.autograd.grad(y_ref, high, dy.float())
    _close(y, y_ref.double().cpu(), dtype, "forward")
    for name, a, b in zip(names, grads, grads_ref):
        _close(a, b.double().cpu(), dtype, f"gradient of {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, N, D", [(2, 16, 32), (3, 7, 48), (1, 49, 100), (4, 1, 5)])
def test_layernorm_modulate_forward_and_backward(B, N, D, dtype):
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(B, N, D, generator=g) * 3 + 1, torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)]
    _against_reference(kernels.layernorm_modulate, reference.layernorm_modulate, inputs, dtype, ("x", "shift", "scale"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, C, H, W, G", [(2, 8, 6, 6, 4), (3, 12, 5, 7, 3), (1, 32, 14, 14, 8), (2, 6, 1, 3, 6)])
def test_groupnorm_silu_forward_and_backward(B, C, H, W, G, dtype):
    g = torch.Generator().manual_seed(2)
    inputs = [torch.randn(B, C, H, W, generator=g) * 2 - 0.5, 1 + 0.3 * torch.randn(C, generator=g),
              0.3 * torch.randn(C, generator=g)]
    _against_reference(lambda x, w, b: kernels.groupnorm_silu(x, G, w, b),
                       lambda x, w, b: reference.groupnorm_silu(x, G, w, b), inputs, dtype, ("x", "weight", "bias"))


def test_dispatch_switch_and_errors():
    x = torch.zeros(2, 3, 4)
    kernels.set_backend("torch")
    assert not kernels.uses_triton(x)
    kernels.set_backend("auto")
    assert kernels.uses_triton(x) == x.is_cuda
    with pytest.raises(ValueError, match="backend must be one of auto, triton, torch"):
        kernels.set_backend("cuda")
    with pytest.raises(ValueError, match=r"shift, scale \(B, D\)"):
        kernels.layernorm_modulate(x, torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="divisible by num_groups=5"):
        kernels.groupnorm_silu(torch.zeros(1, 8, 2, 2), 5, None, None)


def _grads(model, loss):
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)


@pytest.mark.parametrize("which", ["dit", "unet"])
def test_networks_give_the_same_outputs_and_gradients_with_the_kernels(which):
    """The package uses the kernels inside the DiT blocks and the U-Net residual blocks: same numbers either way."""
    from minidiff.nets import UNet
    from minidiff.nets.dit import DiT, dit_config

    torch.manual_seed(0)
    if which == "dit":
        model = DiT(dit_config("DiT-Tiny/4"))
        for p in model.parameters():   # leave the zero-init so the adaLN paths carry signal
            torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else None
    else:
        model = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), attention=False)
    model = model.to(DEV)
    x = torch.randn(2, 1, 28, 28, device=DEV)
    t = torch.tensor([3, 40], device=DEV)
    kernels.set_backend("torch")
    y_ref = model(x, t)
    g_ref = _grads(model, (y_ref ** 2).mean())
    kernels.set_backend("triton")
    y = model(x, t)
    g = _grads(model, (y ** 2).mean())
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(g, g_ref):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_ddim_and_ddpm_samplers_use_the_fused_step(sampler, monkeypatch):
    """Each step of ``ddim.ddim_sample`` and of the ancestral ``ddpm.sample`` goes through the fused kernel on the
    Triton backend, none on the torch backend, and both give the same samples."""
    calls = []
    real = kernels.sampler_update

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kernels, "sampler_update", spy)
    net = lambda x, t: 0.1 * x
    if sampler == "ddim":
        run, steps = lambda g: ddim.ddim_sample(net, SCHED, (2, 1, 4, 4), steps=5, eta=0.5, generator=g,
                                               progress=False, device=DEV), 5
    else:
        run, steps = lambda g: ddpm.sample(net, SCHED, (2, 1, 4, 4), generator=g, progress=False, device=DEV), SCHED.T
    a = run(torch.Generator().manual_seed(0))
    assert len(calls) == steps
    kernels.set_backend("torch")
    b = run(torch.Generator().manual_seed(0))
    assert len(calls) == steps
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
