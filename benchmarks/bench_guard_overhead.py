"""Overhead of SRI Guard (and of the perplexity filter and Self-Examine) as a percentage of generation time.

Generation is timed as a fresh ``sampler.trace_batch`` on one batch (the trace cache is not involved); each
defense is then timed on that batch's output (SRI Guard: median of ``--repeats`` calls). After a warm-up of
everything, this repeats for ``--gen-repeats`` rounds and each ratio is the median of its per-round ratios, so
that a drifting machine load affects numerator and denominator alike.
Anchors and the guard's harmless training traces are built first, through the trace cache (not timed).
For AR models the script also times plain Hugging Face ``generate`` of the same tokens, to show what recording
the hidden states costs. Every ratio of one invocation comes from the same run; the last lines print them.

    python benchmarks/bench_guard_overhead.py                    # smollm2-135m, T=32, batch of 8
    python benchmarks/bench_guard_overhead.py --model organism-ar --steps 32 --batch 8

Exit status 1 when SRI Guard adds ``--target`` % (default 0.1) or more of generation time.
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

from srilib.timing import median_seconds  # noqa: E402

PAPER = {"SRI Guard": "0.02 (0.01-0.04 per model)", "perplexity filter": "4.26", "Self-Examine": "5.86",
         "LlamaGuard 3": "8.45"}


def plain_generate_seconds(lm, prompts, T: int, repeats: int) -> float:
    """Hugging Face greedy ``generate`` of T tokens for the same left-padded batch (no hidden states kept)."""
    import torch
    from srilib.samplers.ar import left_pad

    x, a = left_pad(lm.encode(prompts), lm.pad_id, lm.device)

    def gen():
        with torch.no_grad():
            lm.model.generate(input_ids=x, attention_mask=a, max_new_tokens=T, do_sample=False,
                              pad_token_id=lm.pad_id)
    return median_seconds(gen, repeats, warmup=False)  # the model is warm from the traced generations


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
    p.add_argument("--target", type=float, default=0.1, help="fail when SRI Guard adds this %% or more")
    p.add_argument("--cache", default=None, help="trace cache (default $SRILIB_CACHE or <repo>/.cache)")
    args = p.parse_args(argv)

    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from srilib.baselines import PerplexityFilter, SelfExamine, sampler_generate
    from srilib.chapters.detector import GuardConfig, fit_guard, guard_prompts, short_sampler
    from srilib.experiment import Experiment, PromptSets, resolve_layers

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

    def guard_call():
        sigma = anchors.signal(state["ts"])
        return guard.score_samples(sigma, anchors_key=anchors) > guard.threshold_

    calls = {"SRI Guard": lambda: median_seconds(guard_call, args.repeats)}
    if lm.kind == "ar":
        calls["plain generate"] = lambda: plain_generate_seconds(lm, prompts, args.steps, 1)
    se = None
    if not args.no_baselines:
        if lm.kind == "ar":
            ppl = PerplexityFilter(lm, batch_size=args.batch).fit(sets.eval_harmless[:4])
            calls["perplexity filter"] = lambda: median_seconds(lambda: ppl.flag(state["ts"].prompts), 1, False)
        se = SelfExamine(sampler_generate(lm, short_sampler(exp, run, 8), args.batch))
        calls["Self-Examine"] = lambda: median_seconds(lambda: se.flag(None, state["ts"].texts), 1, False)

    # warm-up of everything, then rounds: a fresh traced generation followed by each defense on its output, so
    # that every ratio compares timings taken minutes apart at most (the machine's load drifts)
    short_sampler(exp, run, 2).trace_batch(lm, prompts[:1], layers)
    traced()
    for fn in calls.values():
        fn()
    rounds = max(1, args.gen_repeats)
    gen_t, t = [], {k: [] for k in calls}
    for _ in range(rounds):
        gen_t.append(median_seconds(traced, 1, warmup=False))
        for k, fn in calls.items():
            t[k].append(fn())
    gen_t = np.array(gen_t)
    med = {k: float(np.median(v)) for k, v in t.items()}
    ratios = {k: float(np.median(100.0 * np.array(v) / gen_t)) for k, v in t.items() if k != "plain generate"}
    print(f"generation: fresh traced {run.label}, {len(prompts)} prompts x T={args.steps}: "
          f"{np.median(gen_t):.2f} s (median of {rounds} rounds; per round {', '.join(f'{x:.2f}' for x in gen_t)})")
    print(f"SRI Guard (SRI signal from pooled states + autoencoder score): {med['SRI Guard'] * 1e3:.3f} ms per "
          f"batch (median of {args.repeats} calls per round)")
    if "plain generate" in med:
        extra = np.median(100.0 * (gen_t - np.array(t["plain generate"])) / np.array(t["plain generate"]))
        print(f"plain HF generate of the same batch (no hidden states): {med['plain generate']:.2f} s; traced vs "
              f"plain: {extra:+.1f}% (recording the states; not counted in SRI Guard's overhead)")
    if "perplexity filter" in med:
        print(f"perplexity filter (prompt scored by {lm.name}): {med['perplexity filter']:.3f} s per batch")
    if se is not None:
        print(f"Self-Examine (8-token yes/no answer by {lm.name}): {med['Self-Examine']:.3f} s per batch; "
              f"{se.n_unparsed_}/{len(prompts)} answers had no yes/no word")

    print(f"\noverhead as % of generation time, {run.label}, T={args.steps}, batch {len(prompts)}, one run, "
          f"median over {rounds} rounds of per-round ratios (paper, 7-8B on GPU, beside):")
    for name, r in ratios.items():
        print(f"  {name:18s} {r:10.4f} %   (paper {PAPER[name]})")
    ok = ratios["SRI Guard"] < args.target
    print(f"SRI Guard overhead {ratios['SRI Guard']:.4f}% of generation time: "
          f"{'PASS' if ok else 'FAIL'} (target < {args.target}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
