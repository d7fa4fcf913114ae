"""The traces a book needs, declared by its chapters, computed once, ahead of the notebooks.

Generate once, analyse many: every chapter (:mod:`srilib.chapters.chapter`) has ``trace_needs() -> list[Need]``, the
traces its notebook reads for the notebook's parameters (the profile's values over the notebook's own defaults). One
planner (:func:`build_plan`) unions the chapters' needs and :meth:`TracePlan.run` computes them, in one process,
deduplicated by what produces a trace (settings, run, sampler variant, prompts), each into the shared trace cache, so
that the notebooks then only read. ``python -m srilib book`` runs the plan before the notebooks and records, per
notebook, how many trace sets it still had to generate (the trace store's log,
:meth:`srilib.traces.TraceStore.generated`): zero when the chapters declare what they read. ``srilib.distributed``
shards the same plan over GPUs with accelerate.

A need's prompts are a list, or a function of nothing that returns them (the adaptive attacks: their prompts
exist only once the search ran; the search itself is cached by :mod:`srilib.adaptive`). One failing need never
stops the plan: it is recorded, and the chapter that reads it reports the same failure in its page.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .experiment import Experiment, Run
from .experiment import notebook_params

# Notebook name -> its chapter's class in srilib.chapters.chapter, whose ``trace_needs()`` declares the traces the
# notebook reads (notebooks not listed here read no trace). Named, not imported: the chapters stand on this module.
CHAPTER_MODULE = "srilib.chapters.chapter"
CHAPTERS = {"sri_geometry": "GeometryChapter", "sampling_vs_representation": "SamplingChapter",
            "incomplete_recovery": "RecoveryChapter", "detector_transfer": "DetectorChapter"}


@dataclass
class Need:
    """One trace set a chapter reads: ``prompts`` under ``run`` with the experiment ``exp``'s settings (its
    store and loaded models), optionally generated under a canvas attack (:mod:`srilib.canvas_attacks`; the
    prompts are then the plain requests it is applied to)."""

    chapter: str
    run: Run
    name: str
    exp: Experiment
    prompts: Sequence[str] | Callable[[], Sequence[str]]
    canvas_attack: str | None = None
    references: Sequence[str] | None = None  # per prompt, the audit's reference (DiffuGuard; in the trace key)
    error: str | None = None  # set when the chapter could not even declare this need (see each_run_needs)

    @property
    def lazy(self) -> bool:
        """Whether the prompts do not exist yet: they come from a computation (e.g. an adaptive attack's search)."""
        return callable(self.prompts)

    def resolved_prompts(self) -> list[str]:
        """The prompts (a lazy need's function is called once; its result is kept)."""
        if callable(self.prompts):
            self.prompts = list(self.prompts())
        return list(self.prompts)

    def settings(self) -> tuple:
        """The experiment settings that enter the trace key (with the run, variant and prompts: the dedupe key)."""
        e = self.exp
        return (e.steps, e.gen_length, e.block_length, e.batch_size, e.dtype, e.quantization, e.seed,
                e.temperature, tuple(e.layers), e.capture, str(e.store.root))

    def compute(self):
        """The need's traces, through the cache (computed here when missing); None for a canvas attack that does
        not fit the canvas (the chapter notes it as skipped)."""
        from .canvas_attacks import canvas_traces

        if self.error:
            raise RuntimeError(self.error)
        prompts = self.resolved_prompts()
        if self.canvas_attack:
            return canvas_traces(self.exp, self.run, prompts, self.canvas_attack)[0]
        return self.exp.traces(self.run, prompts, f"{self.name} [plan]", references=self.references)


def _failed(chapter: str, spec, err: Exception) -> Need:
    """The need standing for a run whose name or needs could not be worked out (the plan records it as failed)."""
    return Need(chapter, Run(str(spec), "?", "?"), "(run)", None, (), error=f"{type(err).__name__}: {err}")


def resolve_each(chapter: str, specs: Sequence) -> tuple[list[Run], list[Need]]:
    """(the runs that resolve, one failed need per run that does not), for a chapter that works on its run list
    as a whole (e.g. adds block-length variants) before declaring per-run needs."""
    from .experiment import resolve_run

    runs, failed = [], []
    for spec in specs:
        try:
            runs.append(resolve_run(spec))
        except Exception as e:  # noqa: BLE001
            failed.append(_failed(chapter, spec, e))
    return runs, failed


def each_run_needs(chapter: str, specs: Sequence, needs: Callable[[Run], list[Need]]) -> list[Need]:
    """``needs(run)`` for every run of a chapter, each resolved once (:func:`srilib.experiment.resolve_run`); a run
    whose name or needs cannot be worked out becomes one failed need (the plan records it, the chapter reports the
    same failure in its page), so that one bad run never takes the plan down."""
    runs, out = resolve_each(chapter, specs)
    for run in runs:
        try:
            out += needs(run)
        except Exception as e:  # noqa: BLE001
            out.append(_failed(chapter, run.label, e))
    return out


def needs_for(chapter: str, exp: Experiment, run: Run, sets: dict[str, Sequence[str]]) -> list[Need]:
    """A list of :class:`Need` of one run from ``{set name: prompts}`` (a chapter's helper)."""
    return [Need(chapter, run, name, exp, prompts) for name, prompts in sets.items()]


def standard_needs(chapter: str, exp: Experiment, run: Run, sets, harmless: bool = True) -> list[Need]:
    """The anchor split and every evaluation set of :class:`srilib.experiment.PromptSets` for one run (what
    :meth:`Experiment.anchors` and a chapter's evaluation read); ``harmless=False`` leaves out the harmless
    evaluation set."""
    named = {"anchors/harmless": sets.anchor_harmless, "anchors/harmful": sets.anchor_harmful}
    named.update({k: p for k, (p, harmful) in sets.evaluation().items() if harmful or harmless})
    return needs_for(chapter, exp, run, named)


# ----------------------------------------------------------------------------------------------- the plan
@dataclass
class TracePlan:
    """Every trace set the chapters of a profile read (see the module docstring)."""

    profile: str
    needs: list[Need] = field(default_factory=list)

    def models(self) -> list[str]:
        """The models the plan's runs use, in order of first use (the book trains the organisms among them)."""
        return list(dict.fromkeys(n.run.model for n in self.needs if n.error is None))

    def runs(self) -> list[Run]:
        return list(dict.fromkeys(n.run for n in self.needs))

    def select(self, models: Sequence[str] = (), runs: Sequence[str] = ()) -> "TracePlan":
        """The needs of some models and/or run labels (all when both are empty)."""
        if not models and not runs:
            return self
        return TracePlan(self.profile, [n for n in self.needs if n.run.model in models or n.run.label in runs])

    def describe(self) -> list[dict]:
        """One row per need: chapter, run, set, number of prompts (``computed by a search`` when lazy)."""
        return [{"chapter": n.chapter, "run": n.run.label, "set": n.name + (f" (canvas: {n.canvas_attack})"
                                                                         if n.canvas_attack else ""),
                 "prompts": "computed by a search" if n.lazy else len(n.prompts)} for n in self.needs]

    def run(self, *, progress: bool | None = None, release: bool = True, log=print) -> dict:
        """Compute every need (model by model, in order of first use), skipping duplicates; returns
        ``{"needs", "distinct", "computed", "cached", "failed": [(chapter, run, set, error)], "seconds"}``.
        ``release`` frees each model once its needs are done (a GPU holds one model at a time)."""
        t0 = time.perf_counter()
        seen: set = set()
        out = {"needs": len(self.needs), "distinct": 0, "computed": 0, "cached": 0, "failed": []}
        for need in (n for n in self.needs if n.error):
            out["failed"].append((need.chapter, need.run.model, need.name, need.error))
            log(f"plan: {need.chapter} / {need.run.model}: FAILED ({need.error})")
        shared = next((n.exp for n in self.needs if n.exp is not None), None)  # its model cache is every need's
        for model in self.models():
            for need in (n for n in self.needs if n.run.model == model and n.error is None):  # chapter order
                if progress is not None:
                    need.exp.progress = progress
                try:
                    store = need.exp.store
                    prompts = need.resolved_prompts()
                    key = (need.settings(), need.run.label, need.canvas_attack, tuple(prompts),
                           tuple(need.references or ()))
                    if key in seen or not prompts:  # a duplicate, or nothing to trace (e.g. no new budget prompt)
                        continue
                    seen.add(key)
                    mark = store.log_mark()
                    need.compute()
                    computed = store.log_mark() > mark
                except Exception as e:  # noqa: BLE001 - one failing need is recorded; its chapter reports it too
                    out["failed"].append((need.chapter, need.run.label, need.name, f"{type(e).__name__}: {e}"))
                    log(f"plan: {need.chapter} / {need.run.label} / {need.name}: FAILED ({type(e).__name__}: {e})")
                    continue
                out["distinct"] += 1
                out["computed" if computed else "cached"] += 1
            if release and shared is not None:
                shared.release(model)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out


def build_plan(profile, root: str | Path | None = None, notebooks: Sequence[str] | None = None) -> TracePlan:
    """The union of the traces that the chapters of ``profile`` (a :class:`srilib.experiment.Profile` or a name),
    or of the named ``notebooks`` only, declare for their parameters."""
    from .experiment import Profile, load_profile

    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    plan = TracePlan(prof.name)
    for nb in notebooks or prof.notebooks:
        if nb not in CHAPTERS:
            continue
        chapter = getattr(importlib.import_module(CHAPTER_MODULE), CHAPTERS[nb])
        plan.needs += chapter(notebook_params(prof, nb, root), check=False).trace_needs()  # a bad run: one failed need
    shared: dict = {}  # one loaded copy of each model for every chapter's experiment
    for n in plan.needs:
        if n.exp is not None:
            n.exp._models = shared
    return plan
