"""DDPM math against closed forms, textbook formulas and an analytic Gaussian case."""

import math

import pytest
import torch

from minidiff.diffusion import ddpm, schedules
from minidiff.diffusion.schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule


@pytest.fixture
def sched():
    return NoiseSchedule(linear_betas(1000))


def test_q_sample_formula(sched):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 3, generator=g)
    eps = torch.randn(8, 3, generator=g)
    t = torch.arange(0, 1000, 125)
    want = torch.stack([math.sqrt(sched.alphas_cumprod[i]) * x0[k] + math.sqrt(1 - sched.alphas_cumprod[i]) * eps[k]
                        for k, i in enumerate(t.tolist())])
    assert torch.allclose(ddpm.q_sample(sched, x0, t, eps), want, rtol=1e-5, atol=1e-6)   # float32 vs float64 formula


def test_closed_form_matches_iterated_chain(sched):
    """Push N copies of a point through the chain; mean and variance match q(x_t | x_0) within 5 standard errors."""
    N = 40_000
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((N, 1), 2.0, dtype=torch.float64)
    x = x0.clone()
    b = sched._f64["betas"]
    for t in range(300):
        x = (1 - b[t]).sqrt() * x + b[t].sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        if t in (4, 49, 299):
            abar = sched._f64["alphas_cumprod"][t]
            var = 1 - abar
            assert abs(x.mean() - abar.sqrt() * 2.0) < 5 * (var / N).sqrt()
            assert abs(x.var() - var) < 5 * var * math.sqrt(2 / (N - 1))


def test_loss_matches_naive_formula_for_each_target(sched):
    torch.manual_seed(0)
    x0 = torch.randn(16, 2)
    eps = torch.randn(16, 2)
    t = torch.randint(0, 1000, (16,))
    model = torch.nn.Linear(2, 2)
    wrapped = lambda x, tt: model(x)
    for pred in ("eps", "x0", "v"):
        loss = ddpm.ddpm_loss(wrapped, sched, x0, prediction=pred, t=t, noise=eps)
        total = 0.0
        for k in range(16):
            a = math.sqrt(sched.alphas_cumprod[t[k]]); s = math.sqrt(1 - sched.alphas_cumprod[t[k]])
            xt = a * x0[k] + s * eps[k]
            target = {"eps": eps[k], "x0": x0[k], "v": a * eps[k] - s * x0[k]}[pred]
            total += ((model(xt) - target) ** 2).sum().item()
        assert loss.item() == pytest.approx(total / 32, rel=1e-5)


def test_p_sample_step_equals_ho_eq11(sched):
    torch.manual_seed(0)
    x_t = torch.randn(10, 4)
    eps = torch.randn(10, 4)
    z = torch.randn(10, 4)
    t = torch.tensor([999, 700, 500, 300, 100, 50, 10, 3, 1, 0])
    out = ddpm.p_sample_step(sched, eps, x_t, t, noise=z)
    for k, i in enumerate(t.tolist()):
        alpha, abar, beta = sched.alphas[i].item(), sched.alphas_cumprod[i].item(), sched.betas[i].item()
        abar_prev = sched.alphas_cumprod[i - 1].item() if i > 0 else 1.0
        sigma = math.sqrt((1 - abar_prev) / (1 - abar) * beta)
        want = (x_t[k] - beta / math.sqrt(1 - abar) * eps[k]) / math.sqrt(alpha) + sigma * z[k]
        assert torch.allclose(out[k], want, atol=1e-4), i
    # no noise at the last step
    assert torch.equal(ddpm.p_sample_step(sched, eps[-1:], x_t[-1:], t[-1:], noise=z[-1:]),
                       ddpm.p_sample_step(sched, eps[-1:], x_t[-1:], t[-1:], noise=torch.zeros(1, 4)))


def test_parameterisations_give_the_same_step(sched):
    x0 = torch.randn(6, 3); eps = torch.randn(6, 3); t = torch.tensor([900, 500, 200, 50, 5, 0]); z = torch.randn(6, 3)
    x_t = ddpm.q_sample(sched, x0, t, eps)
    v = ddpm.target_for("v", sched, x0, eps, t)
    a = ddpm.p_sample_step(sched, eps, x_t, t, noise=z, prediction="eps")
    b = ddpm.p_sample_step(sched, x0, x_t, t, noise=z, prediction="x0")
    c = ddpm.p_sample_step(sched, v, x_t, t, noise=z, prediction="v")
    assert torch.allclose(a, b, atol=1e-3) and torch.allclose(a, c, atol=1e-3)


def test_clip_x0_only_when_asked(sched):
    x_t = torch.full((1, 1), 5.0); t = torch.tensor([10]); out = torch.zeros(1, 1)
    x0_hat, _ = ddpm.predict_x0_eps(sched, out, x_t, t)
    assert x0_hat.item() > 1  # the unclipped estimate is outside [-1, 1]
    unclipped = ddpm.p_sample_step(sched, out, x_t, t, noise=torch.zeros(1, 1))
    clipped = ddpm.p_sample_step(sched, out, x_t, t, noise=torch.zeros(1, 1), clip_x0=True)
    assert clipped.item() < unclipped.item()


def test_sampling_with_exact_eps_recovers_gaussian_data():
    """Data N(mu, s^2): the optimal eps-predictor is E[eps | x_t] = sigma_t (x_t - a_t mu) / (a_t^2 s^2 + sigma_t^2).
    Ancestral sampling with it must reproduce the data mean and variance."""
    mu, s = 1.5, 0.5
    sched = NoiseSchedule(linear_betas(1000))

    def oracle(x, t):
        a = sched.alphas_cumprod[t].sqrt()[:, None]
        sig = (1 - sched.alphas_cumprod[t]).sqrt()[:, None]
        return sig * (x - a * mu) / (a**2 * s**2 + sig**2)

    N = 20_000
    x = ddpm.sample(oracle, sched, (N, 1), generator=torch.Generator().manual_seed(0), progress=False)
    # statistical tolerance: 5 standard errors, plus 1% for the discretisation of the reverse process
    assert abs(x.mean().item() - mu) < 5 * s / math.sqrt(N) + 0.01
    assert abs(x.var().item() - s**2) < 5 * s**2 * math.sqrt(2 / (N - 1)) + 0.01 * s**2


def test_sample_returns_trajectory_and_progresses_to_t0():
    sched = make_schedule("cosine", 20)
    model = lambda x, t: torch.zeros_like(x)
    x, traj = ddpm.sample(model, sched, (4, 2), return_trajectory=True, progress=False)
    assert x.shape == (4, 2) and traj[0][0] == 20 and traj[-1][0] == 0
    assert torch.equal(traj[-1][1], x)


def test_bad_inputs_raise_clear_errors(sched):
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        ddpm.q_sample(sched, x0, torch.tensor([0, 1, 2, 1000]))
    with pytest.raises(TypeError, match="integer"):
        ddpm.q_sample(sched, x0, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        ddpm.q_sample(sched, x0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        ddpm.q_sample(sched, x0, torch.tensor([0, 1, 2, 3]), torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating-point"):
        ddpm.q_sample(sched, x0.long(), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="prediction must be one of"):
        ddpm.ddpm_loss(lambda x, t: x, sched, x0, prediction="score")
    with pytest.raises(ValueError, match="shaped like x0"):
        ddpm.ddpm_loss(lambda x, t: x[:, :1], sched, x0)
    with pytest.raises(TypeError, match="NoiseSchedule"):
        ddpm.q_sample(cosine_betas(10), x0, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="tuple of positive ints"):
        ddpm.sample(lambda x, t: x, sched, (0, 2), progress=False)


# ----------------------------------------------------------------------------- loss by time step, train_ddpm

def test_loss_by_timestep_against_hand_computation():
    from minidiff.diffusion.ddpm import loss_by_timestep

    sched = schedules.NoiseSchedule(schedules.linear_betas(20))
    x0 = torch.randn(64, 1, 4, 4)
    zero = lambda x, t: torch.zeros_like(x)          # noqa: E731
    # the zero model's eps-loss is E[eps^2] over the fixed noise draw, the same at every t
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    got = loss_by_timestep(zero, sched, x0, [0, 7, 19], seed=3, batch_size=10)
    assert torch.allclose(got, torch.full((3,), noise.pow(2).mean().item()), atol=1e-5)
    # the identity "x_t" model for x0-prediction: error = x_t - x0, computed by hand with q_sample
    ident = lambda x, t: x                            # noqa: E731
    got = loss_by_timestep(ident, sched, x0, [0, 19], prediction="x0", seed=3)
    for j, tv in enumerate([0, 19]):
        t = torch.full((64,), tv, dtype=torch.long)
        want = (ddpm.q_sample(sched, x0, t, noise) - x0).pow(2).mean().item()
        assert got[j].item() == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match=r"ts must be a non-empty list of time steps in \[0, 19\]"):
        loss_by_timestep(zero, sched, x0, [20])


def test_train_ddpm_learns_and_drops_conditions():
    from minidiff.diffusion.ddpm import loss_by_timestep
    from minidiff.nets import TimeMLP
    from minidiff.recipes import train_ddpm
    from minidiff.train import TrainConfig

    torch.manual_seed(0)
    sched = schedules.make_schedule("linear", 50)
    x = torch.randn(2048, 2) * 0.3 + torch.tensor([1.0, -1.0])
    net = TimeMLP(2, 64, 2)
    ts = [5, 25, 45]
    before = loss_by_timestep(net, sched, x[:512], ts)
    run = train_ddpm(net, sched, x, cfg=TrainConfig(steps=300, lr=3e-3, ema_decay=None, progress=False), batch_size=128)
    after = loss_by_timestep(run.model, sched, x[:512], ts)
    assert bool((after < 0.7 * before).all()), (before, after)

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.num_classes = 5
            self.seen = []

        def forward(self, x, t, y):
            self.seen.append(y.clone())
            return self.lin(x)

    rec = Recorder()
    y = torch.randint(0, 5, (2048,))
    train_ddpm(rec, sched, x, y, cfg=TrainConfig(steps=40, ema_decay=None, progress=False), batch_size=256, p_uncond=0.3)
    seen = torch.cat(rec.seen)
    assert abs((seen == 5).float().mean().item() - 0.3) < 0.03     # null label = model.num_classes, rate honoured
    with pytest.raises(ValueError, match="same number of rows"):
        train_ddpm(rec, sched, x, y[:10], cfg=TrainConfig(steps=1, progress=False), batch_size=8)
    for bad in (1.5, -0.1, "0.1", True):
        with pytest.raises(ValueError, match="p_uncond"):
            train_ddpm(rec, sched, x, y, cfg=TrainConfig(steps=1, progress=False), batch_size=8, p_uncond=bad)


@pytest.mark.parametrize("gamma", [0.5, 5.0, 1e6])
def test_min_snr_makes_every_target_the_same_x0_error(gamma):
    """Min-SNR-gamma (Hang et al. 2023): with a network whose outputs all imply the same x0 estimate, the weighted
    eps, x0 and v losses all equal min(SNR_t, gamma) * ||x0 - x0_hat||^2, computed here from the textbook formulas
    (alpha-bar from the cosine schedule's definition, no schedule tables)."""
    T = 1000
    sched = make_schedule("cosine", T)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, 1, 4, 4, generator=g)
    x0_hat = torch.randn(6, 1, 4, 4, generator=g)
    noise = torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 10, 200, 500, 900, 999])

    def abar(i):                                  # Nichol & Dhariwal eq. 17, clipped betas as in cosine_betas
        f = lambda s: math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2
        out = 1.0
        for k in range(i + 1):
            out *= 1 - min(1 - f(k + 1) / f(k), 0.999)
        return out

    want = 0.0
    outs = {"eps": [], "x0": [], "v": []}
    for k, i in enumerate(t.tolist()):
        a, s = math.sqrt(abar(i)), math.sqrt(1 - abar(i))
        x_t = a * x0[k] + s * noise[k]
        eps_hat = (x_t - a * x0_hat[k]) / s
        outs["eps"].append(eps_hat)
        outs["x0"].append(x0_hat[k])
        outs["v"].append(a * eps_hat - s * x0_hat[k])
        snr = a * a / (s * s)
        want += min(snr, gamma) * (x0[k] - x0_hat[k]).pow(2).mean().item() / len(t)
    for prediction, out in outs.items():
        out = torch.stack(out)
        got = ddpm.ddpm_loss(lambda x, tt: out, sched, x0, prediction=prediction, t=t, noise=noise,
                             weighting="min_snr", snr_gamma=gamma)
        assert got.item() == pytest.approx(want, rel=2e-3), prediction
    # without weighting the eps loss is the plain mean squared error (Ho et al. eq. 14)
    plain = ddpm.ddpm_loss(lambda x, tt: torch.stack(outs["eps"]), sched, x0, t=t, noise=noise)
    assert plain.item() == pytest.approx((torch.stack(outs["eps"]) - noise).pow(2).mean().item(), rel=1e-5)


def test_loss_weight_errors_and_values():
    sched = make_schedule("cosine", 100)
    t = torch.arange(100)
    assert torch.equal(ddpm.loss_weight(sched, t), torch.ones(100))
    w = ddpm.loss_weight(sched, t, "eps", "min_snr", 5.0)
    assert w.max() <= 1 + 1e-6 and w[-1] == pytest.approx(1.0)      # noisy steps (SNR < 5) keep weight 1
    assert w[0] < 0.05                                              # the nearly clean ones are damped
    with pytest.raises(ValueError, match="weighting must be one of"):
        ddpm.ddpm_loss(lambda x, tt: x, sched, torch.zeros(2, 1, 4, 4), weighting="minsnr")
    with pytest.raises(ValueError, match="snr_gamma must be > 0"):
        ddpm.loss_weight(sched, t, "eps", "min_snr", 0.0)
