"""SRI Guard on synthetic signals: detection, calibration, errors, persistence, online use."""
import numpy as np
import pytest
import torch

from srilib.guard import OnlineGuard, SRIGuard, guarded_generate
from srilib.signal import Anchors
from srilib.stats import auroc
from srilib.traces import TraceSet, TraceStore

T = 32


def harmless(n, rng, T=T):
    """Smooth curves near 1 (0.8-0.92, slow wobble) with small noise."""
    t = np.linspace(0, 1, T)
    base = rng.uniform(0.8, 0.92, (n, 1))
    amp = rng.uniform(0.02, 0.08, (n, 1))
    ph = rng.uniform(0, 2 * np.pi, (n, 1))
    return np.clip(base + amp * np.sin(2 * np.pi * t + ph) + rng.normal(0, 0.02, (n, T)), 0, 1)


def dips(n, rng):
    """Harmless curves that dip to ~0.2 somewhere in the middle and drift back (incomplete recovery)."""
    x = harmless(n, rng)
    c = rng.integers(6, 26, (n, 1))
    w = rng.uniform(2, 4, (n, 1))
    d = np.exp(-0.5 * ((np.arange(T) - c) / w) ** 2)
    return x - (x - 0.2) * d


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X, Xc = harmless(500, rng), harmless(200, rng)
    return SRIGuard(anchors_key="k1").fit(X, X_calib=Xc), rng


def test_detects_dips_and_calibrated_fpr(fitted):
    g, _ = fitted
    rng = np.random.default_rng(1)
    fresh, anom = harmless(3000, rng), dips(200, rng)
    s_h, s_a = g.score_samples(fresh), g.score_samples(anom)
    assert auroc(s_h, s_a, n_boot=100).value > 0.98
    fpr = g.predict(fresh).mean()
    assert 0.002 < fpr < 0.035  # the 99th percentile of held-out harmless error: ~1% false positives
    assert g.predict(anom).mean() > 0.9
    assert np.allclose(g.decision_function(anom), s_a - g.threshold_)
    assert g.loss_history_[-1] < g.loss_history_[0] / 5
    assert (g.n_train_, g.n_calib_, g.T_) == (500, 200, T)


def test_parameter_count_about_3k(fitted):
    g, _ = fitted
    # T->32->8->32->T: (32*32+32) + (32*8+8) + (8*32+32) + (32*32+32)
    assert g.n_params_ == 2664
    assert SRIGuard(hidden=(16, 4), epochs=1).fit(harmless(200, np.random.default_rng(0))).n_params_ == 1220


def test_deterministic_and_seeded_split():
    rng = np.random.default_rng(2)
    X, probe = harmless(150, rng), dips(5, rng)
    a = SRIGuard(epochs=40, seed=3).fit(X)
    b = SRIGuard(epochs=40, seed=3).fit(X)
    c = SRIGuard(epochs=40, seed=4).fit(X)
    assert np.array_equal(a.score_samples(probe), b.score_samples(probe)) and a.threshold_ == b.threshold_
    assert not np.array_equal(a.score_samples(probe), c.score_samples(probe))
    assert a.n_calib_ == round(0.15 * 150) and a.n_train_ == 150 - a.n_calib_


def test_numpy_scoring_matches_the_torch_network(fitted):
    g, rng = fitted
    X = np.concatenate([harmless(5, rng), dips(5, rng)]).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(X)
        want = ((g.model_(x) - x) ** 2).mean(1).numpy()
    np.testing.assert_allclose(g.score_samples(X), want, rtol=1e-4, atol=1e-7)
    part = X[:, :10]  # prefix: unseen steps are imputed with the training mean
    with torch.no_grad():
        x = g.model_.mean.repeat(len(X), 1)
        x[:, :10] = torch.from_numpy(part)
        want = ((g.model_(x)[:, :10] - x[:, :10]) ** 2).mean(1).numpy()
    np.testing.assert_allclose(g.score_prefix(part), want, rtol=1e-4, atol=1e-7)


def test_num_threads_restored():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        g = SRIGuard(epochs=2, num_threads=1).fit(harmless(200, np.random.default_rng(0)))
        assert torch.get_num_threads() == 2  # fit ran single-threaded, then restored the caller's setting
        g.score_samples(harmless(3, np.random.default_rng(1)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_error_paths(fitted):
    g, rng = fitted
    X = harmless(100, rng)
    with pytest.raises(ValueError, match="a 99th percentile needs at least 20 calibration.*more harmless prompts or X_calib"):
        SRIGuard(epochs=1).fit(X[:60])  # 15% of 60 = 9 < 20
    with pytest.raises(ValueError, match="X_calib"):
        SRIGuard(epochs=1).fit(X, X_calib=X[:5])
    bad = X.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[3\]"):
        SRIGuard(epochs=1).fit(bad)
    with pytest.raises(ValueError, match=r"2-D.*X\[None\]"):
        g.score_samples(X[0])
    with pytest.raises(ValueError, match="guard was fitted for T=32 steps, got T=16; regenerate with steps=32"):
        g.score_samples(X[:, :16])
    with pytest.raises(ValueError, match="these signals come from anchors k2, the guard was fitted against k1: "
                                         "refit or use the matching anchors"):
        g.predict(X, anchors_key="k2")
    assert g.predict(X, anchors_key="k1").shape == (100,)
    with pytest.raises(RuntimeError, match="not fitted"):
        SRIGuard().score_samples(X)
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\), got 99"):
        SRIGuard(quantile=99).fit(X)  # parameters are checked in fit (scikit-learn convention)


def test_scikit_learn_estimator_conventions(fitted):
    from sklearn.base import clone

    g0, rng = fitted
    X, Xc = harmless(80, rng), harmless(25, rng)
    params = {"hidden": (16, 4), "epochs": 40, "lr": 0.02, "weight_decay": 0.001, "quantile": 0.95,
              "val_fraction": 0.2, "min_calibration": 5, "seed": 3, "anchors_key": "k9", "num_threads": None}
    g = SRIGuard(**params)
    assert g.get_params() == params  # the constructor stores every parameter as given, and only that
    assert not [a for a in vars(g) if a.endswith("_")]  # no fitted attribute before fit
    assert SRIGuard(**g.get_params()).get_params() == params and clone(g).get_params() == params
    assert g.set_params(epochs=41, hidden=(12, 3)) is g and (g.epochs, g.hidden) == (41, (12, 3))
    with pytest.raises(ValueError, match="Invalid parameter 'width'"):
        g.set_params(width=3)
    # the parameters decide the fit: a clone fits the same guard, fitted attributes end in "_"
    g.fit(X, X_calib=Xc)
    c = clone(g).fit(X, X_calib=Xc)
    assert c.threshold_ == g.threshold_ and np.array_equal(c.score_samples(Xc), g.score_samples(Xc))
    assert (g.n_train_, g.n_calib_, g.T_, g.anchors_key_) == (80, 25, T, "k9")
    assert g.fit_config_["hidden"] == [12, 3] and g.n_params_ == sum(p.numel() for p in g.model_.parameters())
    assert not hasattr(clone(g), "threshold_") and clone(g0).anchors_key == "k1"
    # parameters changed after fit do not change what the fitted guard saves
    g.set_params(epochs=2)
    assert g.fit_config_["epochs"] == 41


@pytest.mark.parametrize("params, message", [
    ({"hidden": (8,)}, r"hidden must be two positive widths \(h1, bottleneck\), got \(8,\)"),
    ({"hidden": (8, 0)}, r"hidden must be two positive widths"),
    ({"quantile": 1.0}, r"quantile must be in \(0, 1\), got 1.0"),
    ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 1\), got 0.0"),
    ({"epochs": 0}, r"need epochs >= 1 and lr > 0, got epochs=0"),
    ({"lr": -1.0}, r"need epochs >= 1 and lr > 0, got epochs=300, lr=-1.0"),
])
def test_bad_parameter_is_rejected_at_fit(params, message):
    X = harmless(40, np.random.default_rng(1))
    g = SRIGuard(**params)  # constructing never fails: scikit-learn's clone / set_params rely on that
    assert g.get_params()[next(iter(params))] == next(iter(params.values()))
    with pytest.raises(ValueError, match=message):
        g.fit(X, X_calib=X[:25])
    assert not hasattr(g, "model_") and not hasattr(g, "threshold_")


def test_save_load_round_trip(fitted, tmp_path):
    g, rng = fitted
    X = np.r_[harmless(20, rng), dips(20, rng)]
    path = tmp_path / "sub" / "guard.pt"
    g.save(path)
    h = SRIGuard.load(path)
    assert np.array_equal(g.score_samples(X), h.score_samples(X))
    assert h.threshold_ == g.threshold_ and h.T_ == T and h.anchors_key == "k1" and h.n_params_ == g.n_params_
    assert h.anchors_key_ == "k1" and h.get_params() == {**g.get_params(), "hidden": (32, 8)}
    assert np.array_equal(h.prefix_thresholds_, g.prefix_thresholds_)
    assert [p.name for p in path.parent.iterdir()] == ["guard.pt"]  # atomic write leaves no temp file
    with pytest.raises(ValueError, match="anchors"):
        h.score_samples(X, anchors_key="other")
    with pytest.raises(RuntimeError, match="not fitted"):
        SRIGuard().save(tmp_path / "x.pt")


def test_score_prefix(fitted):
    g, rng = fitted
    X = harmless(50, rng)
    assert np.allclose(g.score_prefix(X), g.score_samples(X))  # full prefix = full score
    assert g.score_prefix(X[:, :10]).shape == (50,)
    assert g.prefix_thresholds_.shape == (T,) and g.prefix_thresholds_[-1] == g.threshold_
    with pytest.raises(ValueError, match="T=32"):
        g.score_prefix(np.ones((2, 40)))


# ---------------------------------------------------------------- online use, through real anchors
D = 12


def make_anchors():
    rng = np.random.default_rng(5)
    mu_h = rng.normal(size=(T, D))
    mu_r = mu_h + 0.6 * rng.normal(size=(T, D))  # cosine distance ~0.08-0.17, like the paper's anchors
    return Anchors(mu_harmless=mu_h, mu_harmful=mu_r, n_harmless=10, n_harmful=10)


def phis(anchors, n, rng, dip=False):
    """Activations near the harmless anchor; with ``dip``, near the refusal anchor for 8 middle steps."""
    phi = anchors.mu_harmless[None] + rng.normal(0, 0.5, (n, T, D))
    if dip:
        phi[:, 12:20] = anchors.mu_harmful[None, 12:20] + rng.normal(0, 0.5, (n, 8, D))
    return phi


@pytest.fixture(scope="module")
def anchored():
    an = make_anchors()
    rng = np.random.default_rng(6)
    g = SRIGuard(anchors_key=an).fit(an.signal(phis(an, 400, rng)))
    return an, g


def test_online_guard_matches_batch_scoring(anchored):
    an, g = anchored
    rng = np.random.default_rng(7)
    phi = np.r_[phis(an, 3, rng), phis(an, 3, rng, dip=True)]
    sigma = an.signal(phi)
    og = OnlineGuard(g, an)
    for i in range(len(phi)):
        og.reset()
        for t in range(T):
            s = og.update(phi[i, t])
            assert s == pytest.approx(sigma[i, t])
            if t == 5:
                with pytest.raises(RuntimeError, match="flag\\(early=True\\)"):
                    og.flag()
                assert isinstance(og.flag(early=True), bool)
        assert og.flag() == g.predict(sigma[i:i + 1])[0]
        assert og.score() == pytest.approx(g.score_samples(sigma[i:i + 1])[0])
        with pytest.raises(RuntimeError, match="reset"):
            og.update(phi[i, 0])
    # batched updates; dips are flagged early, once the dip is in the prefix
    og.reset()
    for t in range(20):
        og.update(phi[:, t])
    assert og.sigma.shape == (6, 20)
    assert og.flag(early=True)[3:].all()
    for t in range(20, T):
        og.update(phi[:, t])
    assert np.array_equal(og.flag(), g.predict(sigma))
    assert og.flag()[3:].all() and not og.flag()[:3].any()


def test_online_guard_rejects_other_anchors(anchored):
    an, g = anchored
    other = Anchors(mu_harmless=an.mu_harmful, mu_harmful=an.mu_harmless, n_harmless=1, n_harmful=1)
    with pytest.raises(ValueError, match="refit or use the matching anchors"):
        OnlineGuard(g, other)
    with pytest.raises(ValueError, match="come from anchors"):
        g.score_samples(other.signal(phis(other, 2, np.random.default_rng(0))), anchors_key=other)


class FakeLM:
    name, kind, fingerprint, dtype_name = "fake", "ar", "fake-fp", "float32"

    def validate_prompts(self, prompts):
        return [[ord(c) for c in p] for p in prompts]  # token ids, as LoadedModel.validate_prompts returns


class FakeSampler:
    """Emits activations near the harmless anchor, or with a refusal dip for prompts starting with 'JB'."""

    name, kind = "fake-sampler", "ar"

    def __init__(self, anchors):
        self.anchors = anchors

    def config(self):
        return {"name": self.name}

    def trace_batch(self, lm, prompts, layers):
        rng = np.random.default_rng(len(prompts))
        phi = np.stack([phis(self.anchors, 1, rng, dip=p.startswith("JB"))[0] for p in prompts])
        n = len(prompts)
        tok = np.zeros((n, T, T), np.int32)
        return TraceSet(prompts=list(prompts), tokens=tok, committed=np.ones((n, T, T), bool), predictions=tok,
                        pooled={"generated": phi[:, :, None, :].astype(np.float32)}, layers=[-1],
                        texts=["x"] * n, step_texts=[["x"] * T for _ in range(n)])


def test_guarded_generate(anchored, tmp_path):
    an, g = anchored
    prompts = ["hello", "JB one", "weather", "JB two"]
    traces, flags, scores, secs = guarded_generate(FakeLM(), prompts, FakeSampler(an), an, g,
                                                   store=TraceStore(tmp_path), progress=False, batch_size=2)
    assert len(traces) == 4 and flags.tolist() == [False, True, False, True]
    assert np.allclose(scores, g.score_samples(an.signal(traces)))
