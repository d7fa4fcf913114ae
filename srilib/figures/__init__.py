"""The book's figures, one module per chapter or kind of figure; this package module holds what they share.

Shared here: the book's matplotlib style and layout (:func:`book_style`, :func:`figure_grid`, :data:`BOOK_WIDTH`),
the colours of prompt groups, model families and thresholds, the SRI axis in the paper's conventions (step axis
t = 1..T, SRI in [0, 1], zones at 0.5 and 0.3; :func:`sigma_axes`) and error bars of rates.

Modules: :mod:`.trajectories` (SRI over steps), :mod:`.geometry` (projections, anchor separation), :mod:`.recovery`
(IRR bars, worked examples, diffusion canvases as HTML), :mod:`.sampling` (sampler deltas, per-family rates),
:mod:`.adaptive` (ASR against the Random Search budget), :mod:`.detector` (ROC curves, overhead, transfer, shift).
Matplotlib is imported inside the functions, so importing a figures module needs no plotting backend.
"""
from __future__ import annotations

import numpy as np

from ..signal import COMPLIANCE_ZONE, REFUSAL_ZONE

# The book's content column is about 720 px wide and the notebooks save figures at 110 dpi: a figure of
# BOOK_WIDTH inches is shown at (nearly) its natural size, so fonts of 8-10 pt stay legible. Multi-panel figures
# put at most MAX_COLS panels in a row and add rows instead of shrinking panels (figure_grid).
BOOK_DPI = 110
BOOK_WIDTH = 6.8  # inches: 748 px at BOOK_DPI
MAX_COLS = 2
BOOK_STYLE = {"figure.dpi": BOOK_DPI, "savefig.dpi": BOOK_DPI, "font.size": 9, "axes.titlesize": 9.5,
              "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8}


def book_style() -> None:
    """Matplotlib settings of the book's figures (dpi and font sizes matched to :data:`BOOK_WIDTH`)."""
    import matplotlib.pyplot as plt
    plt.rcParams.update(BOOK_STYLE)


def figure_grid(n: int, *, ncols: int = MAX_COLS, panel_height: float = 2.9, width: float = BOOK_WIDTH, **kw):
    """A figure for ``n`` panels laid out at most ``ncols`` to a row (more rows, never narrower panels), as wide
    as the book's content column; returns ``(fig, axes)`` with exactly ``n`` axes (unused cells removed).
    ``kw`` goes to ``plt.subplots`` (e.g. ``sharey=True``)."""
    import matplotlib.pyplot as plt

    if n < 1:
        raise ValueError(f"figure_grid needs at least one panel, got {n}")
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, panel_height * rows), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


# ------------------------------------------------------------------------------------------------ colours
GROUP_COLORS = {"harmless": "#2b8cbe", "harmful": "#d7301f", "refusal": "#31a354", "jailbreak": "#d7301f"}
# The zones are shades of grey, so that no group's colour (the harmful band's red, the refused band's green) is
# confused with the zone it is drawn on; the labels on the right name them.
ZONE_STYLE = {"compliance": ("#e3e3e3", "compliance  (σ > 0.5)"), "transitional": ("#f4f4f4", "transitional"),
              "refusal": ("#ffffff", "refusal  (σ < 0.3)")}
FAMILY_COLORS = {"AR": "#d95f02", "DLM": "#1b9e77", "DLM, AR sampling": "#7570b3"}
THRESHOLD_COLORS = ("#c6dbef", "#6baed6", "#08519c")


def group_color(name: str, i: int) -> str:
    """Colour of a prompt group: its own (:data:`GROUP_COLORS`) or the ``i``-th of matplotlib's cycle."""
    import matplotlib.pyplot as plt
    return GROUP_COLORS.get(name, plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])


# ------------------------------------------------------------------------------------------------ axes
def sigma_axes(ax, T: int, title: str | None = None, zones: bool = True, ylabel: str = "SRI  σ_t"):
    """Prepare an axis for SRI over steps: shaded zones, step ticks 1..T, y in [0, 1]."""
    if zones:
        ax.axhspan(COMPLIANCE_ZONE, 1.02, color=ZONE_STYLE["compliance"][0], zorder=0, lw=0)
        ax.axhspan(REFUSAL_ZONE, COMPLIANCE_ZONE, color=ZONE_STYLE["transitional"][0], zorder=0, lw=0)
        ax.axhspan(-0.02, REFUSAL_ZONE, color=ZONE_STYLE["refusal"][0], zorder=0, lw=0)
        for y in (COMPLIANCE_ZONE, REFUSAL_ZONE):
            ax.axhline(y, color="0.5", lw=0.8, ls="--", zorder=1)
        ax.text(1.01, (1 + COMPLIANCE_ZONE) / 2, "compliance", transform=ax.get_yaxis_transform(), va="center",
                fontsize=8, color="0.35", rotation=90)
        ax.text(1.01, REFUSAL_ZONE / 2, "refusal", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                color="0.35", rotation=90)
    ax.set_xlim(0.5, T + 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    ticks = np.unique(np.linspace(1, T, min(T, 9)).round().astype(int))
    ax.set_xticks(ticks)
    if title:
        fit_title(ax, title, 10)
    return ax


def fit_title(ax, text: str, fontsize: float = 9.5) -> None:
    """Set ``ax``'s title wrapped to the panel's width (so a long title never runs into the next panel)."""
    import textwrap

    width_px = ax.get_position().width * ax.figure.get_figwidth() * ax.figure.dpi
    chars = max(12, int(width_px / (0.55 * fontsize * ax.figure.dpi / 72)))
    lines = [w for para in str(text or "").split("\n") for w in (textwrap.wrap(para, chars) or [""])]
    ax.set_title("\n".join(lines) if text else "", fontsize=fontsize)


def legend_below(ax, handles=None, labels=None, title: str | None = None, ncol: int | None = None,
                 fontsize: float = 7.5):
    """A legend under ``ax``, below its tick labels and x label, in as many columns as fit the panel's width:
    never over the data. ``tight_layout`` makes room for it. Returns the legend (None without entries)."""
    from matplotlib.transforms import ScaledTranslation

    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    elif labels is None:
        labels = [h.get_label() for h in handles]
    if not handles:
        return None
    fig = ax.figure
    r = fig.canvas.get_renderer()
    drop_px = max(0.0, ax.get_window_extent(r).y0 - ax.get_tightbbox(r).y0)  # ticks and x label, in pixels
    shift = ScaledTranslation(0, -(drop_px + 3) / fig.dpi, fig.dpi_scale_trans)
    axis_w = ax.get_window_extent(r).width
    leg = None
    for nc in range(ncol or min(len(handles), 3), 0, -1):
        if leg is not None:
            leg.remove()
        leg = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0),
                        bbox_transform=ax.transAxes + shift, ncol=nc, fontsize=fontsize, frameon=False,
                        title=title, title_fontsize=fontsize, borderaxespad=0, columnspacing=1.2, handlelength=1.6)
        if leg.get_window_extent(r).width <= 1.1 * axis_w:
            break
    return leg


def layout_problems(fig) -> list[str]:
    """What hides data or text in a drawn figure: a legend over any axes' data area or over another legend, a
    title over another title. Empty when the figure is clean (the book's figure tests check this)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axes = [a for a in fig.axes if a.get_visible()]
    legends = [(i, a.get_legend()) for i, a in enumerate(axes) if a.get_legend() is not None]
    legends += [(-1, lg) for lg in fig.legends]
    out = []
    for i, lg in legends:
        lb = lg.get_window_extent(r)
        for j, a in enumerate(axes):
            if lb.overlaps(a.get_window_extent(r)):
                out.append(f"legend of panel {i} lies over the data of panel {j}")
        for k, other in legends:
            if other is not lg and k > i and lb.overlaps(other.get_window_extent(r)):
                out.append(f"legends of panels {i} and {k} overlap")
    titles = [(i, a.title.get_window_extent(r)) for i, a in enumerate(axes) if a.get_title()]
    for n, (i, tb) in enumerate(titles):
        for j, ob in titles[n + 1:]:
            if tb.overlaps(ob):
                out.append(f"titles of panels {i} and {j} overlap")
    return out


_FIGURE_NUMBER = [0]


def show_figure(fig, caption: str, numbered: bool = True, glue_name: str | None = None) -> int | None:
    """Lay out, display and close ``fig`` with its caption below it: "Figure n. ...", numbered in the order a
    notebook shows its figures (returns n), or, with ``numbered=False`` (a figure repeated at the top of a
    chapter), "Headline figure. ..." (returns None). With ``glue_name`` the laid-out figure is also glued under
    that name (myst-nb) for another page to paste, from the very image shown here."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    fig.tight_layout()
    if glue_name:
        from myst_nb import glue
        glue(glue_name, fig, display=False)
    display(fig)
    plt.close(fig)
    if not numbered:
        display(Markdown(f"**Headline figure.** {caption}"))
        return None
    _FIGURE_NUMBER[0] += 1
    display(Markdown(f"**Figure {_FIGURE_NUMBER[0]}.** {caption}"))
    return _FIGURE_NUMBER[0]


def rate_errorbars(rates) -> tuple[np.ndarray, np.ndarray]:
    """(values [n], error bars [2, n]) of rates with intervals (``.value``, ``.lo``, ``.hi``); NaN bars become 0."""
    v = np.array([r.value for r in rates], dtype=float)
    lo = np.array([r.lo for r in rates], dtype=float)
    hi = np.array([r.hi for r in rates], dtype=float)
    return v, np.nan_to_num(np.vstack([v - lo, hi - v]))


__all__ = ["BOOK_DPI", "BOOK_WIDTH", "MAX_COLS", "BOOK_STYLE", "book_style", "figure_grid", "GROUP_COLORS",
           "ZONE_STYLE", "FAMILY_COLORS", "THRESHOLD_COLORS", "group_color", "sigma_axes", "fit_title", "legend_below",
           "layout_problems", "show_figure", "rate_errorbars"]
