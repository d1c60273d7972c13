"""minidiff.cache.cached: finished artifacts built once, reused, rebuilt when their config changes; off where
checkpoints are off; atomic writes; corrupted or pickled files refused with a warning and rebuilt; clear errors."""

import os
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from minidiff import cache, config


@pytest.fixture
def on(monkeypatch, tmp_path):
    """Caching on: the cpu profile with the checkpoint root in a temporary folder."""
    monkeypatch.setenv("MINIDIFF_PROFILE", "cpu")
    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", str(tmp_path))
    return tmp_path


class Counter:
    def __init__(self, value):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return self.value


@dataclass(frozen=True)
class Sizes:
    steps: int = 10
    scales: tuple = (0.0, 1.5)


VALUE = {"fid": 12.5, "steps": 10, "name": "full", "none": None, "curve": [1.0, 0.5], "pair": (1, "a"),
         "x": torch.arange(6.0).view(2, 3), "nested": {"by_t": torch.tensor([0.1, 0.2]), 3: [True, False], 1.5: "w"}}


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_builds_once_then_reuses(on, capsys):
    build = Counter(VALUE)
    first = cache.cached("08_unet/sweep", build, config=Sizes())
    second = cache.cached("08_unet/sweep", build, config=Sizes())
    assert build.calls == 1
    assert _same(first, VALUE) and _same(second, VALUE)
    path = cache.cache_path("08_unet/sweep", Sizes())
    assert path.exists() and path.parent == on / "cpu" / "08_unet" and path.name.startswith("sweep.cache-")
    assert str(path) in capsys.readouterr().out          # a hit says where the result came from


def test_changed_config_builds_again(on):
    build = Counter({"a": 1})
    cache.cached("k/x", build, config=Sizes())
    cache.cached("k/x", build, config=Sizes(steps=11))
    cache.cached("k/x", build, config={"steps": 10})
    assert build.calls == 3
    cache.cached("k/x", build, config=Sizes())            # the first config's entry is still there
    assert build.calls == 3
    assert cache.config_hash({"a": 1, "b": (2, 3)}) == cache.config_hash({"b": [2, 3], "a": 1})   # canonical JSON
    assert cache.config_hash(Sizes()) != cache.config_hash(Sizes(scales=(0.0, 1.0)))


@pytest.mark.parametrize("env", [{"MINIDIFF_PROFILE": "ci"},
                                 {"MINIDIFF_PROFILE": "cpu", "MINIDIFF_CHECKPOINT_DIR": "off"},
                                 {"MINIDIFF_PROFILE": "gpu", "MINIDIFF_CHECKPOINT_DIR": "OFF"}])
def test_off_in_ci_and_for_the_website(monkeypatch, tmp_path, env):
    monkeypatch.chdir(tmp_path)                            # an unset root would mean ./runs
    monkeypatch.delenv("MINIDIFF_CHECKPOINT_DIR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    build = Counter({"a": torch.zeros(2)})
    net = torch.nn.Linear(2, 2)
    for _ in range(2):
        cache.cached("08_unet/sweep", build, config=Sizes(), model=net)
    assert build.calls == 2 and cache.cache_path("08_unet/sweep") is None
    assert list(tmp_path.rglob("*")) == []
    with pytest.raises(TypeError, match="value\\['m'\\] is a Linear module"):   # values are checked even when off
        cache.cached("08_unet/sweep", lambda: {"m": net})


def test_model_weights_stored_and_loaded_back(on):
    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))

    def train_it():
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net(torch.randn(8, 3))                             # moves the BatchNorm buffers
        net.eval()
        return {"loss": 0.25}

    net = make()
    assert cache.cached("09_dit/run", train_it, config=Sizes(), model=net) == {"loss": 0.25}
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    net = make()
    assert not torch.equal(net[0].weight, trained["0.weight"]) and net.training
    assert cache.cached("09_dit/run", lambda: pytest.fail("rebuilt"), config=Sizes(), model=net) == {"loss": 0.25}
    assert all(torch.equal(net.state_dict()[k], v) for k, v in trained.items()) and not net.training

    other = torch.nn.Linear(3, 5)                          # another architecture: warned, rebuilt, left untouched
    before = other.weight.clone()
    build = Counter({"loss": 0.5})
    with pytest.warns(UserWarning, match="holds the modules|other parameters|shape"):
        cache.cached("09_dit/run", build, config=Sizes(), model={"net": other})
    assert build.calls == 1 and torch.equal(other.weight, before)


def test_random_state_after_a_hit_is_the_one_after_the_build(on):
    def build():
        torch.randn(5), np.random.rand(3), random.random()
        return {"ok": True}

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    cache.cached("k/rng", build)
    after_build = torch.randn(3), np.random.rand(2), random.random()
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    cache.cached("k/rng", build)
    after_hit = torch.randn(3), np.random.rand(2), random.random()
    assert torch.equal(after_build[0], after_hit[0]) and np.array_equal(after_build[1], after_hit[1])
    assert after_build[2] == after_hit[2]


def test_no_partial_file_when_build_or_write_fails(on, monkeypatch):
    def boom():
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        cache.cached("08_unet/sweep", boom)
    assert list(on.rglob("*.pt")) == [] and list(on.rglob("*.tmp")) == []

    real_save = torch.save

    def half_save(obj, f, *a, **k):                       # writes some bytes, then the disk "fills up"
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_save)
    build = Counter({"x": torch.ones(3)})
    with pytest.warns(UserWarning, match="could not write cache file .*No space left"):
        value = cache.cached("08_unet/sweep", build)
    assert torch.equal(value["x"], torch.ones(3))          # the computed value is not lost
    assert [p for p in on.rglob("*") if p.is_file()] == []   # neither the target nor the temp file is left
    monkeypatch.setattr(torch, "save", real_save)
    cache.cached("08_unet/sweep", build)
    cache.cached("08_unet/sweep", build)
    assert build.calls == 2


def test_corrupted_file_is_rebuilt_with_a_warning(on):
    build = Counter({"x": torch.arange(100.0)})
    cache.cached("10_latent_and_guidance/sweep", build, config=Sizes())
    path = cache.cache_path("10_latent_and_guidance/sweep", Sizes())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])     # truncated, as by a lost connection
    with pytest.warns(UserWarning, match=f"cache file {path} is not used: it is unreadable"):
        value = cache.cached("10_latent_and_guidance/sweep", build, config=Sizes())
    assert build.calls == 2 and torch.equal(value["x"], torch.arange(100.0))
    cache.cached("10_latent_and_guidance/sweep", build, config=Sizes())  # rewritten: a hit again
    assert build.calls == 2


def test_file_of_another_config_at_the_path_is_not_used(on):
    cache.cached("k/a", Counter({"v": 1}), config={"n": 1})
    src, dst = cache.cache_path("k/a", {"n": 1}), cache.cache_path("k/a", {"n": 2})
    dst.write_bytes(src.read_bytes())
    with pytest.warns(UserWarning, match="another key or config"):
        assert cache.cached("k/a", Counter({"v": 2}), config={"n": 2}) == {"v": 2}


_executed = []


class Payload:
    def __reduce__(self):
        return (_executed.append, ("pickled code ran",))


def test_pickled_object_is_refused_not_run(on):
    path = cache.cache_path("11_ssl_meets_diffusion/runs")
    path.parent.mkdir(parents=True)
    torch.save({"format": cache.FORMAT, "key": "11_ssl_meets_diffusion/runs", "config": "null", "value": Payload()},
               path)
    build = Counter({"safe": 1})
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.cached("11_ssl_meets_diffusion/runs", build) == {"safe": 1}
    assert _executed == [] and build.calls == 1


@pytest.mark.parametrize("value, match", [
    ({"a": np.float64(1.0)}, r"value\['a'\] is a float64.*\.item\(\)"),
    ([1, np.zeros(3)], r"value\[1\] is a ndarray.*as_tensor"),
    ({"f": lambda: 1}, r"value\['f'\] is a function"),
    ({(1, 2): 3}, r"key \(1, 2\)"),
    (Sizes(), r"value is a Sizes"),
])
def test_values_that_cannot_be_stored_are_a_clear_type_error(on, value, match):
    with pytest.raises(TypeError, match=match):
        cache.cached("k/bad", lambda: value)
    assert list(on.rglob("*.pt")) == []


@pytest.mark.parametrize("key", ["", "   ", "..", "a/../b", "../escape", "/abs/path", "a//b", "a/./b", "a b",
                                 "a\\b", 3, None])
def test_bad_key_is_a_value_error(on, key):
    with pytest.raises(ValueError, match="cache key"):
        cache.cached(key, lambda: 1)
    assert not any(on.iterdir())


def test_other_bad_arguments(on):
    with pytest.raises(TypeError, match="build_fn must be a function"):
        cache.cached("k/a", {"not": "callable"})
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        cache.cached("k/a", lambda: 1, model=[torch.nn.Linear(1, 1)])
    with pytest.raises(TypeError, match=r"config\['t'\] is a Tensor"):
        cache.cached("k/a", lambda: 1, config={"t": torch.zeros(1)})


def test_lives_above_config_not_in_it():
    """The cache stands on config (checkpoint folders) and on the checkpoint writer; config does not re-export it,
    which would be an import cycle (tests/test_imports.py): chapters call minidiff.cache.cached."""
    assert not hasattr(config, "cached") and not hasattr(config, "cache_path")
    assert os.path.basename(cache.__file__) == "cache.py"
