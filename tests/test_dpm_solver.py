"""DPM-Solver++(2M) against closed forms: the exact probability-flow ODE of Gaussian data, DDIM/DDPM as its
first-order members, second-order convergence, and the right marginal for the stochastic variant."""

import math

import pytest
import torch

from minidiff.diffusion import ddim
from minidiff.diffusion.dpm_solver import dpmpp_2m_sample, dpmpp_2m_step
from minidiff.diffusion.schedules import make_schedule

MU, S = 0.3, 0.5          # data distribution N(MU, S^2) per pixel


def gaussian_eps_model(schedule):
    """The exact epsilon predictor for N(MU, S^2) data: E[x0 | x_t] in closed form, converted to epsilon."""
    abar = schedule.alphas_cumprod.double()

    def model(x, t):
        a = abar[t].sqrt().reshape(-1, 1, 1, 1)
        sg = (1 - abar[t]).sqrt().reshape(-1, 1, 1, 1)
        x0 = MU + a * S ** 2 / (a ** 2 * S ** 2 + sg ** 2) * (x.double() - a * MU)
        return ((x.double() - a * x0) / sg).to(x.dtype)
    return model


def exact_ode_endpoint(schedule, x_T):
    """Along the probability-flow ODE of Gaussian data the standardised value (x_t - a_t MU) / sqrt(a_t^2 S^2 +
    s_t^2) is constant; the samplers end with the data prediction at t = 0, applied here to the exact x_0-step."""
    abar = schedule.alphas_cumprod.double()
    aT, sT = abar[-1].sqrt(), (1 - abar[-1]).sqrt()
    z = (x_T.double() - aT * MU) / (aT ** 2 * S ** 2 + sT ** 2).sqrt()
    a0, s0 = abar[0].sqrt(), (1 - abar[0]).sqrt()
    n0 = (a0 ** 2 * S ** 2 + s0 ** 2).sqrt()
    return MU + a0 * S ** 2 / n0 * z


@pytest.fixture(scope="module")
def setup():
    sched = make_schedule("cosine", 1000)
    x_T = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return sched, gaussian_eps_model(sched), x_T, exact_ode_endpoint(sched, x_T)


def test_ode_is_second_order_and_beats_ddim(setup):
    sched, model, x_T, ref = setup
    err, err_uniform = {}, {}
    for n in (10, 20, 40):
        x2m = dpmpp_2m_sample(model, sched, tuple(x_T.shape), steps=n, sde=False, x_T=x_T, progress=False)
        xd = ddim.ddim_sample(model, sched, tuple(x_T.shape), steps=n, x_T=x_T, spacing="quadratic", progress=False)
        err[n] = ((x2m - ref).abs().max().item(), (xd - ref).abs().max().item())
        x2u = dpmpp_2m_sample(model, sched, tuple(x_T.shape), steps=n, sde=False, x_T=x_T, spacing="uniform",
                              progress=False)
        err_uniform[n] = (x2u - ref).abs().max().item()
    for n in (10, 20, 40):
        assert err[n][0] < 0.5 * err[n][1], err          # closer to the exact ODE than DDIM on the same grid
    assert err[20][0] < 0.1 * err[20][1] and err[40][0] < 0.01 * err[40][1], err
    assert err[10][0] < 0.3 * err_uniform[10], (err, err_uniform)   # why the default grid is quadratic
    # halving the step size: error / ~4 for a second-order method, / ~2 for DDIM (first order)
    assert err[10][0] / err[20][0] > 3.0 and err[20][0] / err[40][0] > 3.0, err
    assert 1.5 < err[20][1] / err[40][1] < 2.6, err      # DDIM: first order
    assert err[40][0] < 1e-3, err


def test_first_order_steps_are_ddim_and_ddpm(setup):
    sched, model, x_T, _ = setup
    x = x_T.float()
    t, s = 800, 650
    tt = torch.full((x.shape[0],), t)
    eps = model(x, tt)
    abar = sched.alphas_cumprod[t].double()
    x0 = ((x.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt()).float()
    noise = torch.randn_like(x)
    ode = dpmpp_2m_step(sched, x0, x, tt, s, sde=False)
    sde = dpmpp_2m_step(sched, x0, x, tt, s, sde=True, noise=noise)
    torch.testing.assert_close(ode, ddim.ddim_step(sched, eps, x, tt, s, eta=0.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sde, ddim.ddim_step(sched, eps, x, tt, s, eta=1.0, noise=noise), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dpmpp_2m_step(sched, x0, x, tt, -1), x0)      # to the clean image: D itself


def test_sde_variant_has_the_data_marginal():
    sched = make_schedule("cosine", 1000)
    model = gaussian_eps_model(sched)
    x = dpmpp_2m_sample(model, sched, (4096, 1, 2, 2), steps=50, sde=True,
                        generator=torch.Generator().manual_seed(1), progress=False).double()
    n = x.numel()
    assert abs(x.mean().item() - MU) < 4 * S / math.sqrt(n)
    assert abs(x.std().item() / S - 1) < 0.03


def test_correction_uses_the_previous_prediction(setup):
    sched, _, x_T, _ = setup
    x = x_T.float()
    tt = torch.full((x.shape[0],), 500)
    d, d_prev = torch.zeros_like(x), torch.ones_like(x)
    with_prev = dpmpp_2m_step(sched, d, x, tt, 400, d_prev, 600, sde=False)
    without = dpmpp_2m_step(sched, d, x, tt, 400, sde=False)
    assert not torch.allclose(with_prev, without)
    with pytest.raises(ValueError, match="x0_before and t_before"):
        dpmpp_2m_step(sched, d, x, tt, 400, d_prev, None)
    with pytest.raises(ValueError, match="t_before must be larger"):
        dpmpp_2m_step(sched, d, x, tt, 400, d_prev, 300)
    with pytest.raises(ValueError, match="t_prev must be smaller"):
        dpmpp_2m_step(sched, d, x, tt, 600)
    with pytest.raises(ValueError, match="steps"):
        dpmpp_2m_sample(lambda x, t: x, sched, (2, 1, 2, 2), steps=0, progress=False)


@pytest.mark.parametrize("sde", [False, True])
def test_examples_stepping_to_the_clean_image_return_their_prediction(setup, sde):
    """A batch whose examples end at different steps: those going to t_prev = -1 get D itself (no correction, no
    noise, no nan from lambda = inf), the others the same update as on their own."""
    sched, _, x_T, _ = setup
    x = x_T[:8].float()
    g = torch.Generator().manual_seed(3)
    d, d_prev, z = (torch.randn(x.shape, generator=g) for _ in range(3))
    t = torch.tensor([40, 40, 40, 40, 300, 300, 300, 300])
    s = torch.tensor([-1, -1, -1, -1, 200, 200, 200, 200])
    tb = torch.tensor([80, 80, 80, 80, 400, 400, 400, 400])
    out = dpmpp_2m_step(sched, d, x, t, s, d_prev, tb, sde=sde, noise=z)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out[:4], d[:4])
    alone = dpmpp_2m_step(sched, d[4:], x[4:], t[4:], s[4:], d_prev[4:], tb[4:], sde=sde, noise=z[4:])
    torch.testing.assert_close(out[4:], alone)
