"""The detector chapter as one object (paper Tables 4, 13 and 14; Figures 7 and 14): :class:`DetectorChapter`
builds the chapter's shared setup from its parameters once, and holds side by side what each run computes
(:meth:`~DetectorChapter.run`: the detectors, the harmless-shift section, the baseline defenses and DiffuGuard) and
the traces that reads (:meth:`~DetectorChapter.needs`, the chapter's part of the trace plan, :mod:`srilib.plan`).

Kept apart from :mod:`srilib.chapters.detector` because it joins every part of the chapter (the detectors, the
shift section, the defenses, DiffuGuard), whose modules import the core module: declared here, above them all,
the import graph keeps no circle.
"""
from __future__ import annotations

from typing import Mapping

from ..experiment import Run, selected, setup_from
from ..judges import make_judge
from ..models import masked_diffusion
from ..plan import Need, each_run_needs, needs_for, standard_needs
from . import each_run
from .adaptive import Adaptive, AdaptiveConfig, adaptive_needs
from .defenses import DefenseReport, run_defenses
from .detector import CANVAS, DetectorResult, GuardConfig, guard_demo_prompts, guard_prompts, run_detector
from .detector_diffuguard import diffuguard_run, run_diffuguard
from .shift import run_harmless_shift, shift_order, shift_prompts

CHAPTER = "detector_transfer"


class DetectorChapter:
    """The chapter for one set of parameters (a notebook's checked parameters, or a profile's for the plan):
    ``exp``, ``sets``, the guard's harmless ``train_prompts``, the shift section's ``family_prompts``, the guard
    config ``cfg``, the ASR ``judge`` and the adaptive attacks ``adv``, built once and read by both :meth:`run` and
    :meth:`needs`."""

    def __init__(self, params: Mapping):
        p = self.params = dict(params)
        self.exp, self.sets = setup_from(p)
        self.train_prompts = guard_prompts(p["n_train_harmless"], seed=p["seed"], source=p["source"])
        self.family_prompts = shift_prompts(p["n_per_family"], seed=p["seed"])
        self.cfg = GuardConfig(calib_fraction=p["calib_fraction"], min_calibration=p["min_calibration"],
                               quantile=p["quantile"], epochs=p["guard_epochs"])
        self.judge = make_judge(p["judge"])
        self.adv = Adaptive(self.exp, self.sets, self.judge,
                            AdaptiveConfig.from_params(p.get("random_search"), p.get("pair"), p["gen_length"]))

    def run(self, spec) -> tuple[DetectorResult, DefenseReport]:
        """One run's detector section, its harmless-shift section (runs of ``shift_runs``), its defenses and, on
        diffusion runs with ``diffuguard``, DiffuGuard. A failing shift or DiffuGuard section is a note on the
        result and leaves the run's other sections intact; the model is released after the run when the chapter
        has several (GPU memory)."""
        p, exp, sets = self.params, self.exp, self.sets
        try:
            res = run_detector(exp, spec, sets, self.train_prompts, tau=p["tau"], seeds=p["seeds"], cfg=self.cfg,
                               n_boot=p["n_boot"], canvas_attacks=p["canvas_attacks"],
                               adaptive=self.adv if self.adv.cfg.any_on else None)
            if selected(spec, p.get("shift_runs")):
                self._section(res, "harmless-shift section", run_harmless_shift, exp, spec, res,
                              self.family_prompts, self.train_prompts, tau=p["tau"])
            rep = run_defenses(exp, spec, sets, res, self.train_prompts, self.judge, tau=p["tau"],
                               quantile=p["quantile"], dlm_ppl_scorer=p["dlm_ppl_scorer"],
                               self_examine=p["self_examine"], self_examine_tokens=p["self_examine_tokens"],
                               guard_model=p["guard_model"], n_timing=p["n_timing"])
            if p["diffuguard"] and res.kind == "dlm":  # decoding-time defense: canvas attacks and timing under it
                dg = self._section(res, "DiffuGuard", run_diffuguard, exp, spec, sets, res, rep, self.judge,
                                   rates=p["diffuguard_rates"], n_timing=p["n_timing"])
                res.notes.extend(dg["notes"] if dg else [])
            return res, rep
        finally:
            if len(p["runs"]) > 1:
                exp.release()

    def run_all(self) -> tuple[dict[str, DetectorResult], dict[str, DefenseReport]]:
        """:meth:`run` for every run of ``runs`` in order, a run that fails reported and left out
        (:func:`srilib.chapters.each_run`): ({run: its DetectorResult}, {run: its DefenseReport})."""
        done = each_run(self.params["runs"], self.run)
        return {m: d[0] for m, d in done.items()}, {m: d[1] for m, d in done.items()}

    @staticmethod
    def _section(res: DetectorResult, name: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, or None with a note on ``res`` naming the error: one section's failure is not
        the run's."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the run's other sections stand
            res.notes.append(f"{res.run}: {name} skipped: {type(e).__name__}: {e}")
            return None

    def needs(self, run: Run) -> list[Need]:
        """The traces :meth:`run` reads for one run: the anchor split, every evaluation set, the guard's harmless
        training prompts, the harmless families (runs of ``shift_runs``, all when absent), the adaptive-attack
        sets; on masked-diffusion runs the canvas attacks, also under DiffuGuard (with ``diffuguard_rates`` its
        harmless and jailbreak sets too)."""
        p, exp, sets = self.params, self.exp, self.sets
        family = [prompt for *_, prompt in shift_order(self.family_prompts)]
        out = standard_needs(CHAPTER, exp, run, sets)
        out += needs_for(CHAPTER, exp, run, {"guard/harmless-train": self.train_prompts, **(
            {"shift/harmless-families": family} if selected(run, p.get("shift_runs")) else {})})
        out += adaptive_needs(CHAPTER, self.adv, run) if self.adv.cfg.any_on else []
        if run.kind == "dlm" and masked_diffusion(run.model, run.kind):  # canvas attacks and DiffuGuard need masks
            dg = diffuguard_run(exp, run)
            for r in [run, dg] if p.get("diffuguard") else [run]:
                out += [Need(CHAPTER, r, f"{CANVAS}{a}", exp, sets.requests, canvas_attack=a)
                        for a in p.get("canvas_attacks") or []]
            if p.get("diffuguard") and p.get("diffuguard_rates"):  # jailbreaks audited against their requests
                out += needs_for(CHAPTER, exp, dg, {"harmless": sets.eval_harmless})
                out += [Need(CHAPTER, dg, a, exp, prompts, references=sets.requests)
                        for a, prompts in sets.attacked.items()]
        return out


def trace_needs(params: dict) -> list:
    """The traces this chapter reads for its notebook's parameters (:mod:`srilib.plan`): every run's
    :meth:`DetectorChapter.needs`, and the usage example's two prompts on the first run."""
    chapter = DetectorChapter(params)
    out = each_run_needs(CHAPTER, params["runs"], chapter.needs)
    first = next((n.run for n in out if n.error is None), None)
    if first is not None:
        out.append(Need(CHAPTER, first, "guard/demo", chapter.exp, guard_demo_prompts(chapter.sets)))
    return out
