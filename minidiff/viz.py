"""Plots for the chapters: image grids, loss curves, schedule plots, 2-D scatter and trajectories, and an
interactive sliders (noise level, any precomputed sweep) with a static fallback.

Every function draws into a matplotlib figure and returns it (so tests can inspect it and notebooks show
it). Widgets are used only where a live Jupyter frontend exists (see :func:`widgets_enabled`); on the static
website and in CI the same function draws a static figure instead.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch
from torchvision.utils import make_grid

from ._progress import STATIC_ENV, widgets_enabled  # noqa: F401  (STATIC_ENV: the name viz always had)


def to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, C) in [0, 1] for ``imshow``."""
    x = x.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def image_grid(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """A grid image (C, H', W') in [-1, 1] of a batch ``x`` (B, C, H, W) in [-1, 1]."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be an image batch (B, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    return make_grid(x.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=padding, pad_value=1.0)


def show_images(x: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, figsize=None):
    """Show a batch of images (B, C, H, W) in [-1, 1] as a grid. Returns the figure."""
    grid = image_grid(x, nrow)
    if ax is None:
        rows = int(np.ceil(x.shape[0] / nrow))
        fig, ax = plt.subplots(figsize=figsize or (min(12, 1.0 * nrow), min(12, 1.0 * rows) + (0.4 if title else 0)))
    else:
        fig = ax.figure
    ax.imshow(to_numpy_image(grid), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def show_image_rows(rows: dict, nrow: int = 10, figsize=None):
    """Several labelled grids stacked vertically: ``{"real": x1, "samples": x2, ...}``. Returns the figure."""
    fig, axes = plt.subplots(len(rows), 1, figsize=figsize or (min(12, nrow), 1.3 * len(rows) * max(1, len(next(iter(rows.values()))) // nrow)),
                             squeeze=False)
    for ax, (name, x) in zip(axes[:, 0], rows.items()):
        show_images(x, nrow=nrow, title=name, ax=ax)
    fig.tight_layout()
    return fig


def plot_losses(history: dict, smooth: int = 20, ax=None, label: str | None = None, x: str = "step", logy: bool = True):
    """Loss curve from a :func:`minidiff.train.train` history, raw (faint) and smoothed. Returns the figure."""
    if not history.get("loss"):
        raise ValueError("history has no recorded losses (train for at least log_every steps)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    xs, ys = np.asarray(history[x]), np.asarray(history["loss"])
    line, = ax.plot(xs, ys, alpha=0.25)
    k = max(1, min(smooth, len(ys) // 5 or 1))
    sm = np.convolve(ys, np.ones(k) / k, mode="valid")
    ax.plot(xs[k - 1:], sm, color=line.get_color(), label=label or "loss (smoothed)")
    ax.set_xlabel("training step" if x == "step" else "seconds")
    ax.set_ylabel("loss")
    if logy:
        log_axis(ax, "y")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def log_axis(ax, which: str = "y"):
    """Put the ``"x"``, ``"y"`` (or ``"both"``) axis of ``ax`` on a log scale with tick labels a reader can read:
    plain numbers (``0.01``, ``20``, ``300``) instead of powers like :math:`10^{-2}`, and, on an axis spanning two
    decades or less, labelled minor ticks (``2``, ``3``, ``5``, ...), so a range inside one decade is not left with no
    label at all. Returns ``ax``."""
    if which not in ("x", "y", "both"):
        raise ValueError(f"which must be 'x', 'y' or 'both', got {which!r}")
    for name in ("x", "y") if which == "both" else (which,):
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(_PlainLogFormatter())
        axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    return ax


class _PlainLogFormatter(mticker.LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers (``%g``)."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def plot_schedules(schedules: dict, figsize=(11, 3.2)):
    r"""Compare noise schedules: :math:`\bar\alpha_t`, :math:`\log_{10}\mathrm{SNR}(t)` and :math:`\beta_t` against
    the relative step t/T. ``schedules`` maps a name to a :class:`~minidiff.diffusion.NoiseSchedule`."""
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    for name, s in schedules.items():
        u = (np.arange(s.T) + 1) / s.T
        axes[0].plot(u, s.alphas_cumprod.cpu().numpy(), label=name)
        axes[1].plot(u, np.log10(s.snr.cpu().double().numpy()), label=name)
        axes[2].plot(u, s.betas.cpu().numpy(), label=name)
    for ax, t in zip(axes, [r"$\bar\alpha_t$", r"$\log_{10}\,\mathrm{SNR}(t)$", r"$\beta_t$"]):
        ax.set_title(t)
        ax.set_xlabel("t / T")
        ax.grid(alpha=0.3)
    log_axis(axes[2], "y")
    axes[0].legend()
    fig.tight_layout()
    return fig


def scatter_2d(points, ax=None, title: str | None = None, s: float = 2.0, lim: float | None = 3.0, **kw):
    """Scatter plot of 2-D points (N, 2). Returns the figure."""
    p = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {p.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(3.5, 3.5))
    else:
        fig = ax.figure
    ax.scatter(p[:, 0], p[:, 1], s=s, alpha=kw.pop("alpha", 0.6), **kw)
    if lim:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return fig


def plot_trajectory_2d(trajectory: Sequence, n_panels: int = 6, lim: float = 3.0, n_paths: int = 40,
                       times: Sequence[int] | None = None):
    """Panels of a 2-D sampling trajectory (a list of ``(t, x_t)`` from ``sample(..., return_trajectory=True)``),
    plus a last panel with the paths of ``n_paths`` points. ``times`` picks the snapshots to show (the nearest
    recorded ones); by default ``n_panels`` evenly spaced ones. Returns the figure."""
    if len(trajectory) < 2:
        raise ValueError("trajectory needs at least two snapshots")
    if times is not None:
        recorded = np.array([t for t, _ in trajectory])
        idx = np.unique([int(np.abs(recorded - t).argmin()) for t in times])
    else:
        idx = np.unique(np.linspace(0, len(trajectory) - 1, min(n_panels, len(trajectory))).round().astype(int))
    fig, axes = plt.subplots(1, len(idx) + 1, figsize=(2.4 * (len(idx) + 1), 2.6))
    for ax, i in zip(axes, idx):
        t, x = trajectory[i]
        scatter_2d(x, ax=ax, lim=lim, s=1.0)
        ax.set_title(f"t = {t}")
        ax.set_xticks([])
        ax.set_yticks([])
    paths = np.stack([x[:n_paths].cpu().numpy() for _, x in trajectory])  # (steps, n_paths, 2)
    ax = axes[-1]
    for j in range(paths.shape[1]):
        ax.plot(paths[:, j, 0], paths[:, j, 1], lw=0.6, alpha=0.7)
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=6, color="k", zorder=3)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title("paths")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_image_trajectory(trajectory: Sequence, n_images: int = 8, n_steps: int = 8):
    """Rows = images, columns = snapshots of a sampling trajectory of images, from noise (left) to samples (right)."""
    idx = np.unique(np.linspace(0, len(trajectory) - 1, min(n_steps, len(trajectory))).round().astype(int))
    cols = [trajectory[i][1][:n_images] for i in idx]
    x = torch.stack(cols, 1).flatten(0, 1)  # (n_images * n_cols, C, H, W), row-major per image
    fig, ax = plt.subplots(figsize=(1.1 * len(idx), 1.1 * n_images + 0.3))
    show_images(x, nrow=len(idx), ax=ax)
    ax.set_title("reverse process: t = " + ", ".join(str(trajectory[i][0]) for i in idx), fontsize=9)
    return fig


# ----------------------------------------------------------------------------- widgets with a static fallback
# (widgets_enabled lives in minidiff._progress, which the progress bars share; it is imported above)

def noise_levels_figure(schedule, x0: torch.Tensor, ts: Sequence[int], seed: int = 0):
    r"""Static figure: images ``x0`` (B, C, H, W) noised to :math:`x_t \sim q(x_t\mid x_0)` at each ``t`` in ``ts``."""
    from .diffusion.ddpm import q_sample

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    cols = []
    for t in ts:
        tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
        cols.append(q_sample(schedule.to("cpu"), x0.cpu().float(), tt, noise))
    x = torch.stack(cols, 1).flatten(0, 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(ts), 1.1 * x0.shape[0] + 0.4))
    show_images(x, nrow=len(ts), ax=ax)
    abar = schedule.alphas_cumprod.cpu()
    ax.set_title("t = " + ", ".join(f"{t} (ᾱ={abar[t]:.2f})" for t in ts), fontsize=8)
    return fig


def _figure_png(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


class StaticSlider:
    """A slider that works without a kernel: precomputed frames (PNG) and a range input whose handler swaps the image,
    all in one HTML output, so the website (and any notebook viewer that runs JavaScript) can scrub through them.
    ``frames`` is a list of ``(label, figure)``; the figures are rendered and closed. In a notebook it displays as
    HTML (``_repr_html_``); ``labels`` and ``frames`` (base64 PNGs) stay on the object for tests."""

    def __init__(self, name: str, frames: list):
        if not frames:
            raise ValueError("a slider needs at least one frame")
        import hashlib

        self.name = name
        self.labels = [str(label) for label, _ in frames]
        self.frames = [_figure_png(fig) for _, fig in frames]
        self.id = "minidiff-slider-" + hashlib.sha1("".join(self.frames).encode()).hexdigest()[:12]

    def _repr_html_(self) -> str:
        import html
        import json

        data = json.dumps({"labels": self.labels, "frames": self.frames})
        handler = (f"var d=window['{self.id}'];var i=+this.value;"
                   f"this.parentNode.querySelector('img').src='data:image/png;base64,'+d.frames[i];"
                   f"this.parentNode.querySelector('.minidiff-slider-value').textContent=d.labels[i];")
        return (f'<div class="minidiff-slider" id="{self.id}">'
                f'<script>window["{self.id}"]={data};</script>'
                f'<label>{html.escape(self.name)} = <span class="minidiff-slider-value">'
                f'{html.escape(self.labels[0])}</span></label><br>'
                f'<input type="range" min="0" max="{len(self.frames) - 1}" value="0" step="1" style="width:60%" '
                f'aria-label="{html.escape(self.name)}" oninput="{html.escape(handler)}"><br>'
                f'<img alt="{html.escape(self.name)} = {html.escape(self.labels[0])}" '
                f'src="data:image/png;base64,{self.frames[0]}"></div>')

    def __repr__(self) -> str:
        return f"StaticSlider({self.name!r}, {len(self.frames)} frames: {', '.join(self.labels)})"

    def show(self) -> "StaticSlider":
        """Display it now when running in a notebook (as the widget version does), and return it."""
        import sys

        if "ipykernel" in sys.modules:
            from IPython.display import display

            display(self)
        return self


def noise_slider(schedule, x0: torch.Tensor, n_static: int = 6, seed: int = 0, n_frames: int = 21):
    r"""An ipywidgets slider over t showing :math:`x_t` for the images ``x0``. Where no widget frontend exists
    (static website, CI) it shows a :class:`StaticSlider` over ``n_frames`` evenly spaced steps instead, which works
    in the browser without a kernel (``n_static`` is kept for :func:`noise_levels_figure`, the same picture as one
    figure). Returns the widget, or the static slider."""
    ts = np.linspace(0, schedule.T - 1, n_static).round().astype(int).tolist()
    if not widgets_enabled():
        from .diffusion.ddpm import q_sample

        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=g)
        sched = schedule.to("cpu")
        frames = []
        for t in np.linspace(0, schedule.T - 1, n_frames).round().astype(int).tolist():
            tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
            fig = show_images(q_sample(sched, x0.cpu().float(), tt, noise), nrow=x0.shape[0],
                              title=f"t = {t}, ᾱ_t = {sched.alphas_cumprod[t]:.3f}, SNR = {sched.snr[t]:.3g}")
            frames.append((t, fig))
        return StaticSlider("t", frames).show()
    import ipywidgets as widgets
    from IPython.display import display

    from .diffusion.ddpm import q_sample

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    sched = schedule.to("cpu")
    out = widgets.Output()

    def draw(t):
        with out:
            out.clear_output(wait=True)
            tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
            fig = show_images(q_sample(sched, x0.cpu().float(), tt, noise), nrow=x0.shape[0],
                              title=f"t = {t}, ᾱ_t = {sched.alphas_cumprod[t]:.3f}, SNR = {sched.snr[t]:.3g}")
            display(fig)
            plt.close(fig)

    slider = widgets.IntSlider(value=0, min=0, max=schedule.T - 1, step=1, description="t",
                               continuous_update=False)
    slider.observe(lambda ch: draw(ch["new"]), names="value")
    draw(0)
    box = widgets.VBox([slider, out])
    display(box)
    return box


def image_slider(images: dict, name: str, title: str = "{name} = {value}", nrow: int = 8, static_values=None,
                 figsize=None):
    """A slider over the keys of ``images`` (e.g. the number of sampling steps, or the guidance scale) that shows the
    image batch stored for each value, so a reader can scrub through a sweep that was computed once. Where no widget
    frontend exists (static website, CI) it shows a :class:`StaticSlider` over the same batches instead, which works in
    the browser without a kernel (``static_values``, if given, limits its frames). Returns the widget or the static
    slider."""
    if not isinstance(images, dict) or not images:
        raise ValueError("images must be a non-empty dict {value: image batch (B, C, H, W)}")
    for v, x in images.items():
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"images[{v!r}] must be an image batch (B, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    values = list(images)
    if not widgets_enabled():
        shown = values if static_values is None else [v for v in values if v in set(static_values)]
        frames = [(v, show_images(images[v].cpu(), nrow=nrow, title=title.format(name=name, value=v), figsize=figsize))
                  for v in shown]
        return StaticSlider(name, frames).show()
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def draw(i):
        with out:
            out.clear_output(wait=True)
            v = values[i]
            fig = show_images(images[v].cpu(), nrow=nrow, title=title.format(name=name, value=v))
            display(fig)
            plt.close(fig)

    slider = widgets.SelectionSlider(options=[(str(v), i) for i, v in enumerate(values)], value=0, description=name,
                                     continuous_update=False)
    slider.observe(lambda ch: draw(ch["new"]), names="value")
    draw(0)
    box = widgets.VBox([slider, out])
    display(box)
    return box


def _pca_basis(f: torch.Tensor, q: int, seed: int) -> torch.Tensor:
    """Right singular vectors ``(d, q)`` of the CPU matrix ``f`` by ``torch.pca_lowrank`` (Halko et al. 2011's
    randomised SVD), its random projection seeded with ``seed`` inside a forked CPU RNG: the caller's global RNG state
    is left as it was (``torch.manual_seed`` would also reseed every GPU, so only the CPU generator is seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        _, _, v = torch.pca_lowrank(f, q=q, center=False)
    return v


def project_2d(feats: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project features ``(N, d)`` to 2-D: ``"pca"`` (top two principal components, via ``torch.pca_lowrank``) or
    ``"tsne"`` (scikit-learn's t-SNE on the 50 leading principal components, perplexity 30). ``seed`` fixes the
    randomised parts; torch's global RNG is not touched (it is left in the state the caller had)."""
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] < 3:
        raise ValueError(f"feats must be a 2-D tensor (N >= 3, d), got {getattr(feats, 'shape', type(feats).__name__)}")
    f = feats.detach().float().cpu()
    f = f - f.mean(0)
    if method == "pca":
        v = _pca_basis(f, min(2, f.shape[1]), seed)
        out = (f @ v[:, :2]).numpy()
        return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    if method == "tsne":
        from sklearn.manifold import TSNE

        if f.shape[1] > 50:                 # at most 50 components, and no more than there are points
            f = f @ _pca_basis(f, min(50, f.shape[0]), seed)
        return TSNE(2, perplexity=min(30.0, (f.shape[0] - 1) / 3), init="pca", random_state=seed).fit_transform(f.numpy())
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embeddings(embeddings: dict, labels: torch.Tensor, method: str = "pca", n: int | None = 1000, seed: int = 0,
                    figsize=None):
    """Side-by-side 2-D projections of several feature sets, coloured by class: ``{"pixels": f0, "SimCLR": f1}``.
    Uses the first ``n`` points. Returns the figure."""
    if not embeddings:
        raise ValueError("embeddings is empty: pass {name: features (N, d)}")
    labels = labels.detach().cpu()
    k = len(embeddings)
    fig, axes = plt.subplots(1, k, figsize=figsize or (3.6 * k, 3.6), squeeze=False)
    for ax, (name, f) in zip(axes[0], embeddings.items()):
        if f.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {f.shape[0]} feature rows but {labels.shape[0]} labels")
        m = f.shape[0] if n is None else min(n, f.shape[0])
        xy = project_2d(f[:m], method, seed)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[:m].numpy(), cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        ax.set_title(name)
        ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), fraction=0.02, label="class")
    fig.suptitle(f"features projected to 2-D ({method.upper() if method == 'pca' else 't-SNE'}), coloured by class", y=1.02)
    return fig


def plot_probe_bars(results: dict, chance: float | None = 0.1, ax=None, title: str | None = None):
    """Bar chart of probe accuracies ``{name: (mean, std)}`` with error bars and an optional chance line."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.4 * len(results) + 2, 3))
    else:
        fig = ax.figure
    names = list(results)
    means = [results[k][0] for k in names]
    stds = [results[k][1] for k in names]
    bars = ax.bar(names, means, yerr=stds, capsize=4, color=plt.cm.tab10(np.arange(len(names)) % 10))
    for b, m in zip(bars, means):
        ax.text(b.get_x() + b.get_width() / 2, m + 0.02, f"{m:.2f}", ha="center", va="bottom", fontsize=9)
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label="chance")
        ax.legend(loc="lower right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig


def progress(iterable, desc: str | None = None, **kwargs):
    """An overall progress bar over ``iterable`` for a loop of several trainings or samplers (``tqdm``: a widget in
    a live notebook, plain text elsewhere, drawn only at its start and end where no frontend shows it)."""
    from ._progress import tqdm

    return tqdm(iterable, desc=desc, **kwargs)


def glue(name: str, value, display: bool = False):
    """Hand ``value`` to the book under ``name`` (myst-nb's ``glue``), so that the prose quotes the executed run,
    e.g. ``{glue:text}`name:.1f```; returns ``value``. Where myst-nb is not installed (Colab, a bare Jupyter) it only
    returns the value: the number is then printed by the cell itself."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, _Text(value) if isinstance(value, str) else value, display=display)
    return value


class _Text:
    """A glued sentence: its plain-text form is the text itself (a ``str`` would be quoted, as its repr)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p, cycle):
        p.text(self.text)

