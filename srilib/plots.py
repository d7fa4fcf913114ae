"""Figures in the paper's conventions: step axis t = 1..T, SRI in [0, 1], zones at 0.5 and 0.3."""
from __future__ import annotations

import numpy as np

from .geometry import trajectory_summary
from .signal import COMPLIANCE_ZONE, REFUSAL_ZONE

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


GROUP_COLORS = {"harmless": "#2b8cbe", "harmful": "#d7301f", "refusal": "#31a354", "jailbreak": "#d7301f"}
ZONE_STYLE = {"compliance": ("#fde0dd", "compliance  (σ > 0.5)"), "transitional": ("#f0f0f0", "transitional"),
              "refusal": ("#e5f5e0", "refusal  (σ < 0.3)")}


def _color(name: str, i: int) -> str:
    import matplotlib.pyplot as plt
    return GROUP_COLORS.get(name, plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])


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
        ax.set_title(title, fontsize=10)
    return ax


def plot_trajectories(ax, groups: dict[str, np.ndarray], title: str | None = None, band: bool = True,
                      note: str | None = None):
    """Mean SRI per step for each group (dict name -> sigma [N, T]), with the interquartile band."""
    T = next(iter(groups.values())).shape[1]
    sigma_axes(ax, T, title)
    steps = np.arange(1, T + 1)
    for i, (name, sig) in enumerate(groups.items()):
        if len(sig) == 0:
            continue
        s = trajectory_summary(sig)
        c = _color(name, i)
        ax.plot(steps, s["mean"], color=c, lw=2, label=f"{name} (n={len(sig)})", zorder=3)
        if band:
            ax.fill_between(steps, s["lo"], s["hi"], color=c, alpha=0.18, lw=0, zorder=2)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    if note:
        ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="#b30000")
    return ax


def plot_signal_with_text(ax, sigma: np.ndarray, text_sig: np.ndarray | None = None, title: str | None = None,
                          label: str = "SRI σ_t"):
    """One generation: SRI per step and, if given, the text-level refusal signal (1 until a phrase appears)."""
    T = len(sigma)
    sigma_axes(ax, T, title)
    steps = np.arange(1, T + 1)
    ax.plot(steps, sigma, "-o", ms=3, color="#08519c", lw=1.8, label=label, zorder=3)
    if text_sig is not None:
        ax.step(steps, text_sig, where="mid", color="#a50f15", lw=1.4, ls=":", label="text signal", zorder=3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return ax


def plot_projection(ax, proj, title: str | None = None, max_points: int = 2000, seed: int = 0):
    """Scatter of a :class:`srilib.geometry.Projection`, coloured by group."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(proj.Z))
    if len(idx) > max_points:
        idx = rng.choice(idx, max_points, replace=False)
    for i, g in enumerate(sorted(set(proj.labels.tolist()))):
        m = idx[proj.labels[idx] == g]
        ax.scatter(proj.Z[m, 0], proj.Z[m, 1], s=14, alpha=0.7, color=_color(g, i), label=f"{g} (n={len(m)})",
                   edgecolors="none")
    ax.set_xlabel(proj.axes[0])
    ax.set_ylabel(proj.axes[1])
    ax.legend(fontsize=8, framealpha=0.9)
    ax.set_title(title or proj.summary, fontsize=9)
    return ax


def anchor_separation(ax, anchors_by_model: dict, title: str = "anchor separation per step"):
    """Cosine distance between the harmless and harmful anchors at each step, per model."""
    for i, (name, a) in enumerate(anchors_by_model.items()):
        ax.plot(np.arange(1, a.T + 1), a.separation, lw=1.8, label=name + (" *" if a.fallback else ""))
    ax.set_xlabel("step t")
    ax.set_ylabel("1 − cos(μ_harmless, μ_harmful)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax
