"""The course's diagrams (issue: pictures where people would rather look than read): each is an SVG in
book/_static/figures written by scripts/make_figures.py (so it stays editable: the files must be what the script
writes), and each chapter that needs one shows it as a numbered MyST figure with alt text and a caption, and refers
to it by number."""

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGDIR = ROOT / "book" / "_static" / "figures"
WHERE = {"simclr": "02_contrastive", "moco": "02_contrastive", "forward_reverse": "04_ddpm", "unet": "08_unet",
         "dit_block": "09_dit", "latent_diffusion": "10_latent_and_guidance", "repa": "11_ssl_meets_diffusion"}


def _script():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_svg_files_are_what_the_script_draws():
    rendered = _script().render()
    assert set(rendered) == set(WHERE), "a figure is drawn but not placed in a chapter, or the reverse"
    for name, svg in rendered.items():
        path = FIGDIR / f"{name}.svg"
        assert path.exists(), f"{path} is missing: run python scripts/make_figures.py"
        assert path.read_text() == svg, f"{path} differs from what scripts/make_figures.py draws: rerun it"
        root = ET.fromstring(svg)
        assert root.find("{http://www.w3.org/2000/svg}title").text, name
        assert len(root.findall(".//{http://www.w3.org/2000/svg}text")) >= 5, f"{name} has almost no labels"


@pytest.mark.parametrize("name", sorted(WHERE))
def test_each_chapter_shows_its_figure_with_caption_and_alt_text(name):
    nb = json.loads((ROOT / "chapters" / f"{WHERE[name]}.ipynb").read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    m = re.search(r"```\{figure\} \.\./book/_static/figures/" + name + r"\.svg\n(.*?)```", md, re.S)
    assert m, f"chapter {WHERE[name]} does not show {name}.svg as a MyST figure"
    body = m.group(1)
    assert f":name: fig-{name}\n" in body
    alt = re.search(r":alt: (.+)\n", body)
    assert alt and len(alt.group(1)) > 60, f"{name}: alt text missing or too short to describe the diagram"
    caption = body.split("\n\n", 1)[1].strip() if "\n\n" in body else ""
    assert len(caption) > 60, f"{name}: the figure has no caption"
    assert f"{{numref}}`fig-{name}`" in md, f"{name}: the text never refers to the figure by its number"
