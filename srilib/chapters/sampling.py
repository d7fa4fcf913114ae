"""Chapter "sampling vs representation", the computation: the same DLM weights under AR and remasking samplers
(paper Table 2, Figure 6) and the AR-vs-DLM family comparison (Table 3) start here.

The shared core, :func:`evaluate_traces` / :func:`evaluate_run`, turns one run's traces into refusal rates (RR),
attack success rates (ASR, graded against the *original* request) and internal recovery rates (IRR) per
evaluation set; the incomplete-recovery chapter builds on it too. This module holds that evaluation and the
chapter's vocabulary (families, evaluation-set labels, the two IRR denominators); the paired comparisons and the
multi-seed stability are in :mod:`.sampling_compare`, the tables and the conclusions in :mod:`.sampling_report`,
and the paper's numbers in :mod:`.paper_numbers`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..prompts import get_attack
from . import each_run
from ..experiment import Experiment, PromptSets, Run
from ..signal import DEFAULT_LAMBDA_R, attack_success_rate, internal_recovery_rate, refusal_rate
from ..signal import Anchors
from ..stats import Rate, cluster_adjusted
from ..traces import TraceSet
from .paper_numbers import ALL_JAILBREAKS, PAPER_COLUMNS, PAPER_POOLED_ATTACKS, paper_family_asr

AR_SAMPLERS = ("ar", "ar-greedy")
DLM_AR_SAMPLER = "dlm-ar"
FAMILIES = ("AR", "DLM", "DLM, AR sampling")

# ---- the two IRR denominators, one label each (issue 12): the paper's Figure 6 compares the samplers over its
# jailbreak (attacked) prompts; the incomplete-recovery chapter pools every harmful prompt, raw requests included
IRR_ATTACKED = "attacked prompts only (the paper's Figure 6 denominator)"
IRR_ALL_HARMFUL = "all harmful prompts, raw + attacked (ours; not the paper's Figure 6 denominator)"


# the adaptive attacks (srilib.adaptive, built per run by srilib.chapters.adaptive): evaluated on the first
# n_requests harmful requests, reported per set and kept OUT of our pooled "all jailbreaks" (which stays the pool of
# our template attacks, the same in every chapter and seed; the pool's label lists its members)
ADAPTIVE_ATTACKS = ("random_search", "pair")
ADAPTIVE_PAPER = {"random_search": "Random Search", "pair": "PAIR"}
# our role-play templates are WildJailbreak-like, not WildJailbreak: shown under this label wherever a set is named
SET_LABELS = {"roleplay": "roleplay (ours, WildJailbreak-like)", "random_search": "random_search (ours)",
              "pair": "pair (ours)"}


def set_label(name: str) -> str:
    """How an evaluation set is shown in tables and figures (role-play is ours, 'WildJailbreak-like')."""
    return SET_LABELS.get(name, name)


def pooled_label(attacks: Sequence[str]) -> str:
    """Label of our pooled-attacks column or row, naming its members (it is not the paper's five-attack pool)."""
    return f"all jailbreaks, ours (pool of: {', '.join(attacks)})"


def paper_column(set_name: str) -> str | None:
    """The paper's column for one of our evaluation sets ('raw', an attack name or 'all jailbreaks'), if any."""
    if set_name == "raw":
        return "raw harmful"
    if set_name == ALL_JAILBREAKS:
        return ALL_JAILBREAKS
    if set_name in ADAPTIVE_PAPER:
        return ADAPTIVE_PAPER[set_name]
    try:
        name = get_attack(set_name).paper_name
    except ValueError:
        return None
    return name if name in PAPER_COLUMNS else None


# ---------------------------------------------------------------------------------------------------- core
def family(kind: str, sampler: str) -> str:
    """'AR' (causal LM), 'DLM' (diffusion LM with a remasking sampler) or 'DLM, AR sampling' (dlm-ar)."""
    if kind == "ar":
        return "AR"
    return FAMILIES[2] if sampler == DLM_AR_SAMPLER else "DLM"


def lite(ts: TraceSet) -> TraceSet:
    """The traces without pooled activations (texts, canvases and predictions only; cheap to keep around)."""
    return dataclasses.replace(ts, pooled={})


@dataclass
class SetEval:
    """One evaluation set of one run: outcomes, signals and rates."""

    name: str
    harmful: bool
    prompts: list[str]  # what the model saw
    requests: list[str]  # what the judge graded against (the original request; = prompts for raw/harmless)
    sigma: np.ndarray  # [N, T]
    rr: Rate
    asr: Rate | None  # None for harmless prompts
    irr: dict[float, Rate]
    traces: TraceSet | None = field(default=None, repr=False)  # lite traces (no pooled activations)

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int) -> "SetEval":
        """The first ``n`` generations (prompt lists of smaller n are prefixes of larger n)."""
        cut = lambda r: Rate.from_outcomes(r.outcomes[:n], r.conf)  # noqa: E731
        return SetEval(self.name, self.harmful, self.prompts[:n], self.requests[:n], self.sigma[:n], cut(self.rr),
                       cut(self.asr) if self.asr is not None else None, {k: cut(v) for k, v in self.irr.items()},
                       self.traces.subset(np.arange(min(n, len(self)))) if self.traces is not None else None)


@dataclass
class RunEval:
    """One run (model + sampler) evaluated on every set."""

    run: str  # "model@sampler"
    model: str
    sampler: str
    kind: str  # "ar" or "dlm"
    anchors: Anchors
    sets: dict[str, SetEval]
    judge: str = ""

    @property
    def family(self) -> str:
        return family(self.kind, self.sampler)

    @property
    def attacks(self) -> list[str]:
        """Template-attack sets (every harmful set except 'raw' and the adaptive sets): the pooled attacks."""
        return [k for k, s in self.sets.items() if s.harmful and k != "raw" and k not in ADAPTIVE_ATTACKS]

    @property
    def adaptive(self) -> list[str]:
        """Adaptive-attack sets (Random Search, PAIR) of this run, kept out of the pooled attacks."""
        return [k for k in ADAPTIVE_ATTACKS if k in self.sets]

    @property
    def harmful_sets(self) -> list[str]:
        return [k for k, s in self.sets.items() if s.harmful]

    def clusters(self, set_name: str) -> np.ndarray:
        """Request index of every item of :meth:`rate` (``set_name`` or every attack pooled): the i-th prompt of
        every harmful set comes from the i-th request, so pooled attacks repeat each request once per attack."""
        names = self.attacks if set_name == ALL_JAILBREAKS else [set_name]
        return np.concatenate([np.arange(len(self.sets[n])) for n in names])

    def rate(self, set_name: str, metric: str, lam: float = 0.5) -> Rate:
        """``metric`` ('rr', 'asr' or 'irr') of one set, or pooled over every attack for 'all jailbreaks'."""
        names = self.attacks if set_name == ALL_JAILBREAKS else [set_name]
        if not names or any(n not in self.sets for n in names):
            raise KeyError(f"{self.run} has no evaluation set {set_name!r}; it has {list(self.sets)}")
        rates = [_metric(self.sets[n], metric, lam) for n in names]
        if any(r is None for r in rates):
            raise KeyError(f"{metric} is not defined for set {set_name!r} (ASR needs harmful prompts)")
        # pooled attacks repeat every request once per attack: the interval counts requests, not rows
        return rates[0] if len(rates) == 1 else cluster_adjusted(pool(rates), self.clusters(set_name))



def _metric(s: SetEval, metric: str, lam: float) -> Rate | None:
    if metric == "rr":
        return s.rr
    if metric == "asr":
        return s.asr
    if metric == "irr":
        if lam not in s.irr:
            raise KeyError(f"IRR was computed for lambda_r in {sorted(s.irr)}, not {lam}")
        return s.irr[lam]
    raise ValueError(f"unknown metric {metric!r}; use 'rr', 'asr' or 'irr'")


def pool(rates: Sequence[Rate]) -> Rate:
    """One rate over the union of several rates' items (keeps the outcomes, so pooled rates pair too)."""
    if any(r.outcomes is None for r in rates):
        raise ValueError("pooling needs per-item outcomes (Rate.from_outcomes)")
    return Rate.from_outcomes(np.concatenate([r.outcomes for r in rates]), rates[0].conf)


def has_set(r: RunEval, s: str) -> bool:
    """Whether run ``r`` has evaluation set ``s`` ('all jailbreaks': whether it has any template attack)."""
    return (bool(r.attacks) if s == ALL_JAILBREAKS else s in r.sets)


def evaluate_traces(run: Run, anchors: Anchors, traces: Mapping[str, tuple[TraceSet, bool]],
                    requests: Sequence[str], judge, tau: float = 0.1, lambda_c: float = 0.5,
                    lambda_r: Sequence[float] = DEFAULT_LAMBDA_R,
                    set_requests: Mapping[str, Sequence[str]] | None = None) -> RunEval:
    """RR, ASR and IRR of every evaluation set of one run.

    Parameters
    ----------
    run : Run
        The resolved run (:func:`srilib.experiment.resolve_run`): its label, model, sampler and kind.
    anchors : Anchors
        The run's anchors (SRI is computed against them).
    traces : mapping set name -> (TraceSet, harmful?)
        Harmful sets are 'raw' and one per attack; their i-th prompt is the i-th request, attacked or not.
    requests : list of str
        The original harmful requests (the judge grades every harmful set against these).
    judge : Judge
    set_requests : mapping set name -> list of str, optional
        Sets built on a prefix of ``requests`` (the adaptive attacks: their i-th prompt comes from the i-th
        request, but only the first n are searched): the requests each is graded against, a prefix of
        ``requests``.
    """
    if run.kind not in ("ar", "dlm"):
        raise ValueError(f"run {run.label}: kind must be 'ar' or 'dlm', got {run.kind!r}")
    sets = {}
    set_requests = dict(set_requests or {})
    for name, req_n in set_requests.items():
        if list(req_n) != list(requests)[:len(req_n)]:
            raise ValueError(f"set {name!r}: its requests must be the first {len(req_n)} of the run's requests, in "
                             "order (the i-th prompt comes from the i-th request)")
    for name, (ts, harmful) in traces.items():
        if harmful and name in set_requests:
            if len(ts) != len(set_requests[name]):
                raise ValueError(f"set {name!r} has {len(ts)} generations but {len(set_requests[name])} requests")
            req = list(set_requests[name])
        elif harmful and len(ts) != len(requests):
            raise ValueError(f"set {name!r} has {len(ts)} generations but there are {len(requests)} requests; the "
                             "i-th attacked prompt must come from the i-th request (PromptSets.requests)")
        else:
            req = list(requests) if harmful else list(ts.prompts)
        sigma = anchors.signal(ts, tau=tau)
        sets[name] = SetEval(
            name=name, harmful=harmful, prompts=list(ts.prompts), requests=req, sigma=sigma,
            rr=refusal_rate(ts.texts), asr=attack_success_rate(req, ts.texts, judge) if harmful else None,
            irr=internal_recovery_rate(sigma, lambda_c=lambda_c, lambda_r=lambda_r), traces=lite(ts))
    return RunEval(run=run.label, model=run.model, sampler=run.sampler_label, kind=run.kind, anchors=anchors,
                   sets=sets, judge=getattr(judge, "name", str(judge)))


def evaluate_run(exp: Experiment, spec: str, sets: PromptSets, judge, tau: float = 0.1,
                 lambda_r: Sequence[float] = DEFAULT_LAMBDA_R, anchors: Anchors | None = None,
                 include_harmless: bool = True, adaptive=None) -> RunEval:
    """:func:`evaluate_traces` on the (cached) traces of a run; anchors from the run's anchor split unless given.

    ``adaptive`` (a :class:`srilib.chapters.adaptive.Adaptive`, or a callable ``run -> {set: prompts}``) adds the
    adaptive-attack sets of the run; their i-th prompt comes from the i-th harmful request."""
    run = exp.resolve(spec)
    anchors = anchors if anchors is not None else exp.anchors(run, sets)
    traces = {name: (exp.traces(run, prompts, name), harmful) for name, (prompts, harmful)
              in sets.evaluation().items() if harmful or include_harmless}
    extra = {}
    if adaptive is not None:
        extra = adaptive.prompts(run) if hasattr(adaptive, "prompts") else dict(adaptive(run))
        for name, prompts in extra.items():
            traces[name] = (exp.traces(run, prompts, name), True)
    return evaluate_traces(run, anchors, traces, sets.requests, judge, tau=tau, lambda_r=lambda_r,
                           set_requests={k: sets.requests[:len(v)] for k, v in extra.items()})


def evaluate_runs(exp: Experiment, specs: Sequence[str], sets: PromptSets, judge, tau: float = 0.1,
                  lambda_r: Sequence[float] = DEFAULT_LAMBDA_R, release: bool | None = None, evaluate=None,
                  on_error: str = "raise", adaptive=None) -> list:
    """:func:`evaluate_run` for several runs, one model at a time, results in the order of ``specs``.

    ``release`` drops each model from the experiment's cache once all its runs are done (so that a GPU holds
    one model at a time); None = only when CUDA is available. ``evaluate(exp, spec)`` replaces the per-run call.
    ``on_error="report"`` (the book) leaves a failing run out and reports it (:func:`srilib.chapters.each_run`).
    """
    evaluate = evaluate or (lambda e, s: evaluate_run(e, s, sets, judge, tau=tau, lambda_r=lambda_r,
                                                      adaptive=adaptive))
    release = _cuda() if release is None else release
    runs = [exp.resolve(s) for s in specs]
    out: dict = {}
    for model in dict.fromkeys(r.model for r in runs):
        out.update(each_run([r for r in runs if r.model == model], lambda r: evaluate(exp, r), on_error=on_error))
        if release:
            exp.release(model)
    return [out[r] for r in runs if r in out]


def _cuda() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def expand_runs(runs: Sequence[Run], block_lengths: Sequence[int] = (), remasking: str = "low_confidence"
                ) -> list[Run]:
    """The (resolved) runs plus ``model@<remasking>:b<B>`` for every masked-diffusion model among them and block
    length B (uniform-noise models such as DiffusionGemma decode their own canvases: no block variant). Duplicates
    are dropped, order kept."""
    from ..models import masked_diffusion

    out = list(dict.fromkeys(runs))
    for m in dict.fromkeys(r.model for r in runs if r.kind == "dlm" and masked_diffusion(r.model, r.kind)):
        for b in block_lengths:
            if int(b) < 1:
                raise ValueError(f"block lengths must be positive integers, got {b}")
            out.append(Run(m, "dlm", remasking, int(b)))
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------- figures
def dlm_irr_panel(results: Sequence[RunEval], lambda_r: Sequence[float] = DEFAULT_LAMBDA_R) -> dict:
    """The arguments of :func:`srilib.figures.plot_irr_bars` for the DLM runs: IRR over the pooled
    attacks (:data:`IRR_ATTACKED`) per run and threshold, and the runs' families; empty mappings without a DLM run."""
    dlm = [r for r in results if r.kind == "dlm"]
    return {"irr": {r.run: {lam: r.rate(ALL_JAILBREAKS, "irr", lam) for lam in lambda_r} for r in dlm},
            "families": {r.run: r.family for r in dlm}}


def family_asr_panel(results: Sequence[RunEval]) -> dict:
    """The arguments of :func:`srilib.figures.plot_family_rates` for pooled ASR: per run with template
    attacks its ASR over them pooled, every run's family, and the paper's per-family range of its all-jailbreaks
    ASR (Table 3) as bands."""
    bands = []
    for f in ("AR", "DLM"):
        lo, hi = paper_family_asr(f)
        bands.append((lo, hi, f"paper: {f} models {lo:.0%}-{hi:.0%} (its {len(PAPER_POOLED_ATTACKS)} attacks)", f))
    return {"rates": {r.run: r.rate(ALL_JAILBREAKS, "asr") for r in results if r.attacks},
            "families": {r.run: r.family for r in results}, "bands": bands}


def budget_curves(adaptive, results: Sequence[RunEval]) -> list:
    """The ASR-vs-budget curves (:func:`srilib.chapters.adaptive.budget_curve`, with the ``adaptive`` attacks'
    experiment, judge and checkpoints) of the runs that have a Random Search set and get a curve
    (``random_search.curve_runs``), each reusing the replies its evaluated Random Search set holds."""
    from .adaptive import budget_curve

    return [budget_curve(adaptive.exp, r.run, adaptive.random_search(r.run), adaptive.judge,
                         adaptive.cfg.checkpoints, known=dict(zip(r.sets["random_search"].prompts,
                                                                  r.sets["random_search"].traces.texts)))
            for r in results if "random_search" in r.sets and adaptive.curve_targeted(r.run)]


def budget_panel(curves: Sequence) -> dict:
    """The arguments of :func:`srilib.figures.plot_budget_curves`: per curve (:func:`budget_curves`) its
    run -> (iterations, ASR at each)."""
    return {"curves": {c.run: (c.iterations, c.asr) for c in curves}}


def budget_rows(curves: Sequence) -> list[dict]:
    """The ASR-vs-budget table: every curve's rows (run, iterations, ASR), curve by curve."""
    return [row for c in curves for row in c.rows()]


# ------------------------------------------------------------------------------------------- trace plan
def comparison_runs(runs: Sequence[Run], base_sampler: str = DLM_AR_SAMPLER) -> list[Run]:
    """The runs :func:`sampler_comparisons` pairs: of every DLM with a ``base_sampler`` run, that run and the
    model's other runs."""
    out = []
    for m in dict.fromkeys(r.model for r in runs if r.kind == "dlm"):
        mine = [r for r in runs if r.model == m]
        if any(r.sampler_label == base_sampler for r in mine):
            out += mine
    return out
