"""Chapter "incomplete recovery", what its figures show, as the arrays, mappings and labels that
:mod:`srilib.figures` takes: the IRR bars per run (with the paper's Figure 5 levels) and per DLM sampler,
the worked examples of recovery by revision, and the incomplete recoveries with the deepest dips. The notebook
passes each straight to its figure function.
"""
from __future__ import annotations

from typing import Sequence

from . import unless_failed
from .paper_numbers import PAPER_AR_IRR_MAX, PAPER_DLM_IRR_LOOSE, PAPER_LAMBDA_R_LOOSE
from .recovery import RecoveryResult, example_steps, incomplete_examples, revision_examples

Case = tuple[RecoveryResult, int]  # a generation: its run's result and its index among the run's generations


def irr_panel(results: Sequence[RecoveryResult]) -> dict:
    """The arguments of :func:`srilib.figures.plot_irr_bars` for the chapter's IRR figure: IRR per run and
    threshold, each run's family, and the paper's Figure 5 levels (AR models, DLMs at the loosest threshold) as
    bands."""
    return {"irr": {r.run: r.irr for r in results}, "families": {r.run: r.family for r in results},
            "bands": [(0, PAPER_AR_IRR_MAX, "paper: AR models"),
                      (*PAPER_DLM_IRR_LOOSE, f"paper: DLMs, λ_r = {PAPER_LAMBDA_R_LOOSE:g}")]}


def sampler_irr_panels(results: Sequence[RecoveryResult]) -> list[dict]:
    """The arguments of :func:`srilib.figures.plot_irr_bars`, one panel per diffusion model in the order
    of ``results``: IRR per threshold of each of its runs, named by sampler, with their families."""
    out = []
    for m in dict.fromkeys(r.ev.model for r in results if r.ev.kind == "dlm"):
        rs = [r for r in results if r.ev.model == m]
        out.append({"irr": {r.ev.sampler: r.irr for r in rs}, "families": {r.ev.sampler: r.family for r in rs},
                    "title": f"{m}: IRR per sampler"})
    return out


def example_view(res: RecoveryResult, i: int, note: str = "") -> dict:
    """The arguments of :func:`srilib.figures.example_html` for generation ``i`` of a run with intermediate
    predictions: run, set, position, request, final text and the judge's verdict on it, the canvas [T, L], the steps
    :func:`srilib.chapters.recovery.example_steps` picks and the verdict on each step's full prediction [T]."""
    rev, ts = res.revision, res.traces
    return {"run": res.run, "set_name": str(res.set_of[i]), "position": int(res.position[i]),
            "request": res.requests[i], "text": ts.texts[i], "harmful": bool(rev["final_harmful"][i]),
            "tokens": ts.tokens[i], "committed": ts.committed[i], "predictions": ts.predictions[i],
            "steps": example_steps(res, i), "harmful_steps": rev["harmful_steps"][i],
            "decode": lambda k: res.tokenizer.decode([k]), "end_ids": res.end_ids, "note": note}


def worked_examples(results: Sequence[RecoveryResult], n_examples: int, runs: Sequence) -> tuple[str, list[dict]]:
    """The worked examples of recovery by revision: ("", up to ``n_examples`` :func:`example_view` per run
    (:func:`srilib.chapters.recovery.revision_examples`)); when no generation was revised, (why, as Markdown
    naming failed runs of ``runs``, and the canvas of the first generation of the first run with intermediate
    predictions, to illustrate it; none without such a run)."""
    views = [example_view(r, i) for r in results for i in revision_examples(r, n_examples)]
    if views:
        return "", views
    with_pred = [r for r in results if r.revision is not None]
    why = unless_failed("No generation in this run had a harmful intermediate prediction that was later revised, "
                        "so there is no recovery by revision to show.", runs, [r.run for r in results], kind="dlm")
    if not with_pred:
        return why, []
    return (why + " For reference, the canvas of one DLM generation:",
            [example_view(with_pred[0], 0, note=" (not a revision: shown to illustrate the canvas)")])


def incomplete_cases(results: Sequence[RecoveryResult], n_cases: int) -> list[Case]:
    """The ``n_cases`` incomplete recoveries with the deepest dips over all runs, deepest first (ties: run order,
    then generation), among each run's deepest (:func:`srilib.chapters.recovery.incomplete_examples`)."""
    found = sorted((float(r.sigma[i].min()), k, i) for k, r in enumerate(results)
                   for i in incomplete_examples(r, n_cases))
    return [(results[k], i) for _, k, i in found[:n_cases]]


def case_panels(cases: Sequence[Case]) -> dict:
    """The arguments of :func:`srilib.figures.plot_cases`: each case's SRI and text-level signal [T] and
    its title (run, set and position; deepest and final σ)."""
    return {"sigma": [r.sigma[i] for r, i in cases], "text_sig": [r.text_sig[i] for r, i in cases],
            "titles": [f"{r.run} · {r.set_of[i]} #{r.position[i]}\nmin σ {r.sigma[i].min():.2f}, "
                       f"final σ {r.sigma[i, -1]:.2f}" for r, i in cases]}


def case_items(cases: Sequence[Case]) -> list[dict]:
    """The items of :func:`srilib.figures.cases_html`: run, set, position, the judge's verdict on the final
    text (``harmful``) and the text, per case."""
    return [{"run": r.run, "set_name": str(r.set_of[i]), "position": int(r.position[i]),
             "harmful": bool(r.final_harmful[i]), "text": r.traces.texts[i]} for r, i in cases]


__all__ = ["Case", "irr_panel", "sampler_irr_panels", "example_view", "worked_examples", "incomplete_cases",
           "case_panels", "case_items"]
