"""Confidence intervals and AUROC for the paper's metrics (:mod:`srilib.signal`), on scipy and scikit-learn.

* :class:`Rate` -- a proportion k/n with a 95% Wilson score interval (:func:`wilson`, scipy's ``binomtest``);
  :func:`cluster_adjusted` widens it when items are clustered by request (Kish design effect).
* :class:`Estimate` -- any other statistic (an AUROC, a difference of rates) with its interval.
* :func:`bootstrap_ci` (percentile bootstrap; scipy's ``bootstrap`` for one sample or paired samples) and
  :func:`cluster_bootstrap_ci` (resamples whole requests when one request contributes several items).
* :func:`delta` -- difference of two rates: Newcombe's hybrid score interval (independent samples), a paired
  bootstrap (the same prompts measured twice) or a cluster bootstrap (items grouped by request).
* :func:`auroc_score` (the Mann-Whitney AUROC, ties counting half), :func:`auroc` with a stratified bootstrap
  interval, :func:`roc_curve` (scikit-learn's) and :func:`paired_auroc_draws` (bootstrap replicates of several
  detectors' AUROCs on the same draws).
* :func:`request_interval` -- the one place that picks the interval from the shape of the data (a rate, an
  AUROC or a difference; independent, clustered by request, or paired), so that a pooled quantity whose items
  share requests is never given an interval that treats them as independent. The chapters route every pooled
  rate, AUROC and difference through it.

Where a library would draw or round differently from the book's seeded intervals, the computation here is our
own and vectorised; each such function says why in one line. scipy and scikit-learn are imported when first used.

One room: every interval of the book is built here from the same few pieces (Wilson, the seeded bootstrap draws,
the AUROC count) and :func:`request_interval` chooses among them; split up, the choice would sit apart from what
it chooses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable

import numpy as np


def _z(conf: float) -> float:
    if not 0.0 < conf < 1.0:
        raise ValueError(f"conf must lie strictly between 0 and 1 (e.g. 0.95), got {conf}")
    return NormalDist().inv_cdf(0.5 + conf / 2.0)


def _percentile(draws: np.ndarray, conf: float) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates left out)."""
    alpha = (1.0 - conf) / 2.0
    lo, hi = np.nanquantile(draws, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _labels_of(clusters, n: int) -> np.ndarray:
    """``clusters`` as a 1-D object array of ``n`` labels (one per item; any hashable, tuples included)."""
    if isinstance(clusters, np.ndarray) and clusters.ndim == 1:
        cl = clusters.astype(object)
    else:
        cl = np.empty(len(clusters), dtype=object)
        cl[:] = list(clusters)
    if len(cl) != n:
        raise ValueError(f"every item needs one cluster label: got {n} items and {len(cl)} labels")
    return cl


def _repeats(labels) -> bool:
    """True when some cluster label occurs more than once (the items are not independent)."""
    lab = np.asarray(labels, dtype=object).ravel().tolist()
    return len(set(lab)) < len(lab)


def _codes(labels) -> dict:
    """Label -> code 0..G-1, in order of first appearance over ``labels`` (an iterable of label arrays)."""
    return {x: i for i, x in enumerate(dict.fromkeys(x for c in labels for x in c.tolist()))}


# --------------------------------------------------------------------------------------------------------------
# rates
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """A proportion ``k / n`` with a confidence interval [lo, hi].

    ``value`` is NaN when n == 0 (and so are lo and hi). ``outcomes`` (optional, not printed) keeps the
    per-item booleans the rate was counted from, so that :func:`delta` can pair two rates measured on the same
    prompts; ``clusters`` (optional, not printed) the cluster label of every item (the index of the request it
    came from), so that :func:`request_interval` keeps resampling requests when the rate is compared later.
    """

    k: int
    n: int
    value: float
    lo: float
    hi: float
    method: str = "wilson"
    conf: float = 0.95
    outcomes: np.ndarray | None = field(default=None, repr=False, compare=False)
    clusters: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_counts(cls, k: int, n: int, conf: float = 0.95) -> "Rate":
        return wilson(k, n, conf)

    @classmethod
    def from_outcomes(cls, outcomes, conf: float = 0.95, clusters=None) -> "Rate":
        """Rate of True among ``outcomes`` (bool array) with the plain Wilson interval, keeping the outcomes for
        paired deltas (and ``clusters``, one label per item, if given; the interval ignores them: use
        :func:`request_interval` for an interval that counts clusters)."""
        o = np.asarray(outcomes, dtype=bool).ravel()
        r = wilson(int(o.sum()), int(o.size), conf)
        return Rate(r.k, r.n, r.value, r.lo, r.hi, r.method, r.conf, outcomes=o,
                    clusters=None if clusters is None else _labels_of(clusters, o.size))

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a (0/0)"
        return f"{self.value:.2f} [{self.lo:.2f}, {self.hi:.2f}] ({self.k}/{self.n})"

    def as_dict(self) -> dict:
        """Plain-type summary (no outcomes), e.g. for a DataFrame row or JSON."""
        return {"k": self.k, "n": self.n, "value": self.value, "lo": self.lo, "hi": self.hi,
                "method": self.method, "conf": self.conf}


def wilson(k: int, n: int, conf: float = 0.95) -> Rate:
    """Rate k/n with the Wilson score interval (scipy's ``binomtest(k, n).proportion_ci(method="wilson")``: good
    coverage also near 0 and 1, unlike the Wald interval; exactly 0 at k = 0 and 1 at k = n; NaN for n = 0)."""
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    _z(conf)
    if n == 0:
        return Rate(k=0, n=0, value=math.nan, lo=math.nan, hi=math.nan, method="wilson", conf=conf)
    from scipy.stats import binomtest

    # p=k/n: the interval does not depend on the tested p, and at the observed share the unused p-value is cheap
    ci = binomtest(k, n, p=k / n).proportion_ci(confidence_level=conf, method="wilson")
    return Rate(k=k, n=n, value=k / n, lo=float(ci.low), hi=float(ci.high), method="wilson", conf=conf)


def cluster_adjusted(rate: Rate, clusters) -> Rate:
    """``rate`` with a Wilson interval on the *effective* sample size of clustered items (Kish design effect).

    When one request contributes several items (once per attack when attacks are pooled), the items are not
    independent and the plain Wilson interval is too narrow. The design effect is the ratio of the cluster-robust
    variance of the proportion, sum_g (y_g - p m_g)^2 / n^2 over clusters g with y_g positives among m_g items, to
    the binomial variance p(1-p)/n; it is floored at 1 (never narrower than Wilson), and taken as n / G (each cluster
    counted once) when p is 0 or 1. The interval is Wilson's with n_eff = n / deff (k_eff = p n_eff). With m
    identical items in each of G clusters this is exactly the Wilson interval of the G cluster-level outcomes.
    The count k/n, the value and the outcomes are unchanged. The Wilson formula is written out here because
    scipy's ``binomtest`` takes integer counts and n_eff is fractional.
    """
    if rate.outcomes is None:
        raise ValueError("cluster_adjusted needs per-item outcomes (Rate.from_outcomes)")
    o = rate.outcomes.astype(float)
    cl = _labels_of(clusters, len(o))
    n = len(o)
    if n == 0:
        return rate
    codes = _codes([cl])
    g = np.array([codes[x] for x in cl.tolist()])
    p = o.mean()
    if 0.0 < p < 1.0:
        y, m = np.bincount(g, weights=o), np.bincount(g).astype(float)
        deff = max(1.0, float(((y - p * m) ** 2).sum() / n ** 2) / (p * (1 - p) / n))
    else:
        deff = n / len(codes)
    n_eff = n / deff
    z = _z(rate.conf)
    denom = 1.0 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / denom
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    lo = 0.0 if p == 0 else max(0.0, centre - half)
    hi = 1.0 if p == 1 else min(1.0, centre + half)
    return Rate(rate.k, rate.n, rate.value, lo, hi, f"wilson, clustered (n_eff={n_eff:.1f} of {n}, {len(codes)} "
                f"clusters)", rate.conf, outcomes=rate.outcomes, clusters=cl)


@dataclass(frozen=True)
class Estimate:
    """A non-binomial statistic (AUROC, a difference of rates) with its interval and how it was obtained."""

    value: float
    lo: float
    hi: float
    method: str
    conf: float = 0.95
    info: dict = field(default_factory=dict)
    signed: bool = False

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        f = "{:+.2f}" if self.signed else "{:.3f}"
        return f"{f.format(self.value)} [{f.format(self.lo)}, {f.format(self.hi)}]"

    def as_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "method": self.method, "conf": self.conf,
                **self.info}


# --------------------------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------------------------
def _samples(values) -> tuple[bool, list[np.ndarray]]:
    multi = isinstance(values, (tuple, list))
    return multi, [np.asarray(v) for v in values] if multi else [np.asarray(values)]


def _row_draws(rng: np.random.Generator, sizes: list[int], n_boot: int) -> list[np.ndarray]:
    """Item indices [n_boot, n] of every sample, drawn replicate by replicate and, within one, sample by sample
    (the order of a loop over replicates), in one call."""
    high = np.concatenate([np.full(n, n) for n in sizes])
    idx = rng.integers(0, np.broadcast_to(high, (n_boot, len(high))))
    return np.split(idx, np.cumsum(sizes)[:-1], axis=1)


def bootstrap_ci(values, stat: Callable = np.mean, n_boot: int = 2000, seed: int = 0, conf: float = 0.95,
                 paired: bool = True) -> tuple[float, float, float]:
    """Percentile bootstrap interval of ``stat``.

    One sample or paired samples are resampled by ``scipy.stats.bootstrap`` (the book's draws for a seed).
    Independent samples are drawn here, in one call: scipy draws them one sample after the other, which would move
    the book's intervals. The interval is numpy's nanquantile of the replicates, as everywhere here (scipy's own
    quantile differs in the last bit, enough to round an exact half the other way).

    Parameters
    ----------
    values : 1-D array, or a tuple/list of 1-D arrays
        One sample, or several samples passed to ``stat(*samples)``.
    stat : callable
        Statistic of the sample(s), returns a float; scipy calls one that takes ``axis`` on all replicates at
        once (``axis=-1``).
    paired : bool
        With several samples: True resamples the same indices in all of them (they must have equal length,
        e.g. two measurements of the same prompts); False resamples each independently (stratified, e.g. the
        negatives and positives of an AUROC).

    Returns
    -------
    (estimate on the original data, lo, hi)
    """
    _z(conf)
    multi, samples = _samples(values)
    if any(len(s) == 0 for s in samples):
        raise ValueError("bootstrap_ci needs non-empty samples")
    if multi and paired and len({len(s) for s in samples}) > 1:
        raise ValueError(f"paired bootstrap needs samples of equal length, got {[len(s) for s in samples]}; "
                         "pass paired=False for independent samples")
    est = float(stat(*samples))
    rng = np.random.default_rng(seed)
    if paired or not multi:
        if len(samples[0]) == 1:  # scipy needs two items; every resample of one item is the sample itself
            return est, est, est
        from scipy.stats import bootstrap

        out = bootstrap(samples, stat, n_resamples=n_boot, batch=max(1, 2 ** 20 // len(samples[0])), paired=True,
                        confidence_level=conf, method="percentile", rng=rng).bootstrap_distribution
    else:
        res = [s[i] for s, i in zip(samples, _row_draws(rng, [len(s) for s in samples], n_boot))]
        out = np.array([stat(*r) for r in zip(*res)], dtype=float)
    return (est, *_percentile(out, conf))


def _cluster_items(labels: np.ndarray, codes: dict, draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The items of the drawn cluster codes ``draw`` [n_boot, G] (with repeats; per replicate, cluster by cluster
    in draw order, each cluster's items in their order), flat, and the number of items of every replicate."""
    lab = np.asarray([codes[x] for x in labels.tolist()], dtype=np.int64)
    order = np.argsort(lab, kind="stable")
    count = np.bincount(lab, minlength=len(codes))
    start = np.r_[0, np.cumsum(count)[:-1]]
    d = draw.ravel()
    cnt = count[d]
    items = order[np.repeat(start[d] - np.r_[0, np.cumsum(cnt)[:-1]], cnt) + np.arange(int(cnt.sum()))]
    return items, cnt.reshape(draw.shape).sum(axis=1)


def cluster_bootstrap_ci(values, clusters, stat: Callable = np.mean, n_boot: int = 2000, seed: int = 0,
                         conf: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap interval of ``stat`` that resamples whole *clusters* (e.g. requests), not items.

    Use it when items are not independent: a request measured under every attack (pooled attacks), or under
    several models, contributes correlated items; resampling items as if they were independent then gives too
    narrow an interval. Each bootstrap replicate draws G cluster labels with replacement (G = number of distinct
    labels over all samples) and keeps, in every sample, all the items of each drawn cluster (as often as it
    was drawn). With one item per cluster this is exactly :func:`bootstrap_ci` with ``paired=True`` (the same
    random draws for the same ``seed``). A replicate in which a sample holds no item gives NaN and is left out.
    Our own because scipy.stats.bootstrap has no cluster resampling: the draws and the gathering are vectorised,
    ``stat`` is called once per replicate (the resamples differ in length).

    Parameters
    ----------
    values : array, or a tuple/list of arrays
        One sample, or several passed to ``stat(*samples)``.
    clusters : array, or a tuple/list of arrays (one per sample)
        Cluster label of every item (any hashable: request index, request text). One array for several
        samples is used for all of them (the samples must then have its length).

    Returns
    -------
    (estimate on the original data, lo, hi)
    """
    _z(conf)
    multi, samples = _samples(values)
    if isinstance(clusters, (tuple, list)) and len(clusters) == len(samples) and all(
            np.ndim(c) == 1 for c in clusters) and multi:
        labels = [np.asarray(c, dtype=object) for c in clusters]
    else:
        labels = [np.asarray(clusters, dtype=object)] * len(samples)
    for s, c in zip(samples, labels):
        if len(s) != len(c):
            raise ValueError(f"every item needs one cluster label: got {len(s)} items and {len(c)} labels")
    if any(len(s) == 0 for s in samples):
        raise ValueError("cluster_bootstrap_ci needs non-empty samples")
    codes = _codes(labels)
    draw = np.random.default_rng(seed).integers(0, len(codes), (n_boot, len(codes)))
    est = float(stat(*samples))
    res = []
    for s, c in zip(samples, labels):
        items, sizes = _cluster_items(c, codes, draw)
        res.append(np.split(s[items], np.cumsum(sizes)[:-1]))
    out = np.array([stat(*r) if all(len(x) for x in r) else np.nan for r in zip(*res)], dtype=float)
    return (est, *_percentile(out, conf))


def _mean_difference(x, y, axis=-1):
    return x.mean(axis) - y.mean(axis)


def _mover(ra: Rate, rb: Rate, conf: float, method: str, info: dict | None = None) -> Estimate:
    """Newcombe's hybrid score interval of ``ra - rb`` (two independent samples) built from the two rates' own
    intervals (Wilson, or cluster-adjusted Wilson when a sample is clustered: the MOVER construction)."""
    d = ra.value - rb.value
    lo = d - math.sqrt((ra.value - ra.lo) ** 2 + (rb.hi - rb.value) ** 2)
    hi = d + math.sqrt((ra.hi - ra.value) ** 2 + (rb.value - rb.lo) ** 2)
    return Estimate(d, lo, hi, method, conf, info or {"a": str(ra), "b": str(rb)}, signed=True)


def delta(rate_a: Rate, rate_b: Rate, method: str = "newcombe", conf: float = 0.95, n_boot: int = 2000,
          seed: int = 0, clusters=None, clusters_b=None) -> Estimate:
    """Difference ``rate_a - rate_b`` with a confidence interval.

    method="newcombe"
        Newcombe's hybrid score interval (1998, method 10) for two *independent* proportions, built from the two
        Wilson intervals: lo = d - sqrt((p_a - lo_a)^2 + (hi_b - p_b)^2), hi = d + sqrt((hi_a - p_a)^2 +
        (p_b - lo_b)^2). Needs only the counts.
    method="paired"
        Percentile bootstrap over items, resampling the same indices in both rates. Use it when both rates
        were measured on the same prompts in the same order (e.g. one prompt set under AR and under diffusion
        sampling); it needs ``Rate.outcomes`` (set by :func:`srilib.signal.refusal_rate`,
        :func:`srilib.signal.attack_success_rate`, :func:`srilib.signal.internal_recovery_rate`,
        ``Rate.from_outcomes``). Ignoring the pairing usually gives a wider interval, never a wrong sign.
    method="cluster" (or ``clusters`` given with method="paired")
        Percentile bootstrap that resamples whole clusters (:func:`cluster_bootstrap_ci`): ``clusters`` labels
        every item of ``rate_a`` (e.g. the index of its request), ``clusters_b`` every item of ``rate_b``
        (default: ``clusters``, for paired rates). Use it wherever a rate pools attacks (each request appears
        once per attack) or models (the same requests under every model): the items of one request are
        correlated, so a row bootstrap or Newcombe's interval is too narrow. Needs ``Rate.outcomes``.
    """
    info = {"a": str(rate_a), "b": str(rate_b)}
    if rate_a.n == 0 or rate_b.n == 0:
        return Estimate(math.nan, math.nan, math.nan, method, conf, info, signed=True)
    if clusters is not None and method == "paired":
        method = "cluster"
    if method == "cluster":
        if clusters is None:
            raise ValueError("method='cluster' needs clusters=<cluster label of every item of rate_a>")
        if rate_a.outcomes is None or rate_b.outcomes is None:
            raise ValueError("method='cluster' needs per-item outcomes; build the rates with Rate.from_outcomes")
        cb = clusters if clusters_b is None else clusters_b
        if clusters_b is None and len(rate_a.outcomes) != len(rate_b.outcomes):
            raise ValueError(f"one cluster array for both rates needs the same items in both, got n={rate_a.n} and "
                             f"n={rate_b.n}; pass clusters_b for rate_b's items")
        ca, cb = np.asarray(clusters, dtype=object), np.asarray(cb, dtype=object)
        est, lo, hi = cluster_bootstrap_ci((rate_a.outcomes.astype(float), rate_b.outcomes.astype(float)), (ca, cb),
                                           _mean_difference, n_boot=n_boot, seed=seed, conf=conf)
        n_clusters = len(set(ca.tolist()) | set(cb.tolist()))
        return Estimate(est, lo, hi, "cluster-bootstrap", conf, {**info, "n_boot": n_boot, "clusters": n_clusters},
                        signed=True)
    if method == "newcombe":
        return _mover(wilson(rate_a.k, rate_a.n, conf), wilson(rate_b.k, rate_b.n, conf), conf, "newcombe", info)
    if method == "paired":
        if rate_a.outcomes is None or rate_b.outcomes is None:
            raise ValueError("method='paired' needs per-item outcomes; build the rates with Rate.from_outcomes "
                             "(or refusal_rate / attack_success_rate), or use method='newcombe'")
        if len(rate_a.outcomes) != len(rate_b.outcomes):
            raise ValueError(f"paired delta needs the same items in both rates, got n={rate_a.n} and "
                             f"n={rate_b.n}; use method='newcombe' for independent samples")
        est, lo, hi = bootstrap_ci((rate_a.outcomes.astype(float), rate_b.outcomes.astype(float)), _mean_difference,
                                   n_boot=n_boot, seed=seed, conf=conf, paired=True)
        return Estimate(est, lo, hi, "paired-bootstrap", conf, {**info, "n_boot": n_boot}, signed=True)
    raise ValueError(f"unknown method {method!r}; use 'newcombe' (independent), 'paired' (same prompts) or "
                     "'cluster' (items grouped by request)")


# --------------------------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------------------------
def _scores(scores_neg, scores_pos) -> tuple[np.ndarray, np.ndarray]:
    neg = np.asarray(scores_neg, dtype=np.float64).ravel()
    pos = np.asarray(scores_pos, dtype=np.float64).ravel()
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError(f"AUROC needs both classes; got {len(neg)} negatives and {len(pos)} positives")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("scores contain NaN or inf")
    return neg, pos


def _weighted_aurocs(neg: np.ndarray, pos: np.ndarray, w_neg: np.ndarray, w_pos: np.ndarray) -> np.ndarray:
    """AUROC [B] of B resamples given how often each item was drawn (``w_neg`` [B, n_neg], ``w_pos`` [B, n_pos]):
    for every positive, the drawn negatives below it plus half those equal to it, counted in integers; NaN for a
    resample without negatives or positives."""
    order = np.argsort(neg, kind="stable")
    s = neg[order]
    below, upto = np.searchsorted(s, pos, side="left"), np.searchsorted(s, pos, side="right")
    out = np.empty(len(w_neg))
    step = max(1, 2 ** 22 // (len(neg) + len(pos)))  # replicates per chunk: bounded memory
    for b in range(0, len(w_neg), step):
        wp = w_pos[b:b + step]
        cum = np.zeros((len(wp), len(s) + 1), dtype=np.int64)
        np.cumsum(w_neg[b:b + step][:, order], axis=1, out=cum[:, 1:])
        num = (wp * (cum[:, below] + cum[:, upto])).sum(axis=1)
        den = cum[:, -1] * wp.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[b:b + step] = np.where(den > 0, num / 2.0 / den, np.nan)
    return out


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items occurs in every row of ``idx`` [B, m]: [B, n]."""
    B = len(idx)
    return np.bincount((idx + n * np.arange(B)[:, None]).ravel(), minlength=B * n).reshape(B, n)


def auroc_score(scores_neg, scores_pos) -> float:
    """AUROC of positives vs negatives (higher score = more positive) as the Mann-Whitney probability
    P(pos > neg) + P(pos == neg) / 2, counted exactly: sklearn.metrics.roc_auc_score's value up to rounding, but
    roc_auc_score integrates the ROC curve in floating point and can move a printed digit (11/16 comes out of it
    as 0.6874999999999999, printed 0.687; the book prints 0.688)."""
    neg, pos = _scores(scores_neg, scores_pos)
    return float(_weighted_aurocs(neg, pos, np.ones((1, len(neg)), np.int64), np.ones((1, len(pos)), np.int64))[0])


def auroc(scores_neg, scores_pos, n_boot: int = 2000, seed: int = 0, conf: float = 0.95) -> Estimate:
    """AUROC of positives (e.g. jailbreaks) vs negatives (harmless); higher score = more positive.

    The interval is a percentile bootstrap resampling negatives and positives separately (stratified): the draws
    of :func:`bootstrap_ci` with ``paired=False``, every replicate's AUROC counted at once.
    """
    neg, pos = _scores(scores_neg, scores_pos)
    i_neg, i_pos = _row_draws(np.random.default_rng(seed), [len(neg), len(pos)], n_boot)
    draws = _weighted_aurocs(neg, pos, _counts(i_neg, len(neg)), _counts(i_pos, len(pos)))
    return Estimate(auroc_score(neg, pos), *_percentile(draws, conf), "stratified-bootstrap", conf,
                    {"n_neg": len(neg), "n_pos": len(pos), "n_boot": n_boot})


def roc_curve(scores_neg, scores_pos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of sklearn.metrics.roc_curve with labels 0 = negatives, 1 = positives."""
    from sklearn.metrics import roc_curve as _roc

    neg, pos = _scores(scores_neg, scores_pos)
    return _roc(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])


def paired_auroc_draws(pairs, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """Bootstrap replicates [n_boot] of the AUROC of several detectors (or runs) scored on the SAME prompts, all on
    the same draws (so differences and means between them are paired).

    Each entry of ``pairs`` is ``(neg, pos)``, ``(neg, pos, pos_clusters)`` or ``(neg, pos, pos_clusters,
    neg_clusters)``. ``pos`` is [attacks, requests] (the request of column j is j) or a 1-D array whose
    ``pos_clusters`` name the request of every item (default: every item its own request); negatives are
    resampled by row unless ``neg_clusters`` label them. A replicate draws, with replacement, as many requests as
    there are distinct request labels over all entries and brings every item of each drawn request in every entry
    (a cluster bootstrap: a request's generations under different attacks, or under different runs, are
    correlated); negatives likewise. An entry that holds none of the drawn requests gives NaN for that replicate.
    Without explicit labels every entry must share the number of negatives and of requests; with labels, the
    labels name the same request (the same harmless prompt) in every entry. Our own because scipy.stats.bootstrap
    has no cluster resampling; every replicate's AUROC is counted at once from how often each item was drawn.
    """
    if not pairs:
        raise ValueError("paired_auroc_draws needs at least one (neg, pos) pair")
    if n_boot <= 0:
        raise ValueError("intervals need n_boot > 0 bootstrap resamples")
    norm, explicit = [], False
    for p in pairs:
        neg, pos = np.asarray(p[0], float).ravel(), np.asarray(p[1], float)
        pc = p[2] if len(p) > 2 else None
        nc = p[3] if len(p) > 3 else None
        if pc is None:
            if pos.ndim == 2:  # [attacks, requests]: the request of column j is j
                pc, pos = np.tile(np.arange(pos.shape[1]), pos.shape[0]), pos.ravel()
            else:
                pos = pos.ravel()
                pc = np.arange(len(pos))
        else:
            explicit, pos = True, pos.ravel()
        if nc is None:
            nc = np.arange(len(neg))
        else:
            explicit = True
        norm.append((neg, pos, _labels_of(pc, len(pos)), _labels_of(nc, len(neg))))
    if not explicit and len({(len(n), len(set(c.tolist()))) for n, _, c, _ in norm}) > 1:
        raise ValueError("every detector must be scored on the same prompts (same negatives and requests)")
    codes_p, codes_n = _codes(c for *_, c, _ in norm), _codes(c for *_, c in norm)
    rng = np.random.default_rng(seed)
    n_drawn = _counts(rng.integers(0, len(codes_n), (n_boot, len(codes_n))), len(codes_n))
    p_drawn = _counts(rng.integers(0, len(codes_p), (n_boot, len(codes_p))), len(codes_p))

    def item_weights(drawn: np.ndarray, labels: np.ndarray, codes: dict) -> np.ndarray:
        return drawn[:, [codes[x] for x in labels.tolist()]]

    return [_weighted_aurocs(neg, pos, item_weights(n_drawn, nc, codes_n), item_weights(p_drawn, pc, codes_p))
            for neg, pos, pc, nc in norm]


# --------------------------------------------------------------------------------------------------------------
# one place that picks the interval from the shape of the data
# --------------------------------------------------------------------------------------------------------------
def _as_rate(x, conf: float) -> Rate:
    if isinstance(x, Rate):
        return x
    return Rate.from_outcomes(x, conf)


def request_interval(x, *, neg=None, minus=None, clusters=None, minus_clusters=None, paired: bool = False,
                     n_boot: int = 2000, seed: int = 0, conf: float = 0.95) -> Rate | Estimate:
    """The confidence interval that fits the shape of the data: every pooled rate, AUROC or difference of the
    chapters goes through here, so that items that share a request are never counted as independent.

    What is measured follows from the arguments:

    * a **rate**: ``x`` is a :class:`Rate` (with outcomes) or per-item booleans;
    * an **AUROC** of positives ``x`` (scores) against negatives ``neg`` (scores; resampled by row: independent
      prompts such as the harmless set);
    * a **difference** ``x - minus`` of two rates; ``paired=True`` when both hold the same items in the same
      order (e.g. the same generations before and after a defense).

    ``clusters`` labels every item of ``x`` with the request it came from (for a pool of attacks, the index of the
    original request: it repeats once per attack); a :class:`Rate` that carries ``clusters`` brings its own.
    ``minus_clusters`` labels the items of ``minus`` when it is not paired. Then:

    ===============================================  ==========================================================
    data                                             interval
    ===============================================  ==========================================================
    rate, no label repeats (independent items)       Wilson
    rate, labels repeat (clustered)                  Wilson on the effective sample size (:func:`cluster_adjusted`)
    AUROC, independent positives                     stratified bootstrap (negatives and positives by row)
    AUROC, clustered positives                       cluster bootstrap: negatives by row, positives by request
                                                     (:func:`paired_auroc_draws`)
    paired difference, independent items             paired bootstrap (:func:`delta`, ``method="paired"``)
    paired difference, clustered                     paired cluster bootstrap (:func:`delta`, ``"cluster"``)
    unpaired difference, samples share requests      cluster bootstrap over the shared requests (``"cluster"``)
    unpaired difference, unrelated samples           Newcombe's hybrid score interval from each sample's own
                                                     interval (Wilson, or cluster-adjusted where clustered)
    ===============================================  ==========================================================

    An AUROC or a request-level rate of data holding k identical copies of every request equals that of the
    request-level data (one copy), never a k-times narrower interval. ``n_boot`` <= 0 gives an AUROC's point
    value only (a rate's interval needs no resampling).
    """
    _z(conf)
    if neg is not None:
        if minus is not None:
            raise ValueError("pass either neg (an AUROC) or minus (a difference of rates), not both")
        neg_, pos = _scores(neg, x)
        cl = _labels_of(np.arange(len(pos)) if clusters is None else clusters, len(pos))
        G = len(set(cl.tolist()))
        clustered = G < len(cl)
        info = {"n_neg": len(neg_), "n_pos": len(pos), "clusters": G}
        point = auroc_score(neg_, pos)
        if n_boot <= 0:
            return Estimate(point, math.nan, math.nan, "point", conf, info)
        draws = paired_auroc_draws([(neg_, pos, cl)], n_boot, seed=seed)[0]
        return Estimate(point, *_percentile(draws, conf), "cluster-bootstrap" if clustered else
                        "stratified-bootstrap", conf, {**info, "n_boot": n_boot})
    if minus is not None:
        ra, rb = _as_rate(x, conf), _as_rate(minus, conf)
        ca = clusters if clusters is not None else ra.clusters
        if paired:
            if ra.outcomes is None or rb.outcomes is None:
                raise ValueError("a paired difference needs per-item outcomes (Rate.from_outcomes)")
            if len(ra.outcomes) != len(rb.outcomes):
                raise ValueError(f"a paired difference needs the same items in both rates, got n={ra.n} and "
                                 f"n={rb.n}; pass paired=False for different items")
            cl = ca if ca is not None else rb.clusters
            if cl is not None and _repeats(_labels_of(cl, ra.n)):
                return delta(ra, rb, method="cluster", clusters=_labels_of(cl, ra.n), n_boot=n_boot, seed=seed,
                             conf=conf)
            return delta(ra, rb, method="paired", n_boot=n_boot, seed=seed, conf=conf)
        cb = minus_clusters if minus_clusters is not None else rb.clusters
        if ca is not None and cb is not None and (set(_labels_of(ca, ra.n).tolist())
                                                  & set(_labels_of(cb, rb.n).tolist())):
            return delta(ra, rb, method="cluster", clusters=_labels_of(ca, ra.n), clusters_b=_labels_of(cb, rb.n),
                         n_boot=n_boot, seed=seed, conf=conf)
        ia = request_interval(ra, clusters=ca, conf=conf)
        ib = request_interval(rb, clusters=cb, conf=conf)
        if ra.n == 0 or rb.n == 0:
            return Estimate(math.nan, math.nan, math.nan, "newcombe", conf, {"a": str(ra), "b": str(rb)}, signed=True)
        clustered = "clustered" in ia.method or "clustered" in ib.method
        return _mover(ia, ib, conf, "newcombe, cluster-adjusted" if clustered else "newcombe")
    r = _as_rate(x, conf)
    cl = clusters if clusters is not None else r.clusters
    if r.conf != conf:
        r = Rate.from_outcomes(r.outcomes, conf, r.clusters) if r.outcomes is not None else wilson(r.k, r.n, conf)
    if cl is None:
        if r.outcomes is None:
            return wilson(r.k, r.n, conf)
        return Rate.from_outcomes(r.outcomes, conf)
    if r.outcomes is None:
        raise ValueError("a rate over clustered items needs per-item outcomes (Rate.from_outcomes)")
    cl = _labels_of(cl, r.n)
    if _repeats(cl):
        return cluster_adjusted(Rate.from_outcomes(r.outcomes, conf), cl)
    return Rate.from_outcomes(r.outcomes, conf, clusters=cl)


__all__ = ["Rate", "Estimate", "wilson", "cluster_adjusted", "bootstrap_ci", "cluster_bootstrap_ci", "delta",
           "auroc_score", "auroc", "roc_curve", "paired_auroc_draws", "request_interval"]
