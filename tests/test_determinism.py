"""Determinism: the same seed gives the same numbers in the ci profile, run twice in fresh processes (training
losses, DDIM samples, FID, SimCLR with random augmentations); another seed gives different ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).with_name("determinism_target.py")


def run(seed):
    env = dict(os.environ, MINIDIFF_PROFILE="ci", MINIDIFF_STATIC="1")
    p = subprocess.run([sys.executable, str(TARGET), str(seed)], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_same_seed_same_numbers_in_fresh_processes():
    a, b, c = run(0), run(0), run(1)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], f"{k} differs between two runs with seed 0: {a[k]} vs {b[k]}"
    for k in ("ddpm_loss", "samples_sum", "fid", "simclr_loss"):
        assert a[k] != c[k], f"{k} is the same for seeds 0 and 1: the seed is not used"
    assert len(a["ddpm_loss"]) == 30 and len(a["simclr_loss"]) == 8
