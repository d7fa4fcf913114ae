"""The findings at a glance of each analysis chapter (:mod:`.glance`): for every claim of the paper a chapter
tests, the paper's number, ours with its 95% interval and the verdict that interval allows, built from the same
estimates the chapter's conclusions print (no new measurement). One function per chapter; the notebooks call it in
their glance cell, which the book's runner moves under the chapter's title.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..metrics import DEFAULT_LAMBDA_R
from .detector import DetectorResult
from .paper_numbers import PAPER_ABLATION, PAPER_MODELS_TEXT
from .detector_intervals import method_difference
from .geometry import GeometryResult
from .glance import finding, headline_runs, main_run
from .paper_numbers import (ALL_JAILBREAKS, PAPER_AR_IRR_MAX, PAPER_DLM_IRR_LOOSE, PAPER_IRR_LOSS, PAPER_TABLE1,
                            paper_family_asr, paper_table2_max)
from .recovery import DELTA_COL, MAJORITY, RecoveryResult, family_irr_gap, sampler_irr_deltas
from .sampling import RunEval, has_set
from .sampling_compare import Comparison, family_gap, matched_pairs


def geometry_findings(results: Mapping[str, GeometryResult] | Sequence[GeometryResult], n_boot: int = 2000) -> list:
    """The chapter's findings at a glance (:mod:`.glance`), for the main pair's runs: whether refused generations
    end below complied-harmless ones (Figure 12) and whether the LDA separates the outcome groups above chance
    (Figure 13), each from the interval its conclusion bullet prints."""
    rs = {r.run: r for r in (results.values() if isinstance(results, Mapping) else results)}
    out = []
    labels = [k for k, r in rs.items() if not r.anchors.fallback]
    main = main_run(labels)
    for label in headline_runs(labels):
        r, top = rs[label], label == main
        gap = r.final_gap(n_boot=n_boot)
        if gap is not None:
            out.append(finding("Refused generations end below complied-harmless ones (Fig. 12; ours: final σ, "
                               "harmless minus refused)",
                               "refused σ near 0 at every step", gap, [label], headline=top))
        acc = r.separability(n_boot=n_boot) if r.projection is not None else None
        if acc is not None:
            out.append(finding("An LDA of SRI trajectories separates harmless, jailbroken and refused (Fig. 13; "
                               f"ours: balanced accuracy, chance {r.projection.chance:.2f})",
                               "distinct, partly overlapping regions", acc, [label], ref=r.projection.chance,
                               signed=False, headline=top))
    return out


def sampling_findings(results: Sequence[RunEval], comps: Sequence[Comparison]) -> list:
    """The chapter's findings at a glance (:mod:`.glance`), from the estimates :func:`conclusions` prints: for the
    first same-weights comparison (the profile's headline pair) the pooled ΔRR, ΔASR and ΔIRR (Table 2, Figure 6),
    the pooled ΔASR of the next one, the matched AR/DLM pair's ASR gap and the pooled family gap (Table 3)."""
    max_rr, max_asr = paper_table2_max()
    same = "vs AR sampling of the same weights"
    rr = ("d_rr", f"Remasking raises refusal {same} (Table 2; ours: ΔRR pooled over our attacks)",
          f"LLaDA / LLaDA-1.5: none below 0, up to +{max_rr / 100:.2f}")
    asr = ("d_asr", f"Remasking lowers attack success {same} (Table 2; ours: ΔASR pooled over our attacks)",
           f"LLaDA / LLaDA-1.5: none below 0, up to +{max_asr / 100:.2f}")
    irr = ("d_irr", f"Remasking raises internal recovery {same} (Fig. 6; ours: ΔIRR over attacked prompts)",
           f"+{PAPER_IRR_LOSS[0]:.2f} to +{PAPER_IRR_LOSS[1]:.2f}")
    out = []
    for i, c in enumerate(comps[:2]):
        try:
            aj = c.row(ALL_JAILBREAKS)
        except KeyError:
            continue
        runs = [c.other, c.base]
        metrics = [rr, asr, irr] if i == 0 else [asr]
        out += [finding(claim, paper, aj[k], runs, headline=i == 0 and k != "d_rr") for k, claim, paper in metrics]
    ar_lo, ar_hi = paper_family_asr("AR")
    dl_lo, dl_hi = paper_family_asr("DLM")
    fam = f"AR {ar_lo:.0%}-{ar_hi:.0%} vs DLM {dl_lo:.0%}-{dl_hi:.0%} ASR per model"
    for twin, m, gap in matched_pairs(results)[:1]:
        out.append(finding("AR models are attacked more successfully than DLMs (Table 3; ours: matched pair, AR "
                           "minus DLM pooled ASR)", fam, gap, [twin, m], headline=True))
    gap = family_gap(results, "asr")
    if gap is not None:
        pools = sorted({r.model for r in results if r.family in ("AR", "DLM") and has_set(r, ALL_JAILBREAKS)})
        out.append(finding("... and pooled over all our runs of each family (Table 3; ours: AR minus DLM pooled "
                           "ASR)", fam, gap, pools, label=f"{len(pools)} models"))
    return out


def recovery_findings(results: Sequence[RecoveryResult], lambda_r: Sequence[float] = DEFAULT_LAMBDA_R) -> list:
    """The chapter's findings at a glance (:mod:`.glance`), from the estimates :func:`conclusions` prints: HRR of
    the main pair's diffusion runs against a majority (Table 1), the pooled DLM-minus-AR IRR at the loosest
    threshold (Figure 5) and each DLM's remasking-minus-AR-sampling IRR (Figure 6, our denominator)."""
    loose = max(lambda_r)
    by_run = {r.run: r for r in results}
    hs = [v[0] for v in PAPER_TABLE1.values()]
    out, main = [], main_run(list(by_run))
    for label in headline_runs(list(by_run)):
        rev = by_run[label].revision
        if rev is not None and rev["harmful_any"].k > 0:
            out.append(finding(f"Most generations with a harmful intermediate prediction revise it (Table 1; ours: "
                               f"HRR vs {MAJORITY:g})", f"HRR {min(hs):.2f}-{max(hs):.2f} (LLaDA, Dream, LLaDA-1.5)",
                               rev["hrr"], [label], ref=MAJORITY, signed=False,
                               headline=label == main))
    gap = family_irr_gap(results, loose)
    if gap is not None:
        lo, hi = PAPER_DLM_IRR_LOOSE
        pools = sorted({r.ev.model for r in results if not r.ev.anchors.fallback})
        out.append(finding(f"DLMs recover internally more often than AR models (Fig. 5; ours: DLM minus AR IRR "
                           f"pooled, λ_r={loose:g})", f"DLM {lo:.1f}-{hi:.1f} vs AR below {PAPER_AR_IRR_MAX:.2f}",
                           gap, pools, label=f"{len(pools)} models", headline=True))
    for row in sampler_irr_deltas(results, lam=loose):
        out.append(finding(f"Remasking raises internal recovery vs AR sampling of the same weights (Fig. 6; ours: "
                           f"ΔIRR over all harmful prompts, λ_r={loose:g})",
                           f"+{PAPER_IRR_LOSS[0]:.2f} to +{PAPER_IRR_LOSS[1]:.2f} (attacked prompts)",
                           row[DELTA_COL], [row["remasking run"]]))
    return out


def detector_findings(results: dict[str, DetectorResult]) -> list:
    """The chapter's findings at a glance (:mod:`.glance`), from the estimates :func:`conclusions` prints: SRI
    Guard's AUROC against chance on the main pair's runs (Table 4's SRI Guard row), and the mean-over-runs AUROC
    differences of the ablation (last-layer SRI minus the text signal, the static activations and the first layer).
    Empty without bootstrap intervals (``n_boot=0``)."""
    if not results or any(r.n_boot <= 0 for r in results.values()):
        return []
    pm = PAPER_ABLATION["sri_last"][0]
    out, main = [], main_run(list(results))
    for label in headline_runs(list(results)):
        r = results[label]
        out.append(finding("SRI Guard, fitted on harmless signals only, detects unseen jailbreaks (Table 4; ours: "
                           "AUROC vs chance 0.5)", f"AUROC {pm:.3f} (mean of {PAPER_MODELS_TEXT})",
                           r.auroc[("sri_last", r.seeds[0])], [label], ref=0.5, signed=False,
                           headline=label == main))
    n = len(results)
    for other, what in (("text", "the text-based signal"), ("static", "static first-step activations"),
                        ("sri_first", "the first layer's SRI")):
        d = method_difference(results, "sri_last", other)
        out.append(finding(f"Last-layer SRI detects better than {what} (Table 4; ours: AUROC difference, mean over "
                           "runs)", f"{pm - PAPER_ABLATION[other][0]:+.3f}", d["mean"], list(results),
                           label=f"mean of {n} runs", headline=other == "text"))
    return out
