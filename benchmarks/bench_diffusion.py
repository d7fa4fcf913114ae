"""Benchmark of the diffusion tracer, measured in one run on one model.

(a) tracing overhead: ``trace_batch`` (all recording: one extra forward pass, hidden-state pooling, texts) over
    ``generate`` (the same sampling loop with recording off), same model, prompts and batch; target <= 1.10.
(b) batching: time per prompt tracing the batch's prompts one at a time over time per prompt in the batch of 16;
    target >= 3.

Each run is timed with two clocks at once: wall time (after synchronising a GPU) and the process's CPU time (on a
CPU that other jobs share, CPU time is not inflated by them; with several torch threads it also counts their
spin-waiting, so use ``--threads 1`` for a clean CPU-time measurement). Each timing is the best of ``--repeats``
runs after a warm-up, with the runs of (a) interleaved. The last two lines printed are the two ratios by the clock
chosen with ``--clock`` (default wall).

    python benchmarks/bench_diffusion.py [--model tiny-dlm] [--sampler low_confidence] [--gen-length 128]
        [--steps 32] [--batch 16] [--repeats 3] [--clock wall|cpu] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch

import srilib
from srilib.prompts import get_prompts
from srilib.samplers import make_sampler


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) taken by ``fn()``."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    w, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-dlm")
    ap.add_argument("--sampler", default="low_confidence")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--dtype", default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    lm = srilib.load_model(a.model, **({"dtype": a.dtype} if a.dtype else {}))
    sampler = make_sampler(a.sampler, gen_length=a.gen_length, steps=a.steps)
    prompts = get_prompts("harmless", n=a.batch, seed=0)
    layers = [-1]
    sampler.trace_batch(lm, prompts, layers)  # warm-up
    sampler.generate(lm, prompts)
    traced, plain, singles = [], [], []
    for _ in range(a.repeats):
        traced.append(_timed(lambda: sampler.trace_batch(lm, prompts, layers)))
        plain.append(_timed(lambda: sampler.generate(lm, prompts)))
    for _ in range(a.repeats):
        one = [_timed(lambda p=p: sampler.trace_batch(lm, [p], layers)) for p in prompts]
        singles.append(tuple(sum(x[i] for x in one) for i in range(2)))
    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        t_tr, t_pl, t_one = (min(x[i] for x in xs) for xs in (traced, plain, singles))
        out[clock] = {"traced": t_tr, "untraced": t_pl, "per_prompt_batch": t_tr / len(prompts),
                      "per_prompt_single": t_one / len(prompts), "overhead": t_tr / t_pl,
                      "batching": (t_one / len(prompts)) / (t_tr / len(prompts))}
    print(f"model={a.model} device={lm.device} dtype={lm.dtype_name} sampler={sampler.name} "
          f"gen_length={a.gen_length} steps={a.steps} batch={len(prompts)} repeats={a.repeats} "
          f"torch_threads={torch.get_num_threads()}")
    for clock in ("wall", "cpu"):
        r = out[clock]
        print(f"[{clock:4s}] traced {r['traced']:.3f} s, untraced {r['untraced']:.3f} s (batch of {len(prompts)}); "
              f"per prompt {r['per_prompt_batch'] * 1e3:.1f} ms batched, {r['per_prompt_single'] * 1e3:.1f} ms "
              f"one at a time; ratios {r['overhead']:.3f} / {r['batching']:.2f}")
    r = out[a.clock]
    print(f"traced/untraced time ratio ({a.clock}): {r['overhead']:.3f} (target <= 1.10)")
    print(f"batch-1/batch-{len(prompts)} per-prompt time ratio ({a.clock}): {r['batching']:.2f} (target >= 3)")
    return out


if __name__ == "__main__":
    main()
