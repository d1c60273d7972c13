"""Data-parallel training under torchrun (issue: scale out with torch's own engine), on two CPU processes (gloo).

tests/ddp_target.py is the run: chapter 04's loss with each example's time step and noise fixed in the data, so
the result cannot depend on how many processes share a batch. (a) Two ranks with global batch B end with the weights
(and EMA) of one process with batch B; (b) both ranks killed mid-run and relaunched end exactly where an
uninterrupted two-rank run ends; (c) only rank 0 writes checkpoint files; (d) a bad setup fails with a message that
names it; and ``torchrun -m minidiff.train --chapter 04_ddpm`` runs.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddp_target  # noqa: E402

pytestmark = pytest.mark.slow
STEPS = 12


def torchrun(*args, nproc=2, timeout=240, env=None):
    """Launch ``args`` under torchrun on ``nproc`` CPU processes (gloo); returns the finished process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One uninterrupted two-rank run of STEPS steps with checkpoints; its folder."""
    out = tmp_path_factory.mktemp("ddp")
    proc = torchrun(ROOT / "tests" / "ddp_target.py", out, "--steps", STEPS, "--ckpt", out / "ckpt")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _load(path):
    return torch.load(path, weights_only=True)


def test_two_ranks_equal_one_process_with_the_same_global_batch(two_ranks):
    one = ddp_target.run(STEPS, 16, world_size=1, rank=0)
    r0, r1 = _load(two_ranks / "weights-rank0.pt"), _load(two_ranks / "weights-rank1.pt")
    assert r0["step"] == r1["step"] == STEPS
    for name, w in one.model.state_dict().items():
        # float32 sums taken in another order (two half-batch means averaged vs one mean): ~1e-7 per step
        assert torch.allclose(r0["model"][name], w, atol=2e-5, rtol=1e-4), name
        assert torch.equal(r0["model"][name], r1["model"][name]), f"the ranks disagree on {name}"
    for name, w in one.ema.state_dict().items():
        assert torch.allclose(r0["ema"][name], w, atol=2e-5, rtol=1e-4), f"EMA {name}"
    assert r1["ema"] is None, "only rank 0 keeps the EMA"
    # the logged loss is the mean over the whole global batch, as in one process
    assert torch.allclose(torch.tensor(r0["loss"]), torch.tensor(one.history["loss"]), rtol=1e-4)


def test_a_mistake_in_sharding_would_be_seen():
    """The comparison above can fail: one process with half the batch (what a rank sees) ends elsewhere."""
    one = ddp_target.run(STEPS, 16, world_size=1, rank=0)
    half = ddp_target.run(STEPS, 16, world_size=2, rank=0)      # one rank's shard, without the other's gradients
    assert max((a - b).abs().max() for a, b in zip(one.model.state_dict().values(),
                                                    half.model.state_dict().values())) > 1e-3


def test_only_rank_0_writes_checkpoints(two_ranks):
    written = (two_ranks / "writes-rank0.txt").read_text().split()
    assert written and (two_ranks / "writes-rank1.txt").read_text() == ""
    assert sorted(p.name for p in (two_ranks / "ckpt").iterdir()) == ["ckpt_00000010.pt", "ckpt_00000012.pt"]
    state = _load(two_ranks / "ckpt" / "ckpt_00000012.pt")
    assert len(state["rng_ranks"]) == 2, "every rank's RNG states are in rank 0's checkpoint"


def test_killed_and_relaunched_equals_uninterrupted(two_ranks, tmp_path):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    killed = torchrun(ROOT / "tests" / "ddp_target.py", out, "--steps", STEPS, "--ckpt", ckpt, "--stop-at", 8)
    assert killed.returncode != 0 and not (out / "weights-rank0.pt").exists()
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt_00000005.pt"], "the run died after step 8"
    again = torchrun(ROOT / "tests" / "ddp_target.py", out, "--steps", STEPS, "--ckpt", ckpt)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    want, got = _load(two_ranks / "weights-rank0.pt"), _load(out / "weights-rank0.pt")
    for name in want["model"]:
        assert torch.equal(got["model"][name], want["model"][name]), name
        assert torch.equal(_load(out / "weights-rank1.pt")["model"][name], want["model"][name]), name


def test_a_batch_that_does_not_divide_is_refused():
    from minidiff import data

    x = torch.zeros(40, 2)
    with pytest.raises(ValueError, match="global batch of 10 does not divide among 3 ranks"):
        data.TensorSampler(x, batch_size=10, world_size=3, rank=0)
    with pytest.raises(ValueError, match="rank must be an int in"):
        data.TensorSampler(x, batch_size=12, world_size=3, rank=3)
    shards = [data.TensorSampler(torch.arange(40), batch_size=12, world_size=3, rank=r, seed=5) for r in range(3)]
    whole = data.TensorSampler(torch.arange(40), batch_size=12, seed=5)
    for _ in range(5):                       # disjoint shards that together are the one-process batch
        assert torch.equal(torch.cat([next(s) for s in shards]), next(whole))


def test_a_batch_that_does_not_divide_fails_the_launch_with_its_reason(tmp_path):
    proc = torchrun(ROOT / "tests" / "ddp_target.py", tmp_path, "--steps", 2, "--batch", 9)
    assert proc.returncode != 0
    assert "global batch of 9 does not divide among 2 ranks" in proc.stdout + proc.stderr


def test_an_incomplete_environment_is_named(monkeypatch):
    from minidiff import distributed

    for k in distributed.ENV:
        monkeypatch.delenv(k, raising=False)
    assert distributed.setup() is False and distributed.world_size() == 1 and distributed.is_main()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedSetupError, match="missing: LOCAL_RANK, MASTER_ADDR, MASTER_PORT"):
        distributed.setup()
    for k, v in (("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(distributed.DistributedSetupError, match=r"RANK=2 must lie in \[0, WORLD_SIZE=2\)"):
        distributed.setup()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(distributed.DistributedSetupError, match="WORLD_SIZE='two' is not an integer"):
        distributed.setup()


def test_the_book_one_liner_trains_chapter_04_on_two_processes(tmp_path):
    proc = torchrun("-m", "minidiff.train", "--chapter", "04_ddpm", "--steps", 3, "--ckpt-dir", tmp_path,
                    env={"MINIDIFF_PROFILE": "ci"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "04_ddpm: 3 steps" in proc.stdout and "on 2 processes" in proc.stdout
    assert proc.stdout.count("04_ddpm: 3 steps") == 1, "only rank 0 reports"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_00000003.pt"]
