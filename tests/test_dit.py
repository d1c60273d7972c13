"""DiT: adaLN-Zero makes every block the identity at initialisation, patchify is exact, FLOPs by hand."""

import dataclasses

import pytest
import torch

from minidiff.nets import dit as D


def test_patchify_unpatchify_roundtrip_and_layout():
    x = torch.randn(2, 3, 8, 12)
    tok = D.patchify(x, 4)
    assert tok.shape == (2, 6, 48)
    assert torch.equal(D.unpatchify(tok, 4, 3, 8, 12), x)
    # token 1 is the patch in row 0, column 1, flattened as (row-in-patch, col-in-patch, channel)
    assert torch.equal(tok[0, 1].view(4, 4, 3), x[0, :, 0:4, 4:8].permute(1, 2, 0))
    with pytest.raises(ValueError, match="divisible"):
        D.patchify(torch.randn(1, 1, 10, 10), 4)


def test_every_block_is_the_identity_and_the_output_is_zero_at_init():
    torch.manual_seed(0)
    cfg = D.dit_config("DiT-Tiny/4", num_classes=10)
    net = D.DiT(cfg)
    x, t, y = torch.randn(3, 1, 28, 28), torch.randint(0, 1000, (3,)), torch.randint(0, 10, (3,))
    h = torch.randn(3, net.num_tokens, cfg.hidden)
    c = torch.randn(3, cfg.hidden)
    for blk in net.blocks:
        assert torch.equal(blk(h, c), h)
    assert torch.equal(net(x, t, y), torch.zeros_like(x))
    # after one gradient step the gates open and the output is no longer zero
    loss = (net(x, t, y) - torch.randn_like(x)).pow(2).mean()
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert net(x, t, y).abs().sum() > 0


def test_modulate_formula():
    x, sh, sc = torch.randn(2, 5, 4), torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(D.modulate(x, sh, sc), x * (1 + sc[:, None, :]) + sh[:, None, :])


def test_flops_against_a_hand_count():
    # DiT-Tiny/4 on 28x28x1: T = 49 tokens, d = 64, patch dim 16, MLP hidden 256, 2 blocks
    cfg = D.dit_config("DiT-Tiny/4")
    T, d, pd = 49, 64, 16
    qkv = 2 * T * d * 192          # x @ W_qkv
    scores = 2 * T * T * d         # q @ k^T over all heads
    mix = 2 * T * T * d            # softmax(...) @ v
    proj = 2 * T * d * d
    mlp = 2 * T * d * 256 + 2 * T * 256 * d
    embed, final = 2 * T * pd * d, 2 * T * d * pd
    assert D.dit_flops(cfg) == embed + 2 * (qkv + scores + mix + proj + mlp) + final
    # torch's FLOP counter sees the same linear layers plus the per-image conditioning MLPs (time embedding
    # 64->64->64, adaLN 64->384 per block, final adaLN 64->128); depending on the torch version it counts the
    # attention inside scaled_dot_product_attention or not
    from torch.utils.flop_counter import FlopCounterMode
    net = D.DiT(cfg)
    with FlopCounterMode(display=False) as fc:
        net(torch.randn(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    cond = 2 * 64 * 64 * 2 + 2 * (2 * 64 * 384) + 2 * 64 * 128
    attention = 2 * (scores + mix)
    assert fc.get_total_flops() in (D.dit_flops(cfg) + cond, D.dit_flops(cfg) - attention + cond)


def test_label_dropout_rate_and_null_label():
    torch.manual_seed(0)
    emb = D.LabelEmbedder(10, 8, dropout=0.3).train()
    y = torch.zeros(20_000, dtype=torch.long)
    out = emb(y)
    null = emb.table.weight[10]
    rate = (out == null).all(1).float().mean().item()
    assert abs(rate - 0.3) < 0.02
    emb.eval()
    assert not (emb(y) == null).all(1).any()
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        emb(torch.tensor([11]))


def test_dit_shapes_and_bad_inputs():
    net = D.DiT(D.dit_config("DiT-Tiny/2", input_size=8, in_channels=3))
    assert net(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="without num_classes"):
        net(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown DiT config"):
        D.dit_config("DiT-XXL/1")


def test_dit_names_tell_the_patch():
    """A name is a size and its patch ("DiT-S/2"), or a size alone with patch=...; a name and a patch that disagree
    are refused, naming the config that was meant (the course once ran "DiT-Tiny/4" with patch 7)."""
    for name, fields in D.DIT_CONFIGS.items():
        size, patch = name.split("/")
        assert fields == {**D.DIT_SIZES[size], "patch": int(patch)}
        assert D.dit_config(name).patch == int(patch)
    assert D.dit_config("DiT-Tiny/7") == D.dit_config("DiT-Tiny", patch=7) == D.dit_config("DiT-Tiny/7", patch=7)
    assert D.dit_config("DiT-Tiny/7").hidden == D.DIT_SIZES["DiT-Tiny"]["hidden"]
    with pytest.raises(ValueError, match="ask for 'DiT-Tiny/7'"):
        D.dit_config("DiT-Tiny/4", patch=7)
    with pytest.raises(ValueError, match="without a patch"):
        D.dit_config("DiT-Mini")
    for bad in ("DiT-S/0", "DiT-S/x", "DiT-S/", "S/2"):
        with pytest.raises(ValueError, match="unknown DiT config"):
            D.dit_config(bad)


@pytest.mark.parametrize("conditioning", ["adaln", "in-context", "cross-attention"])
def test_conditioning_variants_use_the_label_and_count_their_flops(conditioning):
    torch.manual_seed(0)
    cfg = D.dit_config("DiT-Tiny/4", num_classes=10, conditioning=conditioning)
    net = D.DiT(cfg).eval()
    # the zero-initialised final layer hides the blocks at init: open it to see the conditioning at work
    torch.nn.init.normal_(net.final.linear.weight, std=0.1)
    x, t = torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    a = net(x, t, torch.tensor([1, 1]))
    b = net(x, t, torch.tensor([2, 2]))
    assert a.shape == x.shape and (a - b).abs().max() > 1e-4, "the label must change the output"
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        net(x[:1], t[:1], torch.tensor([1]))
    ours = D.dit_flops(cfg)
    # the FLOP counter may or may not see attention inside SDPA; linear layers and conditioning MLPs it always sees
    assert 0.85 * ours < fc.get_total_flops() < 1.1 * ours


def test_unknown_conditioning():
    with pytest.raises(ValueError, match="conditioning must be one of"):
        D.DiT(D.dit_config("DiT-Tiny/4", conditioning="film"))


@pytest.mark.parametrize("name,gflops", [("DiT-S/2", 6.06), ("DiT-B/2", 23.01), ("DiT-L/2", 80.71), ("DiT-XL/2", 118.64)])
def test_flops_match_the_papers_table(name, gflops):
    # Peebles & Xie report "Gflops" counted as multiply-adds, for 256x256 images = 32x32x4 latents
    cfg = D.dit_config(name, input_size=32, in_channels=4)
    assert D.dit_flops(cfg) / 2 / 1e9 == pytest.approx(gflops, rel=0.01)


def test_label_dropouts_are_read_and_set_per_embedder():
    net = D.DiT(D.dit_config("DiT-Tiny/4", num_classes=10, class_dropout=0.25))
    assert D.label_dropouts(net) == [0.25] and net.num_classes == 10
    D.set_label_dropouts(net, 0.0)
    assert net.y_embed.dropout == 0.0
    D.set_label_dropouts(net, [0.25])
    assert net.y_embed.dropout == 0.25
    assert D.label_dropouts(D.DiT(D.dit_config("DiT-Tiny/4"))) == []     # unconditional: nothing to drop
    with pytest.raises(ValueError, match="1 label embedders, got 2"):
        D.set_label_dropouts(net, [0.1, 0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        D.set_label_dropouts(net, 1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        D.label_dropouts("not a model")


def _naive_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v, written out (Vaswani et al. 2017, eq. 1)."""
    w = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return w.softmax(-1) @ v


def test_attend_is_scaled_dot_product_attention_and_runs_fp32_under_cpu_bf16_autocast(monkeypatch):
    from minidiff.nets.embeddings import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 49, 32, generator=g) for _ in range(3))
    torch.testing.assert_close(attend(q, k, v), _naive_attention(q, k, v), atol=1e-5, rtol=1e-5)
    # bf16 inputs (what a Linear gives under CPU autocast): fp32 math inside, bf16 out, gradients reach the inputs
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    seen, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):                      # the dtype torch's attention kernel really receives
        seen.append(args[0].dtype)
        return sdpa(*args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(qb, kb, vb)
    assert seen == [torch.float32], "under CPU bf16 autocast the attention kernel must get fp32 inputs"
    assert out.dtype == torch.bfloat16
    ref = _naive_attention(*(t.detach().float() for t in (qb, kb, vb)))
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)   # only the final cast to bf16 rounds
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 and t.grad.abs().sum() > 0 for t in (qb, kb, vb))


def test_dit_trains_under_cpu_bf16_autocast_with_fp32_weights():
    net = D.DiT(D.dit_config("DiT-Tiny", patch=1, input_size=7, in_channels=4))
    x, t = torch.randn(8, 4, 7, 7), torch.randint(0, 1000, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
    assert out.shape == x.shape and out.dtype == torch.bfloat16
    torch.nn.functional.mse_loss(out.float(), x).backward()
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# ----------------------------------------------------------------------------- chapter 09's recipes

def test_dit_models_and_equal_compute_steps():
    """dit_models builds the four conditionings of the base size and the scaling sizes; dit_steps gives every
    conditioning the base model's compute (steps x forward FLOPs, to a step) and every size the same steps."""
    from minidiff import config, recipes
    from minidiff.nets import DiT, dit_flops

    C = config.get_profile("cpu").dit
    shape = (4, 7, 7)
    models = {name: build() for name, build in recipes.dit_models(C, shape).items()}
    assert list(models)[:4] == list(C.conditionings) and all(isinstance(m, DiT) for m in models.values())
    assert {f"{s}/{p}" for s, p in C.scaling} <= set(models)
    for c in C.conditionings:
        m = models[c]
        assert m.cfg.conditioning == c and m.cfg.hidden == models[f"{C.base}/{C.base_patch}"].cfg.hidden
        assert m.num_classes == 10 and m.cfg.in_channels == 4 and m.cfg.input_size == 7
    base_compute = C.steps * dit_flops(models["adaln-zero"].cfg)
    for c in C.conditionings:
        steps = recipes.dit_steps(C, c, shape)
        # one step more or fewer would be further from the base's compute
        assert all(abs(steps * dit_flops(models[c].cfg) - base_compute)
                   <= abs(s * dit_flops(models[c].cfg) - base_compute) for s in (steps - 1, steps + 1))
    assert recipes.dit_steps(C, "cross-attention", shape) < C.steps            # it costs more per step
    assert recipes.dit_steps(C, "adaln-zero", shape) == C.steps
    assert all(recipes.dit_steps(C, f"{s}/{p}", shape) == C.steps for s, p in C.scaling)
    x, t, y = torch.randn(2, *shape), torch.tensor([0, 999]), torch.tensor([3, 10])
    for name, m in models.items():
        assert m(x, t, y).shape == x.shape, name


def test_shared_autoencoder_is_trained_once_and_loaded_after(tmp_path, monkeypatch):
    """The first call trains (and caches) the autoencoder; a second call with equal settings loads the same weights
    without training; other settings are another entry. With the cache off, the caller's RNG state does not change
    the weights."""
    from minidiff import config, recipes

    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("MINIDIFF_PROFILE", "cpu")
    C = dataclasses.replace(config.get_profile("ci").dit, ae_steps=3, ae_width=8)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    torch.manual_seed(123)
    ae1, info1 = recipes.shared_autoencoder(C, x, progress=False)
    assert not info1["loaded"] and info1["steps"] == 3 and not ae1.training
    torch.manual_seed(456)
    ae2, info2 = recipes.shared_autoencoder(C, x, progress=False)
    assert info2["loaded"] and info2["steps"] == 3
    for (k, a), b in zip(ae1.state_dict().items(), ae2.state_dict().values()):
        assert torch.equal(a, b), k
    assert float(ae2.scale) != 1.0                   # the fitted latent scale came back with the weights
    _, info3 = recipes.shared_autoencoder(dataclasses.replace(C, ae_steps=4), x, progress=False)
    assert not info3["loaded"] and info3["steps"] == 4
    with pytest.raises(TypeError, match="autoencoder's settings"):
        recipes.shared_autoencoder(config.get_profile("ci").unet, x)
    # with the cache off it is trained each time, to the same weights whatever the caller's RNG state
    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", "off")
    torch.manual_seed(7)
    ae4, info4 = recipes.shared_autoencoder(C, x, progress=False)
    torch.manual_seed(8)
    torch.rand(5)
    ae5, info5 = recipes.shared_autoencoder(C, x, progress=False)
    assert not info4["loaded"] and not info5["loaded"]
    for (k, a), b in zip(ae4.state_dict().items(), ae5.state_dict().values()):
        assert torch.equal(a, b), k


def test_draw_splits_labels_with_the_batches():
    """draw() samples in batches with the labels split row by row (each batch's rows at every step), decodes and
    clamps."""
    from types import SimpleNamespace

    from minidiff import recipes
    from minidiff.diffusion import schedules

    seen = []

    def model(x, t, y):
        seen.append(y.clone())
        return x * 0 + y.view(-1, 1, 1, 1).float() / 10

    sched = schedules.make_schedule("cosine", 50)
    for sampler in ("ddim", "dpmpp_2m_sde"):
        sec = SimpleNamespace(sampler=sampler, sample_steps=3, prediction="eps")
        y = torch.arange(5)
        a = recipes.draw(sec, model, sched, (5, 1, 4, 4), model_kwargs={"y": y}, batch=2,
                         generator=torch.Generator().manual_seed(0), decode=lambda z: 2 * z)
        assert a.shape == (5, 1, 4, 4) and a.abs().max() <= 1
        assert len(seen) == 9 and [s.tolist() for s in seen[::3]] == [[0, 1], [2, 3], [4]]
        seen.clear()
    with pytest.raises(ValueError, match="section.sampler must be one of"):
        recipes.draw(SimpleNamespace(sampler="euler", sample_steps=3, prediction="eps"), model, sched, (2, 1, 4, 4),
                     model_kwargs={"y": torch.arange(2)})
