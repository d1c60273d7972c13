"""Installation as people meet it.

- ``scripts/check_install.py`` (run by ``make setup``): a torch/torchvision pair that cannot load torchvision's
  operators, or a triton that is not the one torch requires, is one sentence naming both versions and the fix.
- The Colab path: a fresh virtual environment that already holds a torch (here: a ``.pth`` file pointing at a copy
  of this environment's site-packages without minidiff, standing in for Colab's preinstalled packages) runs the
  chapters' setup cell, which installs ``minidiff`` from a clone of this repository, offline. torch and
  torchvision must be untouched (same version, same files), nothing but minidiff may be installed (no book or test
  tool chain), and ``import minidiff`` must then work from the installed copy. A wrong repository URL must end in
  one sentence naming the URL, with pip's own error shown.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_install  # noqa: E402
import sync_setup_cells  # noqa: E402


# ----------------------------------------------------------------------------- check_install


def test_the_torchvision_mismatch_of_issue_16_is_one_sentence_with_both_versions_and_the_fix():
    problems = check_install.check("2.13.0+cpu", "0.28.0", "RuntimeError: operator torchvision::nms does not exist",
                                   None, None, None)
    assert len(problems) == 1
    p = problems[0]
    assert "torchvision 0.28.0" in p and "torch 2.13.0+cpu" in p and "fix:" in p
    assert "torchvision==0.28.*" in p and "whl/cpu" in p     # a CPU torch needs torchvision from the CPU index
    # a matching local tag: reinstall the pair from one index
    p = check_install.check("2.14.1", "0.28.0", "RuntimeError: boom", None, None, None)[0]
    assert "'torch==2.14.1' 'torchvision==0.29.*'" in p


def test_a_working_set_has_no_problems_and_triton_must_be_the_one_torch_requires():
    assert check_install.check("2.14.1", "0.29.1", None, "triton~=3.8.0", "3.8.0", None) == []
    assert check_install.check("2.3.0", "0.18.0", None, None, None, None) == []
    [p] = check_install.check("2.14.1", "0.29.1", None, "triton~=3.8.0", "3.9.0", None)
    assert "requires triton~=3.8.0" in p and "triton 3.9.0 is installed" in p and "do not pin triton" in p
    [p] = check_install.check("2.14.1", "0.29.1", None, "triton==3.8.0", None, None)
    assert "triton is not installed" in p
    assert "torch is not installed" in check_install.check(None, None, None, None, None, None)[0]


def test_matching_torchvision_and_the_triton_requirement_of_this_platform():
    assert check_install.matching_torchvision("2.14.1+cu130") == "0.29.*"
    assert check_install.matching_torchvision("2.3.0") == "0.18.*"
    assert check_install.matching_torchvision("1.13.1") is None
    here = 'platform_system == "%s"' % __import__("platform").system()
    assert check_install.required_triton([f"triton==3.8.0; {here}", "numpy"]) == "triton==3.8.0"
    assert check_install.required_triton(['triton==3.8.0; platform_system == "NoSuchOS"']) is None
    assert check_install.required_triton(["filelock", "sympy>=1.13"]) is None


def test_check_install_passes_in_this_environment():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_install.py")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"torch {md.version('torch')}" in proc.stdout and f"torchvision {md.version('torchvision')}" in proc.stdout


def test_no_dependency_pins_anything_torch_pins():
    """The test extra once pinned triton apart from torch, which made pip backtrack to a torch/torchvision pair that
    cannot load (issue 16). Nothing that torch pins (``==`` or ``~=``: triton, the CUDA libraries) may be named by the
    package, and torch itself has no upper bound and no exact version."""
    import tomllib

    from packaging.requirements import Requirement

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    reqs += [Requirement(r) for extra in meta["optional-dependencies"].values() for r in extra]
    pinned_by_torch = {r.name.lower() for r in map(Requirement, md.requires("torch") or [])
                       if any(s.operator in ("==", "~=", "===") for s in r.specifier)}
    assert "triton" in pinned_by_torch or sys.platform != "linux"   # the case this test is about
    clash = {r.name.lower() for r in reqs} & pinned_by_torch
    assert not clash, f"pinned apart from torch: {clash}"
    [torch_req] = [r for r in reqs if r.name == "torch"]
    assert all(s.operator == ">=" for s in torch_req.specifier), str(torch_req)


# ----------------------------------------------------------------------------- the Colab path


def _state(python: Path, cwd: Path, env: dict) -> dict:
    code = ("import json, importlib.metadata as md, torch, torchvision; "
            "print(json.dumps({'torch': torch.__version__, 'torchvision': torchvision.__version__, "
            "'torch_file': torch.__file__, 'torchvision_file': torchvision.__file__}))")
    out = subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_colab_style_install_leaves_torch_alone_and_pulls_no_tool_chain(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository (it installs from a clone)")
    # 1. the repository as Colab reaches it: a clone (what is committed), at the current branch
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    ref = subprocess.run(["git", "-C", str(clone), "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    if ref == "HEAD":   # detached: use the commit
        ref = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()

    # 2. a runtime with torch preinstalled: this environment's packages minus minidiff, reached through a .pth file
    runtime = tmp_path / "runtime-packages"
    runtime.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if "minidiff" not in entry.name.lower() and entry.suffix != ".pth":
            (runtime / entry.name).symlink_to(entry)
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    vsite = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip())
    (vsite / "runtime.pth").write_text(str(runtime) + "\n")
    work = tmp_path / "work"    # run from an empty folder, so the repository on disk is not importable
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MINIDIFF_PROFILE="ci", MINIDIFF_STATIC="1", MINIDIFF_CHECKPOINT_DIR="off",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_BUILD_ISOLATION="0")   # pip's inverted switch: "0" turns build isolation off (offline build)
    before = _state(py, work, env)
    assert subprocess.run([str(py), "-c", "import minidiff"], cwd=work, env=env, capture_output=True).returncode != 0, \
        "minidiff must not be importable before the setup cell runs"
    listed_before = {p.name for p in vsite.iterdir()}

    def setup_cell(url: str, ref: str) -> str:
        src = sync_setup_cells.setup_source("04_ddpm")
        line = f'REPO_URL, REF = "{sync_setup_cells.repo_url()}", "{sync_setup_cells.repo_ref()}"'
        assert line in src, "the setup cell no longer sets REPO_URL and REF on one line"
        return src.replace(line, f'REPO_URL, REF = "{url}", "{ref}"')

    # 3. a wrong repository URL: pip's error is shown, then one sentence naming the URL and what to set
    bad = subprocess.run([str(py), "-c", setup_cell(f"file://localhost{tmp_path}/no-such-repo", ref)], cwd=work,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "does not appear to be a git repository" in bad.stdout and "did not run successfully" in bad.stdout, \
        "pip's own error must be shown:\n" + bad.stdout
    assert f"could not install minidiff from file://localhost{tmp_path}/no-such-repo@{ref}" in bad.stderr
    assert "set REPO_URL and REF" in bad.stderr

    # 4. the setup cell, as in every chapter, installing from the clone (pip rejects git+file:///path: use localhost)
    good = subprocess.run([str(py), "-c", setup_cell(f"file://localhost{clone}", ref)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Successfully installed minidiff" in good.stdout
    assert "minidiff | profile=ci" in good.stdout        # the banner: config imported from the installed package

    # torch and torchvision untouched: same versions, imported from the same files, nothing else installed
    after = _state(py, work, env)
    assert after == before
    new = sorted({p.name for p in vsite.iterdir()} - listed_before)
    assert new and all("minidiff" in n.lower() for n in new), f"the install pulled more than minidiff: {new}"
    for word in ("Uninstalling torch", "Installing collected packages: torch", "Collecting torch"):
        assert word not in good.stdout
    # the installed copy is the one imported, and its base requirements carry no book/test tool chain
    check = subprocess.run([str(py), "-c", "import minidiff, importlib.metadata as md; print(minidiff.__file__); "
                            "print('\\n'.join(md.requires('minidiff') or []))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0].startswith(str(vsite)), f"minidiff imported from {lines[0]}, not from the new environment"
    base = [r for r in lines[1:] if "extra ==" not in r]
    for tool in ("jupyter-book", "jupyterlab", "pytest", "nbval", "playwright", "sphinx"):
        assert not any(r.lower().startswith(tool) for r in base), f"the base install requires {tool}: {base}"

    # 5. run again: minidiff is importable now, so the cell does not call pip at all
    again = subprocess.run([str(py), "-c", setup_cell(f"file://localhost{tmp_path}/no-such-repo", ref)], cwd=work,
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "pip" not in again.stdout.lower(), again.stdout + again.stderr
