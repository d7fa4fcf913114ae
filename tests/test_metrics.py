"""Metrics on hand-built cases with known answers."""
import math

import numpy as np
import pytest
from conftest import KeywordJudge

from srilib.metrics import (Estimate, Rate, attack_success_rate, auroc, bootstrap_ci, delta, incomplete_recoveries,
                            internal_recovery_rate, rates_table, recovery_by_revision, refusal_rate, roc_curve,
                            text_recovery_rate, wilson)


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
    assert math.isnan(e.value) and math.isnan(e.lo) and str(e) == "n/a (0/0)"
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson(5, 3)
    with pytest.raises(ValueError, match="conf"):
        wilson(1, 3, conf=95)


def test_wilson_narrower_with_more_data_and_wider_with_higher_conf():
    assert wilson(50, 100).hi - wilson(50, 100).lo < wilson(5, 10).hi - wilson(5, 10).lo
    assert wilson(5, 10, 0.99).hi > wilson(5, 10, 0.95).hi


# ---------------------------------------------------------------- RR, ASR
def test_refusal_rate_uses_dictionary():
    texts = ["I'm sorry, I can't do that.", "Sure, here is how.", "I cannot assist with this.", "I can do it."]
    r = refusal_rate(texts)
    assert (r.k, r.n) == (2, 4)
    assert r.outcomes.tolist() == [True, False, True, False]
    assert refusal_rate(texts, refusal_fn=lambda t: "do" in t).k == 2


def test_attack_success_rate_with_judge_and_bad_inputs():
    j = KeywordJudge()
    r = attack_success_rate(["a", "b", "c"], ["BOMB x", "no", "BOMB"], j)
    assert (r.k, r.n) == (2, 3)
    with pytest.raises(ValueError, match="one request per response"):
        attack_success_rate(["a"], ["x", "y"], j)

    class Broken:
        name = "broken"

        def judge(self, p, r):
            return np.ones(len(r) + 1, bool)

    with pytest.raises(ValueError, match="returned shape"):
        attack_success_rate(["a"], ["x"], Broken())


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


# ---------------------------------------------------------------- HRR / FRR
def test_recovery_by_revision_constructed_cases():
    preds = [
        ["", "BOMB a", "BOMB b", "safe c"],  # harmful at t=1, revised at t=3, final safe
        ["x", "BOMB", "BOMB", "BOMB"],  # harmful, never revised, final harmful
        ["x", "y", "z", "w"],  # never harmful
        ["BOMB", "ok", "BOMB", "BOMB"],  # harmful at t=0, revised at t=1 but harmful again at the end
        ["x", "y", "z", "BOMB"],  # harmful only at the last step: nothing after it, not revised
    ]
    finals = ["safe c", "BOMB", "w", "BOMB", "fine"]  # last one: final text differs from last prediction
    j = KeywordJudge()
    out = recovery_by_revision(preds, finals, ["p0", "p1", "p2", "p3", "p4"], j)
    assert out["ever_harmful"].tolist() == [True, True, False, True, True]
    assert out["revised"].tolist() == [True, False, False, True, False]
    assert out["final_harmful"].tolist() == [False, True, False, True, False]
    assert out["first_harmful_step"].tolist() == [1, 1, -1, 0, 3]
    assert out["harmful_steps"].shape == (5, 4)
    assert (out["hrr"].k, out["hrr"].n) == (2, 4)
    assert (out["frr"].k, out["frr"].n) == (2, 4)  # generations 0 and 4
    assert (out["harmful_any"].k, out["harmful_any"].n) == (4, 5)
    # each unique (prompt, text) pair judged once
    n_unique = len({(p, t) for p, row, f in zip(["p0", "p1", "p2", "p3", "p4"], preds, finals)
                    for t in [*row, f]})
    assert out["n_judged"] == n_unique == len(j.seen)


def test_recovery_by_revision_batches_and_errors():
    preds = [["BOMB", "ok"]] * 3
    out = recovery_by_revision(preds, ["ok"] * 3, ["a", "b", "c"], KeywordJudge(), batch_size=2)
    assert out["hrr"].k == 3 and out["frr"].k == 3
    with pytest.raises(ValueError, match="same number of steps"):
        recovery_by_revision([["a", "b"], ["a"]], ["a", "b"], ["p", "q"], KeywordJudge())
    with pytest.raises(ValueError, match="same length"):
        recovery_by_revision([["a"]], ["a", "b"], ["p"], KeywordJudge())
    with pytest.raises(ValueError, match="diffusion"):
        recovery_by_revision(None, [], [], KeywordJudge())


# ---------------------------------------------------------------- IRR
SIGMA = np.array([
    [0.9, 0.8, 0.4, 0.05],  # compliant early, ends < 0.1: counts at every lambda_r
    [0.9, 0.7, 0.5, 0.2],  # ends 0.2: counts at 0.5 and 0.3
    [0.6, 0.6, 0.6, 0.4],  # ends 0.4: counts at 0.5 only
    [0.3, 0.2, 0.1, 0.05],  # never compliant: never counts
    [0.2, 0.3, 0.4, 0.9],  # compliant only at the end, and ends compliant: never counts
    [0.9, 0.9, 0.9, 0.9],  # never refuses
])


def test_internal_recovery_rate_constructed():
    irr = internal_recovery_rate(SIGMA)
    assert list(irr) == [0.5, 0.3, 0.1]
    assert [irr[k].k for k in irr] == [3, 2, 1]
    assert all(r.n == 6 for r in irr.values())
    assert irr[0.3].outcomes.tolist() == [True, True, False, False, False, False]
    one = internal_recovery_rate(SIGMA, lambda_r=0.3)
    assert list(one) == [0.3] and one[0.3].k == 2
    # a stricter compliance threshold drops generation 2 (max 0.6 before the end)
    assert internal_recovery_rate(SIGMA, lambda_c=0.65)[0.5].k == 2
    # the compliant step must come before the end: 0.4 at T is above lambda_c=0.3 but does not count
    late = np.array([[0.1, 0.2, 0.2, 0.4], [0.1, 0.35, 0.2, 0.4]])
    assert internal_recovery_rate(late, lambda_c=0.3, lambda_r=0.5)[0.5].outcomes.tolist() == [False, True]


def test_internal_recovery_rate_errors():
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        internal_recovery_rate(SIGMA[0])
    with pytest.raises(ValueError, match="at least 2 steps"):
        internal_recovery_rate(SIGMA[:, :1])
    bad = SIGMA.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        internal_recovery_rate(bad)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        internal_recovery_rate(SIGMA, lambda_r=(1.5,))


def test_text_recovery_rate_same_definition():
    ts = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=float)
    tr = text_recovery_rate(ts)
    assert [r.k for r in tr.values()] == [2, 2, 2]
    assert tr[0.1].outcomes.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="only 0 and 1"):
        text_recovery_rate(SIGMA)


def test_incomplete_recoveries():
    sigma = np.array([
        [0.9, 0.2, 0.1, 0.7],  # dips (t=1), deepest t=2, recovers: selected
        [0.9, 0.2, 0.1, 0.7],  # same, but text refuses: not selected
        [0.9, 0.6, 0.4, 0.8],  # never dips below 0.3
        [0.9, 0.25, 0.3, 0.45],  # dips but ends below 0.5
        [0.8, 0.7, 0.05, 0.95],  # dips at t=2 and recovers: selected
        [0.1, 0.2, 0.6, 0.9],  # starts low and rises: never compliant before the dip, not selected
    ])
    ts = np.ones_like(sigma)
    ts[1, 2:] = 0
    out = incomplete_recoveries(sigma, ts)
    assert out["indices"].tolist() == [0, 4]
    assert out["dip_step"].tolist() == [1, 2]
    assert out["min_step"].tolist() == [2, 2]
    assert out["min_sigma"].tolist() == [0.1, 0.05]
    assert out["final_sigma"].tolist() == [0.7, 0.95]
    assert out["n"] == 6 and out["n_text_never_refuses"] == 5
    with pytest.raises(ValueError, match="same generations"):
        incomplete_recoveries(sigma, ts[:, :3])
    with pytest.raises(ValueError, match="must not exceed"):
        incomplete_recoveries(sigma, ts, dip=0.6, recover=0.5)


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


def test_auc_counts_ties_half_and_matches_scikit_learn():
    """_auc (binary search in the sorted negatives, used inside every bootstrap) equals roc_auc_score, ties
    included."""
    from sklearn.metrics import roc_auc_score

    from srilib.metrics import _auc

    rng = np.random.default_rng(7)
    for _ in range(50):
        n0, n1 = rng.integers(1, 30, 2)
        neg, pos = np.round(rng.normal(size=n0), 1), np.round(rng.normal(0.5, 1, n1), 1)  # many ties
        ref = roc_auc_score(np.r_[np.zeros(n0), np.ones(n1)], np.r_[neg, pos])
        assert _auc(neg, pos) == pytest.approx(ref, abs=1e-12)
    assert _auc(np.array([0.5]), np.array([0.5, 0.5])) == 0.5


def test_roc_curve_passthrough_and_table():
    fpr, tpr, thr = roc_curve([0.1, 0.4], [0.35, 0.8])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    rows = rates_table({"RR": wilson(3, 10)})
    assert rows[0]["name"] == "RR" and rows[0]["text"] == "0.30 [0.11, 0.60] (3/10)"


# ---- cluster bootstrap (issue 12: pooled attacks repeat every request, so resample requests, not rows)
def _clustered(G=30, m=4, seed=3):
    """G requests, each under m attacks with perfectly correlated outcomes (all m rows of a request equal)."""
    rng = np.random.default_rng(seed)
    a_c = rng.random(G) < 0.6
    b_c = a_c & (rng.random(G) < 0.5)  # b refuses less on some requests
    return a_c, b_c, np.repeat(a_c, m), np.repeat(b_c, m), np.repeat(np.arange(G), m)


def test_cluster_bootstrap_equals_cluster_level_computation_and_is_wider_than_rows():
    from srilib.metrics import cluster_bootstrap_ci
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
    from srilib.metrics import cluster_bootstrap_ci
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
    from srilib.metrics import cluster_adjusted
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
    from srilib.metrics import _auc, paired_auroc_draws

    rng = np.random.default_rng(3)
    neg, pos = rng.normal(size=12), rng.normal(1.0, size=(3, 7))  # 3 attacks x 7 requests
    a, b, c = paired_auroc_draws([(neg, pos), (neg, pos), (neg, -pos)], n_boot=50, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    r = np.random.default_rng(5)
    ineg, ireq = r.integers(0, 12, (50, 12)), r.integers(0, 7, (50, 7))
    assert a[7] == pytest.approx(_auc(neg[ineg[7]], pos[:, ireq[7]].ravel()))
    with pytest.raises(ValueError, match="same prompts"):
        paired_auroc_draws([(neg, pos), (neg[:5], pos)], n_boot=5)
