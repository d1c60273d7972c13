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
