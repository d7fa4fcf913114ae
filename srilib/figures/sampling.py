"""Figures of the sampling-vs-representation chapter (paper Tables 2-3 as figures): the change of RR, ASR and IRR
when the same weights are sampled another way, one rate per run coloured by model family, and the IRR bars
(:func:`plot_irr_bars`, Figure 6) it shares with the recovery chapter."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from . import FAMILY_COLORS, THRESHOLD_COLORS, fit_title, legend_below, rate_errorbars


# x-axis labels: what each delta subtracts from what (right of 0 = safer under remasking on every axis)
DELTA_LABELS = {"d_rr": "ΔRR = RR(remasking) − RR(AR sampling); > 0 safer",
                "d_asr": "ΔASR = ASR(AR sampling) − ASR(remasking); > 0 safer",
                "d_irr": "ΔIRR = IRR(remasking) − IRR(AR sampling)"}


def plot_sampler_deltas(axes, rows: Sequence[dict], title: str | None = None,
                        paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None):
    """Table 2 as a figure: per evaluation set, ΔRR, ΔASR and ΔIRR with their intervals (three axes).

    ``rows``: dicts with ``set``, ``paper`` (the paper's column name or None) and Estimates ``d_rr``, ``d_asr``,
    ``d_irr`` signed as the paper's Table 2 (:class:`srilib.chapters.sampling_compare.Comparison`): ΔRR and ΔIRR =
    remasking − AR sampling, ΔASR = AR sampling − remasking, so on every axis right of 0 is safer under remasking.
    ``paper``: model -> {column: (RR pts, ASR pts)} drawn as hollow markers on the first two axes.
    """
    names = [r["set"] for r in rows]
    y = np.arange(len(rows))[::-1]
    markers = ("D", "s", "^")
    for k, (ax, key, label) in enumerate(zip(axes, ("d_rr", "d_asr", "d_irr"),
                                             (DELTA_LABELS["d_rr"], DELTA_LABELS["d_asr"],
                                              DELTA_LABELS["d_irr"]))):
        est = [r[key] for r in rows]
        v = np.array([e.value for e in est])
        err = np.nan_to_num(np.vstack([v - [e.lo for e in est], [e.hi for e in est] - v]))
        ax.errorbar(v, y, xerr=err, fmt="o", color="#08519c", ms=5, capsize=2, label="ours (95% CI)")
        if paper and k < 2:
            for j, (m, vals) in enumerate(paper.items()):
                px = [vals[r["paper"]][k] / 100 if r.get("paper") in vals else math.nan for r in rows]
                ax.scatter(px, y + 0.18 * (j + 1) - 0.27, marker=markers[j % 3], facecolors="none",
                           edgecolors="#a50f15", s=30, label=f"paper: {m}")
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(names if k == 0 else [], fontsize=8)
        ax.set_xlabel(label, fontsize=9)
        ax.set_xlim(-1, 1)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fit_title(axes[1], title, 10)
    legend_below(axes[0])
    return axes


def plot_family_rates(ax, rates: Mapping[str, object], families: Mapping[str, str], metric: str = "ASR",
                      bands: Sequence[tuple[float, float, str, str]] = (), title: str | None = None):
    """One rate per run (``rates``: run -> Rate) coloured by family; ``bands``: (lo, hi, label, family) reference
    ranges (e.g. the paper's per-family ASR) shaded in the family's colour."""
    runs = list(rates)
    v, e = rate_errorbars([rates[r] for r in runs])
    x = np.arange(len(runs))
    ax.bar(x, np.nan_to_num(v), 0.6, yerr=e, capsize=3, edgecolor="0.3", lw=0.5,
           color=[FAMILY_COLORS.get(families.get(r, ""), "0.6") for r in runs])
    for lo, hi, label, fam in bands:
        ax.axhspan(lo, hi, color=FAMILY_COLORS.get(fam, "0.6"), alpha=0.15, lw=0, zorder=0)
        ax.text(-0.45, hi, label, ha="left", va="bottom", fontsize=7, color="0.25")
    ax.set_xticks(x)
    ax.set_xticklabels(runs, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    from matplotlib.patches import Patch
    handles = [Patch(color=c, label=f) for f, c in FAMILY_COLORS.items() if f in set(families.values())]
    if title:
        fit_title(ax, title, 10)
    legend_below(ax, handles=handles)
    return ax


__all__ = ["DELTA_LABELS", "plot_sampler_deltas", "plot_family_rates"]


def plot_irr_bars(ax, irr: Mapping[str, Mapping[float, object]], title: str | None = None,
                  bands: Sequence[tuple[float, float, str]] = (), families: Mapping[str, str] | None = None):
    """IRR per run (groups) and threshold (bars), with 95% Wilson intervals.

    ``irr``: run -> {lambda_r: Rate}. ``bands``: (lo, hi, label) horizontal reference ranges, e.g. the paper's.
    ``families``: run -> family, to colour the tick labels.
    """
    runs = list(irr)
    lams = sorted({lam for d in irr.values() for lam in d}, reverse=True)
    width = 0.8 / max(1, len(lams))
    x = np.arange(len(runs))
    for j, lam in enumerate(lams):
        rates = [irr[r][lam] for r in runs]
        v, e = rate_errorbars(rates)
        ax.bar(x + (j - (len(lams) - 1) / 2) * width, np.nan_to_num(v), width, yerr=e, capsize=2,
               color=THRESHOLD_COLORS[j % len(THRESHOLD_COLORS)], edgecolor="0.3", lw=0.5,
               label=f"λ_r = {lam:g}", error_kw={"lw": 0.8})
    for lo, hi, label in bands:
        ax.axhspan(lo, hi, color="0.6", alpha=0.15, lw=0, zorder=0)
        ax.text(len(runs) - 0.5, hi, label, ha="right", va="bottom", fontsize=7, color="0.3")
    ax.set_xticks(x)
    ax.set_xticklabels(runs, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    if families:
        for t, r in zip(ax.get_xticklabels(), runs):
            t.set_color(FAMILY_COLORS.get(families.get(r, ""), "black"))
    ax.set_ylim(0, 1)
    ax.set_ylabel("IRR (share of generations)")
    if title:
        fit_title(ax, title, 10)
    legend_below(ax)
    return ax
