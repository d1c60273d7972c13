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
from minidiff.ssl_diffusion import (REPA, FrozenEncoder, LossWeightSchedule, MultiTask, alignment_loss,
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
    mt = MultiTask(tiny_dit(), depth=1, weight=LossWeightSchedule(1.0, 0.1, steps=60), augment=digits_augment(0.5))
    first, last = _loss_falls(mt, lambda m, x: m.loss(x, sched), digits)
    assert last < first and int(mt.step) == 60 and mt.last["weight"] == pytest.approx(0.1 + 0.9 / 60, abs=0.02)


# ----------------------------------------------------------------------------- chapter 11 on latents

def test_multitask_loss_on_latents_against_a_by_hand_computation():
    """MultiTask.loss with pixel images and an encoder to latents: the min-SNR weighted diffusion term on the
    latents plus w times NT-Xent of the shared blocks' features of the two encoded views, recomputed by hand with the
    same random numbers."""
    from minidiff.nets import AutoencoderKL
    from minidiff.ssl.simclr import nt_xent

    torch.manual_seed(0)
    ae = AutoencoderKL(1, latent_channels=4, width=8).eval()
    dit = DiT(dit_config("DiT-Tiny", patch=1, input_size=7, in_channels=4))
    aug = digits_augment(0.5)
    mt = MultiTask(dit, depth=1, weight=LossWeightSchedule(0.3, kind="constant"), augment=aug)
    sched = schedules.make_schedule("cosine", 100)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    z = ae.to_latent(x)
    torch.manual_seed(5)
    got = mt.loss(z, sched, prediction="v", images=x, encode=ae.to_latent, weighting="min_snr")
    assert int(mt.step) == 1 and mt.last["weight"] == 0.3
    torch.manual_seed(5)
    t = torch.randint(0, sched.T, (8,))
    noise = torch.randn_like(z)
    x_t = ddpm.q_sample(sched, z, t, noise)
    abar = sched.alphas_cumprod[t]
    a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
    v = a * noise - s * z                                               # the v target, written out
    snr = abar / (1 - abar)
    w_t = torch.clamp(snr, max=5.0) / (snr + 1)                         # min-SNR-5 for v-prediction
    diffusion = (w_t * (dit(x_t, t) - v).pow(2).flatten(1).mean(1)).mean()
    v1, v2 = ae.to_latent(aug(x)), ae.to_latent(aug(x))
    ssl = nt_xent(mt.head(mt.ssl_features(v1)), mt.head(mt.ssl_features(v2)), mt.temperature)
    assert got.item() == pytest.approx((diffusion + 0.3 * ssl).item(), rel=1e-5)


def test_feature_input_reads_the_noisy_input():
    """FeatureInput conditions the DiT on the frozen encoder's features of its own (decoded, clamped) input: equal
    to calling the DiT with those features; the encoder gets no gradient; wrong sizes and a condition are refused."""
    from minidiff.ssl_diffusion import FeatureInput

    torch.manual_seed(0)
    enc = FrozenEncoder(ConvNet(1, 4))
    decode = torch.nn.Upsample(scale_factor=4)                          # a stand-in decoder 7x7 -> 28x28
    dit = DiT(dit_config("DiT-Tiny", patch=1, input_size=7, in_channels=1, cond_dim=enc.dim))
    with torch.no_grad():                                               # zero-initialised gates: make y matter
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m = FeatureInput(dit, enc, decode=decode)
    x, t = torch.randn(3, 1, 7, 7), torch.tensor([1, 20, 40])
    expect = dit(x, t, enc.pooled(decode(x).clamp(-1, 1)))
    assert torch.allclose(m(x, t), expect, atol=1e-6)
    assert not torch.allclose(expect, dit(x, t, torch.zeros(3, enc.dim)), atol=1e-4)   # the features reach the output
    m(x, t).pow(2).mean().backward()
    assert all(p.grad is None for p in enc.parameters()) and dit.x_embed.weight.grad is not None
    with pytest.raises(ValueError, match="cond_dim"):
        FeatureInput(tiny_dit(), enc)
    with pytest.raises(ValueError, match="no condition"):
        m(x, t, torch.zeros(3, enc.dim))


@pytest.fixture(params=["dit", "unet"])
def ssl_parts(request):
    import dataclasses

    from minidiff import config, recipes
    from minidiff.nets import AutoencoderKL

    torch.manual_seed(0)
    C = dataclasses.replace(config.get_profile("ci").ssl_diffusion, backbone=request.param, dit="DiT-Tiny",
                            unet_channels=16, steps=40, warmup=5, lr=3e-3, batch=32, mt_depth=1, repa_depth=1,
                            encoder_depth=1, rdm_steps=20)
    ds = data.load_images("digits", "train")
    x = torch.nn.functional.interpolate(ds.x[:256], size=28)
    ae = AutoencoderKL(1, latent_channels=4, width=8).eval()
    ae.fit_scale(x)
    z = ae.to_latent(x)
    return recipes.SSLParts(C, FrozenEncoder(ConvNet(1, 8)), ae, x, z, schedules.make_schedule("cosine", C.T))


def test_every_chapter11_recipe_trains_on_latents(ssl_parts):
    """Each of the six recipes trains on latents: its loss falls, and it keeps EMA snapshots with increasing training
    times; at_time picks the last snapshot within a budget; the last snapshot is the EMA at the end."""
    from minidiff import recipes

    for name in recipes.SSL_RECIPES:
        res = recipes.train_ssl_recipe(name, ssl_parts, seed=0, snapshot_every=10, progress=False)
        run = res["run"]
        h = run.history["loss"]
        if name.startswith("multitask"):          # the SSL term dominates the start: compare its diffusion part
            assert res["model"].last["diffusion"] < 0.8 * h[0], name
        else:
            assert sum(h[-2:]) / 2 < 0.8 * sum(h[:2]) / 2, (name, h[:2], h[-2:])
        steps = [s for s, _, _ in res["snapshots"]]
        times = [t for _, t, _ in res["snapshots"]]
        assert steps == [10, 20, 30, 40] and times == sorted(times) and times[-1] <= run.seconds + 1e-6, name
        for (k, a), b in zip(run.ema.state_dict().items(), res["snapshots"][-1][2].values()):
            assert torch.equal(a, b), (name, k)
        assert recipes.at_time(res, (times[1] + times[2]) / 2)[0] == 20
        assert recipes.at_time(res, 0.0)[0] == 10 and recipes.at_time(res, 1e9)[0] == 40
    with pytest.raises(ValueError, match="unknown chapter-11 recipe"):
        recipes.train_ssl_recipe("dino", ssl_parts)


def test_rcg_representations_come_back_on_the_sphere(ssl_parts):
    from minidiff import recipes

    run, sched = recipes.train_rdm(ssl_parts, seed=0, progress=False)
    # trained on standardised features; the statistics travel with the model (and its EMA copy)
    assert torch.allclose(run.ema.rep_mean, ssl_parts.feats.mean(0)) and torch.allclose(run.ema.rep_std,
                                                                                        ssl_parts.feats.std(0))
    r = recipes.sample_representations(run.ema.eval(), sched, 16, ssl_parts.encoder.dim,
                                       generator=torch.Generator().manual_seed(0))
    assert r.shape == (16, ssl_parts.encoder.dim)
    assert torch.allclose(r.norm(dim=1), torch.full((16,), math.sqrt(ssl_parts.encoder.dim)), atol=1e-4)
    assert torch.allclose(ssl_parts.feats.norm(dim=1), torch.full((len(ssl_parts.feats),),
                                                                  math.sqrt(ssl_parts.encoder.dim)), atol=1e-3)


def test_shared_simclr_is_trained_once_and_loaded_after(tmp_path, monkeypatch):
    """Chapter 02's SimCLR kept by the cache: a second call with equal settings loads the same weights (and the loss
    history) without training; other settings are another entry; a section without SimCLR's fields is refused."""
    import dataclasses

    from minidiff import config, recipes

    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("MINIDIFF_PROFILE", "cpu")
    S = dataclasses.replace(config.get_profile("ci").ssl, width=4, steps=3, batch=16, max_seconds=None)
    x = torch.rand(32, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    m1, i1 = recipes.shared_simclr(S, x, progress=False)
    assert not i1["loaded"] and i1["steps"] == 3 and len(i1["history"]["loss"]) >= 1
    torch.manual_seed(2)
    m2, i2 = recipes.shared_simclr(S, x, progress=False)
    assert i2["loaded"] and i2["history"] == i1["history"]
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert not recipes.shared_simclr(dataclasses.replace(S, steps=4), x, progress=False)[1]["loaded"]
    with pytest.raises(TypeError, match="chapter 02's SSL section"):
        recipes.shared_simclr(config.get_profile("ci").dit, x)


def test_chapter11_encoder_is_chapter02s_where_the_data_agree():
    from minidiff import config

    for name in ("ci", "cpu"):
        P = config.get_profile(name)
        assert P.ssl_diffusion.encoder_section(P.ssl) is P.ssl, name
        assert P.ssl_diffusion.ae_settings() == P.dit.ae_settings() == P.guidance.ae_settings(), name
    G = config.get_profile("gpu")
    enc = G.ssl_diffusion.encoder_section(G.ssl)
    assert (enc.dataset, enc.encoder, enc.width, enc.steps) == ("mnist", "convnet", G.ssl.width, G.ssl.steps)
    from minidiff.config.schema import SSLDiffusionConfig
    with pytest.raises(ValueError, match="live_recipes must include 'baseline'"):
        SSLDiffusionConfig(live_recipes=("repa",))
    with pytest.raises(ValueError, match="recipes must start with 'baseline'"):
        SSLDiffusionConfig(recipes=("repa", "baseline"))


def test_rcg_guidance_by_hand_and_its_settings():
    """RCG samples with classifier-free guidance on the representation: u + w (c - u), where c sees the
    representation and u the zero vector it was trained to see when the representation was dropped."""
    import dataclasses

    from minidiff.config.schema import SSLDiffusionConfig
    from minidiff.recipes import rcg_guided

    torch.manual_seed(0)
    net = DiT(dit_config("DiT-Micro", patch=1, input_size=7, in_channels=4, cond_dim=12)).eval()
    for p in net.parameters():                  # zero-initialised gates would hide the condition
        p.data.add_(0.02 * torch.randn_like(p))
    x, t, r = torch.randn(3, 4, 7, 7), torch.tensor([5, 40, 90]), torch.randn(3, 12)
    sec = dataclasses.replace(SSLDiffusionConfig(), rcg_guidance=1.5)
    with torch.no_grad():
        c, u = net(x, t, r), net(x, t, torch.zeros(3, 12))
        assert not torch.allclose(c, u, atol=1e-4)
        assert torch.allclose(rcg_guided(net, sec, 12)(x, t, r), u + 1.5 * (c - u), atol=1e-5)
        plain = dataclasses.replace(sec, rcg_guidance=1.0)
        assert torch.equal(rcg_guided(net, plain, 12)(x, t, r), c)
    with pytest.raises(ValueError, match="rcg_guidance"):
        SSLDiffusionConfig(rcg_guidance=0.5)
    with pytest.raises(ValueError, match="p_uncond > 0"):
        SSLDiffusionConfig(rcg_guidance=2.0, p_uncond=0.0)


def test_unet_hidden_state_and_trunk():
    """The U-Net's return_hidden=k gives the activation after its k-th ResBlock (down path, then middle) as row-major
    tokens, read here by a forward hook; features() returns the same tokens without running the rest; the prediction
    is unchanged; hidden_dim names their width; bad indices are refused."""
    from minidiff.nets import UNet
    from minidiff.nets.unet import ResBlock

    torch.manual_seed(0)
    net = UNet(4, 16, (1, 2), attention=False, cond_dim=6)
    res = [m for blocks in net.down for m in blocks if isinstance(m, ResBlock)] + \
          [m for m in net.mid if isinstance(m, ResBlock)]
    assert net.hidden_blocks == len(res) == 4
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([1, 5, 9]), torch.randn(3, 6)
    for k in range(1, 5):
        seen = {}
        hook = res[k - 1].register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
        out, hidden = net(x, t, y, return_hidden=k)
        hook.remove()
        h = seen["h"]
        assert torch.equal(hidden, h.flatten(2).transpose(1, 2)) and hidden.shape[-1] == net.hidden_dim(k)
        assert torch.equal(hidden[:, 1], h[:, :, 0, 1])                    # row-major: token 1 is row 0, column 1
        assert torch.equal(out, net(x, t, y)) and torch.equal(net.features(x, t, y, depth=k), hidden)
        called = []                                  # features stops after block k: the output layer never runs
        hook = net.out.register_forward_hook(lambda m, i, o: called.append(1))
        net.features(x, t, y, depth=k)
        hook.remove()
        assert not called
    assert [net.hidden_dim(k) for k in range(1, 5)] == [16, 32, 32, 32]
    for bad in (0, 5, True, 1.0):
        with pytest.raises(ValueError, match="ResBlock index"):
            net(x, t, y, return_hidden=bad)


def test_repa_and_multitask_on_a_unet():
    """REPA on a latent U-Net: the alignment term is alignment_loss on the U-Net's hidden tokens and the encoder's
    map pooled to their grid (7x7 at every block of a one-level U-Net); MultiTask's features are the mean token of the
    trunk at t = 0; a network without hidden states is refused."""
    from minidiff.nets import UNet

    torch.manual_seed(0)
    enc = FrozenEncoder(ConvNet(1, 8))
    net = UNet(4, 16, (1,), attention=False)
    model = REPA(net, enc, depth=2, lam=0.5)
    sched = schedules.make_schedule("cosine", 50)
    z, x = torch.randn(6, 4, 7, 7), torch.rand(6, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    model.loss(z, sched, prediction="eps", images=x)
    torch.manual_seed(1)
    t = torch.randint(0, sched.T, (6,))
    noise = torch.randn_like(z)
    _, hidden = net(ddpm.q_sample(sched, z, t, noise), t, return_hidden=2)
    assert model.last["align"] == pytest.approx(alignment_loss(hidden, enc.spatial(x, 7), model.proj).item(), rel=1e-5)
    mt = MultiTask(net, depth=1, weight=LossWeightSchedule(0.5, kind="constant"), augment=digits_augment(0.5))
    expect = net(z, torch.zeros(6, dtype=torch.long), return_hidden=1)[1].mean(1)
    assert torch.allclose(mt.ssl_features(z), expect, atol=1e-6)
    with pytest.raises(TypeError, match="hidden states"):
        REPA(torch.nn.Conv2d(4, 4, 1), enc, depth=1)
    with pytest.raises(ValueError, match="1..3"):
        MultiTask(net, depth=4, weight=LossWeightSchedule(0.5, kind="constant"), augment=digits_augment(0.5))


def test_dit_trunk_is_its_hidden_state():
    dit = tiny_dit()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0, 30])
    for k in (1, dit.hidden_blocks):
        assert torch.equal(dit.features(x, t, depth=k), dit(x, t, return_hidden=k)[1])
        assert dit.hidden_dim(k) == dit.cfg.hidden
    with pytest.raises(ValueError, match="block index"):
        dit.hidden_dim(dit.hidden_blocks + 1)


def test_config_names_a_depth_the_latent_unet_does_not_have():
    """The section refuses, when it is built, a REPA or multi-task depth the one-level U-Net lacks (it has 3
    ResBlocks before its up path: exactly what SSLParts.net builds), instead of failing mid-chapter."""
    import dataclasses

    from minidiff import config
    from minidiff.nets import UNet

    C = config.get_profile("ci").ssl_diffusion
    assert UNet(4, 16, (1,), attention=False).hidden_blocks == 3
    for field in ("repa_depth", "mt_depth"):
        with pytest.raises(ValueError, match=f"SSLDiffusionConfig.{field} must be a block of the latent U-Net"):
            dataclasses.replace(C, **{field: 4})
    assert dataclasses.replace(C, backbone="dit", dit="DiT-Mini", repa_depth=4).repa_depth == 4
