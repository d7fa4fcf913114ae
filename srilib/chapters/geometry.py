"""Chapter "SRI geometry": anchors, per-group trajectories (paper Figure 12) and the LDA projection (Figure 13)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from . import interval_side, weak_caveat, weak_models_line
from ..experiment import Experiment, PromptSets
from ..geometry import GROUPS, Projection, lda_projection, outcome_groups
from ..signal import refusal_rate
from ..signal import Anchors
from ..stats import Estimate, cluster_bootstrap_ci
from . import Verdict, headline_runs, weak_runs
from .paper_numbers import PAPER_ANCHOR_SEPARATION  # LLaDA's released anchors (paper, Section 2)


@dataclass
class GeometryResult:
    """Everything the chapter shows for one run (model + sampler)."""

    run: str
    anchors: Anchors
    by_set: dict[str, np.ndarray]  # evaluation set -> sigma [N, T]
    by_group: dict[str, np.ndarray]  # outcome group -> sigma [N, T]
    projection: Projection | None
    refusal: dict  # evaluation set -> Rate (dictionary refusal rate)
    empty_share: dict | None = None  # "anchors" / "evaluation" -> share of (prompt, step) pairs with nothing
    #                                  generated yet, whose `generated` pooling fell back to the canvas mean
    group_ids: dict | None = None  # outcome group -> [N] request of each generation (attacks repeat a request)
    projection_ids: np.ndarray | None = None  # [N] request of each projected vector

    def final_gap(self, hi: str = "harmless", lo: str = "refusal", n_boot: int = 2000, seed: int = 0
                  ) -> Estimate | None:
        """Mean final σ of group ``hi`` minus group ``lo`` with a bootstrap interval that resamples requests
        (None if a group has fewer than two generations)."""
        a, b = self.by_group.get(hi), self.by_group.get(lo)
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            return None
        ids = self.group_ids or {}
        ca = ids.get(hi, np.array([f"{hi}{i}" for i in range(len(a))], dtype=object))
        cb = ids.get(lo, np.array([f"{lo}{i}" for i in range(len(b))], dtype=object))
        est, l, h = cluster_bootstrap_ci((a[:, -1], b[:, -1]), (ca, cb), lambda x, y: x.mean() - y.mean(),
                                         n_boot=n_boot, seed=seed)
        return Estimate(est, l, h, "cluster-bootstrap", info={"n": (len(a), len(b))}, signed=True)

    def separability(self, n_boot: int = 2000, seed: int = 0) -> Estimate | None:
        """Balanced accuracy of the LDA's out-of-fold predictions with an interval resampling requests."""
        if self.projection is None:
            return None
        return self.projection.accuracy_interval(self.projection_ids, n_boot=n_boot, seed=seed)

    def row(self) -> dict:
        """One line of the chapter's summary table."""
        a = self.anchors
        final = {g: (float(s[:, -1].mean()) if len(s) else float("nan")) for g, s in self.by_group.items()}
        return {"run": self.run, "anchors (harmless/harmful)": f"{a.n_harmless}/{a.n_harmful}",
                "anchor fallback": a.fallback or "none", "anchor separation (mean 1−cos)": float(a.separation.mean()),
                **{f"nothing generated yet ({k}, share of prompt×step)": v
                   for k, v in (self.empty_share or {}).items()},
                "RR raw harmful": str(self.refusal["raw"]), "RR harmless": str(self.refusal["harmless"]),
                **{f"final σ ({g})": (f"{final[g]:.2f} (n={len(self.by_group[g])})" if len(self.by_group[g])
                                      else "– (n=0)") for g in GROUPS},
                "LDA balanced acc.": (self.projection.cv_accuracy if self.projection else float("nan"))}


def run_geometry(exp: Experiment, spec: str, sets: PromptSets, tau: float = 0.1) -> GeometryResult:
    """Anchors from the anchor split, then SRI signals of every evaluation set, grouped by outcome."""
    run = exp.resolve(spec)
    anchors = exp.anchors(run, sets)
    by_set, labels, sig, refusal, empty, ids = {}, [], [], {}, [], []
    anchor_sets = [exp.traces(run, p, f"anchors/{k}") for k, p in (("harmless", sets.anchor_harmless),
                                                                 ("harmful", sets.anchor_harmful))]  # cache hits
    for name, (prompts, harmful) in sets.evaluation().items():
        ts = exp.traces(run, prompts, name)
        empty.append(ts.empty_share * len(ts))
        s = anchors.signal(ts, tau=tau)
        by_set[name] = s
        refusal[name] = refusal_rate(ts.texts)
        labels.append(outcome_groups(ts.texts, harmful))
        sig.append(s)
        # the i-th prompt of every harmful set comes from the i-th request: one cluster per request
        ids.append(np.array([f"{'request' if harmful else name}#{i}" for i in range(len(ts))], dtype=object))
    S, lab, rid = np.concatenate(sig), np.concatenate(labels), np.concatenate(ids)
    by_group = {g: S[lab == g] for g in GROUPS}
    present = [g for g in GROUPS if (lab == g).sum() >= 2]
    keep = np.isin(lab, present)
    proj = lda_projection(S[keep], lab[keep]) if len(present) >= 2 else None
    shares = {"anchors": sum(t.empty_share * len(t) for t in anchor_sets) / sum(len(t) for t in anchor_sets),
              "evaluation": sum(empty) / len(S)}
    return GeometryResult(run=run.label, anchors=anchors, by_set=by_set, by_group=by_group, projection=proj,
                          refusal=refusal, empty_share=shares, group_ids={g: rid[lab == g] for g in GROUPS},
                          projection_ids=rid[keep] if proj is not None else None)


# ------------------------------------------------------------------------------------------- figures
def trajectory_panel(r: GeometryResult) -> dict:
    """The arguments of :func:`srilib.figures.plot_trajectories` for one run: σ per outcome group, the
    run as title, and its anchors' description as the note when they are the unfiltered fallback."""
    return {"groups": r.by_group, "title": r.run, "note": r.anchors.label if r.anchors.fallback else None}


def headline_panels(results: Mapping[str, GeometryResult]) -> list[dict]:
    """The arguments of :func:`srilib.figures.plot_trajectories` for the main pair's panels
    (:func:`srilib.chapters.headline_runs` of the runs with filtered anchors), titled by run."""
    main = headline_runs([k for k, r in results.items() if not r.anchors.fallback])
    return [{"groups": results[k].by_group, "title": k} for k in main]


def projection_panels(results: Mapping[str, GeometryResult]) -> list[dict]:
    """The arguments of :func:`srilib.figures.plot_projection`, one per run with a projection: its points,
    groups and axes, titled by the run and the projection's summary."""
    return [{"Z": r.projection.Z, "labels": r.projection.labels, "axes": r.projection.axes,
             "title": f"{r.run}\n{r.projection.summary}"} for r in results.values() if r.projection is not None]


def projection_note(results: Mapping[str, GeometryResult]) -> str:
    """Which runs have no projection and why (Markdown); empty when every run has one."""
    skipped = [r.run for r in results.values() if r.projection is None]
    return ("No projection for " + ", ".join(skipped) + ": fewer than two outcome groups with two or more "
            "generations (e.g. a model that refuses nothing has no refusal group).") if skipped else ""


def separation_curves(results: Mapping[str, GeometryResult]) -> dict[str, np.ndarray]:
    """The ``separation`` of :func:`srilib.figures.anchor_separation`: per run its anchors' separation per
    step [T], labelled by the run, with " *" when the anchors are the unfiltered fallback."""
    return {r.run + (" *" if r.anchors.fallback else ""): r.anchors.separation for r in results.values()}


# ------------------------------------------------------------------------------------------- conclusions
def anchor_notes(results: Mapping[str, GeometryResult] | Sequence[GeometryResult]) -> list[str]:
    """Per run, how its anchors were built and how far to trust them (Markdown bullets): an unfiltered fallback
    and what σ then measures, the filtered anchors' sizes and separation beside the paper's, a caution when an
    anchor averages fewer than 10 generations, and the share of evaluation steps where nothing was generated."""
    notes = []
    for r in (results.values() if isinstance(results, Mapping) else results):
        a = r.anchors
        if a.fallback:
            notes.append(f"- **{r.run}**: the refusal filter left the *{a.fallback}* anchor empty "
                         f"(refusal rate on raw harmful prompts {r.refusal['raw']}), so that anchor is the unfiltered "
                         f"mean. Its σ then measures closeness to *harmful prompts' states*, not to refusal: read "
                         f"this run's figures as a prompt-type direction, not as refusal dynamics.")
        else:
            notes.append(f"- **{r.run}**: filtered anchors from {a.n_harmless} complied-harmless and {a.n_harmful} "
                         f"refused-harmful generations; anchors are {a.separation.mean():.3f} apart in cosine "
                         f"distance on average (paper, LLaDA's released anchors: "
                         f"{PAPER_ANCHOR_SEPARATION[0]:g}-{PAPER_ANCHOR_SEPARATION[1]:g}).")
            if min(a.n_harmless, a.n_harmful) < 10:
                notes.append(f"  **Caution:** an anchor built from {min(a.n_harmless, a.n_harmful)} generation(s) is "
                             "mostly noise (the paper averages hundreds); read this run's σ as indicative at best.")
        empty = (r.empty_share or {}).get("evaluation", 0.0)
        if empty > 0:
            notes.append(f"  At {empty:.0%} of its evaluation (prompt, step) pairs nothing was generated yet (the "
                         "sampler committed only end-of-text so far): there φ_t is the canvas mean (see *Methods*), so "
                         "its early steps compare the model's plan, not its text.")
    return notes


def _ordering_verdict(gap: Estimate | None, cav: str = "") -> str:
    if gap is None:
        return "too few refused or complied-harmless generations to compare their final σ"
    side = interval_side(gap)
    if side > 0:
        return (f"refused generations end lower than complied-harmless ones (difference {gap}, the interval excludes "
                f"zero), the paper's ordering{cav}")
    if side < 0:
        return (f"refused generations end HIGHER than complied-harmless ones (difference {gap}, the interval excludes "
                f"zero), the opposite of the paper's ordering{cav}")
    return (f"the final σ of refused and complied-harmless generations is not separated by the interval "
            f"(difference {gap})")


def _separability_verdict(acc: Estimate | None, chance: float, cav: str = "") -> str:
    if acc is None:
        return "too few generations per group for a cross-validated projection"
    side = interval_side(acc, chance)
    if side > 0:
        return (f"LDA separates the groups above chance (out-of-fold balanced accuracy {acc}, interval above chance "
                f"{chance:.2f}), as the paper's Figure 13 finds{cav}")
    if side < 0:
        return f"LDA is below chance (out-of-fold balanced accuracy {acc}, interval below chance {chance:.2f})"
    return (f"the LDA is not separated from chance by the interval (out-of-fold balanced accuracy {acc}; chance "
            f"{chance:.2f})")


def conclusions(results: Mapping[str, GeometryResult] | Sequence[GeometryResult], n_boot: int = 2000) -> list[str]:
    """Markdown bullet lines of the geometry chapter: the caveat of weak models first, then per run whether refused
    generations end below complied-harmless ones and whether the LDA beats chance, each read from an interval
    (resampling requests), never from a point; a verdict that agrees or disagrees with the paper names the weak
    models of its run in the same sentence.

    A run's line is a :class:`~srilib.chapters.Verdict` of kind ``"geometry.ordering"``: ``side`` is the side of zero of
    harmless minus refused final σ (``gap``), ``separability`` the side of chance of the LDA's balanced accuracy
    (``accuracy``), each None where it could not be measured; a run with unfiltered anchors has kind
    ``"geometry.fallback"``."""
    rs = list(results.values()) if isinstance(results, Mapping) else list(results)
    weak = weak_models_line([r.run for r in rs])
    lines = [weak] if weak else []
    for r in rs:
        if r.anchors.fallback:
            lines.append(Verdict(f"- **{r.run}** cannot reproduce the geometry: with unfiltered anchors there is no "
                                 "refusal direction to measure against.", kind="geometry.fallback", runs=[r.run]))
            continue
        cav = weak_caveat([r.run])
        p = r.projection
        gap, acc = r.final_gap(n_boot=n_boot), r.separability(n_boot=n_boot)
        lines.append(Verdict(f"- **{r.run}**: " + _ordering_verdict(gap, cav) + "; "
                             + (_separability_verdict(acc, p.chance, cav) if p is not None
                                else "too few groups for a projection") + ".",
                             kind="geometry.ordering", side=None if gap is None else interval_side(gap),
                             runs=[r.run], weak=weak_runs([r.run]), gap=gap, accuracy=acc,
                             separability=None if acc is None else interval_side(acc, p.chance)))
    return lines


def explorer_runs(exp: Experiment, results: Mapping[str, GeometryResult], sets: PromptSets,
                  tokenizers: bool = True) -> dict:
    """Every analysed run of the chapter for the explorers' run picker (label -> :class:`srilib.widgets.ExplorerRun`):
    its evaluation traces, slimmed to the anchors' pooling and layer (cache hits: nothing is generated), its
    anchors and, with ``tokenizers``, its model for exact token colours of diffusion predictions."""
    from ..widgets import ExplorerRun, slim

    out = {}
    for spec, r in results.items():
        run = exp.resolve(spec)
        traces = {name: exp.traces(run, prompts, name) for name, (prompts, _) in sets.evaluation().items()}
        out[r.run] = ExplorerRun(slim(traces, r.anchors), r.anchors, exp.model(run.model) if tokenizers else None)
    return out
