"""Progress bars: ``tqdm.auto`` (a widget) where a live Jupyter frontend exists, plain text elsewhere (terminals,
CI, and the executed notebooks of the static website, where a widget would show up as an empty box)."""

from __future__ import annotations


def tqdm(*args, **kwargs):
    from .viz import widgets_enabled

    if widgets_enabled():
        from tqdm.auto import tqdm as _tqdm
    else:
        from tqdm.std import tqdm as _tqdm
    return _tqdm(*args, **kwargs)
