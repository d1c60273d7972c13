"""The chapters' from-scratch cells (issue: the algorithm in the chapter). Each cell tagged ``from-scratch`` writes an
algorithm the package implements, in the paper's terms; this test checks on the syntax tree that it does not call
the package (no minidiff import, none of the package functions it re-creates), and that the next code cell calls
what it defined and asserts equality with the package, so the chapter's fast path stays the tested package."""

import ast
import json
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"

# chapter -> the package functions its from-scratch cells re-create (called only in the check cell after them)
RECREATES = {
    "01_rotation": {"rotation_batch", "linear_probe", "low_label_probe"},
    "02_contrastive": {"nt_xent", "momentum_update", "_enqueue"},
    "03_vae": {"elbo", "reparameterize", "gaussian_kl"},
    "04_ddpm": {"q_sample", "ddpm_loss", "sample", "p_sample_step"},
    "05_sampling": {"ddim_step", "ddim_sample", "dpmpp_2m_step", "dpmpp_2m_sample"},
    "06_score_matching": {"dsm_loss", "annealed_langevin", "langevin"},
    "07_sde": {"euler_maruyama", "ode_sample", "reverse"},
    "08_unet": {"ResBlock"},
    "09_dit": {"DiTBlock", "scaled_dot_product_attention"},
    "10_latent_and_guidance": {"guided", "classifier_guided"},
    "11_ssl_meets_diffusion": {"loss", "alignment_loss", "REPA"},
    "12_kernels_and_speed": {"modulate", "sampler_update", "layernorm_modulate"},
    "13_flow_matching": {"interpolate", "flow_loss", "flow_sample"},
}


def _cells(name):
    nb = json.loads((CHAPTERS / f"{name}.ipynb").read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _called_names(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None))
    return out


@pytest.mark.parametrize("name", sorted(RECREATES))
def test_from_scratch_cells_stand_alone_and_are_checked(name):
    cells = _cells(name)
    tagged = [i for i, c in enumerate(cells) if "from-scratch" in c.get("metadata", {}).get("tags", [])]
    assert tagged, f"{name} has no cell tagged from-scratch"
    for i in tagged:
        tree = ast.parse("".join(cells[i]["source"]))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(m.startswith("minidiff") for m in mods), f"{name}: a from-scratch cell imports minidiff"
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert defined, f"{name}: a from-scratch cell defines no function"
        called = _called_names(tree)
        assert not called & RECREATES[name], f"{name}: the from-scratch cell calls {called & RECREATES[name]}"
        assert i + 1 < len(cells), f"{name}: nothing checks the from-scratch cell"
        check = ast.parse("".join(cells[i + 1]["source"]))
        check_calls = _called_names(check)
        assert any(isinstance(n, ast.Assert) for n in ast.walk(check)), f"{name}: the check cell asserts nothing"
        assert check_calls & defined, f"{name}: the check cell does not call {sorted(defined)}"
        assert check_calls & RECREATES[name], f"{name}: the check cell does not call the package ({RECREATES[name]})"


# --- mutation: a wrong from-scratch cell must make its check fail ----------------------------------------------------
# chapter -> (the text of one from-scratch cell to change, what to change it to): a mistake a learner could make.
MUTATIONS = {
    "01_rotation": ("x.rot90(r, dims=(-2, -1))", "x.rot90(-r, dims=(-2, -1))"),            # clockwise instead
    "02_contrastive": ("j = (i + n2 // 2) % n2", "j = (i + 1) % n2"),                      # the wrong partner
    "03_vae": ("kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)", "kl = 0.5 * (mu ** 2 + logvar.exp() - 1)"),
    "04_ddpm": ("return a.sqrt() * x0 + (1 - a).sqrt() * eps", "return a.sqrt() * x0 + (1 - a) * eps"),
    "05_sampling": ("(1 - abar_s - sigma ** 2).sqrt()", "(1 - abar_s).sqrt()"),            # eta's noise counted twice
    "06_score_matching": ("(sigma * s + z)", "(sigma * s - z)"),                           # the score's sign
    "07_sde": ("x = x - (f - 0.5 * g ** 2 * score(x, t)) * dt", "x = x - (f - g ** 2 * score(x, t)) * dt"),
    "08_unet": ("* (1 + scale) + shift", "* scale + shift"),                               # FiLM without the 1
    "09_dit": ("x + gate1[:, None] * attention", "x + attention"),                         # no gate
    "10_latent_and_guidance": ("eps_uncond + w * (eps_cond - eps_uncond)", "eps_cond + w * (eps_cond - eps_uncond)"),
    "11_ssl_meets_diffusion": ("-F.cosine_similarity(proj(h), y, dim=-1)", "F.cosine_similarity(proj(h), y, dim=-1)"),
    "12_kernels_and_speed": ("x * (1 + s) + t", "x * s + t"),
    "13_flow_matching": ("t), t) - (eps - x0)) ** 2", "t), t) - (x0 - eps)) ** 2"),  # the velocity's sign
}


def _defined(tree):
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
    return out


def _loaded(tree):
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _needed(sources, upto):
    """The cells before ``upto`` whose names cells ``upto`` and ``upto + 1`` use (transitively), with the setup
    cells 0 and 1: what the check needs, and nothing of the chapter's heavier cells."""
    trees = [ast.parse(s) for s in sources]
    need, todo = {0, 1}, [upto, upto + 1, 0, 1]
    while todo:
        j = todo.pop()
        for name in _loaded(trees[j]) - _defined(trees[j]):
            src = [k for k in range(min(j, upto)) if name in _defined(trees[k])]
            if src and src[-1] not in need:
                need.add(src[-1])
                todo.append(src[-1])
    return sorted(need - {upto, upto + 1})


def _context(name, sources, i):
    import matplotlib

    matplotlib.use("Agg")
    ns = {"__name__": "__main__", "display": lambda *a, **k: None}
    for j in _needed(sources, i):
        exec(compile(sources[j], f"{name}[{j}]", "exec"), ns)
    return ns


def _run_check(name, sources, i, cell, ns):
    import matplotlib.pyplot as plt

    ns = dict(ns)
    exec(compile(cell, f"{name}[{i}] (from scratch)", "exec"), ns)
    try:
        exec(compile(sources[i + 1], f"{name}[{i + 1}] (check)", "exec"), ns)
    finally:
        plt.close("all")


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_mutated_from_scratch_cell_fails_its_check(name, tmp_path, monkeypatch, request):
    """The check cell passes on the chapter's cell and raises AssertionError on a copy with one mistake: the check
    can fail. Run in this process with the ``ci`` profile and only the cells the check needs. In ``make test`` they
    use the artifact folder the chapters just filled (root conftest), so a training cell among them (chapters 10
    and 11) loads its finished checkpoint instead of training again."""
    monkeypatch.setenv("MINIDIFF_PROFILE", "ci")
    monkeypatch.setenv("MINIDIFF_STATIC", "1")
    monkeypatch.setenv("MINIDIFF_CHECKPOINT_DIR", str(getattr(request.config, "_minidiff_artifacts", None) or tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if name == "12_kernels_and_speed":
        from minidiff import kernels

        if not kernels.triton_available():
            pytest.skip("Triton is not installed: chapter 12's kernel exercise cannot run")
    sources = ["".join(c["source"]) for c in _cells(name)]
    old, new = MUTATIONS[name]
    hits = [i for i, c in enumerate(_cells(name))
            if "from-scratch" in c.get("metadata", {}).get("tags", []) and old in sources[i]]
    assert len(hits) == 1 and sources[hits[0]].count(old) == 1, f"{name}: {old!r} is not in one from-scratch cell"
    i = hits[0]
    ns = _context(name, sources, i)
    _run_check(name, sources, i, sources[i], ns)
    with pytest.raises(AssertionError):
        _run_check(name, sources, i, sources[i].replace(old, new), ns)
