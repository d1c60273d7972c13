import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from minidiff import viz
from minidiff.diffusion.schedules import make_schedule


def test_image_grid_and_show():
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    g = viz.image_grid(x, nrow=5)
    assert g.shape[0] == 3 and g.shape[1] == 2 * 8 + 3 * 2 and g.shape[2] == 5 * 8 + 6 * 2
    fig = viz.show_images(x, nrow=5, title="t")
    assert fig.axes[0].get_title() == "t"
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        viz.image_grid(torch.zeros(8, 8))


def test_plots_return_figures():
    s = {"lin": make_schedule("linear", 100), "cos": make_schedule("cosine", 100)}
    fig = viz.plot_schedules(s)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 2
    h = {"step": list(range(1, 51)), "loss": [1 / i for i in range(1, 51)], "lr": [0.1] * 50, "time": list(range(50))}
    assert viz.plot_losses(h).axes[0].get_yscale() == "log"
    with pytest.raises(ValueError, match="no recorded losses"):
        viz.plot_losses({"step": [], "loss": []})
    traj = [(t, torch.randn(30, 2)) for t in (10, 5, 0)]
    assert len(viz.plot_trajectory_2d(traj, n_panels=3).axes) == 4
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        viz.scatter_2d(torch.zeros(5, 3))
    itraj = [(t, torch.rand(4, 1, 8, 8)) for t in (10, 5, 0)]
    assert viz.plot_image_trajectory(itraj, n_images=2).axes


def test_noise_slider_static_fallback_and_widget(monkeypatch):
    s = make_schedule("cosine", 50)
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    monkeypatch.setenv("MINIDIFF_STATIC", "1")
    assert not viz.widgets_enabled()
    before = set(plt.get_fignums())
    sl = viz.noise_slider(s, x0, n_frames=5)
    assert isinstance(sl, viz.StaticSlider) and sl.labels == ["0", "12", "24", "37", "49"]
    assert len(set(sl.frames)) == 5                 # each t its own picture
    assert set(plt.get_fignums()) == before          # its figures were rendered and closed, none left open
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.setattr(viz, "widgets_enabled", lambda: True)
    w = viz.noise_slider(s, x0)
    assert isinstance(w, ipywidgets.VBox) and w.children[0].max == 49
    w.children[0].value = 30  # moving the slider redraws without error


def test_image_slider_static_rows_and_widget(monkeypatch):
    sweep = {w: torch.full((4, 1, 8, 8), w / 10) for w in (0.0, 1.0, 3.0)}
    monkeypatch.setenv("MINIDIFF_STATIC", "1")
    sl = viz.image_slider(sweep, "w", title="guidance w = {value}", nrow=4)
    assert sl.labels == ["0.0", "1.0", "3.0"] and len(set(sl.frames)) == 3
    assert viz.image_slider(sweep, "w", static_values=[0.0, 3.0]).labels == ["0.0", "3.0"]
    with pytest.raises(ValueError, match=r"images\[1\] must be an image batch"):
        viz.image_slider({1: torch.zeros(8, 8)}, "steps")
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.setattr(viz, "widgets_enabled", lambda: True)
    drawn = []
    monkeypatch.setattr(viz, "show_images", lambda x, nrow, title: drawn.append((title, float(x.mean()))) or plt.figure())
    box = viz.image_slider(sweep, "w")
    slider = box.children[0]
    assert isinstance(slider, ipywidgets.SelectionSlider) and [o[0] for o in slider.options] == ["0.0", "1.0", "3.0"]
    slider.value = 2          # moving the slider shows the batch stored for w = 3
    assert drawn[-1] == ("w = 3.0", pytest.approx(0.3))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_project_2d_leaves_the_global_rng_alone(method):
    feats = torch.randn(40, 60, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    state = torch.get_rng_state()
    xy = viz.project_2d(feats, method=method, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert xy.shape == (40, 2)
    torch.manual_seed(123)                                       # the projection still depends only on its seed
    assert (viz.project_2d(feats, method=method, seed=3) == xy).all()


def test_glue_hands_values_to_myst_nb_and_sentences_without_quotes(monkeypatch):
    """viz.glue forwards to myst-nb's glue (numbers as they are, a sentence as text whose plain-text form has no
    quotes: a glued str would show its repr), returns the value, and is a no-op where myst-nb is absent (Colab)."""
    import sys
    import types

    from IPython.lib.pretty import pretty

    seen = {}
    monkeypatch.setitem(sys.modules, "myst_nb", types.SimpleNamespace(
        glue=lambda name, value, display=False: seen.__setitem__(name, value)))
    assert viz.glue("fid", 12.5) == 12.5 and seen["fid"] == 12.5
    assert viz.glue("verdict", "η = 1 is ahead") == "η = 1 is ahead"
    assert pretty(seen["verdict"]) == "η = 1 is ahead" and repr(seen["verdict"]) == "η = 1 is ahead"
    monkeypatch.setitem(sys.modules, "myst_nb", None)          # import fails: nothing to hand over
    assert viz.glue("x", 3) == 3


def test_static_slider_html_swaps_the_frame_in_the_browser_handler():
    """The HTML of a static slider carries every frame and a range input whose handler shows frame i (checked in a
    real browser by tests/test_site.py); one frame per label; nothing to show is an error."""
    import base64
    import json
    import re

    figs = []
    for v in (1, 2):
        fig, ax = plt.subplots()
        ax.imshow(np.full((4, 4), v), vmin=0, vmax=2)
        figs.append((v, fig))
    sl = viz.StaticSlider("steps", figs)
    html = sl._repr_html_()
    data = json.loads(re.search(r'window\["[\w-]+"\]=(\{.*?\});</script>', html).group(1))
    assert data["labels"] == ["1", "2"] and data["frames"] == sl.frames
    assert all(base64.b64decode(f)[:8] == b"\x89PNG\r\n\x1a\n" for f in sl.frames)
    assert 'type="range" min="0" max="1"' in html and "oninput=" in html and sl.frames[0] in html
    with pytest.raises(ValueError, match="at least one frame"):
        viz.StaticSlider("x", [])
