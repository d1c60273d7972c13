"""Networks: shapes, the zero-initialised output, the sinusoidal embedding formula, clear errors."""

import math

import pytest
import torch

from minidiff.nets import TimeMLP, UNet, count_parameters, timestep_embedding


def test_timestep_embedding_matches_formula():
    t = torch.tensor([0, 1, 17, 999])
    dim = 8
    emb = timestep_embedding(t, dim)
    for k, tv in enumerate(t.tolist()):
        for i in range(dim // 2):
            w = 10000 ** (-i / (dim // 2))
            assert emb[k, i].item() == pytest.approx(math.cos(tv * w), abs=1e-4)
            assert emb[k, i + dim // 2].item() == pytest.approx(math.sin(tv * w), abs=1e-4)


@pytest.mark.parametrize("kw", [dict(base_channels=8, channel_mults=(1, 2), attention=False),
                                dict(base_channels=8, channel_mults=(1, 2, 2), attention=True),
                                dict(base_channels=16, channel_mults=(1, 2), attention=True, patch=2),
                                dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=2, num_classes=10)])
def test_unet_shapes_and_zero_output_at_init(kw):
    net = UNet(1, **kw)
    x = torch.randn(3, 1, 28, 28)
    out = net(x, torch.tensor([0, 5, 9]))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # conv_out is zero-initialised: the untrained net predicts 0
    # after a few gradient steps the output is no longer zero and depends on t
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        (net(x, torch.tensor([0, 5, 9])) - x * torch.tensor([0.0, 1.0, 2.0])[:, None, None, None]).pow(2).mean().backward()
        opt.step()
    a, b = net(x, torch.tensor([0, 0, 0])), net(x, torch.tensor([9, 9, 9]))
    assert a.abs().sum() > 0 and not torch.allclose(a, b)


def test_unet_rgb_32():
    net = UNet(3, 8, (1, 2, 2), attention=True)
    assert net(torch.randn(2, 3, 32, 32), torch.tensor([1, 2])).shape == (2, 3, 32, 32)


def test_unet_bad_inputs():
    net = UNet(1, 8, (1, 2, 2))
    with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\)"):
        net(torch.randn(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 1, 30, 30), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1]))
    with pytest.raises(ValueError, match="without num_classes"):
        net(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), y=torch.tensor([0, 1]))


def test_time_mlp():
    m = TimeMLP(2, 32, 2)
    assert m(torch.randn(5, 2), torch.arange(5)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        m(torch.randn(5, 3), torch.arange(5))
    with pytest.raises(ValueError, match=r"t must have shape \(5,\)"):
        m(torch.randn(5, 2), torch.arange(4))


def test_count_parameters_by_hand():
    lin = torch.nn.Linear(3, 4)
    assert count_parameters(lin) == 3 * 4 + 4
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 12 and count_parameters(lin, trainable_only=False) == 16


# ----------------------------------------------------------------------------- U-Net parts, configs and ablations

def _resblock_params(cin, cout, emb, scale_shift=True):
    k = 2 if scale_shift else 1
    return (2 * cin + 2 * cout) + (9 * cin * cout + cout) + (9 * cout * cout + cout) + (emb * k * cout + k * cout) \
        + ((cin * cout + cout) if cin != cout else 0)


def _tiny_unet_params(skips: bool, scale_shift: bool = True):
    """By hand, UNet(1, base=8, channel_mults=(1,), attention=False): time MLP (freq 32 -> 32 -> 32), conv_in, one
    down block, two middle blocks, two up blocks (inputs 16 with skips, 8 without), GroupNorm and conv_out."""
    emb, c = 32, 8
    time_mlp = (32 * emb + emb) + (emb * emb + emb)
    conv_in = 9 * 1 * c + c
    up_in = 2 * c if skips else c
    blocks = 3 * _resblock_params(c, c, emb, scale_shift) + 2 * _resblock_params(up_in, c, emb, scale_shift)
    out = 2 * c + (9 * c * 1 + 1)
    return time_mlp + conv_in + blocks + out


@pytest.mark.parametrize("skips,tc", [(True, "scale_shift"), (False, "scale_shift"), (True, "add")])
def test_unet_parameter_count_by_hand(skips, tc):
    net = UNet(1, 8, (1,), attention=False, skip_connections=skips, time_conditioning=tc)
    assert count_parameters(net) == _tiny_unet_params(skips, tc == "scale_shift")


def test_resblock_count_and_identity_at_init():
    from minidiff.nets.unet import ResBlock

    for cin, cout in [(8, 8), (8, 16)]:
        blk = ResBlock(cin, cout, 32)
        assert count_parameters(blk) == _resblock_params(cin, cout, 32)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(ResBlock(8, 8, 32)(x, torch.randn(2, 32)), x)   # zero-initialised second conv
    with pytest.raises(ValueError, match="time_conditioning"):
        ResBlock(8, 8, 32, time_conditioning="multiply")


def test_ablated_unets_run_and_differ_from_full():
    torch.manual_seed(0)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 40])
    outs = {}
    for name, kw in {"full": {}, "noskip": dict(skip_connections=False), "add": dict(time_conditioning="add")}.items():
        torch.manual_seed(0)
        net = UNet(1, 8, (1, 2), attention=True, **kw)
        for p in net.parameters():          # random weights everywhere (the zero init would hide the difference)
            torch.nn.init.normal_(p, std=0.05)
        outs[name] = net(x, t)
        assert outs[name].shape == x.shape
    assert not torch.allclose(outs["full"], outs["noskip"]) and not torch.allclose(outs["full"], outs["add"])


def test_without_skips_everything_passes_through_the_bottleneck():
    """Freeze the bottleneck (the middle block's output) to a constant: a U-Net without skips then gives the same
    output for any input, while the skip connections of the full U-Net still carry the input to the output."""
    t = torch.tensor([5])
    x1, x2 = torch.randn(1, 1, 28, 28), torch.randn(1, 1, 28, 28)
    for skips in (True, False):
        torch.manual_seed(0)
        net = UNet(1, 8, (1, 2), attention=False, skip_connections=skips)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        const = torch.randn(1, 16, 14, 14)
        net.mid[-1].register_forward_hook(lambda m, i, o: const)
        same = torch.allclose(net(x1, t), net(x2, t))
        assert same == (not skips)


def test_unet_configs_and_flops():
    from minidiff.nets import UNET_CONFIGS, count_flops, unet_config

    assert set(UNET_CONFIGS) >= {"UNet-XS", "UNet-S", "UNet-L"}
    kw = unet_config("UNet-S", num_classes=10)
    assert kw["base_channels"] == 32 and kw["num_classes"] == 10 and "num_classes" not in UNET_CONFIGS["UNet-S"]
    with pytest.raises(ValueError, match="unknown U-Net config 'UNet-Q'"):
        unet_config("UNet-Q")
    # FLOPs of a single 1x1 conv and a 3x3 conv against the textbook count (2 per multiply-add)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    assert count_flops(conv, torch.zeros(1, 4, 5, 5)) == 2 * 4 * 6 * 9 * 25
    # the U-Net with patch 2 on 28x28 costs less than a quarter... of patch 1 plus the attention term
    xin, tin = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)
    f1 = count_flops(UNet(1, **unet_config("UNet-XS", patch=1)), xin, tin)
    f2 = count_flops(UNet(1, **unet_config("UNet-XS")), xin, tin)
    assert 3.5 < f1 / f2 < 4.5


def test_image_mlp_is_a_time_mlp_on_flattened_pixels():
    """ImageMLP(x, t) must equal TimeMLP on x.flatten(1) with the same weights, reshaped: no hidden pixel structure."""
    from minidiff.nets import ImageMLP

    torch.manual_seed(0)
    net = ImageMLP((2, 3, 4), hidden=16, depth=2)
    for p in net.parameters():                       # the output layer starts at default init; perturb all anyway
        p.data.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(5, 2, 3, 4), torch.randint(0, 50, (5,))
    flat = TimeMLP(24, 16, 2)
    flat.load_state_dict(net.mlp.state_dict())
    assert torch.allclose(net(x, t), flat(x.reshape(5, 24), t).reshape(5, 2, 3, 4))
    assert count_parameters(net) == count_parameters(flat)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(5, 2, 4, 3), t)
    with pytest.raises(ValueError, match="shape"):
        ImageMLP((1, 28))


def test_unet_ablations_build_the_chapter_networks():
    from minidiff import config, recipes
    from minidiff.config.schema import UNetChapterConfig
    from minidiff.nets import ImageMLP

    C = config.get_profile("ci").unet
    nets = {name: build() for name, build in recipes.unet_ablations(C, (1, 28, 28)).items()}
    assert tuple(nets) == UNetChapterConfig.VARIANTS
    assert isinstance(nets["MLP"], ImageMLP) and nets["MLP"].mlp.dim == 784
    full = nets["full"]
    assert full.skip_connections and any(type(m).__name__ == "AttentionBlock" for m in full.modules())
    assert not any(type(m).__name__ == "AttentionBlock" for m in nets["no attention"].modules())
    assert not nets["no skips"].skip_connections
    assert not any(getattr(m, "scale_shift", False) for m in nets["additive time"].modules())
    assert any(getattr(m, "scale_shift", False) for m in full.modules())
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0, 10])
    for name, net in nets.items():
        assert net(x, t).shape == x.shape, name
