"""No sampler and no metric makes float64 image-sized tensors from a float32 model (issue 16).

Apple's MPS backend has no float64 at all, so a sampling loop that does its image arithmetic in float64 on the
sample's device cannot run there. The rule the package follows: coefficient tables are computed in float64 on the
CPU, cast to the input's dtype and then moved; arithmetic on image-sized tensors runs in the input's dtype.

The spy below is a ``TorchDispatchMode``: it sees every aten op that runs while a sampler (or the feature
extraction of the metrics) works and inspects every tensor the op returns. It records

- every float64 tensor with at least as many elements as the batch of images, wherever it was made (this machine
  may have no MPS; a float64 tensor of that size is what the sample's device would have to hold),
- every float64 tensor with as many dimensions as the images (e.g. a ``(B, 1, 1, 1)`` coefficient): shaped to
  broadcast against the images, it is about to meet them on their device (on a CPU-only machine this is how the
  float64 per-example coefficients of a sampler show up; CPU tables are 1-D until cast), and
- on an accelerator (CUDA or MPS, when present; parametrised below), every float64 tensor on that device, of any
  size: the exact MPS rule.

Every sampler test also checks that a float32 input gives a float32 output (the metrics return float64 CPU features
by design).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from minidiff import kernels, metrics
from minidiff.diffusion import ddim, ddpm, dpm_solver, score as sc, sde as S
from minidiff.diffusion.schedules import make_schedule

SHAPE = (4, 1, 8, 8)          # a batch of small images: 256 elements
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
    (["mps"] if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else [])


class Float64Spy(TorchDispatchMode):
    """Records ``(op, shape, device)`` of each float64 output that has at least as many elements as the image batch
    of shape ``image_shape`` or as many dimensions, or lies on a non-CPU device (any size)."""

    def __init__(self, image_shape):
        super().__init__()
        self.numel, self.ndim = torch.Size(image_shape).numel(), len(image_shape)
        self.hits: list[tuple[str, tuple[int, ...], str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64 and \
                    (t.numel() >= self.numel or t.ndim == self.ndim or t.device.type != "cpu"):
                self.hits.append((str(func), tuple(t.shape), str(t.device)))
        return out


def run_spied(fn, image_shape):
    """``fn()`` under the spy for images of ``image_shape``; returns ``(result, hits)``."""
    spy = Float64Spy(image_shape)
    with spy:
        out = fn()
    return out, spy.hits


def assert_float32_without_float64(out, hits, what):
    assert not hits, f"{what} made float64 tensors the size of the image batch or on the device: {hits[:5]}"
    assert out.dtype == torch.float32, f"{what}: float32 in, {out.dtype} out"


class TinyNet(nn.Module):
    """A float32 time-conditioned network ``model(x, t)`` (t int64 steps or float times)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(0.1)

    def forward(self, x, t):
        return self.conv(x) + 0.5 * x + 1e-3 * t.float().view(-1, 1, 1, 1)


@pytest.fixture(autouse=True)
def torch_kernels():
    """The reference kernels (what MPS runs; Triton would run on CUDA)."""
    old = kernels.get_backend()
    kernels.set_backend("torch")
    yield
    kernels.set_backend(old)


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_ancestral(device, prediction, clip):
    model, sched = TinyNet().to(device), make_schedule("cosine", 20).to(device)
    out, hits = run_spied(lambda: ddpm.sample(model, sched, SHAPE, prediction=prediction, clip_x0=clip,
                                              generator=gen(), progress=False), SHAPE)
    assert_float32_without_float64(out, hits, "ddpm.sample")


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_sample_and_encode(device, eta, clip):
    model, sched = TinyNet().to(device), make_schedule("cosine", 100).to(device)
    n = SHAPE
    out, hits = run_spied(lambda: ddim.ddim_sample(model, sched, SHAPE, steps=10, eta=eta, clip_x0=clip,
                                                   generator=gen(), progress=False), n)
    assert_float32_without_float64(out, hits, f"ddim_sample(eta={eta}, clip_x0={clip})")
    x0 = torch.rand(SHAPE, generator=gen()).to(device) * 2 - 1
    out, hits = run_spied(lambda: ddim.ddim_encode(model, sched, x0, steps=10, progress=False), n)
    assert_float32_without_float64(out, hits, "ddim_encode")


@pytest.mark.parametrize("sde", [False, True], ids=["ODE", "SDE"])
@pytest.mark.parametrize("clip", [False, True])
def test_dpm_solver(device, sde, clip):
    model, sched = TinyNet().to(device), make_schedule("cosine", 100).to(device)
    out, hits = run_spied(lambda: dpm_solver.dpmpp_2m_sample(model, sched, SHAPE, steps=10, sde=sde, clip_x0=clip,
                                                             generator=gen(), progress=False),
                          SHAPE)
    assert_float32_without_float64(out, hits, f"dpmpp_2m_sample(sde={sde})")


SDES = [S.VPSDE(beta_min=0.1, beta_max=20.0, N=100), S.subVPSDE(), S.VESDE(sigma_min=0.01, sigma_max=10.0)]


@pytest.mark.parametrize("sde", SDES, ids=["VP", "subVP", "VE"])
def test_sde_samplers(device, sde):
    net = TinyNet().to(device)
    score = lambda x, t: -net(x, t)                       # a float32 score network s(x, t), t float in [eps, 1]
    n = SHAPE
    samplers = {
        "euler_maruyama": lambda: S.euler_maruyama(score, sde, SHAPE, steps=8, device=device, generator=gen()),
        "pc_sample": lambda: S.pc_sample(score, sde, SHAPE, steps=4, device=device, generator=gen()),
        **{f"ode_sample({m})": (lambda m=m: S.ode_sample(score, sde, SHAPE, steps=4, method=m, device=device,
                                                         generator=gen())) for m in S.ODE_EVALS},
    }
    for name, fn in samplers.items():
        out, hits = run_spied(fn, n)
        assert_float32_without_float64(out, hits, name)


def test_sde_samplers_with_a_ddpm_network(device):
    """Chapter 07's path: a DDPM epsilon network turned into a continuous-time score."""
    sched = make_schedule("linear", 100).to(device)
    sde = S.VPSDE(beta_min=0.1, beta_max=20.0, N=100)
    score = S.score_from_eps_model(TinyNet().to(device), sched, clip_x0=True)
    for fn in (lambda: S.euler_maruyama(score, sde, SHAPE, steps=8, device=device, generator=gen()),
               lambda: S.ode_sample(score, sde, SHAPE, steps=4, method="heun", device=device, generator=gen())):
        out, hits = run_spied(fn, SHAPE)
        assert_float32_without_float64(out, hits, "SDE sampler on score_from_eps_model")


def test_log_likelihood(device):
    sde, net = S.VPSDE(), TinyNet().to(device)
    x0 = (torch.rand(4, 1, 2, 2, generator=gen()) * 2 - 1).to(device)
    for hutchinson in (True, False):
        out, hits = run_spied(lambda: S.log_likelihood(sde, lambda x, t: -net(x, t), x0, n_steps=3, method="heun",
                                                       hutchinson=hutchinson, generator=gen()), x0.shape)
        assert_float32_without_float64(out, hits, f"log_likelihood(hutchinson={hutchinson})")


def test_langevin_and_annealed_langevin(device):
    net = TinyNet().to(device)
    x = torch.randn(SHAPE, generator=gen()).to(device)
    sigmas = sc.geometric_sigmas(1.0, 0.01, 5)
    n = x.shape
    out, hits = run_spied(lambda: sc.langevin(lambda y: -net(y, torch.zeros(y.shape[0], device=device)), x, 1e-3, 5,
                                              generator=gen()), n)
    assert_float32_without_float64(out, hits, "langevin")
    out, hits = run_spied(lambda: sc.annealed_langevin(lambda y, s: -net(y, s) / s.view(-1, 1, 1, 1), sigmas, x.shape,
                                                       x_T=x, steps=3, generator=gen()), n)
    assert_float32_without_float64(out, hits, "annealed_langevin")


def test_metrics_feature_extraction(device):
    """The features go to float64 only on the CPU; the images are never cast to float64."""
    x = (torch.rand(32, 1, 28, 28, generator=gen()) * 2 - 1).to(device)
    y = (torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
    metrics.feature_net(device)                            # load the weights outside the spy
    feats, hits = run_spied(lambda: metrics.extract_features(x, batch_size=16), x.shape)
    assert not hits, f"extract_features made float64 tensors the size of the images or on the device: {hits[:5]}"
    assert feats.device.type == "cpu" and feats.shape == (32, metrics.FEATURE_DIM)
    value, hits = run_spied(lambda: metrics.fid(x, y, batch_size=16), x.shape)
    assert not hits and value > 0, hits[:5]
    probs, hits = run_spied(lambda: metrics.predict_proba(x), x.shape)
    assert not hits and probs.dtype == torch.float32, hits[:5]


def test_the_spy_sees_float64_image_arithmetic():
    """The spy itself: float64 arithmetic on the image batch and float64 coefficients shaped to broadcast against it
    are caught; a float64 per-example table on the CPU, cast before it is reshaped, is not."""
    x = torch.randn(SHAPE)
    _, hits = run_spied(lambda: (x.double() * 2).float(), x.shape)
    assert [h[0] for h in hits] == ["aten._to_copy.default", "aten.mul.Tensor"]
    c = torch.linspace(0.1, 0.9, SHAPE[0], dtype=torch.float64)
    _, hits = run_spied(lambda: c.sqrt().view(-1, 1, 1, 1).float() * x, x.shape)
    assert [h[1] for h in hits] == [(SHAPE[0], 1, 1, 1)]
    _, hits = run_spied(lambda: c.sqrt().float().view(-1, 1, 1, 1) * x, x.shape)
    assert not hits
