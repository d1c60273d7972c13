"""Where a reader reports an error, and under which terms the course may be reused: the repository URL is set once
(_config.yml) and the citation file, the website's buttons and the package metadata agree with it; the code and the
text each carry a license."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _config():
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def test_licenses_for_code_and_text():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    text = (ROOT / "LICENSE-TEXT.md").read_text()
    assert "CC BY 4.0" in text and "https://creativecommons.org/licenses/by/4.0/" in text


def test_citation_and_changelog_agree_with_the_project():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0" and cff["title"] == _config()["title"]
    assert cff["repository-code"] == _config()["repository"]["url"]
    assert str(cff["version"]) == meta["version"] and cff["license"] == meta["license"]["text"]
    log = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(meta['version'])}\]", log, re.M), "the changelog lists the package version"


def test_repository_buttons_and_url_in_one_place():
    cfg = _config()
    html = cfg["html"]
    assert html["use_repository_button"] and html["use_issues_button"] and html["use_edit_page_button"]
    url = cfg["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url)
    # the other places that name the repository take it from _config.yml (make sync), so they must equal it
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        found = set(re.findall(r"https://github\.com/[\w.-]+/minidiff\b", path.read_text()))
        assert found <= {url}, f"{path.name} names another repository: {found - {url}}"


def test_book_reexecutes_when_the_package_changes(tmp_path):
    """make book clears the execution cache (which keys on a notebook's cells) when minidiff's code changes: the
    hash it compares changes with any source file of the package and ignores bytecode caches."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("package_hash", ROOT / "scripts" / "package_hash.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "minidiff" / "__pycache__").mkdir(parents=True)
    (tmp_path / "minidiff" / "train.py").write_text("x = 1\n")
    first = mod.package_hash(tmp_path)
    (tmp_path / "minidiff" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert mod.package_hash(tmp_path) == first
    (tmp_path / "minidiff" / "train.py").write_text("x = 2\n")
    assert mod.package_hash(tmp_path) != first
    make = (ROOT / "Makefile").read_text()
    book = make[make.index("\nbook:"):make.index("\ntest:")]
    assert "scripts/package_hash.py" in book and ".package-hash" in book and "rm -rf _build/.jupyter_cache" in book
