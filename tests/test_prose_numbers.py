"""Numbers in the prose come from the run (issue: the text's numbers). A sentence that reports what was measured
("in this run", "we measured") takes its figures from the executed notebook through myst-nb's glue
(``viz.glue`` in a code cell, ``{glue:text}`key:fmt``` in the text), not from a run someone once made; and every key
the text reads is glued by a code cell of the same chapter."""

import json
import re
from pathlib import Path

import pytest

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "chapters").glob("[0-9][0-9]_*.ipynb"))
GLUE_ROLE = re.compile(r"\{glue:text\}`([\w-]+)(?::[^`]*)?`")


def _cells(path):
    nb = json.loads(path.read_text())
    md = [" ".join("".join(c["source"]).split()) for c in nb["cells"] if c["cell_type"] == "markdown"]
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return md, code


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_measured_sentences_take_their_numbers_from_the_run(path):
    md, _ = _cells(path)
    bad = []
    for text in md:
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z(*])", text):
            if not re.search(r"\b(we measured|in this run)\b", sentence, re.I):
                continue
            rest = GLUE_ROLE.sub("", sentence)
            rest = re.sub(r"\$[^$]*\$|`[^`]*`|\{cite:\w+\}`[^`]*`", "", rest)
            rest = re.sub(r"\d+\.\d+ in the paper", "", rest)         # a paper's figure, named as such
            if re.search(r"(?<![\w.])\d+\.\d+", rest):
                bad.append(sentence[:160])
    assert not bad, f"{path.stem}: measured numbers typed into the text instead of glued from the run: {bad}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_glued_key_the_text_reads_is_glued_by_the_chapter(path):
    md, code = _cells(path)
    used = {m for text in md for m in GLUE_ROLE.findall(text)}
    missing = sorted(k for k in used if f'"{k}"' not in code and f"'{k}'" not in code)
    assert not missing, f"{path.stem}: the text reads glue keys no code cell sets: {missing}"


def test_the_chapters_that_report_a_run_glue_it():
    """At least the chapters rewritten so far quote their run through glue (so the test above has something to
    check, and a revert to typed numbers fails)."""
    for stem in ("01_rotation", "03_vae", "05_sampling"):
        md, code = _cells(next(p for p in CHAPTERS if p.stem == stem))
        assert any(GLUE_ROLE.search(t) for t in md) and "viz.glue(" in code, stem
