"""A diffusion LM that commits end-of-text at the tail of the canvas first (what LLaDA does by default) runs the
whole chain: traces -> anchors -> signal -> metrics -> guard -> every chapter's computation.

The double (``tiny-dlm-end-first``) biases end-of-text at the last 8 canvas positions, so with a 16-token canvas
and 4 tokens committed per step its first two steps commit nothing a reader sees. Before the `generated`
pooling had a defined value for such steps, every anchor built from these traces had zero-norm steps and the
first chapter crashed (the fresh-machine failure of `make book`).
"""
from __future__ import annotations

import numpy as np
import pytest

from srilib.chapters.defenses import run_defenses
from srilib.chapters.detector import GuardConfig, guard_prompts, run_detector
from srilib.chapters.geometry import run_geometry
from srilib.chapters.recovery import run_recoveries
from srilib.chapters.sampling import evaluate_runs
from srilib.chapters.sampling_compare import sampler_comparisons
from srilib.experiment import Experiment, PromptSets
from srilib.judges import HeuristicJudge
from srilib.signal import build_anchors

RUN = "tiny-dlm-end-first@low_confidence"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    exp = Experiment(steps=4, gen_length=16, batch_size=8, cache=str(tmp_path_factory.mktemp("cache")),
                     progress=False)
    sets = PromptSets.build(n_anchor=4, n_eval=4, attacks=["refusal_suppression", "flip_attack"], seed=0)
    yield exp, sets
    torch.set_num_threads(n)


def test_first_steps_have_nothing_generated_and_fall_back_to_canvas(chain):
    exp, sets = chain
    ts = exp.traces(RUN, sets.anchor_harmful, "anchors/harmful")
    assert ts.empty is not None and ts.empty.shape == (len(ts), ts.T)
    assert ts.empty[:, :2].all()  # the double's tail is end-of-text: nothing visible for two steps
    assert all(t == "" for row in ts.step_texts for t in row[:2])
    gen, canvas = ts.phi("generated"), ts.phi("canvas")
    assert np.allclose(gen[ts.empty], canvas[ts.empty])  # the documented fallback
    assert (np.linalg.norm(gen, axis=-1) > 0).all()  # never a zero vector
    assert ts.meta["empty_pooling"] == "canvas" and ts.meta["empty_share"] == pytest.approx(ts.empty.mean())


def test_whole_chain_runs(chain):
    exp, sets = chain
    h = exp.traces(RUN, sets.anchor_harmless, "anchors/harmless")
    r = exp.traces(RUN, sets.anchor_harmful, "anchors/harmful")
    anchors = build_anchors(h, r, allow_unfiltered=True)  # a random model refuses nothing
    sig = anchors.signal(exp.traces(RUN, sets.eval_harmless, "harmless"))
    assert sig.shape == (4, 4) and np.isfinite(sig).all()

    geo = run_geometry(exp, RUN, sets)
    assert all(np.isfinite(s).all() for s in geo.by_set.values())
    judge = HeuristicJudge()
    runs = [RUN, "tiny-dlm-end-first@dlm-ar"]
    evs = evaluate_runs(exp, runs, sets, judge)
    assert [e.run for e in evs] == runs
    assert sampler_comparisons(evs)  # low_confidence vs AR decoding of the same weights
    (rec, _) = run_recoveries(exp, runs, sets, judge)
    assert rec.revision is not None and np.isfinite(rec.sigma).all()
    cfg = GuardConfig(calib_fraction=0.25, min_calibration=3, epochs=20)
    train = guard_prompts(12)
    det = run_detector(exp, RUN, sets, train, seeds=[0], cfg=cfg, n_boot=0)
    assert np.isfinite(det.signals["train"]).all()
    rep = run_defenses(exp, RUN, sets, det, train, judge, self_examine=False, dlm_ppl_scorer=None, n_timing=2,
                       repeats=1, guard_model=None)
    assert rep.row("SRI Guard")["status"] == "run"


def test_geometry_reports_the_share_of_empty_steps(chain):
    exp, sets = chain
    geo = run_geometry(exp, RUN, sets)
    row = geo.row()
    ev = [exp.traces(RUN, p, n) for n, (p, _) in sets.evaluation().items()]
    expected = np.concatenate([t.empty for t in ev]).mean()
    assert row["nothing generated yet (evaluation, share of prompt×step)"] == pytest.approx(expected)
    assert expected >= 0.5  # two of four steps at least
    ar = run_geometry(exp, "tiny-ar", sets).row()
    assert ar["nothing generated yet (anchors, share of prompt×step)"] == 0.0


def test_smoke_profile_runs_an_end_first_diffusion_model_in_every_chapter():
    from srilib.experiment import resolve_run
    from srilib.models import REGISTRY, list_models
    from srilib.experiment import load_profile

    list_models()
    prof = load_profile("smoke")
    for nb in prof.notebooks:
        models = {resolve_run(r).model for r in prof.params_for(nb)["runs"]}
        assert any(REGISTRY[m].options.get("end_first_tail") for m in models if m in REGISTRY), nb
