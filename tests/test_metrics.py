"""FID/KID against independent references, and sanity checks of the shipped feature network."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from minidiff import data, metrics


def naive_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    for d in (1, 5, 20):
        a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
        s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        got = metrics.frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)))
        assert got == pytest.approx(naive_fid(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_1d_closed_form():
    # for 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    got = metrics.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]]))
    assert got == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)


def test_fid_from_features_zero_for_identical_and_singular_ok():
    f = torch.randn(50, 64, dtype=torch.float64)  # fewer samples than dims: singular covariance
    assert metrics.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)


def test_kid_unbiased_near_zero_for_same_distribution():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    m, s = metrics.kid_from_features(a, b, subsets=30, subset_size=200)
    assert abs(m) < 3 * s + 1e-3
    m2, _ = metrics.kid_from_features(a, b + 1.0, subsets=30, subset_size=200)
    assert m2 > 10 * abs(m)


def test_kid_matches_naive_double_loop():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    k = lambda x, y: (float(x @ y) / 3 + 1) ** 3
    m = 6
    naive = (sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
             + sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
             - 2 * sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / m**2)
    got, _ = metrics.kid_from_features(a, b, subsets=1, subset_size=6)  # a subset of all rows = all rows
    assert got == pytest.approx(naive, rel=1e-9)


@pytest.fixture(scope="module")
def mnist():
    return data.mnist5k("train"), data.mnist5k("test")


def test_feature_net_accuracy_as_stated(mnist):
    _, te = mnist
    acc = (metrics.predict_proba(te.x).argmax(1) == te.y).float().mean().item()
    info = metrics.feature_net_info()
    assert acc >= 0.97 and acc == pytest.approx(info["heldout_accuracy"], abs=0.002)
    path = metrics.resources.files("minidiff") / "assets" / metrics.WEIGHTS_FILE
    assert path.stat().st_size < 1_000_000


def test_fid_sanity_ordering(mnist):
    tr, te = mnist
    ref = metrics.Reference(te.x)
    real = metrics.fid(tr.x[:1000], ref)
    blurred = metrics.fid(metrics.gaussian_blur(tr.x[:1000], 1.0), ref)
    noise = metrics.fid(torch.randn(1000, 1, 28, 28).clamp(-1, 1), ref)
    assert real < 0.1 * blurred and blurred < 0.5 * noise, (real, blurred, noise)
    km_real, _ = metrics.kid(tr.x[:1000], ref)
    km_noise, _ = metrics.kid(torch.randn(1000, 1, 28, 28).clamp(-1, 1), ref)
    assert km_real < 0.05 * km_noise


def test_classifier_confidence(mnist):
    tr, _ = mnist
    c = metrics.classifier_confidence(tr.x[:500])
    assert c["mean_max_prob"] > 0.95 and c["class_entropy"] > 2.2
    ones = tr.x[tr.y == 1][:100]
    assert metrics.classifier_confidence(ones)["class_entropy"] < 0.3


def test_gaussian_blur():
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1.0
    y = metrics.gaussian_blur(x, 1.5)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5)  # mass preserved away from borders
    ii = torch.arange(15.0)
    var = (y[0, 0].sum(0) * (ii - 7) ** 2).sum()
    assert var.item() == pytest.approx(1.5**2, rel=0.02)
    assert torch.equal(metrics.gaussian_blur(x, 0), x)


def test_metric_bad_inputs():
    with pytest.raises(ValueError, match="28x28"):
        metrics.fid(torch.zeros(4, 1, 32, 32), torch.zeros(4, 1, 32, 32))
    with pytest.raises(ValueError, match="nan or inf"):
        metrics.fid(torch.full((4, 1, 28, 28), float("nan")), torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="at least 2 rows"):
        metrics.fid_from_features(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="1 channel"):
        metrics.fid(torch.zeros(4, 3, 28, 28), torch.zeros(4, 3, 28, 28))


def test_class_agreement_by_hand(monkeypatch):
    from minidiff import metrics

    # a fake classifier: the predicted class is written in the first pixel
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    req = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])
    x = torch.zeros(8, 1, 28, 28)
    x[:, 0, 0, 0] = pred.float() / 2 - 1      # images stay in [-1, 1]
    monkeypatch.setattr(metrics, "predict_proba",
                        lambda x: torch.nn.functional.one_hot(((x[:, 0, 0, 0] + 1) * 2).round().long(), 10).float() * 0.9 + 0.01)
    out = metrics.class_agreement(x, req)
    assert out["accuracy"] == pytest.approx(6 / 8)
    # requested 0: predictions {0, 0, 1, 1} -> entropy log 2; requested 2: all 2 -> 0; mean = log(2) / 2
    assert out["within_class_entropy"] == pytest.approx(math.log(2) / 2)
    assert out["mean_max_prob"] == pytest.approx(0.91)
    with pytest.raises(ValueError, match=r"requested must be int64 labels of shape \(8,\)"):
        metrics.class_agreement(x, req[:3])


def test_reference_holds_the_statistics_and_gives_the_old_numbers(mnist, monkeypatch):
    """metrics.Reference replaces the hidden feature cache (issue 17, item 4): the reference set's features, mean and
    covariance are computed once, and the FID/KID of a fixed set equal those of the old API (fid of two image tensors,
    whose numbers on this split were 11.1616 and 583.50 before the change)."""
    tr, te = mnist
    x = tr.x[:1000]
    assert not hasattr(metrics, "_FEATURE_CACHE")
    calls = []
    real_net = metrics.feature_net

    def counting(device):
        calls.append(device)
        return real_net(device)

    monkeypatch.setattr(metrics, "feature_net", counting)
    ref = metrics.Reference(te.x)
    assert len(calls) == 1 and len(ref) == te.x.shape[0] and ref.features.dtype == torch.float64
    f_ref = metrics.extract_features(te.x)
    assert torch.equal(ref.features, f_ref)
    assert torch.equal(ref.mean, f_ref.mean(0)) and torch.equal(ref.cov, torch.cov(f_ref.T))
    calls.clear()
    value = metrics.fid(x, ref)
    assert len(calls) == 1                                      # only the samples go through the network
    assert value == metrics.fid(x, te.x) == metrics.fid_from_features(metrics.extract_features(x), f_ref)
    assert value == ref.fid(x) and metrics.fid(ref, x) == pytest.approx(value, rel=1e-5)
    assert value == pytest.approx(11.1616, rel=1e-3)
    k = metrics.kid(x, ref, subsets=20)
    assert k == metrics.kid(x, te.x, subsets=20) and k[0] == pytest.approx(583.50, rel=1e-3)
    te_x = te.x.clone()
    ref2 = metrics.Reference(te_x)
    te_x.mul_(0.5)                                              # the statistics do not follow the images
    assert metrics.fid(x, ref2) == value
    with pytest.raises(ValueError, match="at least 2"):
        metrics.Reference(te.x[:1])


def test_fid_interval_covers_the_true_distance_of_gaussians():
    """Gaussian 'features' N(delta, I) against the exact reference N(0, I): the true FID is |delta|^2 (no covariance
    term). The bias-corrected bootstrap interval of a 2,000-sample draw covers it in most draws, its point is the plain
    FID, and it narrows as the sample grows (about 1/sqrt(n))."""
    d = 4
    delta = torch.tensor([1.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    true = float(delta.pow(2).sum())
    mean, cov = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    covered, widths = 0, {}
    for seed in range(20):
        f = torch.randn(2000, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + delta
        point, lo, hi = metrics.fid_interval_from_features(f, mean, cov, n_boot=200, seed=seed)
        assert point == pytest.approx(metrics.frechet_distance(f.mean(0), torch.cov(f.T), mean, cov))
        assert lo <= point <= hi
        covered += lo <= true <= hi
    assert covered >= 15, f"a 95% interval covered the true FID in only {covered} of 20 draws"
    for n in (250, 4000):
        f = torch.randn(n, d, generator=torch.Generator().manual_seed(99), dtype=torch.float64) + delta
        _, lo, hi = metrics.fid_interval_from_features(f, mean, cov, n_boot=200)
        widths[n] = hi - lo
    assert 2.5 < widths[250] / widths[4000] < 6.5      # sqrt(16) = 4


def test_fid_interval_on_images_and_its_errors():
    ref = metrics.Reference(torch.rand(300, 1, 28, 28) * 2 - 1)
    x = torch.rand(200, 1, 28, 28) * 2 - 1
    point, lo, hi = metrics.fid_interval(x, ref, n_boot=50)
    assert point == pytest.approx(metrics.fid(x, ref)) and lo <= point <= hi
    assert metrics.fid_interval(x, ref, n_boot=50) == (point, lo, hi)          # seeded
    with pytest.raises(TypeError, match="metrics.Reference"):
        metrics.fid_interval(x, x)
    with pytest.raises(ValueError, match="level"):
        metrics.fid_interval(x, ref, level=1.5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        metrics.fid_interval_from_features(torch.zeros(1, 4), torch.zeros(4), torch.eye(4))


def test_fid_interval_bias_correction_where_the_chapters_use_it():
    """64-d features, 300 samples (the chapters' regime): resampling repeats rows and shrinks the covariance, so raw
    bootstrap FIDs sit far above the FID itself (here about twice); the corrected interval contains the FID and is
    about as wide as the spread of the FID over fresh draws of the same size (the thing it stands in for)."""
    d, n = 64, 300
    mean, cov = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    fresh = torch.tensor([metrics.frechet_distance(f.mean(0), torch.cov(f.T), mean, cov) for f in
                          (torch.randn(n, d, generator=torch.Generator().manual_seed(100 + k), dtype=torch.float64)
                           for k in range(40))])
    fresh_width = float(fresh.quantile(0.975) - fresh.quantile(0.025))
    for seed in range(3):
        f = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        point, lo, hi = metrics.fid_interval_from_features(f, mean, cov, n_boot=100, seed=seed)
        g = torch.Generator().manual_seed(seed)
        raw = [metrics.frechet_distance(*(lambda x: (x.mean(0), torch.cov(x.T)))(f[torch.randint(n, (n,), generator=g)]),
                                        mean, cov) for _ in range(20)]
        assert min(raw) > point, "the uncorrected bootstrap should sit above the FID here (else this test tests nothing)"
        assert lo <= point <= hi
        assert 0.33 < (hi - lo) / fresh_width < 3


def test_chamfer_distance_matches_a_double_loop_and_sees_missing_coverage():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(7, 2, generator=g), torch.randn(11, 2, generator=g)
    near = [min(math.dist(a, b) for b in ref.tolist()) for a in x.tolist()]
    cover = [min(math.dist(a, b) for a in x.tolist()) for b in ref.tolist()]
    want = 0.5 * (sum(near) / len(near) + sum(cover) / len(cover))
    assert abs(metrics.chamfer_distance(x, ref) - want) < 1e-5
    assert metrics.chamfer_distance(ref, ref) == 0.0
    far = torch.randn(2000, 2, generator=g) + 30.0      # many points away from the origin: no cancellation error
    assert metrics.chamfer_distance(far, far) == 0.0
    # samples piled on one data point are all "near the data", but leave the rest uncovered
    line = torch.stack([torch.linspace(0, 9, 10), torch.zeros(10)], 1)
    collapsed = line[:1].repeat(10, 1)
    assert metrics.chamfer_distance(collapsed, line) == pytest.approx(0.5 * 4.5)
    with pytest.raises(ValueError, match="same dimension"):
        metrics.chamfer_distance(x, torch.randn(3, 3))
    with pytest.raises(ValueError, match="non-empty"):
        metrics.chamfer_distance(x[:0], ref)
