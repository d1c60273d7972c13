"""Root pytest configuration: enforce each chapter's time budget when chapters run under nbval.

nbval runs one test item per notebook cell; we add up the cell durations of each notebook and fail the session
if a chapter exceeds the budget of the active profile (``minidiff.config.Profile.chapter_budget_s``; 60 s in ci),
or ``$MINIDIFF_CHAPTER_BUDGET_S`` when set.
"""

from __future__ import annotations

import collections
import os

_durations: dict[str, float] = collections.defaultdict(float)


def _budget() -> float:
    if os.environ.get("MINIDIFF_CHAPTER_BUDGET_S"):
        return float(os.environ["MINIDIFF_CHAPTER_BUDGET_S"])
    from minidiff.config import get_profile

    return get_profile().chapter_budget_s


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _durations[path] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _durations:
        return
    budget = _budget()
    terminalreporter.section("chapter runtimes (nbval)")
    for path, secs in sorted(_durations.items()):
        flag = "" if secs <= budget else f"  OVER BUDGET ({budget:.0f} s)"
        terminalreporter.write_line(f"{path}: {secs:.1f} s{flag}")


def pytest_sessionfinish(session, exitstatus):
    if not _durations:
        return
    budget = _budget()
    over = {p: s for p, s in _durations.items() if s > budget}
    if over and session.exitstatus == 0:
        session.exitstatus = 1
        print("\nchapters over their time budget: " + ", ".join(f"{p} ({s:.0f} s > {budget:.0f} s)" for p, s in over.items()))
