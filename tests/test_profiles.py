"""Profiles: the shipped YAML files parse, merge common and per-notebook parameters, and bad input is named."""
from __future__ import annotations

import pytest

from srilib.experiment import HARDWARE, available_profiles, load_profile, parse_profile

PAPER_MODELS = {"llama-3.1-8b-instruct", "qwen-2.5-7b-instruct", "gemma-7b-it", "llada-8b-instruct", "llada-1.5",
                "dream-v0-instruct-7b"}


def test_shipped_profiles_parse():
    assert {"smoke", "cpu", "colab", "paper"} <= set(available_profiles())
    for name in available_profiles():
        p = load_profile(name)
        assert p.name == name and p.hardware in HARDWARE and p.description
        assert p.notebooks and p.notebooks[0] == "sri_geometry"
        assert p.params_for("sri_geometry")["profile"] == name


def _models(params: dict) -> set[str]:
    """Model names of a notebook's runs ("model@sampler:variant" -> "model")."""
    return {r.split("@")[0] for r in params.get("runs", params.get("models", []))}


def test_profiles_keep_their_purpose():
    smoke = load_profile("smoke")
    for nb in smoke.notebooks:  # CI: tiny everywhere
        p = smoke.params_for(nb)
        assert p["steps"] <= 8 and p["n_anchor"] <= 8 and p["n_eval"] <= 8, nb
    paper = load_profile("paper")
    for nb in paper.notebooks:  # the paper's settings (the paper's setup)
        p = paper.params_for(nb)
        assert (p["steps"], p["gen_length"], p["n_anchor"], p["n_eval"], p["tau"]) == (32, 128, 400, 100, 0.1), nb
    assert _models(paper.params_for("sri_geometry")) == PAPER_MODELS
    assert load_profile("cpu").params_for("sri_geometry")["steps"] == 32
    assert load_profile("colab").hardware == "t4" and load_profile("paper").hardware == "a100"


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
