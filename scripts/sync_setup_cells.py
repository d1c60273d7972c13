"""Write the standard setup cell into every chapter notebook (and strip outputs).

    python scripts/sync_setup_cells.py          # rewrite chapters/*.ipynb in place
    python scripts/sync_setup_cells.py --check  # exit 1 if any chapter differs (used by the tests)

The repository URL and the ref (branch or release tag) are defined once, in ``_config.yml`` (``repository.url``
and ``repository.branch``): the launch buttons open the notebooks at that ref, and the setup cell is this template
with the same URL and ref and the chapter's name filled in, so a notebook never runs against a package from another
version and every chapter starts identically. Each notebook's metadata also asks Colab for a GPU runtime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
SETUP_TAG = "minidiff-setup"

TEMPLATE = '''\
# Setup: identical in every chapter (written by `make sync` from _config.yml).
# Where minidiff is not installed (Colab, Kaggle, a bare Jupyter) it is installed from
# the repository at the ref the launch buttons open; the runtime's own torch is used.
# A browser disconnect leaves the runtime running: reconnect and go on. A runtime reset
# (or a timeout) erases its disk and packages: run the chapter again from here; with
# config.use_google_drive() training resumes from its last checkpoint and finished
# results are reloaded, because they live on your Drive.
import importlib, importlib.util, subprocess, sys
REPO_URL, REF = "{url}", "{ref}"
if importlib.util.find_spec("minidiff") is None:
    pip = subprocess.run([sys.executable, "-m", "pip", "install",
                          f"minidiff @ git+{{REPO_URL}}@{{REF}}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # pip's own words, errors included
    print(pip.stdout if pip.returncode else pip.stdout.strip().rsplit("\\n", 1)[-1])
    if pip.returncode:
        raise RuntimeError(
            f"could not install minidiff from {{REPO_URL}}@{{REF}} (pip's errors are "
            "printed above); if the course lives in another repository or branch, set "
            "REPO_URL and REF in this cell")
    importlib.invalidate_caches()

from minidiff import config
# Colab: keep checkpoints and finished results on Drive, so they survive a runtime reset
# config.use_google_drive()
P = config.get_profile()   # every size in this chapter comes from this profile
print(config.banner("{chapter}"))'''


# what each chapter's metadata asks of Colab: a GPU runtime
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4"}}


def _repository() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]


def repo_url() -> str:
    return _repository()["url"].rstrip("/")


def repo_ref() -> str:
    """The branch or tag that both the launch buttons and the setup cells use (``repository.branch``)."""
    return str(_repository().get("branch") or "main")


def setup_source(chapter: str) -> str:
    return TEMPLATE.format(url=repo_url(), ref=repo_ref(), chapter=chapter)


def metadata_ok(nb) -> bool:
    return (nb.metadata.get("accelerator") == COLAB_METADATA["accelerator"]
            and nb.metadata.get("colab", {}).get("gpuType") == COLAB_METADATA["colab"]["gpuType"])


def set_metadata(nb) -> None:
    nb.metadata["accelerator"] = COLAB_METADATA["accelerator"]
    nb.metadata.setdefault("colab", {})["gpuType"] = COLAB_METADATA["colab"]["gpuType"]


def first_code_cell(nb):
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            return i, c
    return None, None


def sync(path: Path, check: bool) -> bool:
    nb = nbformat.read(path, as_version=4)
    want = setup_source(path.stem)
    i, cell = first_code_cell(nb)
    ok = cell is not None and cell.source == want and SETUP_TAG in cell.metadata.get("tags", []) and metadata_ok(nb)
    dirty = any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells)
    if check:
        return ok and not dirty
    new = nbformat.v4.new_code_cell(want, metadata={"tags": [SETUP_TAG]})
    if cell is None:
        nb.cells.insert(0, new)
    elif SETUP_TAG in cell.metadata.get("tags", []) or "minidiff import config" in cell.source:
        if "id" in cell:
            new["id"] = cell["id"]   # keep the cell id: rewriting an up-to-date cell leaves the file unchanged
        nb.cells[i] = new
    else:
        nb.cells.insert(i, new)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    set_metadata(nb)
    nbformat.write(nb, path)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    bad = [p for p in sorted((ROOT / "chapters").glob("*.ipynb")) if not sync(p, args.check)]
    if args.check and bad:
        print("setup cell or Colab metadata out of date, or outputs present, in: " + ", ".join(p.name for p in bad)
              + "\nrun: python scripts/sync_setup_cells.py")
        sys.exit(1)


if __name__ == "__main__":
    main()
