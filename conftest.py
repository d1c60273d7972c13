"""Root pytest configuration for the chapters that run under nbval.

1. Time budget: nbval runs one test item per notebook cell; we add up the cell durations of each notebook. The
   budget of the active profile (``minidiff.config.Profile.chapter_budget_s``; 60 s in ci, or
   ``$MINIDIFF_CHAPTER_BUDGET_S`` when set) is the target the chapters are sized for: a chapter above it is reported
   ("over target"). The session fails when a chapter takes more than the budget times ``$MINIDIFF_BUDGET_TOLERANCE``
   (default 2), because the shared 2-core machines CI and this project run on vary that much for identical work
   (measured: one training cell of chapter 01 took 16.9 s and 28.7 s in two runs minutes apart; chapter 01 took 85 s
   on CI against 45 s here). A chapter that outgrows its size (over 120 s in ci) still fails.
2. Each chapter executes once per session: notebooks run first (before the unit tests), and the outputs nbval
   receives are kept, so the website tests (``built_book`` in ``tests/conftest.py``) build the book from the notebooks
   nbval executed instead of executing every chapter a second time (``config._minidiff_notebook_runs.complete``).
3. One artifact folder per session, as ``make book`` has per build: unless ``$MINIDIFF_CHECKPOINT_DIR`` is set, the
   chapters run with it pointing at a fresh temporary folder (``config._minidiff_artifacts``), so chapters share
   what they trained (chapter 10's autoencoder in 11), and the mutation test of the from-scratch cells
   (``tests/test_from_scratch.py``) re-runs the few cells it needs on finished checkpoints instead of training again.
   The variable is removed before the first unit test, so the unit tests see the environment they were written for.
   (The student-edition test, ``tests/test_student.py``, reads what nbval executed instead of running a chapter's
   cells before its first exercise a second time.)
"""

from __future__ import annotations

import collections
import copy
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

_durations: dict[str, float] = collections.defaultdict(float)


def _budget(path: str | None = None) -> float:
    """The target of chapter ``path`` (a notebook path), or the profile's default target."""
    if os.environ.get("MINIDIFF_CHAPTER_BUDGET_S"):
        return float(os.environ["MINIDIFF_CHAPTER_BUDGET_S"])
    from minidiff.config import get_profile

    P = get_profile()
    return P.budget_for(Path(path).stem) if path else P.chapter_budget_s


def _tolerance() -> float:
    return float(os.environ.get("MINIDIFF_BUDGET_TOLERANCE") or 2.0)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _durations[path] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _durations:
        return
    budget = _budget()
    terminalreporter.section(f"chapter runtimes (nbval): target {budget:.0f} s, failing above "
                             f"{budget * _tolerance():.0f} s (unless a chapter has its own)")
    for path, secs in sorted(_durations.items()):
        budget = _budget(path)
        limit = budget * _tolerance()
        flag = "" if secs <= budget else f"  over target ({budget:.0f} s)" if secs <= limit else \
            f"  OVER BUDGET ({budget:.0f} s x {_tolerance():g} = {limit:.0f} s)"
        terminalreporter.write_line(f"{path}: {secs:.1f} s{flag}")


def pytest_sessionfinish(session, exitstatus):
    if not _durations:
        return
    over = {p: (s, _budget(p) * _tolerance()) for p, s in _durations.items() if s > _budget(p) * _tolerance()}
    if over and session.exitstatus == 0:
        session.exitstatus = 1
        print("\nchapters over their time budget: "
              + ", ".join(f"{p} ({s:.0f} s > {limit:.0f} s)" for p, (s, limit) in over.items()))


# ----------------------------------------------------------------------------- notebooks executed once per session

def _is_notebook_item(item) -> bool:
    return item.nodeid.split("::")[0].endswith(".ipynb")


def pytest_collection_modifyitems(session, config, items):
    """Notebook cells first (in their order), then everything else: the website tests reuse what the chapters ran."""
    items[:] = [i for i in items if _is_notebook_item(i)] + [i for i in items if not _is_notebook_item(i)]
    if any(_is_notebook_item(i) for i in items) and not os.environ.get(_CHECKPOINT_ENV, "").strip():
        config._minidiff_artifacts = Path(tempfile.mkdtemp(prefix="minidiff-artifacts-"))
        os.environ[_CHECKPOINT_ENV] = str(config._minidiff_artifacts)
        config._minidiff_artifacts_env = True


_CHECKPOINT_ENV = "MINIDIFF_CHECKPOINT_DIR"   # minidiff.config.CHECKPOINT_ENV (not imported: torch loads slowly)


def pytest_runtest_setup(item):
    """The chapters' artifact folder is theirs: the first unit test runs without it in the environment."""
    if not _is_notebook_item(item) and getattr(item.config, "_minidiff_artifacts_env", False):
        os.environ.pop(_CHECKPOINT_ENV, None)
        item.config._minidiff_artifacts_env = False


def pytest_unconfigure(config):
    folder = getattr(config, "_minidiff_artifacts", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _quiet(source: str) -> bool:
    """Whether IPython would hide the value of a cell ending in ``;``. nbval runs cells without storing them in the
    kernel's history, where IPython looks for that semicolon, so its outputs hold the value as well (a figure
    returned by the last call appears twice); the website built from them drops it, as a live kernel does."""
    from IPython.core.displayhook import DisplayHook

    try:
        return DisplayHook.semicolon_at_end_of_expression(source)
    except Exception:   # noqa: BLE001  (a cell IPython's tokenizer cannot read: keep its outputs)
        return False


class _NotebookRuns:
    """What nbval executed in this session: per notebook, its parsed source and each code cell's outputs."""

    def __init__(self):
        self.source: dict[Path, object] = {}                # notebook path -> nbformat node nbval read
        self.outputs: dict[Path, dict[int, list]] = collections.defaultdict(dict)  # path -> code cell -> outputs
        self.failed: set[Path] = set()

    def record(self, item, report) -> None:
        path = Path(str(item.fspath)).resolve()
        self.source.setdefault(path, item.parent.nb)
        if report.passed and item.test_outputs is not None:
            self.outputs[path][item.cell_num] = copy.deepcopy(item.test_outputs)
        else:
            self.failed.add(path)

    def notebook(self, path: Path):
        """The executed notebook at ``path``, or None unless every code cell ran and passed in this session."""
        path = Path(path).resolve()
        if path in self.failed or path not in self.source:
            return None
        nb = copy.deepcopy(self.source[path])
        code = [c for c in nb.cells if c.cell_type == "code"]
        if set(self.outputs[path]) != set(range(len(code))):
            return None
        for n, cell in enumerate(code):
            cell.execution_count = n + 1
            cell.outputs = self.outputs[path][n]
            if _quiet(cell.source):       # what IPython shows for a cell ending in ';' (nbval loses it, below)
                cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = n + 1
        return nb

    def complete(self, paths) -> dict | None:
        """``{path: executed notebook}`` for all of ``paths`` if nbval ran every one of them completely in this
        session, else None (the caller then executes them itself)."""
        out = {Path(p): self.notebook(p) for p in paths}
        return None if not out or any(nb is None for nb in out.values()) else out


def pytest_configure(config):
    config._minidiff_notebook_runs = _NotebookRuns()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and hasattr(item, "test_outputs") and hasattr(item, "cell_num"):
        item.config._minidiff_notebook_runs.record(item, report)
    elif report.when == "setup" and not report.passed and hasattr(item, "cell_num"):
        item.config._minidiff_notebook_runs.failed.add(Path(str(item.fspath)).resolve())

