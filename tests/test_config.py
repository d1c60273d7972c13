import dataclasses
import warnings

import pytest
import torch

from minidiff import config


def test_profiles_exist_and_are_frozen():
    for name in config.PROFILE_NAMES:
        p = config.get_profile(name)
        assert p.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.ddpm.steps = 1  # type: ignore[misc]
        with pytest.raises(TypeError):
            p.runtimes["04_ddpm"] = "x"  # type: ignore[index]


def test_profiles_scale_up():
    ci, cpu, gpu = (config.get_profile(n) for n in ("ci", "cpu", "gpu"))
    assert ci.ddpm.steps < cpu.ddpm.steps < gpu.ddpm.steps
    assert ci.chapter_budget_s == 60 and cpu.chapter_budget_s <= 600
    assert ci.ddpm.dataset == "mnist5k"  # offline


def test_env_override_and_bad_name(monkeypatch):
    monkeypatch.setenv("MINIDIFF_PROFILE", "ci")
    assert config.get_profile().name == "ci"
    monkeypatch.setenv("MINIDIFF_PROFILE", "tpu")
    with pytest.raises(ValueError, match="not a known profile"):
        config.get_profile()
    monkeypatch.delenv("MINIDIFF_PROFILE")
    assert config.profile_name() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_device_and_override(monkeypatch):
    monkeypatch.setenv("MINIDIFF_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")
    monkeypatch.setenv("MINIDIFF_DEVICE", "banana")
    with pytest.raises(ValueError, match="not a valid torch device"):
        config.device()


def test_seed_everything_reproducible():
    config.seed_everything(3)
    a = torch.randn(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.randn(4))
    with pytest.raises(ValueError):
        config.seed_everything(-1)


def test_banner(monkeypatch):
    line = config.banner("04_ddpm", config.get_profile("ci"))
    assert "profile=ci" in line and "device=" in line and "expected runtime: about 45 s on 2 CPU cores" in line
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="no CUDA device"):
            config.banner("04_ddpm", config.get_profile("gpu"))


def test_with_overrides():
    p = config.with_overrides(config.get_profile("ci"), ddpm={"steps": 7})
    assert p.ddpm.steps == 7 and config.get_profile("ci").ddpm.steps != 7
