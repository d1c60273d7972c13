"""The chapter time budget (conftest.py) really fails a run whose notebook is too slow."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("budget, tolerance, expect_fail", [("0.5", "", True), ("60", "", False), ("0.5", "10", False)])
def test_budget_hook(tmp_path, budget, tolerance, expect_fail):
    """A notebook of at least 1 s fails a 0.5 s budget (limit 1 s with the default tolerance 2), passes 60 s,
    and is only reported "over target" for 0.5 s with a tolerance of 10 (limit 5 s)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(1.0)")])
    nbformat.write(nb, tmp_path / "slow.ipynb")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    env = {"MINIDIFF_CHAPTER_BUDGET_S": budget, "MINIDIFF_BUDGET_TOLERANCE": tolerance, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "slow.ipynb"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode != 0) == expect_fail, proc.stdout[-2000:]
    assert ("OVER BUDGET" in proc.stdout) == expect_fail
    assert ("over target" in proc.stdout) == (tolerance == "10")


CHECK_RUNS = '''
from pathlib import Path

def test_z_runs(request):
    runs = request.config._minidiff_notebook_runs
    good, bad = Path("good.ipynb").resolve(), Path("bad.ipynb").resolve()
    assert runs.complete([good, bad]) is None            # bad.ipynb did not run completely
    nb = runs.complete([good])[good]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    assert code[0].outputs[0]["text"] == "hello\\n"
    assert code[1].outputs[0]["output_type"] == "execute_result"
    assert code[1].outputs[0]["data"]["text/plain"] == "42"
    assert nb.cells[1].cell_type == "markdown"
    print("CHECKED")
'''


def test_executed_notebooks_are_kept_and_run_first(tmp_path):
    """The root conftest keeps what nbval executed (the book tests build from it), only for notebooks that ran
    completely, and runs notebooks before the other tests even when listed after them."""
    v4 = nbformat.v4
    nbformat.write(v4.new_notebook(cells=[v4.new_code_cell("print('hello')"), v4.new_markdown_cell("# text"),
                                          v4.new_code_cell("6 * 7")]), tmp_path / "good.ipynb")
    nbformat.write(v4.new_notebook(cells=[v4.new_code_cell("1 / 0"), v4.new_code_cell("2")]), tmp_path / "bad.ipynb")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_runs.py").write_text(CHECK_RUNS)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "test_runs.py", "good.ipynb", "bad.ipynb"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "CHECKED" in proc.stdout and "1 failed" in proc.stdout, proc.stdout[-3000:]
