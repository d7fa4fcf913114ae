"""Chapter "Detector transfer", intervals of the ablation (paper Table 4): bootstrap replicates of every detector's
pooled jailbreak-vs-harmless AUROC on the same resampled prompts (a cluster bootstrap over requests, so that
differences between detectors are paired), their mean over runs and the differences between two detectors with
95% intervals, on which the ablation ranking (:func:`srilib.chapters.detector_conclusions.ranking_sentence`) rests.

The runs of one chapter are not independent samples: every run answers the same harmful requests (and the same
harmless prompts), so a hard request is hard for every run. The mean over runs is therefore bootstrapped jointly
(:func:`joint_auroc_draws`): one replicate draws harmless prompts and requests once and applies that draw to every
run and every detector. The runs themselves are held fixed: the interval describes the uncertainty from the
finite set of requests and harmless prompts, not how a mean over other models would vary.
"""
from __future__ import annotations

import numpy as np

from ..stats import Estimate, paired_auroc_draws
from .detector import METHODS, DetectorResult


def _entry(res: DetectorResult, method: str) -> tuple:
    """One (neg, pos, request ids, harmless ids) entry of :func:`srilib.stats.paired_auroc_draws` for a run's
    pooled jailbreaks (first seed): positives labelled by the request they came from, negatives by the harmless
    prompt (the same position is the same prompt in every run of a chapter: one PromptSets)."""
    sc = res.scores[(method, res.seeds[0])]
    pos = np.concatenate([np.asarray(sc[a], float) for a in res.jailbreaks])
    neg = np.asarray(sc["harmless"], float)
    return neg, pos, res.clusters(res.jailbreaks, method), np.arange(len(neg))


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
    res._draws[key] = dict(zip(METHODS, paired_auroc_draws([_entry(res, m) for m in METHODS], n_boot, seed=seed)))
    return res._draws[key]


def joint_auroc_draws(results: dict[str, DetectorResult], n_boot: int | None = None, seed: int = 0
                      ) -> dict[str, dict[str, np.ndarray]]:
    """Bootstrap replicates of every method's pooled AUROC for every run, all runs and methods on the SAME draw of
    harmless prompts and requests (the runs share them): {key of ``results``: {method: [n_boot]}}. A run alone
    gets exactly its :func:`auroc_draws`. Cached on each run's result."""
    keys, rs = list(results), list(results.values())
    n_boot = rs[0].n_boot if n_boot is None else int(n_boot)
    if len(rs) == 1:
        return {keys[0]: auroc_draws(rs[0], n_boot, seed)}
    key = ("joint", tuple(id(r) for r in rs), n_boot, seed)
    if not all(key in r._draws for r in rs):
        draws = paired_auroc_draws([_entry(r, m) for r in rs for m in METHODS], n_boot, seed=seed)
        for i, r in enumerate(rs):
            r._draws[key] = dict(zip(METHODS, draws[i * len(METHODS):(i + 1) * len(METHODS)]))
    return {k: r._draws[key] for k, r in zip(keys, rs)}


def bootstrap_interval(point: float, draws: np.ndarray, method: str, signed: bool = False, **info) -> Estimate:
    """``point`` with the 95% percentile interval of its bootstrap replicates ``draws``."""
    lo, hi = np.nanquantile(draws, [0.025, 0.975])
    return Estimate(float(point), float(lo), float(hi), method, 0.95, info, signed=signed)


def mean_auroc(results: dict[str, DetectorResult], method: str) -> Estimate:
    """Mean over runs of ``method``'s AUROC (first seed) with a 95% interval. The runs share their requests and
    harmless prompts, so they are not independent: each replicate draws the requests and harmless prompts once
    and averages every run's AUROC on that same draw (:func:`joint_auroc_draws`; the runs are held fixed)."""
    rs = list(results.values())
    point = float(np.mean([r.auroc[(method, r.seeds[0])].value for r in rs]))
    joint = joint_auroc_draws(results)
    draws = np.mean([joint[k][method] for k in results], axis=0)
    return bootstrap_interval(point, draws, "mean over runs, request-level bootstrap shared by the runs",
                              runs=len(rs), assumes="runs fixed; requests and harmless prompts resampled jointly")


def method_difference(results: dict[str, DetectorResult], a: str, b: str) -> dict:
    """AUROC(a) - AUROC(b) (first seed) with paired bootstrap intervals: per run and for the mean over runs (the
    runs on one joint draw of requests and harmless prompts, :func:`joint_auroc_draws`). Returns
    {"runs": {run: Estimate}, "mean": Estimate, "verdict": ">" | "<" | "~"} where the verdict is "~" (not
    separated) unless the interval of the mean difference excludes 0."""
    per, draws = {}, []
    joint = joint_auroc_draws(results)
    for k, res in results.items():
        d = joint[k]
        diff = d[a] - d[b]
        s0 = res.seeds[0]
        per[res.run] = bootstrap_interval(res.auroc[(a, s0)].value - res.auroc[(b, s0)].value, diff, "paired cluster "
                                          "bootstrap", signed=True)
        draws.append(diff)
    mean = bootstrap_interval(float(np.mean([e.value for e in per.values()])), np.mean(draws, axis=0),
                              "mean over runs of paired differences, request-level bootstrap shared by the runs",
                              signed=True)
    verdict = ">" if mean.lo > 0 else "<" if mean.hi < 0 else "~"
    return {"runs": per, "mean": mean, "verdict": verdict}


__all__ = ["auroc_draws", "joint_auroc_draws", "bootstrap_interval", "mean_auroc", "method_difference"]
