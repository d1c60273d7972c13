"""Sphinx extension for the API reference (``book/api.md``): a reference to a minidiff object through the path a
reader imports it by resolves to the place the object is documented, which is where it is defined.

autodoc documents each object once, in its defining module (``minidiff.config.runtime.get_profile``), but the
docstrings name objects the way the chapters use them: through a package that re-exports them
(``:func:`minidiff.config.get_profile```) or by a short name imported into the current module (``:class:`Profile```
in ``minidiff.config.runtime``). Such a reference is resolved only when importing its path gives the very object that
is documented under another name (identity, not a name match), so a reference to something that does not exist, or
to an undocumented private name, still fails the nitpicky build.
"""

import importlib


def _import_path(path: str):
    """The object at dotted ``path`` (the longest importable module prefix, then attributes); raises if none."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module = node.get("py:module") or ""
    paths = [target] if target.startswith("minidiff.") else []
    if module.startswith("minidiff"):
        paths.append(f"{module}.{target}")
    domain = env.get_domain("py")
    name = target.rsplit(".", 1)[-1]
    for path in paths:
        try:
            obj = _import_path(path)
        except (ImportError, AttributeError):
            continue
        for fullname in domain.objects:
            if fullname == path or not fullname.startswith("minidiff.") or not fullname.endswith("." + name):
                continue
            try:
                same = _import_path(fullname) is obj
            except (ImportError, AttributeError):
                same = False
            if same:
                return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], fullname, node, contnode)
    return None


def setup(app):
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
