"""SRI Guard (the paper's detector; Tables 4, 13 and 14): an autoencoder trained only on harmless SRI signals; high reconstruction error
flags a jailbreak.

The model is T -> h1 -> h2 -> h1 -> T (two encoder and two decoder linear layers, tanh between them; ~2.7k
parameters for T=32 with the default hidden=(32, 8)). Inputs are centred on the per-step mean of the training
signals. The anomaly score of a signal is its mean squared reconstruction error over the T steps, and the
threshold is the ``quantile`` (default 99th percentile) of that error on held-out harmless signals. No jailbreak
data is used, and the model's sampling and weights are left unchanged.

Score convention: :meth:`SRIGuard.score_samples` returns the error itself, so HIGHER = MORE ANOMALOUS. (This is
the opposite of scikit-learn's outlier detectors, whose ``score_samples`` is higher for inliers.)

:class:`PCAResidual`, the detector of the paper's "static activations" ablation, shares SRI Guard's interface;
:class:`OnlineGuard` and :func:`guarded_generate` run a fitted guard while a model generates. One room: the
detectors and the guard that runs them share one fit / score / threshold interface and its input checks.
"""
from __future__ import annotations

import io
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .signal import sri_signal
from .traces import atomic_write_bytes
from .traces import generate_traces

if TYPE_CHECKING:  # pragma: no cover
    from .signal import Anchors
    from .traces import TraceSet

GUARD_FORMAT = 1


@contextmanager
def _threads(n: int | None):
    """Run with ``n`` intra-op torch threads and restore the previous setting afterwards (None: unchanged).

    The network is tiny, so one thread is fastest and avoids oversubscription stalls on busy machines.
    """
    prev = torch.get_num_threads()
    if n is not None and n != prev:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None and n != prev:
            torch.set_num_threads(prev)


def _key_of(anchors_key) -> str | None:
    """An anchors key given as a string or as an :class:`srilib.signal.Anchors` (its ``.key``)."""
    if anchors_key is None:
        return None
    return str(getattr(anchors_key, "key", anchors_key))


class _AE(nn.Module):
    def __init__(self, T: int, hidden: tuple[int, int]):
        super().__init__()
        h1, h2 = hidden
        self.encoder = nn.Sequential(nn.Linear(T, h1), nn.Tanh(), nn.Linear(h1, h2), nn.Tanh())
        self.decoder = nn.Sequential(nn.Linear(h2, h1), nn.Tanh(), nn.Linear(h1, T))
        self.register_buffer("mean", torch.zeros(T))

    def reset(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear init (uniform +-1/sqrt(fan_in)), drawn from ``generator``."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    b = 1.0 / m.in_features ** 0.5
                    m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * b - b)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 2 * b - b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x - self.mean)) + self.mean


class SRIGuard(BaseEstimator):
    """Autoencoder anomaly detector over T-step SRI signals, a scikit-learn estimator (``get_params`` /
    ``set_params`` / ``clone`` work; the constructor only stores the parameters, which ``fit`` checks).

    Parameters
    ----------
    hidden : (h1, h2)
        Widths of the outer hidden layer and the bottleneck.
    epochs, lr, weight_decay : training with full-batch Adam on the mean squared error.
    quantile : float
        Threshold = this quantile of the error on held-out harmless signals (paper: 0.99, i.e. ~1% false
        positives on harmless prompts from the same distribution).
    val_fraction : float
        Share of ``X_harmless`` held out for calibration when no ``X_calib`` is given (seeded split).
    min_calibration : int
        Fewest calibration signals accepted (a 99th percentile of fewer is essentially the maximum).
    seed : int
        Seeds the weight init and the calibration split (training is full-batch, hence deterministic).
    anchors_key : str or Anchors, optional
        The anchors the signals were computed against; when set, scoring signals from other anchors fails.
    num_threads : int or None
        Torch intra-op threads used inside fit, restored afterwards (the global setting is left as it was).
        Default 1: fastest for this tiny network; None leaves torch's setting. Scoring runs in numpy.

    Attributes (after fit)
    ----------------------
    T_, threshold_, prefix_thresholds_ ([T], see :meth:`score_prefix`), anchors_key_ (the key scoring checks:
    ``fit``'s ``anchors_key`` or else the parameter's, as a string), fit_config_ (the checked parameters the fit
    used, which :meth:`save` writes), model_, n_params_, n_train_, n_calib_, loss_history_, calib_errors_,
    fit_seconds_.
    """

    def __init__(self, hidden: tuple[int, int] = (32, 8), epochs: int = 300, lr: float = 1e-2,
                 weight_decay: float = 0.0, quantile: float = 0.99, val_fraction: float = 0.15,
                 min_calibration: int = 20, seed: int = 0, anchors_key=None, num_threads: int | None = 1):
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.quantile = quantile
        self.val_fraction = val_fraction
        self.min_calibration = min_calibration
        self.seed = seed
        self.anchors_key = anchors_key
        self.num_threads = num_threads

    # ---------------------------------------------------------------- validation
    def _config(self) -> dict:
        """The parameters checked and in their stored types (what ``fit`` uses and ``save`` writes)."""
        try:
            hidden = tuple(int(h) for h in self.hidden)
        except (TypeError, ValueError):
            hidden = ()
        if len(hidden) != 2 or min(hidden) < 1:
            raise ValueError(f"hidden must be two positive widths (h1, bottleneck), got {self.hidden}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1 and lr > 0, got epochs={self.epochs}, lr={self.lr}")
        return {"hidden": list(hidden), "epochs": int(self.epochs), "lr": float(self.lr),
                "weight_decay": float(self.weight_decay), "quantile": float(self.quantile),
                "val_fraction": float(self.val_fraction), "min_calibration": int(self.min_calibration),
                "seed": int(self.seed), "num_threads": self.num_threads}

    @staticmethod
    def _as_signals(X, name: str = "X") -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            hint = f" (one signal: pass {name}[None])" if X.ndim == 1 else ""
            raise ValueError(f"{name} must be a 2-D array [N signals, T steps], got shape {X.shape}{hint}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {X.shape})")
        bad = ~np.isfinite(X).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(f"{name} contains NaN or inf in {len(rows)} signal(s) (rows {rows[:5].tolist()}...); "
                             "drop those generations or regenerate their traces")
        return X

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise RuntimeError("this SRIGuard is not fitted; call fit(X_harmless) or SRIGuard.load(path) first")

    def _check_input(self, X, anchors_key=None, prefix: bool = False) -> np.ndarray:
        self._check_fitted()
        X = self._as_signals(X)
        key = _key_of(anchors_key)
        if key is not None and self.anchors_key_ is not None and key != self.anchors_key_:
            raise ValueError(f"these signals come from anchors {key}, the guard was fitted against "
                             f"{self.anchors_key_}: refit or use the matching anchors")
        if (X.shape[1] > self.T_) if prefix else (X.shape[1] != self.T_):
            raise ValueError(f"guard was fitted for T={self.T_} steps, got T={X.shape[1]}; "
                             f"regenerate with steps={self.T_}")
        return X

    # ---------------------------------------------------------------- fit
    def fit(self, X_harmless, X_calib=None, anchors_key=None) -> "SRIGuard":
        """Train on harmless signals only and calibrate the threshold on held-out harmless signals.

        ``X_calib`` (harmless, not used for training) is the calibration set if given; otherwise a seeded
        ``val_fraction`` of ``X_harmless`` is held out. ``anchors_key`` (the anchors of these signals) takes the
        place of the ``anchors_key`` parameter for this fit. Raises ValueError on a bad parameter or bad data.
        """
        cfg = self._config()
        with _threads(self.num_threads):
            return self._fit(cfg, X_harmless, X_calib, anchors_key)

    def _fit(self, cfg: dict, X_harmless, X_calib, anchors_key) -> "SRIGuard":
        t0 = time.perf_counter()
        X = self._as_signals(X_harmless, "X_harmless")
        key = _key_of(self.anchors_key if anchors_key is None else anchors_key)
        q, seed, min_cal = cfg["quantile"], cfg["seed"], cfg["min_calibration"]
        rng = np.random.default_rng(seed)
        if X_calib is None:
            n_cal = int(round(cfg["val_fraction"] * len(X)))
            perm = rng.permutation(len(X))
            Xc, Xt = X[perm[:n_cal]], X[perm[n_cal:]]
            where = f"val_fraction={cfg['val_fraction']} of {len(X)} harmless signals"
        else:
            Xc, Xt = self._as_signals(X_calib, "X_calib"), X
            if Xc.shape[1] != X.shape[1]:
                raise ValueError(f"X_calib has T={Xc.shape[1]} steps but X_harmless has T={X.shape[1]}")
            where = "X_calib"
        if len(Xc) < min_cal:
            raise ValueError(
                f"a {q * 100:g}th percentile needs at least {min_cal} calibration signals; got "
                f"{len(Xc)} ({where}); pass more harmless prompts or X_calib")
        if len(Xt) < 2:
            raise ValueError(f"need at least 2 training signals after holding out calibration, got {len(Xt)}")
        T = X.shape[1]
        gen = torch.Generator().manual_seed(seed)
        model = _AE(T, tuple(cfg["hidden"]))
        model.reset(gen)
        xt = torch.from_numpy(Xt)
        model.mean.copy_(xt.mean(0))
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        losses = []
        model.train()
        for _ in range(cfg["epochs"]):
            opt.zero_grad()
            loss = ((model(xt) - xt) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        model.eval()
        self.model_, self.T_, self._np_, self.anchors_key_, self.fit_config_ = model, T, None, key, cfg
        self.loss_history_ = np.array(losses)
        self.n_train_, self.n_calib_ = len(Xt), len(Xc)
        self.n_params_ = sum(p.numel() for p in model.parameters())
        self.calib_errors_ = self._errors(Xc)
        self.threshold_ = float(np.quantile(self.calib_errors_, q))
        self.prefix_thresholds_ = np.array([np.quantile(self._errors(Xc[:, :k]), q) for k in range(1, T + 1)])
        self.prefix_thresholds_[-1] = self.threshold_
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    # ---------------------------------------------------------------- scoring
    def _numpy_weights(self) -> tuple:
        """(mean, [(W^T, b), ...]) of the fitted network as float32 numpy arrays, cached: scoring runs in numpy.

        A forward pass of this ~2.7k-parameter network takes microseconds in numpy; in torch the per-call
        dispatch (and switching the intra-op thread count) costs far more than the arithmetic, which matters for
        the guard's overhead budget (< 0.1% of generation time).
        """
        if getattr(self, "_np_", None) is None:
            lin = [m for m in self.model_.modules() if isinstance(m, nn.Linear)]
            self._np_ = (self.model_.mean.detach().numpy().astype(np.float32),
                         [(m.weight.detach().numpy().T.astype(np.float32).copy(),
                           m.bias.detach().numpy().astype(np.float32)) for m in lin])
        return self._np_

    def _errors(self, X: np.ndarray) -> np.ndarray:
        """Mean squared error over the observed steps; steps beyond X's length are imputed with the mean."""
        k = X.shape[1]
        mean, layers = self._numpy_weights()
        h = np.zeros((len(X), len(mean)), dtype=np.float32)  # centred input: unseen steps sit at the mean
        h[:, :k] = X - mean[:k]
        x0 = h[:, :k].copy()
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                np.tanh(h, out=h)
        return ((h[:, :k] - x0) ** 2).mean(1).astype(np.float64)

    def score_samples(self, X, anchors_key=None) -> np.ndarray:
        """Anomaly score [N] = mean squared reconstruction error (HIGHER = more anomalous; opposite of sklearn)."""
        return self._errors(self._check_input(X, anchors_key))

    def decision_function(self, X, anchors_key=None) -> np.ndarray:
        """score - threshold: > 0 means flagged."""
        return self.score_samples(X, anchors_key) - self.threshold_

    def predict(self, X, anchors_key=None) -> np.ndarray:
        """Bool [N]: True = flagged as a jailbreak (error above the calibrated threshold)."""
        return self.decision_function(X, anchors_key) > 0

    def score_prefix(self, X_prefix, anchors_key=None) -> np.ndarray:
        """Error of partial signals [N, k], k <= T: the unseen steps k..T-1 are set to the training mean (zero
        in the centred space), the error is averaged over the k observed steps. Compare with
        ``prefix_thresholds_[k-1]``, the same quantile of the same prefix error on the calibration signals.
        """
        return self._errors(self._check_input(X_prefix, anchors_key, prefix=True))

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Weights, config, threshold(s), T and anchors key in one torch file (plain dict), written atomically."""
        self._check_fitted()
        state = {"format": GUARD_FORMAT, "config": self.fit_config_, "T": self.T_, "anchors_key": self.anchors_key_,
                 "threshold": self.threshold_, "prefix_thresholds": torch.from_numpy(self.prefix_thresholds_),
                 "calib_errors": torch.from_numpy(self.calib_errors_), "n_train": self.n_train_,
                 "n_calib": self.n_calib_, "state_dict": self.model_.state_dict()}
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "SRIGuard":
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != GUARD_FORMAT:
            raise ValueError(f"{path} is not an SRIGuard file of format {GUARD_FORMAT}; refit and save again")
        cfg = state["config"]
        g = cls(hidden=tuple(cfg["hidden"]), epochs=cfg["epochs"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                quantile=cfg["quantile"], val_fraction=cfg["val_fraction"], min_calibration=cfg["min_calibration"],
                seed=cfg["seed"], anchors_key=state["anchors_key"], num_threads=cfg.get("num_threads", 1))
        g.fit_config_, g.anchors_key_, g._np_ = g._config(), state["anchors_key"], None
        g.T_ = int(state["T"])
        g.model_ = _AE(g.T_, g.hidden)
        g.model_.load_state_dict(state["state_dict"])
        g.model_.eval()
        g.threshold_ = float(state["threshold"])
        g.prefix_thresholds_ = state["prefix_thresholds"].numpy()
        g.calib_errors_ = state["calib_errors"].numpy()
        g.n_train_, g.n_calib_ = int(state["n_train"]), int(state["n_calib"])
        g.n_params_ = sum(p.numel() for p in g.model_.parameters())
        return g

    def __repr__(self) -> str:
        fitted = f", T={self.T_}, threshold={self.threshold_:.3g}" if getattr(self, "model_", None) is not None else ""
        hidden = tuple(self.hidden) if isinstance(self.hidden, list) else self.hidden
        return f"SRIGuard(hidden={hidden}, quantile={self.quantile}{fitted})"


def finite_rows(X, name: str) -> np.ndarray:
    """``X`` as a float64 [N, features] array; a clear error for another shape or for NaN / inf rows."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [N, features], got shape {X.shape}")
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise ValueError(f"{name} contains NaN or inf in {len(bad)} row(s) (first rows {bad[:5].tolist()}); "
                         "drop those generations or regenerate their traces")
    return X


class PCAResidual(BaseEstimator):
    """Anomaly score of vectors (the "static activations" ablation): mean squared residual after projecting the
    centred vector on the top-``k`` principal directions of harmless training vectors (scikit-learn's
    :class:`~sklearn.decomposition.PCA`, exact SVD). Higher = more anomalous; threshold = ``quantile`` of the
    calibration scores. :class:`srilib.guard.SRIGuard`'s interface (``fit(X_harmless, X_calib=None,
    anchors_key=None)``, without ``X_calib`` a seeded ``val_fraction`` calibrates; ``score_samples`` /
    ``predict(X, anchors_key=None)``, the key ignored: activations are not made against anchors), parameters
    checked in ``fit``. Fitted: ``pca_``, ``mean_``, ``components_`` [k, D] (1 <= k <= n - 1, D), ``threshold_``.
    """

    def __init__(self, k: int = 8, quantile: float = 0.99, val_fraction: float = 0.15, seed: int = 0):
        self.k = k
        self.quantile = quantile
        self.val_fraction = val_fraction
        self.seed = seed

    def fit(self, X_harmless, X_calib=None, anchors_key=None) -> "PCAResidual":
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k (principal components) must be a positive integer, got {self.k!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        X = finite_rows(X_harmless, "X_harmless")
        if X_calib is None:
            if not 0.0 < self.val_fraction < 1.0:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
            n_cal = int(round(self.val_fraction * len(X)))
            perm = np.random.default_rng(int(self.seed)).permutation(len(X))
            X, X_calib = X[perm[n_cal:]], X[perm[:n_cal]]
        X_calib = finite_rows(X_calib, "X_calib")
        if len(X) < 2:
            raise ValueError(f"need at least 2 training vectors after holding out calibration, got {len(X)}")
        n_components = min(max(1, min(int(self.k), len(X) - 1)), X.shape[1])
        self.pca_ = PCA(n_components=n_components, svd_solver="full").fit(X)
        self.mean_, self.components_ = self.pca_.mean_, self.pca_.components_
        self.threshold_ = float(np.quantile(self.score_samples(X_calib), self.quantile))
        return self

    def score_samples(self, X, anchors_key=None) -> np.ndarray:
        """Anomaly score [N]: mean squared residual of the centred vectors off the principal subspace."""
        check_is_fitted(self, "components_")
        Z = finite_rows(X, "X") - self.mean_
        return ((Z - (Z @ self.components_.T) @ self.components_) ** 2).mean(1)

    def decision_function(self, X, anchors_key=None) -> np.ndarray:
        """score - threshold: > 0 means flagged."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X, anchors_key=None) -> np.ndarray:
        """Bool [N]: True = flagged (score above the calibrated threshold)."""
        return self.decision_function(X) > 0


class OnlineGuard:
    """Score a signal step by step as a generation runs.

    ``update(phi_t)`` turns the pooled hidden state of the current step ([D], or [B, D] for a batch) into
    sigma_t against the anchors of that step. ``flag()`` is the guard's decision on the complete signal and
    raises before all T steps have arrived; ``flag(early=True)`` checks the prefix seen so far against the
    calibrated per-prefix threshold (:meth:`SRIGuard.score_prefix`). Each prefix check has ~1 - quantile false
    positives on its own; flagging at *any* of several steps has more.
    """

    def __init__(self, guard: SRIGuard, anchors: "Anchors"):
        guard._check_fitted()
        if guard.anchors_key_ is not None and anchors.key != guard.anchors_key_:
            raise ValueError(f"these signals come from anchors {anchors.key}, the guard was fitted against "
                             f"{guard.anchors_key_}: refit or use the matching anchors")
        if anchors.T != guard.T_:
            raise ValueError(f"guard was fitted for T={guard.T_} steps, anchors have T={anchors.T}; "
                             f"use anchors and traces with steps={guard.T_}")
        self.guard, self.anchors = guard, anchors
        self.reset()

    def reset(self) -> None:
        self._sigma: list[np.ndarray] = []
        self._single = True

    @property
    def t(self) -> int:
        """Number of steps seen."""
        return len(self._sigma)

    @property
    def sigma(self) -> np.ndarray:
        """Signal so far: [t] (or [B, t] for batched updates)."""
        if not self._sigma:
            return np.zeros(0)
        s = np.stack(self._sigma, axis=-1)
        return s[0] if self._single else s

    def update(self, phi_t) -> float | np.ndarray:
        """Add step t's pooled activation; returns sigma_t."""
        t = len(self._sigma)
        if t >= self.guard.T_:
            raise RuntimeError(f"already received all T={self.guard.T_} steps; call reset() for a new generation")
        phi = np.asarray(phi_t, dtype=np.float64)
        if phi.ndim not in (1, 2):
            raise ValueError(f"phi_t must be [D] or [B, D], got shape {phi.shape}")
        if t == 0:
            self._single = phi.ndim == 1
        elif self._single != (phi.ndim == 1):
            raise ValueError("mixing single and batched updates; call reset() first")
        s = sri_signal(phi.reshape(-1, 1, phi.shape[-1]), self.anchors.mu_harmless[t:t + 1],
                       self.anchors.mu_harmful[t:t + 1])[:, 0]
        self._sigma.append(s)
        return float(s[0]) if self._single else s

    def score(self) -> float | np.ndarray:
        """Error of the signal so far (full score once all T steps are in)."""
        if not self._sigma:
            raise RuntimeError("no steps yet; call update(phi_t) first")
        e = self.guard._errors(np.stack(self._sigma, axis=-1))
        return float(e[0]) if self._single else e

    def flag(self, early: bool = False) -> bool | np.ndarray:
        """True = jailbreak. Complete signals only, unless ``early`` (prefix check, see class docstring)."""
        t = self.t
        if t < self.guard.T_ and not early:
            raise RuntimeError(f"only {t} of T={self.guard.T_} steps seen; wait for the end or call "
                               "flag(early=True) for the per-prefix check")
        if t == 0:
            raise RuntimeError("no steps yet; call update(phi_t) first")
        f = np.asarray(self.score()) > self.guard.prefix_thresholds_[t - 1]
        return bool(f) if self._single else f


def guarded_generate(lm, prompts: Sequence[str], sampler, anchors: "Anchors", guard: SRIGuard, **kw
                     ) -> tuple["TraceSet", np.ndarray, np.ndarray, float]:
    """Generate (through :func:`srilib.traces.generate_traces`, ``**kw`` passed on) and run the guard.

    Returns (traces, flags [N] bool, scores [N], guard_seconds). ``guard_seconds`` is the wall time the guard
    adds on top of generation: computing the SRI signal from the pooled activations plus scoring. (Generation
    time itself is not returned: traces may come from the cache; time the generation yourself for overhead.)
    """
    traces = generate_traces(lm, prompts, sampler, **kw)
    if traces is None:
        raise RuntimeError("generate_traces returned None (a shard run with other shards pending); call "
                           "guarded_generate without shard=... once every shard has finished")
    t0 = time.perf_counter()
    sigma = anchors.signal(traces)
    scores = guard.score_samples(sigma, anchors_key=anchors)
    flags = scores > guard.threshold_
    return traces, flags, scores, time.perf_counter() - t0


__all__ = ["SRIGuard", "OnlineGuard", "guarded_generate"]
