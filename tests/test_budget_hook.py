"""The chapter time budget (conftest.py) really fails a run whose notebook is too slow."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("budget, expect_fail", [("0.5", True), ("60", False)])
def test_budget_hook(tmp_path, budget, expect_fail):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(1.0)")])
    nbformat.write(nb, tmp_path / "slow.ipynb")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    env = {"MINIDIFF_CHAPTER_BUDGET_S": budget, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "slow.ipynb"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode != 0) == expect_fail, proc.stdout[-2000:]
    assert ("OVER BUDGET" in proc.stdout) == expect_fail
