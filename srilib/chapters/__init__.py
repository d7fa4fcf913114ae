"""The computations behind each book chapter, so that notebooks only set parameters, call these and plot.

Each chapter is one object (:mod:`.chapter`: :class:`~.chapter.GeometryChapter`, :class:`~.chapter.SamplingChapter`,
:class:`~.chapter.RecoveryChapter`, :class:`~.chapter.DetectorChapter`): its setup, what each run computes, the
traces that reads (the trace plan, :mod:`srilib.plan`) and its findings at a glance. Below it, one module (or a
few, each one job) per chapter: ``geometry`` (SRI geometry); ``sampling`` (evaluation of runs), ``sampling_compare``
(sampler comparisons, seed study) and ``sampling_report`` (tables, conclusions) for sampling vs representation;
``adaptive`` (Random Search and PAIR sets, shared by the sampling and detector chapters); ``recovery`` and
``recovery_figures`` (incomplete recovery); ``detector`` (the detectors and SRI Guard per run), ``defenses``
(Table 13), ``detector_diffuguard`` (Table 14), ``shift`` (harmless distribution shift), ``detector_tables``,
``detector_intervals`` and ``detector_conclusions`` for detector transfer. Chapters hand their figures arrays and
labels (:mod:`srilib.figures` imports nothing from here); ``paper_numbers`` holds every number of the paper the
chapters print.

This module holds what every chapter shares: tables, a failing run reported and left out, the weak-model caveat,
and verdicts as data. Findings at a glance: a chapter's verdicts on the paper's claims (:class:`Finding`), and the
one renderer that writes them, as the table at the top of each analysis chapter and, collected by the book's
runner, as the landing page's table. A verdict is read from a 95% interval against the paper's direction, never
from a point: *reproduced* (the interval lies on the paper's side of the reference), *opposite* (it lies on the
other side), *not resolved* (it contains the reference). A finding on a model that misses a precondition of the
organisms page is shown as *weak model*, with the interval's direction kept in brackets, and its run carries the
badge :data:`WEAK_BADGE`, explained once per table. A conclusion sentence is a :class:`Verdict` (a str carrying its
kind, interval side, runs and caveat), which the tests read instead of the wording.
"""
from __future__ import annotations

import html
import math
import re
import traceback
from dataclasses import asdict, dataclass
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
AR_TWIN = {"organism-dlm": "organism-ar", "smollm2-135m-dlm": "smollm2-135m-refusal-v3", "tiny-dlm": "tiny-ar",
           "diffusiongemma-26b-a4b-it": "gemma-4-26b-a4b-it", "tiny-diffusiongemma": "tiny-gemma4"}


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
    else ' (⚠ on `m`, a weak model: not evidence)'; the page explains the badge once (:func:`weak_models_line`)."""
    weak = list(weak_models(runs))
    if not weak:
        return ""
    names = ", ".join(f"`{m}`" for m in weak)
    return f" (⚠ on {names}, {'a weak model' if len(weak) == 1 else 'weak models'}: not evidence)"


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
    return (WEAK_LINE_PREFIX + " " + ". ".join(weak) + " (measured preconditions, organisms page). Every verdict "
            "below on these models is marked ⚠: a measurement of a weak model, not evidence for or against the "
            "paper.")


WEAK_LINE_PREFIX = "- **Weak models ⚠.**"  # the bullet that explains the badge; pages that paste a chapter's
#                                           conclusions (the landing page) explain it once themselves


def fmt(x, digits: int = 2) -> str:
    """Format a number (or a metrics Rate / Estimate via its own str) for a table cell."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


# "v [lo, hi] (k/n)", how a Rate prints (metrics.Rate.__str__), inside any cell text
_COUNTED = re.compile(r"([+-]?\d+\.\d+ \[[+-]?\d+\.\d+, [+-]?\d+\.\d+\]) \((\d+)/(\d+)\)")


def cell(x, digits: int = 2) -> str:
    """A table cell as the book shows it: every rate in it as 'v [lo, hi]', with its count k/n on hover (the
    count stays one mouse-over away, and in the rows the notebook computed); anything else as :func:`fmt`."""
    return _COUNTED.sub(lambda m: f'<span title="{m[2]}/{m[3]} (count)">{m[1]}</span>', fmt(x, digits))


FOLD_ROWS = 20  # a table with more rows is shown folded (issue 23: no table of more than 20 visible rows)
_TABLE_NUMBER = [0]


def md_table(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2) -> str:
    """A Markdown table from a list of dicts (columns: the union of keys in first-seen order); rates show as
    :func:`cell` (counts on hover)."""
    if not rows:
        return "_(no rows)_"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "\n".join("| " + " | ".join(cell(r.get(c), digits).replace("|", "\\|").replace("\n", " ") for c in cols)
                     + " |" for r in rows)
    return head + body


def constant_columns(rows: Sequence[dict], columns: Sequence[str], digits: int = 2) -> dict[str, str]:
    """Columns whose cell is the same in every one of at least three rows: column -> that cell. A table shows
    them once, above it, instead of repeating them in every row."""
    if len(rows) < 3:
        return {}
    out = {}
    for c in columns:
        vals = {cell(r.get(c), digits) for r in rows}
        if len(vals) == 1 and all(c in r for r in rows):
            out[c] = vals.pop()
    return out


def table_markdown(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2,
                   caption: str = "", number: int | None = None) -> str:
    """A table as the book shows it: "Table n. caption" in bold, a line for the columns that never change, the
    table, and the table folded (its caption as the summary) when it has more than :data:`FOLD_ROWS` rows."""
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    const = constant_columns(rows, cols, digits)
    title = (f"Table {number}. " if number is not None else "") + caption
    note = ["In every row: " + "; ".join(f"{c}: {v}" for c, v in const.items()) + "."] if const else []
    table = md_table(rows, [c for c in cols if c not in const] or cols, digits)
    if len(rows) > FOLD_ROWS:
        summary = f"{title or 'Table'} ({len(rows)} rows: open to read)"
        return "\n\n".join([*note, f"<details><summary>{html.escape(summary)}</summary>", table, "</details>"])
    return "\n\n".join([*([f"**{title}**"] if title else []), *note, table])


def show_table(rows: Sequence[dict], columns: Iterable[str] | None = None, digits: int = 2, caption: str = ""):
    """Display a table in a notebook (:func:`table_markdown`), numbered in the order the notebook shows its
    tables."""
    from IPython.display import Markdown, display

    if rows:
        _TABLE_NUMBER[0] += 1
    display(Markdown(table_markdown(rows, columns, digits, caption, number=_TABLE_NUMBER[0] if rows else None)))


def show_summary(text: str, glue_name: str | None = None):
    """Display a Markdown summary; with ``glue_name`` also glue it (as HTML, which Jupyter Book can paste into
    another page, e.g. the landing page) under that name, without the weak-models bullet (the pasting page explains
    the badge once for every chapter it pastes)."""
    from IPython.display import HTML, Markdown, display
    display(Markdown(text))
    if glue_name:
        from markdown_it import MarkdownIt  # a dependency of Jupyter Book's MyST parser
        from myst_nb import glue
        pasted = "\n".join(x for x in text.splitlines() if not x.startswith(WEAK_LINE_PREFIX))
        glue(glue_name, HTML(MarkdownIt("commonmark").render(pasted)), display=False)


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


def unless_failed(text: str, runs: Sequence, analysed: Iterable, kind: str | None = None) -> str:
    """A chapter's "nothing found" line (Markdown), never a finding about runs that did not run: ``text`` in
    italics when every run of ``runs`` (of family ``kind``, "ar" or "dlm", when given) was analysed; else ``text``
    followed by which runs failed (each reported where it failed) and that the line holds for the others only."""
    from ..experiment import resolve_run

    done = {str(a) for a in analysed}
    failed = []
    for spec in runs:
        try:
            run = resolve_run(spec)
        except Exception:  # noqa: BLE001 - a run that does not even resolve failed too
            failed.append(str(spec))
            continue
        if (kind is None or run.kind == kind) and run.label not in done:
            failed.append(run.label)
    if not failed:
        return f"_{text}_"
    return (f"_{text}_ **Not a finding:** {len(failed)} run{'s' if len(failed) > 1 else ''} failed and "
            f"{'are' if len(failed) > 1 else 'is'} not counted ({', '.join(f'`{f}`' for f in failed)}; each is "
            "reported where it failed); this line holds for the runs that ran.")


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


# ---- findings at a glance: verdicts as data, one renderer
GLANCE_KEY = "srilib_glance"  # output metadata of a chapter's glance cell; the runner collects it for the landing page
REPRODUCED, UNRESOLVED, OPPOSITE = "reproduced", "not resolved", "opposite"
WEAK_BADGE = "⚠"


@dataclass(frozen=True)
class Finding:
    """One row of a glance table: the paper's claim, the paper's number, ours with its 95% interval, the verdict
    (:data:`REPRODUCED`, :data:`UNRESOLVED` or :data:`OPPOSITE`), the runs behind ours, those of their models
    that miss a precondition (``weak``), and whether the landing page shows the row (``headline``)."""

    claim: str
    paper: str
    ours: str
    verdict: str
    runs: tuple[str, ...] = ()
    weak: tuple[str, ...] = ()
    headline: bool = False  # one of the chapter's rows on the landing page

    def __post_init__(self):
        if self.verdict not in (REPRODUCED, UNRESOLVED, OPPOSITE):
            raise ValueError(f"verdict must be one of {REPRODUCED!r}, {UNRESOLVED!r}, {OPPOSITE!r}, got "
                             f"{self.verdict!r}")

    @property
    def shown_verdict(self) -> str:
        """The verdict as the table shows it: a finding on a weak model is 'weak model (direction)'."""
        return f"weak model ({self.verdict})" if self.weak else self.verdict


class Verdict(str):
    """A conclusion sentence that carries its verdict as data, so that tests and the glance read the verdict, not
    the wording: ``kind`` names the claim (e.g. ``"geometry.ordering"``), ``side`` is the interval's side of its
    reference (+1 above, -1 below, 0 containing it, None when nothing could be compared), ``runs`` the runs behind
    it and ``weak`` those whose models miss a precondition (the caveat); ``data`` holds any other field a test needs
    (an estimate, a count). It is the sentence itself (a ``str``), so the chapters print it unchanged."""

    kind: str
    side: int | None
    runs: tuple[str, ...]
    weak: tuple[str, ...]
    data: dict

    def __new__(cls, text: str, kind: str = "", side: int | None = None, runs: Iterable[str] = (),
                weak: Iterable[str] = (), **data):
        self = super().__new__(cls, text)
        self.kind, self.side, self.runs, self.weak, self.data = kind, side, tuple(runs), tuple(weak), data
        return self


def verdicts(lines: Iterable[str], kind: str | None = None) -> list[Verdict]:
    """The :class:`Verdict` lines of a conclusions list (all, or those of one ``kind``)."""
    return [v for v in lines if isinstance(v, Verdict) and (kind is None or v.kind == kind)]


def weak_runs(runs: Iterable[str]) -> tuple[str, ...]:
    """The runs of ``runs`` whose models miss a precondition (those :func:`srilib.chapters.weak_caveat` names): a
    :class:`Verdict`'s ``weak``."""
    runs = [str(r) for r in runs]
    weak = weak_models(runs)
    return tuple(r for r in runs if r.partition("@")[0] in weak)


def short(est, digits: int = 2, signed: bool = False) -> str:
    """'v [lo, hi]' of a metrics Rate or Estimate (no counts, no method): the visible form of a glance cell."""
    v, lo, hi = (getattr(est, k, math.nan) for k in ("value", "lo", "hi"))
    if v is None or math.isnan(v):
        return "–"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(v)} [{f.format(lo)}, {f.format(hi)}]"


def verdict(est, ref: float = 0.0, expected: int = 1) -> str:
    """The verdict of an interval against the paper's direction: ``expected`` +1 when the paper finds the quantity
    above ``ref``, -1 below."""
    side = interval_side(est, ref)
    if side == 0:
        return UNRESOLVED
    return REPRODUCED if side == expected else OPPOSITE


def finding(claim: str, paper: str, est, runs: Sequence[str], ref: float = 0.0, expected: int = 1,
            signed: bool = True, label: str = "", headline: bool = False) -> Finding:
    """A :class:`Finding` for one estimate: ours is ``label`` (the runs, badged when weak) and the interval."""
    runs = tuple(str(r) for r in runs)
    weak = tuple(weak_models(runs))
    who = label or " vs ".join(badged(r, weak) for r in runs)
    return Finding(claim=claim, paper=paper, ours=f"{who}: {short(est, signed=signed)}",
                   verdict=verdict(est, ref, expected), runs=runs, weak=weak, headline=headline)


def badged(run: str, weak: Iterable[str]) -> str:
    """A run's name (plain text, so that a narrow column can break it at its hyphens), with the weak-model badge
    when its model misses a precondition."""
    return run + (f" {WEAK_BADGE}" if run.partition("@")[0] in set(weak) else "")


def _cell(s: str) -> str:
    return str(s).replace("|", "/").replace("\n", " ")


def glance_markdown(findings: Sequence[Finding], chapters: Sequence[str] | None = None) -> str:
    """The glance table (Markdown): claim (paper) | paper | ours [95% interval] | verdict; with ``chapters`` (one
    cell per finding, e.g. a link to its chapter) the claim cell ends with it. Consecutive findings of the same
    claim (one per run) show the claim and the paper's number once. One line explains the badge when any finding
    rests on a weak model."""
    if not findings:
        return "_No finding: this profile ran none of the comparisons this chapter tests._"
    head = ["claim (paper)", "paper", "ours [95% interval]", "verdict"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = None
    for i, f in enumerate(findings):
        claim = f.claim + (f" · {chapters[i]}" if chapters is not None else "")
        same = (claim, f.paper) == last  # the same claim on another run: its claim and paper cells once
        last = (claim, f.paper)
        cells = ["" if same else claim, "" if same else f.paper, f.ours,
                 f"**{f.shown_verdict}**" if f.verdict != UNRESOLVED else f.shown_verdict]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    out = "\n".join(rows)
    weak = sorted({m for f in findings for m in f.weak})
    if weak:
        out += (f"\n\n{WEAK_BADGE} {', '.join(f'`{m}`' for m in weak)} miss{'es' if len(weak) == 1 else ''} a "
                "precondition of the organisms page (refusal, harmless answers on topic, attackable): a verdict on it "
                "is a measurement of a weak model, not evidence for or against the paper.")
    return out


def show_glance(findings: Sequence[Finding], chapter: str) -> None:
    """Display a chapter's glance table; its findings travel in the output's metadata (:data:`GLANCE_KEY`) for
    the landing page (:func:`srilib.record.glance_page`)."""
    from IPython.display import Markdown, display

    display(Markdown(glance_markdown(findings)),
            metadata={GLANCE_KEY: {"chapter": chapter, "findings": [asdict(f) for f in findings]}})


def collect(nb: dict) -> list[Finding]:
    """The findings a chapter's executed notebook recorded (empty when it has no glance output)."""
    return [Finding(**{**f, "runs": tuple(f["runs"]), "weak": tuple(f["weak"])})
            for meta in output_records(nb, GLANCE_KEY) for f in meta["findings"]]


def headlines(findings: Sequence[Finding]) -> list[Finding]:
    """The rows a chapter sends to the landing page: those marked ``headline`` (its first row when none is)."""
    return [f for f in findings if f.headline] or list(findings[:1])


def headline_runs(runs: Sequence[str]) -> list[str]:
    """The runs a glance table reports per run: the first diffusion model of ``runs`` whose AR twin
    (:data:`srilib.chapters.AR_TWIN`) also ran, its AR twin first and then its runs in the chapter's order; when no
    such pair ran, the chapter's first two runs."""
    from . import AR_TWIN

    runs = [str(r) for r in runs]
    models = [r.partition("@")[0] for r in runs]
    for m in dict.fromkeys(models):
        twin = AR_TWIN.get(m)
        if twin in models:
            return [r for r in runs if r.partition("@")[0] == twin][:1] + [r for r in runs if r.partition("@")[0] == m]
    return runs[:2]


def main_run(runs: Sequence[str]) -> str | None:
    """The run whose rows a chapter sends to the landing page: the main pair's first diffusion run (the
    :func:`headline_runs` after the AR twin), else the chapter's first run."""
    main = headline_runs(runs)
    return main[1] if len(main) > 1 else (main[0] if main else None)
