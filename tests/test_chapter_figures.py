"""The chapters' figure data (issue 25): what each chapter hands its figure functions, as arrays, mappings and labels
(the figures import nothing from the chapters), and the notebook logic that moved into the chapters: the worked
examples and incomplete-recovery cases, the paper's bands, the budget curves, the conclusions' assembly."""
from types import SimpleNamespace

import numpy as np
import pytest

import srilib.chapters.adaptive as AD
from srilib.chapters import geometry as G
from srilib.chapters import recovery_figures as RF
from srilib.chapters import sampling as S
from srilib.chapters import sampling_report as SR
from srilib.chapters.defenses import DefenseReport, overhead_points
from srilib.chapters.detector import (DEFENSES, METHODS, DetectorResult, GuardConfig, guard_roc_panel,
                                      notes_markdown, roc_panel)
from srilib.chapters.chapter import DetectorChapter
from srilib.chapters.detector_diffuguard import diffuguard_note
from srilib.chapters.paper_numbers import (METHOD_LABELS, PAPER_ABLATION, PAPER_AR_IRR_MAX, PAPER_DEFENSES,
                                           PAPER_DLM_IRR_LOOSE, PAPER_TABLE2, paper_family_asr)
from srilib.chapters.recovery import RecoveryResult, example_steps
from srilib.chapters.sampling_compare import Comparison, delta_panel
from srilib.chapters.shift import shift_fpr
from srilib.stats import Estimate, Rate, wilson


# ------------------------------------------------------------------------------------------------ detector
def detector(run, fallback=None, quantile=0.99, shift=True, notes=()):
    """A DetectorResult whose jailbreak scores lie above every harmless score for SRI Guard, and interleave for
    the text signal."""
    harmless = np.arange(10) / 10
    scores = {(m, 0): {"harmless": harmless, "flip_attack": harmless + (5 if m == "sri_last" else 0.05),
                       "roleplay": harmless + (5 if m == "sri_last" else 0.05)} for m in METHODS}
    rows = [{"family": f, "sri_fpr": wilson(k, 20)} for f, k in (("built-in (eval split)", 1), ("code", 4))]
    return DetectorResult(run=run, kind="ar", layer_index={}, anchors={"last": SimpleNamespace(fallback=fallback)},
                          signals={}, texts={}, refusal={}, jailbreaks=["flip_attack", "roleplay"], detectors={},
                          scores=scores, auroc={(m, 0): Estimate(0.5 + 0.1 * i, 0.4, 1.0, "x")
                                                for i, m in enumerate(METHODS)},
                          auroc_raw={}, seeds=[0], cfg=GuardConfig(quantile=quantile), n_boot=0,
                          notes=list(notes), shift={"rows": rows} if shift else {})


def test_roc_is_the_pooled_jailbreaks_against_harmless_of_the_first_seed():
    res = detector("a@ar")
    fpr, tpr = res.roc("sri_last")
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    assert tpr[fpr == 0].max() == 1  # separated: every jailbreak caught before the first false positive
    fpr_t, tpr_t = res.roc("text")
    assert tpr_t[fpr_t == 0].max() < 1  # interleaved


def test_roc_panels_label_each_curve_with_its_auroc_and_flag_unfiltered_anchors():
    panel = roc_panel(detector("a@ar"))
    assert list(panel["curves"]) == [f"{METHOD_LABELS[m]} ({0.5 + 0.1 * i:.2f})" for i, m in enumerate(METHODS)]
    assert panel["thick"] == f"{METHOD_LABELS['sri_last']} (0.90)" and panel["title"] == "a@ar"
    assert all(len(f) == len(t) for f, t in panel["curves"].values())
    assert roc_panel(detector("b@dlm", fallback="harmful"))["title"] == "b@dlm\n(UNFILTERED anchors)"
    guard = guard_roc_panel({"a": detector("a@ar"), "b": detector("b@dlm", fallback="harmful")})
    assert list(guard["curves"]) == ["a@ar (0.90)", "b@dlm (0.90, unfiltered anchors)"]
    np.testing.assert_array_equal(guard["curves"]["a@ar (0.90)"][1], detector("a@ar").roc("sri_last")[1])
    assert guard["note"].startswith(f"paper: AUROC {PAPER_ABLATION['sri_last'][0]:.3f} ± ")


def test_overhead_points_per_defense_and_run():
    reports = {}
    for k, run in enumerate(("a@ar", "b@dlm")):
        rows = [{"defense": d, "status": "not run" if d == "LlamaGuard 3" else "run",
                 "overhead incl. capture %": 10.0 * i + k, "asr": Rate.from_counts(10 - i, 20)}
                for i, d in enumerate(DEFENSES)]
        reports[run] = DefenseReport(run=run, rows=rows, gen_seconds=1.0, n_timing=2, judge="heuristic")
    pts = overhead_points(reports)
    assert list(pts["ours"]) == list(DEFENSES[1:])  # the order that gives each defense its colour
    assert pts["ours"]["LlamaGuard 3"].shape == (0, 2)  # not run: no point, its colour kept
    np.testing.assert_allclose(pts["ours"]["SRI Guard"], [[40.0, 30.0], [41.0, 30.0]])
    assert pts["undefended"] == 50.0
    assert pts["paper"]["SRI Guard"] == (PAPER_DEFENSES["SRI Guard"][0], PAPER_DEFENSES["SRI Guard"][3])
    assert pts["paper_undefended"] == PAPER_DEFENSES["undefended"][3]


def test_shift_fpr_rows_of_the_runs_with_a_shift_section():
    out = shift_fpr({"a": detector("a@ar", quantile=0.95), "b": detector("b@ar", shift=False)})
    assert list(out["fpr"]) == ["a@ar"] and [r.k for r in out["fpr"]["a@ar"]] == [1, 4]
    assert out["families"] == ["built-in (eval split)", "code"] and out["aim"] == pytest.approx(0.05)
    assert shift_fpr({"b": detector("b@ar", shift=False)}) == {"fpr": {}, "families": [], "aim": None}


def test_detector_notes_captions_and_every_run():
    results = {"a": detector("a@ar", notes=["one"]), "b": detector("b@ar", notes=["two", "three"])}
    assert notes_markdown(results) == "- one\n- two\n- three" and notes_markdown({"c": detector("c")}) == ""
    assert diffuguard_note(results) == "DiffuGuard: not run in this profile (diffuguard=False)."
    results["b"].diffuguard = {"settings": "gamma 0.5"}
    assert diffuguard_note(results) == "DiffuGuard: gamma 0.5."

    def run(spec):
        if spec == "bad":
            raise RuntimeError("boom")
        return results[spec], f"report {spec}"

    chapter = object.__new__(DetectorChapter)  # run_all reads only the runs and run()
    chapter.params, chapter.run = {"runs": ["a", "bad", "b"]}, run
    res, reps = chapter.run_all()
    assert res == {"a": results["a"], "b": results["b"]} and reps == {"a": "report a", "b": "report b"}


# ------------------------------------------------------------------------------------------------ recovery
def recovery(run, sampler="low_confidence", kind="dlm", revised=(), min_sigma=(), T=4):
    """A RecoveryResult of 3 generations, canvas of 4 positions; ``revised``: generations harmful at step 1 and
    revised; ``min_sigma``: (generation, deepest σ) of its incomplete recoveries."""
    n = 3
    sigma = np.full((n, T), 0.9)
    for i, m in min_sigma:
        sigma[i, 1] = m
    hs = np.zeros((n, T), bool)
    hs[list(revised), 1] = True
    rev = None if kind == "ar" else {"harmful_steps": hs, "ever_harmful": hs.any(1),
                                     "first_harmful_step": np.where(hs.any(1), 1, -1),
                                     "final_harmful": np.zeros(n, bool), "revised": hs.any(1)}
    tokens = np.arange(n * T * 4).reshape(n, T, 4)
    ts = SimpleNamespace(tokens=tokens, committed=tokens % 2 == 0, predictions=tokens + 1,
                         texts=[f"{run} text {i} " for i in range(n)])
    idx = np.array([i for i, _ in min_sigma], dtype=int)
    return RecoveryResult(
        ev=SimpleNamespace(run=run, family={"ar": "AR", "dlm": "DLM"}[kind], model=run.partition("@")[0],
                           sampler=sampler, kind=kind),
        traces=ts, set_of=np.array(["raw", "raw", "flip_attack"], dtype=object), position=np.array([0, 1, 0]),
        requests=["r0", "r1", "r0"], sigma=sigma, text_sig=np.ones((n, T)),
        final_harmful=np.array([True, False, False]),
        irr={0.5: wilson(2, 3)}, text_irr={0.5: wilson(0, 3)}, revision=rev,
        incomplete={"indices": idx, "min_sigma": sigma[idx].min(1) if len(idx) else np.zeros(0),
                    "n_text_never_refuses": n},
        tokenizer=SimpleNamespace(decode=lambda ids: f"<{ids[0]}>"), end_ids=(0,))


def test_irr_panels_with_the_papers_levels_and_one_panel_per_dlm():
    rs = [recovery("m@low_confidence"), recovery("m@dlm-ar", sampler="dlm-ar"), recovery("ar@ar", "ar", "ar"),
          recovery("n@low_confidence")]
    panel = RF.irr_panel(rs)
    assert list(panel["irr"]) == [r.run for r in rs] and panel["families"]["ar@ar"] == "AR"
    assert [b[:2] for b in panel["bands"]] == [(0, PAPER_AR_IRR_MAX), PAPER_DLM_IRR_LOOSE]
    panels = RF.sampler_irr_panels(rs)
    assert [p["title"] for p in panels] == ["m: IRR per sampler", "n: IRR per sampler"]
    assert list(panels[0]["irr"]) == ["low_confidence", "dlm-ar"] and panels[0]["irr"]["dlm-ar"] is rs[1].irr


def test_worked_examples_are_the_revisions_else_one_canvas_to_illustrate():
    res = recovery("tiny-dlm@low_confidence", revised=(2,))
    view = RF.example_view(res, 2, note=" (why)")
    assert (view["run"], view["set_name"], view["position"], view["request"], view["harmful"]) == \
        ("tiny-dlm@low_confidence", "flip_attack", 0, "r0", False)
    assert view["steps"] == example_steps(res, 2) and view["decode"](7) == "<7>" and view["note"] == " (why)"
    np.testing.assert_array_equal(view["tokens"], res.traces.tokens[2])
    np.testing.assert_array_equal(view["harmful_steps"], [False, True, False, False])

    why, views = RF.worked_examples([recovery("ar@ar", kind="ar"), res], 2, ["ar@ar", "tiny-dlm@low_confidence"])
    assert why == "" and [(v["run"], v["position"], v["set_name"]) for v in views] == \
        [("tiny-dlm@low_confidence", 0, "flip_attack")]
    why, views = RF.worked_examples([recovery("tiny-dlm@low_confidence")], 2, ["tiny-dlm@low_confidence"])
    assert why.startswith("_No generation in this run had a harmful intermediate prediction")
    assert why.endswith(" For reference, the canvas of one DLM generation:")
    assert [(v["run"], v["position"], v["note"]) for v in views] == \
        [("tiny-dlm@low_confidence", 0, " (not a revision: shown to illustrate the canvas)")]
    why, views = RF.worked_examples([recovery("ar@ar", kind="ar")], 2, ["ar@ar"])
    assert views == [] and "For reference" not in why


def test_incomplete_cases_are_the_deepest_dips_over_all_runs():
    a = recovery("a@ar", kind="ar", min_sigma=[(0, 0.2), (2, 0.05)])
    b = recovery("b@low_confidence", min_sigma=[(1, 0.1), (0, 0.25)])
    cases = RF.incomplete_cases([a, b], 3)
    assert [(r.run, i) for r, i in cases] == [("a@ar", 2), ("b@low_confidence", 1), ("a@ar", 0)]
    panels = RF.case_panels(cases)
    np.testing.assert_array_equal(panels["sigma"][1], b.sigma[1])
    np.testing.assert_array_equal(panels["text_sig"][0], a.text_sig[2])
    assert panels["titles"][0] == "a@ar · flip_attack #0\nmin σ 0.05, final σ 0.90"
    assert RF.case_items(cases)[2] == {"run": "a@ar", "set_name": "raw", "position": 0, "harmful": True,
                                       "text": "a@ar text 0 "}
    assert RF.incomplete_cases([recovery("c@ar", kind="ar")], 3) == []


# ------------------------------------------------------------------------------------------------ sampling
def run_eval(run, kind, family, attacks=("flip_attack",), rs=False):
    rates = {("all jailbreaks", "asr", 0.5): wilson(3, 10), ("all jailbreaks", "irr", 0.5): wilson(4, 10),
             ("all jailbreaks", "irr", 0.1): wilson(1, 10)}
    sets = {"random_search": SimpleNamespace(prompts=["p0", "p1"], traces=SimpleNamespace(texts=["t0", "t1"]))}
    return SimpleNamespace(run=run, kind=kind, family=family, attacks=list(attacks), sets=sets if rs else {},
                           rate=lambda s, m, lam=0.5: rates[(s, m, lam)])


def test_sampling_panels_pool_the_attacks_and_shade_the_papers_ranges():
    rs = [run_eval("d@low_confidence", "dlm", "DLM"), run_eval("a@ar", "ar", "AR"),
          run_eval("x@ar", "ar", "AR", attacks=())]
    irr = S.dlm_irr_panel(rs, [0.5, 0.1])
    assert irr == {"irr": {"d@low_confidence": {0.5: wilson(4, 10), 0.1: wilson(1, 10)}},
                   "families": {"d@low_confidence": "DLM"}}
    assert S.dlm_irr_panel(rs[1:], [0.5]) == {"irr": {}, "families": {}}
    asr = S.family_asr_panel(rs)
    assert list(asr["rates"]) == ["d@low_confidence", "a@ar"] and len(asr["families"]) == 3  # x@ar: no attacks
    lo, hi = paper_family_asr("DLM")
    assert asr["bands"][1] == (lo, hi, f"paper: DLM models {lo:.0%}-{hi:.0%} (its 5 attacks)", "DLM")


def test_budget_curves_of_the_curve_runs_reuse_the_known_replies(monkeypatch):
    calls = []

    def fake_curve(exp, spec, result, judge, checkpoints=None, known=None):
        calls.append((exp, spec, result, judge, checkpoints, known))
        return AD.BudgetCurve(run=spec, iterations=list(checkpoints), asr=[wilson(1, 4), wilson(3, 4)],
                              n_distinct=2, n_total=4)

    monkeypatch.setattr(AD, "budget_curve", fake_curve)
    adv = SimpleNamespace(exp="EXP", judge="J", cfg=SimpleNamespace(checkpoints=[0, 10]),
                          random_search=lambda run: f"RS {run}", curve_targeted=lambda run: run != "b@ar")
    rs = [run_eval("a@ar", "ar", "AR", rs=True), run_eval("b@ar", "ar", "AR", rs=True),
          run_eval("c@ar", "ar", "AR")]
    curves = S.budget_curves(adv, rs)
    assert calls == [("EXP", "a@ar", "RS a@ar", "J", [0, 10], {"p0": "t0", "p1": "t1"})]
    assert S.budget_panel(curves) == {"curves": {"a@ar": ([0, 10], [wilson(1, 4), wilson(3, 4)])}}
    assert [(r["run"], r["iterations (budget)"]) for r in S.budget_rows(curves)] == [("a@ar", 0), ("a@ar", 10)]


def test_delta_panel_agreement_and_conclusions(monkeypatch):
    est = Estimate(0.1, 0.0, 0.2, "paired bootstrap", signed=True)
    comp = Comparison("m", "m@dlm-ar", "m@low_confidence", 0.5,
                      [{"set": "roleplay", "paper": "WildJailbreak", "d_rr": est, "d_asr": est, "d_irr": est}])
    panel = delta_panel(comp)
    assert panel["title"] == "m@low_confidence vs m@dlm-ar" and panel["paper"] is PAPER_TABLE2
    assert panel["rows"][0]["set"] == S.set_label("roleplay") != "roleplay" and comp.rows[0]["set"] == "roleplay"

    monkeypatch.setattr(SR, "judge_agreement", lambda results, a, b: {
        "names": ("heuristic", "llm"), "n": 8, "agreement": 0.75, "kappa": 0.5, "rate_a": 0.25, "rate_b": 0.375})
    note = SR.agreement_note([], "A", SimpleNamespace(describe=lambda: "The LLM judge."))
    assert note == ("**Judge agreement** (heuristic vs llm, 8 responses to harmful prompts): raw agreement 0.75, "
                    "Cohen's κ 0.50; harmful rate 0.25 vs 0.38.\n\nThe LLM judge.")

    monkeypatch.setattr(SR, "conclusions", lambda *a, **k: ["- sampling"])
    monkeypatch.setattr(AD, "adaptive_conclusions", lambda *a, **k: ["- adaptive"])
    monkeypatch.setattr(AD, "cost_line", lambda adv: "12 s")
    adv = SimpleNamespace(cfg=SimpleNamespace(any_on=True, describe=lambda: "Budgets."))
    assert SR.chapter_conclusions([], [], None, adv) == \
        "- sampling\n- adaptive\n- **Adaptive-attack budgets and cost**: Budgets. 12 s."
    adv.cfg.any_on = False
    assert SR.chapter_conclusions([], [], None, adv) == "- sampling\n- adaptive"


# ------------------------------------------------------------------------------------------------ geometry
def geometry(run, fallback=None, projection=True):
    anchors = SimpleNamespace(fallback=fallback, label=f"anchors of {run}", separation=np.linspace(0, 1, 4))
    proj = SimpleNamespace(Z=np.zeros((3, 2)), labels=np.array(["a", "b", "b"]), axes=("LD 1", "LD 2"),
                           summary="acc 0.9") if projection else None
    return SimpleNamespace(run=run, anchors=anchors, by_group={"harmless": np.ones((2, 4))}, projection=proj)


def test_geometry_panels():
    results = {"smollm2-135m-refusal-v3": geometry("smollm2-135m-refusal-v3@ar"),
               "smollm2-135m-dlm@low_confidence": geometry("smollm2-135m-dlm@low_confidence", projection=False),
               "organism-ar": geometry("organism-ar@ar", fallback="harmful")}
    panel = G.trajectory_panel(results["organism-ar"])
    assert panel["title"] == "organism-ar@ar" and panel["note"] == "anchors of organism-ar@ar"
    assert G.trajectory_panel(results["smollm2-135m-refusal-v3"])["note"] is None
    assert [p["title"] for p in G.headline_panels(results)] == ["smollm2-135m-refusal-v3",
                                                                "smollm2-135m-dlm@low_confidence"]
    assert [p["title"] for p in G.projection_panels(results)] == ["smollm2-135m-refusal-v3@ar\nacc 0.9",
                                                                  "organism-ar@ar\nacc 0.9"]
    assert G.projection_note(results).startswith("No projection for smollm2-135m-dlm@low_confidence: fewer than")
    assert G.projection_note({"o": results["organism-ar"]}) == ""
    assert list(G.separation_curves(results)) == ["smollm2-135m-refusal-v3@ar", "smollm2-135m-dlm@low_confidence",
                                                  "organism-ar@ar *"]
