"""Chapter "Detector transfer", conclusions: "what we reproduce, what we do not, and why", generated from the
measured numbers (Markdown). Every verdict rests on a 95% interval picked by :func:`srilib.stats.request_interval`
from the shape of the data (pooled attacks repeat each request, so their intervals resample requests: cluster
bootstrap for AUROC and paired differences, cluster-adjusted Wilson for rates), and a verdict that agrees with the
paper names the runs that miss a precondition (weak models or unfiltered anchors). The paper's numbers come from the
constants of :mod:`.detector`; a number the paper does not print (a ratio of its numbers) is labelled as ours.
Each verdict sentence is a :class:`srilib.chapters.Verdict` (its kind, interval side, runs and caveat as data). One
room: every sentence reads the same results and reports through the same caveat helpers, into one list the notebook
prints.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..prompts import HELDOUT_FAMILIES
from ..stats import Estimate, Rate, request_interval
from . import interval_side, weak_caveat, weak_models_line
from .defenses import DefenseReport, paper_overhead_factor, pool_label, rate_pct, shared_pool_label
from .detector import CANVAS, DIFFUGUARD, METHODS, DetectorResult, auroc_est
from .paper_numbers import (METHOD_LABELS, PAPER_ABLATION, PAPER_ALL_JAILBREAKS, PAPER_CANVAS, PAPER_DEFENSES,
                            PAPER_MODELS_TEXT, PAPER_SRI_OVERHEAD_RANGE, paper_sizes)
from .detector_intervals import mean_auroc, method_difference
from .detector_tables import cell_str, estimate_str
from . import Verdict, weak_runs


def _weak_runs(results: dict[str, DetectorResult]) -> list[str]:
    """Runs whose model misses a precondition of the organisms page, or whose anchors are unfiltered."""
    return [res.run for res in results.values() if weak_models_line([res.run]) or res.anchors["last"].fallback]


def _weak_note(weak: list[str]) -> str:
    """" (runs that miss a precondition: ...)" for a verdict that does not agree with the paper; "" if none."""
    return f" (runs that miss a precondition, weak models or unfiltered anchors: {', '.join(weak)})" if weak else ""


def _as_in_paper(weak: list[str]) -> str:
    """The words "as in the paper" with the caveat of the runs behind them."""
    if not weak:
        return "as in the paper"
    return (f"as in the paper, though {', '.join(weak)} miss a precondition (weak model or unfiltered anchors, "
            "see above), so on those runs this is a measurement of a weak model, not evidence for the paper")


def _sep_count(diff: dict) -> str:
    runs = diff["runs"].values()
    up, down = sum(e.lo > 0 for e in runs), sum(e.hi < 0 for e in runs)
    return f"separated in {up} run(s) in this direction, {down} in the other, of {len(diff['runs'])}"


def ranking_sentence(results: dict[str, DetectorResult]) -> Verdict:
    """The ablation ranking as far as the intervals support it: every pair of detectors whose mean-over-runs
    AUROC difference has a 95% interval that excludes 0 is ranked; every other pair is listed as not separated.
    Kind ``detector.ranking``; data ``ranked`` ((higher, lower) method pairs) and ``tied`` (method pairs), both
    absent without intervals."""
    runs = [r.run for r in results.values()]
    if any(r.n_boot <= 0 for r in results.values()):
        return Verdict("No ranking: the profile computes no bootstrap intervals (n_boot=0), and point means are not "
                       "ranked.", kind="detector.ranking", runs=runs)
    ranked, tied, sep = [], [], []
    order = sorted(METHODS, key=lambda m: -mean_auroc(results, m).value)
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            d = method_difference(results, a, b)
            if d["verdict"] == "~":
                tied.append((a, b))
            else:
                hi, lo = (a, b) if d["verdict"] == ">" else (b, a)
                ranked.append((hi, lo))
                sep.append(f"{METHOD_LABELS[hi]} > {METHOD_LABELS[lo]} ({d['mean']})")
    tie = [f"{METHOD_LABELS[a]} vs {METHOD_LABELS[b]}" for a, b in tied]
    return Verdict("Ranked where the 95% interval of the mean AUROC difference excludes 0: "
                   + ("; ".join(sep) if sep else "no pair") + ". Not separated by the intervals: "
                   + ("; ".join(tie) if tie else "none") + ".", kind="detector.ranking", runs=runs,
                   ranked=tuple(ranked), tied=tuple(tied))


# ------------------------------------------------------------------------------------------------- conclusions
def conclusions(results: dict[str, DetectorResult], reports: dict[str, DefenseReport], tm: dict) -> str:
    """'What we reproduce, what we do not, and why', generated from the measured numbers (Markdown): the lines
    of :func:`conclusion_lines`."""
    return "\n".join(conclusion_lines(results, reports, tm))


def conclusion_lines(results: dict[str, DetectorResult], reports: dict[str, DefenseReport], tm: dict) -> list[str]:
    """The lines of :func:`conclusions`, the verdicts as :class:`srilib.chapters.Verdict` (kinds ``detector.*``). Every
    verdict rests on a 95% interval (:func:`srilib.stats.request_interval`: resampling requests wherever attacks
    are pooled); a verdict that agrees with the paper names the runs that miss a precondition."""
    weak_line = weak_models_line(list(results))
    lines = [weak_line] if weak_line else []
    weak = _weak_runs(results)
    runs = [res.run for res in results.values()]
    fb = [res.run for res in results.values() if res.anchors["last"].fallback]
    if fb:
        lines.append(Verdict(f"- Runs with UNFILTERED anchors ({', '.join(fb)}): the model refuses too little for "
                             "the paper's anchors, so their SRI is a prompt-type direction, not refusal dynamics; "
                             "their detection numbers do not test the paper's mechanism.", kind="detector.anchors",
                             runs=fb, weak=fb))
    pm = PAPER_ABLATION["sri_last"][0]
    have_ci = all(r.n_boot > 0 for r in results.values())
    s0 = {r.run: r.seeds[0] for r in results.values()}
    if have_ci:
        m = mean_auroc(results, "sri_last")
        chance, paper = interval_side(m, 0.5), interval_side(m, pm)
        above = [r.run for r in results.values() if r.auroc[("sri_last", s0[r.run])].lo > 0.5]
        verdict = {1: "Its interval lies above chance (0.5)", -1: "Its interval lies below chance",
                   0: "Its interval includes chance (0.5)"}[chance]
        verdict += {-1: " and below the paper's mean", 0: " and includes the paper's mean",
                    1: " and above the paper's mean"}[paper]
        lines.append(Verdict(
            f"- **SRI Guard detection** (last layer): mean AUROC {m} over {len(results)} run(s) (paper "
            f"{pm:.3f} over {PAPER_MODELS_TEXT}). {verdict}; per run, the interval lies above 0.5 in "
            f"{len(above)} of {len(results)} ({', '.join(above) or 'none'})"
            + (f"; runs that miss a precondition: {', '.join(weak)}." if weak else "."),
            kind="detector.auroc", side=chance, runs=runs, weak=weak, mean=m, paper_side=paper,
            above_chance=tuple(above)))
        ranking = ranking_sentence(results)
        paper_order = " > ".join(METHOD_LABELS[k] for k in sorted(METHODS, key=lambda k: -PAPER_ABLATION[k][0]))
        lines.append(Verdict(f"- **Ablation ranking** (paired bootstrap over the same prompts, mean over runs). "
                             f"{ranking} Paper (point means): {paper_order}.", kind=ranking.kind, runs=runs,
                             **ranking.data))
        dt, ds = method_difference(results, "sri_last", "text"), method_difference(results, "sri_last", "static")
        sides = {"text": interval_side(dt["mean"]), "static": interval_side(ds["mean"])}
        named = {"text": "text-based", "static": "static"}
        side = 1 if set(sides.values()) == {1} else -1 if -1 in sides.values() else 0  # SRI last beats both
        caveat = weak
        if side > 0:
            claim = ("The last-layer SRI signal beats both the text-based and the static baseline, "
                     f"{_as_in_paper(weak)}.")
        elif side < 0:
            lost = [named[k] for k, v in sides.items() if v < 0]
            claim = (f"Unlike the paper, the last-layer SRI signal is beaten by the {' and the '.join(lost)} "
                     f"baseline here (interval of the difference below 0){_weak_note(weak)}.")
        else:
            won = [named[k] for k, v in sides.items() if v > 0]
            tied = " and the ".join(named[k] for k, v in sides.items() if v == 0)
            caveat = weak if won else []
            claim = (f"The last-layer SRI signal beats the {won[0]} baseline (interval above 0), "
                     f"{_as_in_paper(weak)}, but is not separated by the intervals from the {tied} baseline, so "
                     "the paper's order is only partly reproduced." if won else
                     f"The last-layer SRI signal is not separated by the intervals from the {tied} baseline, so "
                     "the paper's order is neither reproduced nor contradicted here.")
        lines.append(Verdict(f"  SRI last minus text: {dt['mean']} ({_sep_count(dt)}); minus static: {ds['mean']} "
                             f"({_sep_count(ds)}). {claim}", kind="detector.baselines", side=side, runs=runs,
                             weak=caveat, sides=sides, differences={"text": dt["mean"], "static": ds["mean"]}))
        dd = method_difference(results, "sri_last", "sri_first")
        depth = interval_side(dd["mean"])
        lines.append(Verdict(
            f"- **Depth**: last-layer minus first-layer AUROC = {dd['mean']} (paired bootstrap, mean over "
            f"runs; {_sep_count(dd)}; paper "
            f"{PAPER_ABLATION['sri_last'][0] - PAPER_ABLATION['sri_first'][0]:+.3f} as point means). "
            + (f"Deeper layers carry more of the refusal signal, {_as_in_paper(weak)}." if depth > 0
               else f"The first layer does better than the last here (interval below 0), unlike the paper"
               f"{_weak_note(weak)}."
               if depth < 0 else "Not separated by the interval: the paper's gain from depth is "
               "neither seen nor excluded here."),
            kind="detector.depth", side=depth, runs=runs, weak=weak if depth else (), difference=dd["mean"]))
    else:
        lines.append(Verdict(
            f"- **SRI Guard detection** (last layer): mean AUROC "
            f"{np.mean([r.auroc[('sri_last', s0[r.run])].value for r in results.values()]):.3f} (paper "
            f"{pm:.3f}); this profile computes no intervals (n_boot=0), so no verdict and no ranking.",
            kind="detector.auroc", runs=runs))
    lines += _defense_lines(results, reports, weak)
    heldout = [(res, a) for res in results.values() for a in res.jailbreaks if a in HELDOUT_FAMILIES]
    if heldout:
        parts = []
        for res, a in heldout:
            sc = res.scores[("sri_last", res.seeds[0])]
            parts.append(f"{res.run} {a} {estimate_str(auroc_est(sc['harmless'], sc[a], n_boot=res.n_boot, seed=0))}")
        lines.append(f"- **Held-out attack family** ({', '.join(sorted({a for _, a in heldout}))}, never in any "
                     f"organism's training): SRI Guard AUROC {'; '.join(parts)} (95% bootstrap intervals). No "
                     "detector saw any attack.")
    if len(tm["labels"]) > 1:
        M = tm["auroc"]
        off = M[~np.eye(len(M), dtype=bool)]
        off = off[~np.isnan(off)]
        if len(off):
            lines.append(f"- **Across models** a guard fitted on one run's harmless signals reaches AUROC "
                         f"{off.min():.2f}–{off.max():.2f} on the others (point values, mean {off.mean():.3f}; "
                         f"diagonal mean {np.nanmean(np.diag(M)):.3f}); FPR at the source threshold "
                         f"{np.nanmean(tm['fpr'][~np.eye(len(M), dtype=bool)]) * 100:.1f}% on average. The paper's "
                         "surrogate result (a white-box model's SRI defending a black-box LLaDA-2) reads the "
                         "surrogate's own states on the target's text; this matrix is the simpler signal-level "
                         "transfer, shown without a verdict.")
    canvas = [(res, k) for res in results.values() for k in res.canvas_sets]
    if canvas:
        parts = []
        for res, k in canvas:
            sc = res.scores[("sri_last", res.seeds[0])]
            parts.append(f"{res.run} {k[len(CANVAS):]}: flagged {Rate.from_outcomes(sc[k] > res.guard.threshold_)}, "
                         f"AUROC {estimate_str(auroc_est(sc['harmless'], sc[k], n_boot=res.n_boot, seed=0))}")
        lines.append("- **Canvas attacks** (diffusion runs; text committed on the canvas before denoising, in the "
                     f"spirit of PAD / DIJA): {'; '.join(parts)}. Paper (LLaDA, Table 14): SRI Guard lowers ASR "
                     f"to {PAPER_CANVAS['prefill_affirmative'][3]:.2f} under PAD and "
                     f"{PAPER_CANVAS['interleaved_template'][3]:.2f} under DIJA.")
        lines += table14_conclusion(results)
    shift = shift_conclusion(results, weak)
    if shift:
        lines.append(shift)
    ran = sorted({a for res in results.values() for a in res.adaptive})
    if ran:
        parts = []
        for res in results.values():
            for k in res.adaptive:
                sc = res.scores[("sri_last", res.seeds[0])]
                au = estimate_str(auroc_est(sc["harmless"], sc[k], n_boot=res.n_boot, seed=0))
                parts.append(f"`{res.run}` {k}: AUROC {au}")
        lines.append(f"- **Adaptive attacks** ({', '.join(ran)}; never seen by any detector, searched against each "
                     f"target with a tiny budget): SRI Guard vs harmless, {'; '.join(parts)}.")
    adaptive = {"pair": "PAIR", "random_search": "Random Search"}
    not_run = [k for k in adaptive if k not in ran]
    missing = [f"{' and '.join(adaptive[k] for k in not_run)} (not run in this profile)"] if not_run else []
    if not any(res.diffuguard for res in results.values()):
        not_run.append("diffuguard")
        missing.append("DiffuGuard (paper Table 14)")
    if not canvas:
        not_run.append("canvas_attacks")
        missing.append("canvas attacks (none ran: no diffusion run with canvas_attacks, or a canvas too short "
                       "for them, see the notes above)")
    lines.append(Verdict(f"- **Not part of this run**: {', '.join(missing)}; the paper's {paper_sizes()} models "
                         "appear only when the profile names them.", kind="detector.not_run", runs=runs,
                         not_run=tuple(not_run)))
    return lines


def asr_drop(undefended: dict, defended: dict, key: str = "asr", n_boot: int = 2000) -> Estimate:
    """ASR undefended minus ASR with a defense (rows of :class:`.defenses.DefenseReport`), one run: the same
    generations before and after the defense (paired), pooled over attacks (clustered by request), so the
    interval is the paired cluster bootstrap over requests (:func:`srilib.stats.request_interval`)."""
    return request_interval(undefended[key], minus=defended[key], paired=True, n_boot=n_boot)


def pooled_flag_difference(rows: Sequence[dict]) -> tuple[Rate, Rate, Estimate]:
    """(share of jailbreak generations flagged, share of harmless ones flagged, their difference), pooled over
    runs (Self-Examine rows). The runs answer the same requests and the same harmless prompts, so each pool is
    clustered (jailbreaks by request, ``Rate.clusters``; harmless by prompt position), and the two pools are
    different prompts: :func:`srilib.stats.request_interval` gives cluster-adjusted rates and Newcombe's
    interval built from them."""
    fj = [r["flagged_jailbreak"] for r in rows]
    fh = [r["fpr"] for r in rows]
    if any(r.outcomes is None for r in fj + fh):
        raise ValueError("pooling flag rates over runs needs their per-item outcomes (Rate.from_outcomes)")
    jb = request_interval(np.concatenate([r.outcomes for r in fj]),
                          clusters=np.concatenate([r.clusters if r.clusters is not None else np.arange(r.n)
                                                   for r in fj]))
    harmless = request_interval(np.concatenate([r.outcomes for r in fh]), clusters=np.concatenate(
        [np.array([f"harmless {i}" for i in range(r.n)], dtype=object) for r in fh]))
    return jb, harmless, request_interval(jb, minus=harmless)


def _defense_lines(results, reports: dict[str, DefenseReport], weak: list[str]) -> list[str]:
    lines = []
    sri = [(rep, r) for rep in reports.values() if (r := rep.row("SRI Guard")) and r["status"] == "run"]
    if sri:
        runs = [rep.run for rep, _ in sri]
        alone = [r["overhead %"] for _, r in sri]
        incl = [r["overhead incl. capture %"] for _, r in sri]
        cap = [rep.capture_pct for rep, _ in sri]
        modes = sorted({rep.capture for rep, _ in sri})
        fallback = [rep.run for rep, _ in sri if rep.plain_is_traced]
        nonpositive = [run for run, c in zip(runs, cap) if c <= 0] if not fallback else []
        lines.append(Verdict(
            f"- **Overhead** (against plain untraced generation of the same batch; one timing per run on a shared "
            f"machine, no interval): SRI Guard alone adds {np.mean(alone):.3g}% ({min(alone):.2g}–{max(alone):.2g}% "
            f"per run); capturing the hidden states it reads (capture mode {', '.join(modes)}) costs "
            f"{np.mean(cap):.3g}% ({min(cap):.2g}–{max(cap):.2g}% per run), so capture + guard is "
            f"{np.mean(incl):.3g}% ({min(incl):.2g}–{max(incl):.2g}% per run). Paper: "
            f"{PAPER_DEFENSES['SRI Guard'][0]:g}% ({PAPER_SRI_OVERHEAD_RANGE[0]:g}–{PAPER_SRI_OVERHEAD_RANGE[1]:g}% "
            f"per model), as SRI Guard's whole overhead; against the other defenses, {paper_overhead_factor()['text']}."
            + (f" {', '.join(fallback)}: the sampler has no plain generate, so the base time is a traced one and the "
               "capture cost reads as 0." if fallback else "")
            + (f" A value at or below zero ({', '.join(nonpositive)}) means the traced and the plain timing of that "
               "run were within timing noise of each other: the cost is too small for one timing to resolve."
               if nonpositive else ""),
            kind="detector.overhead", runs=runs, alone=float(np.mean(alone)), capture=float(np.mean(cap)),
            incl=float(np.mean(incl)), traced_base=tuple(fallback), nonpositive=tuple(nonpositive)))
        factors = {}  # run -> cheapest measured baseline's overhead over capture + guard (inf: timed at or below 0)
        for rep, r in sri:
            base = [b["overhead %"] for n in ("perplexity filter", "Self-Examine")
                    if (b := rep.row(n)) and b["status"] == "run"]
            if base:
                factors[rep.run] = (min(base) / r["overhead incl. capture %"] if r["overhead incl. capture %"] > 0
                                    else math.inf)
        others = {n: [b["overhead %"] for rep in reports.values() if (b := rep.row(n)) and b["status"] == "run"]
                  for n in ("perplexity filter", "Self-Examine")}
        cmp = [f"{n} {np.mean(v):.3g}%" for n, v in others.items() if v]
        if cmp and factors:
            fin = [f for f in factors.values() if math.isfinite(f)]
            noise = len(factors) - len(fin)  # runs whose capture + guard timed at or below zero
            side = None if not fin else 1 if min(fin) > 1 else -1 if max(fin) < 1 else 0  # factor vs 1 (cheaper)
            if side is None:
                verdict = ("the capture timings are at or below zero (within timing noise), so no factor can be "
                           "given")
            elif side > 0:
                lo, hi = f"{min(fin):.0f}", f"{max(fin):.0f}"
                verdict = (f"capture + guard costs {lo if lo == hi else f'{lo}–{hi}'} times less than the cheapest "
                           "of them, run by run (the paper's factor: see the overhead line above)")
            elif side < 0:
                verdict = "capture + guard is not cheaper than the cheapest of them on any run"
            else:
                verdict = (f"capture + guard is {min(fin):.2g}–{max(fin):.2g} times cheaper than the cheapest of "
                           "them, run by run: cheaper on some runs, not on others")
            if fin and noise:
                verdict += (f" (of the {len(fin)} run(s) whose capture + guard timed above zero; on the other "
                            f"{noise} it timed at or below zero, within timing noise, so no factor there)")
            lines.append(Verdict(
                f"  Baselines measured here: {', '.join(cmp)} (paper {PAPER_DEFENSES['perplexity filter'][0]:g}% "
                f"and {PAPER_DEFENSES['Self-Examine'][0]:g}%): {verdict}.", kind="detector.cost", side=side,
                runs=list(factors), factors=factors, factor_lo=min(fin, default=None),
                factor_hi=max(fin, default=None), n_nonpositive=noise))
        jname = next(iter(reports.values())).judge
        und = [rep.row("undefended") for rep, _ in sri]
        refused = np.mean([rate_pct(r["harmless_refused"]) for _, r in sri])
        refused_und = np.mean([rate_pct(u["harmless_refused"]) for u in und])
        flagged = np.mean([rate_pct(r["fpr"]) for _, r in sri])
        fp = (f"With SRI Guard in place {refused:.1f}% of harmless eval prompts end up refused (the paper's "
              f"false-positive quantity, means over runs; paper {PAPER_DEFENSES['SRI Guard'][1]:g}% with SRI Guard, "
              f"{PAPER_DEFENSES['undefended'][1]:g}% undefended); undefended, "
              f"the model itself refuses {refused_und:.1f}%, and the guard flags {flagged:.1f}% (its threshold aims "
              "at 1% on prompts like the calibration ones)")
        asr_und = np.mean([rate_pct(u["asr"]) for u in und])
        if asr_und == 0:
            lines.append(Verdict(f"- **Defense**: the {jname} judge counts no jailbreak as successful even without a "
                                 f"defense, so ASR after a defense cannot show an effect on this profile. {fp}.",
                                 kind="detector.defense", runs=runs, refused=refused))
        else:
            ds = [asr_drop(u, r) for u, (_, r) in zip(und, sri)]
            sep = [run for d, run in zip(ds, runs) if d.lo > 0]
            pools = sorted({pool_label(rep.pool) for rep, _ in sri if rep.pool})
            lines.append(Verdict(
                f"- **Defense**: with SRI Guard the jailbreak ASR ({jname} judge) goes from {asr_und:.1f}% "
                f"to {np.mean([rate_pct(r['asr']) for _, r in sri]):.1f}% on average, over "
                f"{'; '.join(pools) or 'our pooled jailbreaks'} (paper "
                f"{PAPER_DEFENSES['undefended'][3]:g}% -> {PAPER_DEFENSES['SRI Guard'][3]:g}%, over "
                f"{PAPER_ALL_JAILBREAKS}: a different pool); the drop's 95% interval (paired cluster "
                f"bootstrap over requests: the same generations before and after the guard) excludes 0 on "
                f"{len(sep)} of {len(ds)} run(s)"
                + (f" ({', '.join(f'`{x}`' for x in sep)}{weak_caveat(sep)})" if sep else "") + f". {fp}.",
                kind="detector.defense", runs=runs, weak=weak_runs(sep), refused=refused,
                drops=dict(zip(runs, ds)), sides={run: interval_side(d) for run, d in zip(runs, ds)}))
            shared = [(rep, u, r) for (rep, r), u in zip(sri, und) if rep.shared_pool and r.get("asr_shared")
                      is not None and u.get("asr_shared") is not None]
            if shared:
                parts = [f"`{rep.run}` {u['asr_shared']} -> {r['asr_shared']} (drop "
                         f"{asr_drop(u, r, 'asr_shared')})" for rep, u, r in shared]
                labels = sorted({shared_pool_label(rep.shared_pool) for rep, _, _ in shared})
                lines.append(f"  On the pool of the attacks the paper's pool shares with ours ({'; '.join(labels)}; "
                             "our roleplay is WildJailbreak-like, not WildJailbreak, so it is left out): "
                             f"{'; '.join(parts)}.")
    se = [(rep.run, r) for rep in reports.values() if (r := rep.row("Self-Examine")) and r["status"] == "run"]
    if se:
        fj, fh, d = pooled_flag_difference([r for _, r in se])
        unp = 100.0 * sum(r["n_unparsed"] for _, r in se) / max(1, sum(r["n_answers"] for _, r in se))
        side = interval_side(d)
        lines.append(Verdict(
            f"- **Self-Examine** flags {fj} of jailbreak generations and {fh} of harmless ones (pooled over "
            f"runs; difference {d}); {unp:.0f}% of the model's answers contain no yes/no word at all. "
            + ("The interval of the difference includes 0: it does not separate the two here." if side == 0
               else "The interval of the difference excludes 0."),
            kind="detector.self_examine", side=side, runs=[run for run, _ in se], flagged_jailbreak=fj,
            flagged_harmless=fh, difference=d, unparsed_pct=unp))
    lg = [rep.row("LlamaGuard 3") for rep in reports.values()]
    if lg and all(r["status"] != "run" for r in lg):
        lines.append(f"- **LlamaGuard 3** was {lg[0]['status']}; its paper numbers are shown for reference only.")
    elif reports and "guard" in next(iter(reports.values())).judge.lower():
        lines.append("- **LlamaGuard 3** is both a defense and the ASR judge here, so its ASR after the defense "
                     "is not an independent measurement (it removes what the judge would count).")
    dgr = [(rep.run, r) for rep in reports.values() if (r := rep.row(DIFFUGUARD)) and r["status"] == "run"]
    if dgr:
        oh = [r["overhead %"] for _, r in dgr]
        aud = [f"`{run}` {r['audit_harmless']}" for run, r in dgr if r.get("audit_harmless") is not None]
        rates = all(r.get("asr") is not None for _, r in dgr)
        lines.append(Verdict(
            f"- **DiffuGuard overhead** (decoding-time, diffusion runs only: its untraced generation against the "
            f"run's plain untraced generation of the same timing batch; one timing per run, no interval): "
            f"{np.mean(oh):.3g}% ({min(oh):.3g}–{max(oh):.3g}% per run); the paper gives no overhead for it (it is "
            "not in Table 13)."
            + (f" Its audit flagged {'; '.join(aud)} of the harmless timing prompts (threshold set for "
               f"{paper_sizes()} models, not tuned here)." if aud else "")
            + (f" With DiffuGuard in place {np.mean([rate_pct(r['harmless_refused']) for _, r in dgr]):.1f}% of "
               "harmless eval prompts are refused and the pooled jailbreak ASR is "
               f"{np.mean([rate_pct(r['asr']) for _, r in dgr]):.1f}% (means over runs)." if rates else
               " Its harmless-refused share and jailbreak RR / ASR were not measured in this profile (cost); "
               "its ASR is measured on the canvas attacks only."),
            kind="detector.diffuguard_overhead", runs=[run for run, _ in dgr], overhead=float(np.mean(oh)),
            rates=rates))
    return lines


def shift_conclusion(results: dict[str, DetectorResult], weak: Sequence[str] | None = None) -> Verdict | None:
    """The harmless-shift verdict (Markdown bullet), from intervals only; None when the section did not run.
    ``weak``: runs that miss a precondition (default: :func:`_weak_runs`), named beside the verdict. Kind
    ``detector.shift``; data ``sides`` (run -> side of SRI minus text AUROC), ``fpr_above`` (runs whose
    false-positive rate lies above the threshold's aim) and ``broad`` (run -> side of the broad-mix guard's FPR
    minus the built-in guard's)."""
    runs = [r for r in results.values() if r.shift]
    if not runs:
        return None
    weak = [w for w in (_weak_runs(results) if weak is None else weak) if w in {r.run for r in runs}]
    parts, beats, loses, ties, over, sides, broad_sides = [], [], [], [], [], {}, {}
    for res in runs:
        p, ref = res.shift["pooled"], res.shift["rows"][0]
        q = 1 - res.cfg.quantile
        sides[res.run] = interval_side(p["sri_minus_text"])
        (beats if sides[res.run] > 0 else loses if sides[res.run] < 0 else ties).append(res.run)
        if interval_side(p["sri_fpr"], q) > 0:
            over.append(res.run)
        parts.append(f"{res.run}: FPR {p['sri_fpr']} (built-in eval {ref['sri_fpr']}), AUROC SRI "
                     f"{cell_str(p['sri_auroc'])} vs text {cell_str(p['text_auroc'])}")
    verdict = []
    if loses:
        verdict.append(f"the text signal beats SRI Guard on the broader harmless prompts on {', '.join(loses)} "
                       "(interval of the difference below 0), the opposite of the paper's Table 4 order")
    if beats:
        verdict.append(f"SRI Guard beats the text signal on {', '.join(beats)} (interval above 0)")
    if ties:
        verdict.append(f"the two are not separated by the intervals on {', '.join(ties)}")
    fpr = (f"its false-positive rate on the other families lies above the {100 * q:g}% the threshold aims at on "
           f"{', '.join(over)} (Wilson interval above it)" if over else
           f"no run's false-positive rate on the other families is separated from the {100 * q:g}% the threshold "
           "aims at")
    broad = []
    for res in runs:
        p = res.shift["pooled"]
        d = request_interval(p["lofo_fpr"], minus=p["sri_fpr"], paired=True)  # the same harmless prompts
        broad_sides[res.run] = side = interval_side(d)
        how = "lower" if side < 0 else "higher" if side > 0 else "not separated"
        broad.append(f"{res.run} {p['lofo_fpr']} ({how}, paired difference {d})")
    unt = "; ".join(f"{res.run}: FPR {u['sri_fpr']}, broad mix {u['broad_all_fpr']}; AUROC SRI "
                    f"{cell_str(u['sri_auroc'])}"
                    f" vs text {cell_str(u['text_auroc'])}" for res in runs for u in [res.shift["untouched"]])
    return Verdict(f"- **Harmless distribution shift** (guard fitted on the built-in harmless set, applied to "
                   f"{len(runs[0].shift['families'])} other families of harmless prompts pooled, dev split): "
                   f"{'; '.join(parts)}. Verdict: {'; '.join(verdict)}; {fpr}{_weak_note(weak)}. Refitted on the "
                   "built-in set plus the other families (each family left out of its own guard), SRI Guard flags "
                   f"{'; '.join(broad)}. On the untouched split, never used to fit or choose anything: {unt}.",
                   kind="detector.shift",
                   runs=[r.run for r in runs], weak=weak, sides=sides, fpr_above=tuple(over), broad=broad_sides)


def table14_conclusion(results: dict[str, DetectorResult]) -> list[Verdict]:
    """Verdict bullets for the Table 14 counterpart (runs where DiffuGuard ran; the cells :func:`run_diffuguard`
    stored): a difference is called only when its 95% paired bootstrap interval (same requests) excludes 0; an
    agreeing verdict carries the weak-model caveat in its sentence. Kind ``detector.table14``, one per run and
    canvas attack (data ``attack``); data ``sides`` holds the side of ``dg_minus_und`` (DiffuGuard − undefended)
    and of ``sri_minus_dg`` (SRI Guard − DiffuGuard)."""
    lines = []
    for res in results.values():
        cells = res.diffuguard.get("table14") or {}
        for k in res.canvas_sets:
            c = cells.get(k)
            if c is None or c["dg"] is None:
                continue
            name = k[len(CANVAS):]
            paper = PAPER_CANVAS.get(name)
            cav = weak_caveat([res.run]) + (" (and its anchors are UNFILTERED)" if res.anchors["last"].fallback
                                            else "")
            pname = paper[0] if paper else "the paper's attack"
            s = interval_side(c["dg_minus_und"])
            v1 = (f"DiffuGuard lowers ASR (interval of the difference below 0), as in the paper's {pname} row{cav}"
                  if s < 0 else f"DiffuGuard raises ASR (interval above 0), unlike the paper's {pname} row{cav}"
                  if s > 0 else "the interval includes 0, so DiffuGuard's effect is neither seen nor excluded")
            s2 = interval_side(c["sri_minus_dg"])
            v2 = (f"SRI Guard ends lower than DiffuGuard (interval below 0), as in the paper{cav}" if s2 < 0 else
                  f"SRI Guard ends higher than DiffuGuard (interval above 0), unlike the paper{cav}" if s2 > 0 else
                  "SRI Guard and DiffuGuard are not separated by the interval")
            ptxt = (f" Paper (LLaDA, {pname}): {paper[1]:.2f} undefended, {paper[2]:.2f} DiffuGuard, {paper[3]:.2f} "
                    "SRI Guard." if paper else "")
            lines.append(Verdict(
                f"- **Table 14 counterpart**, `{res.run}` {name}: ASR undefended {c['und']}, DiffuGuard "
                f"{c['dg']}, SRI Guard {c['sri']} ({res.diffuguard.get('judge', '?')} judge). "
                f"DiffuGuard − undefended {c['dg_minus_und']}: {v1}. SRI Guard − DiffuGuard "
                f"{c['sri_minus_dg']}: {v2} (95% paired bootstrap intervals over the same requests).{ptxt}",
                kind="detector.table14", runs=[res.run], weak=[res.run] if cav and (s or s2) else [], attack=name,
                sides={"dg_minus_und": s, "sri_minus_dg": s2}))
    return lines


__all__ = ["asr_drop", "pooled_flag_difference", "ranking_sentence", "conclusions", "conclusion_lines",
           "shift_conclusion", "table14_conclusion"]
