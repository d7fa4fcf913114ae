"""Benchmark: Random Search candidate scoring, batched vs one at a time, with and without the prefix KV cache.

On one model (default SmolLM2-135M-Instruct in float32) and one request, the same candidate suffixes are scored
four ways, alternating over several rounds (medians reported):
  batched+cache   ``n_candidates`` per forward pass on top of the KV-cached chat prefix (the default)
  batched         ``n_candidates`` per forward pass, whole sequence each time
  single+cache    one candidate per forward pass, KV-cached prefix
  single          one candidate per forward pass, whole sequence (the published code's way)
Then it runs a small budget end to end (``--requests`` harmful requests x ``--iterations`` x ``--candidates``,
no cache) on each of ``--budget-models`` (with the AR -> DLM transfer when both kinds are listed), times the
full budget of one request with the early stop switched off, and, unless ``--no-pair``, runs
PAIR on ``--pair-requests`` requests with the same model as attacker and target (greedy ARSampler replies,
heuristic judge), so a profile's budget can be sized from the wall-clock cost.

    python benchmarks/bench_random_search.py [--model smollm2-135m] [--dtype float32] [--threads 1]
        [--candidates 16] [--pool 32] [--rounds 3] [--requests 8] [--iterations 20] [--budget-models a,b]
        [--no-pair]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--candidates", type=int, default=16, help="candidates per forward pass (batched)")
    ap.add_argument("--pool", type=int, default=32, help="candidates scored per method and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=8, help="requests of the end-to-end small budget (0: skip)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--budget-models", default="",
                    help="comma-separated models for the small budget (default: --model), e.g. "
                         "smollm2-135m,smollm2-135m-refusal,organism-ar,organism-dlm (AR then DLM: transfer printed)")
    ap.add_argument("--no-pair", action="store_true")
    ap.add_argument("--pair-requests", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from dataclasses import replace

    import numpy as np
    import torch

    import srilib
    from srilib.timing import cpu_model
    from srilib.adaptive import RSBudget, RSSettings, run_random_search, transfer
    from srilib.adaptive import random_search as RS
    from srilib.adaptive import rs_objective as RO
    from srilib.prompts import get_prompts

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = srilib.load_model(args.model, dtype=args.dtype)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    allowed = RO.allowed_token_ids(lm)
    t_vocab = time.perf_counter() - t0

    # the search engine's speed: srilib's variant without replies (stop on argmax, one restart; labelled ours)
    budget = RSBudget(n_iterations=args.iterations, n_restarts=1, n_candidates=args.candidates, stop="argmax",
                      restarts="best", self_transfer=False)
    settings = RSSettings()
    request = get_prompts("harmful", "eval", n=1)[0]
    layout = RO._Layout(lm, settings.render(request), settings, budget.n_tokens_adv)
    tids = RO.target_token_ids(lm.tokenizer, budget.target)
    gen = torch.Generator().manual_seed(0)
    cands: list[list[int]] = []
    while len(cands) < args.pool:
        got, _ = RS._propose(layout.init, budget.n_tokens_change_max, args.candidates, gen, allowed, layout, 8)
        cands += got
    cands = cands[: args.pool]
    scorers = {"cache": RO._Scorer(lm, layout, tids, settings, use_prefix_cache=True),
               "full": RO._Scorer(lm, layout, tids, settings, use_prefix_cache=False)}
    if scorers["cache"].cache is None:
        print("note: the prefix KV cache is unavailable for this model; '+cache' rows use full passes")
    methods = {"batched+cache": ("cache", args.candidates), "batched": ("full", args.candidates),
               "single+cache": ("cache", 1), "single": ("full", 1)}
    times: dict[str, list[float]] = {m: [] for m in methods}
    values: dict[str, np.ndarray] = {}
    for s in scorers.values():  # warm-up
        s(cands[: args.candidates], args.candidates)
        s(cands[:1], 1)
    for r in range(args.rounds):
        for m, (which, bs) in (methods.items() if r % 2 == 0 else reversed(list(methods.items()))):
            t0 = time.perf_counter()
            obj, _ = scorers[which](cands, bs)
            times[m].append(time.perf_counter() - t0)
            values[m] = obj
    rate = {m: args.pool / statistics.median(v) for m, v in times.items()}
    diff = max(float(np.abs(values[m] - values["single"]).max()) for m in methods)
    prompt_len = len(layout.prefix) + budget.n_tokens_adv + len(layout.post)

    print(f"\ncpu: {cpu_model()}  (torch threads {torch.get_num_threads()}, torch {torch.__version__})")
    print(f"model={args.model} dtype={lm.dtype_name} load {t_load:.1f} s; suffix vocabulary {len(allowed)} tokens "
          f"({t_vocab:.1f} s, once per model); prompt {prompt_len} tokens ({len(layout.prefix)} cached prefix + "
          f"{budget.n_tokens_adv} suffix + {len(layout.post)} tail); {args.pool} candidates x {args.rounds} rounds")
    for m in methods:
        print(f"{m:14s} {rate[m]:8.1f} candidates/s   (median {statistics.median(times[m]):.2f} s for {args.pool})")
    print(f"ratio batched/single (with cache): {rate['batched+cache'] / rate['single+cache']:.2f}x")
    print(f"ratio batched/single (no cache):   {rate['batched'] / rate['single']:.2f}x")
    print(f"ratio cache/no cache (batched):    {rate['batched+cache'] / rate['batched']:.2f}x")
    print(f"ratio cache/no cache (single):     {rate['single+cache'] / rate['single']:.2f}x")
    print(f"ratio batched+cache / single (the published one-at-a-time way): "
          f"{rate['batched+cache'] / rate['single']:.2f}x")
    print(f"max |objective difference| between the four methods: {diff:.2e}")

    if args.requests > 0:
        reqs = get_prompts("harmful", "eval", n=args.requests)
        results = {}
        for name in [m for m in args.budget_models.split(",") if m] or [args.model]:
            blm = lm if name == args.model else srilib.load_model(name)
            t0 = time.perf_counter()
            res = run_random_search(blm, reqs, budget, settings, seed=0, cache=False, progress=False)
            dt = time.perf_counter() - t0
            results[name] = (blm, res)
            its = sum(r.iterations_used for r in res.records)
            scored = sum(r.n_scored for r in res.records)
            dropped = sum(r.n_dropped for r in res.records)
            gain = np.mean([r.trajectory[-1] - r.trajectory[0] for r in res.records])
            print(f"\nsmall budget on {name} ({blm.kind}, {blm.dtype_name}): {args.requests} requests x "
                  f"{args.iterations} iterations x {args.candidates} candidates = {dt:.1f} s wall "
                  f"({dt / args.requests:.2f} s/request, {scored / dt:.1f} candidates/s incl. proposals and "
                  "round-trip checks)")
            print(f"  iterations used {its} of {args.requests * budget.total_iterations}, early stops "
                  f"{sum(r.stopped_early for r in res.records)}, target argmax "
                  f"{int(res.success_argmax.sum())}/{len(res)}, candidates dropped by the round trip {dropped} of "
                  f"{scored + dropped}, mean objective gain {gain:+.3f} nats (mean final log p(target) "
                  f"{res.objectives.mean():.3f})")
            if blm is not lm:
                del blm
        ar = [n for n, (m, _) in results.items() if m.kind == "ar"]
        dl = [n for n, (m, _) in results.items() if m.kind == "dlm"]
        if ar and dl:
            src, dst = ar[-1], dl[0]
            tr = transfer(results[src][1], results[dst][0])
            own = results[dst][1]
            print(f"transfer {src} -> {dst}: mean log p(target) on {dst} {np.mean(tr['objective']):.3f} with {src}'s "
                  f"prompts (argmax {sum(tr['target_argmax'])}/{len(tr['objective'])}) vs {own.objectives.mean():.3f} "
                  f"with its own (argmax {int(own.success_argmax.sum())}/{len(own)})")
        # worst case: no early stop, the full budget's cost per request
        t0 = time.perf_counter()
        res = run_random_search(lm, reqs[:1], budget, replace(settings, early_stop=False), seed=0, cache=False,
                                progress=False)
        dt = time.perf_counter() - t0
        print(f"\nfull budget, early stop off ({args.model}): 1 request x {res.records[0].iterations_used} "
              f"iterations x {args.candidates} candidates = {dt:.1f} s ({res.records[0].n_scored / dt:.1f} "
              f"candidates/s); {args.requests} requests would take about {dt * args.requests:.0f} s")

    if not args.no_pair and args.pair_requests > 0:
        from srilib.adaptive import JudgeScorer, PAIRBudget, PAIRSettings, Responder, run_pair
        from srilib.judges import HeuristicJudge
        from srilib.samplers import ARSampler

        reqs = get_prompts("harmful", "eval", n=args.pair_requests)
        pb, ps = PAIRBudget(n_streams=3, n_iterations=3), PAIRSettings()
        t0 = time.perf_counter()
        res = run_pair(lm, reqs, Responder(lm, ARSampler(steps=32)), JudgeScorer(HeuristicJudge()), pb, ps,
                       seed=0, cache=False, progress=False)
        dt = time.perf_counter() - t0
        q = sum(len(r.queries) for r in res.records)
        fails = sum(r.n_parse_failures for r in res.records)
        attempts = sum(r.n_attack_attempts for r in res.records)
        print(f"\nPAIR ({args.model} attacker and target, {pb.n_streams} streams x {pb.n_iterations} iterations, "
              f"attacker {ps.max_new_tokens} new tokens max, target 32 greedy tokens, heuristic judge): "
              f"{args.pair_requests} requests {dt:.1f} s ({dt / args.pair_requests:.1f} s/request, {q} queries, "
              f"{fails}/{attempts} attacker replies rejected as invalid JSON, scores {res.scores.tolist()})")


if __name__ == "__main__":
    main()
