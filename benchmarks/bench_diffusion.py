"""Benchmark of the diffusion tracer, measured in one run on one model.

(a) tracing overhead: ``trace_batch`` (all recording: hidden-state pooling, texts and, under the default
    ``--capture after``, one extra forward pass; ``--capture decision`` reads the deciding passes, none extra) over
    ``generate`` (the same sampling loop with recording off), same model, prompts and batch of ``--batch``;
    target <= 1.10. Traced and untraced calls alternate for ``--rounds`` rounds; the ratio reported is the median
    of the per-round ratios (each round's two calls ran back to back, under the same machine load), next to the
    floor set by the extra forward pass alone: (steps + 1) / steps.
(b) batching: ``generate_traces`` (what the book runs: prompts grouped by token length, left padding, a fresh
    cache) over ``--prompts`` harmless prompts, at batch size ``--batch`` versus batch size 1; the ratio is the time
    per prompt at batch 1 over the time per prompt at batch ``--batch``; target >= 3. It also prints the
    padding efficiency (real tokens / padded positions) of the batches.

Each call is timed with two clocks at once: wall time (after synchronising a GPU) and the process's CPU time (on a
CPU that other jobs share, CPU time is not inflated by them; with several torch threads it also counts their
spin-waiting, so use ``--threads 1`` for a clean CPU-time measurement). The last two lines printed are the two
ratios by the clock chosen with ``--clock`` (default wall).

    python benchmarks/bench_diffusion.py [--model tiny-dlm] [--sampler low_confidence] [--gen-length 128]
        [--steps 32] [--batch 16] [--prompts 64] [--rounds 15] [--clock wall|cpu] [--threads N] [--dtype D]
        [--capture after|decision]
(c) prompt cache (block-causal DLMs such as ``smollm2-135m-dlm`` and ``tiny-dlm-blockcausal``, whose prompt never
    attends to the canvas): ``generate`` with the exact prompt KV cache and logits only where a step can commit,
    against the plain passes over prompt + canvas, alternating for ``--rounds`` rounds on the same batch; it prints
    the time per denoising step of each and the median per-round ratio (uncached / cached). Other families have no
    prompt cache and print that (c) does not apply. ``--only-cache`` runs (c) alone.

    python benchmarks/bench_diffusion.py --model smollm2-135m-dlm --gen-length 32 --steps 32 --batch 16 \
        --rounds 5 --threads 1 --only-cache

The CPU model is printed first.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import srilib
from srilib.prompts import get_prompts
from srilib.samplers import make_sampler
from srilib.timing import cpu_model
from srilib.traces import TraceStore, generate_traces, length_batches

CLOCKS = ("wall", "cpu")


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) taken by ``fn()``."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    w, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - w, time.process_time() - c


def _fresh_run(lm, prompts, sampler, batch_size: int) -> tuple[float, float]:
    """Time ``generate_traces`` on an empty temporary cache (nothing reused)."""
    with tempfile.TemporaryDirectory() as d:
        return _timed(lambda: generate_traces(lm, prompts, sampler, store=TraceStore(d), batch_size=batch_size,
                                              layers=[-1], progress=False))


def _padding_efficiency(lm, prompts, batch_size: int, canvas: int) -> float:
    """Real tokens over padded positions when ``prompts`` are batched as generate_traces batches them."""
    n = [len(x) + canvas for x in lm.encode(prompts)]
    batches = [[n[i] for i in b] for b in length_batches(n, batch_size)]
    return sum(sum(b) for b in batches) / sum(max(b) * len(b) for b in batches)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-dlm")
    ap.add_argument("--sampler", default="low_confidence")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=64, help="prompts of the batching comparison (b)")
    ap.add_argument("--rounds", type=int, default=15, help="traced/untraced rounds of (a)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each batch size in (b); the best is kept")
    ap.add_argument("--clock", choices=CLOCKS, default="wall")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--capture", choices=("after", "decision"), default="after")
    ap.add_argument("--only-cache", action="store_true", help="run the prompt-cache comparison (c) alone")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    lm = srilib.load_model(a.model, **({"dtype": a.dtype} if a.dtype else {}))
    sampler = make_sampler(a.sampler, gen_length=a.gen_length, steps=a.steps, capture=a.capture)
    batch = get_prompts("harmless", n=a.batch, seed=0)
    if a.only_cache:
        print(f"cpu: {cpu_model()}")
        return {"cache": _cache_comparison(lm, sampler, batch, a)}
    layers = [-1]
    sampler.trace_batch(lm, batch, layers)  # warm-up
    sampler.generate(lm, batch)
    rounds = []
    for _ in range(a.rounds):
        traced = _timed(lambda: sampler.trace_batch(lm, batch, layers))
        rounds.append((traced, _timed(lambda: sampler.generate(lm, batch))))

    many = get_prompts("harmless", n=a.prompts, seed=1)
    _fresh_run(lm, many[:2], sampler, 1)  # warm-up of the store path
    batched = min((_fresh_run(lm, many, sampler, a.batch) for _ in range(a.repeats)), key=lambda t: t[0])
    singles = min((_fresh_run(lm, many, sampler, 1) for _ in range(a.repeats)), key=lambda t: t[0])

    out = {}
    for i, clock in enumerate(CLOCKS):
        ratios = [tr[i] / pl[i] for tr, pl in rounds]
        out[clock] = {"traced": statistics.median(tr[i] for tr, _ in rounds),
                      "untraced": statistics.median(pl[i] for _, pl in rounds),
                      "overhead": statistics.median(ratios), "overhead_range": (min(ratios), max(ratios)),
                      "per_prompt_batch": batched[i] / len(many), "per_prompt_single": singles[i] / len(many),
                      "batching": singles[i] / batched[i]}
    eff = _padding_efficiency(lm, many, a.batch, a.gen_length)
    print(f"cpu: {cpu_model()}")
    print(f"model={a.model} device={lm.device} dtype={lm.dtype_name} sampler={sampler.name} "
          f"gen_length={a.gen_length} steps={a.steps} batch={a.batch} rounds={a.rounds} prompts={len(many)} "
          f"torch_threads={torch.get_num_threads()} capture={a.capture}")
    passes = sampler._schedule()[1]  # forward passes of an untraced run; tracing adds one under capture="after"
    floor = (passes + (a.capture == "after")) / passes
    for clock in CLOCKS:
        r = out[clock]
        lo, hi = r["overhead_range"]
        print(f"[{clock:4s}] (a) batch of {len(batch)}: traced {r['traced']:.3f} s, untraced {r['untraced']:.3f} s "
              f"(medians); per-round ratio median {r['overhead']:.3f}, range {lo:.3f}-{hi:.3f}; "
              f"(b) per prompt {r['per_prompt_single'] * 1e3:.1f} ms at batch 1, "
              f"{r['per_prompt_batch'] * 1e3:.1f} ms at batch {a.batch}")
    print(f"the extra forward pass alone costs {floor:.3f}x; padding efficiency at batch {a.batch} "
          f"(prompts grouped by length): {eff:.2f}")
    r = out[a.clock]
    out["cache"] = _cache_comparison(lm, sampler, batch, a)
    print(f"traced/untraced time ratio ({a.clock}): {r['overhead']:.3f} (target <= 1.10)")
    print(f"batch-1/batch-{a.batch} per-prompt time ratio ({a.clock}): {r['batching']:.2f} (target >= 3)")
    return out


def _cache_comparison(lm, sampler, batch, a) -> dict | None:
    """(c): ``generate`` with the prompt cache and sparse logits against the plain passes, alternating rounds."""
    from srilib.models import CACHED_FAMILIES

    if lm.family not in CACHED_FAMILIES:
        print(f"(c) prompt cache: does not apply to {a.model} (family {lm.family or 'bidirectional'!r}: its prompt "
              "attends to the canvas)")
        return None
    passes = sampler._schedule()[1]
    i = CLOCKS.index(a.clock)

    def run(cached: bool):
        sampler.use_prompt_cache = sampler.sparse_logits = cached
        return _timed(lambda: sampler.generate(lm, batch))[i]

    run(True), run(False)  # warm-up
    rounds = [(run(False), run(True)) for _ in range(a.rounds)]
    sampler.use_prompt_cache = sampler.sparse_logits = True
    plain = statistics.median(p for p, _ in rounds) / passes
    cached = statistics.median(c for _, c in rounds) / passes
    ratio = statistics.median(p / c for p, c in rounds)
    print(f"(c) prompt cache, {a.model}, batch {len(batch)}, {passes} forward passes per run, {a.clock} clock: "
          f"{plain:.3f} s per step without the cache, {cached:.3f} s with it (medians of {a.rounds} rounds)")
    print(f"uncached/cached step-time ratio ({a.clock}): {ratio:.2f}")
    return {"plain_step": plain, "cached_step": cached, "ratio": ratio}


if __name__ == "__main__":
    main()
