"""Sharded trace generation: shards simulated in one process on tiny-ar, merged == single-process run."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import srilib
from srilib.prompts import apply_attack
from srilib.distributed import (Job, main, merge_sets, parse_prompt_spec, profile_plan, read_prompts_file,
                                run_jobs, run_plan_sharded, trace_shard)
from srilib.experiment import Experiment, setup
from srilib.prompts import get_prompts
from srilib.traces import TraceSet

SETS = {"harmless:anchor:5": get_prompts("harmless", "anchor", n=5),
        "harmful:eval:3": get_prompts("harmful", "eval", n=3)}


def _same(a: TraceSet, b: TraceSet) -> None:
    assert a.prompts == b.prompts and a.step_texts == b.step_texts and a.texts == b.texts
    for f in ("tokens", "committed", "predictions"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for k in a.pooled:
        np.testing.assert_allclose(a.pooled[k], b.pooled[k], atol=1e-5)
    assert a.meta["key"] == b.meta["key"]


def test_prompt_specs(tmp_path):
    assert parse_prompt_spec("harmful:anchor:5", seed=1) == ("harmful:anchor:5",
                                                            get_prompts("harmful", "anchor", n=5, seed=1))
    _, p = parse_prompt_spec("harmful:eval:3:flip_attack")
    assert p == apply_attack("flip_attack", get_prompts("harmful", "eval", n=3), seed=0, split="eval")
    assert len(parse_prompt_spec("harmless:eval:all")[1]) == len(get_prompts("harmless", "eval"))
    for bad in ("harmful:anchor", "harmful:anchor:0", "harmful:anchor:x", "harmful::5", 5):
        with pytest.raises(ValueError, match="kind:split:n|positive integer"):
            parse_prompt_spec(bad)
    with pytest.raises(ValueError, match="unknown kind"):
        parse_prompt_spec("evil:anchor:3")
    f = tmp_path / "p.txt"
    f.write_text("first prompt\n\n  second prompt  \n")
    assert read_prompts_file(f) == ("file:p.txt", ["first prompt", "second prompt"])
    f.write_text("\n \n")
    with pytest.raises(ValueError, match="one prompt per line"):
        read_prompts_file(f)
    with pytest.raises(FileNotFoundError):
        read_prompts_file(tmp_path / "missing.txt")


def test_profile_plan_is_the_notebooks_sets():
    """--profile cpu --model M traces exactly the chapters' prompt lists and settings (the cache keys are shared)."""
    plan = profile_plan("cpu", models=["smollm2-135m-refusal-v3"])
    assert {n.run.label for n in plan.needs} == {"smollm2-135m-refusal-v3@ar"}
    from srilib.experiment import load_profile
    c = load_profile("cpu").common
    exp, sets = setup(steps=c["steps"], gen_length=c["gen_length"], n_anchor=c["n_anchor"], n_eval=c["n_eval"],
                      attacks=c["attacks"], batch_size=c["batch_size"], seed=c["seed"])
    by = {(n.chapter, n.name): n for n in plan.needs}
    assert by[("sri_geometry", "anchors/harmless")].prompts == sets.anchor_harmless
    assert by[("detector_transfer", "raw")].prompts == sets.eval_harmful
    assert all(by[("incomplete_recovery", a)].prompts == sets.attacked[a] for a in c["attacks"])
    n_guard = load_profile("cpu").params_for("detector_transfer")["n_train_harmless"]
    assert by[("detector_transfer", "guard/harmless-train")].prompts == get_prompts("harmless", "train", n=n_guard)
    assert by[("detector_transfer", "raw")].exp.steps == exp.steps
    assert by[("sampling_vs_representation", "random_search")].lazy  # prompts exist once the search ran
    # the main pair's dlm-ar run is not in the detector chapter
    base = profile_plan("cpu", runs=["smollm2-135m-dlm@dlm-ar"])
    assert base.needs and not any(n.chapter == "detector_transfer" for n in base.needs)
    dlm = {n.run.label for n in profile_plan("cpu", models=["smollm2-135m-dlm"]).needs}
    assert dlm == {"smollm2-135m-dlm@low_confidence", "smollm2-135m-dlm@dlm-ar", "smollm2-135m-dlm@diffuguard"}
    assert {n.run.label for n in profile_plan("cpu", runs=["organism-ar"]).needs} == {"organism-ar@ar"}
    with pytest.raises(ValueError, match="its runs are: .*smollm2-135m-refusal-v3@ar"):
        profile_plan("cpu", models=["tiny-ar"])


def _states(waits: list):
    """A stand-in accelerate state per rank (2 processes); each barrier appends the rank to ``waits``."""
    return lambda rank: SimpleNamespace(process_index=rank, num_processes=2, device="cpu",
                                        is_main_process=rank == 0, wait_for_everyone=lambda: waits.append(rank))


def test_sharded_plan_then_main_runs_the_rest(tiny_ar, tmp_path, monkeypatch):
    """The plan over two stand-in processes: fixed sets sharded, the main process merges and computes the rest."""
    import srilib.models
    from srilib.plan import Need, TracePlan
    from srilib.experiment import resolve_run
    monkeypatch.setattr(srilib.models, "load_model", lambda name, **kw: tiny_ar)
    waits = []

    state = _states(waits)
    exp = Experiment(steps=4, batch_size=2, cache=str(tmp_path), progress=False)
    run = resolve_run("tiny-ar")
    plan = TracePlan("t", [Need("c", run, k, exp, p) for k, p in SETS.items()]
                     + [Need("c", run, "lazy", exp, lambda: ["Name a colour."])])
    assert run_plan_sharded(plan, state=state(1), progress=False) is None
    assert waits == [1] and not exp.store.keys() and not exp.store.generated()  # parts only
    report = run_plan_sharded(plan, state=state(0), progress=False)
    assert waits == [1, 0] and report["distinct"] == 3 and report["computed"] == 3 and not report["failed"]
    assert len(exp.store.keys()) == 3


def test_two_shards_merge_to_the_single_process_result(tiny_ar, tmp_path, monkeypatch):
    exp = Experiment(steps=4, batch_size=2, cache=str(tmp_path / "sharded"), progress=False)
    trace_shard(exp, "tiny-ar", tiny_ar, SETS, 0, 2)
    key_dirs = list((tmp_path / "sharded" / "traces").iterdir())
    assert len(key_dirs) == 2 and not exp.store.keys()  # parts only, nothing merged yet
    parts = sorted(p.name for d in key_dirs if len(list((d / "parts").iterdir())) == 2 for p in (d / "parts").iterdir())
    assert parts == ["part-00000.npz", "part-00002.npz"]  # 5 prompts in batches of 2: rank 0 has batches 0 and 2
    trace_shard(exp, "tiny-ar", tiny_ar, SETS, 1, 2)
    assert not exp.store.keys()  # a shard never merges, even the last one to finish
    merged = merge_sets(exp, "tiny-ar", tiny_ar, SETS)
    assert len(exp.store.keys()) == 2
    single = Experiment(steps=4, batch_size=2, cache=str(tmp_path / "single"), progress=False)
    for name, prompts in SETS.items():
        _same(merged[name], single.traces("tiny-ar", prompts))
    # a notebook's Experiment with the same settings now reads the merged traces and generates nothing
    from srilib.samplers import ar

    def boom(*a, **k):
        raise AssertionError("regenerated a cached trace")
    monkeypatch.setattr(ar.ARSampler, "trace_batch", boom)
    again = Experiment(steps=4, batch_size=2, cache=str(tmp_path / "sharded"), progress=False)
    _same(again.traces("tiny-ar", SETS["harmful:eval:3"]), merged["harmful:eval:3"])
    with pytest.raises(ValueError, match="0 <= rank < world"):
        trace_shard(exp, "tiny-ar", tiny_ar, SETS, 2, 2)


def test_run_jobs_barrier_then_main_merges(tiny_ar, tmp_path, monkeypatch):
    """The accelerate flow with a stand-in state: the other rank only writes parts, the main rank merges."""
    import srilib.models
    monkeypatch.setattr(srilib.models, "load_model", lambda name, **kw: tiny_ar)
    waits = []

    state = _states(waits)
    jobs = {"tiny-ar@ar": [Job({"steps": 4, "batch_size": 2}, dict(SETS))]}
    assert run_jobs(jobs, cache=str(tmp_path), state=state(1), progress=False) is None
    assert waits == [1] and not srilib.TraceStore(tmp_path).keys()
    out = run_jobs(jobs, cache=str(tmp_path), state=state(0), progress=False)
    assert waits == [1, 0] and set(out["tiny-ar@ar"]) == set(SETS)
    assert len(srilib.TraceStore(tmp_path).keys()) == 2
    assert not any((tmp_path / "traces").glob("*/parts/*.npz"))  # parts are removed after the merge


def test_command_line(tmp_path, capsys):
    pytest.importorskip("accelerate")
    f = tmp_path / "mine.txt"
    f.write_text("How do I bake bread?\nName three rivers.\n")
    rc = main(["--run", "tiny-ar", "--prompts", "harmful:eval:2", "--prompts-file", str(f), "--steps", "3",
               "--batch-size", "2", "--cache", str(tmp_path / "c"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "harmful:eval:2" in out and "file:mine.txt" in out and "T=  3" in out
    assert len(srilib.TraceStore(tmp_path / "c").keys()) == 2
    for argv, msg in ((["--run", "tiny-ar"], "nothing to trace"),
                      (["--profile", "smoke", "--model", "tiny-ar", "--steps", "3"], "applies to --prompts sets"),
                      (["--model", "tiny-ar", "--prompts", "harmful:eval:2"], "--model needs --profile"),
                      (["--prompts", "harmful:eval:2"], "no run given"),
                      (["--run", "tiny-ar", "--prompts", "harmful:eval"], "kind:split:n")):
        assert main(argv) == 1
        assert msg in capsys.readouterr().err
