import dataclasses
import warnings
from pathlib import Path

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
            p.runtime_s["04_ddpm"] = 1.0  # type: ignore[index]


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
    ci = config.get_profile("ci")
    line = config.banner("04_ddpm", ci)
    assert "profile=ci" in line and "device=" in line
    assert f"expected runtime: {config.runtime_text(ci.runtime_s['04_ddpm'], ci.runtime_on)}" in line
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="no CUDA device"):
            config.banner("04_ddpm", config.get_profile("gpu"))


def test_with_overrides():
    p = config.with_overrides(config.get_profile("ci"), ddpm={"steps": 7})
    assert p.ddpm.steps == 7 and config.get_profile("ci").ddpm.steps != 7


# ----------------------------------------------------------------------------- runtimes, as numbers

CHAPTERS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "chapters").glob("*.ipynb"))


def test_every_chapter_has_a_runtime_within_its_profile_budget():
    for name in config.PROFILE_NAMES:
        p = config.get_profile(name)
        assert sorted(p.runtime_s) == CHAPTERS, name
        assert all(0 < s <= p.budget_for(c) for c, s in p.runtime_s.items()), name
        assert set(p.chapter_budgets) <= set(CHAPTERS) and all(b >= p.chapter_budget_s for b in p.chapter_budgets.values())
        assert p.runtime_estimates <= set(CHAPTERS), name
    ci, cpu, gpu = (config.get_profile(n) for n in ("ci", "cpu", "gpu"))
    assert all(ci.runtime_s[c] <= cpu.runtime_s[c] for c in CHAPTERS)     # ci is the quick version of cpu
    assert ci.chapter_budget_s == 60 and cpu.chapter_budget_s == 600 and gpu.chapter_budget_s == 1200
    # chapter 11 may take the 15 min the course gives it in cpu (measured 9 min alone on the latent U-Net,
    # profiles.py says so); no other chapter may exceed the profile's 10
    assert ci.budget_for("11_ssl_meets_diffusion") == 60 and cpu.budget_for("11_ssl_meets_diffusion") == 900
    assert set(cpu.chapter_budgets) == {"11_ssl_meets_diffusion"}


@pytest.mark.parametrize("seconds,unit,amount", [(45, "s", 45), (59, "s", 59), (60, "min", 1), (270, "min", 4.5),
                                                 (1020, "min", 17)])
def test_runtime_text_rounds_to_seconds_or_half_minutes(seconds, unit, amount):
    text = config.runtime_text(seconds, "a Colab T4")
    number, found_unit = text.split()[1:3]
    assert (float(number), found_unit) == (amount, unit) and text.endswith("on a Colab T4")
    assert config.runtime_text(seconds, "x", estimate=True).endswith("(estimate)")
    with pytest.raises(ValueError):
        config.runtime_text(0, "x")


def test_unknown_chapter_has_no_runtime():
    assert "not stated" in config.chapter_runtime("99_nothing", config.get_profile("ci"))


# ----------------------------------------------------------------------------- cpu is the reference; ci/gpu override

# fields that say what a chapter does (method, data, recipe) rather than how big or how long: ci must keep cpu's
METHOD = {"dataset", "schedule", "prediction", "encoder", "clip_x0", "blur_sigma", "beta", "temperature",
          "moco_temperature", "moco_momentum", "p_uncond", "weight_decay", "grad_clip", "aug_strength", "feature_depth",
          "repa_lambda", "mt_weight_start", "mt_weight_end", "mt_fixed_weight", "base", "dit", "fid_tolerance",
          "min_margin", "probe_per_class", "probe_repeats", "check_images", "check_tokens", "check_groups"}


def _differences(p, ref):
    return {(f.name, g.name) for f in dataclasses.fields(ref) if dataclasses.is_dataclass(getattr(ref, f.name))
            for g in dataclasses.fields(getattr(ref, f.name))
            if getattr(getattr(p, f.name), g.name) != getattr(getattr(ref, f.name), g.name)}


def test_ci_changes_sizes_and_budgets_never_the_method():
    ci, cpu = config.get_profile("ci"), config.get_profile("cpu")
    changed = _differences(ci, cpu)
    assert changed and not {g for _, g in changed} & METHOD, sorted(changed)
    assert ("ddpm", "steps") in changed and ("ddpm", "schedule") not in changed


def test_gpu_differs_from_cpu_in_data_sizes_and_budgets():
    gpu, cpu = config.get_profile("gpu"), config.get_profile("cpu")
    changed = _differences(gpu, cpu)
    assert {("ddpm", "dataset"), ("ssl", "dataset"), ("ssl", "encoder"), ("ddpm", "steps")} <= changed
    assert not {("ddpm", "schedule"), ("vp_ddpm", "T"), ("vp_ddpm", "schedule"), ("ssl", "temperature"),
                ("dit", "base"), ("dit", "lr"), ("kernels", "check_images")} & changed
    assert ("kernels", "reps") not in changed and gpu.kernels == cpu.kernels   # kernels: the reference sizes


def test_derive_replaces_only_the_fields_named():
    cpu = config.get_profile("cpu")
    p = config.derive(cpu, ddpm={"steps": 7}, chapter_budget_s=1.0)
    assert _differences(p, cpu) == {("ddpm", "steps")} and p.chapter_budget_s == 1.0 and p.ddpm.steps == 7
    with pytest.raises(ValueError, match="no field 'nope'"):
        config.derive(cpu, nope={"steps": 1})


def test_dit_names_are_sizes_whose_patch_is_its_own_field():
    from minidiff.nets.dit import DIT_SIZES, dit_config

    for name in config.PROFILE_NAMES:
        p = config.get_profile(name)
        pairs = [(p.dit.base, p.dit.base_patch), *p.dit.scaling, (p.ssl_diffusion.dit, p.ssl_diffusion.patch)]
        for size, patch in pairs:
            assert size in DIT_SIZES and "/" not in size, size
            assert dit_config(size, patch=patch).patch == patch and 28 % patch == 0


# ----------------------------------------------------------------------------- train_config and summary

SECTIONS_THAT_TRAIN = ("toy", "ddpm", "ssl", "rotation", "vae", "vp_ddpm", "dit", "unet", "guidance", "ssl_diffusion")


@pytest.mark.parametrize("name", config.PROFILE_NAMES)
def test_train_config_carries_the_sections_hyper_parameters(name):
    p = config.get_profile(name)
    for section in SECTIONS_THAT_TRAIN:
        part = getattr(p, section)
        cfg = part.train_config(desc="x")
        assert isinstance(cfg, config.TrainConfig) and cfg.desc == "x"
        for f in config.TRAIN_FIELDS:
            if hasattr(part, f):
                assert getattr(cfg, f) == getattr(part, f), (section, f)
        assert part.train_config(steps=3).steps == 3
        line = p.summary(section)
        assert "\n" not in line and line.startswith(f"{section} ({name}): ") and f"{part.steps} steps" in line
    assert p.ssl.moco_train_config().steps == p.ssl.moco_steps and p.ssl.moco_train_config().lr == p.ssl.lr
    # chapter 02 compares SimCLR and MoCo at the same budget (its text says so)
    assert (p.ssl.moco_steps, p.ssl.moco_max_seconds) == (p.ssl.steps, p.ssl.max_seconds), name
    assert p.guidance.ae_settings() == p.dit.ae_settings(), "chapters 09 and 10 share one autoencoder"
    assert p.guidance.text_train_config().max_seconds == p.guidance.text_max_seconds
    assert p.ssl_diffusion.rdm_train_config().steps == p.ssl_diffusion.rdm_steps
    assert p.ssl_diffusion.train_config().min_lr_ratio == p.ssl_diffusion.min_lr_ratio
    assert str(p.sampling.n_samples) in p.summary("sampling") and str(p.kernels.reps) in p.summary("kernels")
    with pytest.raises(ValueError, match="no section"):
        p.summary("name")


# ----------------------------------------------------------------------------- smoke runs (MINIDIFF_SMOKE=1)

@pytest.mark.parametrize("value", [None, "", "0"])
def test_profiles_are_unchanged_without_smoke(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("MINIDIFF_SMOKE", raising=False)
    else:
        monkeypatch.setenv("MINIDIFF_SMOKE", value)
    assert not config.smoke()
    for name in config.PROFILE_NAMES:
        assert config.get_profile(name) is config.PROFILES[name]


def test_smoke_value_must_be_0_or_1(monkeypatch):
    monkeypatch.setenv("MINIDIFF_SMOKE", "yes")
    with pytest.raises(ValueError, match="MINIDIFF_SMOKE='yes' is not understood; expected 1"):
        config.get_profile("gpu")


def test_smoke_caps_every_budget_of_the_gpu_profile(monkeypatch):
    monkeypatch.setenv("MINIDIFF_SMOKE", "1")
    gpu, ci, smoke = config.PROFILES["gpu"], config.PROFILES["ci"], config.get_profile("gpu")
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
    assert {"steps", "toy_steps", "moco_steps", "ae_steps", "clip_steps", "text_steps", "rdm_steps",
            "sample_steps", "encode_steps", "likelihood_steps", "warmup", "max_seconds",
            "moco_max_seconds", "text_max_seconds", "compare_seconds", "n_samples", "n_embed", "n_points",
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


def test_moved_cache_names_say_where_they_went():
    """config.cached (older notebooks) names its new home instead of a bare AttributeError; unknown names still fail."""
    with pytest.raises(AttributeError, match="from minidiff.cache import cached"):
        config.cached
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        config.nothing_here


def test_guidance_config_refuses_unknown_sampler_prediction_and_weighting():
    from minidiff.config.schema import GuidanceChapterConfig

    for bad, word in ((dict(sampler="euler"), "sampler"), (dict(prediction="score"), "prediction"),
                      (dict(weighting="snr"), "weighting"), (dict(latent_batch=0), "latent_batch")):
        with pytest.raises(ValueError, match=word):
            GuidanceChapterConfig(**bad)


def test_guidance_config_accepts_exactly_what_the_diffusion_layer_knows():
    """config sits below diffusion (it may not import it), so it spells the names out; they must not drift."""
    from minidiff.config.schema import GuidanceChapterConfig
    from minidiff.diffusion.ddpm import PREDICTIONS, WEIGHTINGS

    from minidiff.config.schema import UNetChapterConfig

    for cls in (GuidanceChapterConfig, UNetChapterConfig):
        for p in PREDICTIONS:
            cls(prediction=p)
        for w in WEIGHTINGS:
            cls(weighting=w)


def test_unet_config_refuses_unknown_sampler_prediction_weighting_and_mlp_sizes():
    from minidiff.config.schema import UNetChapterConfig

    for bad, word in ((dict(sampler="euler"), "sampler"), (dict(prediction="score"), "prediction"),
                      (dict(weighting="snr"), "weighting"), (dict(mlp_hidden=1), "mlp_hidden"),
                      (dict(mlp_depth=0), "mlp_depth")):
        with pytest.raises(ValueError, match=word):
            UNetChapterConfig(**bad)


def test_the_setup_page_runtime_table_is_the_profiles():
    """book/setup.md's table of expected runtimes says what each chapter's banner says, in every profile."""
    from pathlib import Path

    from minidiff.config.runtime import chapter_runtime

    text = (Path(__file__).resolve().parents[1] / "book" / "setup.md").read_text()
    profiles = [config.get_profile(n) for n in ("ci", "cpu", "gpu")]
    for chapter in CHAPTERS:
        cells = [chapter_runtime(chapter, p).replace(f" on {p.runtime_on}", "") for p in profiles]
        row = f"| {chapter} | " + " | ".join(cells) + " |"
        assert row in text, f"book/setup.md lacks the row {row}"


@pytest.mark.parametrize("field, bad", [("vq_codes", 1), ("vq_codes", 0), ("vq_dim", 2.5), ("vq_steps", -1),
                                        ("vq_beta", -0.1), ("vq_beta", True)])
def test_vae_config_refuses_bad_vq_settings(field, bad):
    import dataclasses

    from minidiff import config

    with pytest.raises(ValueError, match=f"VAEConfig.{field}"):
        dataclasses.replace(config.get_profile("ci").vae, **{field: bad})


def test_flow_config_refuses_what_chapter_13_cannot_run():
    """Chapter 13's text compares the toy flows at 8 Euler steps and reflow at one step; its point sets are drawn
    from the toy data. A profile that breaks one of these fails when it is made, naming the field."""
    from minidiff.config.schema import FlowChapterConfig

    FlowChapterConfig()
    for bad, word in ((dict(toy_nfe=(1, 2, 4, 16)), "toy_nfe"), (dict(toy_nfe=(8, 4)), "toy_nfe"),
                      (dict(toy_reflow_nfe=(2, 4)), "toy_reflow_nfe"), (dict(nfe=()), "nfe"),
                      (dict(nfe=(1, True)), "nfe"),
                      (dict(toy_support=10_000), "toy_support"), (dict(toy_eval_samples=9000), "toy_eval_samples"),
                      (dict(toy_path_samples=3000), "toy_path_samples"), (dict(toy_support=0), "toy_support"),
                      (dict(toy_exact_steps=-1), "toy_exact_steps"), (dict(coupling_steps=2.5), "coupling_steps"), (dict(path="straight"), "paths"),
                      (dict(time_sampling="beta"), "time_sampling"), (dict(ddpm_prediction="score"), "prediction")):
        with pytest.raises(ValueError, match=word):
            FlowChapterConfig(**bad)
