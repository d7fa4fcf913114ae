"""Profiles: the shipped YAML files parse, merge common and per-notebook parameters, and bad input is named."""
from __future__ import annotations

import pytest

from srilib.profiles import HARDWARE, available_profiles, load_profile, parse_profile

PAPER_MODELS = {"llama-3.1-8b-instruct", "qwen-2.5-7b-instruct", "gemma-7b-it", "llada-8b-instruct", "llada-1.5",
                "dream-v0-instruct-7b"}


def test_shipped_profiles_parse():
    assert {"smoke", "cpu", "colab", "paper"} <= set(available_profiles())
    for name in available_profiles():
        p = load_profile(name)
        assert p.name == name and p.hardware in HARDWARE and p.description
        assert p.notebooks and p.notebooks[0] == "sri_geometry"
        assert p.params_for("sri_geometry")["profile"] == name


def test_params_merge_common_and_notebook():
    smoke = load_profile("smoke").params_for("sri_geometry")
    assert smoke["models"] == ["smollm2-135m"] and smoke["n_anchor"] == 4 and smoke["n_eval"] == 4
    assert smoke["steps"] == 4 and smoke["tau"] == 0.1 and smoke["seed"] == 0
    cpu = load_profile("cpu").params_for("sri_geometry")
    assert (cpu["n_anchor"], cpu["n_eval"], cpu["steps"]) == (120, 60, 32)
    paper = load_profile("paper").params_for("sri_geometry")
    assert set(paper["models"]) == PAPER_MODELS
    assert (paper["n_anchor"], paper["n_eval"], paper["steps"], paper["gen_length"]) == (400, 100, 32, 128)
    assert set(load_profile("colab").params_for("sri_geometry")["models"]) == PAPER_MODELS


def test_notebook_value_overrides_common():
    p = parse_profile({"name": "x", "hardware": "cpu", "common": {"steps": 32, "seed": 0},
                       "notebooks": {"a": {"steps": 8}, "b": None}})
    assert p.params_for("a") == {"steps": 8, "seed": 0}
    assert p.params_for("b") == {"steps": 32, "seed": 0}
    assert p.notebooks == ["a", "b"]
    with pytest.raises(KeyError, match="has no notebook 'c'"):
        p.params_for("c")


def test_unknown_profile_lists_available():
    with pytest.raises(ValueError, match="available: .*cpu.*smoke"):
        load_profile("nonexistent")


@pytest.mark.parametrize("data, msg", [
    ({"name": "x", "hardware": "tpu", "notebooks": {"a": {}}}, "hardware must be one of"),
    ({"name": "x", "hardware": "cpu", "notebooks": {"a": {}}, "extra": 1}, "unknown keys"),
    ({"name": "x", "hardware": "cpu"}, "missing keys"),
    ({"name": "x", "hardware": "cpu", "notebooks": {}}, "non-empty mapping"),
    ({"name": "x", "hardware": "cpu", "notebooks": {"bad-name": {}}}, "notebook name"),
    ({"name": "x", "hardware": "cpu", "notebooks": {"a": [1, 2]}}, "must be a mapping"),
    ({"name": "x", "hardware": "cpu", "common": [1], "notebooks": {"a": {}}}, "`common` must be a mapping"),
    ([1, 2], "expected a mapping"),
])
def test_bad_profiles_are_named(data, msg):
    with pytest.raises(ValueError, match=msg):
        parse_profile(data)


def test_load_from_path(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nhardware: a100\ncommon: {seed: 1}\nnotebooks:\n  sri_geometry: {n_eval: 7}\n")
    p = load_profile(f)
    assert p.path == f and p.params_for("sri_geometry") == {"seed": 1, "n_eval": 7}
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_profile(tmp_path / "broken.yaml")
    with pytest.raises(FileNotFoundError):
        load_profile(tmp_path / "absent.yaml")
