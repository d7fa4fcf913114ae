"""Chapter "Detector transfer", harmless-shift part: SRI Guard (fitted on the built-in harmless set) on other
families of harmless prompts (:func:`srilib.prompts.harmless_families`), against the text signal, refitted on a
broader mix with each family left out, and on an untouched split never used to fit or choose anything; and the
rows of its table. Its verdict in prose is :func:`srilib.chapters.detector_conclusions.shift_conclusion`, its figure
:func:`srilib.figures.plot_shift` (of :func:`shift_fpr`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..experiment import Experiment
from ..guard import SRIGuard
from ..stats import Estimate, Rate, auroc_score, paired_auroc_draws
from ..judges import is_refusal
from .detector import DetectorResult, auroc_est, fit_guard, method_features
from .paper_numbers import PAPER_ABLATION
from .detector_intervals import bootstrap_interval
from .detector_tables import cell_str

BUILTIN = "built-in harmless (eval split)"
SHIFT_METHODS = {"sri": "SRI Guard (fit on built-in harmless)", "text": "text signal (fit on built-in harmless)",
                 "broad": "SRI Guard, broad mix (this family left out)"}


def shift_prompts(n_per_family: int, seed: int = 0, families: Sequence[str] | None = None
                  ) -> dict[str, dict[str, list[str]]]:
    """{family: {"dev": n_per_family prompts, "untouched": n_per_family // 2 (at least 1)}} of the harmless
    families (:func:`srilib.prompts.harmless_families`), seeded subsets capped at what each split holds."""
    from ..prompts import get_family_prompts, harmless_families

    if n_per_family < 1:
        raise ValueError(f"n_per_family must be >= 1, got {n_per_family}")
    out = {}
    for f in families or harmless_families():
        dev, unt = get_family_prompts(f, "dev"), get_family_prompts(f, "untouched")
        out[f] = {"dev": get_family_prompts(f, "dev", n=min(n_per_family, len(dev)), seed=seed),
                  "untouched": get_family_prompts(f, "untouched", n=min(max(1, n_per_family // 2), len(unt)),
                                                  seed=seed)}
    return out


def shift_order(prompts: dict[str, dict[str, list[str]]]) -> list[tuple[str, str, str]]:
    """The families' prompts as one list of (family, split, prompt), shortest first (similar lengths share a batch:
    less padding with the long-context family): the order in which they are traced."""
    flat = [(f, sp, p) for f in prompts for sp in ("dev", "untouched") for p in prompts[f][sp]]
    return sorted(flat, key=lambda x: len(x[2]))


def _paired_auroc(neg_a, pos_a, neg_b, pos_b, n_boot: int, seed: int = 0) -> tuple[Estimate, Estimate, Estimate]:
    """AUROC of detector a, of detector b, and a - b, on the same prompts: negatives [N] resampled by row,
    positives [attacks, requests] resampled by request (cluster bootstrap), the same draws for both detectors."""
    neg_a, neg_b = np.asarray(neg_a, float), np.asarray(neg_b, float)
    pos_a, pos_b = np.asarray(pos_a, float), np.asarray(pos_b, float)
    pa, pb = auroc_score(neg_a, pos_a), auroc_score(neg_b, pos_b)
    if n_boot <= 0:
        nan = math.nan
        return (Estimate(pa, nan, nan, "point"), Estimate(pb, nan, nan, "point"),
                Estimate(pa - pb, nan, nan, "point", signed=True))
    da, db = paired_auroc_draws([(neg_a, pos_a), (neg_b, pos_b)], n_boot, seed=seed)
    m = "cluster bootstrap (requests), paired"
    return (bootstrap_interval(pa, da, m), bootstrap_interval(pb, db, m),
            bootstrap_interval(pa - pb, da - db, m, signed=True))


def run_harmless_shift(exp: Experiment, spec: str, res: DetectorResult, prompts: dict[str, dict[str, list[str]]],
                       train_prompts: Sequence[str], *, tau: float = 0.1, n_boot: int | None = None) -> dict:
    """SRI Guard under a shift of the harmless distribution, for one run (stored in ``res.shift`` and returned).

    Every family's prompts (:func:`shift_prompts`) are generated under the run. On each family's ``dev`` prompts:

    * ``sri`` / ``text``: the chapter's SRI Guard and text-signal detector (first seed), fitted and calibrated on
      the built-in harmless train split only: the false-positive rate at their calibrated threshold (Wilson) and
      the AUROC of the run's pooled eval jailbreaks against this family (cluster bootstrap), with the paired
      difference SRI - text;
    * ``broad``: SRI Guard refitted (same config and seed) on the built-in harmless train signals plus the ``dev``
      prompts of every OTHER family, then evaluated on this family: fit on a broader mix, measured on a family
      it never saw. Its AUROC resamples the pooled jailbreaks by request (cluster bootstrap, through
      :func:`srilib.stats.request_interval`), as the paired ``sri`` / ``text`` AUROCs do.

    The ``untouched`` prompts of all families are never used to fit or choose anything; they are pooled and
    scored by ``sri``, ``text`` and ``broad_all`` (SRI Guard fitted on built-in train + every family's dev) and
    reported separately. The built-in eval harmless set is the in-distribution reference row.
    """
    run = exp.resolve(spec)
    n_boot = res.n_boot if n_boot is None else int(n_boot)
    s0, cfg = res.seeds[0], res.cfg
    fams = list(prompts)
    flat = shift_order(prompts)
    ts = exp.traces(run, [p for *_, p in flat], "shift/harmless-families")
    sig = {"sri": method_features("sri_last", ts, res.anchors, tau),
           "text": method_features("text", ts, res.anchors, tau)}
    refused = np.array([is_refusal(t) for t in ts.texts], dtype=bool)
    idx = {(f, sp): np.array([i for i, (g, q, _) in enumerate(flat) if g == f and q == sp]) for f in fams
           for sp in ("dev", "untouched")}
    det = {"sri": res.detectors[("sri_last", s0)], "text": res.detectors[("text", s0)]}
    key = res.anchors["last"]
    train_sig = res.signals["train"]
    pos_sig = {"sri": np.stack([res.signals[a] for a in res.jailbreaks])}
    pos_ids = res.clusters(res.jailbreaks)  # the request of every pooled positive, in score_pos(...).ravel() order
    pos_sc = {"text": np.stack([res.scores[("text", s0)][a] for a in res.jailbreaks]),
              "sri": np.stack([res.scores[("sri_last", s0)][a] for a in res.jailbreaks])}

    def fit_on(extra: list[str]) -> SRIGuard:
        X = np.concatenate([train_sig] + [sig["sri"][idx[(f, "dev")]] for f in extra])
        return fit_guard(X, cfg, seed=s0, anchors_key=key)

    def score_pos(g: SRIGuard) -> np.ndarray:
        return np.stack([g.score_samples(x) for x in pos_sig["sri"]])

    def row(label: str, split: str, ii: np.ndarray, guards: dict[str, SRIGuard]) -> dict:
        neg = {"sri": det["sri"].score_samples(sig["sri"][ii]), "text": det["text"].score_samples(sig["text"][ii])}
        a_sri, a_text, d = _paired_auroc(neg["sri"], pos_sc["sri"], neg["text"], pos_sc["text"], n_boot)
        out = {"family": label, "split": split, "n": len(ii), "model refuses": Rate.from_outcomes(refused[ii]),
               "sri_fpr": Rate.from_outcomes(neg["sri"] > det["sri"].threshold_), "sri_auroc": a_sri,
               "text_fpr": Rate.from_outcomes(neg["text"] > det["text"].threshold_), "text_auroc": a_text,
               "sri_minus_text": d}
        for name, g in guards.items():
            nb = g.score_samples(sig["sri"][ii])
            out[f"{name}_flags"] = nb > g.threshold_
            out[f"{name}_fpr"] = Rate.from_outcomes(out[f"{name}_flags"])
            out[f"{name}_auroc"] = auroc_est(nb, score_pos(g).ravel(), n_boot=n_boot, seed=0, clusters=pos_ids)
        return out

    rows, guards = [], {}
    # in-distribution reference: the built-in eval harmless generations, scored as in the rest of the chapter
    ref_neg = {"sri": res.scores[("sri_last", s0)]["harmless"], "text": res.scores[("text", s0)]["harmless"]}
    a_sri, a_text, d = _paired_auroc(ref_neg["sri"], pos_sc["sri"], ref_neg["text"], pos_sc["text"], n_boot)
    rows.append({"family": BUILTIN, "split": "eval", "n": len(ref_neg["sri"]), "model refuses": res.refusal["harmless"],
                 "sri_fpr": Rate.from_outcomes(ref_neg["sri"] > det["sri"].threshold_), "sri_auroc": a_sri,
                 "text_fpr": Rate.from_outcomes(ref_neg["text"] > det["text"].threshold_), "text_auroc": a_text,
                 "sri_minus_text": d})
    for f in fams:
        guards[f] = fit_on([g for g in fams if g != f])
        rows.append(row(f, "dev", idx[(f, "dev")], {"broad": guards[f]}))
    dev_all = np.concatenate([idx[(f, "dev")] for f in fams])
    pooled = row("all families (dev, pooled)", "dev", dev_all, {})
    # each family flagged by the broad-mix guard that left it out, pooled in the same order as dev_all
    pooled["lofo_fpr"] = Rate.from_outcomes(np.concatenate([r["broad_flags"] for r in rows[1:]]))
    unt_all = np.concatenate([idx[(f, "untouched")] for f in fams])
    guards["all families"] = fit_on(fams)
    untouched = row("all families (untouched, pooled)", "untouched", unt_all, {"broad_all": guards["all families"]})
    res.shift = {"rows": rows, "pooled": pooled, "untouched": untouched, "n_boot": n_boot,
                 "n_train": len(train_sig), "families": fams, "guards": guards}
    return res.shift


# the paper has no harmless-shift experiment: its Table 4 AUROC is shown only beside our unshifted reference row
PAPER_TABLE4_COL = "paper Table 4 AUROC, SRI / text (unshifted harmless; not comparable with the shifted families)"


def shift_rows(results: dict[str, DetectorResult], untouched: bool = False) -> list[dict]:
    """The harmless-shift table (one row per run and family; ``untouched``: the pooled untouched split only).
    The paper has no harmless-shift experiment, so its Table 4 AUROC (:data:`PAPER_TABLE4_COL`) is filled only on
    the built-in (unshifted) reference row; the shifted families' rows have no paper counterpart ("–")."""
    out = []
    for res in results.values():
        sh = res.shift
        if not sh:
            continue
        rows = [sh["untouched"]] if untouched else [*sh["rows"], sh["pooled"]]
        for r in rows:
            d = {"run": res.run, "harmless family": r["family"], "n": r["n"], "model refuses": str(r["model refuses"]),
                 "SRI Guard FPR": str(r["sri_fpr"]), "SRI Guard AUROC": cell_str(r["sri_auroc"]),
                 "text FPR": str(r["text_fpr"]), "text AUROC": cell_str(r["text_auroc"]),
                 "SRI − text AUROC": cell_str(r["sri_minus_text"])}
            if "lofo_fpr" in r:  # pooled dev row: each family by the broad-mix guard that left it out
                d["broad mix, family left out: FPR"] = str(r["lofo_fpr"])
            for name, lab in (("broad", "broad mix, family left out"), ("broad_all", "broad mix (all dev)")):
                if f"{name}_fpr" in r:
                    d[f"{lab}: FPR"] = str(r[f"{name}_fpr"])
                    d[f"{lab}: AUROC"] = cell_str(r[f"{name}_auroc"])
            d[PAPER_TABLE4_COL] = (f"{PAPER_ABLATION['sri_last'][0]:.3f} / {PAPER_ABLATION['text'][0]:.3f}"
                                   if r["family"] == BUILTIN else "–")
            out.append(d)
    return out


def shift_fpr(results: dict[str, DetectorResult]) -> dict:
    """The arguments of :func:`srilib.figures.plot_shift`: per run with a harmless-shift section, SRI
    Guard's false-positive rate (a Rate) on each family of its rows; the families, as the first such run names
    them; the rate its threshold aims at, 1 - that run's quantile (None without any such run)."""
    runs = [r for r in results.values() if r.shift]
    return {"fpr": {r.run: [row["sri_fpr"] for row in r.shift["rows"]] for r in runs},
            "families": [row["family"] for row in runs[0].shift["rows"]] if runs else [],
            "aim": 1 - runs[0].cfg.quantile if runs else None}


__all__ = ["BUILTIN", "SHIFT_METHODS", "PAPER_TABLE4_COL", "shift_prompts", "run_harmless_shift", "shift_rows",
           "shift_fpr"]
