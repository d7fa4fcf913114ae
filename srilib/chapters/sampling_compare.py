"""Chapter "sampling vs representation", the comparisons: the paired sampler deltas of the paper's Table 2
(a remasking run against the same weights under AR sampling), the AR-vs-DLM family gap of Table 3, and how stable
the sampler deltas are over seeds.

Everything here starts from :class:`srilib.chapters.sampling.RunEval` (:mod:`.sampling`); the tables and the
conclusions built from these comparisons are in :mod:`.sampling_report`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..experiment import Experiment, PromptSets, selected
from ..stats import Estimate, delta
from .paper_numbers import ALL_JAILBREAKS, PAPER_TABLE2
from .sampling import DLM_AR_SAMPLER, RunEval, evaluate_run, evaluate_runs, has_set, paper_column, pool, set_label


# ---------------------------------------------------------------------------------------- Table 2: deltas
@dataclass
class Comparison:
    """A remasking run against the same weights under AR sampling, per evaluation set (paired deltas).

    Signs follow the paper's Table 2: positive = safer under remasking. ``d_rr`` = RR(other) - RR(base),
    ``d_asr`` = ASR(base) - ASR(other), ``d_irr`` = IRR(other) - IRR(base) at ``lam``.
    """

    model: str
    base: str
    other: str
    lam: float
    rows: list[dict]  # one per set: set, d_rr, d_asr, d_irr (Estimate), plus the rates
    attacks: list[str] = field(default_factory=list)  # the attacks pooled in the 'all jailbreaks' row

    def row(self, set_name: str) -> dict:
        for r in self.rows:
            if r["set"] == set_name:
                return r
        raise KeyError(f"no set {set_name!r} in this comparison; sets: {[r['set'] for r in self.rows]}")


def compare(base: RunEval, other: RunEval, lam: float = 0.5, method: str = "paired", n_boot: int = 2000,
            seed: int = 0) -> Comparison:
    """Paired deltas of RR, ASR and IRR between two runs of the same weights on the same prompts."""
    if base.model != other.model:
        raise ValueError(f"compare runs of the same weights: got {base.run} and {other.run}")
    rows = []
    for name in ["raw", *base.attacks, *[a for a in base.adaptive if a in other.sets], ALL_JAILBREAKS]:
        if name != ALL_JAILBREAKS:
            if name not in base.sets or name not in other.sets:
                continue
            if base.sets[name].prompts != other.sets[name].prompts:
                raise ValueError(f"set {name!r} has different prompts in {base.run} and {other.run}; paired deltas "
                                 "need the same prompts (build both from one PromptSets)")
        elif not base.attacks:
            continue
        elif base.attacks != other.attacks:
            raise ValueError(f"{base.run} and {other.run} were evaluated on different attacks ({base.attacks} vs "
                             f"{other.attacks}); evaluate both on one PromptSets")
        g = lambda ev, m: ev.rate(name, m, lam)  # noqa: E731
        kw = {"method": method, "n_boot": n_boot, "seed": seed}
        if name == ALL_JAILBREAKS and method == "paired":  # each request appears once per attack: resample requests
            kw["clusters"] = base.clusters(name)
        rows.append({"set": name, "paper": paper_column(name),
                     "d_rr": delta(g(other, "rr"), g(base, "rr"), **kw),
                     "d_asr": delta(g(base, "asr"), g(other, "asr"), **kw),
                     "d_irr": delta(g(other, "irr"), g(base, "irr"), **kw),
                     "rr": (g(base, "rr"), g(other, "rr")), "asr": (g(base, "asr"), g(other, "asr")),
                     "irr": (g(base, "irr"), g(other, "irr"))})
    return Comparison(model=base.model, base=base.run, other=other.run, lam=lam, rows=rows,
                      attacks=list(base.attacks))


def sampler_comparisons(results: Sequence[RunEval], base_sampler: str = DLM_AR_SAMPLER, lam: float = 0.5,
                        method: str = "paired", n_boot: int = 2000,
                        seed: int = 0) -> tuple[list[Comparison], list[str]]:
    """Every DLM remasking run against the same model's ``base_sampler`` run.

    Returns the comparisons and notes naming DLM models that lack a base run (nothing to compare with).
    """
    out, notes = [], []
    dlm_models = list(dict.fromkeys(r.model for r in results if r.kind == "dlm"))
    for m in dlm_models:
        runs = [r for r in results if r.model == m]
        base = [r for r in runs if r.sampler == base_sampler]
        if not base:
            notes.append(f"{m}: no `{m}@{base_sampler}` run, so its samplers cannot be compared with AR sampling")
            continue
        out += [compare(base[0], r, lam=lam, method=method, n_boot=n_boot, seed=seed)
                for r in runs if r.sampler != base_sampler]
    return out, notes


def delta_panel(comp: Comparison) -> dict:
    """The arguments of :func:`srilib.figures.plot_sampler_deltas` for one comparison: its rows with the
    sets' display names (:func:`srilib.chapters.sampling.set_label`), "<remasking run> vs <AR-sampling run>" as the
    title, and the paper's Table 2 gains."""
    return {"rows": [{**r, "set": set_label(r["set"])} for r in comp.rows], "title": f"{comp.other} vs {comp.base}",
            "paper": PAPER_TABLE2}


# ---------------------------------------------------------------------------------------- Table 3: families
def family_gap(results: Sequence[RunEval], metric: str = "asr", set_name: str = ALL_JAILBREAKS, n_boot: int = 2000,
               seed: int = 0) -> Estimate | None:
    """Pooled AR-family minus DLM-family rate, with a cluster-bootstrap interval over requests: every run of both
    families answers the same requests (once per attack when attacks are pooled), so the items of one request are
    correlated and are resampled together (:func:`srilib.stats.delta`, method 'cluster')."""
    ar = [r for r in results if r.family == "AR" and has_set(r, set_name)]
    dlm = [r for r in results if r.family == "DLM" and has_set(r, set_name)]
    if not ar or not dlm:
        return None
    return delta(pool([r.rate(set_name, metric) for r in ar]), pool([r.rate(set_name, metric) for r in dlm]),
                 method="cluster", clusters=np.concatenate([r.clusters(set_name) for r in ar]),
                 clusters_b=np.concatenate([r.clusters(set_name) for r in dlm]), n_boot=n_boot, seed=seed)


def matched_pairs(results: Sequence[RunEval], metric: str = "asr", set_name: str = ALL_JAILBREAKS,
                  n_boot: int = 2000, seed: int = 0) -> list[tuple[str, str, Estimate]]:
    """(AR twin, DLM, AR-minus-DLM pooled rate) for every DLM whose AR twin (:data:`srilib.chapters.AR_TWIN`) ran
    too: :func:`family_gap` restricted to the pair (the DLM's remasking runs against its twin), so that the two
    sides share pretrained weights or size, corpus and compute instead of mixing every model of a family."""
    from . import AR_TWIN

    out = []
    for m in dict.fromkeys(r.model for r in results if r.family == "DLM"):
        twin = AR_TWIN.get(m)
        sub = [r for r in results if r.model in (m, twin)]
        if twin and any(r.model == twin for r in sub):
            gap = family_gap(sub, metric, set_name, n_boot=n_boot, seed=seed)
            if gap is not None:
                out.append((twin, m, gap))
    return out


# ---------------------------------------------------------------------------------------- multi-seed
@dataclass
class Stability:
    """Deltas of each comparison per seed, and their mean and spread over seeds."""

    seeds: list[int]
    n_eval: int
    rows: list[dict]  # comparison, set, metric, per-seed values, mean, sd, min, max, same_sign

    def table(self) -> list[dict]:
        return [{"comparison": r["comparison"], "set": r["set"], "metric": r["metric"],
                 **{f"seed {s}": v for s, v in zip(self.seeds, r["values"])},
                 "mean": r["mean"], "sd": r["sd"], "range": f"[{r['min']:+.2f}, {r['max']:+.2f}]",
                 "same sign in every seed": "yes" if r["same_sign"] else "no"} for r in self.rows]


def stability(per_seed: Mapping[int, Sequence[Comparison]]) -> Stability:
    """Summarise point deltas of the same comparisons measured under several seeds."""
    seeds = list(per_seed)
    if not seeds:
        raise ValueError("no seeds given")
    keyed: dict[tuple, list[float]] = {}
    for s in seeds:
        for c in per_seed[s]:
            for r in c.rows:
                for metric in ("d_rr", "d_asr", "d_irr"):
                    keyed.setdefault((f"{c.other} vs {c.base}", r["set"], metric), []).append(r[metric].value)
    rows = []
    for (comp, set_name, metric), vals in keyed.items():
        if len(vals) != len(seeds):
            continue  # a set missing under some seed
        v = np.array(vals, dtype=float)
        ok = v[np.isfinite(v)]
        rows.append({"comparison": comp, "set": set_name, "metric": {"d_rr": "ΔRR", "d_asr": "ΔASR",
                                                                     "d_irr": "ΔIRR"}[metric],
                     "values": [float(x) for x in v], "mean": float(ok.mean()) if len(ok) else math.nan,
                     "sd": float(ok.std(ddof=1)) if len(ok) > 1 else math.nan,
                     "min": float(ok.min()) if len(ok) else math.nan, "max": float(ok.max()) if len(ok) else math.nan,
                     "same_sign": bool(len(ok) and (np.all(ok > 0) or np.all(ok < 0) or np.all(ok == 0)))})
    return Stability(seeds=seeds, n_eval=0, rows=rows)


def seed_stability(exp: Experiment, results: Sequence[RunEval], n_anchor: int, n_eval: int,
                   attacks: Sequence[str], seeds: Sequence[int], judge, tau: float = 0.1, lam: float = 0.5,
                   base_sampler: str = DLM_AR_SAMPLER, runs: Sequence[str] | None = None) -> Stability:
    """Re-measure the sampler deltas with other seeds: each seed draws another evaluation subset (``n_eval``
    prompts) and seeds the samplers. Anchors stay those of ``results`` (the main seed), the measuring instrument.

    For the main seed (``exp.seed``) the main results are reused (their first ``n_eval`` prompts), so only other
    seeds generate traces, and only for DLM runs that take part in a comparison, harmful sets only. ``runs`` (the
    profile's ``seed_runs``; None: all) limits the study to the comparisons whose two runs it names.
    """
    by_run = {r.run: r for r in results}
    main_comps, _ = sampler_comparisons(results, base_sampler=base_sampler, lam=lam)
    main_comps = [c for c in main_comps if selected(c.base, runs) and selected(c.other, runs)]
    if not main_comps:
        raise ValueError(f"seed_runs {list(runs or [])} names no compared pair (a DLM's dlm-ar run and one of its "
                         "remasking runs); name both runs of a pair, or set seed_runs to None for all")
    needed = list(dict.fromkeys([c.base for c in main_comps] + [c.other for c in main_comps]))
    per_seed: dict[int, list[Comparison]] = {}
    for s in dict.fromkeys(int(x) for x in seeds):
        if s == exp.seed and all(len(by_run[n].sets["raw"]) >= n_eval for n in needed):
            evals = {n: _head(by_run[n], n_eval) for n in needed}
        else:
            exp_s = dataclasses.replace(exp, seed=s)
            sets_s = PromptSets.build(n_anchor=n_anchor, n_eval=n_eval, attacks=attacks, seed=s)
            evs = evaluate_runs(exp_s, needed, sets_s, judge, evaluate=lambda e, r: evaluate_run(
                e, r, sets_s, judge, tau=tau, lambda_r=(lam,), anchors=by_run[r.label].anchors,
                include_harmless=False))
            evals = dict(zip(needed, evs))
        comps, _ = sampler_comparisons(list(evals.values()), base_sampler=base_sampler, lam=lam, method="newcombe")
        per_seed[s] = comps
    st = stability(per_seed)
    st.n_eval = n_eval
    return st


def _head(r: RunEval, n: int) -> RunEval:
    return dataclasses.replace(r, sets={k: v.head(n) for k, v in r.sets.items() if v.harmful})
