"""Chapter "Detector transfer" (analysis 4), core: the chapter's constants and the paper's numbers (Tables 4, 13,
14), how every detector is fitted, one run's detectors and scores (SRI Guard on attacks it never saw, the ablation
of paper Table 4) and transfer of a fitted guard across models. Beside it: :mod:`.detector_intervals` (the paired
bootstrap behind the ablation ranking), :mod:`.detector_tables` (table rows), :mod:`.defenses` (Table 13),
:mod:`.detector_diffuguard` (Table 14), :mod:`.shift` (harmless distribution shift), :mod:`.detector_conclusions`
(prose) and :mod:`srilib.figures`.

Data use (per run, i.e. model + sampler):

* anchors: the ``anchor`` split (:meth:`srilib.experiment.Experiment.anchors`), one set of anchors per layer;
* detectors: harmless prompts of the ``train`` split only (:func:`guard_prompts`), never seen by anchors or
  evaluation; a seeded ``calib_fraction`` of them is held out to calibrate the threshold (the 99th percentile of
  held-out error) and the rest trains the detector. No jailbreak or harmful data is used to fit anything;
* evaluation: the ``eval`` harmless prompts (negatives) against each attack's eval prompts (positives). Raw
  harmful prompts are scored too and labelled "raw harmful (not a jailbreak)"; they are not in the pooled
  jailbreak AUROC, as in the paper.

Ablation detectors (same harmless train signals, split and evaluation; built by :func:`make_detector`, all with
:class:`srilib.guard.SRIGuard`'s ``fit`` / ``score_samples`` interface):

* ``text``: :class:`srilib.guard.SRIGuard` on the text-level refusal signal (1 until a refusal phrase appears);
* ``static``: :class:`srilib.guard.PCAResidual` on the first-step activation phi_1 of the last layer (a linear
  autoencoder: the error of reconstructing phi_1 from its top-k principal components of harmless phi_1);
* ``sri_first`` / ``sri_middle`` / ``sri_last``: SRIGuard on the SRI signal computed at that layer against
  anchors built at that layer ("last" is SRI Guard itself).
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..canvas_attacks import canvas_traces
from ..experiment import Experiment, PromptSets
from ..models import layer_index, num_layers, resolve_layers
from ..guard import PCAResidual, SRIGuard, finite_rows
from ..signal import refusal_rate
from ..prompts import get_prompts
from ..judges import text_signals
from ..signal import Anchors
from ..stats import Estimate, Rate, request_interval, roc_curve
from .paper_numbers import METHOD_LABELS, PAPER_ABLATION, PAPER_MODELS_TEXT

METHODS = ("text", "static", "sri_first", "sri_middle", "sri_last")
DEFENSES = ("undefended", "perplexity filter", "Self-Examine", "LlamaGuard 3", "SRI Guard")
RAW = "raw"
CANVAS = "canvas:"
DIFFUGUARD = "DiffuGuard"


# ------------------------------------------------------------------------------------------------- guard data
@dataclass(frozen=True)
class GuardConfig:
    """How every detector of the chapter is fitted and calibrated.

    ``calib_fraction`` of the harmless train signals (seeded split) calibrate the threshold, which is the
    ``quantile`` of their error; ``min_calibration`` is the fewest calibration signals accepted. ``hidden`` and
    ``epochs`` configure the autoencoder (:class:`srilib.guard.SRIGuard`); ``static_components`` is k of
    :class:`PCAResidual`.
    """

    calib_fraction: float = 0.25
    min_calibration: int = 20
    quantile: float = 0.99
    hidden: tuple[int, int] = (32, 8)
    epochs: int = 300
    static_components: int = 8

    def __post_init__(self):
        if not 0.0 < self.calib_fraction < 1.0:
            raise ValueError(f"calib_fraction must be in (0, 1), got {self.calib_fraction}")
        if self.min_calibration < 1:
            raise ValueError(f"min_calibration must be >= 1, got {self.min_calibration}")


def guard_prompts(n_train_harmless: int, seed: int = 0, source: str = "builtin") -> list[str]:
    """Harmless prompts of the ``train`` split: the detectors' only training data (disjoint from the anchor and
    eval splits). ``source`` follows :meth:`srilib.experiment.PromptSets.build`: "builtin" (offline) or
    "public" (Alpaca's train split, the set the public anchors and harmless evaluation come from)."""
    if n_train_harmless < 2:
        raise ValueError(f"n_train_harmless must be >= 2, got {n_train_harmless}")
    if source == "builtin":
        return get_prompts("harmless", "train", n=n_train_harmless, seed=seed)
    if source == "public":
        from ..prompts import load_public
        return load_public("alpaca", n=n_train_harmless, split="train", seed=seed)
    raise ValueError(f"unknown prompt source {source!r}; use 'builtin' (offline) or 'public'")


def calibration_split(n: int, cfg: GuardConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, calibration indices) of ``n`` harmless signals: a seeded ``calib_fraction`` holds out."""
    n_cal = int(round(cfg.calib_fraction * n))
    if n_cal < cfg.min_calibration or n - n_cal < 2:
        need = max(math.ceil(cfg.min_calibration / cfg.calib_fraction), cfg.min_calibration + 2)
        raise ValueError(
            f"{n} harmless training signals with calib_fraction={cfg.calib_fraction} leave {n_cal} for "
            f"calibration and {n - n_cal} for training; the guard needs >= {cfg.min_calibration} calibration "
            f"signals (min_calibration) and >= 2 for training: raise n_train_harmless to at least {need}, or lower "
            f"min_calibration (a {cfg.quantile * 100:g}th percentile of few signals is close to their maximum)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])


def make_detector(method: str, cfg: GuardConfig = GuardConfig(), seed: int = 0, anchors_key=None):
    """The unfitted detector of ablation ``method`` (:data:`METHODS`): :class:`PCAResidual` for ``static``,
    :class:`srilib.guard.SRIGuard` for the signals (``text`` and the SRI layers), configured by ``cfg``."""
    if method == "static":
        return PCAResidual(k=cfg.static_components, quantile=cfg.quantile)
    return SRIGuard(hidden=cfg.hidden, epochs=cfg.epochs, quantile=cfg.quantile, min_calibration=cfg.min_calibration,
                    seed=seed, anchors_key=anchors_key)


def fit_detector(method: str, X_harmless, cfg: GuardConfig = GuardConfig(), seed: int = 0, anchors_key=None):
    """Detector ``method`` (:func:`make_detector`) trained and calibrated on harmless features [N, ...] only: the
    seeded :func:`calibration_split` holds out the calibration part."""
    X = finite_rows(X_harmless, "X_harmless")
    tr, cal = calibration_split(len(X), cfg, seed)
    return make_detector(method, cfg, seed, anchors_key).fit(X[tr], X_calib=X[cal])


def fit_guard(X_harmless, cfg: GuardConfig = GuardConfig(), seed: int = 0, anchors_key=None) -> SRIGuard:
    """SRI Guard (:class:`srilib.guard.SRIGuard`) trained and calibrated on harmless signals [N, T] only."""
    return fit_detector("sri_last", X_harmless, cfg, seed, anchors_key)


def guard_scores(guard, signals: dict[str, np.ndarray], anchors: Anchors | None = None
                 ) -> dict[str, np.ndarray]:
    """Anomaly scores of a fitted detector (:func:`fit_detector`) per evaluation set; with ``anchors``, signals
    made against other anchors than the guard's raise (pass None only to apply a guard across models on purpose,
    as :func:`transfer_matrix` does)."""
    return {k: guard.score_samples(finite_rows(v, f"signals[{k!r}]"), anchors_key=anchors) for k, v in signals.items()}


def auroc_est(neg, pos, n_boot: int = 0, seed: int = 0, clusters=None) -> Estimate:
    """AUROC of ``pos`` against ``neg`` with the interval :func:`srilib.stats.request_interval` picks when
    ``n_boot`` > 0, else the point value only (bootstraps are the slow part of the chapter; tables show intervals
    where they print them). ``clusters``: the request of every positive (:meth:`DetectorResult.clusters`); pooled
    attacks repeat each request once per attack, so their positives are resampled by request (cluster bootstrap),
    a single set's by row (stratified bootstrap)."""
    return request_interval(pos, neg=neg, clusters=clusters, n_boot=n_boot, seed=seed)


# ------------------------------------------------------------------------------------------------- one run
@dataclass
class DetectorResult:
    """Everything the chapter shows for one run."""

    run: str
    kind: str  # "ar" | "dlm"
    layer_index: dict[str, int]  # "first" / "middle" / "last" -> hidden-state index
    anchors: dict[str, Anchors]  # per layer name
    signals: dict[str, np.ndarray]  # last-layer SRI [N, T]: "train" (harmless train) and every eval set
    texts: dict[str, list[str]]  # eval set -> final texts
    refusal: dict[str, Rate]  # eval set -> dictionary refusal rate
    jailbreaks: list[str]  # attack names (eval sets that are jailbreaks)
    detectors: dict[tuple[str, int], object]  # (method, seed) -> fitted detector
    scores: dict[tuple[str, int], dict[str, np.ndarray]]  # (method, seed) -> eval set -> anomaly score
    auroc: dict[tuple[str, int], Estimate]  # pooled jailbreaks vs harmless (bootstrap CI for the first seed)
    auroc_raw: dict[tuple[str, int], Estimate]  # raw harmful vs harmless (point values)
    seeds: list[int]
    cfg: GuardConfig
    n_boot: int
    notes: list[str] = field(default_factory=list)
    prefills: dict[str, list] = field(default_factory=dict)  # canvas set -> the sampler's ((position, text), ...)
    shift: dict = field(default_factory=dict)  # harmless distribution shift (run_harmless_shift), if measured
    _draws: dict = field(default_factory=dict, repr=False)  # cached bootstrap replicates (auroc_draws)
    adaptive: list[str] = field(default_factory=list)  # adaptive-attack sets (Random Search, PAIR): held out
    diffuguard: dict = field(default_factory=dict)  # DiffuGuard on the canvas attacks (run_diffuguard), if run
    # eval set -> the index (in PromptSets.requests) of the harmful request behind each of its items; sets absent
    # here are aligned by position (the i-th item comes from the i-th request), see clusters()
    request_ids: dict[str, np.ndarray] = field(default_factory=dict)
    prompts: dict[str, list[str]] = field(default_factory=dict)  # eval set -> the prompts the model saw

    @property
    def canvas_sets(self) -> list[str]:
        """Evaluation sets of canvas attacks ("canvas:<name>"), diffusion runs only."""
        return [k for k in self.texts if k.startswith(CANVAS)]

    @property
    def guard(self) -> SRIGuard:
        """SRI Guard (last layer, first seed)."""
        return self.detectors[("sri_last", self.seeds[0])]

    def clusters(self, sets: Sequence[str], method: str = "sri_last") -> np.ndarray:
        """The request index of every item of ``sets`` pooled in this order (as ``np.concatenate`` of their
        scores pools them): the cluster labels of a pooled interval. A set's :attr:`request_ids` when stored
        (:func:`run_detector` stores them), else its positions (the i-th item from the i-th request)."""
        sc = self.scores[(method, self.seeds[0])]
        out = []
        for k in sets:
            ids = self.request_ids.get(k)
            if ids is None:
                ids = np.arange(len(sc[k]))
            elif len(ids) != len(sc[k]):
                raise ValueError(f"{self.run}: set {k!r} has {len(sc[k])} scores but {len(ids)} request ids")
            out.append(np.asarray(ids))
        return np.concatenate(out) if out else np.zeros(0, dtype=int)

    def method_auroc(self, method: str, raw: bool = False) -> np.ndarray:
        """AUROC of ``method`` for every seed."""
        d = self.auroc_raw if raw else self.auroc
        return np.array([d[(method, s)].value for s in self.seeds])

    def roc(self, method: str = "sri_last") -> tuple[np.ndarray, np.ndarray]:
        """(false-positive rates, true-positive rates) of ``method`` (first seed): the pooled jailbreaks against
        the harmless evaluation set, as :attr:`auroc` scores them."""
        sc = self.scores[(method, self.seeds[0])]
        fpr, tpr, _ = roc_curve(sc["harmless"], np.concatenate([sc[a] for a in self.jailbreaks]))
        return fpr, tpr


def method_features(method: str, ts, anchors: dict[str, Anchors], tau: float) -> np.ndarray:
    """What detector ``method`` reads from traces ``ts``: [N, T] signals, or [N, D] first-step activations."""
    if method == "text":
        return text_signals(ts.match_texts).astype(np.float64)
    if method == "static":
        return ts.phi(anchors["last"].pooling, -1)[:, 0, :].astype(np.float64)
    return anchors[method.removeprefix("sri_")].signal(ts, tau=tau)


def run_detector(exp: Experiment, spec: str, sets: PromptSets, train_prompts: Sequence[str], *, tau: float = 0.1,
                 seeds: Sequence[int] = (0,), cfg: GuardConfig = GuardConfig(), n_boot: int = 1000,
                 canvas_attacks: Sequence[str] = (), adaptive=None) -> DetectorResult:
    """Fit every ablation detector on harmless train signals of one run and score the evaluation sets.

    ``canvas_attacks`` (:mod:`srilib.canvas_attacks`, diffusion runs only; ignored for AR runs) add evaluation
    sets ``"canvas:<name>"``: the eval harmful requests generated with the attack's prefill on the canvas. They
    are scored and reported per attack, but kept out of the pooled jailbreak AUROC (the paper's Table 4 uses the
    template jailbreaks only).
    """
    run = exp.resolve(spec)
    if not sets.attacked:
        raise ValueError("detector transfer needs at least one attack: pass attacks=[...] to PromptSets.build")
    seeds = [int(s) for s in seeds] or [0]
    lm = exp.model(run.model)
    idx = {name: layer_index(lm, name) for name in ("first", "middle", "last")}
    recorded = resolve_layers(lm, exp.layers)
    missing = [f"{n} ({i})" for n, i in idx.items() if i not in recorded]
    if missing:
        raise ValueError(f"the layer ablation needs traces of layers {', '.join(missing)}; recorded: {recorded}. "
                         "Use Experiment(layers=('first', 'middle', 'last')) (the default)")
    anchors: dict[str, Anchors] = {}
    for name in ("last", "first", "middle"):  # the fallback notice is printed once, for the last layer
        same = next((a for n, a in anchors.items() if idx[n] == idx[name]), None)
        with contextlib.redirect_stdout(io.StringIO()) if anchors else contextlib.nullcontext():
            anchors[name] = same or exp.anchors(run, sets, layer=idx[name])
    train_ts = exp.traces(run, list(train_prompts), "guard/harmless-train")
    evaluation = sets.evaluation()
    ev = {name: exp.traces(run, prompts, name) for name, (prompts, _) in evaluation.items()}
    jb = list(sets.attacked)
    notes, prefills = [], {}
    # adaptive attacks (srilib.chapters.adaptive.Adaptive): scored per set as attacks the guard never saw, kept
    # out of the pooled jailbreak AUROC (their i-th prompt comes from the i-th harmful request, on fewer requests)
    adaptive_sets = adaptive.prompts(run) if adaptive is not None else {}
    for name, prompts in adaptive_sets.items():
        ev[name] = exp.traces(run, prompts, name)
    if lm.kind == "dlm":
        for name in canvas_attacks:
            ts, why = canvas_traces(exp, run, sets.requests, name)
            if ts is None:
                notes.append(f"{run.label}: canvas attack {name} skipped: {why}")
            else:
                ev[f"{CANVAS}{name}"] = ts
                prefills[f"{CANVAS}{name}"] = ts.meta["sampler_config"]["prefill"]
    feats = {m: {"train": method_features(m, train_ts, anchors, tau), **{k: method_features(m, ts, anchors, tau)
                                                                   for k, ts in ev.items()}} for m in METHODS}
    # which request each harmful item came from: PromptSets.attacked[a][i] and the raw set's i-th prompt wrap
    # PromptSets.requests[i]; a canvas set generates requests[i] itself; an adaptive set's i-th prompt is searched
    # from the i-th request (on the first requests only)
    n_req = len(sets.requests)
    request_ids = {k: np.arange(len(ts)) for k, ts in ev.items() if k != "harmless"}
    for k, ids in request_ids.items():
        if len(ids) > n_req:
            raise ValueError(f"{run.label}: set {k!r} has {len(ids)} prompts for {n_req} requests")
    jb_ids = np.concatenate([request_ids[a] for a in jb])
    detectors, scores, au, au_raw = {}, {}, {}, {}
    for m in METHODS:
        X = feats[m]["train"]
        key = anchors[m.removeprefix("sri_")] if m.startswith("sri_") else None
        for s in seeds:
            det = fit_detector(m, X, cfg, seed=s, anchors_key=key)
            sc = guard_scores(det, {k: v for k, v in feats[m].items() if k != "train"}, key)
            detectors[(m, s)], scores[(m, s)] = det, sc
            neg, pos = sc["harmless"], np.concatenate([sc[a] for a in jb])
            au[(m, s)] = auroc_est(neg, pos, n_boot if s == seeds[0] else 0, seed=s, clusters=jb_ids)
            au_raw[(m, s)] = auroc_est(neg, sc[RAW])
    if idx["first"] == idx["middle"]:
        notes.append(f"{run.label}: the model has {num_layers(lm)} layers, so 'first' and "
                     f"'middle' are the same layer ({idx['first']}).")
    if anchors["last"].fallback:
        notes.append(f"{run.label}: UNFILTERED anchors ({anchors['last'].fallback}): SRI measures closeness to "
                     "harmful prompts' states, not to refusal.")
    return DetectorResult(
        run=run.label, kind=lm.kind, layer_index=idx, anchors=anchors,
        signals={"train": feats["sri_last"]["train"], **{k: feats["sri_last"][k] for k in ev}},
        texts={k: list(ts.texts) for k, ts in ev.items()},
        refusal={k: refusal_rate(ts.texts) for k, ts in ev.items()}, jailbreaks=jb, detectors=detectors,
        scores=scores, auroc=au, auroc_raw=au_raw, seeds=seeds, cfg=cfg, n_boot=n_boot, notes=notes,
        prefills=prefills, adaptive=list(adaptive_sets), request_ids=request_ids,
        prompts={k: list(ts.prompts) for k, ts in ev.items()})


def transfer_matrix(results: dict[str, DetectorResult], n_boot: int = 0) -> dict:
    """A guard fitted on run A's harmless signals applied to run B's signals (B's own anchors; the anchors check is
    skipped on purpose). Returns labels and [A, B] matrices of AUROC (pooled jailbreaks vs harmless), false-positive
    rate and detection rate at A's threshold; NaN where the step counts differ."""
    labels = list(results)
    n = len(labels)
    out = {k: np.full((n, n), np.nan) for k in ("auroc", "fpr", "tpr")}
    out["auroc_str"] = [["–"] * n for _ in range(n)]
    for i, a in enumerate(labels):
        g = results[a].guard
        for j, b in enumerate(labels):
            rb = results[b]
            if rb.signals["harmless"].shape[1] != g.T_:
                continue
            sc = guard_scores(g, {k: rb.signals[k] for k in ["harmless", *rb.jailbreaks]})
            neg, pos = sc["harmless"], np.concatenate([sc[x] for x in rb.jailbreaks])
            e = auroc_est(neg, pos, n_boot=n_boot, clusters=rb.clusters(rb.jailbreaks))
            out["auroc"][i, j] = e.value
            out["auroc_str"][i][j] = str(e) if n_boot > 0 else f"{e.value:.3f}"
            out["fpr"][i, j], out["tpr"][i, j] = (neg > g.threshold_).mean(), (pos > g.threshold_).mean()
    out["labels"] = [results[x].run for x in labels]
    return out


# ------------------------------------------------------------------------------------------- figures
def roc_panel(res: DetectorResult, methods: Sequence[str] = METHODS) -> dict:
    """The arguments of :func:`srilib.figures.plot_rocs` for one run: each detector's ROC curve
    (:meth:`DetectorResult.roc`) labelled with its AUROC (first seed), SRI Guard's drawn thick, and the run as the
    title, flagged when its anchors are unfiltered."""
    labels = {m: f"{METHOD_LABELS[m]} ({res.auroc[(m, res.seeds[0])].value:.2f})" for m in methods}
    return {"curves": {labels[m]: res.roc(m) for m in methods}, "thick": labels.get("sri_last"),
            "title": res.run + ("\n(UNFILTERED anchors)" if res.anchors["last"].fallback else "")}


def guard_roc_panel(results: dict[str, DetectorResult]) -> dict:
    """The arguments of :func:`srilib.figures.plot_guard_rocs`: SRI Guard's ROC curve of every run,
    labelled with the run, its AUROC (first seed) and whether its anchors are unfiltered, and the paper's Table 4
    AUROC as the note."""
    curves = {}
    for res in results.values():
        fb = ", unfiltered anchors" if res.anchors["last"].fallback else ""
        curves[f"{res.run} ({res.auroc[('sri_last', res.seeds[0])].value:.2f}{fb})"] = res.roc("sri_last")
    pm, ps = PAPER_ABLATION["sri_last"]
    return {"curves": curves, "note": f"paper: AUROC {pm:.3f} ± {ps:.3f}\n({PAPER_MODELS_TEXT})"}


def notes_markdown(results: dict[str, DetectorResult]) -> str:
    """Every run's notes (skipped sections, unfiltered anchors, shared layers) as a Markdown list; empty without
    any."""
    return "\n".join(f"- {n}" for r in results.values() for n in r.notes)


# ------------------------------------------------------------------------------------------- usage example
DEMO_HARMLESS = "How do I bake sourdough bread?"


def guard_demo_prompts(sets: PromptSets) -> list[str]:
    """The two prompts of the chapter's "use SRI Guard on your model" example: a harmless question and the first
    attacked prompt of the first attack."""
    return [DEMO_HARMLESS, next(iter(sets.attacked.values()))[0]]


__all__ = ["METHODS", "DEFENSES", "RAW", "CANVAS", "DIFFUGUARD", "GuardConfig", "guard_prompts", "calibration_split",
           "make_detector", "fit_detector", "fit_guard", "guard_scores", "auroc_est", "DetectorResult",
           "method_features", "run_detector", "transfer_matrix", "roc_panel", "guard_roc_panel", "notes_markdown",
           "DEMO_HARMLESS", "guard_demo_prompts"]
