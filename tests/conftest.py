"""Shared set-up: Triton's interpreter for the kernel tests, and one real build of the website per test session (used by test_book.py and test_site.py)."""

import os

import torch  # importing torch and asking torch.cuda.is_available() do not import triton (test_kernel_selfcheck.py)

# Without a CUDA device the Triton kernels run only through Triton's interpreter, which must be switched on before
# triton is first imported (tests/test_kernels.py, tests/test_kernel_selfcheck.py). With one, the tests check the
# compiled kernels; set TRITON_INTERPRET=1 yourself to test the interpreter there.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """Build the book once (ci profile) with warnings turned into errors; yields the html folder."""
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, MINIDIFF_PROFILE="ci", MINIDIFF_STATIC="1")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          env=env, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    warnings = [l for l in log.splitlines() if "WARNING" in l and "Kernel is running over TCP" not in l]
    assert proc.returncode == 0 and not warnings, "book build failed or warned:\n" + "\n".join(warnings or log.splitlines()[-40:])
    return out / "_build" / "html"


@pytest.fixture
def triton_present():
    """Skip where Triton does not import and torch does not need it; fail where torch requires it (broken install)."""
    from minidiff import kernels

    problem = kernels.triton_problem()
    if problem is not None:
        kind, message = problem
        if kind == "broken":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
