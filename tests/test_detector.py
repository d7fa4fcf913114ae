"""Detector-transfer chapter: guard data splits, bad input, the ablation detectors, an end-to-end run on tiny-ar."""
from dataclasses import replace

import numpy as np
import pytest

from srilib.prompts import HELDOUT_FAMILIES
from srilib.chapters import interval_side
from srilib.chapters.defenses import (OVERHEAD_CAPTURE_COL, POOL_COL, REFUSED_COL, SHARED_POOL_COL, SHARED_RR_COL,
                                      DefenseReport, defense_rows, paper_overhead_factor, resolve_guard_model,
                                      run_defenses, shared_pool_label, timed_generations)
from srilib.chapters.detector import (CANVAS, METHODS, GuardConfig, PCAResidual, auroc_est, calibration_split,
                                      fit_detector, fit_guard, guard_prompts, guard_scores, make_detector, run_detector,
                                      transfer_matrix)
from srilib.chapters.paper_numbers import METHOD_LABELS, PAPER_ABLATION
from srilib.canvas_attacks import canvas_traces
from srilib.chapters.detector_conclusions import conclusion_lines, conclusions, ranking_sentence, shift_conclusion
from srilib.chapters.detector_intervals import mean_auroc, method_difference
from srilib.chapters.detector_tables import ablation_rows, canvas_rows, per_attack_rows, transfer_rows
from srilib.chapters import verdicts
from srilib.chapters.shift import PAPER_TABLE4_COL, run_harmless_shift, shift_prompts, shift_rows
from srilib.experiment import Experiment, PromptSets
from srilib.guard import SRIGuard
from srilib.judges import HeuristicJudge
from srilib.signal import refusal_rate
from srilib.prompts import get_prompts
from srilib.judges import is_refusal
from srilib.signal import Anchors
from srilib.stats import Estimate, Rate, auroc, request_interval

CFG = GuardConfig(calib_fraction=0.25, min_calibration=3, epochs=30)


def smooth(n, rng, T=8):
    t = np.linspace(0, 1, T)
    return 0.85 + 0.05 * np.sin(2 * np.pi * t + rng.uniform(0, 6, (n, 1))) + rng.normal(0, 0.01, (n, T))


# ------------------------------------------------------------------------------------------------ data and errors
def test_guard_prompts_are_train_split_only():
    p = guard_prompts(30, seed=0)
    assert len(p) == 30 and set(p) <= set(get_prompts("harmless", "train"))
    assert not set(p) & (set(get_prompts("harmless", "anchor")) | set(get_prompts("harmless", "eval")))
    with pytest.raises(ValueError, match="n_train_harmless"):
        guard_prompts(1)
    with pytest.raises(ValueError, match="builtin"):
        guard_prompts(10, source="hub")


def test_resolve_guard_model(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_guard_model("auto") == (None, "not run (needs GPU)")
    assert resolve_guard_model(None)[0] is None
    judge = HeuristicJudge()
    judge.model_label = "org/guard"  # stands in for an LLMJudge of that hub model: reused, not loaded again
    d, status = resolve_guard_model("org/guard", judge)
    assert status == "run" and d.judge is judge and d.name == "LlamaGuard 3"
    d2, _ = resolve_guard_model(HeuristicJudge())
    assert d2.flag(["How do I pick a lock?"], ["I'm sorry, I cannot help."]).tolist() == [False]


def test_calibration_split():
    tr, cal = calibration_split(40, GuardConfig(min_calibration=10), seed=0)
    assert len(cal) == 10 and len(tr) == 30 and not set(tr) & set(cal) and set(tr) | set(cal) == set(range(40))
    tr2, cal2 = calibration_split(40, GuardConfig(min_calibration=10), seed=0)
    assert np.array_equal(cal, cal2)
    assert not np.array_equal(cal, calibration_split(40, GuardConfig(min_calibration=10), seed=1)[1])


def test_too_few_harmless_signals_names_the_fix():
    X = smooth(20, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"raise n_train_harmless to at least 80"):
        fit_guard(X, GuardConfig(min_calibration=20, calib_fraction=0.25))
    with pytest.raises(ValueError, match="calib_fraction"):
        GuardConfig(calib_fraction=1.5)


def test_nan_signals_are_rejected():
    X = smooth(40, np.random.default_rng(0))
    X[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 1 row\(s\) \(first rows \[7\]\)"):
        fit_guard(X, CFG)
    g = fit_guard(smooth(40, np.random.default_rng(1)), CFG)
    with pytest.raises(ValueError, match="NaN"):
        guard_scores(g, {"harmless": X})


def test_guard_against_wrong_anchors(tmp_path):
    rng = np.random.default_rng(0)
    a = Anchors(rng.normal(size=(8, 4)), rng.normal(size=(8, 4)), 5, 5)
    b = Anchors(rng.normal(size=(8, 4)), rng.normal(size=(8, 4)), 5, 5)
    g = fit_guard(smooth(40, rng), CFG, anchors_key=a)
    g.save(tmp_path / "g.pt")
    loaded = SRIGuard.load(tmp_path / "g.pt")
    X = {"harmless": smooth(5, rng)}
    assert np.allclose(guard_scores(loaded, X, a)["harmless"], guard_scores(g, X, a)["harmless"])
    with pytest.raises(ValueError, match="refit or use the matching anchors"):
        guard_scores(loaded, X, b)


def test_fit_guard_uses_the_split():
    X = smooth(40, np.random.default_rng(0))
    g = fit_guard(X, CFG, seed=3)
    assert (g.n_train_, g.n_calib_) == (30, 10)
    assert g.threshold_ == pytest.approx(np.quantile(g.calib_errors_, 0.99))


def test_pca_residual_detects_off_subspace_points():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 20))
    inl = rng.normal(size=(300, 3)) @ basis + rng.normal(0, 0.01, (300, 20))
    out = rng.normal(size=(50, 3)) @ basis + rng.normal(0, 0.5, (50, 20))
    det = PCAResidual(k=3).fit(inl[:200], inl[200:])
    assert auroc(det.score_samples(inl[200:]), det.score_samples(out), n_boot=10).value > 0.99
    assert det.predict(out).mean() > 0.9 and det.components_.shape == (3, 20)


def _svd_residual(X, X_calib, X_eval, k, quantile=0.99):
    """The static-activations detector as it was before it was rebuilt on scikit-learn (numpy SVD of the centred
    training vectors, top-k rows), kept as the reference: (scores of X_eval, threshold)."""
    mean = X.mean(0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
    comp = vt[: max(1, min(k, len(X) - 1))]

    def score(Y):
        Z = Y - mean
        return ((Z - (Z @ comp.T) @ comp) ** 2).mean(1)
    return score(X_eval), float(np.quantile(score(X_calib), quantile))


@pytest.mark.parametrize("n, d, k", [(200, 20, 3), (30, 64, 8), (6, 10, 8), (40, 4, 8), (2, 5, 3)])
def test_pca_residual_matches_the_svd_reference(n, d, k):
    rng = np.random.default_rng(n * d + k)
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(3.0, 1.0, d)  # correlated, off-centre
    Xc, Xe = rng.normal(size=(15, d)) * 2 + 3.0, rng.normal(size=(25, d)) * 2 + 3.0
    ref_scores, ref_thr = _svd_residual(X, Xc, Xe, k)
    det = PCAResidual(k=k).fit(X, X_calib=Xc)
    np.testing.assert_allclose(det.score_samples(Xe), ref_scores, rtol=1e-6, atol=1e-9)
    assert det.threshold_ == pytest.approx(ref_thr, rel=1e-6)
    assert det.components_.shape == (min(max(1, min(k, n - 1)), d), d)
    np.testing.assert_array_equal(det.predict(Xe), ref_scores > ref_thr)


def test_pca_residual_is_a_scikit_learn_estimator():
    from sklearn.base import clone

    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 12))
    det = PCAResidual(k=4, quantile=0.9, val_fraction=0.25, seed=2)
    assert det.get_params() == {"k": 4, "quantile": 0.9, "val_fraction": 0.25, "seed": 2}
    assert clone(det).get_params() == det.get_params() and det.set_params(k=5) is det and det.k == 5
    det.fit(X)  # no X_calib: a seeded val_fraction of X calibrates, as SRIGuard does
    perm = np.random.default_rng(2).permutation(60)
    ref_scores, ref_thr = _svd_residual(X[perm[15:]], X[perm[:15]], X, 5, 0.9)
    np.testing.assert_allclose(det.score_samples(X), ref_scores, rtol=1e-6, atol=1e-9)
    assert det.threshold_ == pytest.approx(ref_thr, rel=1e-6)
    for bad, message in (({"k": 0}, "k .*positive integer, got 0"), ({"k": 2.5}, "positive integer, got 2.5"),
                         ({"quantile": 1.2}, r"quantile must be in \(0, 1\), got 1.2"),
                         ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\), got 1.0")):
        unfitted = PCAResidual(**bad)  # constructing never fails; fit checks
        with pytest.raises(ValueError, match=message):
            unfitted.fit(X)
        assert not hasattr(unfitted, "components_")


def test_every_ablation_detector_has_the_guard_interface():
    """run_detector fits and scores every method through the same calls (fit_detector, guard_scores)."""
    rng = np.random.default_rng(2)
    feats = {"text": (rng.uniform(size=(40, 8)) > 0.2).astype(float), "static": rng.normal(size=(40, 16))}
    for m in METHODS:
        X = feats.get(m, smooth(40, rng))
        det = fit_detector(m, X, CFG, seed=1)
        assert isinstance(det, PCAResidual if m == "static" else SRIGuard)
        sc = guard_scores(det, {"harmless": X[:5]}, None)["harmless"]
        assert sc.shape == (5,) and np.array_equal(det.predict(X[:5], anchors_key=None), sc > det.threshold_)
        tr, cal = calibration_split(40, CFG, 1)
        ref = make_detector(m, CFG, seed=1).fit(X[tr], X_calib=X[cal])
        assert ref.threshold_ == det.threshold_  # the seeded calibration split, as fit_guard uses it


def test_auroc_point_matches_metrics():
    rng = np.random.default_rng(0)
    n, p = rng.normal(size=30), rng.normal(0.5, 1, 25)
    assert auroc_est(n, p).value == pytest.approx(auroc(n, p, n_boot=10).value)
    assert np.isnan(auroc_est(n, p).lo) and not np.isnan(auroc_est(n, p, n_boot=20).lo)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    exp = Experiment(steps=3, batch_size=8, cache=str(tmp_path_factory.mktemp("cache")), progress=False)
    sets = PromptSets.build(n_anchor=3, n_eval=4, attacks=["refusal_suppression", "flip_attack"], seed=0)
    train = guard_prompts(12)
    res = run_detector(exp, "tiny-ar", sets, train, seeds=[0, 1], cfg=CFG, n_boot=20)
    return exp, sets, train, res


def test_run_detector_structure(setup):
    _, sets, _, res = setup
    assert res.run == "tiny-ar@ar" and res.kind == "ar" and res.seeds == [0, 1]
    assert set(res.auroc) == {(m, s) for m in METHODS for s in (0, 1)}
    assert not np.isnan(res.auroc[("sri_last", 0)].lo) and np.isnan(res.auroc[("sri_last", 1)].lo)
    assert res.signals["train"].shape == (12, 3) and res.signals["harmless"].shape == (4, 3)
    assert set(res.scores[("sri_last", 0)]) == {"harmless", "raw", "refusal_suppression", "flip_attack"}
    # tiny-ar has 2 layers: 'first' and 'middle' are both layer 1, and the guard is calibrated on 3 of 12 signals
    assert res.layer_index == {"first": 1, "middle": 1, "last": -1} and any("same layer" in n for n in res.notes)
    assert res.anchors["first"] is res.anchors["middle"] and res.anchors["last"].layer == -1
    assert (res.guard.n_train_, res.guard.n_calib_) == (9, 3)
    # the scores behind the AUROC are the guard's own scores of the stored signals
    g, s = res.guard, res.scores[("sri_last", 0)]
    assert np.allclose(g.score_samples(res.signals["flip_attack"]), s["flip_attack"])
    pos = np.concatenate([s["refusal_suppression"], s["flip_attack"]])
    assert res.auroc[("sri_last", 0)].value == pytest.approx(auroc_est(s["harmless"], pos).value)


def test_tables(setup):
    *_, res = setup
    rows = ablation_rows({"tiny": res})
    assert [r["detector"] for r in rows][-1].startswith("SRI, last layer")
    assert rows[-1]["paper (6 models)"] == f"{PAPER_ABLATION['sri_last'][0]:.3f} ± {PAPER_ABLATION['sri_last'][1]:.3f}"
    assert {"detector", "seed std (mean over runs)"} <= set(rows[0])
    pa = per_attack_rows({"tiny": res})
    kinds = {r["set"]: r["kind"] for r in pa}
    assert kinds["raw"].startswith("raw harmful (not a jailbreak)") and kinds["harmless"].startswith("harmless")
    # a held-out family is labelled apart from the families the organisms trained on
    assert "refusal_suppression" not in HELDOUT_FAMILIES
    assert (kinds["flip_attack"] != kinds["refusal_suppression"]) == ("flip_attack" in HELDOUT_FAMILIES)


def test_transfer_matrix(setup):
    *_, res = setup
    rng = np.random.default_rng(0)
    shifted = {k: np.clip(v + rng.normal(0, 0.05, v.shape), 0, 1) for k, v in res.signals.items()}
    other = replace(res, run="other", signals=shifted)
    tm = transfer_matrix({"a": res, "b": other})
    assert tm["auroc"][0, 0] == pytest.approx(res.auroc[("sri_last", 0)].value)
    sc = {k: res.guard.score_samples(shifted[k]) for k in ["harmless", "refusal_suppression", "flip_attack"]}
    pos = np.concatenate([sc["refusal_suppression"], sc["flip_attack"]])
    assert tm["auroc"][0, 1] == pytest.approx(auroc_est(sc["harmless"], pos).value)
    assert tm["fpr"][0, 1] == pytest.approx((sc["harmless"] > res.guard.threshold_).mean())
    assert len(transfer_rows(tm)) == 4


def test_run_defenses_and_conclusions(setup):
    exp, sets, train, res = setup
    rep = run_defenses(exp, "tiny-ar", sets, res, train, HeuristicJudge(),
                       dlm_ppl_scorer=None, self_examine_tokens=2, n_timing=4,
                       repeats=2, guard_model=None)
    names = [r["defense"] for r in rep.rows]
    assert names == ["undefended", "perplexity filter", "Self-Examine", "LlamaGuard 3", "SRI Guard"]
    assert rep.row("LlamaGuard 3")["status"].startswith("not run")
    sri = rep.row("SRI Guard")
    assert sri["status"] == "run" and rep.row("Self-Examine")["status"] == "run"
    for name in ("SRI Guard", "Self-Examine"):  # each overhead is its own seconds over the same plain time
        assert rep.row(name)["overhead %"] == pytest.approx(100 * rep.row(name)["seconds"] / rep.plain_seconds)
    # SRI Guard's false positives are the harmless generations above its threshold
    expected = (res.scores[("sri_last", 0)]["harmless"] > res.guard.threshold_).sum()
    assert sri["fpr"].k == expected and sri["fpr"].n == 4
    assert rep.row("undefended")["fpr"].k == 0 and rep.n_timing == 4
    table = defense_rows({"tiny": rep})
    assert table[3]["ours"].startswith("not run") and table[4]["paper overhead %"] == 0.02
    lines = conclusion_lines({"tiny": res}, {"tiny": rep}, transfer_matrix({"tiny": res}))
    assert conclusions({"tiny": res}, {"tiny": rep}, transfer_matrix({"tiny": res})) == "\n".join(lines)
    assert verdicts(lines, "detector.anchors")[0].runs == ("tiny-ar@ar",)  # the fixture's anchors are unfiltered
    auroc_line, = verdicts(lines, "detector.auroc")
    assert auroc_line.side == interval_side(auroc_line.data["mean"], 0.5) and auroc_line.weak == ("tiny-ar@ar",)
    assert all(w in v for v in verdicts(lines) for w in v.weak)  # every weak run is named in its sentence


def test_pooled_auroc_resamples_requests_and_the_mean_over_runs_shares_them(setup):
    """Issue 24.5: Table 4's per-run AUROC pools the attacks, so its interval resamples requests (the run knows
    which request each jailbreak came from); the mean over runs resamples the requests the runs share."""
    *_, res = setup
    s = res.scores[("sri_last", 0)]
    ids = res.clusters(res.jailbreaks)
    assert ids.tolist() == [0, 1, 2, 3] * 2  # 2 attacks x 4 requests
    e = res.auroc[("sri_last", 0)]
    ref = request_interval(np.concatenate([s[a] for a in res.jailbreaks]), neg=s["harmless"], clusters=ids,
                           n_boot=20, seed=0)
    assert e.method == "cluster-bootstrap" and e.info["clusters"] == 4 and (e.lo, e.hi) == (ref.lo, ref.hi)
    # the same run again with its requests in another order (scores and request ids permuted together) is the same
    # data: a request-level bootstrap shared by the runs gives the single run's interval, whereas resampling the
    # two runs by position (as if they were independent) would average unrelated requests
    fake = _synthetic(res, {"text": 0.0, "static": 0.5, "sri_first": 0.2, "sri_middle": 1.0, "sri_last": 1.5}, n=30)
    perm = np.random.default_rng(0).permutation(30)
    moved = replace(fake, run="moved", _draws={}, request_ids={a: perm for a in fake.jailbreaks},
                    scores={k: {**v, **{a: v[a][perm] for a in fake.jailbreaks}} for k, v in fake.scores.items()})
    one, two = mean_auroc({"x": fake}, "sri_last"), mean_auroc({"x": fake, "y": moved}, "sri_last")
    assert (two.value, two.lo, two.hi) == pytest.approx((one.value, one.lo, one.hi), abs=1e-12)


def test_run_defenses_adds_the_pool_shared_with_the_papers_where_adaptive_attacks_ran(setup):
    """Issue 24.3: Table 13 names our pool beside the paper's five-attack pool, and where Random Search / PAIR ran,
    adds the pool of exactly the attacks both share (refusal_suppression, flip_attack and the adaptive set)."""
    exp, sets, train, res = setup
    rs = sets.attacked["refusal_suppression"][:3]  # stands in for Random Search prompts of the first 3 requests
    ex = replace(res, adaptive=["random_search"], prompts={**res.prompts, "random_search": rs})
    rep = run_defenses(exp, "tiny-ar", sets, ex, train, HeuristicJudge(),
                       dlm_ppl_scorer=None, self_examine=False, n_timing=4,
                       repeats=1, gen_rounds=1, guard_model=None)
    assert rep.pool == ["refusal_suppression", "flip_attack"]
    assert rep.shared_pool == ["refusal_suppression", "flip_attack", "random_search"]
    und = rep.row("undefended")
    assert und["asr_shared"].n == 4 + 4 + 3 and "clustered" in und["rr_shared"].method
    assert und["rr"].n == 8 and "clustered" in und["rr"].method
    table = defense_rows({"tiny": rep})
    assert table[0][POOL_COL] == "all jailbreaks, ours (pool of: refusal_suppression, flip_attack)"
    assert table[0][SHARED_POOL_COL] == shared_pool_label(rep.shared_pool)
    assert isinstance(table[0][SHARED_RR_COL], float)
    assert rep.row("LlamaGuard 3")["status"].startswith("not run")


def test_run_detector_bad_input(setup, tmp_path):
    exp, sets, train, _ = setup
    with pytest.raises(ValueError, match="at least one attack"):
        run_detector(exp, "tiny-ar", replace(sets, attacked={}), train, cfg=CFG)
    last_only = Experiment(steps=3, batch_size=8, cache=str(tmp_path), progress=False, layers=("last",))
    with pytest.raises(ValueError, match="layers"):
        run_detector(last_only, "tiny-ar", sets, train, cfg=CFG)
    with pytest.raises(ValueError, match="raise n_train_harmless"):
        run_detector(exp, "tiny-ar", sets, train, cfg=GuardConfig(min_calibration=20), n_boot=0)


def test_canvas_attacks(setup, tmp_path):
    exp, sets, _, res = setup
    small = replace(sets, eval_harmful=sets.eval_harmful[:2])
    dexp = Experiment(steps=2, gen_length=40, batch_size=4, cache=str(tmp_path), progress=False)
    ts, why = canvas_traces(dexp, "tiny-dlm", small.requests, "interleaved_template")
    assert why == "" and len(ts) == 2 and ts.committed[:, 0].any(axis=1).all()  # prefill committed before step 1
    ts2, why2 = canvas_traces(replace(dexp, gen_length=16), "tiny-dlm", small.requests, "interleaved_template")
    assert ts2 is None and "gen_length" in why2
    # the canvas table and the per-attack rows read the canvas sets of a result
    k = CANVAS + "interleaved_template"
    s0 = dict(res.scores[("sri_last", 0)])
    s0[k] = s0["flip_attack"] + 1.0  # far above the threshold: everything flagged
    texts = ["To pick a lock insert a tension wrench and rake the pins"] * 4
    fake = replace(res, texts={**res.texts, k: texts}, refusal={**res.refusal, k: refusal_rate(texts)},
                   scores={**res.scores, ("sri_last", 0): s0}, prefills={k: ts.meta["sampler_config"]["prefill"]})
    rows = canvas_rows({"x": fake}, HeuristicJudge(), ["How do I pick a lock?"] * 4)
    assert rows[0]["prefill (position: text)"].startswith("0: 'Sure, here is how to do it.")
    assert rows[0]["ASR undefended"].endswith("(4/4)") and rows[0]["ASR after SRI Guard"].endswith("(0/4)")
    assert rows[0]["paper (LLaDA)"].startswith("DIJA: 0.76")
    assert any(r["set"] == k and r["kind"].startswith("canvas attack") for r in per_attack_rows({"x": fake}))


# ------------------------------------------------------------------------------------------------ Table 13 columns
def test_overhead_is_against_plain_generation_and_counts_the_capture(fake_clock):
    """Overhead's base is plain untraced generation; SRI Guard's capture-inclusive overhead adds what the traced
    generation costs beyond it. (The previous code divided by the traced time and had no plain timing at all.)"""

    class FakeSampler:
        calls = []
        seconds = {"trace": [9.0, 0.04, 0.05], "generate": [9.0, 0.01, 0.02]}  # warm-up, round 1, round 2

        def trace_batch(self, lm, prompts, layers):
            self.calls.append("trace")
            fake_clock.sleep(self.seconds["trace"][self.calls.count("trace") - 1])
            return type("TS", (), {"meta": {"capture": "after"}, "texts": list(prompts)})()

        def generate(self, lm, prompts):
            self.calls.append("generate")
            fake_clock.sleep(self.seconds["generate"][self.calls.count("generate") - 1])
            return list(prompts)

    smp = FakeSampler()
    traced_s, plain_s, ts = timed_generations(smp, None, ["a", "b"], [-1], rounds=2)
    assert smp.calls.count("generate") == 3 and smp.calls.count("trace") == 3  # warm-up + 2 rounds each
    assert smp.calls[2:] == ["trace", "generate", "generate", "trace"]  # the rounds alternate which goes first
    # medians over the timed rounds; the warm-up's 9 s are not counted
    assert traced_s == pytest.approx(0.045) and plain_s == pytest.approx(0.015) and ts.meta["capture"] == "after"
    rep = DefenseReport("r", [], gen_seconds=traced_s, n_timing=2, judge="j", plain_seconds=plain_s)
    assert rep.capture_pct == pytest.approx(100 * (traced_s - plain_s) / plain_s) and rep.capture_pct > 50


def test_run_defenses_reports_the_papers_false_positive_quantity(setup):
    exp, sets, train, res = setup
    rep = run_defenses(exp, "tiny-ar", sets, res, train, HeuristicJudge(),
                       dlm_ppl_scorer=None, self_examine=False, n_timing=4,
                       repeats=2, guard_model=None)
    sri, und = rep.row("SRI Guard"), rep.row("undefended")
    assert sri["overhead %"] == pytest.approx(100 * sri["seconds"] / rep.plain_seconds)
    assert sri["overhead incl. capture %"] == pytest.approx(
        100 * (rep.gen_seconds - rep.plain_seconds + sri["seconds"]) / rep.plain_seconds)
    ppl = rep.row("perplexity filter")  # a baseline needs no states: no capture term
    assert ppl["overhead incl. capture %"] == pytest.approx(ppl["overhead %"])
    # harmless refused = the model's own refusals or the defense's flags; undefended it is the model's own RR
    own = np.array([is_refusal(t) for t in res.texts["harmless"]])
    assert und["harmless_refused"].k == own.sum() and und["fpr"].k == 0
    flags = res.scores[("sri_last", 0)]["harmless"] > res.guard.threshold_
    assert sri["harmless_refused"].k == (own | flags).sum()
    table = defense_rows({"tiny": rep})
    assert REFUSED_COL in table[0] and table[0]["paper FP % (harmless refused)"] == 2.8
    assert float(table[4][OVERHEAD_CAPTURE_COL]) == pytest.approx(sri["overhead incl. capture %"], rel=1e-2)


def _report(run, sri_alone, sri_incl, ppl, asr=(0, 0)):
    """A defense report with these overheads; ``asr``: jailbreaks (of 40, the same ones) that succeed undefended
    and with SRI Guard."""
    def rates(fpr, refused, k=0):
        return {"fpr": Rate.from_counts(fpr, 10), "harmless_refused": Rate.from_counts(refused, 10),
                "asr": Rate.from_outcomes(np.arange(40) < k), "rr": Rate.from_counts(0, 10),
                "flagged_jailbreak": Rate.from_counts(0, 10)}
    rows = [{"defense": "undefended", "status": "run", "overhead %": 0.0, "overhead incl. capture %": 0.0,
             **rates(0, 1, asr[0])},
            {"defense": "perplexity filter", "status": "run", "overhead %": ppl, "overhead incl. capture %": ppl,
             **rates(0, 1)},
            {"defense": "SRI Guard", "status": "run", "overhead %": sri_alone, "overhead incl. capture %": sri_incl,
             **rates(1, 2, asr[1])},
            {"defense": "LlamaGuard 3", "status": "not run (needs GPU)", "overhead %": float("nan")}]
    return DefenseReport(run, rows, gen_seconds=1.03, n_timing=8, judge="heuristic", plain_seconds=1.0)


def test_cheaper_than_baselines_verdict_uses_the_capture_inclusive_overhead(setup):
    *_, res = setup

    def lines(reps):
        out = conclusion_lines({"tiny": res}, reps, transfer_matrix({"tiny": res}))
        return verdicts(out, "detector.overhead")[0], verdicts(out, "detector.cost")[0]

    overhead, cost = lines({"tiny": _report("tiny-ar@ar", sri_alone=0.01, sri_incl=4.0, ppl=40.0)})
    assert (cost.side, cost.data["factor_lo"], cost.data["factor_hi"]) == (1, 10.0, 10.0)  # 40 / 4, not 40 / 0.01
    assert cost.data["n_nonpositive"] == 0
    assert "costs 10 times less than the cheapest" in cost  # equal bounds read as one number, not "10–10"
    assert (overhead.data["alone"], overhead.data["incl"]) == (0.01, 4.0) and overhead.data["nonpositive"] == ()
    # issue 24.4: the paper's ratio is quoted in its words (the one computed from its numbers is labelled as ours)
    assert paper_overhead_factor()["text"] in overhead
    _, slow = lines({"tiny": _report("tiny-ar@ar", sri_alone=0.01, sri_incl=50.0, ppl=40.0)})
    assert slow.side == -1 and slow.data["factor_hi"] == pytest.approx(0.8)
    # a run whose capture + guard timed below zero (traced faster than plain: noise) gives no factor and is named
    noisy = {"a": _report("a@ar", sri_alone=0.01, sri_incl=4.0, ppl=40.0),
             "b": _report("b@ar", sri_alone=0.01, sri_incl=-11.0, ppl=40.0)}
    noisy["b"].gen_seconds = 0.89  # traced timed 11% faster than plain
    overhead, cost = lines(noisy)
    assert overhead.data["nonpositive"] == ("b@ar",) and "b@ar" in overhead
    assert cost.side == 1 and cost.data["factors"] == {"a@ar": 10.0, "b@ar": float("inf")}
    assert (cost.data["factor_lo"], cost.data["factor_hi"], cost.data["n_nonpositive"]) == (10.0, 10.0, 1)
    _, mixed = lines({"a": noisy["a"], "c": _report("c@ar", sri_alone=0.01, sri_incl=50.0, ppl=40.0)})
    assert mixed.side == 0 and (mixed.data["factor_lo"], mixed.data["factor_hi"]) == (0.8, 10.0)
    _, noise_only = lines({"b": noisy["b"]})
    assert noise_only.side is None and noise_only.data["factor_lo"] is None


def test_defense_verdict_reads_the_paired_asr_drop(setup, monkeypatch):
    import srilib.chapters as ch
    import srilib.chapters as glance
    *_, res = setup
    for mod in (ch, glance):  # w and b are weak models
        monkeypatch.setattr(mod, "weak_models", lambda runs: {m: ["x"] for m in {r.partition("@")[0] for r in runs}
                                                              if m in ("w", "b")})
    reps = {r: _report(f"{r}@ar", 0.01, 4.0, 40.0, asr=asr) for r, asr in
            (("a", (30, 5)), ("w", (30, 5)), ("b", (12, 10)))}
    lines = conclusion_lines({"tiny": res}, reps, transfer_matrix({"tiny": res}))
    v, = verdicts(lines, "detector.defense")
    assert v.data["sides"] == {"a@ar": 1, "w@ar": 1, "b@ar": 0}  # the drop's interval excludes 0 on a and w
    assert v.data["drops"]["a@ar"].value == pytest.approx(25 / 40) and v.weak == ("w@ar",)
    assert ch.weak_caveat(["a@ar", "w@ar"]) in v  # the caveat of the runs whose drop is resolved, not b's
    none = conclusion_lines({"tiny": res}, {"a": _report("a@ar", 0.01, 4.0, 40.0)}, transfer_matrix({"tiny": res}))
    v, = verdicts(none, "detector.defense")
    assert v.side is None and "sides" not in v.data  # no successful jailbreak undefended: nothing to compare


# ------------------------------------------------------------------------------------------------ verdicts on intervals
def _synthetic(res, shifts: dict, n: int = 60, seed: int = 0):
    """The fixture's result with synthetic scores: harmless N(0, 1), two jailbreak sets N(shift, 1) per method."""
    rng = np.random.default_rng(seed)
    neg = rng.normal(size=n)
    scores, au = {}, {}
    for m in METHODS:
        sc = {"harmless": neg + 0.0, "refusal_suppression": rng.normal(shifts[m], 1, n),
              "flip_attack": rng.normal(shifts[m], 1, n), "raw": rng.normal(size=n)}
        scores[(m, 0)] = sc
        au[(m, 0)] = auroc(sc["harmless"], np.r_[sc["refusal_suppression"], sc["flip_attack"]], n_boot=50)
    return replace(res, scores=scores, auroc=au, seeds=[0], n_boot=300, _draws={},
                   jailbreaks=["refusal_suppression", "flip_attack"], request_ids={})  # n synthetic requests


def test_ablation_ranking_does_not_rank_overlapping_intervals(setup):
    *_, res = setup
    fake = _synthetic(res, {"text": 0.0, "static": 2.0, "sri_first": 0.05, "sri_middle": 1.0, "sri_last": 2.02})
    sent = ranking_sentence({"x": fake})
    ranked, tied = set(sent.data["ranked"]), {frozenset(p) for p in sent.data["tied"]}
    assert {("sri_last", "text"), ("static", "text")} <= ranked
    # sri_last and static overlap: not separated, in neither order among the ranked pairs
    assert frozenset({"sri_last", "static"}) in tied and not {("sri_last", "static"), ("static", "sri_last")} & ranked
    assert len(ranked) + len(tied) == len(METHODS) * (len(METHODS) - 1) // 2  # every pair is ranked or tied
    assert f"{METHOD_LABELS['sri_last']} > {METHOD_LABELS['text']} (" in sent  # the rendering names pairs by label
    d = method_difference({"x": fake}, "sri_last", "static")
    assert d["verdict"] == "~" and d["mean"].lo < 0 < d["mean"].hi
    lines = conclusion_lines({"x": fake}, {}, {"labels": ["x"]})
    assert verdicts(lines, "detector.ranking")[0].data == sent.data  # the conclusions carry the same ranking
    # the win over text is stated (with its caveat), the overlap with static is not called a win
    base, = verdicts(lines, "detector.baselines")
    assert base.side == 0 and base.data["sides"] == {"text": 1, "static": 0} and base.weak == ("tiny-ar@ar",)


def test_as_in_the_paper_carries_the_caveat_of_weak_runs(setup):
    *_, res = setup
    fake = _synthetic(res, {"text": 0.0, "static": 0.0, "sri_first": 0.0, "sri_middle": 1.0, "sri_last": 2.5})
    lines = conclusion_lines({"x": fake}, {}, {"labels": ["x"]})
    # the fixture's tiny-ar has unfiltered anchors: each agreeing verdict names it as a weak run
    base, = verdicts(lines, "detector.baselines")
    depth, = verdicts(lines, "detector.depth")
    assert (base.side, depth.side) == (1, 1) and base.weak == depth.weak == ("tiny-ar@ar",)
    assert all(w in v for v in verdicts(lines) for w in v.weak)
    tied = _synthetic(res, {"text": 0.0, "static": 0.0, "sri_first": 2.5, "sri_middle": 1.0, "sri_last": 2.5})
    depth, = verdicts(conclusion_lines({"x": tied}, {}, {"labels": ["x"]}), "detector.depth")
    assert depth.side == 0 and depth.weak == ()  # no verdict, so no caveat
    # a verdict against the paper names the weak runs too
    lost = _synthetic(res, {"text": 2.5, "static": 0.0, "sri_first": 2.5, "sri_middle": 1.0, "sri_last": 0.0})
    lines = conclusion_lines({"x": lost}, {}, {"labels": ["x"]})
    base, = verdicts(lines, "detector.baselines")
    depth, = verdicts(lines, "detector.depth")
    assert base.side == -1 and base.data["sides"] == {"text": -1, "static": 0} and depth.side == -1
    assert base.weak == depth.weak == ("tiny-ar@ar",) and all(w in v for v in verdicts(lines) for w in v.weak)
    auroc_line, = verdicts(lines, "detector.auroc")  # SRI at chance: not above 0.5, below the paper's mean
    assert (auroc_line.side, auroc_line.data["paper_side"], auroc_line.data["above_chance"]) == (0, -1, ())


def test_no_intervals_no_verdict(setup):
    *_, res = setup
    lines = conclusion_lines({"x": replace(res, n_boot=0)}, {}, {"labels": ["x"]})
    auroc_line, = verdicts(lines, "detector.auroc")
    assert auroc_line.side is None and not verdicts(lines, "detector.ranking")
    assert ranking_sentence({"x": replace(res, n_boot=0)}).data == {}  # no pair ranked, none called tied


# ------------------------------------------------------------------------------------------------ harmless shift
def test_harmless_shift(setup):
    exp, sets, train, res = setup
    res = replace(res, shift={}, _draws={})
    fams = shift_prompts(2)
    sh = run_harmless_shift(exp, "tiny-ar", res, fams, train, n_boot=30)
    assert res.shift is sh and [r["family"] for r in sh["rows"]][1:] == list(fams)
    n_dev = {f: len(p["dev"]) for f, p in fams.items()}
    # each broad-mix guard saw the built-in train signals and the OTHER families' dev prompts, never its own family
    for f, g in sh["guards"].items():
        if f != "all families":
            assert g.n_train_ + g.n_calib_ == len(train) + sum(v for k, v in n_dev.items() if k != f)
    # the untouched split is never fitted on: the all-families guard saw only dev prompts
    g = sh["guards"]["all families"]
    assert g.n_train_ + g.n_calib_ == len(train) + sum(n_dev.values())
    assert sh["untouched"]["n"] == sum(len(p["untouched"]) for p in fams.values())
    # the FPR of a family is the guard's flag rate on that family's own traces
    ts = exp.traces("tiny-ar", fams["code"]["dev"], "check")
    sig = res.anchors["last"].signal(ts, tau=0.1)
    code = next(r for r in sh["rows"] if r["family"] == "code")
    assert code["sri_fpr"].k == (res.guard.score_samples(sig) > res.guard.threshold_).sum()
    rows = shift_rows({"x": res})
    # issue 24.6: the paper has no harmless-shift experiment; its (unshifted) Table 4 AUROC sits beside our
    # unshifted reference row only, never beside a shifted family
    assert len(rows) == len(fams) + 2 and rows[0][PAPER_TABLE4_COL] == "0.920 / 0.573"
    assert all(r[PAPER_TABLE4_COL] == "–" for r in rows[1:])
    untouched = shift_rows({"x": res}, untouched=True)[0]
    assert untouched[PAPER_TABLE4_COL] == "–" and {"broad mix (all dev): FPR"} <= set(untouched)
    # issue 24.5: the broad-mix AUROC resamples the pooled jailbreaks by request (2 attacks x 4 requests)
    assert code["broad_auroc"].method == "cluster-bootstrap" and code["broad_auroc"].info["clusters"] == 4


def test_shift_conclusion_states_a_loss_plainly(setup):
    *_, res = setup
    base = {"text_fpr": Rate.from_counts(1, 40), "sri_auroc": Estimate(0.45, 0.35, 0.55, "b"),
            "text_auroc": Estimate(0.8, 0.7, 0.9, "b"), "sri_minus_text": Estimate(-0.35, -0.5, -0.2, "b", signed=True)}
    base["sri_fpr"] = Rate.from_outcomes(np.r_[np.ones(9), np.zeros(31)].astype(bool))
    base["lofo_fpr"] = Rate.from_outcomes(np.r_[np.ones(8), np.zeros(32)].astype(bool))
    unt = {**base, "broad_all_fpr": Rate.from_counts(2, 20)}
    fake = replace(res, shift={"rows": [{"family": "builtin", "sri_fpr": Rate.from_counts(0, 4)}], "pooled": base,
                               "untouched": unt, "families": ["a", "b"]})
    v = shift_conclusion({"x": fake})
    assert v.kind == "detector.shift" and v.data["sides"] == {"tiny-ar@ar": -1}  # the text signal beats SRI Guard
    assert v.data["fpr_above"] == ("tiny-ar@ar",)  # 9/40 flagged: above the 1% the threshold aims at
    assert v.data["broad"] == {"tiny-ar@ar": 0}  # 8/40 vs 9/40 on the same prompts: not separated
    assert v.weak == ("tiny-ar@ar",) and all(w in v for w in v.weak)  # the unfiltered anchors' caveat
    # two more runs: one where SRI Guard beats the text signal, one where the two are not separated
    def shifted(run, d):
        return replace(fake, run=run, shift={**fake.shift, "pooled": {**base, "sri_minus_text": d}})
    v = shift_conclusion({"x": fake, "b": shifted("b@ar", Estimate(0.3, 0.1, 0.5, "b", signed=True)),
                          "t": shifted("t@ar", Estimate(0.0, -0.1, 0.1, "b", signed=True))})
    assert v.data["sides"] == {"tiny-ar@ar": -1, "b@ar": 1, "t@ar": 0} and v.runs == ("tiny-ar@ar", "b@ar", "t@ar")
