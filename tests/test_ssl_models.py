"""Encoders, RotNet, SimCLR/MoCo models and the VAE: shapes, math against closed forms, and learning."""

import math

import pytest
import torch
import torchvision

from minidiff import data
from minidiff.nets.resnet import ConvNet, make_encoder, resnet18
from minidiff.ssl import evaluate, rotation, vae as V
from minidiff.ssl.augment import digits_augment
from minidiff.ssl.moco import MoCo
from minidiff.ssl.simclr import SimCLR
from minidiff.train import TrainConfig, train


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_resnet18_cifar_stem_parameter_count_matches_torchvision():
    # torchvision's ImageNet ResNet-18 minus its 7x7 stem conv and 1000-way classifier, plus a 3x3 stem conv
    tv = torchvision.models.resnet18()
    expected = n_params(tv) - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - (512 * 1000 + 1000)
    ours = resnet18(3)
    assert n_params(ours) == expected
    assert ours.stem[0].kernel_size == (3, 3) and ours.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in ours.modules())


def test_encoders_shapes_and_depths():
    x = torch.randn(2, 3, 32, 32)
    r = resnet18(3, width=8)
    assert r(x).shape == (2, 64)
    assert [r.features(x, d).shape[1] for d in (1, 2, 3, 4)] == [8, 16, 32, 64]
    c = ConvNet(1, 8)
    xd = torch.randn(2, 1, 28, 28)
    assert c(xd).shape == (2, 32) and c.features(xd, 1).shape == (2, 8)
    with pytest.raises(ValueError, match="depth must be in 1..3"):
        c.features(xd, 4)
    with pytest.raises(ValueError, match="1 channel"):
        c(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("vgg")


def test_rotation_batch_labels_and_rotations():
    x = torch.arange(2 * 9, dtype=torch.float32).view(2, 1, 3, 3)
    imgs, labels = rotation.rotation_batch(x)
    assert imgs.shape == (8, 1, 3, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # 90 degrees counter-clockwise by hand: the top row becomes the left column, read bottom-up
    assert imgs[2, 0, :, 0].tolist() == x[0, 0, 0, :].flip(0).tolist()
    assert torch.equal(imgs[4], x[0].flip(-1).flip(-2))      # 180 degrees
    assert torch.equal(rotation.rotate(imgs[6:7], 1), x[:1])  # 270 + 90 = 360
    with pytest.raises(ValueError, match="square"):
        rotation.rotation_batch(torch.randn(1, 1, 4, 5))


def test_simclr_loss_at_init_near_log_2n_minus_1():
    torch.manual_seed(0)
    m = SimCLR(ConvNet(1, 8), proj_hidden=64, proj_dim=32, temperature=0.5)
    x = torch.rand(32, 1, 28, 28) * 2 - 1
    aug = digits_augment(1.0)
    loss = m(*aug.two_views(x)).item()
    # at init the views are not yet aligned: the loss sits near, and not far below, log(2N - 1)
    assert math.log(63) - 0.6 < loss < math.log(63) + 0.3


def test_moco_queue_is_a_buffer_and_key_encoder_gets_no_gradient():
    torch.manual_seed(0)
    m = MoCo(ConvNet(1, 4), proj_hidden=16, proj_dim=8, queue_size=12, momentum=0.9)
    assert "queue" in m.state_dict() and "queue_ptr" in m.state_dict()
    key0 = [p.clone() for p in m.key_encoder.parameters()]
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    loss = m(x, x.flip(-1))
    loss.backward()
    assert all(p.grad is None for p in m.key_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
    assert int(m.queue_ptr) == 5
    # at step 1 key == query weights (deep copy), so the momentum update leaves them equal
    assert all(torch.allclose(a, b) for a, b in zip(m.key_encoder.parameters(), key0))
    # keys are unit vectors written in FIFO order; 3 more steps of 5 wrap around a queue of 12
    for _ in range(3):
        m(x, x)
    assert int(m.queue_ptr) == (4 * 5) % 12
    assert torch.allclose(m.queue.norm(dim=1), torch.ones(12), atol=1e-5)


def test_moco_shuffled_split_keys_match_unshuffled_in_eval_mode():
    # in eval mode BatchNorm uses running stats, so shuffling and splitting must not change the keys at all
    torch.manual_seed(0)
    m = MoCo(ConvNet(1, 4), proj_hidden=16, proj_dim=8, queue_size=16, bn_splits=3).eval()
    x = torch.rand(7, 1, 28, 28) * 2 - 1
    direct = torch.nn.functional.normalize(m.key_head(m.key_encoder(x)), dim=1)
    assert torch.allclose(m._keys(x), direct, atol=1e-5)


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) * 0.5
    n = 200_000
    eps = torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    z = mu.double() + (0.5 * logvar.double()).exp() * eps
    log_q = torch.distributions.Normal(mu.double(), (0.5 * logvar.double()).exp()).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0)
    se = (log_q - log_p).std(0) / math.sqrt(n)
    analytic = V.gaussian_kl(mu, logvar).double()
    assert ((mc - analytic).abs() < 5 * se).all(), (mc, analytic, se)
    assert torch.allclose(V.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_reparameterize_moments_and_gradient():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    z = V.reparameterize(mu.expand(100_000, 2), logvar.expand(100_000, 2))
    assert torch.allclose(z.mean(0), mu.detach(), atol=0.03)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 2.0]), atol=0.03)
    z.mean().backward()
    assert mu.grad is not None and torch.allclose(mu.grad, torch.full((2,), 0.5))


def test_elbo_terms_against_direct_computation():
    torch.manual_seed(0)
    m = V.VAE(1, 28, latent_dim=4, width=4)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    t = V.elbo(m, x, beta=2.0)
    torch.manual_seed(1)
    mu, logvar = m.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    p = torch.sigmoid(m.decode(z))
    xb = (x > 0).float()
    recon = -(xb * p.log() + (1 - xb) * (1 - p).log()).flatten(1).sum(1).mean()
    kl = (0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1)).mean()
    assert t.recon.item() == pytest.approx(recon.item(), rel=1e-4)
    assert t.kl.item() == pytest.approx(kl.item(), rel=1e-5)
    assert t.loss.item() == pytest.approx((recon + 2 * kl).item(), rel=1e-4)
    assert t.nelbo.item() == pytest.approx((recon + kl).item(), rel=1e-4)


def test_gaussian_likelihood_is_the_normal_log_density():
    m = V.VAE(1, 8, latent_dim=2, width=2, likelihood="gaussian", sigma=0.3)
    out, target = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    ref = -torch.distributions.Normal(out, 0.3).log_prob(target).flatten(1).sum(1)
    assert torch.allclose(m.neg_log_likelihood(out, target), ref, atol=1e-4)


def test_vae_shapes_sampling_interpolation_and_bad_inputs():
    m = V.VAE(1, 28, latent_dim=3, width=4)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert m.sample(5).shape == (5, 1, 28, 28)
    path = m.interpolate(x[:1], x[1:], steps=4)
    assert path.shape == (4, 1, 1, 28, 28)
    assert torch.allclose(path[0], m.reconstruct(x[:1]), atol=1e-5)
    assert torch.allclose(path[-1], m.reconstruct(x[1:]), atol=1e-5)
    with pytest.raises(ValueError, match="28x28"):
        m.encode(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 3\)"):
        m.decode(torch.randn(2, 4))
    with pytest.raises(ValueError, match="beta"):
        V.elbo(m, x, beta=-1)
    with pytest.raises(ValueError, match="divisible by 4"):
        V.VAE(size=30)


@pytest.fixture(scope="module")
def digits5k():
    return data.mnist5k("train"), data.mnist5k("test")


def test_vae_learns_and_beats_untrained_on_heldout_elbo(digits5k):
    tr, te = digits5k
    torch.manual_seed(0)
    m = V.VAE(1, 28, latent_dim=8, width=8)
    before = V.evaluate_nelbo(m, te.x[:500])["nelbo"]
    train(m, lambda mod, b: V.elbo(mod, b).loss, data.TensorSampler(tr.x, batch_size=128),
          TrainConfig(steps=120, lr=3e-3, ema_decay=None, progress=False))
    after = V.evaluate_nelbo(m, te.x[:500])
    assert after["nelbo"] < 0.4 * before, (before, after)
    assert after["kl"] > 1.0  # the latent is used (no posterior collapse)


def test_simclr_features_beat_random_encoder_on_low_label_probe(digits5k):
    tr, te = digits5k
    torch.manual_seed(0)
    enc = ConvNet(1, 8)
    rand_tr = evaluate.extract_features(enc, tr.x)
    rand_te = evaluate.extract_features(enc, te.x)
    model = SimCLR(enc, 128, 32, temperature=0.5)
    aug = digits_augment(1.0)
    res = train(model, lambda m, b: m(*aug.two_views(b)), data.TensorSampler(tr.x, batch_size=128),
                TrainConfig(steps=60, lr=3e-3, ema_decay=None, grad_clip=None, progress=False))
    assert res.history["loss"][-1] < res.history["loss"][0] - 0.3
    f_tr, f_te = evaluate.extract_features(enc, tr.x), evaluate.extract_features(enc, te.x)
    ssl = evaluate.low_label_probe(f_tr, tr.y, f_te, te.y, 10, 3)[0]
    rnd = evaluate.low_label_probe(rand_tr, tr.y, rand_te, te.y, 10, 3)[0]
    assert ssl > rnd + 0.1, (ssl, rnd)


def test_rotation_net_learns_the_pretext_task(digits5k):
    tr, te = digits5k
    torch.manual_seed(0)
    model = rotation.RotationNet(ConvNet(1, 8))
    chance = model.accuracy(te.x[:200])
    train(model, lambda m, b: m.loss(b), data.TensorSampler(tr.x, batch_size=64),
          TrainConfig(steps=80, lr=3e-3, ema_decay=None, progress=False))
    acc = model.accuracy(te.x[:500])
    assert acc > 0.8 and acc > chance + 0.3, (chance, acc)


def test_moco_trains_with_the_training_loop_and_resumes_its_queue(tmp_path, digits5k):
    tr, _ = digits5k
    torch.manual_seed(0)
    aug = digits_augment(1.0)
    cfg = TrainConfig(steps=6, lr=3e-3, ema_decay=None, progress=False, ckpt_dir=tmp_path, ckpt_every=3)
    m = MoCo(ConvNet(1, 4), 32, 16, queue_size=64)
    train(m, lambda mod, b: mod(*aug.two_views(b)), data.TensorSampler(tr.x, batch_size=16), cfg)
    m2 = MoCo(ConvNet(1, 4), 32, 16, queue_size=64)
    res = train(m2, lambda mod, b: mod(*aug.two_views(b)), data.TensorSampler(tr.x, batch_size=16), cfg)
    assert res.resumed_from == 6 and torch.equal(m2.queue, m.queue) and int(m2.queue_ptr) == (6 * 16) % 64


def test_importance_weighted_bound_k1_is_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    m = V.VAE(1, 28, latent_dim=4, width=4)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    k1 = torch.stack([V.importance_weighted_nll(m, x, 1) for _ in range(20)]).mean()
    torch.manual_seed(2)
    ne = V.evaluate_nelbo(m, x, n_samples=20)["nelbo"]
    assert k1.item() == pytest.approx(ne, rel=2e-3)
    torch.manual_seed(3)
    k32 = V.importance_weighted_nll(m, x, 32).mean()
    assert k32 < k1  # a tighter (smaller) bound on -log p(x)


def test_feature_extraction_lives_with_evaluation():
    """Generic feature extraction is in ssl/evaluate.py, not ssl/rotation.py (issue 17, item 5)."""
    assert not hasattr(rotation, "extract_features") and callable(evaluate.extract_features)
    enc = ConvNet(1, 4)
    enc.train()
    f = evaluate.extract_features(enc, torch.rand(3, 1, 28, 28) * 2 - 1, batch_size=2)
    assert f.shape == (3, enc.feature_dim) and f.dtype == torch.float32 and enc.training
