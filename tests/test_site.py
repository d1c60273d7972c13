"""The website in a real browser: every built page opened in headless Chromium (scripts/check_site.py).

Skipped with a one-line reason when Chromium or Playwright is missing on a learner's machine; `.ci/run` installs
Debian's chromium and sets MINIDIFF_REQUIRE_BROWSER=1, which turns a missing browser into a failure.
Screenshots of two pages are written to test-artifacts/ (or $MINIDIFF_ARTIFACTS).
"""

import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_site  # noqa: E402
import student_edition  # noqa: E402

ARTIFACTS = Path(os.environ.get("MINIDIFF_ARTIFACTS", ROOT / "test-artifacts"))
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
CHAPTERS = sorted(p.stem for p in (ROOT / "chapters").glob("*.ipynb"))


def _browser_or_skip():
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright is not installed (pip install playwright; no browser download needed)"
    if reason is None and check_site.find_chromium() is None:
        reason = "Chromium not found (apt-get install chromium, or set MINIDIFF_CHROMIUM)"
    if reason:
        if os.environ.get("MINIDIFF_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail(f"site tests must run here (MINIDIFF_REQUIRE_BROWSER is set) but: {reason}")
        pytest.skip(f"site tests skipped: {reason}")


SHOTS = {"book/intro.html": ARTIFACTS / "site-intro.png", "chapters/04_ddpm.html": ARTIFACTS / "site-04_ddpm.png"}


@pytest.fixture(scope="module")
def site_reports(built_book):
    """One visit of every page in Chromium (each chapter page's solutions clicked open last): the two tests below
    read it."""
    _browser_or_skip()
    return check_site.check_site(built_book, screenshots=SHOTS, repo_url=REPO_URL, solutions=True)


@pytest.mark.book
def test_every_page_in_chromium(built_book, site_reports):
    reports, shots = site_reports, SHOTS
    problems = [f"{r.page}: {p}" for r in reports for p in r.problems]
    assert not problems, "the website has problems a reader would see:\n" + "\n".join(problems)
    by_page = {r.page: r for r in reports}
    # every page was checked: the chapters, the front and back matter, index/search
    for stem in CHAPTERS:
        r = by_page[f"chapters/{stem}.html"]
        assert r.n_images >= 4, f"{stem}: only {r.n_images} images on the page"
        assert r.n_math >= 5, f"{stem}: only {r.n_math} typeset formulas"
        assert r.n_links >= 15, f"{stem}: only {r.n_links} internal links (is the sidebar TOC there?)"
    for page in ("index.html", "book/intro.html", "book/setup.html", "book/notation.html", "book/references.html"):
        assert page in by_page
    # the sidebar TOC of the first page lists every chapter, and each entry resolved (checked above)
    html = (built_book / "book" / "intro.html").read_text()
    nav = html[html.index("bd-sidebar-primary"):html.index("bd-main")]
    for stem in CHAPTERS:
        assert f"{stem}.html" in nav, f"{stem} missing from the sidebar table of contents"
    for png in shots.values():
        assert png.exists() and png.stat().st_size > 10_000, f"screenshot {png} missing or empty"
    print(f"\n{len(reports)} pages checked in Chromium, "
          f"{sum(r.n_links for r in reports)} internal links, {sum(r.n_images for r in reports)} images, "
          f"{sum(r.n_math for r in reports)} formulas; screenshots in {ARTIFACTS}")


@pytest.mark.book
def test_checker_fails_on_a_broken_page(built_book, tmp_path):
    """Break one real page four ways (dead link, missing image, MathJax removed, a script error): each is caught."""
    _browser_or_skip()
    site = tmp_path / "html"
    shutil.copytree(built_book, site)
    page = site / "chapters" / "05_sampling.html"
    html = page.read_text()
    # 1. an internal link to a page that does not exist
    html = html.replace('href="06_score_matching.html"', 'href="06_score_matchin.html"')
    # 2. a figure whose file is gone
    img = re.search(r'<img[^>]+src="(\.\./_images/[^"]+\.png)"', html).group(1)
    (page.parent / img).unlink()
    # 3. MathJax not loaded: the formulas stay raw TeX
    html = re.sub(r'<script[^>]*tex-svg-full\.js[^>]*></script>', "", html)
    # 4. a JavaScript error
    html = html.replace("</body>", "<script>undefinedFunctionOfTheCourse();</script></body>")
    page.write_text(html)
    [rep] = check_site.check_site(site, pages=["chapters/05_sampling.html"], repo_url=REPO_URL)
    text = "\n".join(rep.problems)
    assert "broken link to chapters/06_score_matchin.html" in text
    assert "image not loaded" in text and Path(img).name in text
    assert "unrendered math" in text
    assert "JavaScript error" in text and "undefinedFunctionOfTheCourse" in text
    # the intact page next to it is still clean
    [ok] = check_site.check_site(site, pages=["chapters/04_ddpm.html"], repo_url=REPO_URL)
    assert not ok.problems, ok.problems


@pytest.mark.book
def test_sliders_work_without_a_kernel(built_book):
    """The sliders of chapters 04 (noise level), 05 (network calls) and 10 (guidance scale) are precomputed frames on
    the website: moving one in the browser changes the image shown and the value printed next to it."""
    _browser_or_skip()
    for page in ("chapters/04_ddpm.html", "chapters/05_sampling.html", "chapters/10_latent_and_guidance.html"):
        moved = check_site.move_sliders(built_book, page)
        assert moved, f"{page}: no slider on the page"
        for m in moved:
            assert m["max"] >= 1
            assert m["after"]["src"] != m["before"]["src"], f"{page}: the slider moved but the image stayed"
            assert m["after"]["value"] != m["before"]["value"], f"{page}: the shown value did not change"


@pytest.mark.book
def test_solutions_hidden_until_clicked_and_both_editions_download(site_reports):
    """On every chapter page each exercise has a solution whose code and output stay hidden until the reader clicks
    its button, and the page's two download links resolve: the student edition with one stub per exercise and no
    solution left in it, and the full edition."""
    pages = {r.page: r.solutions for r in site_reports}
    for stem in CHAPTERS:
        nb = nbformat.read(str(ROOT / "chapters" / f"{stem}.ipynb"), as_version=4)
        n = len(student_edition.exercises(nb, stem))
        r = pages[f"chapters/{stem}.html"]
        assert r is not None, f"{stem}: the chapter page was not visited"
        assert r["exercises"] == n == len(r["solutions"]), f"{stem}: {r['exercises']} exercises, " \
            f"{len(r['solutions'])} solutions on the page, {n} in the notebook"
        for s in r["solutions"]:
            assert s["cells"] >= 2, f"{stem}: {s['label']}: the solution's code cells are not inside it"
            assert not s["before"], f"{stem}: {s['label']} is visible before its button is clicked"
            assert s["after"], f"{stem}: {s['label']} stays hidden after its button is clicked"
        assert r["student"] and r["student"]["status"] == 200, f"{stem}: student edition link: {r['student']}"
        student = nbformat.reads(r["student"]["body"], as_version=4)
        tags = [c.metadata.get("tags", []) for c in student.cells]
        assert sum("exercise-stub" in t for t in tags) == n and not any("solution" in t for t in tags), stem
        assert r["full"] and r["full"]["status"] == 200, f"{stem}: full edition link: {r['full']}"
        full = nbformat.reads(r["full"]["body"], as_version=4)
        assert sum("solution" in c.metadata.get("tags", []) for c in full.cells) >= n, stem
