"""The notation page (book/notation.md): every package name it gives exists, and the chapters keep its two global
rules (T counts diffusion steps, N tokens) where a paper writes them the other way round."""

import importlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "book" / "notation.md").read_text()


def _resolve(dotted):
    for base in ("minidiff", "minidiff.diffusion", "minidiff.config.schema", "minidiff.nets", "minidiff.diffusion.sde",
                 "minidiff.ssl.vae"):
        parts = f"{base}.{dotted}".split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for a in parts[i:]:
                    obj = getattr(obj, a)
                return obj
            except AttributeError:
                break
    return None


def test_every_package_name_on_the_notation_page_exists():
    names = {m.split("(")[0] for m in re.findall(r"`([A-Za-z_][\w.]*\.[\w]+)(?:\([^`]*\))?`", PAGE)}
    names = {n for n in names if not n.startswith(("NoiseSchedule.", "torch.", "nn."))} | {
        n for n in names if n.startswith("NoiseSchedule.")}
    assert len(names) > 25
    missing = sorted(n for n in names if _resolve(n) is None and not n.startswith("NoiseSchedule."))
    assert not missing, f"the notation page names what the package lacks: {missing}"
    from minidiff.diffusion.schedules import make_schedule

    sched = make_schedule("linear", 10)
    for n in (n for n in names if n.startswith("NoiseSchedule.")):
        assert hasattr(sched, n.split(".", 1)[1]), n


def _markdown(chapter):
    nb = json.loads((ROOT / "chapters" / f"{chapter}.ipynb").read_text())
    return "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def test_chapters_keep_T_for_steps_and_N_for_tokens():
    dit = _markdown("09_dit")
    assert "number of tokens $N$" in dit
    assert not re.search(r"\$[^$]*\b\d*T\^2 ?d[^$]*\$|tokens \$T\$|O\(T", dit), "chapter 09 writes T for tokens"
    sde = _markdown("07_sde")
    assert not re.search(r"\)/N\$|\$N = 1000\$", sde), "chapter 07 writes N for the diffusion steps"
    assert "s_k" not in _markdown("06_score_matching"), "chapter 06 uses s for the score and for the mixture's stds"
