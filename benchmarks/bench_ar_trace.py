"""Benchmark: the cost of step-wise SRI tracing on an AR model, measured in one run.

Compares, on the same model, prompts, steps and dtype (greedy decoding):
  trace           srilib's ARSampler.trace_batch, capture="after" (the default: batched, KV cache, every pooling
                  of every step; one extra single-token forward pass after the last token)
  trace-decision  the same with capture="decision" (states read from the passes that chose each token: no extra
                  pass; the authors' convention)
  ar-generate     srilib's ARSampler.generate: the same decoding loop, no hidden states, nothing pooled
  generate        plain batched Hugging Face `generate` (no capture at all): the denominator of every ratio
  naive           the authors' release's approach: one prompt at a time, the whole sequence recomputed at every step
                  without a KV cache, all hidden states returned each step (timed on a subset, compared per prompt)

Each method runs in its own child process (so peak memory is its own), alternating methods over several
rounds to spread machine noise; we report medians of wall time and of the child's CPU time (on a machine that
other jobs share, CPU time is the steadier clock). The CPU model is printed with the numbers; the last lines
print the ratios.

    python benchmarks/bench_ar_trace.py [--model smollm2-135m] [--prompts 32] [--steps 32] [--rounds 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time


MODES = ("trace", "trace-decision", "ar-generate", "generate", "naive")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's resident memory every 5 ms; ``peak`` is the maximum above the start value."""

    def __enter__(self):
        self.start = self.peak_abs = _rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak_abs = max(self.peak_abs, _rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_abs = max(self.peak_abs, _rss_bytes())
        self.peak = self.peak_abs - self.start


def child(args) -> dict:
    import torch

    import srilib
    from srilib.prompts import get_prompts
    from srilib.samplers import ARSampler
    from srilib.samplers.ar import left_pad

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = srilib.load_model(args.model, **({"dtype": args.dtype} if args.dtype else {}))
    prompts = (get_prompts("harmful", "eval", n=args.prompts // 2) +
               get_prompts("harmless", "eval", n=args.prompts - args.prompts // 2))
    T = args.steps

    def trace(ps):
        return ARSampler(steps=T).trace_batch(lm, ps, [-1])

    def trace_decision(ps):
        return ARSampler(steps=T, capture="decision").trace_batch(lm, ps, [-1])

    def ar_generate(ps):
        return ARSampler(steps=T).generate(lm, ps)

    def generate(ps):
        x, a = left_pad(lm.encode(ps), lm.pad_id, lm.device)
        with torch.no_grad():
            return lm.model.generate(input_ids=x, attention_mask=a, max_new_tokens=T, do_sample=False,
                                     pad_token_id=lm.pad_id, eos_token_id=lm.eos_ids)

    @torch.no_grad()
    def naive(ps):
        eos = set(lm.eos_ids)
        for p in ps:
            ids = torch.tensor([lm.encode([p])[0]], device=lm.device)
            for _ in range(T):
                out = lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
                _ = [h[0, -1].float().cpu() for h in out.hidden_states]  # all layers, every step
                nxt = out.logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
                if int(nxt) in eos:
                    break

    fn = {"trace": trace, "trace-decision": trace_decision, "ar-generate": ar_generate, "generate": generate,
          "naive": naive}[args.mode]
    ps = prompts[: args.naive_prompts] if args.mode == "naive" else prompts
    fn(ps[:2])  # warm-up (allocator, kernels)
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(ps)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": args.mode, "seconds": dt, "cpu_seconds": dc, "n_prompts": len(ps), "peak_mb": mem.peak / 2**20,
            "rss_mb": mem.peak_abs / 2**20, "dtype": lm.dtype_name, "threads": torch.get_num_threads()}


def main():
    from srilib.timing import cpu_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--naive-prompts", type=int, default=4, help="prompts timed for the naive method")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per child (0: torch's default). On a shared machine, 1 thread per child "
                         "avoids oversubscription noise; the ratios compare like with like either way.")
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(child(args)))
        return
    res: dict[str, list[dict]] = {m: [] for m in MODES}
    base = [sys.executable, __file__, "--model", args.model, "--prompts", str(args.prompts), "--steps",
            str(args.steps), "--naive-prompts", str(args.naive_prompts), "--threads", str(args.threads)]
    base += ["--dtype", args.dtype] if args.dtype else []
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for r in range(args.rounds):
        for mode in (MODES if r == 0 else ("generate", "trace", "ar-generate", "trace-decision")):
            out = subprocess.run(base + ["--mode", mode], capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            res[mode].append(row)
            print(f"round {r + 1} {mode:8s} {row['seconds']:7.2f} s for {row['n_prompts']} prompts, "
                  f"peak +{row['peak_mb']:.0f} MiB (rss {row['rss_mb']:.0f} MiB)", flush=True)
    med = {m: statistics.median(x["seconds"] / x["n_prompts"] for x in v) for m, v in res.items() if v}
    cpu = {m: statistics.median(x["cpu_seconds"] / x["n_prompts"] for x in v) for m, v in res.items() if v}
    peak = {m: max(x["peak_mb"] for x in v) for m, v in res.items() if v}
    rss = {m: max(x["rss_mb"] for x in v) for m, v in res.items() if v}
    r0 = res["trace"][0]
    print(f"\ncpu: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"model={args.model} dtype={r0['dtype']} threads={r0['threads']} prompts={args.prompts} T={args.steps} "
          f"rounds={args.rounds} (naive timed on {args.naive_prompts} prompts)")
    for m in med:
        print(f"{m:14s} median {med[m] * 1000:8.1f} ms/prompt wall, {cpu[m] * 1000:8.1f} ms/prompt cpu   "
              f"peak +{peak[m]:.0f} MiB over the loaded model (process peak {rss[m]:.0f} MiB)")
    g, gc = med["generate"], cpu["generate"]
    print(f"ratio trace/generate (target <= 1.05): {med['trace'] / g:.3f} wall, {cpu['trace'] / gc:.3f} cpu")
    print(f"ratio trace-decision/generate (target <= 1.05): {med['trace-decision'] / g:.3f} wall, "
          f"{cpu['trace-decision'] / gc:.3f} cpu")
    print(f"ratio ar-generate/generate: {med['ar-generate'] / g:.3f} wall, {cpu['ar-generate'] / gc:.3f} cpu")
    print(f"ratio naive/trace (target >= 10): {med['naive'] / med['trace']:.1f}")
    print(f"peak memory trace/generate: {peak['trace'] / max(peak['generate'], 1e-9):.2f}; "
          f"trace-decision/generate: {peak['trace-decision'] / max(peak['generate'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
