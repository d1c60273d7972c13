"""The fused kernels against their pure-torch references, forward and backward, at several shapes (ragged ones
included). On CPU the Triton kernels run through Triton's interpreter: tests/conftest.py sets TRITON_INTERPRET=1
before anything imports triton."""

import os
import sys

import pytest
import torch

from minidiff import kernels
from minidiff.diffusion import ddim, ddpm
from minidiff.diffusion.schedules import make_schedule
from minidiff.kernels import reference

pytestmark = pytest.mark.skipif(not kernels.triton_available(), reason="Triton is not installed")


@pytest.fixture(autouse=True)
def force_triton():
    if not torch.cuda.is_available():
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.fail("triton was imported before TRITON_INTERPRET=1 was set; the kernels cannot run on CPU")
        assert kernels.interpreter_on()
    kernels.set_backend("triton")
    yield
    kernels.set_backend("auto")


DEV = "cuda" if torch.cuda.is_available() else "cpu"
SCHED = make_schedule("cosine", 100)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 5, 7), (5, 4, 1, 1)])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [False, True])
def test_sampler_update_equals_the_package_samplers(shape, prediction, clip):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(DEV)
    m = torch.randn(shape, generator=g).to(DEV)
    z = torch.randn(shape, generator=g).to(DEV)
    B = shape[0]
    t = torch.randint(1, 100, (B,), generator=g)
    # DDPM ancestral step (eq. 11 / posterior mean + fixed-small variance)
    want = ddpm.p_sample_step(SCHED.to(DEV), m, x, t.to(DEV), noise=z, prediction=prediction, clip_x0=clip)
    got = kernels.sampler_update(x, m, kernels.ddpm_coefficients(SCHED, t, prediction), z, clip)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # DDIM step (eq. 12), with and without noise, t_prev = -1 included
    for eta in (0.0, 0.7):
        t_prev = torch.clamp(t - 7, min=-1)
        want = ddim.ddim_step(SCHED.to(DEV), m, x, t.to(DEV), t_prev.to(DEV), eta=eta, noise=z, prediction=prediction,
                              clip_x0=clip)
        got = kernels.sampler_update(x, m, kernels.ddim_coefficients(SCHED, t, t_prev, eta, prediction),
                                     z if eta > 0 else None, clip)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("B, N, D", [(2, 16, 32), (3, 7, 48), (1, 49, 100), (4, 1, 5)])
def test_layernorm_modulate_forward_and_backward(B, N, D):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(B, N, D, generator=g) * 3 + 1).to(DEV).requires_grad_()
    shift = torch.randn(B, D, generator=g).to(DEV).requires_grad_()
    scale = torch.randn(B, D, generator=g).to(DEV).requires_grad_()
    dy = torch.randn(B, N, D, generator=g).to(DEV)
    y = kernels.layernorm_modulate(x, shift, scale)
    grads = torch.autograd.grad(y, (x, shift, scale), dy)
    y_ref = reference.layernorm_modulate(x, shift, scale)
    grads_ref = torch.autograd.grad(y_ref, (x, shift, scale), dy)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for name, a, b in zip(("x", "shift", "scale"), grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("B, C, H, W, G", [(2, 8, 6, 6, 4), (3, 12, 5, 7, 3), (1, 32, 14, 14, 8), (2, 6, 1, 3, 6)])
def test_groupnorm_silu_forward_and_backward(B, C, H, W, G):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(B, C, H, W, generator=g) * 2 - 0.5).to(DEV).requires_grad_()
    w = (1 + 0.3 * torch.randn(C, generator=g)).to(DEV).requires_grad_()
    b = (0.3 * torch.randn(C, generator=g)).to(DEV).requires_grad_()
    dy = torch.randn(B, C, H, W, generator=g).to(DEV)
    y = kernels.groupnorm_silu(x, G, w, b)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    y_ref = reference.groupnorm_silu(x, G, w, b)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), dy)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for name, a, r in zip(("x", "weight", "bias"), grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4, msg=lambda m: f"d{name}: {m}")


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


def test_ddim_and_ddpm_samplers_use_the_fused_step():
    calls = []
    real = kernels.sampler_update
    kernels_mod = sys.modules["minidiff.kernels"]

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    kernels_mod.sampler_update = spy
    try:
        net = lambda x, t: 0.1 * x
        g = torch.Generator().manual_seed(0)
        a = ddim.ddim_sample(net, SCHED, (2, 1, 4, 4), steps=5, generator=g, progress=False, device=DEV)
        assert len(calls) == 5
        kernels.set_backend("torch")
        g = torch.Generator().manual_seed(0)
        b = ddim.ddim_sample(net, SCHED, (2, 1, 4, 4), steps=5, generator=g, progress=False, device=DEV)
        assert len(calls) == 5
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    finally:
        kernels_mod.sampler_update = real
