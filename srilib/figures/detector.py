"""Figures of the detector-transfer chapter: ROC curves of the ablation detectors and of SRI Guard per run, the
defenses' overhead against attack success (paper Figure 7 style), the transfer matrix as a heatmap, and SRI Guard's
false-positive rate on other families of harmless prompts. Every function takes arrays, plain mappings and labels;
the chapter gives them in that form (:func:`srilib.chapters.detector.roc_panel`,
:func:`~srilib.chapters.detector.guard_roc_panel`, :func:`srilib.chapters.defenses.overhead_points`,
:func:`srilib.chapters.shift.shift_fpr`). Matplotlib is imported inside the functions."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import fit_title, legend_below

Curve = tuple[np.ndarray, np.ndarray]  # an ROC curve: (false-positive rates, true-positive rates)


def _roc_axes(ax, curves: Mapping[str, Curve], widths: Sequence[float], title: str, legend_title: str, ncol: int,
              note: str | None = None) -> None:
    """ROC curves (legend label -> curve) at the given line widths over the diagonal, ``note`` in the lower right."""
    for (label, (fpr, tpr)), lw in zip(curves.items(), widths):
        ax.plot(fpr, tpr, lw=lw, label=label)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    if note:
        ax.text(0.98, 0.03, note, ha="right", va="bottom", fontsize=8, color="0.3", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (harmless)",
           ylabel="true-positive rate (jailbreaks)")
    fit_title(ax, title, 9.5)
    legend_below(ax, title=legend_title, ncol=ncol)


def plot_rocs(ax, curves: Mapping[str, Curve], title: str, thick: str | None = None) -> None:
    """ROC curves of several detectors of one run (``curves``: legend label, e.g. "detector (AUROC)" -> curve); the
    curve labelled ``thick`` (SRI Guard) is drawn thicker."""
    _roc_axes(ax, curves, [2.2 if label == thick else 1.2 for label in curves], title, "detector (AUROC)", 2)


def plot_guard_rocs(ax, curves: Mapping[str, Curve], note: str | None = None,
                    title: str = "SRI Guard, jailbreaks vs harmless") -> None:
    """SRI Guard's ROC curve of every run on one axis (``curves``: legend label, e.g. "run (AUROC)" -> curve);
    ``note`` (e.g. the paper's AUROC) goes in the lower right corner."""
    _roc_axes(ax, curves, [1.8] * len(curves), title, "run (AUROC)", 1, note=note)


def plot_overhead(ax, ours: Mapping[str, np.ndarray], undefended: float,
                  paper: Mapping[str, tuple[float, float]] | None = None, paper_undefended: float | None = None
                  ) -> None:
    """Paper Figure 7 style: overhead (% of plain generation time, log x) against ASR after the defense (%).

    ``ours``: defense -> [runs, 2] points (overhead %, ASR %), in the order that gives each defense its colour (a
    defense without points keeps its colour); filled, one small point per run and a large one for their mean.
    Overheads at or below zero (capture timing within noise) are drawn at 1e-4. ``paper``: defense -> (overhead %,
    ASR %), hollow. ``undefended`` / ``paper_undefended``: ASR without a defense (%), dashed / dotted lines.
    """
    import matplotlib.pyplot as plt

    colors = dict(zip(ours, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name, pts in ours.items():
        if len(pts):
            x, y = np.asarray(pts, dtype=float).T
            x = np.maximum(x, 1e-4)  # log axis: a capture timing within noise of zero is drawn at 1e-4
            ax.scatter(x, y, s=14, color=colors[name], alpha=0.5)
            ax.scatter([np.mean(x)], [np.mean(y)], s=90, color=colors[name], label=f"{name} (ours)", zorder=3)
        if paper and name in paper:
            px, py = paper[name]
            ax.scatter([px], [py], s=90, facecolors="none", edgecolors=colors[name], lw=1.8,
                       label=f"{name} (paper)", zorder=3)
    ax.axhline(undefended, color="0.3", ls="--", lw=1, label="undefended (ours)")
    if paper_undefended is not None:
        ax.axhline(paper_undefended, color="0.6", ls=":", lw=1, label="undefended (paper)")
    ax.set_xscale("log")
    ax.set(xlabel="overhead (% of plain generation time, incl. state capture, log scale)",
           ylabel="jailbreak ASR after defense (%)\nours: our attack pool; paper: its five attacks")
    legend_below(ax, ncol=2)


def plot_transfer(ax, tm: dict, key: str = "auroc", title: str = "AUROC of a guard fitted on A, applied to B"):
    """Heatmap of the transfer matrix (``tm``: ``labels`` and [A, B] matrices such as ``auroc`` and ``fpr``; rows:
    fitted on, columns: applied to)."""
    M, L = tm[key], tm["labels"]
    im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(L)):
        for j in range(len(L)):
            ax.text(j, i, "–" if np.isnan(M[i, j]) else f"{M[i, j]:.2f}", ha="center", va="center",
                    color="w" if (np.isnan(M[i, j]) or M[i, j] < 0.6) else "k", fontsize=8)
    ax.set_xticks(range(len(L)), L, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(L)), L, fontsize=8)
    ax.set(xlabel="applied to (B)", ylabel="fitted on (A)")
    fit_title(ax, title, 9.5)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label={"auroc": "AUROC", "fpr": "false-positive rate"}.get(key, key))
    return im


def plot_shift(ax, fpr: Mapping[str, Sequence], families: Sequence[str], aim: float) -> None:
    """False-positive rate of SRI Guard on each harmless family (``fpr``: run -> one rate with ``value`` / ``lo``
    / ``hi`` per family, in the order of ``families``), one marker per run with its 95% interval; the dashed line
    is the rate the threshold aims at (``aim``, a share: 1 - its quantile)."""
    if not fpr:
        return
    width = 0.8 / len(fpr)
    for k, (run, rates) in enumerate(fpr.items()):
        v = np.array([r.value for r in rates])
        lo = np.array([r.lo for r in rates])
        hi = np.array([r.hi for r in rates])
        x = np.arange(len(rates)) - 0.4 + width * (k + 0.5)
        ax.errorbar(x, 100 * v, yerr=100 * np.array([v - lo, hi - v]), fmt="o", ms=4, capsize=2, label=run)
    ax.axhline(100 * aim, color="0.4", ls="--", lw=1, label=f"threshold's aim ({100 * aim:g}%)")
    ax.set_xticks(range(len(families)), [f.replace(" (eval split)", "\n(eval split)") for f in families],
                  rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="harmless prompts flagged (%)")
    fit_title(ax, "SRI Guard fitted on the built-in harmless set, applied to other harmless families", 9.5)
    legend_below(ax, ncol=2)


__all__ = ["Curve", "plot_rocs", "plot_guard_rocs", "plot_overhead", "plot_transfer", "plot_shift"]
