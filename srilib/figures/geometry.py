"""Figures of the SRI geometry chapter's representation space: a 2-D projection of pooled activations coloured by
prompt group, and the distance between the harmless and harmful anchors at each step."""
from __future__ import annotations

import numpy as np

from . import fit_title, group_color, legend_below


def plot_projection(ax, proj, title: str | None = None, max_points: int = 2000, seed: int = 0):
    """Scatter of a :class:`srilib.geometry.Projection`, coloured by group."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(proj.Z))
    if len(idx) > max_points:
        idx = rng.choice(idx, max_points, replace=False)
    for i, g in enumerate(sorted(set(proj.labels.tolist()))):
        m = idx[proj.labels[idx] == g]
        ax.scatter(proj.Z[m, 0], proj.Z[m, 1], s=14, alpha=0.7, color=group_color(g, i), label=f"{g} (n={len(m)})",
                   edgecolors="none")
    ax.set_xlabel(proj.axes[0])
    ax.set_ylabel(proj.axes[1])
    fit_title(ax, title or proj.summary, 9)
    legend_below(ax)
    return ax


def anchor_separation(ax, anchors_by_model: dict, title: str = "anchor separation per step"):
    """Cosine distance between the harmless and harmful anchors at each step, per model."""
    for i, (name, a) in enumerate(anchors_by_model.items()):
        ax.plot(np.arange(1, a.T + 1), a.separation, lw=1.8, label=name + (" *" if a.fallback else ""))
    ax.set_xlabel("step t")
    ax.set_ylabel("1 − cos(μ_harmless, μ_harmful)")
    fit_title(ax, title, 10)
    legend_below(ax)
    return ax


__all__ = ["plot_projection", "anchor_separation"]
