"""Issue 27: a profile's needs are checked before its first trace or notebook (srilib.preflight): missing packages,
unknown models, an unreachable Hub, too little GPU memory, each named with its fix; `run` and `book` stop at once."""
from pathlib import Path

import pytest

from srilib import preflight as P
from srilib import build, execute
from srilib.__main__ import main
from srilib.experiment import load_profile, parse_profile

ROOT = Path(__file__).resolve().parents[1]


def _profile(hardware="t4", runs=("qwen-2.5-1.5b-instruct",), **common):
    return parse_profile({"name": "t", "description": "d", "hardware": hardware,
                          "common": {"profile": "t", **common},
                          "notebooks": {"sri_geometry": {"runs": list(runs)}}})


def _by(checks, group):
    return {c.what: c for c in checks if c.group == group}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(P, "hub_cached", lambda repo, repo_type="model": False)
    monkeypatch.setattr(P, "gpu", lambda: None)


def test_the_cpu_and_smoke_profiles_are_ready_here_without_the_network(monkeypatch):
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: pytest.fail("a CPU profile probed the Hub"))
    for name in ("cpu", "smoke"):
        checks = P.preflight(load_profile(name), ROOT)
        assert all(c.ok for c in checks), P.table(checks)
        assert {c.group for c in checks} >= {"parameters", "packages", "models", "disk"}


def test_missing_package_is_named_with_its_install_command(offline, monkeypatch):
    real = P._has
    monkeypatch.setattr(P, "_has", lambda pkg: pkg not in ("datasets", "bitsandbytes") and real(pkg))
    checks = P.preflight(_profile(source="public", quantization="8bit"), ROOT)
    pk = _by(checks, "packages")
    assert pk["datasets"].status == P.MISSING and pk["datasets"].fix.startswith("pip install datasets")
    assert pk["bitsandbytes"].status == P.MISSING and "bitsandbytes" in pk["bitsandbytes"].fix


def test_unknown_model_is_a_parameter_problem_named_before_anything(offline):
    checks = P.preflight(_profile(runs=("qwen-2.5-1.5b-instruct", "llama-9b")), ROOT)
    bad = [c for c in checks if c.group == "parameters" and not c.ok]
    assert len(bad) == 1 and "'llama-9b'" in bad[0].detail and bad[0].fix.startswith("edit ")


def test_unreachable_hub_names_each_model_and_the_licence_step_for_gated_ones(offline):
    checks = P.preflight(_profile(runs=("qwen-2.5-1.5b-instruct", "llama-3.2-1b-instruct")), ROOT)
    m = _by(checks, "models")
    assert m["qwen-2.5-1.5b-instruct"].status == m["llama-3.2-1b-instruct"].status == P.MISSING
    assert "huggingface-cli download Qwen/Qwen2.5-1.5B-Instruct" in m["qwen-2.5-1.5b-instruct"].fix
    assert "https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct" in m["llama-3.2-1b-instruct"].fix  # licence


def test_a_reachable_hub_or_a_cached_model_is_ready(monkeypatch):
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(P, "hub_cached", lambda repo, repo_type="model": repo == "meta-llama/Llama-3.2-1B-Instruct")
    monkeypatch.setattr(P, "gpu", lambda: ("T4", 15.0))
    m = _by(P.preflight(_profile(runs=("qwen-2.5-1.5b-instruct", "llama-3.2-1b-instruct")), ROOT), "models")
    assert m["qwen-2.5-1.5b-instruct"].ok and not m["qwen-2.5-1.5b-instruct"].fix  # downloads on first use
    assert m["llama-3.2-1b-instruct"].ok  # gated, yet cached: no licence step


@pytest.mark.parametrize("memory, ok", [(15.0, False), (80.0, True)])
def test_too_little_gpu_memory_for_the_largest_model(monkeypatch, memory, ok):
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(P, "gpu", lambda: ("GPU", memory))
    prof = _profile(hardware="a100", runs=("llada-8b-instruct", "qwen-2.5-1.5b-instruct"), dtype="bfloat16")
    acc = next(c for c in P.preflight(prof, ROOT) if c.group == "accelerator")
    assert acc.ok is ok and "llada-8b-instruct" in acc.detail
    need = P.model_memory_gb("GSAI-ML/LLaDA-8B-Instruct", "bfloat16", None)
    assert 15.0 < need < 80.0 and P.model_memory_gb("GSAI-ML/LLaDA-8B-Instruct", "bfloat16", "8bit") < need / 1.9


def test_run_stops_before_anything_and_leaves_the_executed_book_alone(offline, monkeypatch, capsys):
    """`python -m srilib run --profile paper` on this machine: the table, exit 1, no notebook, no trace."""
    monkeypatch.setattr(execute, "run_profile", lambda *a, **k: pytest.fail("the runner started"))
    monkeypatch.setattr(build, "make_book", lambda *a, **k: pytest.fail("the book build started"))
    executed = ROOT / "book" / "executed"
    before = {p: p.read_bytes() for p in executed.glob("*.ipynb")} if executed.is_dir() else {}
    assert main(["run", "--profile", "paper"]) == 1
    assert main(["book", "--profile", "colab"]) == 1
    err = capsys.readouterr().err
    assert "check-profile" in err and "accelerator" in err  # the command that shows what is missing
    assert before == ({p: p.read_bytes() for p in executed.glob("*.ipynb")} if executed.is_dir() else {})
    assert main(["check-profile", "smoke"]) == 0
