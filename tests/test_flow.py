"""Flow matching (minidiff.diffusion.flow) against independent references: finite differences for the path
derivatives, the VP SDE's marginals, Bayes' rule by quadrature for the optimal velocity of Gaussian data, the closed
form of a finite point set, the probability-flow ODE of chapter 07, and sampling statistics."""

import math

import pytest
import torch

from minidiff import metrics
from minidiff.data import TensorSampler
from minidiff.diffusion import flow, sde
from minidiff.nets import TimeMLP
from minidiff.train import TrainConfig, train

PATHS = flow.PATHS


@pytest.mark.parametrize("kind", PATHS)
def test_path_derivatives_match_finite_differences_and_the_ends(kind):
    p = flow.Path(kind)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    a, b, da, db = p.coefficients(t)
    ap, bp, _, _ = p.coefficients(t + h)
    am, bm, _, _ = p.coefficients(t - h)
    assert torch.allclose(da, (ap - am) / (2 * h), atol=1e-6)
    assert torch.allclose(db, (bp - bm) / (2 * h), atol=1e-6)
    a0, b0, _, _ = p.coefficients(torch.zeros(1, dtype=torch.float64))
    a1, b1, _, _ = p.coefficients(torch.ones(1, dtype=torch.float64))
    assert a0.item() == pytest.approx(1.0) and b0.item() == pytest.approx(0.0, abs=1e-12)
    assert a1.item() < 0.01 and b1.item() == pytest.approx(1.0, abs=1e-4)


def test_vp_path_is_the_vp_sde_marginal_and_linear_path_is_rectified_flow():
    t = torch.rand(64, dtype=torch.float64)
    x0 = torch.randn(64, 3, dtype=torch.float64)
    eps = torch.randn_like(x0)
    mean, std = sde.VPSDE(0.1, 20.0).marginal_prob(x0, t)
    assert torch.allclose(flow.interpolate("vp", x0, t, eps), mean + std[:, None] * eps, atol=1e-12)
    assert torch.allclose(flow.interpolate("linear", x0, t, eps), (1 - t)[:, None] * x0 + t[:, None] * eps)
    assert torch.allclose(flow.velocity_target("linear", x0, t, eps), eps - x0)
    # the target is the time derivative of the interpolant along one pair
    for kind in PATHS:
        h = 1e-6
        fd = (flow.interpolate(kind, x0, (t + h).clamp(max=1), eps)
              - flow.interpolate(kind, x0, (t - h).clamp(min=0), eps)) / (2 * h)
        inner = (t > 2 * h) & (t < 1 - 2 * h)
        assert torch.allclose(flow.velocity_target(kind, x0, t, eps)[inner], fd[inner], atol=1e-5), kind


def _bayes_velocity_1d(kind, mu, s, x, t):
    """E[da x0 + db eps | x_t = x] for x0 ~ N(mu, s^2), by quadrature over x0 (Bayes' rule, no Gaussian algebra)."""
    a, b, da, db = (float(c) for c in flow.Path(kind).coefficients(torch.tensor([t], dtype=torch.float64)))
    grid = torch.linspace(mu - 10 * s, mu + 10 * s, 40001, dtype=torch.float64)
    log_w = -0.5 * ((grid - mu) / s) ** 2 - 0.5 * ((x - a * grid) / b) ** 2
    w = (log_w - log_w.max()).exp()
    eps = (x - a * grid) / b
    return float(((da * grid + db * eps) * w).sum() / w.sum())


@pytest.mark.parametrize("kind", PATHS)
def test_gaussian_velocity_is_the_conditional_mean_by_quadrature(kind):
    mu, s = 0.7, 0.4
    v = flow.gaussian_velocity(kind, torch.tensor([mu], dtype=torch.float64), torch.tensor([[s * s]], dtype=torch.float64))
    for t in (0.1, 0.5, 0.9):
        for x in (-1.5, 0.2, 1.3):
            got = v(torch.tensor([[x]], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)).item()
            assert got == pytest.approx(_bayes_velocity_1d(kind, mu, s, x, t), rel=1e-6, abs=1e-8), (kind, t, x)


@pytest.mark.parametrize("kind,method,steps", [("linear", "euler", 400), ("linear", "heun", 40), ("cosine", "heun", 60)])
def test_sampling_the_exact_field_reproduces_the_gaussian_data(kind, method, steps):
    mean = torch.tensor([1.0, -0.5])
    A = torch.tensor([[0.6, 0.0], [0.5, 0.3]])
    cov = A @ A.T
    v = flow.gaussian_velocity(kind, mean, cov)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    x = flow.flow_sample(v, kind, (20000, 2), steps=steps, method=method, x_T=x1, progress=False)
    assert torch.allclose(x.mean(0), mean.double(), atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov.double(), atol=0.02)


def test_vp_velocity_from_eps_is_the_probability_flow_ode_of_chapter_07():
    mean, cov = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)
    vp = flow.Path("vp")
    x = torch.randn(32, 2, dtype=torch.float64)
    t = torch.rand(32, dtype=torch.float64) * 0.9 + 0.05
    a, b, _, _ = vp.coefficients(t)
    # the optimal eps-prediction of chapter 04 for Gaussian data: E[eps | x_t] = b (a^2 cov + b^2 I)^-1 (x - a mean)
    eps = torch.stack([b[i] * torch.linalg.solve(a[i] ** 2 * cov + b[i] ** 2 * torch.eye(2, dtype=torch.float64),
                                                 x[i] - a[i] * mean) for i in range(32)])
    v_eps = flow.velocity_from_eps(vp, eps, x, t)
    assert torch.allclose(v_eps, flow.gaussian_velocity(vp, mean, cov)(x, t), atol=1e-9)
    # and the probability-flow ODE f - g^2/2 * score, score = -eps / b (chapter 07)
    lookup = {round(float(ti), 12): i for i, ti in enumerate(t)}
    score = lambda y, tt: -eps[[lookup[round(float(ti), 12)] for ti in tt]] / b[[lookup[round(float(ti), 12)]
                                                                                   for ti in tt]][:, None]
    drift, _ = sde.VPSDE(0.1, 20.0).reverse(score, probability_flow=True).drift_diffusion(x, t)
    assert torch.allclose(v_eps, drift, atol=1e-9)


def test_points_velocity_matches_the_posterior_over_points_and_one_point_gives_straight_lines():
    pts = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, -1.5]], dtype=torch.float64)
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    got = flow.points_velocity("linear", pts)(x, t)
    for i in range(16):
        ti = float(t[i])
        dens = torch.stack([torch.distributions.MultivariateNormal((1 - ti) * p, ti ** 2 * torch.eye(2, dtype=torch.float64))
                            .log_prob(x[i]).exp() for p in pts])
        w = dens / dens.sum()
        want = sum(w[k] * ((x[i] - (1 - ti) * pts[k]) / ti - pts[k]) for k in range(3))
        assert torch.allclose(got[i], want, atol=1e-8)
    # one point: every path is a straight line, so one Euler step lands on it exactly
    one = pts[:1]
    start = torch.randn(8, 2, dtype=torch.float64)
    x, traj = flow.flow_sample(flow.points_velocity("linear", one), "linear", (8, 2), steps=1, x_T=start,
                               return_trajectory=True, progress=False)
    assert torch.allclose(x, one.expand(8, 2), atol=1e-12)
    _, traj10 = flow.flow_sample(flow.points_velocity("linear", one), "linear", (8, 2), steps=10, method="heun",
                                 x_T=start, return_trajectory=True, progress=False)
    assert flow.straightness(traj10).max() < 1e-13 and torch.allclose(flow.chord_ratio(traj10), torch.ones(8, dtype=torch.float64))
    # two points far apart: the paths bend (one Euler step lands between them, near their mean)
    two = torch.tensor([[3.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)
    x1, traj2 = flow.flow_sample(flow.points_velocity("linear", two), "linear", (256, 2), steps=50, method="heun",
                                 x_T=torch.randn(256, 2, dtype=torch.float64), return_trajectory=True, progress=False)
    assert (x1[:, 0].abs() - 3).abs().max() < 1e-3
    assert flow.straightness(traj2).mean() > 0.05 and flow.chord_ratio(traj2).mean() < 0.999


def test_straightness_is_liu_et_al_on_a_hand_made_bent_path():
    # an L-shaped path: (0,0) -> (1,0) -> (1,1) over t = 1 -> 0.5 -> 0 (constant speed 2 on each leg)
    traj = [(1.0, torch.tensor([[0.0, 0.0]])), (0.5, torch.tensor([[1.0, 0.0]])), (0.0, torch.tensor([[1.0, 1.0]]))]
    # chord velocity dx/dt = (1, 1) / (-1) = (-1, -1); legs: (-2, 0) and (0, -2); |diff|^2 = 2 on each leg
    # S = integral of |diff|^2 / d over time: (0.5 * 2 + 0.5 * 2) / 2 = 1
    assert flow.straightness(traj).item() == pytest.approx(1.0)
    assert flow.chord_ratio(traj).item() == pytest.approx(math.sqrt(2) / 2)


def test_flow_loss_is_the_textbook_formula_and_time_samplers_have_their_laws():
    net = TimeMLP(2, 16, 1, time_scale=1000.0)
    x0, eps = torch.randn(64, 2), torch.randn(64, 2)
    t = torch.rand(64)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * eps
    want = ((net(x_t, t) - (eps - x0)) ** 2).mean()
    assert flow.flow_loss(net, "linear", x0, t=t, noise=eps).item() == pytest.approx(want.item(), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    tl = flow.sample_times(200_000, "logit_normal", mean=0.3, std=0.8, generator=g)
    logit = (tl / (1 - tl)).log()
    assert logit.mean().item() == pytest.approx(0.3, abs=0.01) and logit.std().item() == pytest.approx(0.8, abs=0.01)
    tu = flow.sample_times(200_000, "uniform", generator=g)
    assert tu.min() >= 0 and tu.max() <= 1 and tu.mean().item() == pytest.approx(0.5, abs=0.005)
    # SD3's logit-normal times on the linear path are EDM's log-normal noise levels: log sigma = logit(t)
    assert torch.allclose(flow.sigma_of_t("linear", tl).log(), logit, atol=1e-4)


@pytest.mark.parametrize("kind", PATHS)
def test_x0_from_velocity_inverts_the_interpolant(kind):
    x0, eps = torch.randn(32, 1, 4, 4, dtype=torch.float64), torch.randn(32, 1, 4, 4, dtype=torch.float64)
    t = torch.rand(32, dtype=torch.float64) * 0.9 + 0.05
    x_t = flow.interpolate(kind, x0, t, eps)
    v = flow.velocity_target(kind, x0, t, eps)
    assert torch.allclose(flow.x0_from_velocity(kind, v, x_t, t), x0, atol=1e-9)


def test_edm_preconditioning_gives_unit_variance_input_and_target():
    sd = 0.5
    sigma = torch.tensor([0.02, 0.3, 1.0, 5.0, 40.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = flow.edm_preconditioning(sigma, sd)
    # x = y + sigma n with Var y = sd^2: Var(c_in x) = 1; the target F = (y - c_skip x) / c_out has variance 1
    var_in = c_in ** 2 * (sd ** 2 + sigma ** 2)
    var_target = ((1 - c_skip) ** 2 * sd ** 2 + c_skip ** 2 * sigma ** 2) / c_out ** 2
    assert torch.allclose(var_in, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(var_target, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(c_noise, sigma.log() / 4)
    assert torch.allclose(flow.edm_loss_weight(sigma, sd), (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2)
    s = flow.edm_sigmas(100_000, -1.2, 1.2, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.02) and s.log().std().item() == pytest.approx(1.2, abs=0.02)


def _moons_like(n, g):
    u = torch.rand(n, generator=g) * math.pi
    top = torch.rand(n, generator=g) < 0.5
    x = torch.where(top, torch.cos(u), 1 - torch.cos(u))
    y = torch.where(top, torch.sin(u), 0.5 - torch.sin(u))
    return torch.stack([x, y], 1) * 1.2 + 0.03 * torch.randn(n, 2, generator=g)


def test_flow_matching_learns_a_2d_distribution_and_reflow_straightens_it():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = _moons_like(4096, g)
    net = TimeMLP(2, 64, 2, time_scale=1000.0)
    run = train(net, lambda m, x: flow.flow_loss(m, "linear", x, time_sampling="uniform"),
                TensorSampler(data, batch_size=256, seed=0), TrainConfig(steps=600, lr=3e-3, warmup=30, ema_decay=0.99,
                                                                         progress=False, seed=0))
    # the best velocity that ignores x_t and t, the constant E[eps - x0], has loss mean_j (1 + Var x0_j)
    constant = (1 + data.var(0)).mean().item()
    last = sum(run.history["loss"][-50:]) / 50
    assert last < 0.85 * constant, (last, constant)
    noise = torch.randn(1000, 2, generator=g)
    samples, traj = flow.flow_sample(run.ema, "linear", (1000, 2), steps=20, method="heun", x_T=noise,
                                     return_trajectory=True, progress=False)
    assert metrics.chamfer_distance(samples, data) < 0.5 * metrics.chamfer_distance(noise, data)
    # one reflow round: couplings from the model's ODE, then train on them with the noise given
    x0, n0 = flow.reflow_couplings(run.ema, "linear", 4096, (2,), steps=20, method="heun", progress=False,
                                   generator=torch.Generator().manual_seed(1))
    assert x0.shape == n0.shape == (4096, 2)
    net2 = TimeMLP(2, 64, 2, time_scale=1000.0)
    net2.load_state_dict(run.ema.state_dict())
    run2 = train(net2, lambda m, b: flow.flow_loss(m, "linear", b[0], noise=b[1], time_sampling="uniform"),
                 TensorSampler(x0, n0, batch_size=256, seed=1), TrainConfig(steps=600, lr=1e-3, warmup=30,
                                                                            ema_decay=0.99, progress=False, seed=1))
    _, traj2 = flow.flow_sample(run2.ema, "linear", (1000, 2), steps=20, method="heun", x_T=noise,
                                return_trajectory=True, progress=False)
    assert flow.straightness(traj2).mean() < 0.5 * flow.straightness(traj).mean()
    # one Euler step of the reflowed model lands closer to the data than one step of the first model
    one = flow.flow_sample(run.ema, "linear", (1000, 2), steps=1, x_T=noise, progress=False)
    one2 = flow.flow_sample(run2.ema, "linear", (1000, 2), steps=1, x_T=noise, progress=False)
    assert metrics.chamfer_distance(one2, data) < 0.7 * metrics.chamfer_distance(one, data)


def test_bad_inputs_name_the_problem():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="path kind"):
        flow.Path("straight")
    with pytest.raises(TypeError, match="path must be"):
        flow.interpolate(3, x, torch.rand(4), x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flow.interpolate("linear", x, torch.full((4,), 1.5), x)
    with pytest.raises(ValueError, match="one time per example"):
        flow.interpolate("linear", x, torch.rand(3), x)
    with pytest.raises(TypeError, match="float tensor"):
        flow.interpolate("linear", x, torch.ones(4, dtype=torch.long), x)
    with pytest.raises(ValueError, match="same shape"):
        flow.flow_loss(lambda y, t: y, "linear", x, noise=torch.randn(4, 3))
    with pytest.raises(ValueError, match="time sampling"):
        flow.flow_loss(lambda y, t: y, "linear", x, time_sampling="beta")
    with pytest.raises(ValueError, match="shaped like x0"):
        flow.flow_loss(lambda y, t: y[:, :1], "linear", x)
    with pytest.raises(ValueError, match="method"):
        flow.flow_sample(lambda y, t: y, "linear", (4, 2), steps=2, method="rk4", progress=False)
    with pytest.raises(ValueError, match="velocity shaped like x_t"):   # (4, 1) would broadcast silently
        flow.flow_sample(lambda y, t: y[:, :1], "linear", (4, 2), steps=2, progress=False)
    with pytest.raises(ValueError, match="steps"):
        flow.flow_sample(lambda y, t: y, "linear", (4, 2), steps=0, progress=False)
    with pytest.raises(ValueError, match="a_t > 0"):
        flow.velocity_from_eps("linear", x, x, torch.ones(4))
    with pytest.raises(ValueError, match="strictly monotonic"):
        flow.straightness([(1.0, x), (1.0, x)])
    with pytest.raises(ValueError, match="sigma"):
        flow.edm_preconditioning(torch.zeros(3))
