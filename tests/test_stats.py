"""srilib.stats: intervals and AUROC on hand-built cases, and the numbers they gave before they moved onto scipy and
scikit-learn (issue 25, item 4).

``EXPECTED`` holds what srilib.signal returned for the seeded inputs of :func:`_outputs` before the refactor,
rounded to 4 decimals (the book prints 2-3): every public interval and AUROC function, with ties, clusters,
paired samples, several n and n_boot. A changed draw order, quantile or formula moves some of these digits.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from srilib.stats import (Estimate, Rate, auroc, auroc_score, bootstrap_ci, cluster_adjusted, cluster_bootstrap_ci,
                          delta, paired_auroc_draws, request_interval, roc_curve, wilson)


def _r(x):
    """Numbers rounded to 4 decimals (NaN kept), strings as they are, recursively."""
    if isinstance(x, str):
        return x
    if isinstance(x, (tuple, list, np.ndarray)):
        return tuple(_r(v) for v in x)
    return "nan" if math.isnan(x) else round(float(x), 4)


def _est(e):
    return (e.value, e.lo, e.hi, e.method)


def _draws(d):
    return (np.nanmean(d), *np.nanquantile(d, [0.025, 0.975]), int(np.isnan(d).sum()), d[0], d[7])


def _outputs() -> dict:
    """name -> the outputs of one call (floats, method names) on seeded inputs."""
    rng = np.random.default_rng(11)
    out = {}
    for k, n, conf in [(0, 1, .95), (1, 1, .95), (0, 10, .95), (10, 10, .95), (3, 10, .95), (81, 263, .95),
                       (15, 148, .95), (7, 1000, .95), (1, 3, .9), (50, 100, .99)]:
        r = wilson(k, n, conf)
        out[f"wilson {k}/{n} {conf}"] = (r.value, r.lo, r.hi)
    cl = rng.integers(0, 17, 60)  # 17 requests of unequal size, outcomes correlated within a request
    o = (rng.random(17) < 0.35)[cl] ^ (rng.random(60) < 0.1)
    out["cluster_adjusted"] = _est(cluster_adjusted(Rate.from_outcomes(o), cl))
    out["cluster_adjusted p=0"] = _est(cluster_adjusted(Rate.from_outcomes(np.zeros(60, bool)), cl))
    out["cluster_adjusted p=1"] = _est(cluster_adjusted(Rate.from_outcomes(np.ones(60, bool)), cl))

    for n, n_boot, seed in [(1, 50, 0), (2, 200, 0), (9, 500, 3), (40, 2000, 0)]:
        out[f"bootstrap mean n={n}"] = bootstrap_ci(rng.normal(size=n), n_boot=n_boot, seed=seed)
    a, b = rng.random(25) < 0.5, rng.random(25) < 0.3
    out["bootstrap paired"] = bootstrap_ci((a.astype(float), b.astype(float)), lambda x, y: x.mean() - y.mean(),
                                           n_boot=400, seed=1)
    out["bootstrap independent"] = bootstrap_ci((rng.normal(size=15), rng.normal(1, 1, 8)),
                                                lambda x, y: x.mean() - y.mean(), n_boot=300, seed=2, paired=False)
    out["bootstrap median ties conf=0.9"] = bootstrap_ci(np.round(rng.normal(size=30), 1), np.median, n_boot=300,
                                                        seed=4, conf=0.9)

    x, g = rng.normal(size=50), rng.integers(0, 12, 50)
    out["cluster bootstrap mean"] = cluster_bootstrap_ci(x, g, n_boot=500, seed=1)
    y, h = rng.normal(0.5, 1, 20), rng.integers(8, 20, 20)  # shares requests 8-11 with x: some draws hold no y
    out["cluster bootstrap two samples"] = cluster_bootstrap_ci((x, y), (g, h), lambda u, v: u.mean() - v.mean(),
                                                                n_boot=400, seed=2)
    lab = rng.random(50) < 0.5
    out["cluster bootstrap of indices"] = cluster_bootstrap_ci(
        np.arange(50), g, lambda i: (lab[i] == (x[i] > 0)).mean(), n_boot=300, seed=3)

    out["delta newcombe"] = _est(delta(wilson(56, 70), wilson(48, 80)))
    base = rng.random(40) < 0.5
    pa, pb = Rate.from_outcomes(base | (rng.random(40) < 0.15)), Rate.from_outcomes(base)
    out["delta paired"] = _est(delta(pa, pb, method="paired", n_boot=400, seed=5))
    req = np.repeat(np.arange(10), 4)
    out["delta cluster"] = _est(delta(pa, pb, clusters=req, method="paired", n_boot=400, seed=5))
    out["delta cluster, two pools"] = _est(delta(Rate.from_outcomes(np.r_[base, base[::-1]]), pb, method="cluster",
                                                 clusters=np.r_[req, req], clusters_b=req, n_boot=300))

    for n0, n1, n_boot in [(7, 5, 200), (40, 25, 500), (300, 300, 2000)]:
        neg, pos = np.round(rng.normal(size=n0), 1), np.round(rng.normal(0.7, 1, n1), 1)  # ties
        out[f"auroc {n0}x{n1}"] = _est(auroc(neg, pos, n_boot=n_boot, seed=1))
        out[f"auroc_score {n0}x{n1}"] = auroc_score(neg, pos)
    out["auroc perfect"] = _est(auroc([0.1, 0.2, 0.3], [0.7, 0.8], n_boot=100))
    out["roc_curve"] = np.concatenate(roc_curve([0.1, 0.4, 0.4, 0.2], [0.35, 0.4, 0.8]))

    neg, pos = np.round(rng.normal(size=30), 1), np.round(rng.normal(0.8, 1, (3, 11)), 1)
    for i, d in enumerate(paired_auroc_draws([(neg, pos), (neg, np.round(pos * 0.5 + 0.3, 1))], 300, seed=2)):
        out[f"paired_auroc_draws [attacks, requests] {i}"] = _draws(d)
    ids = np.tile(np.arange(11), 3)
    hn = np.arange(30)  # the second entry holds two other requests only: some draws give it none (NaN)
    for i, d in enumerate(paired_auroc_draws([(neg, pos.ravel(), ids, hn), (neg[::-1], pos[0, :3], [20, 21, 21], hn)],
                                             200, seed=3)):
        out[f"paired_auroc_draws labelled {i}"] = _draws(d)

    ids = np.tile(np.arange(8), 3)
    o = np.tile(rng.random(8) < 0.4, 3) ^ (rng.random(24) < 0.1)
    after = o & (rng.random(24) < 0.6)
    scores = np.round(rng.normal(0.6, 1, 24), 1)
    h = rng.random(30) < 0.1
    ri = request_interval
    out["request rate"] = _est(ri(o))
    out["request rate conf=0.9"] = _est(ri(Rate.from_outcomes(o), conf=0.9))
    out["request rate clustered"] = _est(ri(o, clusters=ids))
    out["request auroc"] = _est(ri(scores, neg=neg, n_boot=400, seed=1))
    out["request auroc clustered"] = _est(ri(scores, neg=neg, clusters=ids, n_boot=400, seed=1))
    out["request auroc point"] = _est(ri(scores, neg=neg, clusters=ids, n_boot=0))
    out["request paired"] = _est(ri(o, minus=after, paired=True, n_boot=400, seed=2))
    out["request paired clustered"] = _est(ri(o, minus=after, paired=True, clusters=ids, n_boot=400, seed=2))
    out["request shared requests"] = _est(ri(o, minus=after[:16], clusters=ids, minus_clusters=ids[:16], n_boot=300))
    out["request newcombe"] = _est(ri(o, minus=h))
    out["request newcombe clustered"] = _est(ri(o, minus=h, clusters=ids))
    return out


EXPECTED = {
    'wilson 0/1 0.95': (0.0, 0.0, 0.7935),
    'wilson 1/1 0.95': (1.0, 0.2065, 1.0),
    'wilson 0/10 0.95': (0.0, 0.0, 0.2775),
    'wilson 10/10 0.95': (1.0, 0.7225, 1.0),
    'wilson 3/10 0.95': (0.3, 0.1078, 0.6032),
    'wilson 81/263 0.95': (0.308, 0.2553, 0.3662),
    'wilson 15/148 0.95': (0.1014, 0.0624, 0.1605),
    'wilson 7/1000 0.95': (0.007, 0.0034, 0.0144),
    'wilson 1/3 0.9': (0.3333, 0.0783, 0.7465),
    'wilson 50/100 0.99': (0.5, 0.3753, 0.6247),
    'cluster_adjusted': (0.4167, 0.2529, 0.6011, 'wilson, clustered (n_eff=27.1 of 60, 17 clusters)'),
    'cluster_adjusted p=0': (0.0, 0.0, 0.1843, 'wilson, clustered (n_eff=17.0 of 60, 17 clusters)'),
    'cluster_adjusted p=1': (1.0, 0.8157, 1.0, 'wilson, clustered (n_eff=17.0 of 60, 17 clusters)'),
    'bootstrap mean n=1': (-0.4862, -0.4862, -0.4862),
    'bootstrap mean n=2': (0.5079, -0.1906, 1.2064),
    'bootstrap mean n=9': (0.5089, -0.4148, 1.3443),
    'bootstrap mean n=40': (-0.0015, -0.2786, 0.2881),
    'bootstrap paired': (0.28, 0.04, 0.56),
    'bootstrap independent': (-0.0284, -0.6727, 0.6858),
    'bootstrap median ties conf=0.9': (0.2, -0.3, 0.7),
    'cluster bootstrap mean': (0.0274, -0.1837, 0.3468),
    'cluster bootstrap two samples': (-0.7096, -1.2004, -0.1253),
    'cluster bootstrap of indices': (0.52, 0.4107, 0.6667),
    'delta newcombe': (0.2, 0.0524, 0.3339, 'newcombe'),
    'delta paired': (0.15, 0.05, 0.275, 'paired-bootstrap'),
    'delta cluster': (0.15, 0.05, 0.25, 'cluster-bootstrap'),
    'delta cluster, two pools': (0.0, -0.1, 0.1, 'cluster-bootstrap'),
    'auroc 7x5': (0.6857, 0.3429, 0.915, 'stratified-bootstrap'),
    'auroc_score 7x5': 0.6857,
    'auroc 40x25': (0.683, 0.5465, 0.813, 'stratified-bootstrap'),
    'auroc_score 40x25': 0.683,
    'auroc 300x300': (0.6828, 0.6418, 0.7223, 'stratified-bootstrap'),
    'auroc_score 300x300': 0.6828,
    'auroc perfect': (1.0, 1.0, 1.0, 'stratified-bootstrap'),
    'roc_curve': (0.0, 0.0, 0.5, 0.5, 1.0, 0.0, 0.3333, 0.6667, 1.0, 1.0, math.inf, 0.8, 0.4, 0.35, 0.1),
    'paired_auroc_draws [attacks, requests] 0': (0.6215, 0.4719, 0.7649, 0.0, 0.5732, 0.704),
    'paired_auroc_draws [attacks, requests] 1': (0.668, 0.5206, 0.8192, 0.0, 0.6293, 0.7763),
    'paired_auroc_draws labelled 0': (0.6177, 0.4693, 0.7627, 0.0, 0.6914, 0.5574),
    'paired_auroc_draws labelled 1': (0.566, 0.3665, 0.7333, 22.0, 0.6722, 0.475),
    'request rate': (0.2917, 0.1491, 0.4917, 'wilson'),
    'request rate conf=0.9': (0.2917, 0.1666, 0.459, 'wilson'),
    'request rate clustered': (0.2917, 0.0991, 0.6066, 'wilson, clustered (n_eff=9.2 of 24, 8 clusters)'),
    'request auroc': (0.6208, 0.4812, 0.7718, 'stratified-bootstrap'),
    'request auroc clustered': (0.6208, 0.4895, 0.7397, 'cluster-bootstrap'),
    'request auroc point': (0.6208, 'nan', 'nan', 'point'),
    'request paired': (0.125, 0.0406, 0.2917, 'paired-bootstrap'),
    'request paired clustered': (0.125, 0.0, 0.2917, 'cluster-bootstrap'),
    'request shared requests': (0.1042, 0.0, 0.2292, 'cluster-bootstrap'),
    'request newcombe': (0.2583, 0.0631, 0.4602, 'newcombe'),
    'request newcombe clustered': (0.2583, 0.0241, 0.5745, 'newcombe, cluster-adjusted'),
}


def test_every_interval_and_auroc_keeps_its_recorded_value():
    got = {k: _r(v) for k, v in _outputs().items()}
    assert got.keys() == EXPECTED.keys()
    for k in EXPECTED:
        assert got[k] == EXPECTED[k], k


def test_auroc_score_is_scikit_learns_with_ties_counting_half():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    for _ in range(50):
        n0, n1 = rng.integers(1, 30, 2)
        neg, pos = np.round(rng.normal(size=n0), 1), np.round(rng.normal(0.5, 1, n1), 1)  # many ties
        ref = roc_auc_score(np.r_[np.zeros(n0), np.ones(n1)], np.r_[neg, pos])
        assert auroc_score(neg, pos) == pytest.approx(ref, abs=1e-12)
    assert auroc_score([0.5], [0.5, 0.5]) == 0.5
    # counted exactly where scikit-learn's trapezoids round: 11/16 (one tie), which the book prints as 0.688
    neg, pos = [0.5] + [1.0] * 7, [0.5, 2.0, 2.0]
    assert auroc_score(neg, pos) == 0.6875 and f"{roc_auc_score([0] * 8 + [1] * 3, neg + pos):.3f}" == "0.687"
    with pytest.raises(ValueError, match="both classes"):
        auroc_score([], [1.0])


# ---------------------------------------------------------------- Wilson, Rate
def test_wilson_edges_textbook():
    r0 = wilson(0, 10)
    assert (r0.lo, r0.value) == (0.0, 0.0)
    assert r0.hi == pytest.approx(0.2775, abs=1e-4)  # z^2/(n+z^2)
    r1 = wilson(10, 10)
    assert (r1.value, r1.hi) == (1.0, 1.0)
    assert r1.lo == pytest.approx(0.7225, abs=1e-4)


@pytest.mark.parametrize("k,n,lo,hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605)])
def test_wilson_newcombe_1998_values(k, n, lo, hi):
    r = wilson(k, n)
    assert (round(r.lo, 4), round(r.hi, 4)) == (lo, hi)


def test_rate_str_dict_and_empty():
    r = wilson(31, 50)
    assert str(r) == "0.62 [0.48, 0.74] (31/50)"
    d = r.as_dict()
    assert d["k"] == 31 and d["n"] == 50 and d["method"] == "wilson" and "outcomes" not in d
    e = wilson(0, 0)
    assert math.isnan(e.value) and math.isnan(e.lo) and math.isnan(e.hi) and str(e) == "n/a (0/0)"
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 3)
    with pytest.raises(ValueError, match="conf"):
        wilson(1, 3, conf=95)
    with pytest.raises(ValueError, match="strictly between"):  # scipy would take 1.0
        wilson(1, 3, conf=1.0)


def test_wilson_narrower_with_more_data_and_wider_with_higher_conf():
    assert wilson(50, 100).hi - wilson(50, 100).lo < wilson(5, 10).hi - wilson(5, 10).lo
    assert wilson(5, 10, 0.99).hi > wilson(5, 10, 0.95).hi


# ---------------------------------------------------------------- delta
def test_delta_newcombe_textbook():
    d = delta(wilson(56, 70), wilson(48, 80))  # Newcombe (1998), method 10: 0.0524 to 0.3339
    assert d.method == "newcombe"
    assert d.value == pytest.approx(0.2)
    assert (round(d.lo, 4), round(d.hi, 4)) == (0.0524, 0.3339)
    d2 = delta(wilson(9, 10), wilson(3, 10))  # 0.1705 to 0.8090
    assert (round(d2.lo, 4), round(d2.hi, 4)) == (0.1705, 0.8090)
    assert str(d2).startswith("+0.60 [")


def test_delta_paired_bootstrap_is_tighter_for_correlated_outcomes():
    rng = np.random.default_rng(1)
    base = rng.random(200) < 0.5
    flip = rng.random(200) < 0.1  # b differs from a on ~10% of items
    a = Rate.from_outcomes(base | flip)
    b = Rate.from_outcomes(base)
    dp = delta(a, b, method="paired", n_boot=500)
    dn = delta(a, b, method="newcombe")
    assert dp.method == "paired-bootstrap"
    assert dp.value == pytest.approx(dn.value)
    assert dp.lo > 0  # every changed item went one way: paired CI excludes 0
    assert dp.hi - dp.lo < dn.hi - dn.lo
    with pytest.raises(ValueError, match="needs per-item outcomes"):
        delta(wilson(3, 10), wilson(4, 10), method="paired")
    with pytest.raises(ValueError, match="same items"):
        delta(Rate.from_outcomes([1, 0]), Rate.from_outcomes([1, 0, 1]), method="paired")
    with pytest.raises(ValueError, match="unknown method"):
        delta(a, b, method="wald")
    assert math.isnan(delta(wilson(0, 0), b).value)


def test_bootstrap_ci_mean_and_independent_samples():
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    est, lo, hi = bootstrap_ci(x, n_boot=500)
    assert est == pytest.approx(x.mean())
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.25)  # ~ 2 * 1.96 * sd / sqrt(n)
    assert bootstrap_ci(x, n_boot=200, seed=3) == bootstrap_ci(x, n_boot=200, seed=3)
    e2 = bootstrap_ci((x, x[:100]), lambda a, b: a.mean() - b.mean(), n_boot=200, paired=False)
    assert e2[1] <= e2[0] <= e2[2]
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci((x, x[:100]), lambda a, b: 0.0)


# ---------------------------------------------------------------- AUROC
def test_auroc_known_values_and_ci():
    perfect = auroc([0.1, 0.2, 0.3], [0.7, 0.8], n_boot=200)
    assert perfect.value == 1.0 and perfect.lo == 1.0 and isinstance(perfect, Estimate)
    # 2 negatives x 2 positives: pairs (neg, pos) correctly ordered = 3 of 4
    assert auroc([0.1, 0.6], [0.5, 0.9], n_boot=50).value == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    a = auroc(rng.normal(0, 1, 300), rng.normal(1, 1, 300), n_boot=300)
    assert a.lo < a.value < a.hi
    assert 0.70 < a.value < 0.82  # theory: Phi(1/sqrt(2)) = 0.760
    assert a.info["n_neg"] == 300
    with pytest.raises(ValueError, match="both classes"):
        auroc([], [1.0])


# ---- cluster bootstrap (issue 12: pooled attacks repeat every request, so resample requests, not rows)
def _clustered(G=30, m=4, seed=3):
    """G requests, each under m attacks with perfectly correlated outcomes (all m rows of a request equal)."""
    rng = np.random.default_rng(seed)
    a_c = rng.random(G) < 0.6
    b_c = a_c & (rng.random(G) < 0.5)  # b refuses less on some requests
    return a_c, b_c, np.repeat(a_c, m), np.repeat(b_c, m), np.repeat(np.arange(G), m)


def test_cluster_bootstrap_equals_cluster_level_computation_and_is_wider_than_rows():
    a_c, b_c, a, b, req = _clustered()
    ra, rb = Rate.from_outcomes(a), Rate.from_outcomes(b)
    rows = delta(ra, rb, method="paired", n_boot=800, seed=5)
    clus = delta(ra, rb, method="paired", clusters=req, n_boot=800, seed=5)
    assert clus.method == "cluster-bootstrap" and clus.info["clusters"] == 30
    # with identical rows inside each request, resampling requests is the bootstrap of the request-level data
    ref = delta(Rate.from_outcomes(a_c), Rate.from_outcomes(b_c), method="paired", n_boot=800, seed=5)
    assert (clus.value, clus.lo, clus.hi) == pytest.approx((ref.value, ref.lo, ref.hi), abs=1e-12)
    # ... and the row bootstrap, which treats the 4 copies as independent, is about half as wide (1/sqrt(4))
    assert rows.value == pytest.approx(clus.value)
    assert (clus.hi - clus.lo) > 1.5 * (rows.hi - rows.lo)
    # the generic function, one sample
    est, lo, hi = cluster_bootstrap_ci(a.astype(float), req, n_boot=500, seed=1)
    e2, l2, h2 = bootstrap_ci(a_c.astype(float), n_boot=500, seed=1)
    assert (est, lo, hi) == pytest.approx((e2, l2, h2), abs=1e-12)


def test_cluster_delta_with_different_items_per_rate_and_errors():
    # two pools over the same requests but of different sizes (e.g. 2 AR runs vs 1 DLM run, every attack)
    a_c, b_c, a, b, req = _clustered(G=20, m=3)
    a2 = np.r_[a, a]
    ca = np.r_[req, req]
    e = delta(Rate.from_outcomes(a2), Rate.from_outcomes(b), method="cluster", clusters=ca, clusters_b=req,
              n_boot=400)
    ref = delta(Rate.from_outcomes(a_c), Rate.from_outcomes(b_c), method="paired", n_boot=400)
    assert (e.value, e.lo, e.hi) == pytest.approx((ref.value, ref.lo, ref.hi), abs=1e-12)
    with pytest.raises(ValueError, match="needs clusters"):
        delta(Rate.from_outcomes(a), Rate.from_outcomes(b), method="cluster")
    with pytest.raises(ValueError, match="clusters_b"):
        delta(Rate.from_outcomes(a2), Rate.from_outcomes(b), method="cluster", clusters=ca)
    with pytest.raises(ValueError, match="one cluster label"):
        cluster_bootstrap_ci(a.astype(float), req[:-1])


def test_cluster_adjusted_rate_equals_cluster_level_wilson_and_is_never_narrower():
    a_c, _, a, _, req = _clustered(G=30, m=4)
    r = cluster_adjusted(Rate.from_outcomes(a), req)
    ref = wilson(int(a_c.sum()), len(a_c))
    assert (r.k, r.n, r.value) == (int(a.sum()), len(a), pytest.approx(a.mean()))
    assert (r.lo, r.hi) == pytest.approx((ref.lo, ref.hi), abs=1e-12) and "clustered" in r.method
    plain = Rate.from_outcomes(a)
    assert (r.hi - r.lo) > 1.5 * (plain.hi - plain.lo)
    # independent clusters of one item: the plain Wilson interval
    s = cluster_adjusted(plain, np.arange(len(a)))
    assert (s.lo, s.hi) == pytest.approx((plain.lo, plain.hi))
    # p = 0: each cluster counts once
    z = cluster_adjusted(Rate.from_outcomes(np.zeros(120, bool)), req)
    assert z.hi == pytest.approx(wilson(0, 30).hi)


def test_paired_auroc_draws_share_draws_and_resample_requests():
    """One draw of harmless rows and requests per replicate serves every detector: equal scores give equal
    replicates, and a drawn request brings all its attacked generations (checked against a hand-drawn replicate)."""
    rng = np.random.default_rng(3)
    neg, pos = rng.normal(size=12), rng.normal(1.0, size=(3, 7))  # 3 attacks x 7 requests
    a, b, c = paired_auroc_draws([(neg, pos), (neg, pos), (neg, -pos)], n_boot=50, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    r = np.random.default_rng(5)
    ineg, ireq = r.integers(0, 12, (50, 12)), r.integers(0, 7, (50, 7))
    assert a[7] == pytest.approx(auroc_score(neg[ineg[7]], pos[:, ireq[7]].ravel()))
    with pytest.raises(ValueError, match="same prompts"):
        paired_auroc_draws([(neg, pos), (neg[:5], pos)], n_boot=5)


def test_roc_curve_passthrough():
    fpr, tpr, thr = roc_curve([0.1, 0.4], [0.35, 0.8])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
