"""The book: table of contents, notebooks stored clean with the standard setup cell, and a real build."""

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
_REPO = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
REPO_PATH = re.escape(_REPO["url"].rstrip("/").split("github.com/")[-1])
REF = re.escape(str(_REPO["branch"]))
sys.path.insert(0, str(ROOT / "scripts"))
import sync_setup_cells  # noqa: E402


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_chapter_in_toc_and_every_toc_entry_exists():
    files = toc_files()
    for nb in CHAPTERS:
        assert f"chapters/{nb.stem}" in files, f"{nb.name} is missing from _toc.yml"
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f"_toc.yml entry {f} has no file"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_starts_with_the_setup_cell(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, "outputs must be stripped (make sync)"
    i, cell = sync_setup_cells.first_code_cell(nb)
    assert cell.source == sync_setup_cells.setup_source(nb_path.stem), "setup cell out of date: run make sync"
    assert i <= 1, "the setup cell must come first (after the title)"
    install = next(line for line in cell.source.splitlines() if '"pip", "install"' in line)
    assert "torch" not in install and "-q" not in install, "the setup cell installs only minidiff, and shows pip's output"
    assert 'find_spec("minidiff") is None' in cell.source, "install wherever minidiff is missing, not only on Colab"
    assert nb.metadata.get("accelerator") == "GPU" and nb.metadata["colab"]["gpuType"], "ask Colab for a GPU runtime"


RUNTIME_ROW = re.compile(r"^\|\s*`(ci|cpu|gpu)`\s*\|[^|]*\|\s*about ([\d.]+) (s|min)\b")


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_states_runtime_per_profile_and_has_exercises(nb_path):
    """The runtime table at the top of each chapter agrees with the profiles' ``runtime_s`` (what the banner says):
    the same number to within 30% (ci runs, well under a minute, vary with the machine's load)."""
    from minidiff import config

    nb = nbformat.read(nb_path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    stated = {m[1]: float(m[2]) * (60 if m[3] == "min" else 1)
              for m in map(RUNTIME_ROW.match, text.splitlines()) if m}
    assert sorted(stated) == ["ci", "cpu", "gpu"], f"runtime not stated for every profile: {sorted(stated)}"
    for name, seconds in stated.items():
        expected = config.get_profile(name).runtime_s[nb_path.stem]
        assert expected / 1.3 <= seconds <= expected * 1.3, \
            f"{name}: the chapter says {seconds:g} s, the profile {expected:g} s"
    assert len(re.findall(r"Exercise \d", text)) >= 3
    assert sum("hide-input" in c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code") >= 3


def test_repository_url_and_ref_defined_once_and_used_by_setup_cells():
    """The setup cells install the ref that the launch buttons open (``repository.branch``), from the same URL."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    for nb_path in CHAPTERS:
        _, cell = sync_setup_cells.first_code_cell(nbformat.read(nb_path, as_version=4))
        assert f'REPO_URL, REF = "{repo["url"]}", "{repo["branch"]}"' in cell.source, nb_path.name
        assert 'f"minidiff @ git+{REPO_URL}@{REF}"' in cell.source


@pytest.mark.book
def test_book_builds_with_executed_chapter_and_colab_link(built_book):
    html = built_book
    assert (html / "index.html").exists()
    for nb in CHAPTERS:
        page = (html / "chapters" / f"{nb.stem}.html").read_text()
        # executed: images and printed numbers are in the page
        assert page.count("<img") >= 4, f"{nb.stem}: executed figures missing"
        assert "minidiff | profile=ci" in page, f"{nb.stem}: the setup cell's output is missing"
        # a Colab launch link pointing at this chapter's notebook in the repository
        # (at the ref the setup cells install: repository.branch of _config.yml)
        assert re.search(rf'colab\.research\.google\.com/github/{REPO_PATH}/blob/{REF}/chapters/{nb.stem}\.ipynb', page)
        # citations resolved to the bibliography, none left as raw roles
        assert "references.html#" in page and "{cite" not in page, f"{nb.stem}: unresolved citations"
    ddpm = (html / "chapters" / "04_ddpm.html").read_text()
    assert "held-out accuracy of the feature network" in ddpm
    assert "Ho et al." in ddpm or "Ho <em>et al.</em>" in ddpm
    refs = (html / "book" / "references.html").read_text()
    assert "denoising diffusion probabilistic models" in refs.lower()
    assert (html / "_static" / "mathjax" / "tex-svg-full.js").exists()
