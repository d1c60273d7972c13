"""Classifier-free guidance and the CLIP loss (minidiff.nets.clip) against their formulas."""

import math

import pytest
import torch

from minidiff.diffusion import guidance as G
from minidiff.diffusion.schedules import make_schedule
from minidiff.nets import clip as C


class CountingModel(torch.nn.Module):
    """eps(x, t, y) = x * (y + 1) + t: easy to predict by hand; counts forward calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, y):
        self.calls += 1
        return x * (y.float() + 1).view(-1, 1, 1, 1) + t.float().view(-1, 1, 1, 1)


def test_guidance_keeps_guidance_and_clip_lives_with_the_nets():
    """The CLIP model, its tokenizer and captions are networks (minidiff.nets.clip), not guidance."""
    for name in ("clip_loss", "digit_captions", "tokenize", "BagOfWordsEncoder", "CLIPModel", "DIGIT_NAMES"):
        assert not hasattr(G, name) and hasattr(C, name), name
    from minidiff.nets import CLIPModel

    assert CLIPModel is C.CLIPModel


def test_guidance_formula_endpoints_and_one_batched_call():
    m = CountingModel()
    x, t, y = torch.randn(3, 1, 2, 2), torch.tensor([1, 2, 3]), torch.tensor([0, 4, 7])
    null = 10
    cond, uncond = m(x, t, y), m(x, t, torch.full_like(y, null))
    for w in (0.0, 1.0, 2.5):
        m.calls = 0
        out = G.guided(m, w, null)(x, t, y)
        assert m.calls == 1
        assert torch.allclose(out, uncond + w * (cond - uncond), atol=1e-6)
    assert torch.allclose(G.guided(m, 0.0, null)(x, t, y), uncond)
    with pytest.raises(ValueError, match="guidance scale"):
        G.guided(m, -1.0, null)


def test_drop_labels_rate():
    y = torch.zeros(50_000, dtype=torch.long)
    out = G.drop_labels(y, 0.2, null_label=10, generator=torch.Generator().manual_seed(0))
    assert abs((out == 10).float().mean().item() - 0.2) < 0.01
    assert set(out.unique().tolist()) == {0, 10}
    assert torch.equal(G.drop_labels(y, 0.0, 10), y)
    with pytest.raises(ValueError, match="p_uncond"):
        G.drop_labels(y, 1.5, 10)


def slow_clip_loss(u, v, tau):
    n = u.shape[0]
    sim = [[float(u[i] @ v[j] / (u[i].norm() * v[j].norm())) / tau for j in range(n)] for i in range(n)]
    img = sum(-math.log(math.exp(sim[i][i]) / sum(math.exp(sim[i][j]) for j in range(n))) for i in range(n)) / n
    txt = sum(-math.log(math.exp(sim[j][j]) / sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    return 0.5 * (img + txt)


def test_clip_loss_matches_slow_loop_and_chance_level():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert C.clip_loss(u, v, 0.5).item() == pytest.approx(slow_clip_loss(u.double(), v.double(), 0.5), rel=1e-5)
    big_u, big_v = torch.randn(64, 4096, generator=g), torch.randn(64, 4096, generator=g)
    assert C.clip_loss(big_u, big_v, 1.0).item() == pytest.approx(math.log(64), abs=0.02)
    with pytest.raises(ValueError, match="same shape"):
        C.clip_loss(u, v[:3])


def test_captions_and_tokens():
    caps = C.digit_captions(torch.tensor([7, 0]), generator=torch.Generator().manual_seed(0))
    assert caps[0].endswith("handwritten seven") and caps[1].endswith("handwritten zero")
    tok, vocab = C.tokenize(caps)
    assert tok.shape == (2, 6) and (tok[:, :4] > 0).all() and (tok[:, 4:] == 0).all()
    tok2, _ = C.tokenize(["a purple seven"], vocab)
    assert tok2[0, 1].item() == 1  # unknown word
    enc = C.BagOfWordsEncoder(len(vocab), 16, 8)
    assert enc(tok).shape == (2, 8)


def test_guidance_with_condition_vectors_and_a_vector_conditioned_unet():
    from minidiff.nets import UNet
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), attention=False, cond_dim=5).eval()
    with torch.no_grad():  # open the zero-initialised layers (output, embedding projections)
        for p in net.parameters():
            if p.ndim > 1 and p.abs().max() == 0:
                p.normal_(std=0.1)
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    v = torch.randn(2, 5)
    null = torch.zeros(5)
    cond, uncond = net(x, t, v), net(x, t, null.expand(2, 5))
    assert torch.allclose(net(x, t), uncond)  # y=None is the null (zero) vector
    assert (cond - uncond).abs().max() > 1e-5
    assert torch.allclose(G.guided(net, 3.0, null)(x, t, v), uncond + 3.0 * (cond - uncond), atol=1e-5)
    with pytest.raises(ValueError, match=r"float tensor \(2, 5\)"):
        net(x, t, torch.zeros(2, dtype=torch.long))


def test_guidance_without_a_condition_says_so():
    with pytest.raises(ValueError, match="needs the condition y"):
        G.guided(CountingModel(), 2.0, 10)(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------- condition vectors, CLIPModel, metrics

def test_drop_condition_vectors_and_labels():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(20000, 3) + 5
    out = G.drop_condition(y, 0.25, generator=g)
    dropped = (out == 0).all(1)
    assert abs(dropped.float().mean().item() - 0.25) < 0.015
    assert torch.equal(out[~dropped], y[~dropped])                    # kept rows untouched
    null = torch.tensor([1.0, 2.0, 3.0])
    out = G.drop_condition(y, 1.0, null)
    assert torch.equal(out, null.expand_as(y))
    labels = torch.randint(0, 10, (1000,))
    assert ((G.drop_condition(labels, 1.0, 10)) == 10).all()
    with pytest.raises(ValueError, match=r"null condition must have shape \(3,\)"):
        G.drop_condition(y, 0.5, torch.zeros(4))
    with pytest.raises(ValueError, match="int null label"):
        G.drop_condition(labels, 0.5, None)


def test_guided_with_condition_vectors_uses_the_null_vector():
    class VecModel(torch.nn.Module):
        def forward(self, x, t, y):
            return x + y.sum(1).view(-1, 1, 1, 1)

    m = VecModel()
    x, t, y = torch.randn(2, 1, 2, 2), torch.tensor([0, 1]), torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    null = torch.zeros(2)
    cond, uncond = m(x, t, y), m(x, t, null.expand_as(y))
    assert torch.allclose(G.guided(m, 3.0, null)(x, t, y), uncond + 3.0 * (cond - uncond))
    # a null of another shape is refused, not broadcast (a (d,) null for (B, L, d) token sequences, say)
    tokens = torch.randn(2, 3, 2)
    with pytest.raises(ValueError, match=r"null condition must have shape \(3, 2\)"):
        G.guided(lambda x, t, y: x, 2.0, torch.zeros(2))(x, t, tokens)
    assert G.guided(lambda x, t, y: x + y.sum((1, 2)).view(-1, 1, 1, 1), 2.0, torch.zeros(3, 2))(x, t, tokens).shape \
        == x.shape


def test_clip_model_loss_zero_shot_and_condition():
    caps = ["a thin handwritten one", "a bold handwritten two"]
    _, vocab = C.tokenize(caps)
    torch.manual_seed(0)
    clip = C.CLIPModel(vocab, dim=8, width=4).eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    tok = clip.tokens(caps + caps)
    assert clip.loss(x, tok).item() == pytest.approx(
        C.clip_loss(clip.encode_image(x), clip.encode_text(tok), clip.temperature).item(), rel=1e-6)
    assert torch.allclose(clip.encode_text(tok).norm(dim=1), torch.ones(4), atol=1e-5)
    c = clip.condition(caps)
    assert c.shape == (2, 8) and torch.allclose(c.norm(dim=1), torch.full((2,), 8 ** 0.5), atol=1e-4)
    # zero-shot = argmax of the cosine similarity, by hand
    prompts = ["a handwritten one", "a handwritten two"]
    sims = clip.encode_image(x) @ clip.encode_text(clip.tokens(prompts)).T
    assert torch.equal(clip.zero_shot(x, prompts), sims.argmax(1))
    with pytest.raises(TypeError, match="tokens must have dtype torch.int64"):
        clip.encode_text(tok.float())


def test_clip_model_learns_digits_zero_shot():
    from minidiff import data
    from minidiff.train import TrainConfig, train

    tr, te = data.mnist5k("train"), data.mnist5k("test")
    gen = torch.Generator().manual_seed(0)
    _, vocab = C.tokenize(C.digit_captions(tr.y, generator=gen))
    torch.manual_seed(0)
    clip = C.CLIPModel(vocab)
    train(clip, lambda m, b: m.loss(b[0], m.tokens(C.digit_captions(b[1], generator=gen))),
          data.TensorSampler(tr.x, tr.y, batch_size=64), TrainConfig(steps=100, lr=3e-3, ema_decay=None, progress=False))
    clip.eval()
    acc = (clip.zero_shot(te.x, [f"a handwritten {d}" for d in C.DIGIT_NAMES]) == te.y).float().mean().item()
    assert acc > 0.6, acc          # chance is 0.1


def _null_rate_seen_by_the_embedding(model, table, p_uncond, steps=8, batch=1024):
    """Train ``model`` with train_ddpm on random 4x4 images and labels; return the fraction of null labels (index 10)
    that reached the embedding table ``table``, over all the training batches, and the run."""
    from minidiff.diffusion import schedules
    from minidiff.recipes import train_ddpm
    from minidiff.train import TrainConfig

    seen = []
    hook = table.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    x, y = torch.randn(2048, 1, 4, 4), torch.randint(0, 10, (2048,))
    try:
        run = train_ddpm(model, schedules.make_schedule("linear", 20), x, y, batch_size=batch, p_uncond=p_uncond,
                         cfg=TrainConfig(steps=steps, ema_decay=0.9, progress=False))
    finally:
        hook.remove()
    labels = torch.cat(seen)
    assert labels.numel() == steps * batch          # one embedding lookup per training example
    return (labels == 10).float().mean().item(), run


def test_class_conditional_dit_under_train_ddpm_drops_labels_once():
    """The DiT's label embedder drops labels on its own (class_dropout 0.1) and train_ddpm drops them with p_uncond:
    together 1 - 0.9 * 0.9 = 19 % null labels. train_ddpm must be the one place: the table sees p_uncond of them."""
    from minidiff.nets.dit import DiT, dit_config, label_dropouts

    torch.manual_seed(0)
    net = DiT(dit_config("DiT-Tiny/4", input_size=4, num_classes=10))
    assert net.y_embed.dropout == 0.1 and net.num_classes == 10
    n = 8 * 1024
    tol = 4 * math.sqrt(0.1 * 0.9 / n)              # four binomial standard deviations, about 0.013
    rate, run = _null_rate_seen_by_the_embedding(net, net.y_embed.table, p_uncond=0.1)
    assert abs(rate - 0.1) < tol, f"{rate:.3f} of the labels were null, expected 0.1 (0.19 = dropped twice)"
    assert label_dropouts(net) == [0.1] and label_dropouts(run.ema) == [0.1]   # its own rate is back afterwards
    # p_uncond=0 means no null labels at all; without p_uncond the DiT's own dropout is the one
    net = DiT(dit_config("DiT-Tiny/4", input_size=4, num_classes=10))
    rate, _ = _null_rate_seen_by_the_embedding(net, net.y_embed.table, p_uncond=0.0, steps=2)
    assert rate == 0.0
    net = DiT(dit_config("DiT-Tiny/4", input_size=4, num_classes=10, class_dropout=0.3))
    rate, _ = _null_rate_seen_by_the_embedding(net, net.y_embed.table, p_uncond=None)
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n), rate


def test_class_conditional_unet_under_train_ddpm_drops_labels_once():
    """The U-Net has no dropout of its own: its label table sees the p_uncond of null labels, and none without."""
    from minidiff.nets import UNet

    torch.manual_seed(0)
    net = UNet(1, 8, (1,), attention=False, num_classes=10)
    rate, _ = _null_rate_seen_by_the_embedding(net, net.label_embed, p_uncond=0.2)
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / (8 * 1024)), rate
    rate, _ = _null_rate_seen_by_the_embedding(net, net.label_embed, p_uncond=None, steps=2)
    assert rate == 0.0


def test_labels_are_dropped_for_guidance_in_one_place():
    """Issue 17, item 4: in training, minidiff.recipes.train_ddpm is the one caller of the condition dropout
    (guidance.drop_condition, built on drop_labels); a model's own label dropout (the DiT's LabelEmbedder) is switched
    off while train_ddpm drops (test_class_conditional_dit_under_train_ddpm_drops_labels_once)."""
    import re
    from pathlib import Path

    import minidiff

    root = Path(minidiff.__file__).parent
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if re.search(r"\bdrop_(condition|labels)\(", p.read_text()) and p.name != "guidance.py")
    assert callers == ["recipes.py"], callers


# ----------------------------------------------------------------------------- classifier guidance

def _two_gaussians(sched):
    """Exact eps of p(x_t) and exact logits of p(y | x_t) for x_0 | y ~ N(mu_y, 0.5^2) in 1-D, classes equally likely."""
    mu = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    a = sched.table64("sqrt_alphas_cumprod")                  # indexed by the timestep below
    sig = sched.table64("sqrt_one_minus_alphas_cumprod")
    v = a ** 2 * 0.25 + sig ** 2                              # variance of x_t given y

    def logits(x, t):                                         # log N(x; a mu_y, v) + const, per class
        return -(x - a[t][:, None] * mu) ** 2 / (2 * v[t][:, None])

    def eps(x, t):                                            # -sigma * grad log p(x_t), p the two-class mixture
        r = torch.softmax(logits(x, t), dim=1)
        grad = (r * (-(x - a[t][:, None] * mu) / v[t][:, None])).sum(1, keepdim=True)
        return -sig[t][:, None] * grad

    return mu, a, sig, v, logits, eps


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_classifier_guidance_is_the_eps_of_the_tilted_density(scale):
    """With the exact eps of a two-Gaussian mixture and its exact noisy classifier, the guided prediction is
    -sigma * grad log[p(x_t) p(y | x_t)^s], written out by hand; at s = 1 it is the class-conditional eps
    sigma (x - a mu_y) / v in closed form, at s = 0 the unconditional one."""
    sched = make_schedule("cosine", 100)
    t = torch.tensor([5, 30, 60, 90, 99, 50])
    mu, a, sig, v, logits, eps = _two_gaussians(sched)
    x = torch.linspace(-2.5, 2.5, 6, dtype=torch.float64)[:, None]
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():                                    # samplers call it without autograd; it must still work
        got = G.classifier_guided(eps, logits, scale, sched)(x, t, y)
    r = torch.softmax(logits(x, t), 1)
    g_uncond = (r * (-(x - a[t][:, None] * mu) / v[t][:, None])).sum(1, keepdim=True)
    g_cls = -(x - a[t][:, None] * mu[y][:, None]) / v[t][:, None] - g_uncond
    want = -sig[t][:, None] * (g_uncond + scale * g_cls)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    if scale == 1.0:
        conditional = sig[t][:, None] * (x - a[t][:, None] * mu[y][:, None]) / v[t][:, None]
        assert torch.allclose(got, conditional, atol=1e-6, rtol=1e-5)


def test_classifier_guidance_uses_the_null_label_and_refuses_bad_input():
    sched = make_schedule("cosine", 50)
    calls = []

    def cfg_model(x, t, y=None):
        calls.append(y)
        return torch.zeros_like(x)

    clf = lambda x, t: torch.zeros(x.shape[0], 10) + x.flatten(1)[:, :1]   # noqa: E731  (uniform, with a gradient)
    x, t, y = torch.randn(4, 1, 4, 4), torch.full((4,), 10), torch.arange(4)
    G.classifier_guided(cfg_model, clf, 2.0, sched, null_label=10)(x, t, y)
    assert torch.equal(calls[-1], torch.full((4,), 10))
    with pytest.raises(ValueError, match="guidance scale"):
        G.classifier_guided(cfg_model, clf, -1.0, sched)
    with pytest.raises(ValueError, match="int64 labels"):
        G.classifier_guided(cfg_model, clf, 1.0, sched)(x, t)
    with pytest.raises(ValueError, match="rows"):
        G.classifier_guided(cfg_model, clf, 1.0, sched)(x, t, torch.arange(3))
    with pytest.raises(ValueError, match="logits"):
        G.classifier_guided(cfg_model, clf, 1.0, sched)(x, t, torch.tensor([0, 1, 2, 12]))
    with pytest.raises(ValueError, match=r"\[0, K\)"):
        G.classifier_guided(cfg_model, clf, 1.0, sched)(x, t, torch.tensor([0, 1, 2, -1]))
    with pytest.raises(ValueError, match="finite"):
        G.classifier_guided(cfg_model, clf, float("nan"), sched)
    with pytest.raises(TypeError, match="NoiseSchedule"):
        G.classifier_guided(cfg_model, clf, 1.0, "cosine")


def test_noisy_classifier_learns_clean_digits_and_stays_near_chance_at_pure_noise():
    """train_noisy_classifier on sklearn's 8x8 digits: accurate at low noise, near chance at t = T - 1 (the input is
    almost pure noise there), and far better than the untrained network at low noise."""
    from minidiff import data
    from minidiff.diffusion.ddpm import q_sample
    from minidiff.nets import NoisyClassifier
    from minidiff.recipes import train_noisy_classifier
    from minidiff.train import TrainConfig

    torch.manual_seed(0)
    tr, te = data.load_images("digits", "train"), data.load_images("digits", "test")
    sched = make_schedule("cosine", 100)
    clf = NoisyClassifier(1, 10, base_channels=16, channel_mults=(1, 2), patch=1)

    def accuracy(t):
        g = torch.Generator().manual_seed(1)
        tt = torch.full((te.x.shape[0],), t)
        xt = q_sample(sched, te.x, tt, torch.randn(te.x.shape, generator=g))
        with torch.no_grad():
            return (clf.eval()(xt, tt).argmax(1) == te.y).float().mean().item()

    before = accuracy(2)
    train_noisy_classifier(clf, sched, tr.x, tr.y, batch_size=64, cfg=TrainConfig(steps=300, lr=3e-3, warmup=10,
                                                                                   ema_decay=None, progress=False))
    assert accuracy(2) > 0.85 and accuracy(2) > before + 0.5
    assert accuracy(99) < 0.3
    with pytest.raises(ValueError, match="int64 labels"):
        train_noisy_classifier(clf, sched, tr.x, tr.y.float(), batch_size=8, cfg=TrainConfig(steps=1))
    with pytest.raises(ValueError, match="divisible by patch"):
        NoisyClassifier(1, 10, patch=3)(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


# ----------------------------------------------------------------------------- token sequences and cross-attention

def test_cross_attention_block_is_softmax_attention_over_the_words():
    """CrossAttentionBlock against a loop over positions and heads with the softmax written out."""
    from minidiff.nets.unet import CrossAttentionBlock

    torch.manual_seed(0)
    blk = CrossAttentionBlock(8, context_dim=5, heads=2)
    assert torch.equal(blk(torch.ones(1, 8, 3, 3), torch.randn(1, 4, 5)), torch.ones(1, 8, 3, 3))   # zero init
    torch.nn.init.normal_(blk.proj.weight, std=0.3)
    h, c = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 5)
    q = blk.q(blk.norm(h))                                   # (B, 8, 3, 3)
    kv = blk.kv(c)                                           # (B, 4, 16): keys then values
    out = torch.zeros_like(h)
    for b in range(2):
        for head in range(2):
            sl = slice(4 * head, 4 * head + 4)
            for i in range(3):
                for j in range(3):
                    qi = q[b, sl, i, j]
                    scores = torch.stack([qi @ kv[b, w, sl] for w in range(4)]) / math.sqrt(4)
                    p = torch.exp(scores - scores.max())
                    p = p / p.sum()
                    out[b, sl, i, j] = sum(p[w] * kv[b, w, 8 + 4 * head:8 + 4 * head + 4] for w in range(4))
    want = h + blk.proj(out)
    assert torch.allclose(blk(h, c), want, atol=1e-5)
    assert torch.allclose(blk(h, c[:, [2, 0, 3, 1]]), want, atol=1e-5)     # the words' order does not matter


def test_unet_reads_a_token_sequence_and_guidance_uses_the_empty_caption():
    from minidiff.nets import UNet

    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), attention=False, context_dim=6).eval()
    assert sum(type(m).__name__ == "CrossAttentionBlock" for m in net.modules()) == 4   # down, middle, 2 up
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1 and p.abs().max() == 0:
                p.normal_(std=0.2)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    ctx = torch.randn(2, 5, 6)
    null = torch.zeros(5, 6)
    cond, uncond = net(x, t, ctx), net(x, t, null.expand(2, 5, 6))
    assert (cond - uncond).abs().max() > 1e-4                 # the words change the prediction
    assert torch.allclose(net(x, t), uncond, atol=1e-6)       # y=None: the empty caption, of any length
    assert torch.allclose(G.guided(net, 2.5, null)(x, t, ctx), uncond + 2.5 * (cond - uncond), atol=1e-5)
    with pytest.raises(ValueError, match=r"context y must be a float tensor \(2, L, 6\)"):
        net(x, t, torch.randn(2, 6))
    with pytest.raises(ValueError, match="L >= 1"):
        net(x, t, torch.randn(2, 0, 6))
    with pytest.raises(ValueError, match="x's device with x's dtype"):
        net(x, t, torch.randn(2, 5, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="one of num_classes"):
        UNet(1, 8, (1,), cond_dim=4, context_dim=6)


def test_drop_condition_replaces_whole_token_sequences():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(10000, 3, 2) + 5
    out = G.drop_condition(y, 0.3, generator=g)
    dropped = (out == 0).flatten(1).all(1)
    assert abs(dropped.float().mean().item() - 0.3) < 0.02
    assert torch.equal(out[~dropped], y[~dropped]) and not (out[dropped] != 0).any()
    null = torch.arange(6.0).view(3, 2)
    assert torch.equal(G.drop_condition(y, 1.0, null), null.expand_as(y))
    with pytest.raises(ValueError, match=r"null condition must have shape \(3, 2\)"):
        G.drop_condition(y, 0.5, torch.zeros(2))


def test_clip_token_condition_gives_unit_size_words_and_zero_padding():
    caps = ["a thin handwritten one", "two"]
    _, vocab = C.tokenize(caps)
    torch.manual_seed(0)
    clip = C.CLIPModel(vocab, dim=8, width=4).eval()
    c = clip.token_condition(caps)
    assert c.shape == (2, 6, 16)
    norms = c.norm(dim=-1)
    assert torch.allclose(norms[0, :4], torch.full((4,), 16 ** 0.5), atol=1e-4) and (norms[0, 4:] == 0).all()
    assert torch.allclose(norms[1, 0], torch.tensor(16 ** 0.5), atol=1e-4) and (norms[1, 1:] == 0).all()
    # the same word gives the same vector wherever it stands
    assert torch.allclose(clip.token_condition(["two a"])[0, 0], c[1, 0])
