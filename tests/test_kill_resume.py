"""Training never loses work: SIGKILL the training process at ten random moments (checkpoint writes included),
resume after each, and end with exactly the weights of a run that was never interrupted."""

import collections
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minidiff.train import list_checkpoints, load_checkpoint

TARGET = Path(__file__).with_name("kill_target.py")
STEPS = 300
N_KILLS = 10
AHEAD = 3   # processes started ahead of their turn


_STARTED: list = []   # every process this module started, killed at the end of the test if still running


def spawn(ckpt_dir, out):
    """A training process that has done its imports and waits for "go" (it has not touched ``ckpt_dir`` yet): the
    test starts the next one while the current one trains, so the ten restarts do not each wait for torch's import."""
    p = subprocess.Popen([sys.executable, str(TARGET), str(ckpt_dir), str(out), str(STEPS)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(p)
    return p


def go(p):
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read()
    p.stdin.write("go\n")
    p.stdin.flush()
    line = p.stdout.readline()   # "stepping K": past start-up, the first step of this process is done
    # "done N": a kill that landed after the last checkpoint was written, before the process exited, leaves nothing
    # to train; the resumed run only writes the final weights (which the test then compares)
    assert line.startswith(("stepping", "done")), p.stderr.read()
    return p


def finish(p):
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    return out


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_identical_weights(tmp_path):
    # the uninterrupted reference, and how long its training takes (the window the kills are drawn from)
    ckpt = tmp_path / "killed"
    try:
        ref_proc = go(spawn(tmp_path / "ref", tmp_path / "ref.pt"))
        t0 = time.perf_counter()
        # the runs to kill import torch ahead of their turn, a few at a time, while the current one trains
        waiting = collections.deque(spawn(ckpt, tmp_path / "killed.pt") for _ in range(AHEAD))
        finish(ref_proc)
        window = time.perf_counter() - t0
        ref = torch.load(tmp_path / "ref.pt", weights_only=True)

        rng = random.Random(2026)
        kills, attempts, steps_at_kill = 0, 0, []
        while kills < N_KILLS:
            attempts += 1
            assert attempts < 4 * N_KILLS, f"only {kills} kills landed in {attempts} attempts"
            p = go(waiting.popleft())
            waiting.append(spawn(ckpt, tmp_path / "killed.pt"))
            time.sleep(rng.uniform(0.02, window / N_KILLS))   # on average half the run over the ten kills
            if p.poll() is not None:        # finished before the kill: no kill point, start over from scratch
                finish(p)
                for f in ckpt.iterdir():
                    f.unlink()
                (tmp_path / "killed.pt").unlink()
                kills, steps_at_kill = 0, []
                continue
            p.send_signal(signal.SIGKILL)
            p.wait()
            assert p.returncode == -signal.SIGKILL
            kills += 1
            # every checkpoint file on disk is readable; half-written temp files are never named ckpt_*.pt
            files = list_checkpoints(ckpt)
            for f in files:
                state = load_checkpoint(f)
                assert 0 < state["step"] <= STEPS
            steps_at_kill.append(load_checkpoint(files[-1])["step"] if files else 0)
        finish(go(waiting.popleft()))
    finally:
        # spares never told to go (they have not touched the folder), or a run left by a failure above
        for p in _STARTED:
            if p.poll() is None:
                p.kill()
                p.communicate()
        _STARTED.clear()
    assert steps_at_kill == sorted(steps_at_kill), steps_at_kill   # resuming always moved forward
    assert len(set(steps_at_kill)) >= N_KILLS // 2, steps_at_kill    # the kills landed at different points

    got = torch.load(tmp_path / "killed.pt", weights_only=True)
    assert got["resumed_from"] == steps_at_kill[-1]
    for name, w in ref["model"].items():
        assert torch.equal(w, got["model"][name]), f"weights differ after {N_KILLS} kills: {name}"
    for name, w in ref["ema"].items():
        assert torch.equal(w, got["ema"][name]), f"EMA differs after {N_KILLS} kills: {name}"
    assert torch.equal(ref["loss"], got["loss"])
    assert not [f for f in ckpt.iterdir() if f.suffix == ".tmp"], "stale temp files were not cleaned up"
    print(f"\n{N_KILLS} SIGKILLs survived at steps {steps_at_kill} of {STEPS} (reference run {window:.1f} s)")
