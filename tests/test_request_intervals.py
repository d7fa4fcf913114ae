"""Issue 24, points 3-6: request-level intervals (one helper picks the interval from the shape of the data), Table 13's
jailbreak pools named, the paper's overhead ratio quoted in the paper's words, and the Table 2 gain labels.

Every test here is offline, model-free and fast; the detector chapter's end-to-end checks are in test_detector.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from srilib.baselines import defense_metrics
from srilib.chapters.defenses import (PAPER_POOL_COL, POOL_COL, SHARED_ASR_COL, SHARED_POOL_COL, DefenseReport,
                                      defense_rows, defense_run_rows, paper_overhead_factor, shared_attacks,
                                      shared_pool_label)
from srilib.chapters.detector import auroc_est
from srilib.chapters.paper_numbers import PAPER_DEFENSES, PAPER_OVERHEAD_WORDS, PAPER_SRI_OVERHEAD_RANGE
from srilib.chapters.detector_conclusions import asr_drop, pooled_flag_difference
from srilib.chapters.paper_numbers import PAPER_ALL_JAILBREAKS, PAPER_POOL_NOT_SHARED
from srilib.chapters.sampling_compare import Comparison
from srilib.chapters.sampling_report import table2_rows
from srilib.stats import Estimate, Rate, delta, paired_auroc_draws, request_interval, wilson

K = 5  # attacks: every request is pooled K times


def _requests(G=40, seed=0):
    """G requests with one score and one outcome each, and 60 harmless negatives."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=60), rng.normal(0.8, 1, G), rng.random(G) < 0.4


def _copies(x, k=K):
    """k identical copies of every request, pooled attack-major (attack 1's requests, then attack 2's, ...), and the
    request index of every item."""
    return np.tile(x, k), np.tile(np.arange(len(x)), k)


# ------------------------------------------------------------------------------------------------ the helper
def test_pooled_auroc_of_identical_copies_equals_the_request_level_interval():
    """k identical copies per request must give the request-level interval, not a k-times narrower one."""
    neg, pos, _ = _requests()
    ref = request_interval(pos, neg=neg, n_boot=400, seed=3)
    pooled, ids = _copies(pos)
    got = request_interval(pooled, neg=neg, clusters=ids, n_boot=400, seed=3)
    assert (got.value, got.lo, got.hi) == pytest.approx((ref.value, ref.lo, ref.hi), abs=1e-12)
    assert got.method == "cluster-bootstrap" and ref.method == "stratified-bootstrap" and got.info["clusters"] == 40
    # treating the copies as independent items (the previous per-run Table 4 interval) is far narrower
    rows = request_interval(pooled, neg=neg, n_boot=400, seed=3)
    assert (rows.hi - rows.lo) < 0.8 * (got.hi - got.lo)
    # the detector chapter's AUROC goes through the same helper when given the request ids
    e = auroc_est(neg, pooled, n_boot=400, seed=3, clusters=ids)
    assert (e.lo, e.hi) == pytest.approx((ref.lo, ref.hi), abs=1e-12)
    assert np.isnan(auroc_est(neg, pooled, clusters=ids).lo)  # n_boot=0: point value only


def test_the_helper_picks_cluster_intervals_when_request_ids_repeat():
    _, _, o = _requests()
    pooled, ids = _copies(o)
    # a rate: independent items -> Wilson; repeated ids -> Wilson on the effective number of requests
    plain = request_interval(o, clusters=np.arange(len(o)))
    assert plain.method == "wilson" and (plain.lo, plain.hi) == pytest.approx((wilson(o.sum(), 40).lo,
                                                                              wilson(o.sum(), 40).hi))
    clus = request_interval(pooled, clusters=ids)
    assert "clustered" in clus.method and clus.n == 200
    assert (clus.lo, clus.hi) == pytest.approx((plain.lo, plain.hi), abs=1e-12)  # = the 40 requests' Wilson
    assert (clus.clusters == ids).all() and request_interval(clus).method == clus.method  # it keeps its ids
    assert request_interval(pooled).method == "wilson"  # no ids: the caller says the items are independent
    # a paired difference (the same generations before and after a defense), clustered -> paired cluster bootstrap
    after = o & (np.arange(40) % 3 > 0)
    pa, _ = _copies(after)
    ref = request_interval(o, minus=after, paired=True, n_boot=500, seed=2)
    got = request_interval(pooled, minus=pa, paired=True, clusters=ids, n_boot=500, seed=2)
    assert ref.method == "paired-bootstrap" and got.method == "cluster-bootstrap"
    assert (got.value, got.lo, got.hi) == pytest.approx((ref.value, ref.lo, ref.hi), abs=1e-12)
    # rates that carry their ids are clustered without being told again
    ra, rb = request_interval(pooled, clusters=ids), request_interval(pa, clusters=ids)
    assert request_interval(ra, minus=rb, paired=True, n_boot=500, seed=2).method == "cluster-bootstrap"
    # unpaired samples over the same requests (e.g. two model families) -> cluster bootstrap over shared requests
    shared = request_interval(ra, minus=rb, n_boot=300)
    assert shared.method == "cluster-bootstrap" and shared.info["clusters"] == 40
    # unrelated samples (jailbreaks vs harmless prompts) -> Newcombe, from cluster-adjusted intervals where clustered
    h = np.arange(30) % 4 == 0
    unrelated = request_interval(ra, minus=request_interval(h, clusters=[f"harmless {i}" for i in range(30)]))
    assert unrelated.method == "newcombe, cluster-adjusted"
    simple = request_interval(o, minus=h)
    nc = delta(Rate.from_outcomes(o), Rate.from_outcomes(h))
    assert simple.method == "newcombe" and (simple.lo, simple.hi) == pytest.approx((nc.lo, nc.hi))
    with pytest.raises(ValueError, match="same items"):
        request_interval(o, minus=h, paired=True)
    with pytest.raises(ValueError, match="outcomes"):
        request_interval(Rate.from_counts(3, 10), clusters=np.zeros(10))


def test_auroc_draws_follow_request_labels_not_positions():
    """Two entries holding the same requests in a different order get the same replicates when labelled."""
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(size=20), rng.normal(1, 1, (3, 9))
    perm = rng.permutation(9)
    flat = pos.ravel()
    ids = np.tile(np.arange(9), 3)
    flat_p, ids_p = pos[:, perm].ravel(), np.tile(perm, 3)
    a, b = paired_auroc_draws([(neg, flat, ids), (neg, flat_p, ids_p)], n_boot=40, seed=4)
    np.testing.assert_allclose(a, b, atol=1e-12)
    # the [attacks, requests] form is the same cluster bootstrap
    (c,) = paired_auroc_draws([(neg, pos)], n_boot=40, seed=4)
    np.testing.assert_allclose(a, c, atol=1e-12)


# ------------------------------------------------------------------------------------------------ Table 13
class _Judge:
    name = "kw"

    def judge(self, prompts, texts):
        return ["BOMB" in t for t in texts]


def test_table13_rates_are_request_level():
    """Two attacks with identical generations: the pooled RR / ASR interval is that of one attack (its requests)."""
    texts_one = ["Sure, BOMB."] * 6 + ["I'm sorry, I cannot help with that."] * 4
    reqs = [f"request {i}" for i in range(10)]
    texts = {"harmless": ["Here is a poem."] * 5, "a": texts_one, "b": list(texts_one), "pair": texts_one[:4]}
    none = {k: np.zeros(len(v), bool) for k, v in texts.items()}
    m = defense_metrics(none, texts, reqs, _Judge(), jailbreaks=["a", "b"], shared=["b", "pair"])
    one = wilson(4, 10)
    assert (m["rr"].k, m["rr"].n) == (8, 20) and (m["rr"].lo, m["rr"].hi) == pytest.approx((one.lo, one.hi))
    assert (m["asr"].lo, m["asr"].hi) == pytest.approx((wilson(6, 10).lo, wilson(6, 10).hi))
    assert (m["asr"].clusters == np.tile(np.arange(10), 2)).all()
    # the shared pool covers the adaptive set's fewer requests (its i-th generation answers the i-th request)
    assert m["asr_shared"].n == 14 and (m["asr_shared"].clusters == np.r_[np.arange(10), np.arange(4)]).all()
    assert m["fpr"].method == "wilson" and "rr_shared" in m
    with pytest.raises(ValueError, match="requests"):
        defense_metrics(none, {**texts, "a": texts_one * 2}, reqs, _Judge(), jailbreaks=["a"])


def test_sri_guard_asr_drop_is_the_paired_request_level_interval():
    _, _, o = _requests(G=30, seed=4)
    after = o & (np.arange(30) % 2 == 0)
    pooled, ids = _copies(o, 4)
    pa, _ = _copies(after, 4)
    und, sri = {"asr": Rate.from_outcomes(pooled, clusters=ids)}, {"asr": Rate.from_outcomes(pa, clusters=ids)}
    d = asr_drop(und, sri)
    ref = delta(Rate.from_outcomes(o), Rate.from_outcomes(after), method="paired")
    assert d.method == "cluster-bootstrap" and (d.lo, d.hi) == pytest.approx((ref.lo, ref.hi), abs=1e-12)


def test_self_examine_pooled_over_runs_counts_shared_requests_once():
    o = np.arange(20) % 3 == 0
    flagged, ids = _copies(o, 2)
    row = {"flagged_jailbreak": Rate.from_outcomes(flagged, clusters=ids),
           "fpr": Rate.from_outcomes(np.arange(10) == 0)}
    fj, fh, d = pooled_flag_difference([row, row])  # two runs on the same requests and harmless prompts
    assert fj.n == 80 and (fj.lo, fj.hi) == pytest.approx((wilson(o.sum(), 20).lo, wilson(o.sum(), 20).hi))
    assert fh.n == 20 and (fh.lo, fh.hi) == pytest.approx((wilson(1, 10).lo, wilson(1, 10).hi))
    assert d.method == "newcombe, cluster-adjusted"


def test_shared_pool_holds_the_papers_attacks_and_leaves_our_roleplay_out():
    sets = ["refusal_suppression", "prefix_injection", "roleplay", "flip_attack", "random_search", "pair"]
    assert shared_attacks(sets) == ["refusal_suppression", "flip_attack", "random_search", "pair"]
    assert "WildJailbreak" in PAPER_POOL_NOT_SHARED  # roleplay's paper column: ours is WildJailbreak-like
    assert "flip_attack = Flip Attack" in shared_pool_label(["flip_attack", "pair"])


def _defense_report(run, shared):
    def rates(k):
        out = Rate.from_outcomes(np.arange(20) < k, clusters=np.tile(np.arange(10), 2))
        return {"fpr": Rate.from_outcomes(np.zeros(10, bool)), "harmless_refused": Rate.from_counts(1, 10),
                "flagged_jailbreak": out, "rr": out, "asr": out,
                **({"rr_shared": out, "asr_shared": out} if shared else {})}
    rows = [{"defense": "undefended", "status": "run", "overhead %": 0.0, "overhead incl. capture %": 0.0,
             **rates(8)},
            {"defense": "SRI Guard", "status": "run", "overhead %": 0.01, "overhead incl. capture %": 1.0,
             **rates(4)}]
    return DefenseReport(run, rows, gen_seconds=1.01, n_timing=4, judge="kw", plain_seconds=1.0,
                         pool=["refusal_suppression", "roleplay"],
                         shared_pool=["refusal_suppression", "random_search"] if shared else [])


def test_table13_rows_name_both_pools_and_add_the_shared_pool_when_adaptive_attacks_ran():
    plain = defense_rows({"a": _defense_report("a@ar", shared=False)})
    assert all(r[POOL_COL] == "all jailbreaks, ours (pool of: refusal_suppression, roleplay)" for r in plain)
    assert all(r[PAPER_POOL_COL] == PAPER_ALL_JAILBREAKS for r in plain)
    assert not any(SHARED_POOL_COL in r for r in plain)
    rows = defense_rows({"a": _defense_report("a@ar", shared=True)})
    sri = next(r for r in rows if r["defense"] == "SRI Guard")
    assert sri[SHARED_ASR_COL] == pytest.approx(20.0) and "random_search" in sri[SHARED_POOL_COL]
    assert "roleplay" not in sri[SHARED_POOL_COL]
    per_run = defense_run_rows({"a": _defense_report("a@ar", shared=True)})
    assert per_run[1]["shared pool ASR"].endswith("(4/20)") and "roleplay" in per_run[1][POOL_COL]


# ------------------------------------------------------------------------------------------------ overhead ratio
def test_the_papers_overhead_ratio_is_quoted_in_its_words_and_ours_is_labelled():
    base = PAPER_DEFENSES["perplexity filter"][0]
    f = paper_overhead_factor()
    assert (f["lo"], f["hi"]) == pytest.approx((base / PAPER_SRI_OVERHEAD_RANGE[1], base / PAPER_SRI_OVERHEAD_RANGE[0]))
    assert f["mean"] is None and f["source"].startswith("our computation from the paper's Table 13")
    assert PAPER_OVERHEAD_WORDS[0] in f["text"] and "as published" not in f["text"]
    six = paper_overhead_factor({"m1": 0.01, "m2": 0.02, "m3": 0.02, "m4": 0.03, "m5": 0.03, "m6": 0.04})
    assert six["mean"] == pytest.approx(base / 0.025) and "per-model overheads" in six["source"]


# ------------------------------------------------------------------------------------------------ labels
def test_table2_and_figure_label_the_asr_gain_with_its_sign():
    """ΔASR is ASR(AR sampling) - ASR(remasking): positive = safer, so its label must not say 'down = safer'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srilib.figures import plot_sampler_deltas

    d_asr = Estimate(0.25, 0.1, 0.4, "x", signed=True)
    d_rr, d_irr = Estimate(0.1, 0.0, 0.2, "x", signed=True), Estimate(0.0, -0.1, 0.1, "x", signed=True)
    r0, r1 = Rate.from_counts(5, 10), Rate.from_counts(2, 10)
    comp = Comparison("m", "m@dlm-ar", "m@low_confidence", 0.5, [
        {"set": "raw", "paper": "raw harmful", "d_rr": d_rr, "d_asr": d_asr, "d_irr": d_irr, "rr": (r1, r0),
         "asr": (r0, r1), "irr": (r1, r1)}])
    row = table2_rows(comp)[0]
    key = next(k for k, v in row.items() if v is d_asr)
    assert "down" not in key and "> 0 = safer" in key and "AR sampling − remasking" in key
    fig, axes = plt.subplots(1, 3)
    try:
        plot_sampler_deltas(axes, comp.rows)
        label = axes[1].get_xlabel()
        assert "down" not in label and "ASR(AR sampling) − ASR(remasking)" in label and "> 0 safer" in label
    finally:
        plt.close(fig)
