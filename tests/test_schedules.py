"""Noise schedules against naive, independent formulas."""

import math

import pytest
import torch

from minidiff.diffusion.schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule


def test_linear_betas_endpoints_and_spacing():
    b = linear_betas(1000)
    assert b.shape == (1000,) and b.dtype == torch.float64
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    d = b.diff()
    assert torch.allclose(d, d[0].expand_as(d), atol=1e-12)


def test_cosine_betas_match_paper_formula_step_by_step():
    T, s = 50, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    naive = [min(1 - (f(t + 1) / f(0)) / (f(t) / f(0)), 0.999) for t in range(T)]
    assert torch.allclose(cosine_betas(T), torch.tensor(naive, dtype=torch.float64), atol=1e-12)


def test_cosine_betas_clipped_at_0999_and_abar_follows_f():
    T = 1000
    b = cosine_betas(T)
    assert b.max().item() == pytest.approx(0.999)
    abar = torch.cumprod(1 - b, 0)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    # away from the clipped last step, abar_t equals f(t+1)/f(0)
    for t in (0, 10, 500, 900):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_noise_schedule_quantities_against_loops():
    b = linear_betas(30, 1e-3, 0.2)
    s = NoiseSchedule(b)
    prod, prev = 1.0, 1.0
    for t in range(30):
        beta = b[t].item()
        prod *= 1 - beta
        assert s.alphas[t].item() == pytest.approx(1 - beta, rel=1e-6)
        assert s.alphas_cumprod[t].item() == pytest.approx(prod, rel=1e-5)
        assert s.alphas_cumprod_prev[t].item() == pytest.approx(prev, rel=1e-5)
        assert s.snr[t].item() == pytest.approx(prod / (1 - prod), rel=1e-5)
        assert s.posterior_variance[t].item() == pytest.approx((1 - prev) / (1 - prod) * beta, rel=1e-5, abs=1e-12)
        prev = prod
    for name in ("betas", "alphas", "alphas_cumprod", "snr"):
        v = getattr(s, name)
        assert v.ndim == 1 and v.shape[0] == 30


def test_snr_decreasing_and_abar_in_unit_interval():
    for s in (make_schedule("linear", 200), make_schedule("cosine", 200)):
        assert (s.snr.diff() < 0).all()
        assert ((s.alphas_cumprod > 0) & (s.alphas_cumprod < 1)).all()


def test_make_schedule_linear_rescales_short_chains():
    s = make_schedule("linear", 100)
    assert s.betas[0].item() == pytest.approx(1e-3) and s.betas[-1].item() == pytest.approx(0.2)


def test_to_moves_and_casts():
    s = NoiseSchedule(cosine_betas(10)).to("cpu", torch.float64)
    assert s.betas.dtype == torch.float64


def test_to_returns_a_new_schedule_and_leaves_the_original_alone():
    s = make_schedule("cosine", 10)
    before = {k: getattr(s, k).clone() for k in ("betas", "alphas_cumprod", "snr", "posterior_variance")}
    s2 = s.to("cpu", torch.float64)
    assert s.dtype == torch.float32 and s.alphas_cumprod.dtype == torch.float32 and s.betas.dtype == torch.float32
    assert s2 is not s and s2.dtype == torch.float64 and s2.alphas_cumprod.dtype == torch.float64
    for k, v in before.items():
        assert torch.equal(getattr(s, k), v), k
    s3 = s.to(torch.float16)                                  # dtype alone, positionally, as torch.Tensor.to takes it
    assert s3.snr.dtype == torch.float16 and s.snr.dtype == torch.float32 and s2.snr.dtype == torch.float64
    assert s.to("cpu") is s and s.to(dtype=torch.float32) is s    # nothing to change: the schedule itself
    torch.testing.assert_close(s2.alphas_cumprod, s.table64("alphas_cumprod"), rtol=0, atol=0)
    with pytest.raises(TypeError, match="floating-point"):
        s.to("cpu", torch.int64)
    with pytest.raises(ValueError, match="unknown schedule table"):
        s.table64("nope")


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([0.1, 1.0]), "in \\(0, 1\\)"),
    (torch.tensor([0.0, 0.1]), "in \\(0, 1\\)"),
    (torch.tensor([[0.1, 0.2]]), "1-D"),
    (torch.tensor([]), "non-empty"),
    (torch.tensor([0.1, float("nan")]), "nan"),
])
def test_noise_schedule_rejects_bad_betas(bad, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule(bad)


def test_bad_schedule_parameters():
    with pytest.raises(ValueError, match="T must be a positive int"):
        linear_betas(0)
    with pytest.raises(ValueError, match="beta_start"):
        linear_betas(10, 0.1, 0.01)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("quadratic", 10)
