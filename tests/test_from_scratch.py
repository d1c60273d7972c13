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
