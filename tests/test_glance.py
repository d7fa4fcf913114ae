"""Findings at a glance (issue 23): verdicts as data, read from intervals, one renderer, collected for the landing
page, and moved to the top of each chapter by the book's runner."""
import json

import pytest

from srilib import execute, record
import srilib.chapters as G
from srilib.stats import Estimate


def est(v, lo, hi):
    return Estimate(v, lo, hi, "test", signed=True)


def body(md):
    """The body rows of the Markdown table in ``md``, as lists of cells (no table: [])."""
    lines = [x for x in md.splitlines() if x.startswith("|")]
    return [[c.strip() for c in x.strip("|").split("|")] for x in lines[2:]]


@pytest.fixture
def no_weak(monkeypatch):
    monkeypatch.setattr(G, "weak_models", lambda runs: {})


def test_verdict_reads_the_interval_against_the_papers_direction():
    assert G.verdict(est(0.3, 0.1, 0.5)) == G.REPRODUCED
    assert G.verdict(est(0.3, -0.1, 0.5)) == G.UNRESOLVED  # a positive point is not a verdict
    assert G.verdict(est(-0.3, -0.5, -0.1)) == G.OPPOSITE
    assert G.verdict(est(-0.3, -0.5, -0.1), expected=-1) == G.REPRODUCED
    assert G.verdict(est(0.6, 0.55, 0.7), ref=0.5) == G.REPRODUCED  # e.g. an AUROC against chance
    assert G.verdict(est(0.6, 0.45, 0.7), ref=0.5) == G.UNRESOLVED
    assert G.verdict(est(float("nan"), float("nan"), float("nan"))) == G.UNRESOLVED
    with pytest.raises(ValueError, match="verdict must be one of"):
        G.Finding("c", "p", "o", "as in the paper")


def test_a_finding_on_a_weak_model_is_shown_as_weak_with_its_direction(monkeypatch):
    monkeypatch.setattr(G, "weak_models", lambda runs: {"m": ["x"]} if any(r.startswith("m") for r in runs) else {})
    f = G.finding("claim", "paper", est(0.2, 0.1, 0.3), ["a@ar", "m@low_confidence"])
    assert f.verdict == G.REPRODUCED and f.weak == ("m",) and f.shown_verdict == "weak model (reproduced)"
    assert f.ours == "a@ar vs m@low_confidence ⚠: +0.20 [+0.10, +0.30]"
    g = G.finding("claim", "paper", est(0.2, 0.1, 0.3), ["a@ar"])
    assert g.weak == () and g.shown_verdict == "reproduced"
    md = G.glance_markdown([f, g])
    lines = md.splitlines()
    assert lines[0] == "| claim (paper) | paper | ours [95% interval] | verdict |"
    assert lines[2].endswith("| **weak model (reproduced)** |") and lines[3].endswith("| **reproduced** |")
    assert lines[2].startswith("| claim | paper |") and lines[3].startswith("|  |  | a@ar: ")  # the claim once
    assert sum("⚠ `m` misses a precondition" in x for x in lines) == 1  # the badge explained once


def test_glance_markdown_escapes_pipes_links_chapters_and_says_when_empty(no_weak):
    f = G.finding("a | b", "p", est(0.1, -0.1, 0.2), ["a@ar"], signed=False)
    md = G.glance_markdown([f], chapters=["{doc}`x </book/executed/x>`"])
    assert md.splitlines()[0] == "| claim (paper) | paper | ours [95% interval] | verdict |"
    assert body(md) == [["a / b · {doc}`x </book/executed/x>`", "p", "a@ar: 0.10 [-0.10, 0.20]", "not resolved"]]
    assert G.glance_markdown([]).startswith("_No finding")


def test_headline_runs_put_the_main_pair_first(monkeypatch):
    from srilib import chapters
    monkeypatch.setitem(chapters.AR_TWIN, "d", "a")
    runs = ["x@ar", "d@low_confidence", "d@dlm-ar", "a@ar", "e@low_confidence"]
    assert G.headline_runs(runs) == ["a@ar", "d@low_confidence", "d@dlm-ar"]
    assert G.headline_runs(["x@ar", "e@low_confidence", "y@ar"]) == ["x@ar", "e@low_confidence"]
    assert G.main_run(runs) == "d@low_confidence" and G.main_run(["x@ar"]) == "x@ar" and G.main_run([]) is None


def test_findings_travel_in_output_metadata_to_the_landing_page(tmp_path, no_weak):
    fs = [G.finding("claim one", "p1", est(0.2, 0.1, 0.3), ["a@ar"]),
          G.finding("claim two", "p2", est(-0.2, -0.3, -0.1), ["a@ar"])]
    out = {"output_type": "display_data", "data": {"text/markdown": G.glance_markdown(fs)},
           "metadata": {G.GLANCE_KEY: {"chapter": "sri_geometry", "findings": [vars(f) for f in fs]}}}
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "", "outputs": [out]}]}
    assert G.collect(nb) == fs
    (tmp_path / "sri_geometry.ipynb").write_text(json.dumps(nb))
    page = record.glance_page(tmp_path, ["sri_geometry", "detector_transfer"])  # the second is not executed
    # no row marked headline: the landing page takes the chapter's first row only
    assert page.count("{doc}`geometry </book/executed/sri_geometry>`") == 1
    (row,) = body(page)
    assert row[0].startswith(fs[0].claim) and row[3] == "**reproduced**"
    fs[1] = G.Finding(**{**vars(fs[1]), "headline": True})
    out["metadata"][G.GLANCE_KEY]["findings"] = [vars(f) for f in fs]
    (tmp_path / "sri_geometry.ipynb").write_text(json.dumps(nb))
    page = record.glance_page(tmp_path, ["sri_geometry"])
    (row,) = body(page)
    assert row[0].startswith(fs[1].claim) and row[3] == "**opposite**"
    assert body(record.glance_page(tmp_path / "none", ["sri_geometry"])) == []


def test_present_moves_the_glance_cells_under_the_title():
    def cell(kind, src, tags=()):
        return {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": src}

    nb = {"cells": [cell("markdown", "# Chapter"), cell("code", "n = 3", ["parameters"]), cell("code", "work()"),
                    cell("markdown", "## At a glance", ["glance"]), cell("code", "show()", ["glance", "remove-input"]),
                    cell("markdown", "## Conclusions")]}
    out = execute.present(nb, "sri_geometry", "cpu")
    assert out == execute.present(out, "sri_geometry", "cpu")  # idempotent
    srcs = [c.get("id") or c["source"] for c in out["cells"]]
    assert srcs == ["# Chapter", "srilib-downloads", "## At a glance", "show()", "n = 3", "srilib-params", "work()",
                    "## Conclusions"]


# ------------------------------------------------------------------------------------------- tables
def test_tables_show_rates_short_fold_constant_columns_and_long_tables():
    """Issue 23's readable tables: 'v [lo, hi]' visible with the count on hover, a column that never changes said
    once above the table, a table of more than FOLD_ROWS rows folded, numbered captions."""
    import re

    from srilib.chapters import FOLD_ROWS, cell, table_markdown
    from srilib.stats import wilson

    r = wilson(31, 40)
    assert cell(r) == f'<span title="31/40 (count)">{r.value:.2f} [{r.lo:.2f}, {r.hi:.2f}]</span>'
    assert re.sub("<[^>]+>", "", cell(f"{wilson(0, 4)} → {wilson(2, 4)}")) == "0.00 [0.00, 0.49] → 0.50 [0.15, 0.85]"
    assert cell(0.5) == "0.50" and cell("text (1/2)") == "text (1/2)"  # only a rate's count moves to the hover

    rows = [{"run": f"r{i}", "over": "every attacked prompt", "RR": wilson(i, 10)} for i in range(3)]
    md = table_markdown(rows, caption="RR per run", number=4)
    lines = md.splitlines()
    assert lines[0] == "**Table 4. RR per run**" and md.count("every attacked prompt") == 1  # said once, above
    header = next(x for x in lines if x.startswith("| run"))
    assert header == "| run | RR |"  # the constant column is gone from the table
    assert "<details>" not in md
    assert table_markdown(rows[:2]).splitlines()[0] == "| run | over | RR |"  # two rows: nothing is constant yet

    many = [{"run": f"r{i}", "AUROC": 0.5 + i / 100} for i in range(FOLD_ROWS + 1)]
    md = table_markdown(many, caption="per family", number=1)
    assert md.startswith("<details><summary>Table 1. per family (21 rows: open to read)</summary>")
    assert md.rstrip().endswith("</details>") and md.count("\n| r") == FOLD_ROWS + 2  # header and every row
    assert "<details>" not in table_markdown(many[:FOLD_ROWS])
