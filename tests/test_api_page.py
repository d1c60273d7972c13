"""The API reference page (book/api.md): every module of the package has an ``automodule`` directive there, and on
the built website every public class and function of ``minidiff/**`` has its entry (autodoc's anchor
``id="minidiff.train.train"``), under the module that defines it."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minidiff"
API_PAGE = ROOT / "book" / "api.md"
AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\s*$((?:\n[ \t]+:[^\n]*)*)", re.M)


def package_modules() -> list[str]:
    """Every module of the package, by walking its files (packages by their ``__init__``)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def public_definitions(module: str) -> list[str]:
    """``module.name`` of each class and function without a leading underscore defined at the top of ``module``
    (also under a top-level ``if``/``try``). A name imported from another module counts where it is defined."""
    rel = Path(*module.split("."))
    path = ROOT / rel / "__init__.py" if (ROOT / rel).is_dir() else (ROOT / rel).with_suffix(".py")
    found = []

    def walk(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not node.name.startswith("_"):
                    found.append(f"{module}.{node.name}")
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    walk(block)

    walk(ast.parse(path.read_text()).body)
    return found


def automodule_directives(text: str) -> dict[str, list[str]]:
    """``{module: [its options]}`` of the ``.. automodule::`` directives of the page's source."""
    out = {}
    for m in AUTOMODULE.finditer(text):
        assert m[1] not in out, f"{m[1]} has two automodule directives on the API page"
        out[m[1]] = [o.strip() for o in m[2].splitlines() if o.strip()]
    return out


def missing_modules(text: str) -> list[str]:
    """The package's modules that the page's source does not document with ``automodule`` and ``:members:``."""
    directives = automodule_directives(text)
    return [m for m in package_modules() if ":members:" not in directives.get(m, [])]


def missing_from_page(html: str) -> list[str]:
    """The public classes and functions of the package without their autodoc entry in the built page ``html``."""
    ids = set(re.findall(r'\bid="(minidiff[\w.]*)"', html))
    return [name for module in package_modules() for name in public_definitions(module) if name not in ids]


def test_every_module_is_on_the_api_page():
    text = API_PAGE.read_text()
    assert not missing_modules(text), f"book/api.md: add an automodule directive (with :members:) for {missing_modules(text)}"
    stale = sorted(set(automodule_directives(text)) - set(package_modules()))
    assert not stale, f"book/api.md documents modules that no longer exist: {stale}"
    assert "exclude-members" not in text, "the API page lists every public name"


def test_checks_fail_when_a_module_or_a_name_is_missing():
    """Cut one module's directive from the page source, or one module's entries from a page: each is reported."""
    text = API_PAGE.read_text()
    cut = re.sub(r"^\.\. automodule:: minidiff\.train\n(?:[ \t]+:[^\n]*\n)*", "", text, flags=re.M)
    assert cut != text and missing_modules(cut) == ["minidiff.train"]
    no_members = text.replace(".. automodule:: minidiff.bench\n   :members:\n", ".. automodule:: minidiff.bench\n")
    assert no_members != text and missing_modules(no_members) == ["minidiff.bench"]
    assert "minidiff.train.train" in public_definitions("minidiff.train")
    page = "".join(f'<dt id="{n}">' for m in package_modules() for n in public_definitions(m))
    assert missing_from_page(page) == []
    without = page.replace('id="minidiff.train.', 'id="gone.')
    assert missing_from_page(without) == public_definitions("minidiff.train")


@pytest.mark.book
def test_every_public_class_and_function_is_on_the_built_api_page(built_book):
    html = (built_book / "book" / "api.html").read_text()
    missing = missing_from_page(html)
    assert not missing, f"not on the API page: {missing}"
    n = sum(len(public_definitions(m)) for m in package_modules())
    assert n > 150, f"only {n} public classes and functions found: is the walk of minidiff/ broken?"
    # the docstrings' equations are typeset (Sphinx math markup for MathJax), the site's navigation links the page
    assert html.count('class="math notranslate nohighlight"') >= 50
    intro = (built_book / "book" / "intro.html").read_text()
    assert "api.html" in intro[intro.index("bd-sidebar-primary"):intro.index("bd-main")]
