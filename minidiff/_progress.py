"""Progress bars: ``tqdm.auto`` (a widget) where a live Jupyter frontend exists, plain text elsewhere.

In a notebook executed without a frontend (the website build, nbval) every text refresh would be kept as a
line of output, so there the bar is drawn only when it starts and when it ends. :func:`widgets_enabled` decides,
here for the bars and in :mod:`minidiff.viz` for the sliders (this module imports nothing of minidiff)."""

from __future__ import annotations

import os
import sys

STATIC_ENV = "MINIDIFF_STATIC"


def widgets_enabled() -> bool:
    """True when a live Jupyter frontend can show ipywidgets: inside an IPython kernel, ipywidgets importable, and
    ``$MINIDIFF_STATIC`` unset (the Makefile sets it for the website build and CI, where no frontend exists)."""
    if os.environ.get(STATIC_ENV, "").strip() not in ("", "0"):
        return False
    if "ipykernel" not in sys.modules:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def tqdm(*args, **kwargs):
    if widgets_enabled():
        from tqdm.auto import tqdm as _tqdm
    else:
        from tqdm.std import tqdm as _tqdm

        if "ipykernel" in sys.modules:
            kwargs.setdefault("mininterval", float("inf"))
    return _tqdm(*args, **kwargs)
