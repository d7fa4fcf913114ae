"""Overhead of SRI Guard (and of the perplexity filter and Self-Examine) as a percentage of generation time.

The base is plain untraced generation of one batch (``sampler.generate``: final texts only, no hidden states
kept), the paper's "base generation time". SRI Guard needs the hidden states, which only a traced generation
(``sampler.trace_batch``) records, so its overhead is printed twice: the guard alone (SRI signal from the pooled
states + autoencoder score) / plain time, and capture + guard = (traced - plain + guard) / plain time. The
baselines need no states: their time / plain time.

After a warm-up of everything, each of ``--gen-repeats`` rounds times a plain and a fresh traced generation
(alternating which goes first) and then each defense on the traced output (SRI Guard: median of ``--repeats``
calls); each ratio is the median of its per-round ratios, so that a drifting machine load affects numerator and
denominator alike. Anchors and the guard's harmless training traces are built first, through the trace cache
(not timed). The CPU model (/proc/cpuinfo) and torch's thread count are printed with the numbers.

    python benchmarks/bench_guard_overhead.py                    # smollm2-135m, T=32, batch of 8
    python benchmarks/bench_guard_overhead.py --model organism-ar --steps 32 --batch 8

Exit status 1 when SRI Guard alone adds ``--target`` % (default 0.1) or more of plain generation time (the
capture-inclusive number is printed beside it and is not part of the exit status).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srilib.timing import cpu_model, median_seconds  # noqa: E402

PAPER = {"SRI Guard": "0.02 (0.01-0.04 per model)", "perplexity filter": "4.26", "Self-Examine": "5.86",
         "LlamaGuard 3": "8.45"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="run: model or model@sampler (default smollm2-135m)")
    p.add_argument("--steps", type=int, default=32, help="T, generated tokens / denoising steps (default 32)")
    p.add_argument("--gen-length", type=int, default=64, help="diffusion canvas length (default 64)")
    p.add_argument("--batch", type=int, default=8, help="prompts in the timed batch (default 8)")
    p.add_argument("--n-anchor", type=int, default=8, help="anchor prompts per class (default 8)")
    p.add_argument("--n-train", type=int, default=40, help="harmless train prompts for the guard (default 40)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls of SRI Guard (median; default 20)")
    p.add_argument("--gen-repeats", type=int, default=3, help="timed generations (median; default 3)")
    p.add_argument("--no-baselines", action="store_true", help="skip the perplexity filter and Self-Examine")
    p.add_argument("--target", type=float, default=0.1,
                   help="fail when SRI Guard alone adds this %% or more of plain generation time")
    p.add_argument("--cache", default=None, help="trace cache (default $SRILIB_CACHE or <repo>/.cache)")
    args = p.parse_args(argv)

    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from srilib.baselines import (PerplexityFilter, SelfExamine, has_plain_generate, plain_generate,
                                  sampler_generate)
    from srilib.chapters.defenses import short_sampler
    from srilib.chapters.detector import GuardConfig, fit_guard, guard_prompts
    from srilib.experiment import Experiment, PromptSets
    from srilib.models import resolve_layers

    cache = args.cache or os.environ.get("SRILIB_CACHE") or str(ROOT / ".cache")
    exp = Experiment(steps=args.steps, gen_length=args.gen_length, batch_size=args.batch, cache=cache,
                     progress=False)
    run = exp.resolve(args.model)
    t0 = time.perf_counter()
    lm = exp.model(run.model)
    sets = PromptSets.build(n_anchor=args.n_anchor, n_eval=args.batch, attacks=["refusal_suppression"])
    anchors = exp.anchors(run, sets)
    harmless = exp.traces(run, guard_prompts(args.n_train), "guard/harmless-train")
    n_cal = max(2, args.n_train // 4)
    guard = fit_guard(anchors.signal(harmless), GuardConfig(min_calibration=n_cal), anchors_key=anchors)
    print(f"setup (model, anchors, guard fit; cached traces reused): {time.perf_counter() - t0:.1f} s; "
          f"{guard!r}, {guard.n_params_} parameters; torch threads {torch.get_num_threads()}")

    prompts = [q for pair in zip(sets.eval_harmless, sets.attacked["refusal_suppression"]) for q in pair]
    prompts = prompts[:args.batch]
    sampler, layers = exp.sampler(run), resolve_layers(lm, exp.layers)
    state = {}

    def traced():
        state["ts"] = sampler.trace_batch(lm, prompts, layers)

    def plain():
        plain_generate(sampler, lm, prompts)

    def guard_call():
        sigma = anchors.signal(state["ts"])
        return guard.score_samples(sigma, anchors_key=anchors) > guard.threshold_

    calls = {"SRI Guard": lambda: median_seconds(guard_call, args.repeats)}
    se = None
    if not args.no_baselines:
        if lm.kind == "ar":
            ppl = PerplexityFilter(lm, batch_size=args.batch).fit(sets.eval_harmless[:4])
            calls["perplexity filter"] = lambda: median_seconds(lambda: ppl.flag(state["ts"].prompts), 1, False)
        se = SelfExamine(sampler_generate(lm, short_sampler(exp, run, 8), args.batch))
        calls["Self-Examine"] = lambda: median_seconds(lambda: se.flag(None, state["ts"].texts), 1, False)

    # warm-up of everything, then rounds: a plain and a fresh traced generation (alternating which goes first),
    # followed by each defense on the traced output, so that every ratio compares timings taken minutes apart at
    # most (the machine's load drifts)
    short_sampler(exp, run, 2).trace_batch(lm, prompts[:1], layers)
    traced()
    plain()
    for fn in calls.values():
        fn()
    rounds = max(1, args.gen_repeats)
    gen_t, plain_t, t = [], [], {k: [] for k in calls}
    for r in range(rounds):
        for which in (("traced", "plain") if r % 2 == 0 else ("plain", "traced")):
            (gen_t if which == "traced" else plain_t).append(
                median_seconds(traced if which == "traced" else plain, 1, warmup=False))
        for k, fn in calls.items():
            t[k].append(fn())
    gen_t, plain_t = np.array(gen_t), np.array(plain_t)
    med = {k: float(np.median(v)) for k, v in t.items()}
    ratios = {k: float(np.median(100.0 * np.array(v) / plain_t)) for k, v in t.items()}
    capture = float(np.median(100.0 * (gen_t - plain_t) / plain_t))
    incl = float(np.median(100.0 * (gen_t - plain_t + np.array(t["SRI Guard"])) / plain_t))
    print(f"machine: {cpu_model()}; {os.cpu_count()} logical CPUs; torch threads {torch.get_num_threads()}; "
          f"device {lm.device}")
    print(f"plain generation (sampler.generate, no hidden states), {run.label}, {len(prompts)} prompts x "
          f"T={args.steps}: {np.median(plain_t):.3f} s (median of {rounds} rounds; per round "
          f"{', '.join(f'{x:.3f}' for x in plain_t)})"
          + ("" if has_plain_generate(sampler) else "  [sampler has no generate: this is a traced generation]"))
    print(f"traced generation (sampler.trace_batch, capture {state['ts'].meta.get('capture', 'after')}): "
          f"{np.median(gen_t):.3f} s (per round {', '.join(f'{x:.3f}' for x in gen_t)}); capturing the states "
          f"costs {capture:+.2f}% of plain generation")
    print(f"SRI Guard (SRI signal from pooled states + autoencoder score): {med['SRI Guard'] * 1e3:.3f} ms per "
          f"batch (median of {args.repeats} calls per round)")
    if "perplexity filter" in med:
        print(f"perplexity filter (prompt scored by {lm.name}): {med['perplexity filter']:.3f} s per batch")
    if se is not None:
        print(f"Self-Examine (8-token yes/no answer by {lm.name}, plain generation): {med['Self-Examine']:.3f} s "
              f"per batch; {se.n_unparsed_}/{len(prompts)} answers had no yes/no word")

    print(f"\noverhead as % of plain generation time, {run.label}, T={args.steps}, batch {len(prompts)}, one run, "
          f"median over {rounds} rounds of per-round ratios (paper, 7-8B on GPU, beside):")
    for name, r in ratios.items():
        print(f"  {name:28s} {r:10.4f} %   (paper {PAPER[name]})")
    print(f"  {'SRI Guard incl. capture':28s} {incl:10.4f} %   (paper {PAPER['SRI Guard']}, as its whole overhead)")
    base = [ratios[k] for k in ("perplexity filter", "Self-Examine") if k in ratios]
    if base:
        print("cheapest baseline / SRI Guard incl. capture: "
              + (f"{min(base) / incl:.1f}x" if incl > 0 else "n/a (capture timing at or below zero: noise)"))
    ok = ratios["SRI Guard"] < args.target
    print(f"SRI Guard alone {ratios['SRI Guard']:.4f}% of plain generation time: "
          f"{'PASS' if ok else 'FAIL'} (target < {args.target}%); incl. capture {incl:.4f}%")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
