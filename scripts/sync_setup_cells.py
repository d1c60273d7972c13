"""Write the standard setup cell into every chapter notebook (and strip outputs).

    python scripts/sync_setup_cells.py          # rewrite chapters/*.ipynb in place
    python scripts/sync_setup_cells.py --check  # exit 1 if any chapter differs (used by the tests)

The repository URL is defined once, in ``_config.yml`` (``repository.url``); the setup cell is this
template with that URL and the chapter's name filled in, so every chapter starts identically.
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
# Setup: identical in every chapter (written by scripts/sync_setup_cells.py from _config.yml).
# On Colab it installs minidiff from the repository; Colab's own torch is kept as it is.
import subprocess, sys
REPO_URL = "{url}"
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"minidiff @ git+{{REPO_URL}}"], check=True)

from minidiff import config
# config.use_google_drive()  # Colab: keep checkpoints on Drive; after a disconnect, Run all resumes training
P = config.get_profile()   # every size in this chapter comes from this profile
print(config.banner("{chapter}"))'''


def repo_url() -> str:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    return cfg["repository"]["url"].rstrip("/")


def setup_source(chapter: str) -> str:
    return TEMPLATE.format(url=repo_url(), chapter=chapter)


def first_code_cell(nb):
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            return i, c
    return None, None


def sync(path: Path, check: bool) -> bool:
    nb = nbformat.read(path, as_version=4)
    want = setup_source(path.stem)
    i, cell = first_code_cell(nb)
    ok = cell is not None and cell.source == want and SETUP_TAG in cell.metadata.get("tags", [])
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
    nbformat.write(nb, path)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    bad = [p for p in sorted((ROOT / "chapters").glob("*.ipynb")) if not sync(p, args.check)]
    if args.check and bad:
        print("setup cell out of date or outputs present in: " + ", ".join(p.name for p in bad)
              + "\nrun: python scripts/sync_setup_cells.py")
        sys.exit(1)


if __name__ == "__main__":
    main()
