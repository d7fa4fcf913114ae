"""SRI geometry: group trajectories and a 2-D LDA projection of SRI vectors with a separability score."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .judges import is_refusal

GROUPS = ("harmless", "harmful", "refusal")  # paper Figure 13: complied-harmless, complied-harmful, refused


def outcome_groups(texts, is_harmful_prompt, refusal_fn=is_refusal) -> np.ndarray:
    """Label each generation by outcome: 'refusal' if its text refuses, else 'harmful' for harmful (raw or
    attacked) prompts and 'harmless' for harmless ones."""
    harmful = np.broadcast_to(np.asarray(is_harmful_prompt, dtype=bool), (len(texts),))
    return np.array(["refusal" if refusal_fn(t) else ("harmful" if h else "harmless")
                     for t, h in zip(texts, harmful)], dtype=object)


def trajectory_summary(sigma: np.ndarray, q=(0.25, 0.75)) -> dict[str, np.ndarray]:
    """Per-step mean, median and quantile band of signals [N, T]."""
    sigma = np.asarray(sigma, dtype=float)
    if sigma.ndim != 2 or len(sigma) == 0:
        raise ValueError(f"expected a non-empty [N, T] array of signals, got shape {sigma.shape}")
    return {"mean": sigma.mean(0), "median": np.median(sigma, 0), "lo": np.quantile(sigma, q[0], axis=0),
            "hi": np.quantile(sigma, q[1], axis=0), "n": np.array(len(sigma))}


@dataclass
class Projection:
    """A 2-D projection of SRI vectors and how separable the groups are."""

    Z: np.ndarray  # [N, 2]
    labels: np.ndarray  # [N]
    axes: tuple[str, str]
    cv_accuracy: float  # cross-validated LDA accuracy on the full T-dim vectors (balanced)
    chance: float  # balanced accuracy of always guessing one class = 1 / n_classes
    folds: int
    per_class: dict = field(default_factory=dict)
    oof_pred: np.ndarray | None = None  # [N] out-of-fold LDA prediction of every vector (None: too few to CV)

    def accuracy_interval(self, clusters=None, n_boot: int = 2000, seed: int = 0, conf: float = 0.95):
        """Balanced accuracy of the pooled out-of-fold predictions with a percentile bootstrap interval, as a
        :class:`srilib.stats.Estimate`; ``clusters`` (one label per vector, e.g. its request) resamples whole
        clusters. None when there are no out-of-fold predictions."""
        from .stats import Estimate, cluster_bootstrap_ci

        if self.oof_pred is None:
            return None
        y, p = np.asarray(self.labels), np.asarray(self.oof_pred)
        idx = np.arange(len(y))
        cl = np.arange(len(y)) if clusters is None else np.asarray(clusters, dtype=object)
        est, lo, hi = cluster_bootstrap_ci(idx, cl, lambda i: balanced_accuracy(y[i], p[i]), n_boot=n_boot,
                                           seed=seed, conf=conf)
        return Estimate(est, lo, hi, "cluster-bootstrap" if clusters is not None else "bootstrap", conf,
                        {"chance": self.chance, "n": len(y)})

    @property
    def summary(self) -> str:
        return (f"LDA balanced accuracy {self.cv_accuracy:.2f} ({self.folds}-fold CV; chance {self.chance:.2f}); "
                + ", ".join(f"{k}: n={v}" for k, v in self.per_class.items()))


def balanced_accuracy(y, pred) -> float:
    """Mean per-class recall over the classes present in ``y``."""
    y, pred = np.asarray(y), np.asarray(pred)
    classes = np.unique(y)
    return float(np.mean([(pred[y == c] == c).mean() for c in classes]))


def lda_projection(X: np.ndarray, labels, folds: int = 5, seed: int = 0) -> Projection:
    """Project SRI vectors [N, T] to 2-D with linear discriminant analysis (paper Figure 13).

    With three or more groups the two LDA components are used; with two groups LDA has one component, so the
    second axis is the first principal component of what LDA leaves. Separability is the cross-validated
    balanced accuracy of an LDA classifier on the full vectors (shrinkage LDA, stratified folds).
    """
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score

    X = np.asarray(X, dtype=float)
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"LDA needs at least two groups; got only {classes.tolist()}. Add prompts of another "
                         "kind, or use a model that refuses some of them.")
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    Z1 = lda.fit(X, labels).transform(X)
    if Z1.shape[1] >= 2:
        Z, axes = Z1[:, :2], ("LD1", "LD2")
    else:
        w = lda.scalings_[:, :1]
        w = w / np.linalg.norm(w)
        resid = X - (X @ w) @ w.T
        Z = np.column_stack([Z1[:, 0], PCA(1, random_state=seed).fit_transform(resid)[:, 0]])
        axes = ("LD1", "PC1 of the rest")
    k = int(min(folds, counts.min()))
    if k >= 2:
        cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        acc = float(cross_val_score(LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"), X, labels,
                                    cv=cv, scoring="balanced_accuracy").mean())
        oof = cross_val_predict(LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"), X, labels, cv=cv)
    else:
        acc, oof = float("nan"), None  # a group too small to cross-validate
    return Projection(Z=Z, labels=labels, axes=axes, cv_accuracy=acc, chance=1 / len(classes), folds=k,
                      per_class={str(c): int(n) for c, n in zip(classes, counts)}, oof_pred=oof)
