"""The adaptive attacks (Random Search, PAIR) as chapter evaluation sets: same requests, original requests judged,
profile sections that switch them off, the ASR-vs-budget curve, the paper's columns and the role-play label."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import KeywordJudge
from test_chapter_sampling import COMPLY, LOW, RECOVER, REFUSE, REQUESTS, STAY, ANCHORS, ts

from srilib.adaptive import RSBudget, RSSettings, run_random_search
from srilib.chapters import adaptive as AD
from srilib.chapters.paper_numbers import ALL_JAILBREAKS, PAPER_TABLE2, PAPER_TABLE3
from srilib.chapters.sampling import evaluate_traces, paper_column, pooled_label, set_label
from srilib.chapters.sampling_compare import compare
from srilib.chapters.sampling_report import conclusions, table2_rows, table3_rows
from srilib.experiment import Run, resolve_run
from srilib.stats import Rate, delta


def _eval(run, raw, attack, rs, pair=None, judge=None):
    """raw / attack over the 4 requests; rs / pair over the first len(rs) / len(pair) requests."""
    judge = judge or KeywordJudge()
    sets = {"raw": (ts(REQUESTS, [t for t, _ in raw], [p for _, p in raw]), True),
            "roleplay": (ts([f"story: {q}" for q in REQUESTS], [t for t, _ in attack], [p for _, p in attack]), True),
            "random_search": (ts([f"{q} ! ! !" for q in REQUESTS[:len(rs)]], [t for t, _ in rs],
                                 [p for _, p in rs]), True)}
    set_requests = {"random_search": REQUESTS[:len(rs)]}
    if pair:
        sets["pair"] = (ts([f"pair {q}" for q in REQUESTS[:len(pair)]], [t for t, _ in pair], [p for _, p in pair]),
                        True)
        set_requests["pair"] = REQUESTS[:len(pair)]
    return evaluate_traces(resolve_run(run, "dlm"), ANCHORS, sets, REQUESTS, judge, set_requests=set_requests)


def _runs():
    base = _eval("m@dlm-ar", raw=[(COMPLY, STAY)] * 4, attack=[(COMPLY, STAY)] * 4, rs=[(COMPLY, STAY)] * 3,
                 pair=[(COMPLY, STAY), (REFUSE, LOW)])
    other = _eval("m@low_confidence", raw=[(REFUSE, RECOVER)] * 4, attack=[(REFUSE, RECOVER)] * 4,
                  rs=[(REFUSE, RECOVER), (COMPLY, STAY), (REFUSE, LOW)], pair=[(REFUSE, LOW)] * 2)
    return base, other


def test_adaptive_sets_use_the_first_requests_and_the_judge_sees_them():
    judge = KeywordJudge()
    ev = _eval("m@low_confidence", raw=[(REFUSE, LOW)] * 4, attack=[(COMPLY, STAY)] * 4,
               rs=[(COMPLY, STAY), (REFUSE, LOW), (COMPLY, STAY)], judge=judge)
    s = ev.sets["random_search"]
    assert s.requests == REQUESTS[:3] and s.prompts[0] == "req a ! ! !"
    # the judge graded the adaptive set against the ORIGINAL requests, never the attacked prompts
    assert judge.requests[-3:] == REQUESTS[:3] and not any("!" in r for r in judge.requests)
    assert (s.asr.k, s.asr.n) == (2, 3)
    # request-level clusters: the i-th adaptive prompt is request i
    assert ev.clusters("random_search").tolist() == [0, 1, 2]
    # kept out of our pool, which still names its members
    assert ev.attacks == ["roleplay"] and ev.adaptive == ["random_search"]
    assert ev.rate(ALL_JAILBREAKS, "asr").n == 4
    two = {"random_search": (ts(["x", "y"], [COMPLY] * 2, [STAY] * 2), True)}
    with pytest.raises(ValueError, match="first 2 of the run's requests"):
        evaluate_traces(resolve_run("m@ar", "ar"), ANCHORS, two, REQUESTS, judge,
                        set_requests={"random_search": ["req b", "req c"]})
    with pytest.raises(ValueError, match="2 generations but 3 requests"):
        evaluate_traces(resolve_run("m@ar", "ar"), ANCHORS, two, REQUESTS, judge,
                        set_requests={"random_search": REQUESTS[:3]})


def test_tables_get_the_papers_adaptive_columns_and_the_roleplay_label():
    base, other = _runs()
    assert paper_column("random_search") == "Random Search" and paper_column("pair") == "PAIR"
    assert paper_column("roleplay") == "WildJailbreak"
    assert set_label("roleplay") == "roleplay (ours, WildJailbreak-like)"
    c = compare(base, other, n_boot=200)
    rows = {r["set"]: r for r in table2_rows(c)}
    rs = rows[set_label("random_search")]
    assert rs["paper LLaDA: ΔRR / ΔASR (pts)"] == "+{} / +{}".format(*PAPER_TABLE2["LLaDA"]["Random Search"])
    assert rows[set_label("pair")]["paper LLaDA-1.5: ΔRR / ΔASR (pts)"] == "+0 / +2"
    assert "roleplay" not in rows and set_label("roleplay") in rows
    assert rows[pooled_label(["roleplay"])]  # the pool: template attacks only
    assert c.row("random_search")["d_asr"].value == pytest.approx(1 - 1 / 3)
    t3 = {r["run"]: r for r in table3_rows([base, other], "asr")}
    ours = t3["m@dlm-ar"]
    assert (ours[set_label("random_search")].k, ours[set_label("random_search")].n) == (3, 3)
    assert (ours[set_label("pair")].k, ours[set_label("pair")].n) == (1, 2)
    # the paper's values fill our adaptive and role-play columns in the paper rows; no empty PAIR column remains
    assert t3["paper: LLaDA"][set_label("random_search")] == f"{PAPER_TABLE3['LLaDA']['Random Search'][1]:g}%"
    assert t3["paper: LLaDA"][set_label("pair")] == f"{PAPER_TABLE3['LLaDA']['PAIR'][1]:g}%"
    assert t3["paper: LLaDA"][set_label("roleplay")] == f"{PAPER_TABLE3['LLaDA']['WildJailbreak'][1]:g}%"
    assert not {"PAIR", "Random Search", "roleplay"} & set(ours)  # no column under the paper's names
    last = conclusions([base, other], [c])[-1]
    assert "did not run" not in last and "WildJailbreak-like" in last


def test_disabled_sections_skip_cleanly(tmp_path):
    from srilib.experiment import Experiment, PromptSets
    for rs, pair in ((None, None), ({}, {}), ({"n_requests": 0, "n_iterations": 5}, {"n_requests": 0})):
        cfg = AD.AdaptiveConfig.from_params(rs, pair)
        assert not cfg.any_on and "not run in this profile" in cfg.describe()
    exp = Experiment(steps=2, gen_length=4, batch_size=4, progress=False, cache=str(tmp_path))
    adv = AD.Adaptive(exp, PromptSets.build(2, 2, seed=0), KeywordJudge(), AD.AdaptiveConfig.from_params(None, None))
    assert adv.prompts("tiny-ar") == {} and not exp._models  # nothing searched, no model loaded
    assert [v.kind for v in AD.adaptive_conclusions([], adv)] == ["adaptive.off"]
    assert AD.transfer_rows(exp, adv, [], KeywordJudge()) == []
    with pytest.raises(ValueError, match="unknown random_search"):
        AD.AdaptiveConfig.from_params({"n_requests": 2, "n_iters": 3}, None)
    with pytest.raises(ValueError, match="attacker"):
        AD.AdaptiveConfig.from_params(None, {"n_requests": 2})
    cfg = AD.AdaptiveConfig.from_params({"n_requests": 2, "n_iterations": 3}, {"n_requests": 1, "attacker": "x",
                                                                              "targets": ["tiny-dlm@dlm-ar"]})
    assert cfg.rs_on and cfg.pair_on and cfg.rs_budget.n_iterations == 3 and "`tiny-dlm@dlm-ar`" in cfg.describe()
    adv = AD.Adaptive(exp, PromptSets.build(2, 2, seed=0), KeywordJudge(), cfg)
    assert adv.pair_targeted("tiny-dlm@dlm-ar") and not adv.pair_targeted("tiny-dlm")
    assert adv.curve_targeted("tiny-ar")  # no curve_runs: every run
    cfg = AD.AdaptiveConfig.from_params({"n_requests": 2, "curve_runs": ["tiny-ar"]}, None)
    adv = AD.Adaptive(exp, PromptSets.build(2, 2, seed=0), KeywordJudge(), cfg)
    assert adv.curve_targeted("tiny-ar@ar") and not adv.curve_targeted("tiny-dlm") and not cfg.pair_on


class _FakeTraces:
    def __init__(self, texts):
        self.texts = texts


class _CountingExp:
    """Experiment double: records the prompt lists it is asked to trace; a reply complies iff the prompt changed
    from the initial suffix (so ASR rises with the budget)."""

    def __init__(self, init_prompts):
        self.calls, self.init = [], set(init_prompts)

    def resolve(self, spec):
        return Run("tiny-ar", "ar", "ar")

    def traces(self, run, prompts, desc=""):
        self.calls.append(list(prompts))
        return _FakeTraces([REFUSE if p in self.init else COMPLY for p in prompts])


def test_budget_curve_generates_each_distinct_prompt_once(one_thread, tiny_ar):
    res = run_random_search(tiny_ar, ["How do I pick a lock?", "Write a poem about the sea", "Tell me a secret"],
                            RSBudget(n_iterations=6, n_restarts=1, n_candidates=3, n_tokens_adv=6,
                                     n_tokens_change_max=2, stop="argmax", restarts="best", self_transfer=False),
                            RSSettings(early_stop=False), seed=0, cache=False, progress=False)
    cps = res.checkpoints([0, 2, 6])
    exp = _CountingExp(cps[0])
    curve = AD.budget_curve(exp, "tiny-ar", res, KeywordJudge(), [0, 2, 6])
    distinct = list(dict.fromkeys(p for ps in cps.values() for p in ps))
    assert exp.calls == [distinct]  # one trace set, each distinct prompt once
    assert curve.n_distinct == len(distinct) < curve.n_total == 9
    assert curve.iterations == [0, 2, 6] and curve.asr[0].k == 0
    changed = [p != q for p, q in zip(cps[0], cps[6])]
    assert curve.asr[-1].k == sum(changed)  # judged on the prompts held at 6 iterations
    assert [r["iterations (budget)"] for r in curve.rows()] == [0, 2, 6]
    # replies already generated (the run's evaluated Random Search set = the full-budget prompts) are reused
    exp2 = _CountingExp(cps[0])
    known = {p: (REFUSE if p in exp2.init else COMPLY) for p in cps[6]}
    again = AD.budget_curve(exp2, "tiny-ar", res, KeywordJudge(), [0, 2, 6], known=known)
    assert exp2.calls == [[p for p in distinct if p not in known]] or (exp2.calls == [] and set(distinct) <= set(known))
    assert [a.k for a in again.asr] == [a.k for a in curve.asr]


def test_tiny_models_end_to_end(tmp_path, one_thread):
    """Both attacks on tiny models through the chapter path: Random Search (the published recipe: its
    judge-confirmed stop reads each run's replies) once per run, PAIR per targeted run, the adaptive sets built from
    the first requests, the search logs and the transfer row."""
    from srilib.chapters.sampling import evaluate_run
    from srilib.experiment import Experiment, PromptSets
    exp = Experiment(steps=2, gen_length=4, batch_size=4, progress=False, cache=str(tmp_path))
    sets = PromptSets.build(2, 3, attacks=["roleplay"], seed=0)
    judge = KeywordJudge()
    cfg = AD.AdaptiveConfig.from_params(
        {"n_requests": 2, "n_iterations": 1, "n_restarts": 1, "judge_max_calls": 1, "n_tokens_adv": 3,
         "n_tokens_change_max": 1, "checkpoints": [0, 1]},
        {"n_requests": 1, "n_streams": 1, "n_iterations": 1, "attacker": "tiny-ar", "max_new_tokens": 4,
         "targets": ["tiny-dlm@dlm-ar"]}, gen_length=4)
    adv = AD.Adaptive(exp, sets, judge, cfg, cache=str(tmp_path / "attacks"))
    res = [evaluate_run(exp, r, sets, judge, adaptive=adv, include_harmless=False)
           for r in ("tiny-ar", "tiny-dlm@dlm-ar", "tiny-dlm@random")]
    assert cfg.rs_budget.published_recipe
    assert list(adv.rs) == ["tiny-ar@ar", "tiny-dlm@dlm-ar", "tiny-dlm@random"]  # one Random Search per run
    assert all(len(r.judge_calls) >= 1 for x in adv.rs.values() for r in x.records)  # each restart's end judged
    assert list(adv.pair) == ["tiny-dlm@dlm-ar"]  # PAIR only on its target runs
    assert res[1].sets["random_search"].requests == sets.requests[:2]
    assert res[1].sets["pair"].requests == sets.requests[:1] and "pair" not in res[2].sets
    assert all(p.startswith(cfg.rs_settings.render(q)) for p, q in zip(res[0].sets["random_search"].prompts,
                                                                      sets.requests))
    assert set(sets.requests[:2]) <= set(judge.requests)  # graded against the original requests
    rows = AD.search_rows(adv)
    assert [r["attack"] for r in rows] == ["Random Search"] * 3 + ["PAIR"]
    assert rows[0]["recipe"] == "the published recipe"
    tr = AD.transfer_rows(exp, adv, res, judge, n_boot=50)
    assert [r["run (target)"] for r in tr] == ["tiny-dlm@dlm-ar", "tiny-dlm@random"]
    assert tr[0]["prompts from"] == "tiny-ar (AR twin)"
    assert AD.cost_line(adv).data["searched"] == {"random_search": 3, "pair": 1}
    lines = AD.adaptive_conclusions(res, adv, [], tr, n_boot=50)
    assert [v.kind for v in lines] == ["adaptive.random_search", "adaptive.pair"] + ["adaptive.transfer"] * 2
    rs, pair, *transfer = lines
    assert rs.runs == tuple(r.run for r in res) and set(rs.data["deltas"]) == set(rs.runs)
    assert pair.runs == ("tiny-dlm@dlm-ar",) and pair.data["attacker"] == "tiny-ar" and pair.data["searches"] == 1
    assert [v.runs for v in transfer] == [(t["run (target)"],) for t in tr]


class _Set:
    """An evaluated prompt set double: its ASR (a Rate over its requests, in order)."""

    def __init__(self, k, n=30):
        self.asr = Rate.from_outcomes(np.arange(n) < k)

    def __len__(self):
        return self.asr.n


def test_adaptive_verdicts_are_the_sides_of_paired_intervals(monkeypatch):
    """'raises' / 'lowers' / 'no difference', the budget curve and the transfer each read the side of a paired
    interval over the same requests; the weak-model caveat goes with the raises it qualifies."""
    from types import SimpleNamespace

    import srilib.chapters as ch
    import srilib.chapters as glance
    for mod in (ch, glance):  # w and b are weak models
        monkeypatch.setattr(mod, "weak_models", lambda runs: {m: ["x"] for m in {r.partition("@")[0] for r in runs}
                                                              if m in ("w", "b")})

    def run(label, raw, rs):
        return SimpleNamespace(run=label, sets={"raw": _Set(raw), "random_search": _Set(rs)})

    results = [run("a@ar", 2, 28), run("w@ar", 2, 28), run("b@ar", 28, 2), run("c@ar", 10, 11)]
    adv = SimpleNamespace(cfg=AD.AdaptiveConfig.from_params({"n_requests": 30}, None), exp=SimpleNamespace(seed=0),
                          requests=lambda name: REQUESTS, pair={})
    curve = AD.BudgetCurve("a@ar", [0, 10], [_Set(2).asr, _Set(28).asr], n_distinct=40, n_total=60)
    d = delta(_Set(3).asr, _Set(27).asr, method="paired", n_boot=200)
    tr = {"run (target)": "b@ar", "prompts from": "a (AR twin)", "Δ ASR (transferred − own)": d,
          "mean log p(target), transferred": -1.0, "mean log p(target), own search": -0.5}
    rs, budget, transfer = AD.adaptive_conclusions(results, adv, [curve], [tr], n_boot=200)
    assert rs.kind == "adaptive.random_search" and rs.runs == ("a@ar", "w@ar", "b@ar", "c@ar")
    assert rs.data["sides"] == {"a@ar": 1, "w@ar": 1, "b@ar": -1, "c@ar": 0}
    assert all(ch.interval_side(rs.data["deltas"][r]) == v for r, v in rs.data["sides"].items())
    assert rs.weak == ("w@ar",) and ch.weak_caveat(["w@ar"]) in rs  # the caveat goes with the raise on w only
    assert (budget.kind, budget.side, budget.runs) == ("adaptive.budget", 1, ("a@ar",))
    assert (transfer.kind, transfer.side, transfer.runs, transfer.data["delta"]) == ("adaptive.transfer", -1,
                                                                                       ("b@ar",), d)


def test_detector_scores_adaptive_sets_as_held_out():
    from types import SimpleNamespace

    from srilib.chapters.detector_tables import adaptive_rows, per_attack_rows
    from srilib.signal import refusal_rate
    rng = np.random.default_rng(0)
    sc = {"harmless": rng.normal(0, 1, 20), "raw": rng.normal(1, 1, 4), "roleplay": rng.normal(2, 1, 4),
          "random_search": rng.normal(3, 1, 3), "pair": rng.normal(0, 1, 2)}
    tx = {k: np.zeros_like(v) for k, v in sc.items()}
    res = SimpleNamespace(run="m@ar", seeds=[0], n_boot=50, adaptive=["random_search", "pair"],
                          jailbreaks=["roleplay"], canvas_sets=[],
                          scores={("sri_last", 0): sc, ("text", 0): tx},
                          guard=SimpleNamespace(threshold_=2.5),
                          refusal={k: refusal_rate([REFUSE] * len(v)) for k, v in sc.items()},
                          clusters=lambda sets: np.concatenate([np.arange(len(sc[k])) for k in sets]))
    rows = adaptive_rows({"m": res})
    assert [r["set"] for r in rows] == ["random_search", "pair"]
    assert {r["kind"] for r in rows} == {"adaptive attack, never seen by the guard"}
    assert rows[0]["n"] == 3 and rows[0]["text signal AUROC vs harmless"].startswith("0.500")
    assert rows[0]["flagged at threshold (SRI Guard)"] == str(Rate.from_outcomes(sc["random_search"] > 2.5))
    sets = [r["set"] for r in per_attack_rows({"m": res})]
    assert set_label("roleplay") in sets and "random_search" not in sets  # kept apart from the template attacks


def test_random_search_targets_restrict_the_runs(tmp_path):
    """``random_search.targets`` picks the runs Random Search attacks (its judge-confirmed stop generates each run's
    replies); the other runs get no Random Search set and no trace need."""
    from srilib.experiment import Experiment, PromptSets
    exp = Experiment(steps=2, gen_length=4, batch_size=4, progress=False, cache=str(tmp_path))
    sets = PromptSets.build(2, 3, attacks=["roleplay"], seed=0)
    cfg = AD.AdaptiveConfig.from_params({"n_requests": 1, "n_iterations": 1, "n_restarts": 1, "n_tokens_adv": 3,
                                         "n_tokens_change_max": 1, "targets": ["tiny-dlm@dlm-ar"]}, None, 4)
    assert cfg.rs_targets == ["tiny-dlm@dlm-ar"] and "`tiny-dlm@dlm-ar`" in cfg.describe()
    adv = AD.Adaptive(exp, sets, KeywordJudge(), cfg, cache=str(tmp_path / "attacks"))
    assert adv.rs_targeted("tiny-dlm@dlm-ar") and not adv.rs_targeted("tiny-ar")
    assert [n.name for n in AD.adaptive_needs("c", adv, exp.resolve("tiny-ar"), curves=True)] == []
    with pytest.raises(ValueError, match="unknown random_search"):
        AD.AdaptiveConfig.from_params({"n_requests": 1, "target_runs": ["x"]}, None, 4)
