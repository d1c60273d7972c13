"""The training loop: it learns, resumes exactly, never loses state, and stops on nan with a clear message."""

import math
import os
import pickle
import warnings

import pytest
import torch

from minidiff import data
from minidiff.diffusion import ddpm
from minidiff.diffusion.schedules import make_schedule
from minidiff.nets import TimeMLP
from minidiff.train import (CheckpointError, TrainConfig, TrainingDiverged, list_checkpoints, load_checkpoint, lr_at,
                            save_checkpoint, train)

SCHED = make_schedule("linear", 50)


def toy_setup(seed=0):
    torch.manual_seed(seed)
    model = TimeMLP(2, 32, 2)
    pts = data.toy_2d("moons", 1024, seed=0)
    sampler = data.TensorSampler(pts, batch_size=64, seed=seed)
    loss_fn = lambda m, x: ddpm.ddpm_loss(m, SCHED, x)
    return model, loss_fn, sampler


def cfg(**kw):
    base = dict(steps=40, lr=3e-3, warmup=5, ema_decay=0.9, progress=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls():
    model, loss_fn, sampler = toy_setup()
    r = train(model, loss_fn, sampler, cfg(steps=400, log_every=10))
    losses = r.history["loss"]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert r.step == 400 and r.stopped == "steps"


def test_lr_schedule_endpoints():
    c = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(10, c) == pytest.approx(1.0)
    assert lr_at(55, c) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-6)
    assert lr_at(100, c) == pytest.approx(0.1)


def test_lr_schedule_anneal_by_time():
    # cosine from the closed form 0.1 + 0.9 * (1 + cos(pi * p)) / 2 at the larger of the step and time fractions
    c = TrainConfig(steps=1000, lr=1.0, warmup=0, min_lr_ratio=0.1, max_seconds=100.0, anneal_by_time=True)
    assert lr_at(10, c, seconds=50.0) == pytest.approx(0.55, rel=1e-6)      # time is further along: p = 0.5
    assert lr_at(750, c, seconds=10.0) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.75 * math.pi)), rel=1e-6)
    assert lr_at(10, c, seconds=500.0) == pytest.approx(0.1)                # past the budget: the floor
    plain = TrainConfig(steps=1000, lr=1.0, warmup=0, min_lr_ratio=0.1, max_seconds=100.0)
    assert lr_at(10, plain, seconds=50.0) == pytest.approx(lr_at(10, plain))  # off: seconds are ignored
    with pytest.raises(ValueError, match="anneal_by_time needs max_seconds"):
        TrainConfig(anneal_by_time=True)


def test_train_anneal_by_time_ends_at_the_floor():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(64, 4)
    cfg = TrainConfig(steps=10**6, lr=0.1, min_lr_ratio=0.1, max_seconds=1.0, anneal_by_time=True, ema_decay=None,
                      progress=False, log_every=1)
    r = train(model, lambda m, b: m(b).pow(2).mean(), iter(lambda: x, None), cfg)
    assert r.stopped == "time"
    lrs = r.history["lr"]
    assert lrs[0] > 0.09 and lrs[-1] < 0.0105, (lrs[0], lrs[-1])


class Interrupt(Exception):
    pass


def _interrupt_at(k):
    def cb(step, loss):
        if step == k:
            raise Interrupt

    return cb


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    model_a, loss_fn, sampler_a = toy_setup()
    ra = train(model_a, loss_fn, sampler_a, cfg(ckpt_dir=tmp_path / "a", ckpt_every=10))

    # run b: interrupted twice, between checkpoints, then resumed by calling train again
    for stop in (17, 33, None):
        model_b, loss_fn, sampler_b = toy_setup()
        if stop != 17:
            torch.manual_seed(1234)  # a different global RNG state: resume must restore the saved one
        try:
            rb = train(model_b, loss_fn, sampler_b, cfg(ckpt_dir=tmp_path / "b", ckpt_every=10),
                       callback=_interrupt_at(stop) if stop else None)
        except Interrupt:
            continue
    assert rb.resumed_from == 30
    for (n, pa), pb in zip(ra.model.state_dict().items(), rb.model.state_dict().values()):
        assert torch.equal(pa, pb), n
    for pa, pb in zip(ra.ema.state_dict().values(), rb.ema.state_dict().values()):
        assert torch.equal(pa, pb)
    assert ra.history["loss"] == rb.history["loss"]


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    model, loss_fn, sampler = toy_setup()
    train(model, loss_fn, sampler, cfg(ckpt_dir=tmp_path, ckpt_every=10, keep=2))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt_00000030.pt", "ckpt_00000040.pt"]  # no temp files left, only the last two
    state = load_checkpoint(tmp_path / "ckpt_00000040.pt")
    assert state["step"] == 40 and set(state) >= {"model", "ema", "optimizer", "rng", "sampler", "history"}


def test_save_checkpoint_failure_keeps_old_file(tmp_path):
    path = tmp_path / "ckpt_00000001.pt"
    save_checkpoint({"model": {}, "step": 1}, path)
    before = path.read_bytes()

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"model": {}, "step": 2, "x": Boom()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_corrupted_newest_checkpoint_falls_back_to_previous(tmp_path):
    model, loss_fn, sampler = toy_setup()
    train(model, loss_fn, sampler, cfg(steps=20, ckpt_dir=tmp_path, ckpt_every=10))
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncate
    with pytest.raises(CheckpointError, match=newest.name):
        load_checkpoint(newest)
    model, loss_fn, sampler = toy_setup()
    with pytest.warns(UserWarning, match=newest.name):
        r = train(model, loss_fn, sampler, cfg(steps=20, ckpt_dir=tmp_path, ckpt_every=10))
    assert r.resumed_from == 10 and r.step == 20


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_object_is_refused_not_executed(tmp_path):
    path = tmp_path / "ckpt_00000005.pt"
    torch.save({"model": {}, "step": 5, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path):
    model, loss_fn, sampler = toy_setup()
    calls = {"n": 0}

    def bad_loss(m, x):
        calls["n"] += 1
        loss = loss_fn(m, x)
        return loss * float("nan") if calls["n"] == 16 else loss

    before = None

    def remember(step, loss):
        nonlocal before
        before = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 15.*ckpt_00000010\.pt"):
        train(model, bad_loss, sampler, cfg(steps=40, ckpt_dir=tmp_path, ckpt_every=10), callback=remember)
    for k, v in model.state_dict().items():  # the bad update was never applied
        assert torch.equal(v, before[k])
    assert load_checkpoint(tmp_path / "ckpt_00000010.pt")["step"] == 10


def _snapshot(model, opt, ema):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {k: v.clone() for k, v in ema.model.state_dict().items()},
            {i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(model.parameters())})


def _assert_same(a, b):
    (ma, ea, oa), (mb, eb, ob) = a, b
    assert ma.keys() == mb.keys() and ea.keys() == eb.keys() and oa.keys() == ob.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), f"weights changed: {k}"
    for k in ea:
        assert torch.equal(ea[k], eb[k]), f"EMA changed: {k}"
    for i in oa:
        for k in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][k]), torch.as_tensor(ob[i][k])), f"optimizer state changed: {k}"


@pytest.mark.parametrize("where", ["loss", "gradient"])
@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_nan_guard_stops_before_the_bad_update(where, grad_clip, monkeypatch):
    """A nan loss (or a finite loss with a nan gradient) at step 7 raises TrainingDiverged naming step 7, and leaves
    weights, optimizer state (moments and step counts) and EMA exactly as they were after the 7 steps before it."""
    from minidiff.train import EMA

    emas, snaps, calls = [], {}, {"n": 0}
    make_ema = EMA.__init__

    def remember_ema(self, *a, **k):       # catches the EMA that train() makes, to compare its state
        make_ema(self, *a, **k)
        emas.append(self)

    monkeypatch.setattr(EMA, "__init__", remember_ema)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(32, 3)

    def loss_fn(m, b):
        calls["n"] += 1
        out = m(b)
        if calls["n"] == 8:                # the 8th loss: step 7 counting from 0, after 7 steps done
            if where == "loss":
                return out.pow(2).mean() * float("nan")
            out.register_hook(lambda g: torch.full_like(g, float("nan")))
        return out.pow(2).mean()

    def after_step(step, loss):
        snaps[step] = _snapshot(model, opt, emas[0])

    c = TrainConfig(steps=20, lr=1e-2, ema_decay=0.9, grad_clip=grad_clip, progress=False)
    with pytest.raises(TrainingDiverged, match=rf"{where}( norm)? became nan at step 7;.*after the 7 steps done") as e:
        train(model, loss_fn, iter(lambda: x, None), c, optimizer=opt, callback=after_step)
    assert "no checkpoint was written yet" in str(e.value)
    assert sorted(snaps) == list(range(1, 8))           # the callback counts steps done: 1..7
    _assert_same(snaps[7], _snapshot(model, opt, emas[0]))
    assert int(opt.state[model[0].weight]["step"]) == 7 and emas[0].updates == 7
    assert all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())   # no nan gradient is left


def test_seed_seeds_a_fresh_run_and_a_resume_restores_the_checkpoint_rngs(tmp_path):
    """TrainConfig.seed does what its comment says: a fresh run starts from the RNG states of
    config.seed_everything(seed) (Python, NumPy, torch), whatever the caller's states were; seed=None leaves the
    caller's states as they are; a resumed run restores the states saved in its checkpoint instead of seeding again."""
    import random

    import numpy as np

    from minidiff import config

    draws = []

    def draw():
        return torch.rand(()).item(), float(np.random.rand()), random.random()

    def loss_fn(m, b):
        draws.append(draw())
        return m(b).pow(2).mean()

    x = torch.randn(8, 2)

    def run(seed, steps=6, **kw):
        model = torch.nn.Linear(2, 1)          # built before train: its init draws from the caller's RNG
        draws.clear()
        train(model, loss_fn, iter(lambda: x, None),
              TrainConfig(steps=steps, seed=seed, ema_decay=None, progress=False, **kw))
        return list(draws)

    config.seed_everything(5)
    expected = [draw() for _ in range(6)]
    config.seed_everything(123)
    assert run(5) == expected
    config.seed_everything(77)
    assert run(5) == expected                   # the caller's RNG state does not matter
    config.seed_everything(11)
    torch.nn.Linear(2, 1)
    own = [draw() for _ in range(6)]
    config.seed_everything(11)
    assert run(None) == own                     # None: train draws from the caller's states, untouched

    ckpt = dict(ckpt_dir=tmp_path, ckpt_every=3)
    with pytest.raises(Interrupt):
        train(torch.nn.Linear(2, 1), loss_fn, iter(lambda: x, None),
              TrainConfig(steps=6, seed=5, ema_decay=None, progress=False, **ckpt), callback=_interrupt_at(4))
    config.seed_everything(99)
    assert run(5, **ckpt) == expected[3:]       # resumed after step 3: the saved states, not a fresh seed


def test_clock_counts_from_the_saved_time_and_stands_still_while_paused():
    import time as _time

    from minidiff.train import Clock

    clock = Clock(10.0)                         # 10 s of training before this call (from a checkpoint)
    assert clock.elapsed() == 10.0              # not started: stands still
    clock.start()
    _time.sleep(0.05)
    with clock.paused():
        at_pause = clock.elapsed()
        _time.sleep(0.2)
        assert clock.elapsed() == at_pause      # paused: evaluation and checkpoint writes are not training time
    _time.sleep(0.05)
    clock.stop()
    total = clock.elapsed()
    assert 10.1 <= total < 10.25 and 10.05 <= at_pause < total
    _time.sleep(0.05)
    assert clock.elapsed() == total             # stopped
    with clock.paused():                        # pausing a stopped clock does not start it
        pass
    assert clock.elapsed() == total


def test_wall_clock_budget():
    model, loss_fn, sampler = toy_setup()
    r = train(model, loss_fn, sampler, cfg(steps=10**6, max_seconds=0.5))
    assert r.stopped == "time" and 0 < r.step < 10**6


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    model, loss_fn, sampler = toy_setup()
    train(model, loss_fn, sampler, cfg(steps=10, ckpt_dir=tmp_path, ckpt_every=10))
    other = TimeMLP(2, 16, 2)
    with pytest.raises(CheckpointError, match="does not match"):
        train(other, loss_fn, sampler, cfg(steps=20, ckpt_dir=tmp_path))


@pytest.mark.parametrize("kw, match", [(dict(steps=-1), "steps"), (dict(lr=0.0), "lr"), (dict(amp="fp8"), "amp"),
                                       (dict(ema_decay=1.0), "ema_decay"), (dict(grad_clip=0), "grad_clip"),
                                       (dict(max_seconds=0), "max_seconds")])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_bad_arguments():
    model, loss_fn, sampler = toy_setup()
    with pytest.raises(TypeError, match="nn.Module"):
        train(lambda x: x, loss_fn, sampler, cfg())
    with pytest.raises(TypeError, match="scalar tensor"):
        train(model, lambda m, x: m(x, torch.zeros(len(x), dtype=torch.long)), sampler, cfg())


def test_evaluate_hook_every_n_steps_with_the_ema_and_without_its_time():
    from minidiff.data import TensorSampler
    from minidiff.train import train
    import time as _time

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    xs = torch.randn(256, 2)
    calls = []

    def evaluate(step, m):
        calls.append((step, m.training, m is not model))
        _time.sleep(0.3)                     # evaluation time must not count as training time
        return {"w0": m.weight[0, 0].item()}

    t0 = _time.perf_counter()
    run = train(model, lambda m, x: (m(x) - x.sum(1, keepdim=True)).pow(2).mean(), TensorSampler(xs, batch_size=32),
                TrainConfig(steps=25, lr=1e-2, ema_decay=0.9, eval_every=10, progress=False), evaluate=evaluate)
    wall = _time.perf_counter() - t0
    assert [c[0] for c in calls] == [10, 20, 25]
    assert all(not training and is_ema for _, training, is_ema in calls)
    ev = run.history["eval"]
    assert [e["step"] for e in ev] == [10, 20, 25] and ev[-1]["w0"] == pytest.approx(run.ema.weight[0, 0].item())
    assert run.seconds < wall - 0.85             # three 0.3 s evaluations are not training time
    assert model.training is False               # train() leaves the model in eval mode, as before
    with pytest.raises(ValueError, match="eval_every"):
        train(model, lambda m, x: m(x).mean(), TensorSampler(xs, batch_size=32), TrainConfig(steps=1, progress=False),
              evaluate=evaluate)


def test_resume_refuses_a_checkpoint_of_a_run_with_other_settings(tmp_path):
    model, loss_fn, sampler = toy_setup()
    train(model, loss_fn, sampler, cfg(steps=10, ckpt_dir=tmp_path, ckpt_every=5))
    model, loss_fn, sampler = toy_setup()
    with pytest.raises(CheckpointError, match=r"different run \(lr=0.003 there, 0.001 now\).*resume=False"):
        train(model, loss_fn, sampler, cfg(steps=20, lr=1e-3, ckpt_dir=tmp_path))
    # more steps with the same settings extends the run (resume), and resume=False starts afresh
    r = train(model, loss_fn, sampler, cfg(steps=20, ckpt_dir=tmp_path))
    assert r.resumed_from == 10 and r.step == 20
    model, loss_fn, sampler = toy_setup()
    r = train(model, loss_fn, sampler, cfg(steps=5, lr=1e-3, ckpt_dir=tmp_path / "fresh", resume=False))
    assert r.resumed_from is None and r.step == 5


def test_checkpoint_dir_by_profile_and_environment(monkeypatch, tmp_path):
    from pathlib import Path

    from minidiff import config

    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", "off")   # so that teardown restores whatever was there
    monkeypatch.delenv("MINIDIFF_CHECKPOINT_DIR")
    assert config.checkpoint_dir("04_ddpm/unet", "ci") is None            # ci runs always start fresh
    assert config.checkpoint_dir("04_ddpm/unet", "cpu") == Path("runs/cpu/04_ddpm/unet")
    config.set_checkpoint_dir(tmp_path / "drive")
    assert config.checkpoint_dir("04_ddpm/unet", "ci") == tmp_path / "drive" / "ci" / "04_ddpm" / "unet"
    config.set_checkpoint_dir("off")
    assert config.checkpoint_dir("04_ddpm/unet", "gpu") is None
    with pytest.raises(ValueError, match="run must be a non-empty relative name"):
        config.checkpoint_dir("../escape")
    with pytest.raises(RuntimeError, match="Colab only"):
        config.use_google_drive()


def test_channels_last_trains_to_the_same_numbers_and_compile_wraps_the_model(monkeypatch):
    from minidiff.nets import UNet

    x = data.mnist5k("train").x[:256]
    sched = make_schedule("cosine", 50)

    def run(**kw):
        torch.manual_seed(0)
        net = UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), attention=False)
        r = train(net, lambda m, xb: ddpm.ddpm_loss(m, sched, xb), data.TensorSampler(x, batch_size=32),
                  cfg(steps=6, **kw))
        return r

    plain, nhwc = run(), run(channels_last=True)
    assert next(p for p in nhwc.model.parameters() if p.ndim == 4).is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.history["loss"], nhwc.history["loss"]):
        assert a == pytest.approx(b, rel=1e-4)
    wrapped = []

    def fake_compile(m):       # stands in for torch.compile: records what was compiled, returns a wrapper
        wrapped.append(m)
        return lambda *a, **k: m(*a, **k)

    monkeypatch.setattr(torch, "compile", fake_compile)
    r = run(compile=True)
    assert len(wrapped) == 1 and wrapped[0] is r.model       # the loss saw the compiled model...
    assert r.history["loss"] == pytest.approx(plain.history["loss"], rel=1e-5)   # ...which trains the same weights


def test_wall_clock_budget_is_cumulative_across_resumes(tmp_path):
    """max_seconds is a budget for the whole run: a run interrupted twice and resumed ends after about max_seconds of
    training in total (not max_seconds per call), a resume with the budget spent does no step, and anneal_by_time
    follows the same cumulative clock (the learning rate never jumps back up at a resume)."""
    import time as _time

    budget, pause = 1.2, 0.02

    def slow_loss(m, b):            # about 20 ms a step, so the clock, not the step count, ends the run
        _time.sleep(pause)
        return m(b).pow(2).mean()

    x = torch.randn(16, 4)

    def run(stop=None):
        torch.manual_seed(0)
        c = TrainConfig(steps=10**6, lr=0.1, warmup=0, min_lr_ratio=0.1, max_seconds=budget, anneal_by_time=True,
                        ema_decay=None, ckpt_dir=tmp_path, ckpt_every=4, progress=False, log_every=1)
        return train(torch.nn.Linear(4, 1), slow_loss, iter(lambda: x, None), c,
                     callback=_interrupt_at(stop) if stop else None)

    train(torch.nn.Linear(4, 1), lambda m, b: m(b).pow(2).mean(), iter(lambda: x, None),  # warm up: the first
          TrainConfig(steps=2, ema_decay=None, progress=False))                               # step of a process is slow
    for stop in (10, 22):           # interrupted after the checkpoints of steps 8 and 20 (the steps after them are redone)
        with pytest.raises(Interrupt):
            run(stop)
    saved = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert saved["step"] == 20 and 20 * pause <= saved["elapsed"] < budget

    r = run()
    assert r.resumed_from == 20 and r.stopped == "time"
    assert budget <= r.seconds < budget + 0.3, r.seconds        # one budget in all, not 1.2 s more after step 20
    assert r.history["time"][-1] < budget + 0.3
    # every step sleeps `pause`, so what was left of the budget after step 20 holds at most this many steps
    assert r.step - 20 <= (budget - saved["elapsed"]) / pause + 2, (r.step, saved["elapsed"])
    lrs = r.history["lr"]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(lrs, lrs[1:])), "the learning rate jumped back up at a resume"
    assert lrs[-1] < 0.1 * 0.1 + 0.05 * 0.1 * 0.9, lrs[-1]       # near the floor at the end of the budget

    again = run()                   # the budget is spent: no further step, reported as stopped by time
    assert again.resumed_from == r.step and again.step == r.step and again.stopped == "time"
    assert again.history["step"] == r.history["step"] and again.seconds < budget + 0.3


def _output_dtypes(amp, monkeypatch, native, steps=300):
    """Train the toy with ``amp`` on the CPU, ``_native_cpu_bf16`` forced to ``native``; the dtypes the network
    produced inside the step, the trained model and its first/last losses."""
    import minidiff.train as T

    monkeypatch.setattr(T, "_native_cpu_bf16", lambda: native)
    model, _, sampler = toy_setup()
    seen = set()

    def loss_fn(m, x):
        t = torch.randint(0, SCHED.T, (x.shape[0],))
        noise = torch.randn_like(x)
        out = m(ddpm.q_sample(SCHED, x, t, noise), t)
        seen.add(out.dtype)
        return torch.nn.functional.mse_loss(out.float(), noise)

    r = train(model, loss_fn, sampler, cfg(steps=steps, amp=amp, log_every=10))
    losses = r.history["loss"]
    return seen, r.model, sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def test_cpu_bf16_autocast_where_native_learns_with_fp32_weights(monkeypatch):
    seen, model, first, last = _output_dtypes("bf16", monkeypatch, native=True)
    assert seen == {torch.bfloat16}, "amp='bf16' on a CPU with native bf16 must run the network under bf16 autocast"
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast keeps the master weights in fp32"
    assert last < 0.7 * first, (first, last)


def test_cpu_bf16_without_native_support_warns_and_runs_fp32(monkeypatch):
    with pytest.warns(UserWarning, match="without native bf16"):
        seen, *_ = _output_dtypes("bf16", monkeypatch, native=False, steps=5)
    assert seen == {torch.float32}


@pytest.mark.parametrize("amp", ["auto", "off"])
def test_cpu_auto_and_off_stay_fp32(amp, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seen, *_ = _output_dtypes(amp, monkeypatch, native=True, steps=5)
    assert seen == {torch.float32}
