"""Chapter "Detector transfer", DiffuGuard part (paper Table 14): DiffuGuard (a decoding-time defense that replaces
the sampler; :class:`srilib.samplers.diffuguard.DiffuGuardSampler`) on the diffusion runs' canvas attacks, its
overhead row in the defenses table, and the Table 14 counterpart: ASR undefended, under DiffuGuard and after SRI
Guard per run and canvas attack, with paired differences. Its verdicts in prose are
:func:`srilib.chapters.detector_conclusions.table14_conclusion`.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..baselines import defense_metrics, plain_generate
from ..experiment import Experiment, PromptSets
from ..stats import Rate
from .defenses import DefenseReport, timing_batch
from ..canvas_attacks import canvas_traces
from .detector import CANVAS, DIFFUGUARD, DetectorResult
from .paper_numbers import PAPER_CANVAS


def diffuguard_run(exp: Experiment, spec):
    """The run's model under DiffuGuard (sampler ``diffuguard``: the defaults of
    :class:`srilib.samplers.diffuguard.DiffuGuardSampler`, the settings of the authors' hidden-state runs, named by
    :func:`diffuguard_settings`) with the run's gen_length, steps, seed and block length
    (its ``:bN`` suffix, else the experiment's block length or one block; ``dlm-ar``, one position at a time, gets
    one block). DiffuGuard is a decoding-time defense: it replaces the run's sampler."""
    return exp.resolve(spec).with_sampler("diffuguard")


def diffuguard_settings(sampler) -> str:
    """DiffuGuard's settings in words (for captions and prose): the settings actually used, each named as the
    authors' (as in their runs) or srilib's own ("ours"), and what is not reproduced
    (:meth:`srilib.samplers.diffuguard.DiffuGuardSampler.describe`)."""
    return sampler.describe()


def request_of(sets: PromptSets, jailbreaks: Sequence[str]) -> dict[str, str]:
    """``{attacked prompt: its un-attacked request}`` for the template jailbreaks (what DiffuGuard's hidden audit
    compares an attacked prompt with, as the authors do)."""
    return {p: r for a in jailbreaks for p, r in zip(sets.attacked[a], sets.requests)}


def timed_pair(plain, guarded, lm, prompts: Sequence[str], rounds: int = 1, warmup: int = 2) -> tuple[float, float]:
    """(plain seconds, guarded seconds) of untraced generation (:func:`srilib.baselines.plain_generate`) of one
    batch with the run's plain sampler and with a decoding-time defense's sampler: an untimed warm-up of both on
    the first ``warmup`` prompts, then ``rounds`` rounds alternating which goes first; medians over rounds."""
    prompts = list(prompts)
    if warmup > 0:
        plain_generate(plain, lm, prompts[:warmup])
        plain_generate(guarded, lm, prompts[:warmup])
    pt, gt = [], []
    for r in range(max(1, int(rounds))):
        for which in (("plain", "guarded") if r % 2 == 0 else ("guarded", "plain")):
            t0 = time.perf_counter()
            plain_generate(plain if which == "plain" else guarded, lm, prompts)
            (pt if which == "plain" else gt).append(time.perf_counter() - t0)
    return float(np.median(pt)), float(np.median(gt))


def timed_plain(sampler, lm, prompts: Sequence[str], rounds: int = 1, warmup: int = 2) -> float:
    """Median seconds of untraced generation (:func:`srilib.baselines.plain_generate`) of one batch over ``rounds``,
    after an untimed warm-up on its first ``warmup`` prompts."""
    prompts = list(prompts)
    if warmup > 0:
        plain_generate(sampler, lm, prompts[:warmup])
    ts = []
    for _ in range(max(1, int(rounds))):
        t0 = time.perf_counter()
        plain_generate(sampler, lm, prompts)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _audit_rate(log) -> Rate | None:
    """Share of prompts with a flagged block in a DiffuGuard audit log (``meta["audit"]``), or None."""
    if not log:
        return None
    return Rate.from_outcomes(np.array([any(e["flagged"] for e in entries) for entries in log], bool))


def run_diffuguard(exp: Experiment, spec: str, sets: PromptSets, result: DetectorResult, report: DefenseReport,
                   judge, *, rates: bool = False, n_timing: int = 8, rounds: int = 1) -> dict:
    """DiffuGuard on a diffusion run: the run's canvas attacks generated with the same model under DiffuGuard
    (:func:`diffuguard_run`; through the trace cache), stored in ``result.diffuguard``, and a "DiffuGuard" row in
    ``report.rows``: its overhead, (DiffuGuard's untraced generation - the run's plain untraced generation) / plain
    generation of the chapter's timing batch. The base is the plain time :func:`run_defenses` measured on that batch
    (``report.plain_seconds``, the base of every other defense's overhead), and DiffuGuard's generation is timed
    after the defenses, on the same batch (:func:`timed_plain`); when the report has no plain untraced time of that
    batch, both are timed here (:func:`timed_pair`). No hidden states are needed, so the overhead incl. capture is
    the same number. With ``rates`` the eval harmless prompts and every jailbreak are generated under DiffuGuard too
    and the row gets the harmless-refused share (the paper's FP quantity) and jailbreak RR / ASR (``judge``);
    without, those cells read "not measured". The audit's reference (``references`` of the sampler, part of the
    trace key): each template jailbreak's un-attacked request, as the authors compare them; the prompt itself for
    the canvas attacks (their prompt is the request: they only prefill) and the harmless prompts; the timing batch
    likewise. Autoregressive runs and uniform-noise diffusion runs (DiffusionGemma): nothing (returns {})."""
    from ..models import masked_diffusion

    run = exp.resolve(spec)
    lm = exp.model(run.model)
    if lm.kind != "dlm" or not masked_diffusion(run.model, lm.kind):  # DiffuGuard remasks: masked-diffusion models only
        return {}
    dg = diffuguard_run(exp, run)
    sampler = exp.sampler(dg)
    out = {"run": dg.label, "settings": diffuguard_settings(sampler), "texts": {}, "audit": {}, "notes": [],
           "batch_size": exp.batch_size,
           "reference": "the audit compares each jailbreak prompt with its un-attacked request; canvas-attack and "
                        "harmless prompts with themselves"}
    for k in result.canvas_sets:
        ts, why = canvas_traces(exp, dg, sets.requests, k[len(CANVAS):])
        if ts is None:
            out["notes"].append(f"{run.label}: DiffuGuard on {k[len(CANVAS):]} skipped: {why}")
            continue
        out["texts"][k] = list(ts.texts)
        out["audit"][k] = _audit_rate(ts.meta.get("audit"))  # the first generation batch's entries only
    jb = result.jailbreaks
    tprompts = timing_batch(sets, jb, n_timing)
    req = request_of(sets, jb)
    timed = sampler.with_references(tprompts, [req.get(p, p) for p in tprompts])
    base = report.plain_seconds
    if report.plain_is_traced or not base > 0 or report.n_timing != len(tprompts):
        plain_s, dg_s = timed_pair(exp.sampler(run), timed, lm, tprompts, rounds)
        base_how = "timed here beside DiffuGuard"
    else:
        plain_s, dg_s = base, timed_plain(timed, lm, tprompts, rounds)
        base_how = "the defenses' plain timing"
    log = list(getattr(timed, "_audit_log", None) or [])  # the last generate call: the whole timing batch
    aud = _audit_rate(log[0::2]) if len(log) == len(tprompts) else None  # harmless prompts sit at even indices
    pct = 100.0 * (dg_s - plain_s) / plain_s
    row = {"defense": DIFFUGUARD, "stage": "decoding", "status": "run", "overhead %": pct,
           "overhead incl. capture %": pct, "seconds": dg_s - plain_s, "plain_seconds": plain_s,
           "guarded_seconds": dg_s, "audit_harmless": aud}
    note = [f"replaces the sampler ({dg.label}); overhead vs plain {run.label} generation of the timing batch "
            f"({base_how})"]
    if aud is not None:
        note.append(f"audit flagged {aud} of the harmless timing prompts")
    if rates:
        texts = {"harmless": list(exp.traces(dg, sets.eval_harmless, "harmless").texts),
                 **{a: list(exp.traces(dg, sets.attacked[a], a, references=sets.requests).texts) for a in jb}}
        m = defense_metrics({k: np.zeros(len(v), bool) for k, v in texts.items()}, texts, sets.requests, judge,
                            jailbreaks=jb)
        row.update(harmless_refused=m["harmless_refused"], rr=m["rr"], asr=m["asr"])
        out["texts"].update({f"eval:{k}": v for k, v in texts.items()})
    else:
        note.append("harmless refused and jailbreak RR / ASR not measured (diffuguard_rates off, for the "
                    "profile's time budget)")
    row["note"] = "; ".join(note)
    report.rows = [r for r in report.rows if r["defense"] != DIFFUGUARD] + [row]
    out["row"] = row
    result.diffuguard = out
    out["judge"] = getattr(judge, "name", str(judge))
    out["table14"] = {k: _table14_cells(result, k, judge, sets.requests) for k in result.canvas_sets}
    return out


# ------------------------------------------------------------------------------------------------- Table 14
TABLE14_COLS = ("ASR undefended", "ASR DiffuGuard", "ASR SRI Guard")


def _table14_cells(res: DetectorResult, k: str, judge, requests: Sequence[str]) -> dict:
    """The three ASRs of one canvas set of one run (Rate; DiffuGuard None when it did not run) and the paired
    differences (bootstrap over the same requests)."""
    from ..baselines import apply_defense
    from ..signal import attack_success_rate
    from ..stats import delta

    flags = res.scores[("sri_last", res.seeds[0])][k] > res.guard.threshold_
    und = attack_success_rate(requests, res.texts[k], judge)
    sri = attack_success_rate(requests, apply_defense(res.texts[k], flags), judge)
    dg_texts = (res.diffuguard.get("texts") or {}).get(k)
    dg = attack_success_rate(requests, dg_texts, judge) if dg_texts is not None else None
    return {"und": und, "sri": sri, "dg": dg,
            "dg_minus_und": delta(dg, und, method="paired") if dg is not None else None,
            "sri_minus_und": delta(sri, und, method="paired"),
            "sri_minus_dg": delta(sri, dg, method="paired") if dg is not None else None}


def table14_rows(results: dict[str, DetectorResult], judge=None, requests: Sequence[str] | None = None
                 ) -> list[dict]:
    """Paper Table 14 counterpart, per diffusion run and canvas attack: ASR undefended, under DiffuGuard (the
    same requests and canvas attack, generated with DiffuGuard in place of the run's sampler) and after SRI Guard
    (the undefended generations, flagged ones replaced by a refusal), 95% Wilson intervals; the differences with
    95% paired bootstrap intervals over the same requests; the paper's LLaDA values (labelled paper)."""
    rows = []
    for res in results.values():
        for k in res.canvas_sets:
            name = k[len(CANVAS):]
            c = (res.diffuguard.get("table14") or {}).get(k) or _table14_cells(res, k, judge, requests)
            paper = PAPER_CANVAS.get(name)
            aud = (res.diffuguard.get("audit") or {}).get(k)
            na = "not run" if not res.diffuguard else "skipped (see notes)"
            rows.append({"run": res.run, "canvas attack": name + (f" (~{paper[0]})" if paper else ""),
                         "n": c["und"].n, "ASR undefended": str(c["und"]),
                         "paper undefended": paper[1] if paper else "–",
                         "ASR DiffuGuard": str(c["dg"]) if c["dg"] is not None else na,
                         "paper DiffuGuard": paper[2] if paper else "–",
                         "ASR SRI Guard": str(c["sri"]),
                         "paper SRI Guard": paper[3] if paper else "–",
                         "DiffuGuard − undefended (paired)": str(c["dg_minus_und"]) if c["dg"] is not None else "–",
                         "SRI Guard − DiffuGuard (paired)": str(c["sri_minus_dg"]) if c["dg"] is not None else "–",
                         "DiffuGuard audit flagged (first batch)": str(aud) if aud is not None else "–"})
    return rows


def diffuguard_note(results: dict[str, DetectorResult]) -> str:
    """The Table 14 caption's sentence on DiffuGuard: the settings of the first run it ran on, or that it did not
    run in this profile."""
    settings = next((r.diffuguard["settings"] for r in results.values() if r.diffuguard), None)
    return f"DiffuGuard: {settings}." if settings else "DiffuGuard: not run in this profile (diffuguard=False)."


__all__ = ["diffuguard_run", "diffuguard_settings", "request_of", "timed_pair", "timed_plain", "run_diffuguard",
           "TABLE14_COLS", "table14_rows", "diffuguard_note"]
