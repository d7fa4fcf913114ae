"""The computations behind each book chapter, so that notebooks only set parameters, call these and plot.

One module (or a few, each one job) per chapter: ``geometry`` (SRI geometry); ``sampling`` (evaluation of runs),
``sampling_compare`` (sampler comparisons, seed study) and ``sampling_report`` (tables, conclusions) for sampling
vs representation; ``adaptive`` (Random Search and PAIR sets, shared by the sampling and detector chapters);
``recovery`` (incomplete recovery); ``detector`` (the detectors and SRI Guard per run), ``defenses`` (Table 13),
``detector_diffuguard`` (Table 14), ``shift`` (harmless distribution shift), ``detector_tables``,
``detector_intervals`` and ``detector_conclusions`` (detector transfer). Each chapter declares the traces it reads
in ``trace_needs`` (the detector's in ``detector_plan``; see :mod:`srilib.plan`). ``paper_numbers`` holds the
paper's numbers their prose uses. Shared helpers for tables and verdicts live here.
"""
from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

# Output metadata key that marks a run a chapter could not analyse; the book's runner collects these.
FAILED_RUN_KEY = "srilib_failed_run"


def output_records(nb: dict, key: str) -> list:
    """The values a notebook's outputs carry under metadata ``key``, in order (how the book's runner reads what a
    chapter recorded: failed runs, findings at a glance)."""
    return [o["metadata"][key] for c in nb.get("cells", []) for o in c.get("outputs", []) or []
            if key in (o.get("metadata") or {})]


# The AR twin of a DLM: organism-dlm is matched to organism-ar (same size, corpus, tokenizer and compute);
# smollm2-135m-dlm was made from smollm2-135m-refusal-v3 (the same pretrained weights, as Dream-7B was made from
# Qwen2.5). tiny-ar / tiny-dlm are the CI profile's random models (only to exercise the code path).
AR_TWIN = {"organism-dlm": "organism-ar", "smollm2-135m-dlm": "smollm2-135m-refusal-v3", "tiny-dlm": "tiny-ar"}


def weak_models(runs: Iterable[str]) -> dict[str, list[str]]:
    """Model name -> the preconditions it misses (organisms page), for every model of ``runs`` (run labels or model
    names) that misses at least one; empty when none does or no precondition report exists."""
    from ..experiment import Run
    from ..organisms.preconditions import NATIVE, measured_models, misses

    models = measured_models()
    out = {}
    for m in dict.fromkeys(r.model if isinstance(r, Run) else r.partition("@")[0] for r in runs):
        e = models.get(m)
        res = e and e["samplers"].get(NATIVE.get(m, ""))
        miss = misses(res) if res else []
        if miss:
            out[m] = miss
    return out


def weak_caveat(runs: Iterable[str]) -> str:
    """The caveat a verdict on ``runs`` carries in its own sentence: '' when every model meets its preconditions,
    else ' (on `m`, which misses its preconditions: a measurement of a weak model, not evidence)'."""
    weak = list(weak_models(runs))
    if not weak:
        return ""
    names = ", ".join(f"`{m}`" for m in weak)
    return (f" (on {names}, which miss{'es' if len(weak) == 1 else ''} {'its' if len(weak) == 1 else 'their'} "
            "preconditions: a measurement of a weak model, not evidence)")


def interval_side(est, ref: float = 0.0) -> int:
    """+1 if the interval [lo, hi] of ``est`` (a metrics Rate or Estimate) lies above ``ref``, -1 if below, 0 if it
    contains ``ref`` or is undefined: the only basis on which a chapter calls one value larger than another."""
    lo, hi = getattr(est, "lo", math.nan), getattr(est, "hi", math.nan)
    if lo > ref:
        return 1
    if hi < ref:
        return -1
    return 0


def weak_models_line(runs: Iterable[str]) -> str | None:
    """A conclusions bullet naming every model of ``runs`` (run labels or model names) that misses a precondition
    of the organisms page (srilib/organisms/data/preconditions.json), with what it misses; None if none does.
    Every chapter puts it first, so that no verdict on a weak model stands without the caveat."""
    weak = [f"`{m}` {'; '.join(miss)}" for m, miss in weak_models(runs).items()]
    if not weak:
        return None
    return ("- **Weak models.** " + ". ".join(weak) + " (measured preconditions, organisms page). Every verdict "
            "below on these models is a measurement of a weak model, not evidence for or against the paper.")


def fmt(x, digits: int = 2) -> str:
    """Format a number (or a metrics Rate / Estimate via its own str) for a table cell."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def md_table(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2) -> str:
    """A Markdown table from a list of dicts (columns: the union of keys in first-seen order)."""
    if not rows:
        return "_(no rows)_"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "\n".join("| " + " | ".join(fmt(r.get(c), digits).replace("|", "\\|") for c in cols) + " |"
                     for r in rows)
    return head + body


def show_table(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2, caption: str = ""):
    """Display a Markdown table (with an optional caption line) in a notebook."""
    from IPython.display import Markdown, display
    display(Markdown((f"**{caption}**\n\n" if caption else "") + md_table(rows, columns, digits)))


def show_summary(text: str, glue_name: str | None = None):
    """Display a Markdown summary; with ``glue_name`` also glue it (as HTML, which Jupyter Book can paste into
    another page, e.g. the landing page) under that name."""
    from IPython.display import HTML, Markdown, display
    display(Markdown(text))
    if glue_name:
        from markdown_it import MarkdownIt  # a dependency of Jupyter Book's MyST parser
        from myst_nb import glue
        glue(glue_name, HTML(MarkdownIt("commonmark").render(text)), display=False)


def report_failure(run: str, err: BaseException) -> dict:
    """Show in the notebook that ``run`` could not be analysed (the reason and where it was raised) and tag the
    output with :data:`FAILED_RUN_KEY`, so that ``python -m srilib book`` lists it and exits non-zero after
    building the book. Returns the record."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    record = {"run": str(run), "error": f"{type(err).__name__}: {err}", "where": where}
    text = (f"> **Run `{run}` could not be analysed and is left out of this chapter.**  \n"
            f"> {type(err).__name__} (raised at `{where}`): {str(err).splitlines()[0] if str(err) else ''}")
    try:
        from IPython.display import Markdown, display
        display(Markdown(text), metadata={FAILED_RUN_KEY: record})
    except ImportError:  # pragma: no cover - outside a notebook
        print(text)
    return record


def each_run(specs: Sequence, analyse: Callable, *, on_error: str = "report") -> dict:
    """``{spec: analyse(spec)}`` for every run, in order. With ``on_error="report"`` (the book's notebooks) a run
    whose analysis raises is left out and reported (:func:`report_failure`), so that one bad run never takes the
    chapter down; ``"raise"`` re-raises."""
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
    out = {}
    for spec in specs:
        try:
            out[spec] = analyse(spec)
        except Exception as e:  # noqa: BLE001 - any failure of one run is reported, the others go on
            if on_error == "raise":
                raise
            report_failure(getattr(spec, "label", spec), e)
    return out
