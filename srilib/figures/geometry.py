"""Figures of the SRI geometry chapter's representation space: a 2-D projection of pooled activations coloured by
prompt group, and the distance between the harmless and harmful anchors at each step. Both take arrays and labels
(:func:`srilib.chapters.geometry.projection_panels`, :func:`~srilib.chapters.geometry.separation_curves`)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import fit_title, group_color, legend_below


def plot_projection(ax, Z: np.ndarray, labels: np.ndarray, axes: tuple[str, str], title: str,
                    max_points: int = 2000, seed: int = 0):
    """Scatter of a 2-D projection ``Z`` [N, 2] (e.g. a :class:`srilib.geometry.Projection`'s), coloured by group
    (``labels`` [N]), its axes named ``axes``; at most ``max_points`` points, a seeded sample."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(Z))
    if len(idx) > max_points:
        idx = rng.choice(idx, max_points, replace=False)
    for i, g in enumerate(sorted(set(labels.tolist()))):
        m = idx[labels[idx] == g]
        ax.scatter(Z[m, 0], Z[m, 1], s=14, alpha=0.7, color=group_color(g, i), label=f"{g} (n={len(m)})",
                   edgecolors="none")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    fit_title(ax, title, 9)
    legend_below(ax)
    return ax


def anchor_separation(ax, separation: Mapping[str, np.ndarray], title: str = "anchor separation per step"):
    """Cosine distance between the harmless and harmful anchors at each step t = 1..T, one line per legend label
    (``separation``: label -> [T])."""
    for name, sep in separation.items():
        ax.plot(np.arange(1, len(sep) + 1), sep, lw=1.8, label=name)
    ax.set_xlabel("step t")
    ax.set_ylabel("1 − cos(μ_harmless, μ_harmful)")
    fit_title(ax, title, 10)
    legend_below(ax)
    return ax


__all__ = ["plot_projection", "anchor_separation"]
