"""Figures and HTML renderings of the sampling and incomplete-recovery chapters (paper Figures 5-6, Tables 1-3)."""
from __future__ import annotations

import html
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from .plots import plot_signal_with_text

FAMILY_COLORS = {"AR": "#d95f02", "DLM": "#1b9e77", "DLM, AR sampling": "#7570b3"}
THRESHOLD_COLORS = ("#c6dbef", "#6baed6", "#08519c")


def _err(rates) -> tuple[np.ndarray, np.ndarray]:
    v = np.array([r.value for r in rates], dtype=float)
    lo = np.array([r.lo for r in rates], dtype=float)
    hi = np.array([r.hi for r in rates], dtype=float)
    return v, np.nan_to_num(np.vstack([v - lo, hi - v]))


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
        v, e = _err(rates)
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
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_sampler_deltas(axes, rows: Sequence[dict], title: str | None = None,
                        paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None):
    """Table 2 as a figure: per evaluation set, ΔRR, ΔASR and ΔIRR with their intervals (three axes).

    ``rows``: dicts with ``set``, ``paper`` (the paper's column name or None) and Estimates ``d_rr``, ``d_asr``,
    ``d_irr``. ``paper``: model -> {column: (RR pts, ASR pts)} drawn as hollow markers on the first two axes.
    """
    names = [r["set"] for r in rows]
    y = np.arange(len(rows))[::-1]
    markers = ("D", "s", "^")
    for k, (ax, key, label) in enumerate(zip(axes, ("d_rr", "d_asr", "d_irr"),
                                             ("ΔRR (RR up = safer)", "ΔASR (ASR down = safer)", "ΔIRR"))):
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
    axes[0].legend(fontsize=7, loc="lower left", framealpha=0.9)
    if title:
        axes[1].set_title(title, fontsize=10)
    return axes


def plot_family_rates(ax, rates: Mapping[str, object], families: Mapping[str, str], metric: str = "ASR",
                      bands: Sequence[tuple[float, float, str, str]] = (), title: str | None = None):
    """One rate per run (``rates``: run -> Rate) coloured by family; ``bands``: (lo, hi, label, family) reference
    ranges (e.g. the paper's per-family ASR) shaded in the family's colour."""
    runs = list(rates)
    v, e = _err([rates[r] for r in runs])
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
    ax.legend(handles=handles, fontsize=8, loc="upper right", framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_cases(axes, sigma: np.ndarray, text_sig: np.ndarray, indices: Sequence[int], titles: Sequence[str]):
    """Several generations, each with SRI and the text-level signal on one axis (plots.plot_signal_with_text)."""
    for ax, i, t in zip(axes, indices, titles):
        plot_signal_with_text(ax, sigma[i], text_sig[i], title=t)
    for ax in list(axes)[len(indices):]:
        ax.set_visible(False)
    return axes


# ------------------------------------------------------------------------------------------------ canvas
CANVAS_CSS = {
    "old": "color:#222;",
    "new": "color:#000;background:#c7e9c0;font-weight:600;",
    "pred": "color:#a50f15;background:#fde0dd;font-style:italic;",
    "changed": "color:#a50f15;background:#fcbba1;font-style:italic;text-decoration:underline;",
    "end": "color:#999;font-size:80%;",
}
LEGEND_HTML = ("<div style='font-size:85%;margin:4px 0'>"
               f"<span style='{CANVAS_CSS['old']}'>committed earlier</span> · "
               f"<span style='{CANVAS_CSS['new']}'>committed at this step</span> · "
               f"<span style='{CANVAS_CSS['pred']}'>still masked: current prediction</span> · "
               f"<span style='{CANVAS_CSS['changed']}'>prediction changed since the row above</span> · "
               f"<span style='{CANVAS_CSS['end']}'>⟨end⟩</span> end-of-text</div>")


def canvas_html(tokens: np.ndarray, committed: np.ndarray, predictions: np.ndarray, steps: Sequence[int],
                decode: Callable[[int], str], end_ids: Sequence[int] = (), labels: Mapping[int, str] | None = None,
                max_tokens: int | None = None) -> str:
    """HTML rows showing a diffusion canvas at chosen steps: committed tokens vs current predictions.

    Parameters
    ----------
    tokens, committed, predictions : arrays [T, L] of one generation (TraceSet fields, one row).
    steps : 0-based steps to show, in order.
    decode : token id -> text.
    end_ids : end-of-text / padding ids (shown as a small ⟨end⟩; a trailing run is collapsed to one mark).
    labels : step -> extra text after the step number (e.g. the judge's verdict on that step's prediction).
    max_tokens : cut each row after this many canvas positions.
    """
    end = set(int(x) for x in end_ids)
    labels = labels or {}
    L = tokens.shape[1]
    L = min(L, max_tokens) if max_tokens else L
    rows, prev_t = [], None
    for t in steps:
        cells = []
        # collapse the trailing run of end tokens (committed or predicted) into one mark
        ids = np.where(committed[t], tokens[t], predictions[t])
        last = L
        while last > 0 and int(ids[last - 1]) in end:
            last -= 1
        for p in range(min(L, last + 1)):
            tid = int(ids[p])
            if committed[t, p]:
                style = "new" if t == 0 or not committed[t - 1, p] else "old"
            else:
                style = "changed" if prev_t is not None and not committed[prev_t, p] and \
                    int(predictions[prev_t, p]) != tid else "pred"
            text = "⟨end⟩" if tid in end else html.escape(decode(tid)).replace("\n", "⏎")
            cells.append(f"<span style='{CANVAS_CSS['end'] if tid in end else CANVAS_CSS[style]}'>{text}</span>")
        n_done = int(committed[t].sum())
        head = f"<b>step {t + 1}</b> ({n_done}/{tokens.shape[1]} committed){labels.get(t, '')}"
        rows.append(f"<div style='margin:2px 0'>{head}<br><span style='font-family:monospace;white-space:pre-wrap'>"
                    + "".join(cells) + "</span></div>")
        prev_t = t
    return LEGEND_HTML + "".join(rows)
