"""Progress bars as a reader sees them: in a notebook executed without a frontend (the website build, nbval) a bar
leaves one line, its final state, and nothing while it runs (no "0%" line, no carriage returns); in a terminal it is
tqdm's usual bar."""

import sys
import types

import pytest

from minidiff import _progress


@pytest.fixture
def executed_notebook(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or types.ModuleType("ipykernel"))
    monkeypatch.setenv("MINIDIFF_STATIC", "1")


def test_a_bar_in_an_executed_notebook_leaves_one_final_line(executed_notebook, capsys):
    bar = _progress.tqdm(total=50, desc="training")
    for _ in range(50):
        bar.update(1)
        bar.set_postfix(loss="0.1234", refresh=False)
    bar.close()
    for _ in _progress.tqdm(range(3), desc="runs"):
        pass
    _progress.tqdm(total=5, desc="hidden", disable=True).close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("training: 100%") and "50/50" in lines[0] and "loss=0.1234" in lines[0]
    assert lines[1].startswith("runs: 100%") and "3/3" in lines[1]


def test_a_bar_closed_early_shows_where_it_stopped(executed_notebook, capsys):
    bar = _progress.tqdm(total=10, desc="budget")
    bar.update(4)
    bar.close()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("budget:  40%") and "4/10" in line


def test_in_a_terminal_the_bar_is_tqdms_own(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    from tqdm.std import tqdm

    bar = _progress.tqdm(total=3, disable=True)
    assert type(bar) is tqdm
