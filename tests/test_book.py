"""The book: table of contents, notebooks stored clean with the standard setup cell, and a real build."""

import ast
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
import student_edition  # noqa: E402
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
    assert len(student_edition.exercises(nb, nb_path.stem)) >= 3, "a chapter has at least three exercises"


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


# ----------------------------------------------------------------------------- long cells talk
# what a loop may repeat only under an overall progress bar: trainings and image samplers
_LONG_CALLS = {"train", "train_ddpm", "train_noisy_classifier", "cached", "sample", "ddim_sample", "dpmpp_2m_sample",
               "euler_maruyama", "pc_sample", "ode_sample", "annealed_langevin", "run_variant", "run_recipe",
               "train_flow", "flow_sample", "draw_nfe", "reflow_couplings"}


def _calls(node) -> set:
    return {(n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None))
            for n in ast.walk(node) if isinstance(n, ast.Call)}


def _short_literal(node) -> bool:
    """A literal tuple or list of at most two items (a pair needs no overall bar)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("zip", "enumerate", "sorted"):
        return any(_short_literal(a) for a in node.args)
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) <= 2


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_loops_over_trainings_and_samplers_show_an_overall_progress_bar(nb_path):
    """Issue 21, item 6: a loop (or comprehension) whose body trains a model or samples images iterates over
    ``viz.progress(...)``, so a long cell says how far it is; exercise solutions and pairs are exempt."""
    nb = nbformat.read(nb_path, as_version=4)
    missing = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "solution" in cell.metadata.get("tags", []):
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            loops = [(node.iter, node.body)] if isinstance(node, ast.For) else \
                [(g.iter, [node]) for g in node.generators] if isinstance(node, (ast.ListComp, ast.DictComp)) else []
            for it, body in loops:
                heavy = set().union(*(_calls(b) for b in body)) & _LONG_CALLS
                if heavy and not (_calls(it) & {"progress"}) and not _short_literal(it):
                    missing.append(f"line {node.lineno}: for ... in {ast.unparse(it)[:60]} (calls {sorted(heavy)})")
    assert not missing, f"{nb_path.stem}: loops without an overall progress bar:\n" + "\n".join(missing)


# ----------------------------------------------------------------------------- figures are figures
_FIGURE_CALL = re.compile(r"plt\.(subplots|figure)\(|viz\.(show_images|show_image_rows|plot_\w+|noise_slider|image_slider)\(")


def _figures_opened(source: str) -> int:
    """How many figures a cell opens (a plotting helper given ``ax=`` draws into one opened before)."""
    n = 0
    for m in _FIGURE_CALL.finditer(source):
        call = source[m.start():]
        depth, end = 0, len(call)
        for k, ch in enumerate(call):
            depth += ch == "("
            depth -= ch == ")"
            if ch == ")" and depth == 0:
                end = k
                break
        n += not (m.group(2) and "ax=" in call[:end])
    return n


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_every_plot_has_a_numbered_caption_and_alt_text(nb_path):
    """Issue 21, item 7: a cell that draws a figure carries myst-nb's figure metadata (a caption, and a name that
    numbers it and lets the text refer to it with {numref}) and the image's alt text."""
    nb = nbformat.read(nb_path, as_version=4)
    names = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "solution" in cell.metadata.get("tags", []) or not _figures_opened(cell.source):
            continue
        meta = cell.metadata.get("mystnb", {})
        fig, img = meta.get("figure", {}), meta.get("image", {})
        where = f"{nb_path.stem}, cell {i} ({cell.source.splitlines()[0][:50]!r})"
        assert len(fig.get("caption", "")) > 20, f"{where}: no caption"
        assert re.fullmatch(rf"fig-{nb_path.stem[:2]}-[a-z0-9-]+", fig.get("name", "")), f"{where}: name {fig.get('name')}"
        assert len(img.get("alt", "")) > 15, f"{where}: no alt text"
        # every display output of the cell is wrapped in the named figure: two figures would repeat the name
        assert _figures_opened(cell.source) == 1, f"{where}: one figure per cell (split the cell)"
        # nor may the cell's value be shown next to its figure (a returned figure would appear twice)
        last = ast.parse(cell.source).body[-1]
        if isinstance(last, ast.Expr) and not cell.source.rstrip().endswith(";"):
            assert _calls(last) & {"print", "tight_layout", "show"}, f"{where}: end the last line with ';'"
        names.append(fig["name"])
    assert len(names) == len(set(names)), f"{nb_path.stem}: figure names repeat"
    assert names, f"{nb_path.stem} draws no figure"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_log_axes_use_readable_ticks(nb_path):
    """Log-scaled axes go through ``viz.log_axis`` (plain-number tick labels, minor ticks labelled on short ranges),
    not matplotlib's bare log scale (powers of ten, and no label at all on a range inside one decade)."""
    text = "\n".join(c.source for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code")
    raw = re.findall(r'set_[xy]scale\(\s*["\']log|\.loglog\(|\.semilog[xy]\(', text)
    assert not raw, f"{nb_path.stem}: {raw}: use viz.log_axis(ax, 'x' | 'y' | 'both')"


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(nb_path):
    """Issue 21, item 8: no code line is wider than 90 characters, so the website shows code without horizontal
    scrolling."""
    nb = nbformat.read(nb_path, as_version=4)
    long = [f"cell {i}: {len(line)} chars: {line.strip()[:60]}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > 90]
    assert not long, f"{nb_path.stem}: {len(long)} code lines over 90 characters:\n" + "\n".join(long[:20])
