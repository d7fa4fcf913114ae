"""Detector chapter, DiffuGuard part: the paper Table 14 counterpart (undefended / DiffuGuard / SRI Guard ASR on the
canvas attacks) and DiffuGuard's overhead row in the defenses table, on the tiny DLM (offline)."""
import ast
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import srilib.chapters.detector_diffuguard as dgmod
from srilib.chapters.defenses import defense_rows, defense_run_rows, run_defenses, timing_batch
from srilib.chapters.detector import CANVAS, DIFFUGUARD, GuardConfig, guard_prompts, run_detector, transfer_matrix
from srilib.chapters.paper_numbers import PAPER_CANVAS
from srilib.chapters.detector_conclusions import conclusion_lines, table14_conclusion
from srilib.chapters.detector_diffuguard import diffuguard_run, run_diffuguard, table14_rows, timed_pair, timed_plain
from srilib.chapters.detector_tables import canvas_rows
from srilib.chapters import verdicts
from srilib.experiment import Experiment, PromptSets
from srilib.judges import HeuristicJudge
from srilib.stats import Rate
from srilib.experiment import available_profiles, load_profile
from srilib.samplers.diffuguard import DiffuGuardSampler

ROOT = Path(__file__).resolve().parents[1]
CFG = GuardConfig(calib_fraction=0.25, min_calibration=3, epochs=20)
CANVAS_ATTACKS = ["prefill_affirmative", "interleaved_template"]


@pytest.fixture(scope="module")
def dlm(tmp_path_factory):
    exp = Experiment(steps=4, gen_length=40, batch_size=8, cache=str(tmp_path_factory.mktemp("cache")),
                     progress=False)
    sets = PromptSets.build(n_anchor=3, n_eval=4, attacks=["refusal_suppression"], seed=0)
    train = guard_prompts(12)
    res = run_detector(exp, "tiny-dlm", sets, train, seeds=[0], cfg=CFG, n_boot=20, canvas_attacks=CANVAS_ATTACKS)
    rep = run_defenses(exp, "tiny-dlm", sets, res, train, HeuristicJudge(),
                       dlm_ppl_scorer=None, self_examine=False, n_timing=4,
                       repeats=2, gen_rounds=1, guard_model=None)
    return exp, sets, train, res, rep


def test_diffuguard_run_keeps_the_runs_settings(dlm):
    exp = dlm[0]
    assert diffuguard_run(exp, "tiny-dlm@low_confidence").label == "tiny-dlm@diffuguard"
    assert diffuguard_run(exp, "tiny-dlm@low_confidence:b8").label == "tiny-dlm@diffuguard:b8"
    s = exp.sampler(diffuguard_run(exp, "tiny-dlm@dlm-ar"))
    assert isinstance(s, DiffuGuardSampler) and (s.gen_length, s.steps, s.block_length) == (40, 4, 40)
    # the settings of the authors' hidden-state runs with SAR (test.sh), untuned
    assert (s.sp_mode, s.sp_threshold, s.alpha0, s.anneal, s.audit) == ("hidden", 0.1, 0.3, "block", True)


def test_table14_and_overhead_row(dlm, one_thread):
    exp, sets, _, res, rep = dlm
    res, rep = replace(res, diffuguard={}), replace(rep, rows=list(rep.rows))
    judge = HeuristicJudge()
    off = table14_rows({"r": res}, judge, sets.requests)  # DiffuGuard switched off: its column says so
    assert [r["ASR DiffuGuard"] for r in off] == ["not run", "not run"]
    assert DIFFUGUARD not in [r["defense"] for r in defense_rows({"r": rep})]
    not_run, = verdicts(conclusion_lines({"r": res}, {"r": rep}, transfer_matrix({"r": res})), "detector.not_run")
    assert "diffuguard" in not_run.data["not_run"]

    out = run_diffuguard(exp, "tiny-dlm", sets, res, rep, judge, n_timing=4)
    assert res.diffuguard is out and out["run"] == "tiny-dlm@diffuguard"
    assert out["settings"] == exp.sampler(diffuguard_run(exp, "tiny-dlm")).describe()  # the settings used
    assert set(out["texts"]) == {CANVAS + a for a in CANVAS_ATTACKS}
    rows = table14_rows({"r": res})  # the cells run_diffuguard stored
    assert [r["canvas attack"] for r in rows] == ["prefill_affirmative (~PAD)", "interleaved_template (~DIJA)"]
    for r, a in zip(rows, CANVAS_ATTACKS):
        for col in ("ASR undefended", "ASR DiffuGuard", "ASR SRI Guard"):
            assert r[col].endswith(f"/{len(sets.requests)})") and "[" in r[col], (col, r[col])  # Wilson interval
        assert "[" in r["DiffuGuard − undefended (paired)"] and "[" in r["SRI Guard − DiffuGuard (paired)"]
        assert (r["paper undefended"], r["paper DiffuGuard"], r["paper SRI Guard"]) == PAPER_CANVAS[a][1:]
    # the undefended and SRI Guard columns are the chapter's existing canvas numbers
    old = {r["canvas attack"]: r for r in canvas_rows({"r": res}, judge, sets.requests)}
    for r in rows:
        o = old[r["canvas attack"].split(" ")[0]]
        assert r["ASR undefended"] == o["ASR undefended"] and r["ASR SRI Guard"] == o["ASR after SRI Guard"]
    # the DiffuGuard column is the judge on DiffuGuard's own generations of the same requests
    k = CANVAS + "prefill_affirmative"
    dg_rate = Rate.from_outcomes(judge.judge(sets.requests, out["texts"][k]))
    assert rows[0]["ASR DiffuGuard"] == str(dg_rate)

    row = rep.row(DIFFUGUARD)
    assert row["status"] == "run" and row["stage"] == "decoding" and row["plain_seconds"] == rep.plain_seconds
    assert row["overhead %"] == pytest.approx(100 * (row["guarded_seconds"] - row["plain_seconds"])
                                              / row["plain_seconds"])
    assert row["overhead incl. capture %"] == row["overhead %"]
    assert not {"harmless_refused", "rr", "asr"} & set(row)  # not measured without diffuguard_rates
    table = {r["defense"]: r for r in defense_rows({"r": rep})}
    assert table[DIFFUGUARD]["harmless refused % (paper's FP)"] == "not measured"
    assert table[DIFFUGUARD]["paper overhead %"].startswith("–") and table["SRI Guard"]["paper overhead %"] == 0.02
    assert any(r["defense"] == DIFFUGUARD for r in defense_run_rows({"r": rep}))
    lines = conclusion_lines({"r": res}, {"r": rep}, transfer_matrix({"r": res}))
    assert [v.data["attack"] for v in verdicts(lines, "detector.table14")] == CANVAS_ATTACKS
    overhead, = verdicts(lines, "detector.diffuguard_overhead")
    assert overhead.data["overhead"] == pytest.approx(row["overhead %"]) and not overhead.data["rates"]
    assert "diffuguard" not in verdicts(lines, "detector.not_run")[0].data["not_run"]


def test_diffuguard_rates_when_affordable(dlm, one_thread):
    exp, sets, _, res, rep = dlm
    res, rep = replace(res, diffuguard={}), replace(rep, rows=list(rep.rows))
    run_diffuguard(exp, "tiny-dlm", sets, res, rep, HeuristicJudge(), rates=True, n_timing=4)
    row = rep.row(DIFFUGUARD)
    assert row["harmless_refused"].n == len(sets.eval_harmless) and row["asr"].n == len(sets.requests)


def test_jailbreaks_are_audited_against_their_requests(dlm, monkeypatch, one_thread):
    """Under diffuguard_rates each template jailbreak is generated with its un-attacked request as the audit's
    reference (the authors' compute_baseline_hidden(vanilla_text)), harmless prompts with themselves; the
    reference is in the trace key and the audit log."""
    exp, sets, _, res, rep = dlm
    res, rep = replace(res, diffuguard={}), replace(rep, rows=list(rep.rows))
    calls, real = [], exp.traces

    def spy(spec, prompts, desc="", references=None):
        ts = real(spec, prompts, desc, references=references)
        calls.append((desc, references, ts))
        return ts
    monkeypatch.setattr(exp, "traces", spy)
    run_diffuguard(exp, "tiny-dlm", sets, res, rep, HeuristicJudge(), rates=True, n_timing=4)
    got = {desc: (refs, ts) for desc, refs, ts in calls}
    assert got["harmless"][0] is None
    for a in res.jailbreaks:
        refs, ts = got[a]
        assert refs == sets.requests and ts.meta["sampler_config"]["references"]["n"] == len(sets.requests)
        assert {e["reference"] for row in ts.meta["audit"] for e in row} == {"request"}
    assert {e["reference"] for row in got["harmless"][1].meta["audit"] for e in row} == {"prompt"}
    t = {r["defense"]: r for r in defense_rows({"r": rep})}[DIFFUGUARD]
    assert isinstance(t["harmless refused % (paper's FP)"], float) and isinstance(t["jailbreak ASR %"], float)


def test_overhead_is_measured_against_the_runs_plain_generation(dlm, monkeypatch):
    exp, sets, _, res, rep = dlm
    seen = {}

    def fake_timed_plain(sampler, lm, prompts, rounds=1, warmup=2):
        seen.update(guarded=sampler, prompts=list(prompts))
        return 0.75
    request = {p: r for a in res.jailbreaks for p, r in zip(sets.attacked[a], sets.requests)}

    def fake_timed_pair(plain, guarded, lm, prompts, rounds=1, warmup=2):
        seen.update(plain=plain, guarded=guarded, prompts=list(prompts))
        return 0.4, 0.5

    monkeypatch.setattr(dgmod, "timed_plain", fake_timed_plain)
    monkeypatch.setattr(dgmod, "timed_pair", fake_timed_pair)
    # the base is the plain untraced time run_defenses measured on the same timing batch (every defense's base)
    r1, p1 = replace(res, diffuguard={}), replace(rep, rows=list(rep.rows), plain_seconds=0.5)
    run_diffuguard(exp, "tiny-dlm", sets, r1, p1, HeuristicJudge(), n_timing=4)
    assert isinstance(seen["guarded"], DiffuGuardSampler) and "plain" not in seen
    assert seen["prompts"] == timing_batch(sets, res.jailbreaks, 4)  # the chapter's timing batch
    # timed as it runs: the batch's jailbreak prompts audited against their requests
    assert dict(seen["guarded"].references) == {p: request[p] for p in seen["prompts"] if p in request}
    assert p1.row(DIFFUGUARD)["overhead %"] == pytest.approx(50.0) and p1.row(DIFFUGUARD)["plain_seconds"] == 0.5
    # no plain untraced base in the report: the run's plain sampler is timed here, beside DiffuGuard
    seen.clear()
    r2, p2 = replace(res, diffuguard={}), replace(rep, rows=list(rep.rows), plain_is_traced=True)
    run_diffuguard(exp, "tiny-dlm", sets, r2, p2, HeuristicJudge(), n_timing=4)
    assert type(seen["plain"]).__name__ == "DiffusionSampler" and isinstance(seen["guarded"], DiffuGuardSampler)
    assert p2.row(DIFFUGUARD)["overhead %"] == pytest.approx(25.0) and p2.row(DIFFUGUARD)["plain_seconds"] == 0.4


def test_timers(fake_clock):
    class Fake:
        def __init__(self, *seconds):
            self.seconds, self.calls = seconds, 0

        def generate(self, lm, prompts):
            fake_clock.sleep(self.seconds[self.calls])
            self.calls += 1
            return list(prompts)

    plain, guarded = Fake(5.0, 0.01, 0.02), Fake(5.0, 0.03, 0.05)  # warm-up, then one call per round
    p, g = timed_pair(plain, guarded, None, ["a", "b", "c"], rounds=2)
    assert plain.calls == guarded.calls == 3 and p == pytest.approx(0.015) and g == pytest.approx(0.04)
    one = Fake(5.0, 0.02)
    assert timed_plain(one, None, ["a", "b"], rounds=1) == pytest.approx(0.02) and one.calls == 2  # warm-up + 1


def test_ar_runs_get_no_diffuguard(tmp_path):
    exp = Experiment(steps=3, batch_size=8, cache=str(tmp_path), progress=False)
    fake_res = type("R", (), {"diffuguard": {}})()
    assert run_diffuguard(exp, "tiny-ar", None, fake_res, None, HeuristicJudge()) == {}


def _cells(und, dg, sri, n=40):
    from srilib.stats import delta

    def rate(k):
        return Rate.from_outcomes(np.arange(n) < k)
    u, d, s = rate(und), rate(dg), rate(sri)
    return {"und": u, "dg": d, "sri": s, "dg_minus_und": delta(d, u, method="paired"),
            "sri_minus_und": delta(s, u, method="paired"), "sri_minus_dg": delta(s, d, method="paired")}


def test_verdicts_do_not_rank_overlapping_intervals(dlm):
    *_, res, _ = dlm
    k = CANVAS + "prefill_affirmative"
    close = replace(res, diffuguard={"judge": "heuristic", "table14": {k: _cells(20, 19, 18)}})
    v, = table14_conclusion({"r": close})
    assert v.data["sides"] == {"dg_minus_und": 0, "sri_minus_dg": 0} and v.weak == ()  # no verdict, no caveat
    far = replace(res, diffuguard={"judge": "heuristic", "table14": {k: _cells(36, 18, 2)}})
    v, = table14_conclusion({"r": far})
    assert v.kind == "detector.table14" and v.runs == (res.run,) and v.data["attack"] == "prefill_affirmative"
    assert v.data["sides"] == {"dg_minus_und": -1, "sri_minus_dg": -1}  # DiffuGuard lowers ASR, SRI Guard more
    assert v.weak == (res.run,)  # the fixture's tiny-dlm has unfiltered anchors
    assert "Paper (LLaDA, PAD): 0.53 undefended, 0.45 DiffuGuard, 0.29 SRI Guard" in v


def test_as_in_the_paper_carries_the_weak_caveat(dlm, monkeypatch):
    import srilib.chapters as ch
    *_, res, _ = dlm
    monkeypatch.setattr(ch, "weak_models", lambda runs: {"tiny-dlm": ["refuses too little"]})
    k = CANVAS + "prefill_affirmative"
    far = replace(res, diffuguard={"judge": "heuristic", "table14": {k: _cells(36, 18, 2)}})
    v, = table14_conclusion({"r": far})
    assert v.data["sides"] == {"dg_minus_und": -1, "sri_minus_dg": -1} and v.weak == (res.run,)
    assert v.count(ch.weak_caveat([res.run])) == 2  # each agreeing verdict carries the caveat in its own sentence


def test_profiles_and_notebook_have_the_switch():
    for name in available_profiles():
        p = load_profile(name).params_for("detector_transfer")
        assert isinstance(p.get("diffuguard"), bool) and isinstance(p.get("diffuguard_rates"), bool), name
    assert load_profile("smoke").params_for("detector_transfer")["diffuguard"] is True
    nb = json.loads((ROOT / "notebooks" / "detector_transfer.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {t.id: ast.literal_eval(n.value) for n in ast.parse("".join(params["source"])).body
              if isinstance(n, ast.Assign) for t in n.targets}
    assert isinstance(values["diffuguard"], bool) and isinstance(values["diffuguard_rates"], bool)
    code = ast.parse("\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"))
    called = {n.func.id for n in ast.walk(code) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "table14_rows" in called
