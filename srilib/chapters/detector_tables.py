"""Chapter "Detector transfer", tables of the detection part: the ablation beside paper Table 4, SRI Guard per
evaluation set and on the adaptive attacks, the transfer matrix as rows, and the canvas attacks (ASR without a
defense and after SRI Guard), and how the chapter's tables print an estimate (:func:`estimate_str`,
:func:`cell_str`). The defenses' tables are in :mod:`.defenses`, Table 14's in :mod:`.detector_diffuguard`, the
harmless shift's in :mod:`.shift`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..prompts import HELDOUT_FAMILIES
from ..stats import Estimate, Rate
from .detector import CANVAS, METHODS, RAW, DetectorResult, auroc_est
from .paper_numbers import METHOD_LABELS, PAPER_ABLATION, PAPER_CANVAS, PAPER_N_MODELS


def estimate_str(e: Estimate) -> str:
    """An estimate as the chapter's tables print it: with its interval, or the point value alone when it has none."""
    return f"{e.value:.3f}" if math.isnan(e.lo) else str(e)


def cell_str(x) -> str:
    """A table cell: "–" for a missing value, :func:`estimate_str` for an Estimate, else ``str``."""
    return "–" if x is None else estimate_str(x) if isinstance(x, Estimate) else str(x)


def _mean_sd(x: Sequence[float]) -> str:
    x = np.asarray([v for v in x if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return "–"
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x[0]:.3f}"


def ablation_rows(results: dict[str, DetectorResult]) -> list[dict]:
    """Paper Table 4 with ours beside it: AUROC per run (first seed; 95% interval resampling harmless prompts by row
    and the pooled jailbreaks by request, a cluster bootstrap: each request appears once per attack), mean ± std
    over runs (of each run's seed mean), the seed spread, raw harmful vs harmless, and the paper's value."""
    rows = []
    for m in METHODS:
        per_run = {r: res.method_auroc(m).mean() for r, res in results.items()}
        row = {"detector": METHOD_LABELS[m]}
        row.update({f"{res.run} AUROC": estimate_str(res.auroc[(m, res.seeds[0])]) for res in results.values()})
        row["ours: mean ± std over runs"] = _mean_sd(list(per_run.values()))
        if any(len(res.seeds) > 1 for res in results.values()):
            row["seed std (mean over runs)"] = "{:.3f}".format(np.mean([res.method_auroc(m).std(ddof=1)
                                                              for res in results.values() if len(res.seeds) > 1]))
        row["ours: raw harmful (not a jailbreak) vs harmless"] = _mean_sd(
            [res.method_auroc(m, raw=True).mean() for res in results.values()])
        pm, ps = PAPER_ABLATION[m]
        row[f"paper ({PAPER_N_MODELS} models)"] = f"{pm:.3f} ± {ps:.3f}"
        rows.append(row)
    return rows


def per_attack_rows(results: dict[str, DetectorResult]) -> list[dict]:
    """SRI Guard (last layer, first seed) per evaluation set: AUROC vs harmless and detection rate at the
    calibrated threshold (false-positive rate for the harmless set)."""
    rows = []
    for res in results.values():
        s0 = res.seeds[0]
        sc, thr = res.scores[("sri_last", s0)], res.guard.threshold_
        for k in ["harmless", *res.jailbreaks, *res.canvas_sets, RAW]:
            kind = ("harmless (negatives)" if k == "harmless" else "raw harmful (not a jailbreak)" if k == RAW
                    else "canvas attack (diffusion only, PAD/DIJA-like)" if k.startswith(CANVAS)
                    else "jailbreak, family held out of organism training" if k in HELDOUT_FAMILIES
                    else "jailbreak (eval templates only)")
            from .sampling import set_label  # role-play is ours, "WildJailbreak-like"
            rows.append({"run": res.run, "set": set_label(k), "kind": kind, "n": len(sc[k]),
                         "RR (no defense)": str(res.refusal[k]),
                         "AUROC vs harmless": "–" if k == "harmless" else estimate_str(
                             auroc_est(sc["harmless"], sc[k], n_boot=res.n_boot, seed=s0,
                                       clusters=res.clusters([k]))),
                         "flagged at threshold": str(Rate.from_outcomes(sc[k] > thr))})
    return rows


def adaptive_rows(results: dict[str, DetectorResult]) -> list[dict]:
    """SRI Guard and the text signal on the adaptive attacks (Random Search, PAIR), attacks no detector ever saw
    (all are fitted on harmless prompts only): AUROC vs the harmless set (bootstrap interval) and the share flagged
    at the guard's calibrated threshold (Wilson interval)."""
    rows = []
    for res in results.values():
        s0 = res.seeds[0]
        sc, thr = res.scores[("sri_last", s0)], res.guard.threshold_
        tx = res.scores.get(("text", s0))
        for k in res.adaptive:
            rows.append({"run": res.run, "set": k, "kind": "adaptive attack, never seen by the guard",
                         "n": len(sc[k]), "RR (no defense)": str(res.refusal[k]),
                         "SRI Guard AUROC vs harmless": estimate_str(auroc_est(sc["harmless"], sc[k], n_boot=res.n_boot,
                                                                        seed=s0, clusters=res.clusters([k]))),
                         "text signal AUROC vs harmless": "–" if tx is None else estimate_str(
                             auroc_est(tx["harmless"], tx[k], n_boot=res.n_boot, seed=s0, clusters=res.clusters([k]))),
                         "flagged at threshold (SRI Guard)": str(Rate.from_outcomes(sc[k] > thr))})
    return rows


def transfer_rows(tm: dict) -> list[dict]:
    """The transfer matrix as table rows (guard fitted on -> applied to)."""
    L = tm["labels"]
    return [{"guard fitted on": a, "applied to": b, "AUROC": tm["auroc_str"][i][j],
             "FPR at source threshold": tm["fpr"][i, j], "detected at source threshold": tm["tpr"][i, j]}
            for i, a in enumerate(L) for j, b in enumerate(L)]


def canvas_rows(results: dict[str, DetectorResult], judge, requests: Sequence[str]) -> list[dict]:
    """Paper Table 14 analogue: ASR under each canvas attack without a defense and after SRI Guard (flagged
    generations replaced by a refusal), with the paper's LLaDA numbers for the attack it resembles."""
    from ..baselines import apply_defense
    from ..signal import attack_success_rate

    rows = []
    for res in results.values():
        sc, thr = res.scores[("sri_last", res.seeds[0])], res.guard.threshold_
        for k in res.canvas_sets:
            name = k[len(CANVAS):]
            flags = sc[k] > thr
            paper = PAPER_CANVAS.get(name)
            prefill = "; ".join(f"{pos}: {text!r}" for pos, text in res.prefills.get(k) or ())
            rows.append({"run": res.run, "canvas attack": name, "prefill (position: text)": prefill or "–",
                         "n": len(flags),
                         "ASR undefended": str(attack_success_rate(requests, res.texts[k], judge)),
                         "ASR after SRI Guard": str(attack_success_rate(
                             requests, apply_defense(res.texts[k], flags), judge)),
                         "flagged": str(Rate.from_outcomes(flags)),
                         "paper (LLaDA)": (f"{paper[0]}: {paper[1]:.2f} undefended, {paper[3]:.2f} SRI Guard "
                                           f"({paper[2]:.2f} DiffuGuard)") if paper else "–"})
    return rows


__all__ = ["estimate_str", "cell_str", "ablation_rows", "per_attack_rows", "adaptive_rows", "transfer_rows",
           "canvas_rows"]
