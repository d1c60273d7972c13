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
