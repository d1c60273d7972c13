"""Sphinx extension: two fixes for JavaScript errors that the browser tests (``tests/test_site.py``) found on
every page of the website.

1. sphinx-thebe registers its inline configuration script (``const THEBE_JS_URL = ...``) on every
   ``env-before-read-docs`` event, and Jupyter Book fires that event more than once per build, so each page
   declared the same ``const`` twice (``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``).
   Identical scripts are kept once, in their first position.
2. pydata-sphinx-theme writes ``data-mode=""`` when no ``default_mode`` is configured and then logs
   ``Got invalid theme mode`` as a console error on a reader's first visit; we set it to ``auto`` in
   each page's template context.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for s in scripts:   # same file (None and "" both mean inline) and attributes (the inline body included)
        key = (str(getattr(s, "filename", s) or ""), tuple(sorted(getattr(s, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(s)
    scripts[:] = kept


def _theme_mode(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "auto"


def setup(app):
    app.connect("html-page-context", _theme_mode)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
