"""Chapter 11's pieces: the REPA alignment loss against its formula, the frozen encoder, the loss-weight schedule,
vector conditioning of the DiT, and a short training run per method whose loss falls."""

import math

import pytest
import torch

from minidiff import data
from minidiff.diffusion import ddpm, schedules
from minidiff.diffusion.guidance import drop_condition
from minidiff.nets import ConvNet, DiT, dit_config
from minidiff.recipes import train_ddpm
from minidiff.ssl.augment import digits_augment
from minidiff.ssl_diffusion import (REPA, FrozenEncoder, LossWeightSchedule, MultiTaskDiT, alignment_loss,
                                    projector)
from minidiff.train import TrainConfig, train


def tiny_dit(**kw):
    return DiT(dit_config("DiT-Tiny/7", input_size=28, in_channels=1, **kw))


def test_alignment_loss_against_a_slow_loop():
    torch.manual_seed(0)
    h, y = torch.randn(3, 5, 8), torch.randn(3, 5, 6)
    proj = projector(8, 6)
    want = 0.0
    for b in range(3):
        for n in range(5):
            p = proj(h[b, n])
            want += -(p @ y[b, n]) / (p.norm() * y[b, n].norm())
    assert alignment_loss(h, y, proj).item() == pytest.approx(want.item() / 15, rel=1e-5)
    # perfect alignment gives -1: a projector that reproduces the targets
    lin = torch.nn.Linear(6, 6, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(6) * 2.0)
    assert alignment_loss(y, y, lin).item() == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="must agree in B and N"):
        alignment_loss(h, y[:, :4], proj)


def test_frozen_encoder_stays_frozen_and_spatial_order():
    enc = ConvNet(1, 4)
    fz = FrozenEncoder(enc)
    fz.train()
    assert not enc.training and all(not p.requires_grad for p in enc.parameters())
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    fmap = fz.feature_map(x)                                  # (2, 16, 7, 7)
    sp = fz.spatial(x, 7)
    assert sp.shape == (2, 49, 16)
    assert torch.allclose(sp[:, 7 * 2 + 3], fmap[:, :, 2, 3])   # token n = row * grid + col, like patchify
    pooled = fz.pooled(x)
    assert torch.allclose(pooled.norm(dim=1), torch.full((2,), 4.0), atol=1e-5)   # sqrt(16)
    assert torch.allclose(pooled / 4, torch.nn.functional.normalize(fmap.mean((2, 3)), dim=1), atol=1e-6)
    with pytest.raises(TypeError, match="staged encoder"):
        FrozenEncoder(torch.nn.Linear(2, 2))


def test_repa_projector_gets_gradients_encoder_does_not():
    torch.manual_seed(0)
    enc = ConvNet(1, 4)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model = REPA(tiny_dit(), FrozenEncoder(enc), depth=1, lam=1.0)
    sched = schedules.make_schedule("cosine", 20)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    model.train()
    loss = model.loss(x, sched)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.proj.parameters())
    assert all(p.grad is None for p in enc.parameters())
    assert set(model.last) == {"diffusion", "align"} and -1 <= model.last["align"] <= 1
    assert loss.item() == pytest.approx(model.last["diffusion"] + model.last["align"], rel=1e-5)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    for k, v in enc.state_dict().items():      # BatchNorm running stats untouched as well
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="alignment depth"):
        REPA(tiny_dit(), FrozenEncoder(enc), depth=3)


def test_repa_on_latents_aligns_to_the_encoder_features_of_the_images():
    """Latent diffusion: the DiT sees 7x7x4 latents, the encoder the 28x28 pixel images (``images=``); the
    alignment term equals alignment_loss on the DiT's block-k tokens and the encoder's map of the images, and the
    diffusion term is ddpm's min-SNR-weighted error. Without images, the latents reach the encoder: refused."""
    torch.manual_seed(0)
    enc = FrozenEncoder(ConvNet(1, 8))
    dit = DiT(dit_config("DiT-Tiny", patch=1, input_size=7, in_channels=4))
    model = REPA(dit, enc, depth=1, lam=0.5)
    sched = schedules.make_schedule("cosine", 50)
    z, x = torch.randn(6, 4, 7, 7), torch.rand(6, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    loss = model.loss(z, sched, prediction="v", images=x, weighting="min_snr")
    torch.manual_seed(1)                              # the same t and noise, by hand
    t = torch.randint(0, sched.T, (6,))
    noise = torch.randn_like(z)
    out, hidden = dit(ddpm.q_sample(sched, z, t, noise), t, return_hidden=1)
    w = ddpm.loss_weight(sched, t, "v", "min_snr")
    diffusion = (w * (out - ddpm.target_for("v", sched, z, noise, t)).pow(2).mean((1, 2, 3))).mean()
    align = alignment_loss(hidden, enc.spatial(x, 7), model.proj)
    assert model.last["diffusion"] == pytest.approx(diffusion.item(), rel=1e-5)
    assert model.last["align"] == pytest.approx(align.item(), rel=1e-5)
    assert loss.item() == pytest.approx(diffusion.item() + 0.5 * align.item(), rel=1e-5)
    with pytest.raises(ValueError):
        model.loss(z, sched)                          # 4-channel latents are not images for a 1-channel encoder
    with pytest.raises(ValueError, match="one row per row of x0"):
        model.loss(z, sched, images=x[:5])


def test_loss_weight_schedule_end_points():
    lin = LossWeightSchedule(1.0, 0.1, steps=100, kind="linear")
    cos = LossWeightSchedule(1.0, 0.1, steps=100, kind="cosine")
    const = LossWeightSchedule(0.5, steps=10, kind="constant")
    for s in (lin, cos):
        assert s(0) == pytest.approx(1.0) and s(100) == pytest.approx(0.1) and s(1000) == pytest.approx(0.1)
        assert s(50) == pytest.approx(0.55)
    assert lin(25) == pytest.approx(0.775) and cos(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert const(0) == const(10 ** 6) == 0.5
    with pytest.raises(ValueError, match="kind must be"):
        LossWeightSchedule(1.0, 0.0, 10, kind="step")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        LossWeightSchedule(1.0, 0.0, 0)


def test_dit_vector_conditioning_and_hidden_state():
    torch.manual_seed(0)
    dit = tiny_dit(cond_dim=6)
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([1, 9])
    r = torch.randn(2, 6)
    assert not torch.allclose(dit(x, t, r), dit(x, t, torch.zeros(2, 6)))       # the condition changes the output
    assert torch.equal(dit(x, t), dit(x, t, torch.zeros(2, 6)))               # None = the null (zero) vector
    out, hidden = dit(x, t, r, return_hidden=2)
    assert torch.equal(out, dit(x, t, r)) and hidden.shape == (2, 16, 64)
    with pytest.raises(ValueError, match=r"condition y must be a float tensor \(2, 6\)"):
        dit(x, t, torch.randn(2, 5))
    with pytest.raises(ValueError, match="not both"):
        tiny_dit(cond_dim=6, num_classes=10)
    with pytest.raises(ValueError, match="return_hidden"):
        dit(x, t, r, return_hidden=5)


def test_condition_dropout_rate_in_training():
    """train_ddpm with vector conditions replaces the stated fraction of them by the null vector."""
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x, t, y):
            seen.append(y.clone())
            return self.lin(x)

    x, r = torch.randn(1024, 2), torch.randn(1024, 4) + 3
    train_ddpm(Spy(), schedules.make_schedule("linear", 10), x, r, batch_size=256, p_uncond=0.15,
               cfg=TrainConfig(steps=40, ema_decay=None, progress=False))
    rate = (torch.cat(seen) == 0).all(1).float().mean().item()
    assert abs(rate - 0.15) < 0.03
    assert (drop_condition(r, 0.0) == r).all()


@pytest.fixture(scope="module")
def digits():
    return data.mnist5k("train").x[:1024]


def _loss_falls(model, loss_fn, x, steps=60):
    run = train(model, loss_fn, data.TensorSampler(x, batch_size=64),
                TrainConfig(steps=steps, lr=2e-3, ema_decay=None, log_every=5, progress=False))
    h = run.history["loss"]
    return sum(h[:3]) / 3, sum(h[-3:]) / 3


def test_each_method_trains(digits):
    sched = schedules.make_schedule("cosine", 50)
    torch.manual_seed(0)
    enc = FrozenEncoder(ConvNet(1, 4))
    # baseline, representation-conditioned, REPA, multi-task: the loss falls for each
    first, last = _loss_falls(tiny_dit(), lambda m, x: ddpm.ddpm_loss(m, sched, x), digits)
    assert last < 0.6 * first
    feats = enc.pooled(digits)
    run = train_ddpm(tiny_dit(cond_dim=enc.dim), sched, digits, feats, batch_size=64, p_uncond=0.1,
                     cfg=TrainConfig(steps=60, lr=2e-3, ema_decay=None, log_every=5, progress=False))
    assert sum(run.history["loss"][-3:]) < 0.6 * sum(run.history["loss"][:3])
    repa = REPA(tiny_dit(), enc, depth=1, lam=0.5)
    align0 = None

    def repa_loss(m, x):
        nonlocal align0
        out = m.loss(x, sched)
        align0 = m.last["align"] if align0 is None else align0
        return out
    first, last = _loss_falls(repa, repa_loss, digits)
    assert last < first and repa.last["align"] < align0 - 0.1     # the alignment term itself improves
    mt = MultiTaskDiT(tiny_dit(), depth=1, weight=LossWeightSchedule(1.0, 0.1, steps=60), augment=digits_augment(0.5))
    first, last = _loss_falls(mt, lambda m, x: m.loss(x, sched), digits)
    assert last < first and int(mt.step) == 60 and mt.last["weight"] == pytest.approx(0.1 + 0.9 / 60, abs=0.02)
