"""Figures of the detector-transfer chapter: ROC curves of the ablation detectors and of SRI Guard per run, the
defenses' overhead against attack success (paper Figure 7 style), the transfer matrix as a heatmap, and SRI Guard's
false-positive rate on other families of harmless prompts. Matplotlib is imported inside the functions."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..chapters.defenses import DefenseReport, rate_pct
from ..chapters.detector import (DEFENSES, METHOD_LABELS, METHODS, PAPER_ABLATION, PAPER_DEFENSES, PAPER_MODELS_TEXT,
                                 DetectorResult)
from ..metrics import roc_curve
from . import fit_title, legend_below


def plot_rocs(ax, res: DetectorResult, methods: Sequence[str] = METHODS, title: str | None = None) -> None:
    """ROC curves of pooled jailbreaks vs harmless for each detector of one run (first seed)."""
    s0 = res.seeds[0]
    for m in methods:
        sc = res.scores[(m, s0)]
        fpr, tpr, _ = roc_curve(sc["harmless"], np.concatenate([sc[a] for a in res.jailbreaks]))
        ax.plot(fpr, tpr, lw=2.2 if m == "sri_last" else 1.2,
                label=f"{METHOD_LABELS[m]} ({res.auroc[(m, s0)].value:.2f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (harmless)", ylabel="true-positive rate "
           "(jailbreaks)")
    fit_title(ax, title or res.run, 9.5)
    legend_below(ax, title="detector (AUROC)", ncol=2)


def plot_guard_rocs(ax, results: dict[str, DetectorResult], title: str | None = None) -> None:
    """SRI Guard's ROC curve (pooled jailbreaks vs harmless, first seed) for every run on one axis."""
    for res in results.values():
        sc = res.scores[("sri_last", res.seeds[0])]
        fpr, tpr, _ = roc_curve(sc["harmless"], np.concatenate([sc[a] for a in res.jailbreaks]))
        fb = ", unfiltered anchors" if res.anchors["last"].fallback else ""
        ax.plot(fpr, tpr, lw=1.8, label=f"{res.run} ({res.auroc[('sri_last', res.seeds[0])].value:.2f}{fb})")
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    pm, ps = PAPER_ABLATION["sri_last"]
    ax.text(0.98, 0.03, f"paper: AUROC {pm:.3f} ± {ps:.3f}\n({PAPER_MODELS_TEXT})", ha="right", va="bottom",
            fontsize=8, color="0.3", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (harmless)",
           ylabel="true-positive rate (jailbreaks)")
    fit_title(ax, title or "SRI Guard, jailbreaks vs harmless", 9.5)
    legend_below(ax, title="run (AUROC)", ncol=1)


def plot_overhead(ax, reports: dict[str, DefenseReport], paper: bool = True) -> None:
    """Paper Figure 7 style: overhead (% of plain generation time, log x; SRI Guard's includes capturing the
    states, clipped at 1e-4 when the capture timing is at or below zero) against ASR after the defense; ours filled
    (one small point per run, a large one for the mean), the paper's hollow. Undefended ASR: dashed lines. Our ASR
    pools our template attacks, the paper's its five attacks (:mod:`srilib.chapters.defenses`): different pools."""
    import matplotlib.pyplot as plt

    colors = dict(zip(DEFENSES[1:], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name in DEFENSES[1:]:
        pts = [(r["overhead incl. capture %"], rate_pct(r["asr"])) for rep in reports.values()
               if (r := rep.row(name)) and r["status"] == "run"]
        if pts:
            x, y = np.array(pts).T
            x = np.maximum(x, 1e-4)  # log axis: a capture timing within noise of zero is drawn at 1e-4
            ax.scatter(x, y, s=14, color=colors[name], alpha=0.5)
            ax.scatter([np.mean(x)], [np.mean(y)], s=90, color=colors[name], label=f"{name} (ours)", zorder=3)
        if paper:
            p = PAPER_DEFENSES[name]
            ax.scatter([p[0]], [p[3]], s=90, facecolors="none", edgecolors=colors[name], lw=1.8,
                       label=f"{name} (paper)", zorder=3)
    und = [rate_pct(rep.row("undefended")["asr"]) for rep in reports.values()]
    ax.axhline(np.mean(und), color="0.3", ls="--", lw=1, label="undefended (ours)")
    if paper:
        ax.axhline(PAPER_DEFENSES["undefended"][3], color="0.6", ls=":", lw=1, label="undefended (paper)")
    ax.set_xscale("log")
    ax.set(xlabel="overhead (% of plain generation time, incl. state capture, log scale)",
           ylabel="jailbreak ASR after defense (%)\nours: our attack pool; paper: its five attacks")
    legend_below(ax, ncol=2)


def plot_transfer(ax, tm: dict, key: str = "auroc", title: str = "AUROC of a guard fitted on A, applied to B"):
    """Heatmap of the transfer matrix (rows: fitted on, columns: applied to)."""
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


def plot_shift(ax, results: dict[str, DetectorResult], quantile: float | None = None) -> None:
    """False-positive rate of SRI Guard (fit on the built-in harmless set) on each harmless family, one marker
    per run, with 95% Wilson intervals; the dashed line is the rate the threshold aims at (1 - quantile)."""
    runs = [r for r in results.values() if r.shift]
    if not runs:
        return
    labels = [r["family"] for r in runs[0].shift["rows"]]
    width = 0.8 / len(runs)
    for k, res in enumerate(runs):
        rows = res.shift["rows"]
        v = np.array([r["sri_fpr"].value for r in rows])
        lo = np.array([r["sri_fpr"].lo for r in rows])
        hi = np.array([r["sri_fpr"].hi for r in rows])
        x = np.arange(len(rows)) - 0.4 + width * (k + 0.5)
        ax.errorbar(x, 100 * v, yerr=100 * np.array([v - lo, hi - v]), fmt="o", ms=4, capsize=2, label=res.run)
    q = quantile if quantile is not None else runs[0].cfg.quantile
    ax.axhline(100 * (1 - q), color="0.4", ls="--", lw=1, label=f"threshold's aim ({100 * (1 - q):g}%)")
    ax.set_xticks(range(len(labels)), [lab.replace(" (eval split)", "\n(eval split)") for lab in labels],
                  rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="harmless prompts flagged (%)")
    fit_title(ax, "SRI Guard fitted on the built-in harmless set, applied to other harmless families", 9.5)
    legend_below(ax, ncol=2)


__all__ = ["plot_rocs", "plot_guard_rocs", "plot_overhead", "plot_transfer", "plot_shift"]
