"""Shared set-up: Triton's interpreter for the kernel tests, and one real build of the website per test session (used by test_book.py and test_site.py)."""

import os

import torch  # importing torch and asking torch.cuda.is_available() do not import triton (test_kernel_selfcheck.py)

# Without a CUDA device the Triton kernels run only through Triton's interpreter, which must be switched on before
# triton is first imported (tests/test_kernels.py, tests/test_kernel_selfcheck.py). With one, the tests check the
# compiled kernels; set TRITON_INTERPRET=1 yourself to test the interpreter there.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _chapters_in_toc() -> list[Path]:
    """The chapters _toc.yml lists, in reading order (the GPU check's reader of the table of contents)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_check import toc_chapters

    return toc_chapters(ROOT / "_toc.yml")


_TOP_LEVEL_SKIPPED = {".git", ".venv", "_build", "runs", "checkpoints", "data", "test-artifacts", ".pytest_cache", ".whl"}


def _skip_copy(folder, names):
    """What the book's source copy leaves out: build outputs and local state at the top, caches everywhere."""
    top = Path(folder).resolve() == ROOT
    return [n for n in names if (top and n in _TOP_LEVEL_SKIPPED) or n in {"__pycache__", ".jupyter_cache"}
            or n.endswith(".egg-info")]


@pytest.fixture(scope="session")
def built_book(request, tmp_path_factory):
    """Build the book once (ci profile) with warnings turned into errors; yields the html folder.

    When nbval already ran every chapter in this session (``make test`` runs the notebooks first, see the root
    conftest), the book is built from those executed notebooks, in a copy of the sources with execution switched
    off: each chapter executes once per ``make test``. Otherwise (e.g. ``pytest tests/test_site.py`` alone) the
    build executes the chapters itself."""
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, MINIDIFF_PROFILE="ci", MINIDIFF_STATIC="1")
    src = ROOT
    runs = getattr(request.config, "_minidiff_notebook_runs", None)
    executed = runs.complete(_chapters_in_toc()) if runs is not None else None
    if executed:
        import nbformat

        src = out / "src"
        shutil.copytree(ROOT, src, ignore=_skip_copy)
        for path, nb in executed.items():
            nbformat.write(nb, str(src / path.relative_to(ROOT)))
        cfg = (src / "_config.yml").read_text()
        assert "execute_notebooks: cache" in cfg, "_config.yml: expected 'execute_notebooks: cache' to switch off"
        (src / "_config.yml").write_text(cfg.replace("execute_notebooks: cache", 'execute_notebooks: "off"'))
    print(f"\nbuilding the book from {'the notebooks nbval executed' if executed else 'the sources (executing them)'}")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(src), "--path-output", str(out), "-W", "-n", "--keep-going"],
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
