"""Chapter "Detector transfer", defenses part (paper Table 13, Figure 7): SRI Guard as a defense beside the
baselines (perplexity filter, Self-Examine, LlamaGuard 3) on one run, each defense's measured overhead against plain
untraced generation of one timing batch, and the rows of the defenses and timing tables.

A defense flags generations; a flagged generation is replaced by a refusal, and the rates are read after that
(:func:`srilib.baselines.defense_metrics`). DiffuGuard, the decoding-time defense of the diffusion runs, adds its
own row through :func:`srilib.chapters.detector_diffuguard.run_diffuguard`.

Which jailbreaks are pooled. The paper's Table 13 RR / ASR pool its five attacks (WildJailbreak, Flip Attack, PAIR,
Refusal Suppression, Random Search); ours pool our template attacks (the detector chapter's jailbreak sets), a
different set, so every row names both pools. Where the profile ran the adaptive attacks (Random Search, PAIR), a
second pool holds exactly the attacks the paper's pool shares with ours (:func:`shared_attacks`): Refusal
Suppression, Flip Attack, Random Search and PAIR where they ran. Our ``roleplay`` templates are WildJailbreak-like,
ours, not the WildJailbreak data set, so they do not count as shared
(:data:`srilib.chapters.paper_numbers.PAPER_POOL_NOT_SHARED`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..baselines import (LLAMA_GUARD, JudgeDefense, PerplexityFilter, SelfExamine, SRIGuardDefense,
                         defense_metrics, has_plain_generate, llama_guard_defense, plain_generate, sampler_generate)
from ..experiment import Experiment, PromptSets
from ..models import resolve_layers
from ..stats import Rate
from ..timing import median_seconds
from .detector import DEFENSES, DIFFUGUARD, DetectorResult
from .paper_numbers import PAPER_DEFENSES, PAPER_OVERHEAD_WORDS, PAPER_SRI_OVERHEAD_PER_MODEL, PAPER_SRI_OVERHEAD_RANGE
from .paper_numbers import PAPER_ALL_JAILBREAKS, PAPER_POOLED_ATTACKS, count_word, shared_with_paper_pool


@dataclass
class DefenseReport:
    """Baselines and SRI Guard on one run: per defense a row with status, overhead and metrics."""

    run: str
    rows: list[dict]
    gen_seconds: float  # fresh traced generation of the timing batch (median over rounds)
    n_timing: int
    judge: str
    plain_seconds: float = math.nan  # plain untraced generation of the same batch (sampler.generate)
    capture: str = "after"  # how the traces captured states (TraceSet.meta["capture"])
    plain_is_traced: bool = False  # the sampler had no plain generate: the base time is a traced one
    pool: list[str] = field(default_factory=list)  # the jailbreak sets pooled in rr / asr (our template attacks)
    shared_pool: list[str] = field(default_factory=list)  # sets pooled in rr_shared / asr_shared (see shared_attacks)

    @property
    def capture_pct(self) -> float:
        """Cost of capturing the hidden states: (traced - plain) / plain generation time, in %."""
        return 100.0 * (self.gen_seconds - self.plain_seconds) / self.plain_seconds

    def row(self, name: str) -> dict | None:
        return next((r for r in self.rows if r["defense"] == name), None)


def shared_attacks(sets: Sequence[str]) -> list[str]:
    """Those of our evaluation sets that run an attack of the paper's five-attack pool (paper column in
    :data:`srilib.chapters.paper_numbers.PAPER_POOLED_ATTACKS`), our WildJailbreak-like ``roleplay`` excluded: it
    is ours, not the WildJailbreak data set (:data:`srilib.chapters.paper_numbers.PAPER_POOL_NOT_SHARED`)."""
    from .sampling import paper_column

    ok = set(shared_with_paper_pool([paper_column(k) for k in sets]))
    return [k for k in sets if paper_column(k) in ok]


def pool_label(sets: Sequence[str]) -> str:
    """Our template-attack pool, named by its members (the sampling chapter's label of the same pool)."""
    from .sampling import pooled_label

    return pooled_label(list(sets))


def shared_pool_label(sets: Sequence[str]) -> str:
    """The pool of the attacks the paper's five-attack pool shares with ours, named by its members."""
    from .sampling import paper_column

    return (f"shared with the paper's {count_word(len(PAPER_POOLED_ATTACKS))} (pool of: "
            + ", ".join(f"{k} = {paper_column(k)}" for k in sets) + ")")


def paper_overhead_factor(per_model: dict[str, float] | None = None) -> dict:
    """How many times less SRI Guard costs than the paper's cheapest baseline (the perplexity filter, Table 13
    mean overhead), computed by us from the paper's Table 13 per-model SRI Guard overheads; the paper itself
    states it in words only (:data:`PAPER_OVERHEAD_WORDS`).

    ``per_model`` (default :data:`PAPER_SRI_OVERHEAD_PER_MODEL`): paper model -> SRI Guard overhead %; when empty,
    the published per-model range (:data:`PAPER_SRI_OVERHEAD_RANGE`) bounds the factor. Returns ``lo`` / ``hi``
    (the factor against the dearest / cheapest model), ``mean`` (against the mean of the per-model values; None
    from the range alone), ``source`` (what it was computed from, labelled as ours) and ``text`` (the sentence the
    chapter prints: the paper's words, then our computation).
    """
    base = PAPER_DEFENSES["perplexity filter"][0]
    pm = dict(PAPER_SRI_OVERHEAD_PER_MODEL if per_model is None else per_model)
    if pm:
        v = np.array(list(pm.values()), dtype=float)
        lo, hi, mean = base / v.max(), base / v.min(), base / v.mean()
        source = (f"our computation from the paper's Table 13 per-model overheads of SRI Guard ({len(v)} models, "
                  f"mean {v.mean():.3g}%) against its perplexity filter's {base:g}%")
        factor = f"about {_sig2(mean)} times ({_sig2(lo)}–{_sig2(hi)} per model)"
    else:
        r_lo, r_hi = PAPER_SRI_OVERHEAD_RANGE
        lo, hi, mean = base / r_hi, base / r_lo, None
        source = (f"our computation from the paper's Table 13 per-model range of SRI Guard's overhead "
                  f"({r_lo:g}–{r_hi:g}%) against its perplexity filter's {base:g}%")
        factor = f"about {_sig2(lo)}–{_sig2(hi)} times"
    words, where = PAPER_OVERHEAD_WORDS
    text = f"paper, in its own words: “{words}” ({where}); {source}: {factor}"
    return {"lo": float(lo), "hi": float(hi), "mean": None if mean is None else float(mean), "source": source,
            "text": text}


def _sig2(x: float) -> str:
    """``x`` rounded to two significant figures, written out (107 -> "110", 426 -> "430", 3.14 -> "3.1")."""
    return f"{float(f'{x:.2g}'):g}"


def short_sampler(exp: Experiment, spec: str, n_tokens: int):
    """The run's sampler (its remasking rule, one block) with ``n_tokens`` steps and tokens (yes/no answers)."""
    run = replace(exp.resolve(spec), block_length=None)  # one block: drop a block length such as ":b16"
    return replace(exp, steps=n_tokens, gen_length=n_tokens, block_length=None).sampler(run)


_GUARD_MODELS: dict[str, JudgeDefense] = {}


def resolve_guard_model(guard_model, judge=None) -> tuple[JudgeDefense | None, str]:
    """The LlamaGuard-3 defense from its parameter: (defense, "run") or (None, why it is not run).

    ``"auto"``: :data:`srilib.baselines.LLAMA_GUARD` when CUDA is available; a hub name: that model (loaded once
    per session; the ASR ``judge`` itself when it is the same model, so it is never loaded twice); a judge
    object: used as it is; None: skipped.
    """
    import torch

    if guard_model is None:
        return None, "not run (guard_model=None)"
    if guard_model == "auto":
        if not torch.cuda.is_available():
            return None, "not run (needs GPU)"
        guard_model = LLAMA_GUARD
    if not isinstance(guard_model, str):
        return JudgeDefense(guard_model, "LlamaGuard 3"), "run"
    if getattr(judge, "model_label", None) == guard_model:
        return JudgeDefense(judge, "LlamaGuard 3"), "run"
    if guard_model not in _GUARD_MODELS:
        _GUARD_MODELS[guard_model] = llama_guard_defense(guard_model)
    return _GUARD_MODELS[guard_model], "run"


def timing_batch(sets: PromptSets, jailbreaks: Sequence[str], n_timing: int) -> list[str]:
    """The overhead timing batch: ``n_timing`` (at least 2) eval prompts, harmless and jailbreak interleaved."""
    pool_j = [p for i in range(len(sets.eval_harmful)) for a in jailbreaks for p in [sets.attacked[a][i]]]
    return [p for pair in zip(sets.eval_harmless, pool_j) for p in pair][:max(2, n_timing)]


def run_defenses(exp: Experiment, spec: str, sets: PromptSets, result: DetectorResult,
                 train_prompts: Sequence[str], judge, *, tau: float = 0.1, quantile: float = 0.99,
                 dlm_ppl_scorer: str | None, self_examine: bool = True, self_examine_tokens: int = 8,
                 guard_model: str | None = "auto", n_timing: int = 8, repeats: int = 5,
                 gen_rounds: int = 2) -> DefenseReport:
    """Each defense on the run's evaluation sets and its overhead.

    Rates (a flagged generation replaced by a refusal): the flag rate on harmless prompts (``fpr``), the share
    of harmless prompts refused with the defense in place, the model's own refusals included
    (``harmless_refused``, the paper's "false positives" column), RR / ASR after the defense on our pooled template
    attacks (``rr`` / ``asr``, with request-level intervals), and, when the detector run holds adaptive attacks
    (Random Search, PAIR), on the pool of the attacks the paper's pool shares with ours (``rr_shared`` /
    ``asr_shared``, :func:`shared_attacks`; the report's ``shared_pool`` names them).

    Overhead, on a timing batch of ``n_timing`` prompts (harmless and jailbreak, interleaved), against **plain
    untraced generation** of that batch (``sampler.generate``, the paper's base generation time): each
    defense's wall time on the batch / plain time (``overhead %``). SRI Guard reads hidden states that plain
    decoding does not keep, so it also gets ``overhead incl. capture %`` = (traced time - plain time + guard
    time) / plain time, with the traced time from a fresh, uncached ``sampler.trace_batch`` of the same batch.
    After one untimed warm-up of both, ``gen_rounds`` rounds each time a plain and a traced generation
    (alternating which goes first); the medians are used.

    The perplexity filter scores prompts with the target model itself when it is autoregressive; a diffusion
    target uses ``dlm_ppl_scorer`` (an AR model name) or skips the filter when it is None. ``guard_model``: see
    :func:`resolve_guard_model`.
    """
    run = exp.resolve(spec)
    lm = exp.model(run.model)
    jb = result.jailbreaks
    # the pool the paper's five-attack pool shares with ours, where the adaptive attacks ran (their prompts, as the
    # detector run stored them, find its cached traces)
    adaptive = [k for k in result.adaptive if k in result.prompts]
    shared = shared_attacks([*jb, *adaptive]) if adaptive else []
    names = list(dict.fromkeys(["harmless", *jb, *shared]))
    src = {"harmless": sets.eval_harmless, **sets.attacked, **{k: result.prompts[k] for k in adaptive}}
    ev = {k: exp.traces(run, src[k], k) for k in names}
    prompts = {k: list(ts.prompts) for k, ts in ev.items()}
    texts = {k: list(ts.texts) for k, ts in ev.items()}

    defenses: dict[str, object] = {"SRI Guard": SRIGuardDefense(result.guard, result.anchors["last"], tau)}
    status: dict[str, str] = {}
    scorer = lm if lm.kind == "ar" else (exp.model(dlm_ppl_scorer) if dlm_ppl_scorer else None)
    if scorer is None:
        status["perplexity filter"] = "not run (DLM target: set dlm_ppl_scorer to an AR model)"
    else:
        defenses["perplexity filter"] = PerplexityFilter(scorer, quantile, exp.batch_size).fit(list(train_prompts))
    if self_examine:
        defenses["Self-Examine"] = SelfExamine(sampler_generate(lm, short_sampler(exp, run, self_examine_tokens),
                                                                exp.batch_size))
    else:
        status["Self-Examine"] = "not run (self_examine=False)"
    guard_def, why = resolve_guard_model(guard_model, judge)
    if guard_def is None:
        status["LlamaGuard 3"] = why
    else:
        defenses["LlamaGuard 3"] = guard_def

    # overhead: a fresh traced generation of one timing batch, then each defense on that batch
    tprompts = timing_batch(sets, jb, n_timing)
    sampler, layers = exp.sampler(run), resolve_layers(lm, exp.layers)
    gen_s, plain_s, tts = timed_generations(sampler, lm, tprompts, layers, gen_rounds)

    rows = [{"defense": "undefended", "stage": "–", "status": "run", "overhead %": 0.0,
             "overhead incl. capture %": 0.0,
             **defense_metrics({k: np.zeros(len(v), bool) for k, v in texts.items()}, texts, sets.requests,
                               judge, jailbreaks=jb, shared=shared)}]
    for name in DEFENSES[1:]:
        if name not in defenses:
            rows.append({"defense": name, "stage": "–", "status": status[name], "overhead %": float("nan")})
            continue
        d = defenses[name]
        flags, unparsed = {}, 0
        for k in names:
            flags[k] = np.asarray(d.flag(prompts[k], texts[k], traces=ev[k]), bool)
            unparsed += getattr(d, "n_unparsed_", 0)
        sec = median_seconds(lambda: d.flag(tts.prompts, tts.texts, traces=tts), repeats, slow=0.5)
        capture = gen_s - plain_s if name == "SRI Guard" else 0.0  # only SRI Guard needs the states
        row = {"defense": name, "stage": d.stage, "status": "run", "overhead %": 100.0 * sec / plain_s,
               "overhead incl. capture %": 100.0 * (capture + sec) / plain_s, "seconds": sec,
               **defense_metrics(flags, texts, sets.requests, judge, jailbreaks=jb, shared=shared)}
        if isinstance(d, SelfExamine):
            n_ans = sum(map(len, flags.values()))
            row.update(n_unparsed=unparsed, n_answers=n_ans,
                       note=f"{unparsed}/{n_ans} answers had no yes/no word (counted as not flagged)")
        rows.append(row)
    return DefenseReport(run=run.label, rows=rows, gen_seconds=gen_s, n_timing=len(tprompts),
                         judge=getattr(judge, "name", str(judge)), plain_seconds=plain_s,
                         capture=str(tts.meta.get("capture", "after")), plain_is_traced=not has_plain_generate(sampler),
                         pool=list(jb), shared_pool=list(shared))


def timed_generations(sampler, lm, prompts: Sequence[str], layers, rounds: int = 2):
    """(traced seconds, plain seconds, traces) of one batch: after an untimed warm-up of both (the first calls of
    a batch shape are much slower), ``rounds`` rounds each time a fresh ``sampler.trace_batch`` and a plain
    untraced generation (:func:`srilib.baselines.plain_generate`), alternating which goes first so that a
    drifting machine load affects both alike; medians over rounds."""
    prompts = list(prompts)
    sampler.trace_batch(lm, prompts, layers)
    plain_generate(sampler, lm, prompts)
    traced_t, plain_t, tts = [], [], None
    for r in range(max(1, int(rounds))):
        for which in (("traced", "plain") if r % 2 == 0 else ("plain", "traced")):
            t0 = time.perf_counter()
            if which == "traced":
                tts = sampler.trace_batch(lm, prompts, layers)
                traced_t.append(time.perf_counter() - t0)
            else:
                plain_generate(sampler, lm, prompts)
                plain_t.append(time.perf_counter() - t0)
    return float(np.median(traced_t)), float(np.median(plain_t)), tts


# ------------------------------------------------------------------------------------------------- tables
def rate_pct(rate) -> float:
    """A Rate in percent (NaN for anything else, e.g. a missing cell)."""
    return 100.0 * rate.value if isinstance(rate, Rate) else float("nan")


OVERHEAD_COL = "overhead % (defense alone)"
OVERHEAD_CAPTURE_COL = "overhead % incl. capture"
REFUSED_COL = "harmless refused % (paper's FP)"
FLAGGED_COL = "harmless flagged %"
POOL_COL = "jailbreak pool, ours (RR / ASR)"
PAPER_POOL_COL = "jailbreak pool, paper (RR / ASR)"
SHARED_POOL_COL = "shared pool (attacks in both)"
SHARED_RR_COL = "shared pool RR %"
SHARED_ASR_COL = "shared pool ASR %"


def _pool_text(reports, attr: str, label) -> str:
    """One label for a pool over runs: the runs' common label, or each distinct one with the runs that have it."""
    by = {}
    for rep in reports.values():
        if getattr(rep, attr, None):
            by.setdefault(label(getattr(rep, attr)), []).append(rep.run)
    if len(by) <= 1:
        return next(iter(by), "–")
    return "; ".join(f"{lab} on {', '.join(runs)}" for lab, runs in by.items())


def defense_rows(reports: dict[str, DefenseReport]) -> list[dict]:
    """Paper Table 13 with ours beside it, mean over runs (%).

    Overhead is against plain untraced generation, twice: the defense alone, and including the capture of hidden
    states (which only SRI Guard needs). "harmless refused" is the paper's false-positive quantity: harmless
    prompts refused with the defense in place, the model's own refusals included (so not 0 undefended);
    "harmless flagged" is the defense's own flag rate (0 undefended by construction), a different quantity
    without a paper column.

    The jailbreak RR / ASR pool our template attacks (:data:`POOL_COL` names them), the paper's its five attacks
    (:data:`PAPER_POOL_COL`): different pools. Where the runs include the adaptive attacks, the pool of exactly the
    attacks the paper's pool shares with ours (:data:`SHARED_POOL_COL`, :func:`shared_attacks`) gets its own
    RR / ASR columns (the paper's numbers stay those of its five-attack pool).
    """
    pool = _pool_text(reports, "pool", pool_label)
    shared = _pool_text(reports, "shared_pool", shared_pool_label)
    has_shared = any(rep.shared_pool for rep in reports.values())
    rows = []
    extra = [DIFFUGUARD] if any(rep.row(DIFFUGUARD) for rep in reports.values()) else []
    for name in [*DEFENSES, *extra]:
        rs = [rep.row(name) for rep in reports.values()]
        if name == DIFFUGUARD:  # diffusion runs only: autoregressive runs have no DiffuGuard row
            rs = [r for r in rs if r]
        ran = [r for r in rs if r and r["status"] == "run"]
        row = {"defense": name}
        if not ran:
            row["ours"] = next((r["status"] for r in rs if r), "not run")
        else:
            oh = [r["overhead %"] for r in ran]
            ohc = [r["overhead incl. capture %"] for r in ran]
            row.update({"runs": len(ran), OVERHEAD_COL: f"{np.mean(oh):.3g}",
                        OVERHEAD_CAPTURE_COL: f"{np.mean(ohc):.3g}",
                        "incl. capture, per run": f"{min(ohc):.3g}–{max(ohc):.3g}"})
            if all(r.get("harmless_refused") is not None for r in ran):
                row[REFUSED_COL] = float(np.mean([rate_pct(r["harmless_refused"]) for r in ran]))
            else:  # DiffuGuard with diffuguard_rates off: overhead (and the canvas-attack ASR) only
                row[REFUSED_COL] = "not measured"
            row[FLAGGED_COL] = (float(np.mean([rate_pct(r["fpr"]) for r in ran])) if all("fpr" in r for r in ran)
                                else "– (decoding-time)")
            for col, key in (("jailbreak RR %", "rr"), ("jailbreak ASR %", "asr")):
                row[col] = (float(np.mean([rate_pct(r[key]) for r in ran])) if all(r.get(key) is not None for r in ran)
                            else "not measured")
            if has_shared:
                for col, key in ((SHARED_RR_COL, "rr_shared"), (SHARED_ASR_COL, "asr_shared")):
                    have = [r[key] for r in ran if r.get(key) is not None]
                    row[col] = float(np.mean([rate_pct(x) for x in have])) if have else "not measured"
            if len(ran) < len(rs):
                row["ours"] = f"not run on {len(rs) - len(ran)} run(s)"
            elif name == DIFFUGUARD:
                row["ours"] = "diffusion runs only; replaces the sampler"
        p = PAPER_DEFENSES.get(name)
        if p is None:  # not in the paper's Table 13 (DiffuGuard: paper Table 14, canvas attacks only)
            row.update({"paper overhead %": "– (not in Table 13)", "paper FP % (harmless refused)": "–",
                        "paper RR %": "–", "paper ASR %": "–"})
        else:
            row.update({"paper overhead %": p[0], "paper FP % (harmless refused)": p[1], "paper RR %": p[2],
                        "paper ASR %": p[3]})
        row.update({POOL_COL: pool, PAPER_POOL_COL: PAPER_ALL_JAILBREAKS})
        if has_shared:
            row[SHARED_POOL_COL] = shared
        rows.append({**{c: row[c] for c in TABLE13_ORDER if c in row}, **row})
    return rows


# Table 13's columns with each of the paper's beside ours; the per-run range and our note last
TABLE13_ORDER = ("defense", "runs", OVERHEAD_COL, OVERHEAD_CAPTURE_COL, "paper overhead %", REFUSED_COL,
                 "paper FP % (harmless refused)", "jailbreak RR %", "paper RR %", "jailbreak ASR %", "paper ASR %",
                 POOL_COL, PAPER_POOL_COL, SHARED_RR_COL, SHARED_ASR_COL, SHARED_POOL_COL, FLAGGED_COL,
                 "incl. capture, per run", "ours")


def _pct_str(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3g}"


def timing_rows(reports: dict[str, DefenseReport]) -> list[dict]:
    """Per run: the timing batch, plain and traced generation seconds and what capturing the states costs."""
    return [{"run": rep.run, "timing batch": rep.n_timing, "capture": rep.capture,
             "plain generation s": f"{rep.plain_seconds:.3f}" + (" (traced: no plain generate)"
                                                                 if rep.plain_is_traced else ""),
             "traced generation s": f"{rep.gen_seconds:.3f}", "capture % of plain": _pct_str(rep.capture_pct)}
            for rep in reports.values()]


def defense_run_rows(reports: dict[str, DefenseReport]) -> list[dict]:
    """Per run and defense: status, overhead (alone and incl. capture) and the rates with 95% intervals (Wilson on
    the harmless prompts; on the pooled jailbreaks, which repeat every request once per attack, Wilson on the
    effective number of requests: :func:`srilib.stats.request_interval`), with the pools named."""
    out = []
    has_shared = any(rep.shared_pool for rep in reports.values())
    for rep in reports.values():
        for r in rep.rows:
            row = {"run": rep.run, "defense": r["defense"], "status": r["status"],
                   OVERHEAD_COL: _pct_str(r["overhead %"]),
                   OVERHEAD_CAPTURE_COL: _pct_str(r.get("overhead incl. capture %", math.nan)),
                   "harmless refused (paper's FP)": str(r.get("harmless_refused", "–")),
                   "harmless flagged": str(r.get("fpr", "–")),
                   "flagged jailbreaks": str(r.get("flagged_jailbreak", "–")),
                   "jailbreak RR": str(r.get("rr", "–")), "jailbreak ASR": str(r.get("asr", "–")),
                   POOL_COL: pool_label(rep.pool) if rep.pool else "–"}
            if has_shared:
                row.update({"shared pool RR": str(r.get("rr_shared", "–")),
                            "shared pool ASR": str(r.get("asr_shared", "–")),
                            SHARED_POOL_COL: shared_pool_label(rep.shared_pool) if rep.shared_pool else "–"})
            out.append({**row, "note": r.get("note", "")})
    return out


def overhead_points(reports: dict[str, DefenseReport]) -> dict:
    """The arguments of :func:`srilib.figures.plot_overhead` (paper Figure 7 style): per defense but
    undefended, in :data:`DEFENSES` order, one (overhead incl. capture %, ASR %) point [runs, 2] per run it ran on;
    the undefended ASR % averaged over runs; the paper's Table 13 (overhead %, ASR %) per defense and its
    undefended ASR %. Our ASR pools our template attacks, the paper's its five attacks: different pools."""
    ours = {name: np.array([(r["overhead incl. capture %"], rate_pct(r["asr"])) for rep in reports.values()
                            if (r := rep.row(name)) and r["status"] == "run"], dtype=float).reshape(-1, 2)
            for name in DEFENSES[1:]}
    return {"ours": ours,
            "undefended": float(np.mean([rate_pct(rep.row("undefended")["asr"]) for rep in reports.values()])),
            "paper": {name: (PAPER_DEFENSES[name][0], PAPER_DEFENSES[name][3]) for name in DEFENSES[1:]},
            "paper_undefended": PAPER_DEFENSES["undefended"][3]}


__all__ = ["DefenseReport", "paper_overhead_factor", "shared_attacks", "pool_label", "shared_pool_label", "POOL_COL",
           "PAPER_POOL_COL", "SHARED_POOL_COL", "SHARED_RR_COL", "SHARED_ASR_COL", "short_sampler",
           "resolve_guard_model", "timing_batch", "run_defenses", "timed_generations",
           "rate_pct", "OVERHEAD_COL", "OVERHEAD_CAPTURE_COL", "REFUSED_COL", "FLAGGED_COL", "defense_rows",
           "timing_rows", "defense_run_rows", "overhead_points"]
