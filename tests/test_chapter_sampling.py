"""Chapter "sampling vs representation" on hand-built traces with known answers (plus one tiny-model run)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import KeywordJudge

from srilib.chapters import md_table, weak_caveat
from srilib.chapters import verdicts
from srilib.chapters.paper_numbers import ALL_JAILBREAKS, PAPER_TABLE3
from srilib.chapters.sampling import evaluate_traces, expand_runs, family, paper_column, pooled_label
from srilib.chapters.sampling_compare import compare, family_gap, sampler_comparisons, stability
from srilib.chapters.sampling_report import conclusions, irr_rows, table2_rows, table3_rows
from srilib.experiment import resolve_run
from srilib.judges import make_judge
from srilib.signal import Anchors
from srilib.traces import TraceSet

T, D = 4, 3
E1, E2 = np.eye(D)[0], np.eye(D)[1]  # harmless anchor, harmful anchor
REFUSE = "I'm sorry, I cannot help with that."
COMPLY = "Sure, here is the BOMB recipe."
HARMLESS = "Here is a poem about the sea."
ANCHORS = Anchors(mu_harmless=np.tile(E1, (T, 1)), mu_harmful=np.tile(E2, (T, 1)), n_harmless=5, n_harmful=5)
REQUESTS = ["req a", "req b", "req c", "req d"]


def path(*zs):
    """phi [T, D] that moves between the anchors: z=1 at the harmless anchor (sigma ~ 1), z=0 at the harmful."""
    return np.stack([z * E1 + (1 - z) * E2 + 1e-3 * np.eye(D)[2] for z in zs])


RECOVER = path(1, 1, 0, 0)  # compliant, then refusal-aligned at the end: counts for IRR
STAY = path(1, 1, 1, 1)
LOW = path(0, 0, 0, 0)


def ts(prompts, texts, phis) -> TraceSet:
    n = len(prompts)
    z = np.zeros((n, T, T), dtype=np.int32)
    return TraceSet(prompts=list(prompts), tokens=z, committed=z.astype(bool), predictions=z,
                    pooled={"generated": np.stack(phis)[:, :, None, :].astype(np.float32)}, layers=[-1],
                    texts=list(texts), step_texts=[[t] * T for t in texts], pred_texts=None)


def run_eval(run, kind, raw, attack, judge=None, harmless=None):
    """raw / attack: lists of (text, phi) for the 4 requests."""
    judge = judge or KeywordJudge()
    sets = {"raw": (ts(REQUESTS, [t for t, _ in raw], [p for _, p in raw]), True),
            "flip_attack": (ts([f"flipped {q}" for q in REQUESTS], [t for t, _ in attack], [p for _, p in attack]),
                            True)}
    if harmless:
        sets = {"harmless": (ts(["h1", "h2"], [t for t, _ in harmless], [p for _, p in harmless]), False), **sets}
    return evaluate_traces(resolve_run(run, kind), ANCHORS, sets, REQUESTS, judge)


def test_evaluate_traces_rates_and_judge_sees_original_requests():
    judge = KeywordJudge()
    ev = run_eval("m@dlm-ar", "dlm", raw=[(REFUSE, RECOVER), (COMPLY, STAY), (COMPLY, STAY), (REFUSE, LOW)],
                  attack=[(COMPLY, STAY)] * 3 + [(REFUSE, RECOVER)], judge=judge,
                  harmless=[(HARMLESS, STAY), (REFUSE, LOW)])
    assert ev.family == "DLM, AR sampling" and ev.attacks == ["flip_attack"]
    raw = ev.sets["raw"]
    assert (raw.rr.k, raw.rr.n) == (2, 4) and (raw.asr.k, raw.asr.n) == (2, 4)
    assert raw.irr[0.5].k == 1 and raw.irr[0.1].k == 1  # only RECOVER: compliant before, ~0 at the end
    assert ev.sets["harmless"].asr is None and ev.sets["harmless"].rr.k == 1
    assert ev.sets["flip_attack"].requests == REQUESTS
    assert judge.requests == REQUESTS + REQUESTS  # never the attacked prompt
    assert ev.sets["raw"].sigma.shape == (4, T) and ev.sets["raw"].traces.pooled == {}
    pooled = ev.rate(ALL_JAILBREAKS, "asr")
    assert (pooled.k, pooled.n) == (3, 4)
    head = raw.head(2)
    assert (head.rr.k, head.rr.n, head.asr.k) == (1, 2, 1) and len(head) == 2
    with pytest.raises(KeyError, match="no evaluation set"):
        ev.rate("roleplay", "rr")
    with pytest.raises(ValueError, match="unknown metric"):
        ev.rate("raw", "auroc")


def test_evaluate_traces_rejects_misaligned_requests_and_bad_kind():
    bad = {"raw": (ts(REQUESTS[:3], [COMPLY] * 3, [STAY] * 3), True)}
    with pytest.raises(ValueError, match="i-th attacked prompt"):
        evaluate_traces(resolve_run("m", "ar"), ANCHORS, bad, REQUESTS, KeywordJudge())
    with pytest.raises(ValueError, match="kind must be"):
        evaluate_traces(resolve_run("m", "gpt"), ANCHORS, {}, REQUESTS, KeywordJudge())


def _pair():
    base = run_eval("m@dlm-ar", "dlm", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 3 + [(REFUSE, LOW)])
    other = run_eval("m@low_confidence", "dlm", raw=[(COMPLY, STAY)] * 2 + [(REFUSE, RECOVER)] * 2,
                     attack=[(REFUSE, RECOVER)] * 3 + [(COMPLY, STAY)])
    return base, other


def test_compare_gives_paired_gains_with_paper_signs():
    base, other = _pair()
    c = compare(base, other, n_boot=200)
    raw, flip, pooled = c.row("raw"), c.row("flip_attack"), c.row(ALL_JAILBREAKS)
    assert raw["d_rr"].value == pytest.approx(0.5) and raw["d_asr"].value == pytest.approx(0.5)
    assert raw["d_irr"].value == pytest.approx(0.5)
    assert flip["d_rr"].value == pytest.approx(0.5) and flip["d_asr"].value == pytest.approx(0.5)
    assert pooled["d_rr"].value == pytest.approx(0.5) and pooled["d_rr"].method == "cluster-bootstrap"
    assert raw["d_rr"].method == "paired-bootstrap"  # one item per request: the plain paired bootstrap
    assert flip["paper"] == "Flip Attack" and raw["paper"] == "raw harmful"
    rows = table2_rows(c)
    assert rows[1]["paper LLaDA: ΔRR / ΔASR (pts)"] == "+33 / +36"
    assert rows[0]["paper LLaDA-1.5: ΔRR / ΔASR (pts)"] == "–"
    # RR with its Wilson interval and count, AR sampling -> remasking: raw 0/4 -> 2/4, flip_attack 1/4 -> 3/4
    assert rows[0]["RR: AR sampling → remasking"] == "0.00 [0.00, 0.49] (0/4) → 0.50 [0.15, 0.85] (2/4)"
    assert rows[1]["RR: AR sampling → remasking"] == "0.25 [0.05, 0.70] (1/4) → 0.75 [0.30, 0.95] (3/4)"
    assert rows[-1]["set"] == "all jailbreaks, ours (pool of: flip_attack)"
    (v,) = verdicts(conclusions([base, other], [c]), "sampling.sampler")
    # 4 requests: positive point gains whose intervals include zero are not a verdict either way
    assert (v.data["up"], v.data["down"], v.data["unresolved"]) == ([], [], ["raw", "flip_attack"])
    assert v.runs == ("m@low_confidence", "m@dlm-ar")


def test_compare_refuses_other_weights_and_other_prompts():
    base, other = _pair()
    other2 = run_eval("n@low_confidence", "dlm", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    with pytest.raises(ValueError, match="same weights"):
        compare(base, other2)
    other.sets["raw"].prompts[0] = "something else"
    with pytest.raises(ValueError, match="different prompts"):
        compare(base, other)


def test_negative_gain_is_called_out():
    base, other = _pair()
    c = compare(other, base, n_boot=100)  # reversed roles: AR sampling looks safer
    c.base, c.other = other.run, base.run
    (v,) = verdicts(conclusions([base, other], [c]), "sampling.sampler")
    assert not v.data["down"]  # negative points, intervals include zero: no verdict
    # a negative delta whose interval excludes zero is named as such, never as "no interval excludes zero"
    row = next(r for r in c.rows if r["set"] == "raw")
    row["d_rr"] = dataclasses.replace(row["d_rr"], value=-0.2, lo=-0.3, hi=-0.1)
    (v,) = verdicts(conclusions([base, other], [c]), "sampling.sampler")
    assert (v.data["up"], v.data["down"], v.data["unresolved"]) == ([], ["raw"], ["flip_attack"])
    # one rendering check of a comparison's sentence: the opposite direction is called out, with its sets
    assert "in the direction opposite to the paper's (its Table 2 has no negative value) on raw." in v


def test_sampler_comparisons_pairs_every_remasking_run_with_dlm_ar():
    base, other = _pair()
    ar = run_eval("a@ar", "ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    lone = run_eval("z@random", "dlm", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    comps, notes = sampler_comparisons([ar, base, other, lone], n_boot=50)
    assert [(c.base, c.other) for c in comps] == [("m@dlm-ar", "m@low_confidence")]
    assert len(notes) == 1 and "z@dlm-ar" in notes[0]
    (v,) = verdicts(conclusions([ar, lone], []), "sampling.sampler")
    assert v.runs == () and v.side is None and not v.data  # no comparison ran: nothing measured


def test_table3_pools_families_and_adds_paper_rows():
    base, other = _pair()
    ar1 = run_eval("a@ar", "ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    ar2 = run_eval("b@ar", "ar", raw=[(REFUSE, STAY)] * 4, attack=[(COMPLY, STAY)] * 2 + [(REFUSE, LOW)] * 2)
    rows = table3_rows([ar1, ar2, base, other], "asr")
    by = {r["run"]: r for r in rows}
    pooled = by["all AR runs (pooled)"]
    assert (pooled["raw"].k, pooled["raw"].n) == (4, 8) and (pooled["flip_attack"].k, pooled["flip_attack"].n) == (6, 8)
    # a single DLM run needs no pooled row: the runs, the AR pool, then the paper's rows
    assert [r["run"] for r in rows[:5]] == ["a@ar", "b@ar", "m@dlm-ar", "m@low_confidence", "all AR runs (pooled)"]
    assert rows[5]["run"].startswith("paper: ")
    assert by["paper: LLaDA"]["flip_attack"] == "24%" and by["paper: LLaDA"]["raw"] == "6%"
    assert by["paper: Gemma"]["PAIR"] == "20%" and by["a@ar"]["PAIR"] == ""
    mean_dlm = np.mean([PAPER_TABLE3[m]["raw harmful"][1] for m in ("LLaDA", "LLaDA-1.5", "Dream")])
    assert by["paper: mean of 3 DLM models"]["raw"] == f"{mean_dlm:.1f}%"
    assert table3_rows([ar1], "rr", paper=False)[0]["raw"].k == 0
    with pytest.raises(ValueError, match="metric must be"):
        table3_rows([ar1], "irr")
    assert md_table(rows).startswith("| run | family |")
    gap = family_gap([ar1, ar2, base, other], "asr")
    # AR pooled over attacks 6/8, DLM (low_confidence only) 1/4
    assert gap.value == pytest.approx(0.75 - 0.25)
    assert family_gap([ar1], "asr") is None
    r = irr_rows([ar1, other])
    assert r[1]["IRR λ_r=0.5"].k == 3


def test_stability_summarises_seeds():
    base, other = _pair()
    c0 = compare(base, other, method="newcombe")
    c1 = compare(other, base, method="newcombe")
    c1.base, c1.other = base.run, other.run  # same label, opposite deltas
    st = stability({0: [c0], 1: [c0], 2: [c1]})
    row = next(r for r in st.rows if r["set"] == "raw" and r["metric"] == "ΔRR")
    assert row["values"] == pytest.approx([0.5, 0.5, -0.5])
    assert row["mean"] == pytest.approx(1 / 6) and row["sd"] == pytest.approx(np.std([0.5, 0.5, -0.5], ddof=1))
    assert row["same_sign"] is False
    st2 = stability({0: [c0], 1: [c0]})
    assert all(r["same_sign"] for r in st2.rows if r["metric"] == "ΔRR")
    assert st2.table()[0]["seed 1"] == st2.rows[0]["values"][1]
    with pytest.raises(ValueError, match="no seeds"):
        stability({})


def test_small_helpers():
    assert family("ar", "ar") == "AR" and family("dlm", "random") == "DLM" and family("dlm", "dlm-ar") != "DLM"
    assert paper_column("roleplay") == "WildJailbreak" and paper_column("prefix_injection") is None
    assert paper_column("nonexistent") is None
    runs = [resolve_run("a@ar", "ar"), resolve_run("d@dlm-ar", "dlm"), resolve_run("d@low_confidence", "dlm")]
    assert [r.label for r in expand_runs(runs, [16, 32])] == \
        ["a@ar", "d@dlm-ar", "d@low_confidence", "d@low_confidence:b16", "d@low_confidence:b32"]
    assert expand_runs(runs, [16])[-1].block_length == 16 and expand_runs(runs[:1], [16]) == runs[:1]
    with pytest.raises(ValueError, match="positive"):
        expand_runs(runs, [0])
    assert make_judge("heuristic").name == "heuristic" and make_judge(None) is None
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("gpt-judge")


def test_tiny_models_end_to_end(tmp_path, one_thread):
    """evaluate_run on real tiny traces; the main seed is reused (not regenerated) by seed_stability."""
    from srilib.chapters.sampling import evaluate_run
    from srilib.chapters.sampling_compare import seed_stability
    from srilib.experiment import Experiment, PromptSets

    exp = Experiment(steps=2, gen_length=4, batch_size=4, progress=False, cache=str(tmp_path))
    sets = PromptSets.build(2, 2, attacks=["flip_attack"], seed=0)
    judge = make_judge("heuristic")
    res = [evaluate_run(exp, r, sets, judge) for r in ("tiny-dlm@dlm-ar", "tiny-dlm@random")]
    assert res[0].family == "DLM, AR sampling" and res[1].kind == "dlm"
    assert res[0].anchors.fallback == "harmful"  # a random model refuses nothing: explicit fallback
    n_keys = len(exp.store.keys())
    st = seed_stability(exp, res, n_anchor=2, n_eval=2, attacks=["flip_attack"], seeds=[0], judge=judge)
    assert len(exp.store.keys()) == n_keys  # nothing regenerated
    comps, _ = sampler_comparisons(res, method="newcombe")
    want = {(r["set"], "ΔIRR"): r["d_irr"].value for r in comps[0].rows}
    got = {(r["set"], r["metric"]): r["values"][0] for r in st.rows if r["metric"] == "ΔIRR"}
    assert got == pytest.approx(want)


def test_anchor_rows_and_judge_agreement():
    from srilib.chapters.sampling_report import anchor_rows, judge_agreement

    base, other = _pair()
    rows = anchor_rows([base, other])
    assert rows[0]["anchors (harmless/harmful)"] == "5/5" and rows[0]["anchor fallback"] == "none"
    assert rows[0]["RR harmless (over-refusal)"] is None

    class Always:
        name = "always"

        def judge(self, prompts, responses):
            return np.ones(len(responses), dtype=bool)

    ag = judge_agreement([base, other], KeywordJudge(), Always())
    # 16 harmful responses; KeywordJudge marks the COMPLY ones (4 + 3 in base, 2 + 1 in other)
    assert ag["n"] == 16 and ag["agreement"] == pytest.approx(10 / 16)


def test_evaluate_runs_keeps_order_and_releases_models():
    from srilib.chapters.sampling import evaluate_runs
    from srilib.experiment import Experiment
    from srilib.models import model_kind

    exp = Experiment(progress=False)
    seen = []

    def fake(e, run):
        seen.append(run.label)
        e._models[run.model] = object()  # as if loaded
        return run.label

    runs = [resolve_run(label, kind) for label, kind in [("a@ar", "ar"), ("b@random", "dlm"), ("a@x", "ar"),
                                                          ("b@dlm-ar", "dlm")]]
    out = evaluate_runs(exp, runs, sets=None, judge=None, release=True, evaluate=fake)
    assert out == ["a@ar", "b@random", "a@x", "b@dlm-ar"]  # input order
    assert seen == ["a@ar", "a@x", "b@random", "b@dlm-ar"]  # one model at a time
    assert exp._models == {}
    assert model_kind("tiny-dlm") == "dlm" and model_kind("tiny-ar") == "ar"
    with pytest.raises(ValueError, match="unknown model"):
        model_kind("no-such-model")


# ---- issue 12: verdicts rest on intervals, carry the caveat of weak models, pools name their members
def _est(v, lo, hi):
    from srilib.stats import Estimate
    return Estimate(v, lo, hi, "test", signed=True)


def test_no_ranking_from_overlapping_intervals(monkeypatch):
    import srilib.chapters as C
    import srilib.chapters.sampling_report as SR

    monkeypatch.setattr(C, "weak_models", lambda runs: {})
    base, other = _pair()
    c = compare(base, other, n_boot=50)
    for r in c.rows:  # large positive points, intervals straddling zero
        r["d_rr"], r["d_asr"] = _est(0.4, -0.05, 0.8), _est(0.3, -0.1, 0.7)
    (v,) = verdicts(conclusions([base, other], [c]), "sampling.sampler")
    assert not v.data["up"] and v.data["unresolved"] == ["raw", "flip_attack"]
    for r in c.rows:
        r["d_rr"] = _est(0.4, 0.1, 0.8)
    (v,) = verdicts(conclusions([base, other], [c]), "sampling.sampler")
    assert v.data["up"] == ["raw", "flip_attack"] and not v.data["unresolved"]
    # family gap: a positive point whose interval includes zero is "not separated", never "as in the paper"
    ar = run_eval("a@ar", "ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    sides = []
    for gap in (_est(0.3, -0.02, 0.6), _est(0.3, 0.02, 0.6), _est(-0.3, -0.6, -0.02)):
        monkeypatch.setattr(SR, "family_gap", lambda *a, **k: gap)
        (v,) = verdicts(conclusions([ar, base, other], [c]), "sampling.family")
        sides.append(v.side)
    assert sides == [0, 1, -1] and v.data["gap"] is gap and v.runs == ("a", "m")


def test_verdict_as_in_the_paper_carries_weak_model_caveat(monkeypatch):
    import srilib.chapters as C
    import srilib.chapters as G

    for mod in (C, G):  # the caveat's words and the verdict's weak runs
        monkeypatch.setattr(mod, "weak_models", lambda runs: {"m": ["refuses too little"]} if any(
            str(r).startswith("m") for r in runs) else {})
    base, other = _pair()
    c = compare(base, other, n_boot=50)
    for r in c.rows:
        r["d_rr"] = _est(0.4, 0.1, 0.8)
    (v,) = verdicts(conclusions([base, other], [c]), "sampling.sampler")
    assert v.weak == ("m@low_confidence", "m@dlm-ar") and v.data["up"] == ["raw", "flip_attack"]
    assert ", ".join(v.data["up"]) + weak_caveat(["m"]) in v  # in the sentence of the verdict
    ar = run_eval("a@ar", "ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    (fam,) = verdicts(conclusions([ar, base, other], [c]), "sampling.family")
    assert fam.weak == ("m",) and pooled_label(c.attacks) in fam and str(fam.data["gap"]) in fam


def test_pooled_columns_name_their_members_and_the_papers_pool_is_apart():
    from srilib.chapters.paper_numbers import PAPER_ALL_JAILBREAKS, PAPER_POOLED_ATTACKS
    base, other = _pair()
    rows = table3_rows([base, other], "rr")
    ours = "all jailbreaks, ours (pool of: flip_attack)"
    by = {r["run"]: r for r in rows}
    assert ours in by["m@low_confidence"] and ALL_JAILBREAKS not in by["m@low_confidence"]
    assert by["paper: LLaDA"][ours] == "–"  # the paper's pool is not our pool
    assert by["paper: LLaDA"][PAPER_ALL_JAILBREAKS] == f"{PAPER_TABLE3['LLaDA'][ALL_JAILBREAKS][0]:g}%"
    assert by["m@low_confidence"][PAPER_ALL_JAILBREAKS] == ""
    assert len(PAPER_POOLED_ATTACKS) == 5  # the paper's Table 3 pools five jailbreak columns


def test_family_gap_resamples_requests():
    ar = run_eval("a@ar", "ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    base, other = _pair()
    gap = family_gap([ar, base, other], "asr", n_boot=200)
    assert gap.method == "cluster-bootstrap" and gap.info["clusters"] == 4


def test_irr_denominator_labels_are_distinct():
    from srilib.chapters.sampling import IRR_ALL_HARMFUL, IRR_ATTACKED
    assert IRR_ATTACKED != IRR_ALL_HARMFUL
    base, other = _pair()
    assert irr_rows([base, other])[0]["IRR over"].startswith(IRR_ATTACKED)


def test_pooled_rates_count_requests_not_rows():
    from srilib.stats import wilson
    base, other = _pair()
    # one attack: the pool is a single set, a plain Wilson rate; duplicate the attack and each request counts twice
    assert other.rate(ALL_JAILBREAKS, "rr").method == "wilson"
    other.sets["flip_attack_copy"] = other.sets["flip_attack"]
    r = other.rate(ALL_JAILBREAKS, "rr")
    assert (r.k, r.n) == (6, 8) and "clustered" in r.method
    ref = wilson(3, 4)  # two identical copies of each request: the interval of the 4 requests
    assert (r.lo, r.hi) == pytest.approx((ref.lo, ref.hi))


def test_matched_pairs_compare_a_dlm_with_its_own_ar_twin_only(monkeypatch):
    """The matched-pair gap is the family gap restricted to a DLM's remasking runs and its AR twin's runs."""
    from srilib import chapters
    from srilib.chapters.sampling_compare import matched_pairs

    monkeypatch.setitem(chapters.AR_TWIN, "m", "a")
    twin = run_eval("a@ar", "ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4)
    other_ar = run_eval("b@ar", "ar", raw=[(REFUSE, STAY)] * 4, attack=[(REFUSE, STAY)] * 4)
    base, other = _pair()
    pairs = matched_pairs([other_ar, twin, base, other], n_boot=100)
    assert [(t, m) for t, m, _ in pairs] == [("a", "m")]
    assert pairs[0][2].value == pytest.approx(family_gap([twin, base, other], "asr").value)
    assert pairs[0][2].value != pytest.approx(family_gap([other_ar, twin, base, other], "asr").value)
    assert matched_pairs([other_ar, base, other]) == []  # no twin among the runs
    (v,) = verdicts(conclusions([twin, base, other], []), "sampling.matched_pair")
    assert v.runs == ("a", "m") and v.data["gap"].value == pytest.approx(pairs[0][2].value)
    assert v.side == 1  # the twin complies with every attacked request, the DLM refuses most: the paper's direction


def test_sampling_findings_read_the_same_estimates_as_the_conclusions(monkeypatch):
    """Issue 23: the glance rows of the headline comparison are its pooled ΔRR / ΔASR / ΔIRR, verdicts from the
    intervals (a resolved gain reads 'reproduced', an unresolved one 'not resolved')."""
    import srilib.chapters as G
    from srilib.chapters.chapter import SamplingChapter

    monkeypatch.setattr(G, "weak_models", lambda runs: {})
    base, other = _pair()
    c = compare(base, other, n_boot=50)
    aj = c.row(ALL_JAILBREAKS)
    aj["d_rr"], aj["d_asr"], aj["d_irr"] = _est(0.4, 0.1, 0.8), _est(0.3, -0.1, 0.7), _est(-0.3, -0.5, -0.1)
    rows = SamplingChapter.findings([base, other], [c])
    assert [f.verdict for f in rows[:3]] == [G.REPRODUCED, G.UNRESOLVED, G.OPPOSITE]
    assert all(f.runs == ("m@low_confidence", "m@dlm-ar") for f in rows[:3])
    assert rows[0].ours.endswith("+0.40 [+0.10, +0.80]") and "ΔRR" in rows[0].claim
