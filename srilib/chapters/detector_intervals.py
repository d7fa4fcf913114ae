"""Chapter "Detector transfer", intervals of the ablation (paper Table 4): bootstrap replicates of every detector's
pooled jailbreak-vs-harmless AUROC on the same resampled prompts (a cluster bootstrap over requests, so that
differences between detectors are paired), their mean over runs and the differences between two detectors with
95% intervals, on which the ablation ranking (:func:`srilib.chapters.detector_conclusions.ranking_sentence`) rests.
"""
from __future__ import annotations

import numpy as np

from ..metrics import Estimate, paired_auroc_draws
from .detector import METHODS, DetectorResult


def auroc_draws(res: DetectorResult, n_boot: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap replicates [n_boot] of every method's pooled jailbreak-vs-harmless AUROC (first guard seed), all
    methods on the SAME resampled prompts, so that differences between methods are paired.

    Negatives (harmless generations) are resampled by row; positives by request: the pooled jailbreaks hold one
    generation per request per attack, and a request's generations under different attacks are correlated, so a
    drawn request brings all its attacked generations (a cluster bootstrap). Cached on ``res``.
    """
    n_boot = res.n_boot if n_boot is None else int(n_boot)
    key = (n_boot, seed)
    if key in res._draws:
        return res._draws[key]
    s0 = res.seeds[0]
    pairs = [(res.scores[(m, s0)]["harmless"], np.stack([np.asarray(res.scores[(m, s0)][a], float)
                                                         for a in res.jailbreaks]))  # pos: [attacks, requests]
             for m in METHODS]
    res._draws[key] = dict(zip(METHODS, paired_auroc_draws(pairs, n_boot, seed=seed)))
    return res._draws[key]


def bootstrap_interval(point: float, draws: np.ndarray, method: str, signed: bool = False, **info) -> Estimate:
    """``point`` with the 95% percentile interval of its bootstrap replicates ``draws``."""
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return Estimate(float(point), float(lo), float(hi), method, 0.95, info, signed=signed)


def mean_auroc(results: dict[str, DetectorResult], method: str) -> Estimate:
    """Mean over runs of ``method``'s AUROC (first seed) with a 95% interval: the runs are independent, so the
    mean of their bootstrap replicates (:func:`auroc_draws`) is a replicate of the mean."""
    rs = list(results.values())
    point = float(np.mean([r.auroc[(method, r.seeds[0])].value for r in rs]))
    draws = np.mean([auroc_draws(r)[method] for r in rs], axis=0)
    return bootstrap_interval(point, draws, "mean of per-run cluster bootstraps", runs=len(rs))


def method_difference(results: dict[str, DetectorResult], a: str, b: str) -> dict:
    """AUROC(a) - AUROC(b) (first seed) with paired bootstrap intervals: per run and for the mean over runs.
    Returns {"runs": {run: Estimate}, "mean": Estimate, "verdict": ">" | "<" | "~"} where the verdict is "~"
    (not separated) unless the interval of the mean difference excludes 0."""
    per, draws = {}, []
    for res in results.values():
        d = auroc_draws(res)
        diff = d[a] - d[b]
        s0 = res.seeds[0]
        per[res.run] = bootstrap_interval(res.auroc[(a, s0)].value - res.auroc[(b, s0)].value, diff, "paired cluster "
                                 "bootstrap", signed=True)
        draws.append(diff)
    mean = bootstrap_interval(float(np.mean([e.value for e in per.values()])), np.mean(draws, axis=0),
                     "mean of per-run paired bootstraps", signed=True)
    verdict = ">" if mean.lo > 0 else "<" if mean.hi < 0 else "~"
    return {"runs": per, "mean": mean, "verdict": verdict}


__all__ = ["auroc_draws", "bootstrap_interval", "mean_auroc", "method_difference"]
