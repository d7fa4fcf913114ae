"""The adaptive attacks of the paper (Random Search and PAIR, paper Tables 2 and 3) as chapter evaluation sets.

:mod:`srilib.adaptive` does the searching (seeded, cached per request); this module turns a profile's
``random_search`` / ``pair`` sections into attacked prompt sets for every run of a chapter:

* Random Search runs the published recipe by default (:data:`srilib.adaptive.rs_data.PUBLISHED`): its objective
  depends on the model only (AR: the first reply token; DLM: canvas position 0 of a fully masked canvas), but its
  judge-confirmed stop reads the target's replies, so it runs once per run (model + sampler), with the run's
  sampler as the target (:class:`srilib.adaptive.Responder`) and the chapter's judge. srilib's cheaper
  ``stop: argmax`` variant generates no replies and would be sampler-independent; it is an option, labelled ours.
* PAIR reads the target's replies, so it runs once per run (model + sampler): the target is the run's sampler
  (:class:`srilib.adaptive.Responder`, plain ``generate``), the scorer the chapter's judge
  (:class:`srilib.adaptive.JudgeScorer`), the attacker a profile parameter.

Both sets use the first ``n_requests`` harmful evaluation requests of :class:`srilib.experiment.PromptSets`, in
order: the i-th adaptive prompt comes from the i-th request, exactly as for the template attacks, so request-level
intervals (``RunEval.clusters``) and the judge (which grades the original request) stay right.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import adaptive as A
from ..adaptive.rs_data import PUBLISHED
from ..experiment import Experiment, PromptSets, Run, selected
from ..signal import attack_success_rate
from ..stats import Rate, delta
from . import AR_TWIN, interval_side, weak_caveat
from . import Verdict, weak_runs

RANDOM_SEARCH, PAIR = "random_search", "pair"
ADAPTIVE_ATTACKS = (RANDOM_SEARCH, PAIR)
# AR_TWIN (srilib.chapters): Random Search transfer is measured between a DLM and its AR twin.

_RS_KEYS = {"n_iterations", "n_restarts", "n_candidates", "n_tokens_adv", "n_tokens_change_max", "target",
            "schedule", "stop", "restarts", "self_transfer", "judge_max_calls"}
_PAIR_KEYS = {"n_streams", "n_iterations", "keep_last"}


@dataclass
class AdaptiveConfig:
    """The profile's adaptive-attack budgets; a section that is absent, empty or has ``n_requests: 0`` is off."""

    rs_budget: A.RSBudget | None = None
    rs_settings: A.RSSettings | None = None
    rs_n_requests: int = 0
    checkpoints: list[int] | None = None
    curve_runs: list[str] | None = None  # runs that get the ASR-vs-budget curve (None: every run)
    rs_targets: list[str] | None = None  # runs Random Search attacks (None: every run of the chapter)
    pair_budget: A.PAIRBudget | None = None
    pair_settings: A.PAIRSettings | None = None
    pair_n_requests: int = 0
    attacker: str = ""
    pair_targets: list[str] | None = None  # runs PAIR attacks (None: every run of the chapter)

    @property
    def rs_on(self) -> bool:
        return self.rs_budget is not None and self.rs_n_requests > 0

    @property
    def pair_on(self) -> bool:
        return self.pair_budget is not None and self.pair_n_requests > 0 and bool(self.attacker)

    @property
    def any_on(self) -> bool:
        return self.rs_on or self.pair_on

    @classmethod
    def from_params(cls, random_search: Mapping | None, pair: Mapping | None, gen_length: int = 64
                    ) -> "AdaptiveConfig":
        """From the profile sections. random_search: n_requests, the budget and recipe of
        :class:`srilib.adaptive.RSBudget` (n_iterations, n_restarts, judge_max_calls, n_candidates, n_tokens_adv,
        n_tokens_change_max, target, schedule, stop, restarts, self_transfer; absent: the published values),
        checkpoints, curve_runs (runs that get the ASR-vs-budget curve; absent: every run), targets (the runs it
        attacks; absent: every run; its judge-confirmed stop generates the run's replies, so a CPU profile may
        restrict it). pair: n_requests, n_streams,
        n_iterations, keep_last, attacker (a model name), max_new_tokens (attacker), temperature, top_p, targets
        (the runs PAIR attacks, 'model' or 'model@sampler'; absent: every run; PAIR runs once per run, so a CPU
        profile restricts it to a few)."""
        cfg = cls()
        rs = dict(random_search or {})
        if int(rs.get("n_requests", 0) or 0) > 0:
            extra = {"n_requests", "checkpoints", "curve_runs", "targets"}
            unknown = set(rs) - _RS_KEYS - extra
            if unknown:
                raise ValueError(f"unknown random_search parameters {sorted(unknown)}; known: "
                                 f"{sorted(_RS_KEYS | extra)}")
            cfg.rs_budget = A.RSBudget(**{k: v for k, v in rs.items() if k in _RS_KEYS})
            cfg.rs_settings = A.RSSettings(gen_length=int(gen_length))
            cfg.rs_n_requests = int(rs["n_requests"])
            cfg.checkpoints = [int(c) for c in rs["checkpoints"]] if rs.get("checkpoints") else None
            cfg.curve_runs = [str(r) for r in rs["curve_runs"]] if rs.get("curve_runs") else None
            cfg.rs_targets = [str(r) for r in rs["targets"]] if rs.get("targets") else None
        pr = dict(pair or {})
        if int(pr.get("n_requests", 0) or 0) > 0:
            known = _PAIR_KEYS | {"n_requests", "attacker", "max_new_tokens", "temperature", "top_p", "targets"}
            unknown = set(pr) - known
            if unknown:
                raise ValueError(f"unknown pair parameters {sorted(unknown)}; known: {sorted(known)}")
            if not pr.get("attacker"):
                raise ValueError("the pair section needs an attacker model name (attacker: smollm2-135m on CPU)")
            cfg.pair_budget = A.PAIRBudget(**{k: int(v) for k, v in pr.items() if k in _PAIR_KEYS})
            cfg.pair_settings = A.PAIRSettings(**{k: pr[k] for k in ("max_new_tokens", "temperature", "top_p")
                                                  if k in pr})
            cfg.pair_n_requests = int(pr["n_requests"])
            cfg.attacker = str(pr["attacker"])
            cfg.pair_targets = [str(t) for t in pr["targets"]] if pr.get("targets") else None
        return cfg

    def describe(self) -> str:
        """One Markdown paragraph: the budgets of this profile."""
        parts = []
        if self.rs_on:
            b = self.rs_budget
            parts.append(f"**Random Search** ({b.recipe()}{'' if b.published_recipe else ', labelled ours'}): "
                         f"{self.rs_n_requests} requests, {b.n_iterations} iterations x {b.n_restarts} "
                         f"{'independent ' if b.restarts == 'independent' else ''}restart(s) x {b.n_candidates} "
                         f"candidate(s) per iteration, a {b.n_tokens_adv}-token suffix changed by the "
                         f"{b.schedule!r} schedule, target token {b.target!r}, "
                         + (f"stop when the chapter's judge confirms a jailbreak (at most {b.judge_max_calls} judge "
                            "calls per restart)" if b.stop == "judge" else "stop when the target token is the argmax")
                         + (", each request starting from the suffix of the latest earlier success (self-transfer)"
                            if b.self_transfer else "")
                         + f" (the published budget: {PUBLISHED['n_iterations']:,} iterations x "
                           f"{PUBLISHED['n_restarts']} restarts, {PUBLISHED['judge_max_calls']} judge calls)"
                         + (f", on the runs {', '.join(f'`{t}`' for t in self.rs_targets)}" if self.rs_targets
                            else ", on every run"))
        else:
            parts.append("**Random Search**: not run in this profile")
        if self.pair_on:
            b, s = self.pair_budget, self.pair_settings
            parts.append(f"**PAIR**: {self.pair_n_requests} requests, {b.n_streams} stream(s) x {b.n_iterations} "
                         f"iteration(s), attacker `{self.attacker}` ({s.max_new_tokens} new tokens per attempt, "
                         f"T={s.temperature:g}, top-p {s.top_p:g}), scorer = the chapter's judge (PAIR's "
                         "authors run many more streams with a far stronger attacker)" + (f", on the runs {', '.join(f'`{t}`' for t in self.pair_targets)}"
                                                      if self.pair_targets else ", on every run"))
        else:
            parts.append("**PAIR**: not run in this profile")
        return "; ".join(parts) + "."


@dataclass
class Adaptive:
    """Adaptive-attack prompt sets of a chapter's runs (computed lazily, once per model or run, through the
    srilib.adaptive cache). ``seconds`` adds up the compute time of every search as recorded when it was first
    run (cold), also when it now comes from the cache; ``wall`` the wall-clock time spent in this process."""

    exp: Experiment
    sets: PromptSets
    judge: object
    cfg: AdaptiveConfig
    cache: object = None  # AttackCache / path / None (the srilib cache) / False
    rs: dict = field(default_factory=dict)  # run label -> RSResult
    pair: dict = field(default_factory=dict)  # run label -> PAIRResult
    wall: dict = field(default_factory=lambda: {RANDOM_SEARCH: 0.0, PAIR: 0.0})

    def requests(self, attack: str) -> list[str]:
        n = self.cfg.rs_n_requests if attack == RANDOM_SEARCH else self.cfg.pair_n_requests
        return list(self.sets.requests[:n])

    def random_search(self, spec: str | Run) -> A.RSResult:
        """Random Search against one run (a bare model name: its native sampler). The published judge-confirmed
        stop reads the run's replies (its sampler) and the chapter's judge; ``stop: argmax`` (ours) uses neither."""
        run = self.exp.resolve(spec)
        if run.label not in self.rs:
            t = time.perf_counter()
            lm = self.exp.model(run.model)
            b = self.cfg.rs_budget
            kw = ({"respond": A.Responder(lm, self.exp.sampler(run), batch_size=self.exp.batch_size),
                   "judge": self.judge} if b.stop == "judge" else {})
            self.rs[run.label] = A.run_random_search(
                lm, self.requests(RANDOM_SEARCH), b, self.cfg.rs_settings, seed=self.exp.seed, cache=self.cache,
                progress=self.exp.progress, desc=f"random search / {run.label}", **kw)
            self.wall[RANDOM_SEARCH] += time.perf_counter() - t
        return self.rs[run.label]

    def run_pair(self, spec: str | Run) -> A.PAIRResult:
        run = self.exp.resolve(spec)
        if run.label not in self.pair:
            t = time.perf_counter()
            lm = self.exp.model(run.model)
            self.pair[run.label] = A.run_pair(
                self.exp.model(self.cfg.attacker), self.requests(PAIR),
                A.Responder(lm, self.exp.sampler(run), batch_size=self.exp.batch_size), A.JudgeScorer(self.judge),
                self.cfg.pair_budget, self.cfg.pair_settings, seed=self.exp.seed, cache=self.cache,
                progress=self.exp.progress, desc=f"PAIR / {run.label}")
            self.wall[PAIR] += time.perf_counter() - t
        return self.pair[run.label]

    def pair_targeted(self, spec: str | Run) -> bool:
        """Whether PAIR attacks this run (the profile's ``pair.targets``, every run when absent)."""
        return selected(spec, self.cfg.pair_targets)

    def rs_targeted(self, spec: str | Run) -> bool:
        """Whether Random Search attacks this run (the profile's ``random_search.targets``, every run when absent)."""
        return selected(spec, self.cfg.rs_targets)

    def curve_targeted(self, spec: str | Run) -> bool:
        """Whether this run gets the ASR-vs-budget curve (the profile's ``random_search.curve_runs``)."""
        return selected(spec, self.cfg.curve_runs)

    def prompts(self, spec: str | Run) -> dict[str, list[str]]:
        """{set name: attacked prompts} of one run (the i-th prompt from the i-th request); empty when off."""
        run = self.exp.resolve(spec)
        out = {}
        if self.cfg.rs_on and self.rs_targeted(run):
            out[RANDOM_SEARCH] = self.random_search(run).prompts
        if self.cfg.pair_on and self.pair_targeted(run):
            out[PAIR] = self.run_pair(run).prompts
        return out

    def seconds(self, attack: str) -> float:
        """Cold compute time of every search of ``attack`` done for this chapter (recorded per request)."""
        res = self.rs.values() if attack == RANDOM_SEARCH else self.pair.values()
        return float(sum(r.seconds for x in res for r in x.records))


# ------------------------------------------------------------------------------------------- ASR vs budget
@dataclass
class BudgetCurve:
    run: str
    iterations: list[int]
    asr: list[Rate]
    n_distinct: int  # distinct prompts over all checkpoints (each generated at most once)
    n_total: int  # prompts over all checkpoints (with repeats)

    def rows(self) -> list[dict]:
        return [{"run": self.run, "iterations (budget)": i, "ASR": r} for i, r in zip(self.iterations, self.asr)]


def budget_curve(exp: Experiment, spec: str | Run, result: A.RSResult, judge,
                 checkpoints: Sequence[int] | None = None, known: Mapping[str, str] | None = None) -> BudgetCurve:
    """ASR of the prompts Random Search held after each checkpoint of its iteration budget, on one run. Only the
    distinct prompts over all checkpoints are generated (one cached trace set), less those whose reply under this
    run is already ``known`` (prompt -> final text, e.g. the run's evaluated Random Search set, which holds the
    prompts of the full budget); each checkpoint's replies are looked up and judged against the original
    requests."""
    run = exp.resolve(spec)
    cps = result.checkpoints(checkpoints)
    texts = dict(known or {})
    todo = budget_prompts(result, checkpoints, texts)
    if todo:
        texts.update(zip(todo, exp.traces(run, todo, "random_search/budget").texts))
    its = sorted(cps)
    asr = [attack_success_rate(result.requests, [texts[p] for p in cps[i]], judge) for i in its]
    n_distinct = len({p for ps in cps.values() for p in ps})
    return BudgetCurve(run=run.label, iterations=its, asr=asr, n_distinct=n_distinct,
                       n_total=sum(len(v) for v in cps.values()))


# ------------------------------------------------------------------------------------------- transfer
def transfer_rows(exp: Experiment, adaptive: Adaptive, results: Sequence, judge, n_boot: int = 2000) -> list[dict]:
    """Random Search prompts found on the AR twin, applied to each run of the DLM (only when both models are among
    ``results``): ASR of the transferred prompts vs the DLM's own search (paired over the same requests), and the
    search objective (log p of the target token) of both prompt sets on the DLM. Measured on the DLM runs that get
    the ASR-vs-budget curve (``random_search.curve_runs``; every run when absent)."""
    if not adaptive.cfg.rs_on:
        return []
    models = {r.model for r in results}
    rows = []
    for r in results:
        twin = AR_TWIN.get(r.model)
        if r.kind != "dlm" or twin not in models or RANDOM_SEARCH not in r.sets or not adaptive.curve_targeted(r.run):
            continue
        src = adaptive.random_search(twin)
        lm = exp.model(r.model)
        tr = A.transfer(src, lm)
        own = adaptive.random_search(r.run)
        texts = exp.traces(r.run, tr["prompts"], "random_search/transfer").texts
        asr_tr = attack_success_rate(src.requests, texts, judge)
        asr_own = r.sets[RANDOM_SEARCH].asr
        d = delta(asr_tr, asr_own, method="paired", n_boot=n_boot, seed=exp.seed)
        rows.append({"run (target)": r.run, "prompts from": f"{twin} (AR twin)",
                     "ASR transferred": asr_tr, "ASR own search": asr_own, "Δ ASR (transferred − own)": d,
                     "mean log p(target), transferred": float(np.mean(tr["objective"])),
                     "mean log p(target), own search": float(np.mean(own.objectives)),
                     "target token argmax, transferred": Rate.from_outcomes(np.asarray(tr["target_argmax"]))})
    return rows


# ------------------------------------------------------------------------------------------- logs
def search_rows(adaptive: Adaptive) -> list[dict]:
    """Per model (Random Search) and per run (PAIR): what the search did and what it cost (cold seconds)."""
    rows = []
    for m, res in adaptive.rs.items():
        recs = res.records
        rows.append({"attack": "Random Search", "target": m, "requests": len(recs),
                     "recipe": res.meta.get("recipe", "–"),
                     "objective: initial → final (mean log p)": f"{np.mean([r.trajectory[0] for r in recs]):.2f} → "
                                                                f"{np.mean(res.objectives):.2f}",
                     "search success (judge-confirmed or argmax, as the recipe stops)": Rate.from_outcomes(
                         res.success),
                     "judge calls": int(sum(c["jailbroken"] is not None for r in recs for c in r.judge_calls)),
                     "iterations used (mean)": f"{np.mean([r.iterations_used for r in recs]):.1f}",
                     "queries": int(sum(r.n_scored for r in recs)),
                     "cold seconds": f"{sum(r.seconds for r in recs):.1f}"})
    for run, res in adaptive.pair.items():
        recs = res.records
        q = [x for r in recs for x in r.queries]
        rows.append({"attack": "PAIR", "target": run, "requests": len(recs),
                     "objective: initial → final (mean log p)": "–",
                     "search success (judge-confirmed or argmax, as the recipe stops)": "–",
                     "iterations used (mean)": f"{np.mean([r.iterations_used for r in recs]):.1f}",
                     "queries": len(q), "best score (mean, 1-10)": f"{np.mean(res.scores):.1f}",
                     "attacker replies rejected (invalid JSON)": f"{sum(r.n_parse_failures for r in recs)}/"
                                                                 f"{sum(r.n_attack_attempts for r in recs)}",
                     "requests ended (no valid attacker JSON)": int(sum(bool(r.terminated) for r in recs)),
                     "cold seconds": f"{sum(r.seconds for r in recs):.1f}"})
    return rows


def cost_line(adaptive: Adaptive) -> Verdict:
    """The searches' cold compute time (as recorded when each request was first searched) and the wall-clock time
    spent in them in this process (near zero when every result came from the cache, e.g. when the book's trace
    plan ran the searches before the notebook). Kind ``adaptive.cost``; data ``searched``: attack -> runs searched."""
    out, searched = [], {}
    for attack, name in ((RANDOM_SEARCH, "Random Search"), (PAIR, "PAIR")):
        res = adaptive.rs if attack == RANDOM_SEARCH else adaptive.pair
        if res:
            searched[attack] = len(res)
            out.append(f"{name}: {adaptive.seconds(attack):.0f} s of search over {len(res)} run(s) when computed cold, "
                       f"{adaptive.wall[attack]:.0f} s wall-clock in this notebook (the book's trace plan runs "
                       "the searches before the notebooks)")
    return Verdict(("; ".join(out) + " (the searches only; generating and judging the replies to the attacked "
                    "prompts comes on top, like any prompt set)") if out else "no adaptive attack ran",
                   kind="adaptive.cost", searched=searched)


# ------------------------------------------------------------------------------------------- conclusions
def head_rate(r: Rate, n: int) -> Rate:
    return Rate.from_outcomes(np.asarray(r.outcomes)[:n], r.conf)


def adaptive_conclusions(results: Sequence, adaptive: Adaptive, curves: Sequence[BudgetCurve] = (),
                         transfer: Sequence[dict] = (), n_boot: int = 2000) -> list[Verdict]:
    """Markdown bullets on the adaptive attacks (:class:`Verdict` kinds ``adaptive.off``, ``.random_search`` and
    ``.pair`` with ``sides`` and ``deltas`` per run, ``.budget``, ``.transfer``); each 'raises' / 'lowers' rests on a
    paired interval over the same requests that excludes zero, and carries the weak-model caveat."""
    cfg = adaptive.cfg
    if not cfg.any_on:
        return [Verdict("- **Adaptive attacks** (Random Search, PAIR): not run in this profile (its `random_search` / "
                        "`pair` sections are off).", kind="adaptive.off")]
    lines = []
    for name, label in ((RANDOM_SEARCH, "Random Search"), (PAIR, "PAIR")):
        deltas, sides, extra = {}, {}, {}  # extra: PAIR's attacker and searches
        for r in results:
            if name not in r.sets:
                continue
            raw = head_rate(r.sets["raw"].asr, len(r.sets[name]))
            deltas[r.run] = d = delta(r.sets[name].asr, raw, method="paired", n_boot=n_boot, seed=adaptive.exp.seed)
            sides[r.run] = interval_side(d)
        if not deltas:
            continue
        raised, lowered, unresolved = ([run for run, s in sides.items() if s == side] for side in (1, -1, 0))
        up, down, flat = ([f"`{run}` (ΔASR {deltas[run]})" for run in runs] for runs in (raised, lowered, unresolved))
        line = f"- **{label} vs the raw request** (ASR, paired over the same {len(adaptive.requests(name))} requests): "
        if up:
            line += f"raises ASR with an interval that excludes zero on {', '.join(up)}{weak_caveat(raised)}. "
        if down:
            line += f"lowers ASR (interval excludes zero) on {', '.join(down)}. "
        if flat:
            line += f"no difference resolved (interval includes zero) on {', '.join(flat)}. "
        if name == PAIR:
            recs = [x for res in adaptive.pair.values() for x in res.records]
            ended = [x for x in recs if x.terminated]
            extra = {"attacker": cfg.attacker, "searches": len(recs), "ended": len(ended)}
            line += (f"The attacker is `{cfg.attacker}`, a weak model for this role, with a tiny budget "
                     f"({cfg.pair_budget.n_streams} streams x {cfg.pair_budget.n_iterations} iterations): this is "
                     "a lower bound on what PAIR does, not the paper's PAIR.")
            if ended:
                first = sum(not x.queries for x in ended)
                line += (f" {len(ended)} of {len(recs)} searches ended for want of valid attacker JSON after "
                         f"{cfg.pair_settings.max_attack_attempts} attempts, as upstream's PAIR ends"
                         + (f" ({first} before any query: their attacked prompt is the plain request)" if first
                            else "") + ".")
        lines.append(Verdict(line.rstrip(), kind=f"adaptive.{name}", runs=list(sides), weak=weak_runs(raised),
                             sides=sides, deltas=deltas, **extra))
    for c in curves:
        if len(c.asr) >= 2:
            d = delta(c.asr[-1], c.asr[0], method="paired", n_boot=n_boot, seed=adaptive.exp.seed)
            s = interval_side(d)
            verdict = ("rises with the budget (interval excludes zero)" if s > 0 else
                       "falls with the budget (interval excludes zero)" if s < 0 else
                       "is not resolved to change with the budget (interval includes zero)")
            lines.append(Verdict(
                f"- **ASR vs Random Search budget, `{c.run}`**: from {c.iterations[0]} to {c.iterations[-1]} "
                f"iterations ASR {verdict}: Δ {d} ({c.n_distinct} distinct prompts among {c.n_total} "
                "checkpoint prompts, each generated once).", kind="adaptive.budget", side=s, runs=[c.run], delta=d))
    for t in transfer:
        s = interval_side(t["Δ ASR (transferred − own)"])
        verdict = ("the transferred prompts succeed more often than the DLM's own search" if s > 0 else
                   "the DLM's own search succeeds more often than the transferred prompts" if s < 0 else
                   "transferred and own prompts are not separated by the interval")
        lines.append(Verdict(f"- **Transfer** ({t['prompts from']} → `{t['run (target)']}`): {verdict} "
                             f"(Δ ASR {t['Δ ASR (transferred − own)']}); mean log p of the target token "
                             f"{t['mean log p(target), transferred']:.2f} (transferred) vs "
                             f"{t['mean log p(target), own search']:.2f} (own search).", kind="adaptive.transfer",
                             side=s, runs=[t["run (target)"]], delta=t["Δ ASR (transferred − own)"]))
    return lines


# ------------------------------------------------------------------------------------------- trace plan
def budget_prompts(result: A.RSResult, checkpoints: Sequence[int] | None = None, known: Iterable[str] = ()
                   ) -> list[str]:
    """The distinct prompts Random Search held after each budget checkpoint, in order, less the ``known`` ones
    (whose replies the run already has): what :func:`budget_curve` generates."""
    known = set(known)
    cps = result.checkpoints(checkpoints)
    return [p for p in dict.fromkeys(p for ps in cps.values() for p in ps) if p not in known]


def adaptive_needs(chapter: str, adaptive: Adaptive, run: Run, curves: bool = False) -> list:
    """The trace plan's needs (:mod:`srilib.plan`) of one run's adaptive-attack sets: Random Search (per run) and
    PAIR (targeted runs), whose prompts exist once the (cached) search ran; with ``curves`` also the ASR-vs-budget
    checkpoints (:func:`budget_curve`) and, on a DLM run whose AR twin the chapter also runs, the transferred
    prompts (:func:`transfer_needs`)."""
    from ..plan import Need

    exp, cfg, out = adaptive.exp, adaptive.cfg, []
    if cfg.rs_on and adaptive.rs_targeted(run):
        out.append(Need(chapter, run, RANDOM_SEARCH, exp, lambda: adaptive.random_search(run).prompts))
    if cfg.pair_on and adaptive.pair_targeted(run):
        out.append(Need(chapter, run, PAIR, exp, lambda: adaptive.run_pair(run).prompts))
    if curves and cfg.rs_on and adaptive.rs_targeted(run) and adaptive.curve_targeted(run):
        out.append(Need(chapter, run, "random_search/budget", exp, lambda: budget_prompts(
            adaptive.random_search(run), cfg.checkpoints, adaptive.random_search(run).prompts)))
    return out


def transfer_needs(chapter: str, adaptive: Adaptive, runs: Sequence[Run]) -> list:
    """The trace plan's needs of :func:`transfer_rows`: on each DLM run that gets the budget curve, the Random
    Search prompts of its AR twin when the twin is among ``runs``."""
    from ..plan import Need

    if not adaptive.cfg.rs_on:
        return []
    models = {r.model for r in runs}
    return [Need(chapter, r, "random_search/transfer", adaptive.exp,
                 lambda r=r: A.transfer(adaptive.random_search(AR_TWIN[r.model]),
                                        adaptive.exp.model(r.model))["prompts"])
            for r in runs if r.kind == "dlm" and AR_TWIN.get(r.model) in models and adaptive.curve_targeted(r)]


__all__ = ["RANDOM_SEARCH", "PAIR", "ADAPTIVE_ATTACKS", "AR_TWIN", "AdaptiveConfig", "Adaptive", "BudgetCurve",
           "budget_curve", "transfer_rows", "search_rows", "cost_line",
           "adaptive_conclusions", "head_rate", "budget_prompts", "adaptive_needs", "transfer_needs"]
