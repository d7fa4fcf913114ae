"""The run record of a profile: where its executed notebooks and records live (``book/executed/<profile>/``),
the ``srilib`` metadata written into each executed notebook, and the pages written from the run summary
(:func:`srilib.execute.run_profile`): the execution table, the one-line failure summary, the organisms'
preconditions and the findings at a glance, each included by a page of the book.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Sequence

EXECUTED = Path("book/executed")
SOURCES = Path("notebooks")
SUMMARY = "run_summary.json"
EXECUTION_TABLE = "execution.md"  # included by book/reproduce.md
PAPER_NUMBERS = "paper_numbers.md"  # included by book/paper.md
ORGANISMS_SUMMARY = "organisms_summary.md"  # included by book/intro.md and book/limitations.md
GLANCE = "glance.md"  # included by book/intro.md: every chapter's findings at a glance
CHAPTER_SHORT = {"sri_geometry": "geometry", "sampling_vs_representation": "sampling",
                 "incomplete_recovery": "recovery", "detector_transfer": "detector"}


# ----------------------------------------------------------------------------------------------- locations
def profile_store(root: Path, profile: str) -> Path:
    """Where one profile's executed notebooks and run record live, beside every other profile's:
    ``book/executed/<profile>/``. The book reads the copies :func:`srilib.build.stage` puts in ``book/executed/``."""
    return Path(root) / EXECUTED / profile


def executed_meta(path: Path) -> dict:
    """The ``srilib`` metadata :mod:`srilib.execute` wrote into an executed notebook ({} if absent or unreadable)."""
    try:
        return json.loads(Path(path).read_text()).get("metadata", {}).get("srilib", {}) or {}
    except (OSError, ValueError):
        return {}


def git_info(root: Path) -> dict:
    """Commit and dirty flag of ``root`` (None when it is not a git checkout or has no commit)."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


# -------------------------------------------------------------------------------------- the record's pages
def execution_table(summary: dict) -> str:
    """The chapters' execution record (Markdown) from a run summary: what ran, with which profile, when, for how
    long, from which commit, and what failed."""
    rows = ["| chapter | profile | started (UTC) | duration | status | runs left out | traces generated in the "
            "notebook | commit |", "|---|---|---|---|---|---|---|---|"]
    for name, e in (summary.get("notebooks") or {}).items():
        dur = f"{e['elapsed_s']:.0f} s" if isinstance(e.get("elapsed_s"), (int, float)) else "–"
        status = e.get("status", "–") + (f": {e['error']}" if e.get("error") else "")
        left = ", ".join(r["run"] for r in e.get("failed_runs") or []) or "none"
        commit = (e.get("git_commit") or "")[:10] or "–"
        gen = e.get("traces_generated")
        gen = "–" if gen is None else (str(len(gen)) if gen else "0 (all from the trace plan)")
        rows.append(f"| {name} | {e.get('profile', '–')} | {e.get('started_at', '–')} | {dur} | "
                    f"{status.replace('|', '/')} | {left} | {gen} | {commit} |")
    cached = sum(e.get("status") == "cached" for e in (summary.get("notebooks") or {}).values())
    trained = ", ".join(f"{k} {v:.0f} s" for k, v in (summary.get("organisms_s") or {}).items()) or "none needed"
    head = (f"Profile `{summary.get('profile')}` on {summary.get('hardware')} hardware; the latest `python -m "
            f"srilib run` finished {summary.get('finished_at')} after {summary.get('wall_s', 0):.0f} s (organism "
            f"training: {trained})"
            + (f"; it re-used {cached} chapter(s) marked *cached*, whose inputs had not changed since the execution "
               "the row shows (its start and duration)." if cached else "."))
    plan = summary.get("trace_plan") or {}
    if plan.get("error"):
        head += f" The trace plan could not be built ({plan['error']}); the notebooks generated their own traces."
    elif plan:
        head += (f" Before the notebooks, the trace plan (srilib.plan) computed {plan['computed']} of the "
                 f"{plan['distinct']} distinct trace sets the chapters declare ({plan['cached']} were in the cache, "
                 f"{len(plan['failed'])} failed) in {plan['seconds']:.0f} s.")
    return head + "\n\n" + "\n".join(rows) + "\n"


def failure_summary(summary: dict) -> str:
    """One line naming every failed notebook and every run left out of a chapter ('' when none)."""
    parts = []
    for name, e in (summary.get("notebooks") or {}).items():
        if e.get("status") == "failed":
            parts.append(f"{name} FAILED ({e.get('error', 'see the notebook')})")
        for r in e.get("failed_runs") or []:
            parts.append(f"{name}: run {r['run']} left out ({r['error'][:160]})")
    return "; ".join(parts)


def organisms_summary() -> str:
    """The shipped models' measured preconditions as bullets: the v3 pair's (data/preconditions_v3.json), then
    v2's (data/preconditions.json)."""
    from .organisms.preconditions import REPORT_FILE, REPORT_V3_FILE, summary_text

    if not REPORT_FILE.is_file():
        return (f"*The organisms' preconditions have not been measured yet ({REPORT_FILE.name} is missing: run "
                "`python -m srilib.organisms.check --book --out srilib/organisms/data/preconditions.json`).*")
    parts = [summary_text(json.loads(f.read_text()), v3=f is REPORT_V3_FILE)
             for f in (REPORT_V3_FILE, REPORT_FILE) if f.is_file()]
    return "\n\n".join(parts)


def glance_page(out_dir: Path, names: Sequence[str]) -> str:
    """The landing page's findings table: the headline findings every executed chapter of ``names`` recorded
    (:mod:`srilib.chapters`; each chapter's page opens with all of its own), in the profile's order, each
    row linked to its chapter."""
    from .chapters import collect, glance_markdown, headlines

    findings, links = [], []
    for n in names:
        p = Path(out_dir) / f"{n}.ipynb"
        if not p.is_file():
            continue
        try:
            fs = headlines(collect(json.loads(p.read_text())))
        except ValueError:
            continue
        findings += fs
        links += [f"{{doc}}`{CHAPTER_SHORT.get(n, n)} </{EXECUTED.as_posix()}/{n}>`"] * len(fs)
    if not findings:
        return "*No chapter of this build has recorded its findings yet: run `make book`.*\n"
    return glance_markdown(findings, chapters=links) + "\n"
