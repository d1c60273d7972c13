"""Open every page of the built website in headless Chromium and report what a reader would see broken.

    python scripts/check_site.py _build/html                      # all pages; exit 1 on any problem
    python scripts/check_site.py _build/html --screenshots shots/ # also save screenshots of two pages

For each page it checks, in a real browser (Debian's ``/usr/bin/chromium`` driven by Playwright; no browser is
ever downloaded):

- no JavaScript error (uncaught exceptions and ``console.error``), and no local file that fails to load;
- MathJax has run: no raw ``$$``, ``\\(`` or ``\\[`` left in the visible text, no MathJax error box;
- every ``<img>`` has loaded (non-zero natural size);
- every internal link resolves (``<a>`` and ``<link>``: sidebar table of contents, next/previous buttons,
  stylesheets): the target file exists and its ``#anchor`` is an id on the target page;
- on chapter pages, the Colab launch button points at this chapter's notebook in the repository
  (``repository.url`` of ``_config.yml``).

The site is served on a local port; requests to other hosts are blocked (the check must work offline) and
listed, not counted as problems. Used by ``tests/test_site.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import socketserver
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
REDIRECT = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.I)
RAW_MATH = re.compile(r"\$\$|\\\(|\\\[|\\begin\{(equation|align)")


def find_chromium() -> str | None:
    """Path of a system Chromium, or None. ``$MINIDIFF_CHROMIUM`` overrides the search."""
    env = os.environ.get("MINIDIFF_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for c in CHROMIUM_CANDIDATES:
        if Path(c).exists():
            return c
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    n_images: int = 0
    n_links: int = 0
    n_math: int = 0
    solutions: dict | None = None   # chapter pages, with check_site(solutions=True): what _solutions returns


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as httpd:
        httpd.daemon_threads = True
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_text(encoding="utf-8", errors="replace"), "html.parser")
    return frozenset([t["id"] for t in soup.find_all(id=True)] + [t["name"] for t in soup.find_all("a", attrs={"name": True})])


def _check_link(root: Path, page_url: str, base: str, href: str) -> str | None:
    """None if ``href`` (absolute URL on the local server) resolves inside ``root``, else what is wrong."""
    parts = urlsplit(href)
    rel = unquote(parts.path[len(urlsplit(base).path):])
    target = root / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    if not target.exists():
        return f"broken link to {rel or '/'} (no such file)"
    if parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target):
        return f"broken link to {rel}#{parts.fragment} (no such anchor on that page)"
    return None


_PAGE_JS = """
() => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER', 'NOSCRIPT']);
  const texts = [];
  const root = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      for (let e = n.parentElement; e; e = e.parentElement) {
        if (skip.has(e.tagName) || e.classList.contains('highlight') || e.classList.contains('output')
            || e.classList.contains('cell_output')) return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
  while (walker.nextNode()) texts.push(walker.currentNode.nodeValue);
  return {
    text: texts.join(' '),
    images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll('a[href], link[href]')).map(a => a.href),
    math: document.querySelectorAll('mjx-container').length,
    mathErrors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
    hasMathJax: typeof window.MathJax === 'object' && !!window.MathJax.startup,
  };
}
"""


def check_site(root, pages=None, screenshots: dict | None = None, repo_url: str | None = None,
               chromium: str | None = None, timeout_ms: int = 30000, solutions: bool = False) -> list[PageReport]:
    """Check ``pages`` (paths relative to ``root``; default every ``*.html`` outside ``_static``) and return
    one :class:`PageReport` per page. ``screenshots`` maps page -> PNG path to save. ``repo_url`` enables the
    Colab launch-button check on ``chapters/*.html``. ``solutions``: on each chapter page, after the checks and the
    screenshot, also click every exercise's solution open and fetch the two download links (:func:`_solutions`;
    the result in ``PageReport.solutions``), in the same visit."""
    from playwright.sync_api import sync_playwright

    root = Path(root).resolve()
    if not (root / "index.html").exists() and pages is None:
        raise FileNotFoundError(f"{root} has no index.html: build the book first (make book)")
    if pages is None:
        pages = sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if "_static" not in p.parts
                       and "_sources" not in p.parts)
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found (install Debian's chromium package, or set MINIDIFF_CHROMIUM)")
    screenshots = screenshots or {}
    reports = []
    with serve(root) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            local = urlsplit(base).netloc
            for page_rel in pages:
                rep = PageReport(page_rel)
                redirect = REDIRECT.search((root / page_rel).read_text(encoding="utf-8", errors="replace")[:2000])
                if redirect:   # a redirect stub (index.html): its target must exist
                    rep.n_links = 1
                    err = _check_link(root, "", base, urljoin(urljoin(base, page_rel), redirect.group(1)))
                    if err:
                        rep.problems.append("redirect: " + err)
                    reports.append(rep)
                    continue
                page = context.new_page()

                def on_route(route, rep=rep):
                    if urlsplit(route.request.url).netloc == local:
                        route.continue_()
                    else:
                        rep.external_requests.append(route.request.url)
                        route.abort()

                page.route("**/*", on_route)
                page.on("pageerror", lambda exc, rep=rep: rep.problems.append(f"JavaScript error: {exc}"))
                page.on("console", lambda msg, rep=rep: msg.type == "error" and urlsplit(msg.location.get("url", "")).netloc in ("", local)
                        and "net::ERR_FAILED" not in msg.text
                        and rep.problems.append(f"console error: {msg.text[:300]}"))
                page.on("response", lambda r, rep=rep: r.status >= 400 and urlsplit(r.url).netloc == local
                        and rep.problems.append(f"HTTP {r.status} for {r.url[len(base):]}"))
                url = urljoin(base, page_rel)
                try:
                    page.goto(url, wait_until="load", timeout=timeout_ms)
                    # Let MathJax finish typesetting (its startup promise), then read the page.
                    page.evaluate("""async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise)
                                                    { await MathJax.startup.promise; } }""")
                    info = page.evaluate(_PAGE_JS)
                except Exception as e:  # a page that cannot be loaded is a problem, not a crash of the checker
                    rep.problems.append(f"page did not load: {type(e).__name__}: {str(e)[:300]}")
                    page.close()
                    reports.append(rep)
                    continue
                m = RAW_MATH.search(info["text"])
                if m:
                    i = m.start()
                    rep.problems.append(f"unrendered math: ...{info['text'][max(0, i - 40):i + 40]!r}...")
                if info["mathErrors"]:
                    rep.problems.append(f"{info['mathErrors']} MathJax error box(es)")
                rep.n_math = info["math"]
                rep.n_images = len(info["images"])
                for img in info["images"]:
                    if not img["ok"]:
                        rep.problems.append(f"image not loaded: {img['src'][len(base):] if img['src'].startswith(base) else img['src']}")
                seen = set()
                for href in info["links"]:
                    if not href.startswith(base) or href in seen:
                        continue
                    seen.add(href)
                    rep.n_links += 1
                    err = _check_link(root, url, base, href)
                    if err:
                        rep.problems.append(err)
                if repo_url and page_rel.startswith("chapters/"):
                    stem = Path(page_rel).stem
                    want = ("https://colab.research.google.com/github/" + repo_url.split("github.com/", 1)[-1].strip("/")
                            + f"/blob/main/chapters/{stem}.ipynb")
                    colab = [h for h in info["links"] if "colab.research.google.com" in h]
                    if want not in colab:
                        rep.problems.append(f"Colab launch button: expected a link to {want}, found {colab or 'none'}")
                if page_rel in screenshots:
                    Path(screenshots[page_rel]).parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots[page_rel]), full_page=False)
                if solutions and page_rel.startswith("chapters/"):
                    rep.solutions = _solutions(page)
                page.close()
                reports.append(rep)
        finally:
            browser.close()
    return reports


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", default="_build/html")
    ap.add_argument("--screenshots", default=None, help="folder for screenshots of index.html and one chapter")
    args = ap.parse_args(argv)
    import yaml

    cfg = Path(__file__).resolve().parents[1] / "_config.yml"
    repo_url = yaml.safe_load(cfg.read_text())["repository"]["url"]
    shots = {}
    if args.screenshots:
        shots = {"index.html": Path(args.screenshots) / "index.png",
                 "chapters/04_ddpm.html": Path(args.screenshots) / "04_ddpm.png"}
    reports = check_site(args.html, screenshots=shots, repo_url=repo_url)
    bad = 0
    for r in reports:
        status = "ok " if not r.problems else "BAD"
        print(f"{status} {r.page}: {r.n_links} internal links, {r.n_images} images, {r.n_math} formulas")
        for p in r.problems:
            print(f"      - {p}")
        bad += bool(r.problems)
    print(f"{len(reports)} pages checked, {bad} with problems")
    return 1 if bad else 0


def move_sliders(root, page: str, chromium: str | None = None) -> list[dict]:
    """Open ``page`` of the built site and move every kernel-free slider (``.minidiff-slider``, see
    :class:`minidiff.viz.StaticSlider`) to its last position, as a reader dragging it would (an ``input`` event).
    Returns, per slider, the image source and the shown value before and after, and the slider's maximum."""
    with _page(root, page, chromium) as tab:
        out = []
        for box in tab.locator(".minidiff-slider").all():
            img, value, rng = box.locator("img"), box.locator(".minidiff-slider-value"), box.locator("input")
            before = {"src": img.get_attribute("src"), "value": value.inner_text()}
            top = rng.get_attribute("max")
            rng.fill(top)                              # sets the value and fires input (and change)
            out.append({"max": int(top), "before": before,
                        "after": {"src": img.get_attribute("src"), "value": value.inner_text()}})
        return out


@contextlib.contextmanager
def _page(root, page: str, chromium: str | None = None):
    """``page`` of the built site at ``root``, served locally and open in headless Chromium; yields the tab."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found (install Debian's chromium package, or set MINIDIFF_CHROMIUM)")
    with serve(Path(root).resolve()) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.goto(f"{base}/{page}", wait_until="load")
            yield tab
        finally:
            browser.close()


def _solutions(tab) -> dict:
    """On an open chapter page, for every exercise's solution (sphinx-exercise's ``.solution.dropdown``): whether its
    code cells are visible before and after a reader clicks its button; then the page's student- and full-edition
    download links fetched as the browser would. Returns ``{"solutions": [{"label", "before", "after", "cells"}],
    "exercises": n, "student": {"href", "status", "body"}, "full": {...}}`` (a missing link is None)."""
    out = {"solutions": [], "exercises": tab.locator(".exercise.admonition").count()}
    for sol in tab.locator(".solution.dropdown").all():
        cells = sol.locator(".cell")
        shown = lambda: any(c.is_visible() for c in cells.all())   # noqa: E731
        before = shown()
        sol.locator("button.toggle-button").first.click()
        tab.wait_for_timeout(100)
        out["solutions"].append({"label": sol.locator(".admonition-title").inner_text().strip(),
                                 "before": before, "after": shown(), "cells": cells.count()})
    for edition in ("student", "full"):
        link = tab.locator(f"a.download-{edition}")
        out[edition] = None
        if link.count():
            href = link.first.get_attribute("href")
            resp = tab.request.get(urljoin(tab.url, href))
            out[edition] = {"href": href, "status": resp.status, "body": resp.text() if resp.ok else ""}
    return out


if __name__ == "__main__":
    sys.exit(main())
