"""Findings at a glance: a chapter's verdicts on the paper's claims as data (:class:`Finding`), and the one renderer
that writes them, as the table at the top of each analysis chapter and, collected by the book's runner, as the
landing page's table.

A verdict is read from a 95% interval against the paper's direction, never from a point: *reproduced* (the interval
lies on the paper's side of the reference), *opposite* (it lies on the other side), *not resolved* (it contains the
reference). A finding on a model that misses a precondition of the organisms page is shown as *weak model*, with the
interval's direction kept in brackets, and its run carries the badge :data:`WEAK_BADGE`, explained once per table.
:mod:`.findings` builds each chapter's findings from the same estimates its conclusions print.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from . import interval_side, output_records, weak_models

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
