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


# ----------------------------------------------------------------------------- smoke runs (MINIDIFF_SMOKE=1)

@pytest.mark.parametrize("value", [None, "", "0"])
def test_profiles_are_unchanged_without_smoke(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("MINIDIFF_SMOKE", raising=False)
    else:
        monkeypatch.setenv("MINIDIFF_SMOKE", value)
    assert not config.smoke()
    for name in config.PROFILE_NAMES:
        assert config.get_profile(name) is config._PROFILES[name]


def test_smoke_value_must_be_0_or_1(monkeypatch):
    monkeypatch.setenv("MINIDIFF_SMOKE", "yes")
    with pytest.raises(ValueError, match="MINIDIFF_SMOKE='yes' is not understood; expected 1"):
        config.get_profile("gpu")


def test_smoke_caps_every_budget_of_the_gpu_profile(monkeypatch):
    monkeypatch.setenv("MINIDIFF_SMOKE", "1")
    gpu, ci, smoke = config._PROFILES["gpu"], config._PROFILES["ci"], config.get_profile("gpu")
    assert smoke.name == "gpu" and "MINIDIFF_SMOKE=1" in smoke.description
    capped = set()
    for f in dataclasses.fields(gpu):
        section = getattr(gpu, f.name)
        if not dataclasses.is_dataclass(section):
            assert getattr(smoke, f.name) == section or f.name == "description", f.name
            continue
        for g in dataclasses.fields(section):
            before, after = getattr(section, g.name), getattr(getattr(smoke, f.name), g.name)
            ref = getattr(getattr(ci, f.name), g.name)
            kind = config.smoke_kind(g.name, before)
            where = f"{f.name}.{g.name}: {before!r} -> {after!r} (ci {ref!r})"
            if kind is None:
                assert after == before, f"not a budget, but changed: {where}"
                continue
            capped.add(g.name)
            if kind == "seconds":
                assert after is not None and after <= config.SMOKE_MAX_SECONDS and (ref is None or after <= ref), where
            elif kind == "sweep":
                assert len(after) <= len(ref) and len(after) <= len(before), where
            else:
                assert after <= before and after <= ref, where
    # the name patterns find the budgets the chapters use (the walk cannot silently match nothing)
    assert {"steps", "toy_steps", "moco_steps", "ae_steps", "clip_steps", "text_steps", "ssl_steps", "rdm_steps",
            "sample_steps", "encode_steps", "likelihood_steps", "warmup", "eval_every", "max_seconds",
            "moco_max_seconds", "text_max_seconds", "compare_seconds", "n_samples", "n_eval", "n_embed", "n_points",
            "eval_images", "likelihood_images", "reps", "ddim_steps", "etas", "sde_nfe", "scales", "seeds", "scaling",
            "timing_numel", "dpm_variants"} <= capped
    assert smoke.ddpm.steps == ci.ddpm.steps < gpu.ddpm.steps and smoke.ddpm.max_seconds == config.SMOKE_MAX_SECONDS
    assert smoke.ssl_diffusion.seeds == (0,) and smoke.unet.max_seconds == config.SMOKE_MAX_SECONDS   # None capped too
    # models, data sets, shapes and batch sizes stay the gpu profile's
    assert (smoke.unet.unet, smoke.ddpm.channel_mults, smoke.ssl.encoder, smoke.ssl.dataset, smoke.ddpm.batch) == \
        (gpu.unet.unet, gpu.ddpm.channel_mults, gpu.ssl.encoder, gpu.ssl.dataset, gpu.ddpm.batch)
    assert config.get_profile().name == config.profile_name()   # the active profile is capped as well


def test_smoke_caps_fields_added_later_by_their_names():
    @dataclasses.dataclass(frozen=True)
    class NewSection:
        warmup_steps: int = 5000
        fid_images: int = 4000
        n_things: int = 900
        train_seconds: float | None = None
        guidance_scales: tuple = (0.0, 1.0, 2.0, 4.0)
        widths: tuple = (16, 32, 64)       # not a sweep of budgets: an architecture
        hidden: int = 512

    @dataclasses.dataclass(frozen=True)
    class FakeProfile:
        name: str
        description: str
        new: NewSection

    big = FakeProfile("gpu", "big", NewSection())
    small = FakeProfile("ci", "small", NewSection(warmup_steps=50, fid_images=100, n_things=10, train_seconds=300.0,
                                                  guidance_scales=(0.0, 3.0), widths=(8,), hidden=16))
    s = config.smoke_profile(big, reference=small).new
    assert (s.warmup_steps, s.fid_images, s.n_things, s.train_seconds, s.guidance_scales) == \
        (50, 100, 10, config.SMOKE_MAX_SECONDS, (0.0, 3.0))
    assert (s.widths, s.hidden) == ((16, 32, 64), 512)


def test_smoke_runs_keep_their_own_checkpoints_and_cache(monkeypatch, tmp_path):
    """A real run must never resume a smoke run's capped checkpoint (or be refused for its capped warmup)."""
    from minidiff import cache

    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.delenv("MINIDIFF_SMOKE", raising=False)
    real = config.checkpoint_dir("04_ddpm/unet", "gpu")
    real_cache = cache.cache_path("04_ddpm/sweep", {"a": 1})
    monkeypatch.setenv("MINIDIFF_SMOKE", "1")
    smoke = config.checkpoint_dir("04_ddpm/unet", "gpu")
    assert real == tmp_path / "gpu" / "04_ddpm" / "unet"
    assert smoke == tmp_path / "gpu-smoke" / "04_ddpm" / "unet"
    assert cache.cache_path("04_ddpm/sweep", {"a": 1}) != real_cache
