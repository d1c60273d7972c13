"""SSL losses and evaluation against slow loops written from the papers' formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from minidiff.ssl import evaluate, moco
from minidiff.ssl.simclr import nt_xent


def slow_nt_xent(z1, z2, tau):
    """Chen et al. 2020, eq. 1, summed over all 2N anchors, one term at a time."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2
    sim = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(z[i], z[j]) / tau) / denom)
    return total / n2


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nt_xent_matches_slow_loop(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(slow_nt_xent(z1, z2, tau), rel=1e-5)


def test_nt_xent_at_init_near_log_2n_minus_1():
    g = torch.Generator().manual_seed(0)
    n = 64
    z1, z2 = torch.randn(n, 2048, generator=g), torch.randn(n, 2048, generator=g)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(math.log(2 * n - 1), abs=0.02)


def test_nt_xent_rewards_aligned_views():
    z = torch.randn(16, 32)
    assert nt_xent(z, z + 0.01 * torch.randn_like(z), 0.1) < nt_xent(z, torch.randn_like(z), 0.1) - 1.0


def test_nt_xent_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        nt_xent(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), 0.0)


def test_momentum_update_endpoints_and_formula():
    q = [torch.randn(3, 3), torch.randn(3)]
    k = [torch.randn(3, 3), torch.randn(3)]
    k0 = [t.clone() for t in k]
    moco.momentum_update(k, q, m=1.0)
    assert all(torch.equal(a, b) for a, b in zip(k, k0))  # m=1 keeps
    moco.momentum_update(k, q, m=0.9)
    assert all(torch.allclose(a, 0.9 * b + 0.1 * c) for a, b, c in zip(k, k0, q))
    moco.momentum_update(k, q, m=0.0)
    assert all(torch.equal(a, c) for a, c in zip(k, q))  # m=0 copies
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        moco.momentum_update(k, q, m=1.5)


def test_queue_fifo_order_wraparound_and_size():
    """MoCo's ring buffer is the one queue (issue 17, item 4: the unused KeyQueue is gone)."""
    from minidiff.nets.resnet import ConvNet
    assert not hasattr(moco, "KeyQueue")
    m = moco.MoCo(ConvNet(1, 4), proj_hidden=8, proj_dim=1, queue_size=5)
    m.queue.zero_()

    def keys():  # oldest first
        p = int(m.queue_ptr)
        return torch.cat([m.queue[p:], m.queue[:p]]).flatten().tolist()

    m._enqueue(torch.tensor([[1.0], [2.0]]))
    assert keys() == [0, 0, 0, 1, 2] and int(m.queue_ptr) == 2
    m._enqueue(torch.tensor([[3.0], [4.0], [5.0]]))
    assert keys() == [1, 2, 3, 4, 5]
    m._enqueue(torch.tensor([[6.0], [7.0]]))  # wraps: the two oldest leave
    assert keys() == [3, 4, 5, 6, 7] and int(m.queue_ptr) == 2
    m._enqueue(torch.arange(8.0, 16.0)[:, None])  # more than the size: only the newest 5 stay
    assert keys() == [11, 12, 13, 14, 15]


def test_infonce_matches_formula():
    g = torch.Generator().manual_seed(0)
    q, k, neg = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    tau = 0.2
    qn, kn, nn_ = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(neg, dim=1)
    want = 0.0
    for i in range(4):
        pos = math.exp(float(qn[i] @ kn[i]) / tau)
        negs = sum(math.exp(float(qn[i] @ nn_[j]) / tau) for j in range(10))
        want += -math.log(pos / (pos + negs))
    assert moco.infonce(q, k, neg, tau).item() == pytest.approx(want / 4, rel=1e-5)


def test_knn_matches_naive_weighted_vote():
    g = torch.Generator().manual_seed(0)
    tr, ytr = torch.randn(50, 6, generator=g), torch.randint(0, 3, (50,), generator=g)
    te = torch.randn(7, 6, generator=g)
    pred = evaluate.knn_predict(tr, ytr, te, k=5, t=0.1, batch_size=3)
    for i in range(7):
        sims = F.cosine_similarity(te[i][None], tr)
        top = sims.topk(5).indices
        votes = torch.zeros(3)
        for j in top:
            votes[ytr[j]] += math.exp(sims[j] / 0.1)
        assert pred[i].item() == votes.argmax().item()


def test_probes_separate_informative_from_random_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    centers = torch.randn(4, 10, generator=g) * 3
    good = centers[y] + torch.randn(400, 10, generator=g)
    bad = torch.randn(400, 10, generator=g)
    sub = evaluate.low_label_subset(y[:200], per_class=10)
    assert len(sub) == 40 and (torch.bincount(y[sub]) == 10).all()
    for f, lo, hi in ((good, 0.9, 1.01), (bad, 0.0, 0.45)):
        assert lo <= evaluate.knn_accuracy(f[sub], y[sub], f[200:], y[200:], k=20) <= hi
        assert lo <= evaluate.linear_probe(f[sub], y[sub], f[200:], y[200:]) <= hi
    with pytest.raises(ValueError, match="fewer than per_class"):
        evaluate.low_label_subset(y[:8], per_class=5)


def test_low_label_probe_on_separable_and_on_uninformative_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(30)
    centres = torch.randn(10, 16, generator=g) * 5
    feats = centres[y] + 0.1 * torch.randn(300, 16, generator=g)
    for method in ("linear", "knn"):
        acc, sd = evaluate.low_label_probe(feats[:200], y[:200], feats[200:], y[200:], per_class=2, repeats=3,
                                           method=method)
        assert acc == 1.0 and sd == 0.0
    noise = torch.randn(300, 16, generator=g)
    acc, _ = evaluate.low_label_probe(noise[:200], y[:200], noise[200:], y[200:], per_class=5, repeats=3)
    assert acc < 0.3  # chance is 0.1: nothing to learn from noise
    with pytest.raises(ValueError, match="method"):
        evaluate.low_label_probe(feats, y, feats, y, method="svm")
