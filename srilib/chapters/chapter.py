"""Each chapter of the book as one object: its parameters checked and its setup built once, what one run computes
(:meth:`Chapter.run`) and, beside it, the traces that reads (:meth:`Chapter.needs`, the chapter's part of the
trace plan, :mod:`srilib.plan`), and its findings at a glance (``findings``: for every claim of the paper the
chapter tests, the paper's number, ours with its 95% interval and the verdict that interval allows, built from the
same estimates the chapter's conclusions print; no new measurement).

A notebook builds its chapter from its parameters (``chapter = GeometryChapter(globals())``), calls it and shows
what it returns; ``make book`` builds the same object from the profile (:func:`srilib.plan.build_plan`) and
computes ``chapter.trace_needs()`` before any notebook runs, so that the notebooks only read (a trace the plan
missed fails ``test_after_the_plan_the_smoke_notebooks_generate_no_trace``). The four chapters sit here side by
side, above every module they join (the evaluation, the comparisons, the detectors, the defenses), so the import
graph keeps no circle.
"""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Mapping, Sequence

from ..experiment import PromptSets, Run, check_params, resolve_run, selected, setup_from
from ..judges import make_judge
from ..signal import DEFAULT_LAMBDA_R
from ..models import masked_diffusion
from ..plan import Need, each_run_needs, needs_for, resolve_each, standard_needs
from . import each_run
from .adaptive import Adaptive, AdaptiveConfig, adaptive_needs, transfer_needs
from .defenses import DefenseReport, run_defenses
from .detector import CANVAS, DetectorResult, GuardConfig, guard_demo_prompts, guard_prompts, run_detector
from .detector_diffuguard import diffuguard_run, run_diffuguard
from .detector_intervals import method_difference
from .geometry import GeometryResult, run_geometry
from . import finding, headline_runs, main_run
from .paper_numbers import (ALL_JAILBREAKS, PAPER_ABLATION, PAPER_AR_IRR_MAX, PAPER_DLM_IRR_LOOSE, PAPER_IRR_LOSS,
                            PAPER_MODELS_TEXT, PAPER_TABLE1, paper_family_asr, paper_table2_max)
from .recovery import (DELTA_COL, MAJORITY, RecoveryResult, family_irr_gap, run_recoveries, run_recovery,
                       sampler_irr_deltas)
from .sampling import RunEval, comparison_runs, evaluate_run, evaluate_runs, expand_runs, has_set
from .sampling_compare import (Comparison, Stability, family_gap, matched_pairs, sampler_comparisons,
                               seed_stability)
from .shift import run_harmless_shift, shift_order, shift_prompts


class Chapter:
    """One chapter for one set of parameters (a notebook's ``globals()`` or a profile's values over the notebook's
    defaults): every parameter checked first (:func:`srilib.experiment.check_params`: one error naming all bad ones,
    before anything loads), then ``params`` (the checked values), ``exp`` and ``sets``
    (:func:`srilib.experiment.setup_from`). The trace plan passes ``check=False``: it has checked the whole profile
    before (:func:`srilib.experiment.check_profile`), and a run that does not resolve there is one failed need."""

    name = ""  # the chapter's notebook

    def __init__(self, params: Mapping, check: bool = True):
        self.params = check_params(self.name, params) if check else dict(params)
        self.exp, self.sets = setup_from(self.params)

    @cached_property
    def adv(self) -> Adaptive:
        """The adaptive attacks (Random Search, PAIR) of the ``random_search`` and ``pair`` parameters, built on first
        use (:class:`srilib.chapters.adaptive.Adaptive`; the sampling and detector chapters, which set ``judge``)."""
        p = self.params
        return Adaptive(self.exp, self.sets, self.judge,
                        AdaptiveConfig.from_params(p.get("random_search"), p.get("pair"), p["gen_length"]))

    def adaptive(self) -> Adaptive | None:
        """:attr:`adv` when the parameters turn an adaptive attack on, else None (nothing is built when both
        sections are absent)."""
        p = self.params
        if not (p.get("random_search") or p.get("pair")):
            return None
        return self.adv if self.adv.cfg.any_on else None

    def specs(self) -> list:
        """The runs the chapter analyses, in order (the ``runs`` parameter)."""
        return list(self.params["runs"])

    def run(self, spec):
        """One run's result."""
        raise NotImplementedError

    def needs(self, run: Run) -> list[Need]:
        """The traces :meth:`run` reads for one (resolved) run."""
        raise NotImplementedError

    def run_all(self) -> dict:
        """{run: :meth:`run`} for every run in order; a run that fails is reported and left out
        (:func:`srilib.chapters.each_run`)."""
        return each_run(self.specs(), self.run)

    def trace_needs(self) -> list[Need]:
        """The traces the chapter reads: every run's :meth:`needs`; a run whose needs cannot be worked out is one
        failed need (:func:`srilib.plan.each_run_needs`)."""
        return each_run_needs(self.name, self.specs(), self.needs)


class GeometryChapter(Chapter):
    """SRI geometry (paper Figures 12 and 13): per run, the SRI trajectories of every evaluation set grouped by
    outcome, and their LDA projection."""

    name = "sri_geometry"

    def run(self, spec) -> GeometryResult:
        """:func:`srilib.chapters.geometry.run_geometry` of one run."""
        return run_geometry(self.exp, spec, self.sets, tau=self.params["tau"])

    def needs(self, run: Run) -> list[Need]:
        """The anchor split and every evaluation set (the explorer reads every run's evaluation sets: the same
        traces)."""
        return standard_needs(self.name, self.exp, run, self.sets)

    @staticmethod
    def findings(results: Mapping[str, GeometryResult] | Sequence[GeometryResult], n_boot: int = 2000) -> list:
        """The chapter's findings at a glance (:mod:`srilib.chapters`), for the main pair's runs: whether refused
        generations end below complied-harmless ones (Figure 12) and whether the LDA separates the outcome groups
        above chance (Figure 13), each from the interval its conclusion bullet prints."""
        rs = {r.run: r for r in (results.values() if isinstance(results, Mapping) else results)}
        out = []
        labels = [k for k, r in rs.items() if not r.anchors.fallback]
        main = main_run(labels)
        for label in headline_runs(labels):
            r, top = rs[label], label == main
            gap = r.final_gap(n_boot=n_boot)
            if gap is not None:
                out.append(finding("Refused generations end below complied-harmless ones (Fig. 12; ours: final σ, "
                                   "harmless minus refused)",
                                   "refused σ near 0 at every step", gap, [label], headline=top))
            acc = r.separability(n_boot=n_boot) if r.projection is not None else None
            if acc is not None:
                out.append(finding("An LDA of SRI trajectories separates harmless, jailbroken and refused (Fig. 13; "
                                   f"ours: balanced accuracy, chance {r.projection.chance:.2f})",
                                   "distinct, partly overlapping regions", acc, [label], ref=r.projection.chance,
                                   signed=False, headline=top))
        return out


class SamplingChapter(Chapter):
    """Sampling vs representation (paper Tables 2 and 3, Figure 6): every run (block-length variants added) evaluated
    on every set, the adaptive attacks included; the sampler comparisons of each DLM; the seed study. Adds
    ``judge``, ``adv`` (the adaptive attacks, :class:`srilib.chapters.adaptive.Adaptive`) and ``runs`` (resolved,
    expanded)."""

    name = "sampling_vs_representation"

    def __init__(self, params: Mapping, check: bool = True):
        super().__init__(params, check)
        self.judge = make_judge(self.params["judge"])

    @property
    def runs(self) -> list[Run]:
        """The runs, each resolved once (model, kind, sampler), plus their block-length variants
        (:func:`srilib.chapters.sampling.expand_runs`)."""
        return expand_runs([resolve_run(r) for r in self.params["runs"]], self.params.get("block_lengths") or [])

    def specs(self) -> list[Run]:
        return self.runs

    def run(self, spec) -> RunEval:
        """:func:`srilib.chapters.sampling.evaluate_run` of one run, its adaptive-attack sets included."""
        p = self.params
        return evaluate_run(self.exp, spec, self.sets, self.judge, tau=p["tau"], lambda_r=p["lambda_r"],
                            adaptive=self.adaptive())

    def run_all(self) -> list[RunEval]:
        """Every run's :meth:`run`, one model at a time, in the order of :meth:`specs`; a failing run is reported
        and left out."""
        p = self.params
        return evaluate_runs(self.exp, self.specs(), self.sets, self.judge, tau=p["tau"], lambda_r=p["lambda_r"],
                             on_error="report", adaptive=self.adaptive())

    def comparisons(self, results: Sequence[RunEval]) -> tuple[list[Comparison], list[str]]:
        """Every DLM's remasking runs against its ``dlm-ar`` run (paired, at the largest λ_r) and the notes on DLMs
        that have none (:func:`srilib.chapters.sampling_compare.sampler_comparisons`)."""
        p = self.params
        return sampler_comparisons(results, lam=max(p["lambda_r"]), n_boot=p["n_boot"], seed=p["seed"])

    def seed_study(self, results: Sequence[RunEval], comps: Sequence[Comparison]) -> Stability | None:
        """The sampler deltas re-measured with every seed of ``seeds`` (None with fewer than two seeds or no
        comparison; :func:`srilib.chapters.sampling_compare.seed_stability`)."""
        p = self.params
        if len(p["seeds"]) < 2 or not comps:
            return None
        return seed_stability(self.exp, results, n_anchor=p["n_anchor"], n_eval=p["seed_n_eval"] or p["n_eval"],
                              attacks=p["attacks"], seeds=p["seeds"], judge=self.judge, tau=p["tau"],
                              lam=max(p["lambda_r"]), runs=p["seed_runs"])

    def needs(self, run: Run) -> list[Need]:
        """The anchor split, every evaluation set and the adaptive-attack sets with their budget checkpoints."""
        return standard_needs(self.name, self.exp, run, self.sets) + (
            adaptive_needs(self.name, self.adv, run, curves=True) if self.adaptive() else [])

    def trace_needs(self) -> list[Need]:
        """Every run's :meth:`needs` (a run that does not resolve: one failed need), the AR-to-DLM transfer sets and,
        for the seed study, the harmful evaluation sets drawn with each other seed for the compared runs (those of
        ``seed_runs``, all when absent)."""
        p, exp = self.params, self.exp
        runs, out = resolve_each(self.name, p["runs"])  # a run that does not resolve: one failed need
        runs = expand_runs(runs, p.get("block_lengths") or [])
        out += each_run_needs(self.name, runs, self.needs)
        out += transfer_needs(self.name, self.adv, runs) if self.adaptive() else []
        seeds = list(dict.fromkeys(int(s) for s in p.get("seeds") or []))
        compared = [r for r in comparison_runs(runs) if selected(r, p.get("seed_runs"))]
        n_eval = p.get("seed_n_eval") or p["n_eval"]
        if len(seeds) > 1 and compared:
            for s in seeds:
                if s == exp.seed and p["n_eval"] >= n_eval:
                    continue  # the main results are reused (seed_stability)
                exp_s = dataclasses.replace(exp, seed=s)
                sets_s = PromptSets.build(n_anchor=p["n_anchor"], n_eval=n_eval, attacks=p["attacks"], seed=s)
                out += [Need(self.name, r, f"seed {s}: {k}", exp_s, prompts) for r in compared
                        for k, (prompts, harmful) in sets_s.evaluation().items() if harmful]
        return out

    @staticmethod
    def findings(results: Sequence[RunEval], comps: Sequence[Comparison]) -> list:
        """The chapter's findings at a glance (:mod:`srilib.chapters`), the estimates
        :func:`srilib.chapters.sampling_report.conclusions` prints: for the first same-weights comparison (the
        profile's headline pair) the pooled ΔRR, ΔASR and ΔIRR (Table 2, Figure 6), the pooled ΔASR of the next one,
        the matched AR/DLM pair's ASR gap and the pooled family gap (Table 3)."""
        max_rr, max_asr = paper_table2_max()
        same = "vs AR sampling of the same weights"
        rr = ("d_rr", f"Remasking raises refusal {same} (Table 2; ours: ΔRR pooled over our attacks)",
              f"LLaDA / LLaDA-1.5: none below 0, up to +{max_rr / 100:.2f}")
        asr = ("d_asr", f"Remasking lowers attack success {same} (Table 2; ours: ΔASR pooled over our attacks)",
               f"LLaDA / LLaDA-1.5: none below 0, up to +{max_asr / 100:.2f}")
        irr = ("d_irr", f"Remasking raises internal recovery {same} (Fig. 6; ours: ΔIRR over attacked prompts)",
               f"+{PAPER_IRR_LOSS[0]:.2f} to +{PAPER_IRR_LOSS[1]:.2f}")
        out = []
        for i, c in enumerate(comps[:2]):
            try:
                aj = c.row(ALL_JAILBREAKS)
            except KeyError:
                continue
            runs = [c.other, c.base]
            metrics = [rr, asr, irr] if i == 0 else [asr]
            out += [finding(claim, paper, aj[k], runs, headline=i == 0 and k != "d_rr") for k, claim, paper in metrics]
        ar_lo, ar_hi = paper_family_asr("AR")
        dl_lo, dl_hi = paper_family_asr("DLM")
        fam = f"AR {ar_lo:.0%}-{ar_hi:.0%} vs DLM {dl_lo:.0%}-{dl_hi:.0%} ASR per model"
        for twin, m, gap in matched_pairs(results)[:1]:
            out.append(finding("AR models are attacked more successfully than DLMs (Table 3; ours: matched pair, AR "
                               "minus DLM pooled ASR)", fam, gap, [twin, m], headline=True))
        gap = family_gap(results, "asr")
        if gap is not None:
            pools = sorted({r.model for r in results if r.family in ("AR", "DLM") and has_set(r, ALL_JAILBREAKS)})
            out.append(finding("... and pooled over all our runs of each family (Table 3; ours: AR minus DLM pooled "
                               "ASR)", fam, gap, pools, label=f"{len(pools)} models"))
        return out


class RecoveryChapter(Chapter):
    """Incomplete recovery (paper Table 1, Figures 5 and 6): per run, HRR/FRR of every intermediate prediction, IRR
    over all harmful prompts, and the generations whose σ dips and drifts back while the text never refuses. Adds
    ``judge``."""

    name = "incomplete_recovery"

    def __init__(self, params: Mapping, check: bool = True):
        super().__init__(params, check)
        self.judge = make_judge(self.params["judge"])

    def _kw(self) -> dict:
        p = self.params
        return dict(tau=p["tau"], dip=p["dip"], recover=p["recover"], lambda_r=p["lambda_r"], paper_dip=p["paper_dip"])

    def run(self, spec) -> RecoveryResult:
        """:func:`srilib.chapters.recovery.run_recovery` of one run."""
        return run_recovery(self.exp, spec, self.sets, self.judge, **self._kw())

    def run_all(self) -> list[RecoveryResult]:
        """Every run's :meth:`run`, one model at a time, in order; a failing run is reported and left out."""
        return run_recoveries(self.exp, self.specs(), self.sets, self.judge, on_error="report", **self._kw())

    def needs(self, run: Run) -> list[Need]:
        """The anchor split and every evaluation set (:func:`run_recovery` evaluates them all)."""
        return standard_needs(self.name, self.exp, run, self.sets)

    @staticmethod
    def findings(results: Sequence[RecoveryResult], lambda_r: Sequence[float] = DEFAULT_LAMBDA_R) -> list:
        """The chapter's findings at a glance (:mod:`srilib.chapters`), the estimates
        :func:`srilib.chapters.recovery.conclusions` prints: HRR of
        the main pair's diffusion runs against a majority (Table 1), the pooled DLM-minus-AR IRR at the loosest
        threshold (Figure 5) and each DLM's remasking-minus-AR-sampling IRR (Figure 6, our denominator)."""
        loose = max(lambda_r)
        by_run = {r.run: r for r in results}
        hs = [v[0] for v in PAPER_TABLE1.values()]
        out, main = [], main_run(list(by_run))
        for label in headline_runs(list(by_run)):
            rev = by_run[label].revision
            if rev is not None and rev["harmful_any"].k > 0:
                out.append(finding(f"Most generations with a harmful intermediate prediction revise it (Table 1; ours: "
                                   f"HRR vs {MAJORITY:g})",
                                   f"HRR {min(hs):.2f}-{max(hs):.2f} (LLaDA, Dream, LLaDA-1.5)",
                                   rev["hrr"], [label], ref=MAJORITY, signed=False,
                                   headline=label == main))
        gap = family_irr_gap(results, loose)
        if gap is not None:
            lo, hi = PAPER_DLM_IRR_LOOSE
            pools = sorted({r.ev.model for r in results if not r.ev.anchors.fallback})
            out.append(finding(f"DLMs recover internally more often than AR models (Fig. 5; ours: DLM minus AR IRR "
                               f"pooled, λ_r={loose:g})", f"DLM {lo:.1f}-{hi:.1f} vs AR below {PAPER_AR_IRR_MAX:.2f}",
                               gap, pools, label=f"{len(pools)} models", headline=True))
        for row in sampler_irr_deltas(results, lam=loose):
            out.append(finding(f"Remasking raises internal recovery vs AR sampling of the same weights (Fig. 6; ours: "
                               f"ΔIRR over all harmful prompts, λ_r={loose:g})",
                               f"+{PAPER_IRR_LOSS[0]:.2f} to +{PAPER_IRR_LOSS[1]:.2f} (attacked prompts)",
                               row[DELTA_COL], [row["remasking run"]]))
        return out


class DetectorChapter(Chapter):
    """Detector transfer (paper Tables 4, 13 and 14; Figures 7 and 14): per run the detectors and SRI Guard, the
    harmless-shift section, the baseline defenses and DiffuGuard. Adds the guard's harmless ``train_prompts``, the
    shift section's ``family_prompts``, the guard config ``cfg``, the ASR ``judge`` and the adaptive attacks
    ``adv``."""

    name = "detector_transfer"

    def __init__(self, params: Mapping, check: bool = True):
        super().__init__(params, check)
        p = self.params
        self.train_prompts = guard_prompts(p["n_train_harmless"], seed=p["seed"], source=p["source"])
        self.family_prompts = shift_prompts(p["n_per_family"], seed=p["seed"])
        self.cfg = GuardConfig(calib_fraction=p["calib_fraction"], min_calibration=p["min_calibration"],
                               quantile=p["quantile"], epochs=p["guard_epochs"])
        self.judge = make_judge(p["judge"])

    def run(self, spec) -> tuple[DetectorResult, DefenseReport]:
        """One run's detector section, its harmless-shift section (runs of ``shift_runs``), its defenses and, on
        diffusion runs with ``diffuguard``, DiffuGuard. A failing shift or DiffuGuard section is a note on the
        result and leaves the run's other sections intact; the model is released after the run when the chapter
        has several (GPU memory)."""
        p, exp, sets = self.params, self.exp, self.sets
        try:
            res = run_detector(exp, spec, sets, self.train_prompts, tau=p["tau"], seeds=p["seeds"], cfg=self.cfg,
                               n_boot=p["n_boot"], canvas_attacks=p["canvas_attacks"],
                               adaptive=self.adaptive())
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
        done = super().run_all()
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
        out = standard_needs(self.name, exp, run, sets)
        out += needs_for(self.name, exp, run, {"guard/harmless-train": self.train_prompts, **(
            {"shift/harmless-families": family} if selected(run, p.get("shift_runs")) else {})})
        out += adaptive_needs(self.name, self.adv, run) if self.adaptive() else []
        if run.kind == "dlm" and masked_diffusion(run.model, run.kind):  # canvas attacks and DiffuGuard need masks
            dg = diffuguard_run(exp, run)
            for r in [run, dg] if p.get("diffuguard") else [run]:
                out += [Need(self.name, r, f"{CANVAS}{a}", exp, sets.requests, canvas_attack=a)
                        for a in p.get("canvas_attacks") or []]
            if p.get("diffuguard") and p.get("diffuguard_rates"):  # jailbreaks audited against their requests
                out += needs_for(self.name, exp, dg, {"harmless": sets.eval_harmless})
                out += [Need(self.name, dg, a, exp, prompts, references=sets.requests)
                        for a, prompts in sets.attacked.items()]
        return out

    def trace_needs(self) -> list[Need]:
        """Every run's :meth:`needs`, and the usage example's two prompts on the first run."""
        out = super().trace_needs()
        first = next((n.run for n in out if n.error is None), None)
        if first is not None:
            out.append(Need(self.name, first, "guard/demo", self.exp, guard_demo_prompts(self.sets)))
        return out

    @staticmethod
    def findings(results: dict[str, DetectorResult]) -> list:
        """The chapter's findings at a glance (:mod:`srilib.chapters`), the estimates
        :func:`srilib.chapters.detector_conclusions.conclusions` prints: SRI
        Guard's AUROC against chance on the main pair's runs (Table 4's SRI Guard row), and the mean-over-runs AUROC
        differences of the ablation (last-layer SRI minus the text signal, the static activations and the first layer).
        Empty without bootstrap intervals (``n_boot=0``)."""
        if not results or any(r.n_boot <= 0 for r in results.values()):
            return []
        pm = PAPER_ABLATION["sri_last"][0]
        out, main = [], main_run(list(results))
        for label in headline_runs(list(results)):
            r = results[label]
            out.append(finding("SRI Guard, fitted on harmless signals only, detects unseen jailbreaks (Table 4; ours: "
                               "AUROC vs chance 0.5)", f"AUROC {pm:.3f} (mean of {PAPER_MODELS_TEXT})",
                               r.auroc[("sri_last", r.seeds[0])], [label], ref=0.5, signed=False,
                               headline=label == main))
        n = len(results)
        for other, what in (("text", "the text-based signal"), ("static", "static first-step activations"),
                            ("sri_first", "the first layer's SRI")):
            d = method_difference(results, "sri_last", other)
            out.append(finding(f"Last-layer SRI detects better than {what} (Table 4; ours: AUROC difference, mean over "
                               "runs)", f"{pm - PAPER_ABLATION[other][0]:+.3f}", d["mean"], list(results),
                               label=f"mean of {n} runs", headline=other == "text"))
        return out


CHAPTERS = {c.name: c for c in (GeometryChapter, SamplingChapter, RecoveryChapter, DetectorChapter)}
