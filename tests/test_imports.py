"""The package's floors: every module imports on its own, the import graph has no cycle, and no layer imports a
higher one (the math never imports the training loop or plotting).

The graph is read from the syntax trees of all modules of ``minidiff``, imports inside functions included (a lazy
``from ..train import train`` inside a function is still a dependency, only a hidden one). ``python -m pytest
tests/test_imports.py -q`` prints a cycle or a violation with the file and line of each import in it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "minidiff"

# Lowest first. A module may import modules of its own layer and of lower ones, never of a higher one. A name is a
# top-level module or subpackage of minidiff (a subpackage covers its modules); every one must be in a layer.
LAYERS: list[tuple[str, ...]] = [
    ("_checks", "_progress", "bench", "reference", "distributed"),  # checks, progress, timing, references, DDP
    ("config",),                                  # profiles, device, seeding, checkpoint folders
    ("kernels",),                                 # Triton kernels + torch references
    ("diffusion", "ssl", "nets"),                 # the math: losses, samplers, models
    ("data", "metrics"),                          # datasets and loaders; FID/KID, probes
    ("checkpoint", "train"),                      # atomic checkpoints and RNG state; the one training loop
    ("recipes", "ssl_diffusion", "cache", "viz"),  # loops that combine math and training; artifacts; plotting
    ("",),                                        # minidiff/__init__.py
]
MATH = ("diffusion", "ssl", "nets", "kernels")
TRAINING = ("checkpoint", "train", "recipes")
# third-party plotting and widget packages, and the parts that may import them: plots are viz's; _progress asks
# whether ipywidgets can draw a progress bar
PLOTTING = {"matplotlib": ("viz",), "seaborn": ("viz",), "plotly": ("viz",), "IPython": ("viz",),
            "ipywidgets": ("viz", "_progress")}


# ----------------------------------------------------------------------------- the graph, from the syntax trees

def module_files(pkg: Path = PKG) -> dict[str, Path]:
    """``{"minidiff.nets.dit": path, "minidiff.nets": .../nets/__init__.py, ...}`` for every .py file of the package."""
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _known(name: str, modules) -> str | None:
    """The longest prefix of the dotted ``name`` that is a module of the package."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def imports_of(name: str, path: Path, modules, top: str = "minidiff"):
    """``[(imported module, line, kind)]`` for every import in ``path``: kind is ``"internal"`` for a module of the
    package (resolved to a submodule where ``from pkg import sub`` names one) and ``"external"`` for the top-level
    name of any other package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is not None:
                    out.append((target, node.lineno, "internal"))
                elif alias.name.split(".")[0] != top:
                    out.append((alias.name.split(".")[0], node.lineno, "external"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != top:
                out.append((base.split(".")[0], node.lineno, "external"))
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in modules else _known(base, modules)
                if target is not None:
                    out.append((target, node.lineno, "internal"))
    return out


def import_graph(pkg: Path = PKG):
    """``(graph, external, files)``: ``graph[a][b]`` is the first line of ``a`` that imports ``b`` (both modules of
    the package; importing ``minidiff.nets.dit`` from outside ``nets`` imports ``minidiff.nets`` as well, since
    Python runs the package's ``__init__`` first), ``external[a]`` the ``{package: line}`` of the other packages ``a``
    imports."""
    files = module_files(pkg)
    top = pkg.name
    graph, external = {}, {}
    for name, path in files.items():
        graph[name], external[name] = {}, {}
        for target, line, kind in imports_of(name, path, files, top):
            bucket = graph[name] if kind == "internal" else external[name]
            if target != name:
                bucket.setdefault(target, line)
            if kind == "internal":
                # importing minidiff.nets.dit first runs minidiff/nets/__init__.py: from outside that package, an
                # import of one of its modules is an import of the package too
                parts = target.split(".")
                for i in range(2, len(parts)):
                    pkg_name = ".".join(parts[:i])
                    if not (name == pkg_name or name.startswith(pkg_name + ".")):
                        bucket.setdefault(pkg_name, line)
    return graph, external, files


def component(name: str) -> str:
    """The top-level module or subpackage a module belongs to: ``minidiff.nets.dit`` -> ``nets``; the package's own
    ``__init__`` -> ``""``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: dict[str, dict]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(u):
        color[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if color.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if color.get(v) is None:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        color[u] = 2
        return None

    for u in sorted(graph):
        if color.get(u) is None:
            found = visit(u)
            if found:
                return found
    return None


def component_graph(graph):
    """The module graph collapsed onto components (``config``, ``nets``, ``train``, ...), the package's own
    ``__init__`` left out; ``out[a][b]`` is one ``(module, line, imported module)`` behind the edge."""
    out: dict[str, dict] = {}
    for a, targets in graph.items():
        ca = component(a)
        if ca == "":
            continue
        out.setdefault(ca, {})
        for b, line in targets.items():
            cb = component(b)
            if cb not in ("", ca):
                out[ca].setdefault(cb, (a, line, b))
    return out


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def describe_cycle(cycle, graph, files) -> str:
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        lines.append(f"  {a} imports {b}  ({_rel(files[a])}:{graph[a][b]})")
    return " -> ".join(cycle) + "\n" + "\n".join(lines)


def layer_violations(graph, external, files) -> list[str]:
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    problems = []
    for a in sorted(graph):
        ca = component(a)
        if ca not in rank:
            problems.append(f"{a} ({_rel(files[a])}) is in no layer: add {ca!r} to LAYERS in "
                            f"tests/test_imports.py")
            continue
        for b, line in sorted(graph[a].items()):
            cb = component(b)
            if cb in rank and rank[cb] > rank[ca]:
                problems.append(f"{a} (layer {rank[ca]}: {', '.join(LAYERS[rank[ca]])}) imports {b} (layer "
                                f"{rank[cb]}: {', '.join(LAYERS[rank[cb]])}) at {_rel(files[a])}:{line}")
            if ca in MATH and cb in TRAINING:
                problems.append(f"the math imports the training loop: {a} imports {b} at "
                                f"{_rel(files[a])}:{line}")
        for pkg, line in sorted(external[a].items()):
            if pkg in PLOTTING and ca not in PLOTTING[pkg]:
                problems.append(f"{a} imports the plotting package {pkg} at {_rel(files[a])}:{line} "
                                f"(only {', '.join(PLOTTING[pkg])} may)")
    return problems


# ----------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_imports_inside_functions_and_relative_ones(graph):
    g, external, files = graph
    assert "minidiff.nets.dit" in files and "minidiff.diffusion" in files
    assert "minidiff._checks" in g["minidiff.nets.dit"]               # from .._checks import condition_vector
    assert "minidiff.ssl.simclr" in g["minidiff.ssl_diffusion"]        # from .ssl.simclr import nt_xent
    assert "minidiff.diffusion.ddpm" in g["minidiff.viz"]             # from .diffusion.ddpm import q_sample, in a function
    assert "matplotlib" in external["minidiff.viz"]


def test_no_import_cycle(graph):
    g, _, files = graph
    cycle = find_cycle(g)
    assert cycle is None, "import cycle between modules:\n" + describe_cycle(cycle, g, files)
    comp = component_graph(g)
    cycle = find_cycle(comp)
    if cycle is not None:
        detail = "\n".join(f"  {a} -> {b}: {comp[a][b][0]} imports {comp[a][b][2]} "
                           f"({_rel(files[comp[a][b][0]])}:{comp[a][b][1]})"
                           for a, b in zip(cycle, cycle[1:]))
        pytest.fail("import cycle between parts of the package: " + " -> ".join(cycle) + "\n" + detail)


def test_layers(graph):
    problems = layer_violations(*graph)
    assert not problems, "layering broken (see LAYERS in tests/test_imports.py):\n" + "\n".join(problems)


def test_the_checks_can_fail(tmp_path):
    """A made-up package with a cycle hidden in a function, a math module importing the training loop and plotting,
    and a module in no layer: each check reports it."""
    pkg = tmp_path / "minidiff"
    (pkg / "diffusion").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import config\n")
    (pkg / "config.py").write_text("def f():\n    from .diffusion.ddpm import q_sample\n")
    (pkg / "train.py").write_text("from . import config\n")
    (pkg / "extra.py").write_text("")
    (pkg / "diffusion" / "__init__.py").write_text("")
    (pkg / "diffusion" / "ddpm.py").write_text(
        "from .. import config\nimport matplotlib.pyplot as plt\n\ndef g():\n    from ..train import train\n")
    g, external, files = import_graph(pkg)
    assert g["minidiff.diffusion.ddpm"] == {"minidiff.config": 1, "minidiff.train": 5}
    assert find_cycle(g) == ["minidiff.config", "minidiff.diffusion.ddpm", "minidiff.config"]
    problems = "\n".join(layer_violations(g, external, files))
    assert "minidiff.config (layer 1: config) imports minidiff.diffusion.ddpm" in problems
    assert "minidiff.diffusion.ddpm (layer 3: diffusion, ssl, nets) imports minidiff.train" in problems
    assert "the math imports the training loop" in problems
    assert "plotting package matplotlib" in problems
    assert "minidiff.extra" in problems and "in no layer" in problems


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    """recipes imports nets.dit, which runs nets/__init__.py, which imports nets.mlp, which imports recipes inside a
    function: Python would only fail on it in some import orders; the graph always sees it."""
    files = {"__init__.py": "", "recipes.py": "from .nets.dit import DiT\n", "nets/__init__.py": "from . import mlp\n",
             "nets/dit.py": "DiT = 1\n", "nets/mlp.py": "def f():\n    from ..recipes import train_ddpm\n"}
    for name, text in files.items():
        (tmp_path / "minidiff" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "minidiff" / name).write_text(text)
    g, _, _ = import_graph(tmp_path / "minidiff")
    assert g["minidiff.recipes"] == {"minidiff.nets.dit": 1, "minidiff.nets": 1}
    assert find_cycle(g) == ["minidiff.nets", "minidiff.nets.mlp", "minidiff.recipes", "minidiff.nets"]
    assert find_cycle(component_graph(g)) == ["nets", "recipes", "nets"]


_IMPORT_EACH = r"""
import json, os, sys, traceback
import torch, numpy  # the heavy third-party part, shared; no module of minidiff is imported here
assert not any(m == "minidiff" or m.startswith("minidiff.") for m in sys.modules)
results = {}
names, no_triton = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
for name in names:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                          # the child: a process in which nothing of minidiff is imported yet
        os.close(r)
        try:
            __import__(name)
            msg = "imported triton" if name in no_triton and "triton" in sys.modules else "ok"
        except BaseException:
            msg = traceback.format_exc()
        os.write(w, msg.encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    os.waitpid(pid, 0)
    results[name] = b"".join(chunks).decode() or "the child died"
print(json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own():
    """Each module is imported first, in its own process (forked from a fresh interpreter that has imported torch
    and numpy, nothing of minidiff): an import that works only after another module was imported fails here.
    Up to the math layer nothing but the Triton kernels themselves imports triton: ``import minidiff.kernels`` (at
    the top of nets/ and diffusion/) stays cheap. (torchvision imports triton, so data, metrics and viz may.)"""
    names = sorted(module_files())
    math_rank = max(i for i, layer in enumerate(LAYERS) if "diffusion" in layer)
    no_triton = [n for n in names if n != "minidiff.kernels.triton_ops"
                 and any(component(n) in layer for layer in LAYERS[:math_rank + 1])]
    assert "minidiff.kernels" in no_triton and "minidiff.nets.dit" in no_triton
    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names), json.dumps(no_triton)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(results) == set(names)
    if importlib.util.find_spec("triton") is None:      # the kernels' own module needs triton, nothing else does
        results.pop("minidiff.kernels.triton_ops")
    failed = {n: r for n, r in results.items() if r != "ok"}
    assert not failed, "\n\n".join(f"import {n} failed:\n{r}" for n, r in failed.items())
