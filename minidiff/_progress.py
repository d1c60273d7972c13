"""Progress bars: ``tqdm.auto`` (a widget) where a live Jupyter frontend exists, plain text elsewhere.

In a notebook executed without a frontend (the website build, nbval) every text refresh would be kept as a
line of output, so there the bar is drawn only when it starts and when it ends."""

from __future__ import annotations

import sys


def tqdm(*args, **kwargs):
    from .viz import widgets_enabled

    if widgets_enabled():
        from tqdm.auto import tqdm as _tqdm
    else:
        from tqdm.std import tqdm as _tqdm

        if "ipykernel" in sys.modules:
            kwargs.setdefault("mininterval", float("inf"))
    return _tqdm(*args, **kwargs)
