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
    elif "ipykernel" in sys.modules:         # an executed notebook without a frontend: one final line
        return _final_line_tqdm()(*args, **kwargs)
    else:
        from tqdm.std import tqdm as _tqdm
    return _tqdm(*args, **kwargs)


def _final_line_tqdm():
    """A text bar that writes nothing until it closes and then one line, its final state: in a notebook executed
    without a frontend every refresh would stay in the output (a "0%" line, a "100%" line and carriage returns,
    shown as separate boxes on the website)."""
    from tqdm.std import tqdm as _tqdm

    class FinalLine(_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["delay"] = float("inf")          # never drawn while running
            kwargs.setdefault("mininterval", float("inf"))
            super().__init__(*args, **kwargs)

        def close(self):
            if not self.disable and self.leave and not getattr(self, "_final_written", False):
                self._final_written = True
                self.fp.write(str(self) + "\n")
                self.fp.flush()
            super().close()

    return FinalLine
