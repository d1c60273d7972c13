"""DDIM, score matching and SDEs against closed forms on Gaussian data N(mu, s^2 I).

For x0 ~ N(mu, s^2 I) and x_t = m_t x0 + std_t z, the marginal is N(m_t mu, (m_t^2 s^2 + std_t^2) I) and its score is
-(x - m_t mu) / (m_t^2 s^2 + std_t^2). Sampling with that exact score must return the data's mean and variance;
tolerances are 5 standard errors of the sample statistics (mean: s / sqrt(n); variance: s^2 sqrt(2 / (n - 1)))
plus, where stated, a discretisation allowance computed from the sampler.
"""

import math

import pytest
import torch

from minidiff.diffusion import ddim, ddpm, score as sc, sde as S
from minidiff.diffusion.schedules import NoiseSchedule, linear_betas

MU, SD = 0.8, 0.5
N = 20_000


def tol_mean(n=N, s=SD):
    return 5 * s / math.sqrt(n)


def tol_var(n=N, s=SD):
    return 5 * s ** 2 * math.sqrt(2 / (n - 1))


def gaussian_score(sde):
    def score(x, t):
        m, std = sde.marginal_prob(torch.ones_like(x), t)    # m_t broadcast, std_t (B,)
        var = m ** 2 * SD ** 2 + std.view(-1, *([1] * (x.ndim - 1))) ** 2
        return -(x - m * MU) / var
    return score


def exact_prior(sde, n, seed):
    """x_1 from the exact marginal p_1 of Gaussian data (the samplers' prior N(0, std_1^2) differs from it by the
    data mean, which for VE survives to t = 0 scaled by sqrt(SD^2 + sigma_min^2) / sqrt(SD^2 + sigma_max^2))."""
    m, std = sde.marginal_prob(torch.ones(1, 1), torch.tensor([1.0]))
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed))
    return m * MU + (m ** 2 * SD ** 2 + std ** 2).sqrt() * z


SDES = [S.VPSDE(), S.subVPSDE(), S.VESDE(sigma_min=0.01, sigma_max=10.0)]
IDS = ["VP", "subVP", "VE"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_a_simulated_forward_sde(sde):
    # integrate dx = f dt + g dw from x0 = 1 with fine Euler-Maruyama steps; compare with marginal_prob at t = 0.5, 1
    g = torch.Generator().manual_seed(0)
    n, steps = 20_000, 1000
    x = torch.ones(n, 1)
    ts = torch.linspace(0, 1, steps + 1)
    for i in range(steps):
        t, dt = ts[i], ts[i + 1] - ts[i]
        f, gg = sde.drift_diffusion(x, t.expand(n))
        x = x + f * dt + gg[:, None] * dt.sqrt() * torch.randn(n, 1, generator=g)
        if i + 1 in (steps // 2, steps):
            mean, std = sde.marginal_prob(torch.ones(1, 1), ts[i + 1].view(1))
            assert abs(x.mean() - mean.item()) < 5 * std.item() / math.sqrt(n) + 2e-3
            assert abs(x.std() / std.item() - 1) < 5 * math.sqrt(1 / (2 * n)) + 5e-3


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_sde_euler_maruyama_recovers_gaussian_data(sde):
    x = S.euler_maruyama(gaussian_score(sde), sde, (N, 1), steps=1000, generator=torch.Generator().manual_seed(1),
                         x_T=exact_prior(sde, N, 1))
    assert abs(x.mean() - MU) < tol_mean() + 0.01
    assert abs(x.var() - SD ** 2) < tol_var() + 0.01


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_probability_flow_ode_recovers_gaussian_data(sde):
    x = S.ode_sample(gaussian_score(sde), sde, (N, 1), steps=100, method="rk4", x_T=exact_prior(sde, N, 2))
    assert abs(x.mean() - MU) < tol_mean()
    assert abs(x.var() - SD ** 2) < tol_var()


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_predictor_corrector_recovers_gaussian_data(sde):
    x = S.pc_sample(gaussian_score(sde), sde, (N, 1), steps=300, snr=0.16,
                    generator=torch.Generator().manual_seed(3), x_T=exact_prior(sde, N, 3))
    assert abs(x.mean() - MU) < tol_mean() + 0.01
    assert abs(x.var() - SD ** 2) < tol_var() + 0.01


@pytest.mark.parametrize("sde", SDES[:2] + [S.VESDE(0.01, 5.0)], ids=IDS)
@pytest.mark.parametrize("hutchinson", [False, True])
def test_pf_ode_log_likelihood_matches_the_analytic_density(sde, hutchinson):
    g = torch.Generator().manual_seed(4)
    x0 = MU + SD * torch.randn(400, 2, generator=g)
    eps = 1e-5
    def marginal(t):
        m, std = sde.marginal_prob(torch.ones(1, 1), torch.tensor([t]))
        return torch.distributions.Normal(m.item() * MU, math.sqrt(m.item() ** 2 * SD ** 2 + std.item() ** 2))

    # the exact p_1 at t = 1, so that only the integration is tested (the model's prior N(0, std_1^2) differs)
    logp = S.log_likelihood(sde, gaussian_score(sde), x0, n_steps=60, method="rk4", eps=eps, hutchinson=hutchinson,
                            n_probes=4, generator=g, prior_logp=lambda x1: marginal(1.0).log_prob(x1).sum(1))
    exact = marginal(eps).log_prob(x0).sum(1)
    if not hutchinson:
        assert torch.allclose(logp, exact, atol=2e-3), (logp - exact).abs().max()
    else:  # unbiased: the average error over 400 points is within 5 standard errors
        err = logp - exact
        assert abs(err.mean()) < 5 * err.std() / math.sqrt(len(err)) + 2e-3


def test_one_rk4_step_serves_the_sampler_and_the_likelihood():
    """One ODE step in sde.py (issue 17, item 4): ode_sample and log_likelihood both call _ode_step, whose RK4 rule is
    exact to 4th order (checked on dy/dt = y, also on a tuple state)."""
    import inspect
    src = inspect.getsource(S)
    assert src.count("2 * b + 2 * c") == 1 and "2 * k2" not in src and "_ode_step(" in inspect.getsource(S.log_likelihood)
    y0 = torch.tensor([1.0], dtype=torch.float64)
    for h in (0.1, -0.1):
        y = S._ode_step(lambda y, t: y, y0, torch.tensor(0.0), h, "rk4")
        assert abs(float(y) - math.exp(h)) < 1e-6 and abs(float(y) - math.exp(h)) > 1e-10
        ya, yb = S._ode_step(lambda y, t: (y[0], 2 * y[1]), (y0, y0), torch.tensor(0.0), h, "rk4")
        assert torch.equal(ya, y) and abs(float(yb) - math.exp(2 * h)) < 1e-5


def test_bits_per_dim_conversion():
    # uniform density on [-1, 1]^D is exactly 8 bits per dimension for 256 levels
    d = 10
    logp = torch.tensor([-d * math.log(2.0)])
    assert S.bits_per_dim(logp, d).item() == pytest.approx(8.0)


def test_ddpm_discrete_marginals_agree_with_the_vp_sde():
    # beta_i = beta(t_i) / N with N = 1000: DDPM's linear schedule (1e-4 .. 0.02) is the VP SDE with (0.1, 20)
    T = 1000
    sched = NoiseSchedule(linear_betas(T))
    vp = S.VPSDE(0.1, 20.0)
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    m = vp.log_mean_coeff(t).exp()
    assert torch.allclose(sched._f64["alphas_cumprod"].sqrt(), m, atol=2e-3)
    assert torch.allclose(sched._f64["sqrt_one_minus_alphas_cumprod"], (1 - m ** 2).sqrt(), atol=2e-3)


def test_sde_bad_inputs():
    vp = S.VPSDE()
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        vp.marginal_prob(x, torch.full((3,), 1.5))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        vp.drift_diffusion(x, torch.zeros(4))
    with pytest.raises(TypeError, match="float tensor"):
        vp.drift_diffusion(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        S.VPSDE(20.0, 0.1)
    with pytest.raises(ValueError, match="method"):
        S.ode_sample(gaussian_score(vp), vp, (2, 1), method="midpoint")


# ---------------------------------------------------------------------------------------------------------------
# DDIM


def exact_eps(schedule):
    """E[eps | x_t] for Gaussian data: -sqrt(1 - abar) * score."""
    def eps(x, t):
        a = schedule.alphas_cumprod.to(torch.float64)[t].view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        var = a * SD ** 2 + 1 - a
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / var
    return eps


def test_ddim_eta1_consecutive_steps_is_the_ddpm_ancestral_step():
    sched = NoiseSchedule(linear_betas(100))
    g = torch.Generator().manual_seed(0)
    x, e, z = (torch.randn(8, 3, generator=g) for _ in range(3))
    for t in (99, 50, 1):
        tt = torch.full((8,), t)
        a = ddim.ddim_step(sched, e, x, tt, t - 1, eta=1.0, noise=z)
        b = ddpm.p_sample_step(sched, e, x, tt, noise=z)
        assert torch.allclose(a, b, atol=1e-5)
    # and the last step (t = 0 -> clean) adds no noise for any eta
    t0 = torch.zeros(8, dtype=torch.long)
    assert torch.allclose(ddim.ddim_step(sched, e, x, t0, -1, eta=1.0, noise=z),
                          ddim.ddim_step(sched, e, x, t0, -1, eta=0.0), atol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_all_steps_recovers_gaussian_data(eta):
    sched = NoiseSchedule(linear_betas(1000))
    x = ddim.ddim_sample(exact_eps(sched), sched, (N, 1), steps=1000, eta=eta,
                         generator=torch.Generator().manual_seed(5), progress=False)
    assert abs(x.mean() - MU) < tol_mean()
    assert abs(x.var() - SD ** 2) < tol_var() + 2e-3


def test_ddim_few_steps_variance_matches_its_linear_gaussian_propagation():
    # with the exact eps, each eta=0 step is linear in x: x_s - m_s mu = k (x_t - m_t mu), k computed by hand
    sched = NoiseSchedule(linear_betas(1000))
    seq = ddim.timesteps(1000, 10).tolist()
    abar = sched._f64["alphas_cumprod"]
    var = 1.0  # x_T ~ N(0, 1) vs the model's marginal at T-1: the mean offset is negligible (abar ~ 4e-5)
    for t, s in zip(reversed(seq), reversed([-1] + seq[:-1])):
        at = abar[t].item()
        as_ = 1.0 if s < 0 else abar[s].item()
        vt = at * SD ** 2 + 1 - at
        k = (math.sqrt(as_ * at) * SD ** 2 + math.sqrt((1 - as_) * (1 - at))) / vt
        var = k ** 2 * var
    x = ddim.ddim_sample(exact_eps(sched), sched, (N, 1), steps=10, generator=torch.Generator().manual_seed(6),
                         progress=False)
    assert abs(x.var() - var) < 5 * var * math.sqrt(2 / (N - 1))
    assert var < SD ** 2  # with 10 steps DDIM shrinks the variance of this Gaussian (Cauchy-Schwarz)


def test_ddim_encode_then_decode_reconstructs():
    sched = NoiseSchedule(linear_betas(1000))
    x0 = MU + SD * torch.randn(500, 2, generator=torch.Generator().manual_seed(7))
    errs = []
    for steps in (20, 200):
        xT = ddim.ddim_encode(exact_eps(sched), sched, x0, steps=steps, progress=False)
        rec = ddim.ddim_sample(exact_eps(sched), sched, x0.shape, steps=steps, x_T=xT, progress=False)
        errs.append((rec - x0).abs().mean().item())
    # a first-order method: ten times the steps, about a tenth of the error
    assert errs[1] < 0.15 * errs[0] and errs[1] < 0.02, errs


def test_timesteps_spacings_and_bad_inputs():
    u = ddim.timesteps(1000, 50)
    q = ddim.timesteps(1000, 50, "quadratic")
    for s in (u, q):
        assert len(s) == 50 and s[-1] == 999 and (s[1:] > s[:-1]).all()
    assert (q[1:] - q[:-1])[0] < (u[1:] - u[:-1])[0]  # quadratic is denser near t = 0
    with pytest.raises(ValueError, match="spacing"):
        ddim.timesteps(10, 5, "log")
    with pytest.raises(ValueError, match=r"in \[1, T=10\]"):
        ddim.timesteps(10, 11)
    sched = NoiseSchedule(linear_betas(10))
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="t_prev must be smaller"):
        ddim.ddim_step(sched, x, x, 3, 5)
    with pytest.raises(ValueError, match="eta"):
        ddim.ddim_step(sched, x, x, 3, 2, eta=2.0)


# ---------------------------------------------------------------------------------------------------------------
# score matching and Langevin


def test_gaussian_mixture_score_is_the_gradient_of_its_log_density():
    gm = sc.GaussianMixture([[0.0, 0.0], [3.0, 1.0]], [0.5, 1.0], [0.3, 0.7])
    x = torch.randn(50, 2).requires_grad_(True)
    for sigma in (0.0, 0.7):
        grad, = torch.autograd.grad(gm.log_prob(x, sigma).sum(), x)
        assert torch.allclose(gm.score(x.detach(), sigma), grad, atol=1e-5)


def test_dsm_minimiser_is_the_analytic_score():
    # the best linear score model a x + b under DSM at noise sigma is the score of N(MU, SD^2 + sigma^2)
    g = torch.Generator().manual_seed(8)
    sigma = 0.6
    x0 = MU + SD * torch.randn(50_000, 1, generator=g)
    z = torch.randn(x0.shape, generator=g)
    params = torch.zeros(2, requires_grad=True)
    model = lambda x, s: params[0] * x + params[1]
    sigmas = torch.tensor([sigma])
    opt = torch.optim.LBFGS([params], lr=1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = sc.dsm_loss(model, x0, sigmas, noise=z, sigma_idx=torch.zeros(len(x0), dtype=torch.long))
        loss.backward()
        return loss

    opt.step(closure)
    v = SD ** 2 + sigma ** 2
    assert params[0].item() == pytest.approx(-1 / v, rel=0.02)
    assert params[1].item() == pytest.approx(MU / v, rel=0.03)


def test_eps_score_relation_roundtrip():
    e = torch.randn(4, 3)
    std = torch.rand(4, 1) + 0.1
    assert torch.allclose(sc.score_to_eps(sc.eps_to_score(e, std), std), e)
    with pytest.raises(ValueError, match="positive"):
        sc.eps_to_score(e, 0.0)


def test_langevin_samples_a_gaussian_with_the_known_ula_bias():
    # ULA on N(m, v) with step a has stationary variance v / (1 - a / (4 v)) (computed by hand)
    v, a = SD ** 2, 0.02
    x = sc.langevin(lambda y: -(y - MU) / v, torch.zeros(N, 1), a, 600, generator=torch.Generator().manual_seed(9))
    expected = v / (1 - a / (4 * v))
    assert abs(x.mean() - MU) < tol_mean()
    assert abs(x.var() - expected) < 5 * expected * math.sqrt(2 / (N - 1))


def test_annealed_langevin_recovers_gaussian_data():
    sigmas = sc.geometric_sigmas(5.0, 0.01, 10)
    score = lambda x, s: -(x - MU) / (SD ** 2 + s.view(-1, 1) ** 2)
    start = 5.0 * torch.randn(N, 1, generator=torch.Generator().manual_seed(10))
    x = sc.annealed_langevin(score, sigmas, (N, 1), x_T=start, eps=2e-5, steps=200,
                             generator=torch.Generator().manual_seed(11), denoise=False)
    assert abs(x.mean() - MU) < tol_mean() + 0.01
    assert abs(x.var() - SD ** 2) < tol_var() + 0.01
    with pytest.raises(ValueError, match="decreasing"):
        sc.annealed_langevin(score, sigmas.flip(0), x.shape, x_T=x)


def test_mixture_responsibilities_and_component_stds():
    gm = sc.GaussianMixture([[0.0], [4.0]], [0.5, 1.0], [0.3, 0.7])
    x = torch.tensor([[0.0], [4.0], [2.0]])
    r = gm.responsibilities(x, 0.5)
    # by hand: weights times normal densities with stds sqrt(s_k^2 + 0.25), normalised
    stds = torch.tensor([0.5, 1.0]) ** 2 + 0.25
    dens = torch.tensor([0.3, 0.7]) * torch.distributions.Normal(torch.tensor([0.0, 4.0]), stds.sqrt()).log_prob(x).exp()
    assert torch.allclose(r, dens / dens.sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(gm.component_stds(0.5), stds.sqrt())
