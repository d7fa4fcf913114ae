"""The trace plan: the chapters declare what they read, one planner computes it, the notebooks then only read."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from srilib.experiment import Experiment, resolve_run
from srilib.plan import CHAPTERS, Need, TracePlan, build_plan
from srilib.experiment import notebook_defaults, notebook_params
from srilib.experiment import load_profile, parse_profile

REPO = Path(__file__).resolve().parent.parent


def test_a_run_is_resolved_once_with_kind_sampler_and_block_length():
    r = resolve_run("tiny-dlm@low_confidence:b8")
    assert (r.model, r.kind, r.sampler, r.block_length, r.label) == ("tiny-dlm", "dlm", "low_confidence", 8,
                                                                     "tiny-dlm@low_confidence:b8")
    assert resolve_run(r) is r
    assert resolve_run("tiny-ar").label == "tiny-ar@ar" and resolve_run("tiny-dlm").sampler == "low_confidence"
    assert resolve_run("tiny-dlm@diffuguard:b8") == r.with_sampler("diffuguard")
    assert Experiment(steps=8, gen_length=16).sampler(r).block_length == 8
    for bad, msg in (("no-such-model", "unknown model"), ("tiny-dlm@low_confidence:16", "positive integer"),
                     ("tiny-ar@ar:b8", "autoregressive"), ("", "a run is written")):
        with pytest.raises(ValueError, match=msg):
            resolve_run(bad)


def test_notebook_parameters_are_papermills_defaults_under_the_profile():
    prof = load_profile("smoke")
    nb = REPO / "notebooks" / "detector_transfer.ipynb"
    defaults = notebook_defaults(nb)
    assert defaults["runs"] and defaults["n_per_family"] >= 1  # literals read through papermill
    params = notebook_params(prof, "detector_transfer", REPO)
    assert params["runs"] == prof.params_for("detector_transfer")["runs"] != defaults["runs"]
    assert params["canvas_attacks"] == defaults["canvas_attacks"]  # not in the profile: the notebook's default


def test_source_notebooks_default_to_the_cpu_profile():
    """Run All on a source notebook, with nothing injected, computes what the cpu book computed: every value the
    cpu profile gives a chapter is the notebook's own default (dtype float32 included)."""
    prof = load_profile("cpu")
    for name in prof.notebooks:
        defaults = notebook_defaults(REPO / "notebooks" / f"{name}.ipynb")
        differ = {k: (defaults.get(k, "<missing>"), v) for k, v in prof.params_for(name).items()
                  if defaults.get(k, "<missing>") != v}
        assert not differ, f"{name}: notebook default vs cpu profile: {differ}"


def logic_in_cells(path: Path) -> list[str]:
    """Every function definition, lambda, class or try block in a notebook's code cells, as 'cell N: Kind'."""
    import ast
    import json

    out = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "code":
            tree = ast.parse("".join(cell["source"]))
            out += [f"cell {i}: {type(n).__name__}" for n in ast.walk(tree)
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.Try))]
    return out


def test_notebook_cells_hold_no_function_and_no_try(tmp_path):
    """Notebooks are thin: the logic lives in srilib (tested), a cell only calls it, plots and shows."""
    assert {c: logic_in_cells(REPO / "notebooks" / f"{c}.ipynb") for c in CHAPTERS} == {c: [] for c in CHAPTERS}
    fat = tmp_path / "fat.ipynb"
    fat.write_text('{"cells": [{"cell_type": "code", "source": ["try:\\n    f = lambda m: m\\nexcept Exception:\\n    pass"]}]}')
    assert logic_in_cells(fat) == ["cell 0: Try", "cell 0: Lambda"]


def test_the_smoke_plan_declares_every_chapter_and_dedupes():
    plan = build_plan("smoke", REPO)
    assert {n.chapter for n in plan.needs} == set(CHAPTERS)
    assert not [n for n in plan.needs if n.error]
    names = {(n.chapter, n.run.label, n.name) for n in plan.needs}
    for want in [("sampling_vs_representation", "tiny-dlm@low_confidence:b8", "raw"),
                 ("sampling_vs_representation", "tiny-dlm@dlm-ar", "seed 1: raw"),  # the seed study
                 ("detector_transfer", "tiny-dlm@low_confidence", "canvas:prefill_affirmative"),
                 ("detector_transfer", "tiny-dlm@diffuguard", "harmless"),  # diffuguard_rates in smoke
                 ("detector_transfer", "tiny-ar@ar", "shift/harmless-families"),
                 ("detector_transfer", "tiny-ar@ar", "guard/demo")]:
        assert want in names, want
    # every chapter reads the anchors of a shared run: declared four times, computed once
    anchors = [n for n in plan.needs if n.run.label == "tiny-dlm@low_confidence" and n.name == "anchors/harmful"]
    assert len(anchors) == 4 and len({(n.settings(), tuple(n.prompts)) for n in anchors}) == 1
    assert plan.models()[:2] == ["smollm2-135m", "tiny-dlm"]
    rows = plan.describe()
    assert len(rows) == len(plan.needs) and any(r["prompts"] == "computed by a search" for r in rows)


def test_a_bad_run_is_one_failed_need_and_the_rest_still_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SRILIB_CACHE", str(tmp_path))
    prof = parse_profile({"name": "t", "hardware": "cpu", "common": {
        "steps": 2, "gen_length": 8, "n_anchor": 2, "n_eval": 2, "batch_size": 2, "attacks": ["flip_attack"]},
        "notebooks": {"sri_geometry": {"runs": ["no-such-model", "tiny-ar"]}}})
    plan = build_plan(prof, REPO)
    bad = [n for n in plan.needs if n.error]
    assert len(bad) == 1 and "'no-such-model'" in bad[0].error
    assert plan.models() == ["tiny-ar"]
    report = plan.run(progress=False, log=lambda m: None)
    assert len(report["failed"]) == 1 and report["failed"][0][1] == "no-such-model"
    assert report["computed"] == report["distinct"] == 5  # 2 anchor sets + harmless, raw, flip_attack
    again = build_plan(prof, REPO).run(progress=False, log=lambda m: None)
    assert again["computed"] == 0 and again["cached"] == 5


def test_plan_records_a_failing_need_and_goes_on(tmp_path):
    exp = Experiment(steps=2, batch_size=2, cache=str(tmp_path), progress=False)
    run = resolve_run("tiny-ar")

    def search():
        raise RuntimeError("search failed")
    plan = TracePlan("t", [Need("c", run, "lazy", exp, search), Need("c", run, "ok", exp, ["Name a colour."])])
    report = plan.run(log=lambda m: None)
    assert report["failed"] == [("c", "tiny-ar@ar", "lazy", "RuntimeError: search failed")]
    assert report["computed"] == 1 and [r["desc"] for r in exp.store.generated()] == ["tiny-ar@ar ok [plan]"]


@pytest.mark.slow
def test_after_the_plan_the_smoke_notebooks_generate_no_trace(tmp_path, monkeypatch):
    """The book's runner computes the plan first; then executing every notebook of the smoke profile generates
    no trace set (the trace store's log, per notebook, in the run summary)."""
    from srilib import execute

    for d in ("notebooks", "book"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("executed", "_build", "v1"))
    monkeypatch.setenv("SRILIB_CACHE", str(tmp_path / "cache"))
    summary = execute.run_profile(load_profile("smoke"), tmp_path)
    assert summary["trace_plan"]["computed"] > 0 and not summary["trace_plan"]["failed"]
    for name, e in summary["notebooks"].items():
        assert e["status"] == "executed", (name, e.get("error"))
        assert e["traces_generated"] == [], (name, e["traces_generated"])
