"""SRI over generation steps (the SRI geometry and incomplete-recovery chapters): group means with their
interquartile band, and one generation's SRI beside its text-level refusal signal."""
from __future__ import annotations

import numpy as np

from ..geometry import trajectory_summary
from . import fit_title, group_color, legend_below, sigma_axes


def plot_trajectories(ax, groups: dict[str, np.ndarray], title: str | None = None, band: bool = True,
                      note: str | None = None):
    """Mean SRI per step for each group (dict name -> sigma [N, T]), with the interquartile band; ``note`` (e.g.
    the anchors' fallback) goes under the title."""
    T = next(iter(groups.values())).shape[1]
    sigma_axes(ax, T)
    fit_title(ax, (title or "") + (f"\n⚠ {note}" if note else ""), 10)  # the note above the data, not on it
    steps = np.arange(1, T + 1)
    for i, (name, sig) in enumerate(groups.items()):
        if len(sig) == 0:
            continue
        s = trajectory_summary(sig)
        c = group_color(name, i)
        ax.plot(steps, s["mean"], color=c, lw=2, label=f"{name} (n={len(sig)})", zorder=3)
        if band:
            ax.fill_between(steps, s["lo"], s["hi"], color=c, alpha=0.18, lw=0, zorder=2)
    legend_below(ax)
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
    legend_below(ax)
    return ax


__all__ = ["plot_trajectories", "plot_signal_with_text"]
