import numpy as np
import pytest

from srilib.signal import AnchorError, Anchors, AnchorStepError, build_anchors, sri_signal, zone
from srilib.traces import TraceSet


def _loop_reference(phi, mh, mr, tau=0.1, eps=1e-8):
    out = np.zeros(phi.shape[:-1])
    for idx in np.ndindex(*phi.shape[:-1]):
        t = idx[-1]
        v = phi[idx]
        dh = 1 - v @ mh[t] / (np.linalg.norm(v) * np.linalg.norm(mh[t]))
        dr = 1 - v @ mr[t] / (np.linalg.norm(v) * np.linalg.norm(mr[t]))
        out[idx] = 1 / (1 + np.exp(-(np.log(dr + eps) - np.log(dh + eps)) / tau))
    return out


def test_matches_the_formula_elementwise():
    rng = np.random.default_rng(0)
    mh, mr = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    phi = rng.normal(size=(3, 5, 8))
    np.testing.assert_allclose(sri_signal(phi, mh, mr), _loop_reference(phi, mh, mr), rtol=1e-10)
    np.testing.assert_allclose(sri_signal(phi[0], mh, mr), _loop_reference(phi[0], mh, mr), rtol=1e-10)
    assert sri_signal(phi, mh, mr, tau=0.5).shape == (3, 5)


def test_direction_and_zones():
    mh = np.tile([1.0, 0.0], (4, 1))
    mr = np.tile([0.0, 1.0], (4, 1))
    near_harmless = np.tile([1.0, 0.1], (4, 1))
    near_refusal = np.tile([0.1, 1.0], (4, 1))
    assert (sri_signal(near_harmless, mh, mr) > 0.99).all()   # 1 = compliant
    assert (sri_signal(near_refusal, mh, mr) < 0.01).all()    # 0 = refusal-aligned
    assert zone(np.array([0.9, 0.4, 0.1])).tolist() == [2, 1, 0]


def test_zero_norm_phi_gives_half_and_bad_inputs_raise():
    mh, mr = np.eye(3)[:2], np.eye(3)[1:]
    assert np.allclose(sri_signal(np.zeros((2, 3)), mh, mr), 0.5)
    with pytest.raises(ValueError, match="steps must match"):
        sri_signal(np.ones((3, 3)), mh, mr)
    with pytest.raises(ValueError, match="NaN"):
        sri_signal(np.full((2, 3), np.nan), mh, mr)
    with pytest.raises(ValueError, match="zero-norm"):
        sri_signal(np.ones((2, 3)), np.zeros((2, 3)), mr)
    with pytest.raises(ValueError, match="tau"):
        sri_signal(np.ones((2, 3)), mh, mr, tau=0)


def _ts(phi, texts, key="k"):
    n, T, D = phi.shape
    z = np.zeros((n, T, T), dtype=np.int32)
    return TraceSet(prompts=[f"p{i}" for i in range(n)], tokens=z, committed=z.astype(bool), predictions=z,
                    pooled={"generated": phi[:, :, None, :].astype(np.float32)}, layers=[-1], texts=texts,
                    step_texts=[[t] * T for t in texts], meta={"key": key})


def test_anchors_filter_by_refusal():
    harmless = _ts(np.stack([np.ones((2, 2)), 5 * np.ones((2, 2))]), ["Sure! bread", "I'm sorry, no"])
    harmful = _ts(np.stack([np.full((2, 2), 2.0), np.full((2, 2), 7.0)]), ["I cannot help", "Here you go"])
    a = build_anchors(harmless, harmful)
    np.testing.assert_allclose(a.mu_harmless, np.ones((2, 2)))      # refused harmless prompt excluded
    np.testing.assert_allclose(a.mu_harmful, np.full((2, 2), 2.0))  # complied harmful prompt excluded
    assert (a.n_harmless, a.n_harmful, a.fallback) == (1, 1, None)
    assert a.signal(harmless).shape == (2, 2)


def test_anchor_fallback_is_explicit_and_recorded(tmp_path):
    harmless = _ts(np.ones((2, 3, 2)), ["ok", "fine"])
    harmful = _ts(np.ones((2, 3, 2)) * [1, 2], ["Here is how", "Sure"])  # the model refused nothing
    with pytest.raises(AnchorError, match="allow_unfiltered=True"):
        build_anchors(harmless, harmful)
    a = build_anchors(harmless, harmful, allow_unfiltered=True)
    assert a.fallback == "harmful" and "UNFILTERED" in a.label and a.n_harmful == 2
    a.save(tmp_path / "a.npz")
    b = Anchors.load(tmp_path / "a.npz")
    assert b.key == a.key and b.fallback == "harmful"
    np.testing.assert_array_equal(b.mu_harmful, a.mu_harmful)


def test_anchor_errors():
    h = _ts(np.ones((1, 3, 2)), ["ok"])
    r = _ts(np.ones((1, 4, 2)), ["sorry"])
    with pytest.raises(AnchorError, match="same steps"):
        build_anchors(h, r)
    with pytest.raises(AnchorError, match="at least one"):
        build_anchors(h.subset([]), r)


def test_empty_anchor_step_is_an_early_error_that_names_the_fix():
    phi = np.ones((2, 3, 2))
    phi[:, 1] = 0.0  # every refused generation pooled nothing at step 1 (traces of an older srilib)
    h = _ts(np.ones((2, 3, 2)), ["ok", "fine"])
    r = _ts(phi, ["I cannot help", "I'm sorry"])
    with pytest.raises(AnchorStepError, match=r"harmful anchor .* step\(s\) \[1\].*regenerate") as e:
        build_anchors(h, r)
    assert isinstance(e.value, AnchorError)
    phi[0, 1] = 1.0  # one generation with content is enough: the mean's direction is defined
    assert build_anchors(h, _ts(phi, ["I cannot help", "I'm sorry"])).T == 3


def test_experiment_does_not_retry_an_empty_step_as_an_unfiltered_fallback(monkeypatch, tmp_path, capsys):
    from srilib import experiment

    exp = experiment.Experiment(cache=str(tmp_path), progress=False)
    monkeypatch.setattr(exp, "traces", lambda spec, prompts, desc="": _ts(
        np.ones((1, 2, 2)) if "harmless" in desc else np.zeros((1, 2, 2)),
        ["Here you go"] if "harmless" in desc else ["I cannot help"]))
    monkeypatch.setattr(exp, "resolve", lambda spec: experiment.Run("m", "ar"))
    sets = experiment.PromptSets(["a"], ["b"], [], [], {})
    with pytest.raises(AnchorStepError):
        exp.anchors("m", sets)
    assert capsys.readouterr().out == ""  # no fallback announced: the step error is raised instead
