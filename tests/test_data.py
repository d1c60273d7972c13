"""Datasets: offline sets, the torchvision path on files the test writes, download failures and the fallback."""

import gzip
import struct
import warnings

import numpy as np
import pytest
import torch

from minidiff import data


def test_mnist5k_split_is_fixed_disjoint_and_complete():
    tr, te = data.mnist5k("train"), data.mnist5k("test")
    assert tr.x.shape == (4000, 1, 28, 28) and te.x.shape == (1000, 1, 28, 28)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert tr.x.min() >= -1 and tr.x.max() <= 1 and tr.x.min() == -1 and tr.x.max() == 1
    assert torch.equal(data.mnist5k("train").x, tr.x)  # deterministic
    # disjoint: no held-out image appears in the training split (compare exact pixel rows)
    key = lambda x: {bytes(r) for r in ((x.flatten(1) + 1) * 127.5).round().to(torch.uint8).numpy()}
    assert not (key(tr.x) & key(te.x))
    assert set(tr.y.tolist()) == set(range(10)) and set(te.y.tolist()) == set(range(10))


def test_digits():
    d = data.digits("train")
    assert d.x.shape[1:] == (1, 8, 8) and d.x.min() >= -1 and d.x.max() <= 1
    assert len(d) + len(data.digits("test")) == 1797


@pytest.mark.parametrize("name", data.TOY_2D)
def test_toy_2d(name):
    x = data.toy_2d(name, 2000, seed=1)
    assert x.shape == (2000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert 0.3 < x.std(0).min() and x.std(0).max() < 2.5
    assert torch.equal(x, data.toy_2d(name, 2000, seed=1))


def test_eight_gaussians_has_eight_modes():
    x = data.toy_2d("eight_gaussians", 4000)
    angles = torch.atan2(x[:, 1], x[:, 0])
    modes = torch.round(angles / (2 * np.pi / 8)) % 8
    assert set(modes.long().tolist()) == set(range(8))


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown toy distribution"):
        data.toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="positive int"):
        data.toy_2d("moons", 0)
    with pytest.raises(ValueError, match="split must be"):
        data.mnist5k("val")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_images("imagenet")


# ------------------------------------------------------------------ torchvision path on files written here

def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(header + arr.tobytes())


def _fake_mnist(root, folder, n_train=12, n_test=5):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.mark.parametrize("fn, folder", [(data.mnist, "MNIST"), (data.fashion_mnist, "FashionMNIST")])
def test_torchvision_mnist_like_from_local_files(tmp_path, fn, folder):
    _fake_mnist(tmp_path, folder)
    tr = fn("train", root=tmp_path, download=False)
    te = fn("test", root=tmp_path, download=False)
    assert tr.x.shape == (12, 1, 28, 28) and te.x.shape == (5, 1, 28, 28)
    assert tr.x.min() >= -1 and tr.x.max() <= 1 and tr.y.tolist() == [i % 10 for i in range(12)]
    assert len(tr.classes) == 10


def test_torchvision_cifar10_from_local_files(tmp_path, monkeypatch):
    import pickle

    import torchvision

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # the real archive is checked against md5 sums; our hand-written files cannot match them
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    tr = data.cifar10("train", root=tmp_path, download=False)
    assert tr.x.shape == (15, 3, 32, 32) and tr.classes[0] == "c0"
    assert tr.x.min() >= -1 and tr.x.max() <= 1


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(data.DatasetUnavailable, match="could not load torchvision MNIST.*mnist5k"):
        data.mnist("train", root=tmp_path, download=False)


def _failing_download(monkeypatch):
    import torchvision

    def boom(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", boom)


def test_failed_download_message_and_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path))
    _failing_download(monkeypatch)
    with pytest.raises(data.DatasetUnavailable, match="MNIST.*download attempted.*name resolution"):
        data.mnist("train")
    with pytest.warns(UserWarning, match="Falling back to MNIST-5k"):
        d = data.load_images("mnist", "train", profile="cpu")
    assert d.name == "mnist5k" and len(d) == 4000
    with pytest.raises(data.DatasetUnavailable):  # gpu profile: no silent switch
        data.load_images("mnist", "train", profile="gpu")


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path


def test_tensor_sampler_epochs_and_state():
    x = torch.arange(10).float()
    s = data.TensorSampler(x, batch_size=5, seed=0)
    epoch = torch.cat([next(s), next(s)])
    assert sorted(epoch.tolist()) == list(range(10))  # one epoch sees every item once
    state = s.state_dict()
    a = [next(s) for _ in range(5)]
    s2 = data.TensorSampler(x, batch_size=5, seed=99)
    s2.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(a, [next(s2) for _ in range(5)]))
    xs, ys = next(data.TensorSampler(x, x * 2, batch_size=3))
    assert torch.equal(ys, xs * 2)
    with pytest.raises(ValueError, match="empty dataset"):
        data.TensorSampler(torch.zeros(0, 2), batch_size=2)
    with pytest.raises(ValueError, match="same first dimension"):
        data.TensorSampler(torch.zeros(3), torch.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.TensorSampler(x, batch_size=0)


def test_smoke_runs_never_download_and_use_offline_stand_ins(monkeypatch, capsys):
    import torchvision

    def no_torchvision(*args, **kwargs):
        raise AssertionError("torchvision dataset constructed")

    for cls in ("MNIST", "FashionMNIST", "CIFAR10"):
        monkeypatch.setattr(torchvision.datasets, cls, no_torchvision)
    monkeypatch.setenv("MINIDIFF_SMOKE", "1")
    for name in ("mnist", "fashion_mnist"):
        d = data.load_images(name, "test", profile="gpu")
        assert d.x.shape == (1000, 1, 28, 28) and torch.equal(d.x, data.mnist5k("test").x)
    c = data.load_images("cifar10", "train", profile="gpu")
    assert c.x.shape == (4000, 3, 32, 32) and c.x.dtype == torch.float32 and len(c.classes) == 10
    assert c.x.min() >= -1 and c.x.max() <= 1
    assert torch.equal(c.y, data.mnist5k("train").y)                  # each image is its digit: labels mean something
    assert (c.x[:, 0] - c.x[:, 1]).abs().mean() > 0.1                  # coloured, not grey
    assert torch.equal(c.x, data.cifar10("train", download=False).x)   # seeded; download=False changes nothing
    assert data.cifar10("test").x.shape == (1000, 3, 32, 32)
    out = capsys.readouterr().out
    assert "MINIDIFF_SMOKE=1: torchvision CIFAR10 (train) is not downloaded" in out and "MNIST-5k" in out
    # without the switch the same calls go to torchvision (here: the stub that fails)
    monkeypatch.delenv("MINIDIFF_SMOKE")
    with pytest.raises(data.DatasetUnavailable, match="torchvision dataset constructed"):
        data.load_images("cifar10", "train", profile="gpu")
    with pytest.raises(ValueError, match="no smoke stand-in for 'digits'"):
        data.smoke_stand_in("digits")
