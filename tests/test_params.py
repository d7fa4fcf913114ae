"""Issue 28: every chapter checks all its parameters at once, before any model loads, and names each bad one with
its fix; the runner checks a profile's chapters before anything runs; no chapter prints a "nothing found" line
about runs that failed."""
import json
from pathlib import Path

import pytest

import srilib.experiment
from srilib.chapters import unless_failed
from srilib.experiment import ParameterError, check_params, check_profile
from srilib.experiment import available_profiles, load_profile, parse_profile

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ("sri_geometry", "sampling_vs_representation", "incomplete_recovery", "detector_transfer")


def test_every_shipped_profile_passes_its_own_checks():
    for name in available_profiles():
        check_profile(load_profile(name), ROOT)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_names_every_bad_parameter_at_once(chapter):
    params = load_profile("cpu").params_for(chapter)
    bad = {**params, "tau": -1, "runs": [params["runs"][0], "organism-arr", "smollm2-135m-dlm@low_confidnce"],
           "n_eval": 0, "attacks": ["flip_atack"], "dtype": "float64"}
    if "lambda_r" in params:
        bad["lambda_r"] = [0.5, 1.3]
    with pytest.raises(ParameterError) as e:
        check_params(chapter, bad)
    found = {p.split(" = ")[0] for p in e.value.problems}
    assert found == {"tau", "runs", "n_eval", "attacks", "dtype"} | ({"lambda_r"} if "lambda_r" in params else set())
    runs_line = next(p for p in e.value.problems if p.startswith("runs ="))
    import re  # each bad run is named, the good run is not blamed
    assert re.findall(r"'([^']+)' must be", runs_line) == ["organism-arr", "smollm2-135m-dlm@low_confidnce"]
    assert check_params(chapter, params)["tau"] == params["tau"]  # the profile's own values pass


def test_types_ranges_sections_and_per_section_run_lists():
    ok = {"runs": ["organism-ar", "organism-dlm@low_confidence"]}
    for name, value in [("tau", 0), ("tau", "0.1"), ("lambda_r", []), ("dip", 1.0), ("quantile", 0.0),
                        ("seed", -1), ("seeds", [0, True]), ("batch_size", 2.5), ("judge", "gpt"),
                        ("judge2", "llm:"), ("source", "web"), ("self_examine", 1),
                        ("random_search", {"n_requests": -1}), ("pair", {"attacker": "gpt-4"}),
                        ("canvas_attacks", ["prefill"]), ("dlm_ppl_scorer", "nope")]:
        with pytest.raises(ParameterError, match=f"{name} = "):
            check_params("x", {**ok, name: value})
    for name, value in [("tau", 0.7), ("judge2", None), ("random_search", None), ("seed_n_eval", None),
                        ("block_lengths", []), ("judge", "llm:meta-llama/Llama-Guard-3-8B")]:
        check_params("x", {**ok, name: value})  # valid values pass, 0.7 included (any positive τ)
    with pytest.raises(ParameterError, match=r"shift_runs = .*not among runs"):
        check_params("x", {**ok, "shift_runs": ["organism-dlm@dlm-ar"]})
    with pytest.raises(ParameterError, match=r"pair.targets = .*not among runs"):
        check_params("x", {**ok, "pair": {"targets": ["smollm2-135m-dlm"]}})
    check_params("x", {**ok, "shift_runs": ["organism-ar@ar"], "pair": {"targets": ["organism-dlm"]}})


def test_profile_check_catches_an_unknown_key_and_a_bad_value_before_anything_runs(tmp_path, monkeypatch):
    prof = parse_profile({"name": "t", "description": "d", "hardware": "cpu", "common": {"profile": "t"},
                          "notebooks": {"sri_geometry": {"runs": ["organism-ar"], "tua": 0.1, "tau": -2}}})
    with pytest.raises(ParameterError) as e:
        check_profile(prof, ROOT)
    assert any(p.startswith("sri_geometry: tua ") and "notebooks/sri_geometry.ipynb" in p for p in e.value.problems)
    assert any(p.startswith("sri_geometry: tau = -2") for p in e.value.problems)
    from srilib import execute

    monkeypatch.setattr(execute, "run_plan", lambda *a, **k: pytest.fail("the trace plan started"))
    with pytest.raises(ParameterError):
        execute.run_profile(prof, ROOT)


def _cells(chapter: str) -> tuple[str, str]:
    nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    setup = next(c for c in nb["cells"] if c["cell_type"] == "code" and "Chapter(globals())" in "".join(c["source"]))
    return "".join(params["source"]), "".join(setup["source"])


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_notebook_stops_on_bad_parameters_before_anything_loads(chapter, monkeypatch):
    """The notebook's parameters cell, a bad injected value, then its setup cell: ParameterError, and setup (which
    builds the experiment) never called."""
    monkeypatch.setattr(srilib.experiment, "setup", lambda *a, **k: pytest.fail("setup ran with bad parameters"))
    params, setup = _cells(chapter)
    ns: dict = {}
    exec(params, ns)  # noqa: S102 - the repository's own notebook source
    ns["tau"], ns["runs"] = -1, ["organism-arr"]
    with pytest.raises(ParameterError) as e:
        exec(setup, ns)  # noqa: S102
    assert {p.split(" = ")[0] for p in e.value.problems} == {"tau", "runs"}


def test_a_nothing_found_line_never_speaks_for_runs_that_failed():
    runs = ["organism-ar", "organism-dlm@low_confidence", "smollm2-135m-dlm@dlm-ar"]
    assert unless_failed("No X.", runs, ["organism-ar@ar", "organism-dlm@low_confidence",
                                         "smollm2-135m-dlm@dlm-ar"]) == "_No X._"
    line = unless_failed("No X.", runs, ["organism-ar@ar"], kind="dlm")
    assert line.startswith("_No X._ **Not a finding:** 2 runs failed")
    assert "`organism-dlm@low_confidence`" in line and "`smollm2-135m-dlm@dlm-ar`" in line
    assert unless_failed("No X.", runs, ["organism-dlm@low_confidence", "smollm2-135m-dlm@dlm-ar"],
                         kind="dlm") == "_No X._"  # a failed AR run does not touch a line about diffusion runs
