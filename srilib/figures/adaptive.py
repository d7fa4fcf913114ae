"""Figure of the adaptive attacks (sampling chapter): attack success rate against the Random Search iteration
budget, one line per run (the curves of :func:`srilib.chapters.adaptive.budget_curve`, as
:func:`srilib.chapters.sampling.budget_panel` gives them)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import fit_title, legend_below


def plot_budget_curves(ax, curves: Mapping[str, tuple[Sequence[int], Sequence]], title: str = "") -> None:
    """ASR against the Random Search iteration budget, one line per run (``curves``: run -> (iterations, ASR at each,
    rates with ``value`` / ``lo`` / ``hi``)), with the intervals as bands."""
    for run, (iterations, asr) in curves.items():
        x = np.array(iterations, dtype=float)
        xs = np.where(x == 0, 0.5, x)  # 0 iterations (the initial suffix) at 0.5 on the log axis
        v = np.array([r.value for r in asr])
        lo, hi = np.array([r.lo for r in asr]), np.array([r.hi for r in asr])
        line, = ax.plot(xs, v, marker="o", ms=3, label=run)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.08, lw=0)
        ax.plot(xs, lo, color=line.get_color(), lw=0.6, ls=":")  # the band's edges, so overlapping bands stay apart
        ax.plot(xs, hi, color=line.get_color(), lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("Random Search iterations (0 = template + initial suffix, plotted at 0.5)")
    ax.set_ylabel("ASR (95% Wilson)")
    ax.set_ylim(-0.02, 1.02)
    if title:
        fit_title(ax, title, 10)
    legend_below(ax)


__all__ = ["plot_budget_curves"]
