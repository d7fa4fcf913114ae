"""Generate traces on several GPUs (or processes) at once with Hugging Face accelerate, into the shared cache.

Each process loads the model on its own device, traces every n-th batch of each prompt set
(``generate_traces(..., shard=(rank, world))``), then the main process waits for the others and merges the parts
into the same cache entries that the notebooks read: run the notebooks afterwards and they generate nothing.

Prompt sets are written ``kind:split:n[:attack]`` (built-in prompts, :func:`srilib.prompts.get_prompts`, seeded
by ``--seed``; ``n`` may be ``all``; the attack is applied as :class:`srilib.experiment.PromptSets` does), or
given as a file with one prompt per line. ``--profile NAME`` traces the profile's trace plan (:mod:`srilib.plan`:
every set its chapters declare, with the chapters' own settings, so the cache keys are the notebooks' own) for
the given run(s) (``--run``) or model(s) (``--model``: all of a model's runs in the profile): the sets with fixed
prompts are sharded over the processes; then the main process merges them and computes the rest (canvas
attacks, and the adaptive attacks' sets, whose prompts exist only once their search ran).

Examples
--------
One process (CPU or one GPU)::

    python -m srilib.distributed --run tiny-ar --prompts harmless:anchor:8 --steps 8 --batch-size 4

Paper scale (the paper's six 7-8B models), one command per model on every GPU of the machine: ``--model`` traces every
run of the model that the ``paper`` profile's notebooks evaluate (e.g. LLaDA under low_confidence, random,
dlm-ar and 32-token blocks), on every prompt set they build (anchors 400 + 400, 100 per evaluation set and
attack, guard training prompts; T = 32, canvas 128, bfloat16)::

    accelerate launch -m srilib.distributed --profile paper --model llama-3.1-8b-instruct
    accelerate launch -m srilib.distributed --profile paper --model qwen-2.5-7b-instruct
    accelerate launch -m srilib.distributed --profile paper --model gemma-7b-it
    accelerate launch -m srilib.distributed --profile paper --model llada-8b-instruct
    accelerate launch -m srilib.distributed --profile paper --model llada-1.5
    accelerate launch -m srilib.distributed --profile paper --model dream-v0-instruct-7b

then ``python -m srilib book --profile paper`` with the same ``--cache`` / ``$SRILIB_CACHE``: the notebooks find
every trace in the cache. (The paper profile reads Alpaca, AdvBench and JailbreakBench: network and
``datasets`` needed.) Explicit runs and sets instead of a profile::

    accelerate launch -m srilib.distributed --run llada-8b-instruct@random --steps 32 --gen-length 128 \\
        --dtype bfloat16 --prompts harmful:anchor:100 --prompts harmless:anchor:100 \\
        --prompts harmful:eval:50:flip_attack --prompts-file my_prompts.txt

Every process needs the model in its own GPU memory (data parallel; an 8B model in bfloat16 needs ~17 GB).
Interrupted runs resume from the batches on disk.
"""
from __future__ import annotations

import argparse
import gc
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Sequence

from .experiment import Experiment, Run, resolve_run
from .models import resolve_layers
from .traces import TraceSet, generate_traces, trace_key

# Experiment fields that a profile or the command line may set (they all enter the trace key or the sampler)
SETTINGS = ("steps", "gen_length", "block_length", "batch_size", "dtype", "quantization", "seed", "temperature")


@dataclass
class Job:
    """Prompt sets traced under one set of Experiment settings."""

    settings: dict  # Experiment keyword arguments (see SETTINGS)
    prompts: dict[str, list[str]] = field(default_factory=dict)  # set name -> prompts
    source: str = "command line"


# ----------------------------------------------------------------------------------------------- prompt sets
def parse_prompt_spec(spec: str, seed: int = 0) -> tuple[str, list[str]]:
    """``kind:split:n[:attack]`` -> (name, prompts). ``n`` is a count or ``all``; the attack uses its ``eval``
    templates unless ``split`` is ``train`` (as :meth:`srilib.experiment.PromptSets.build` does)."""
    from .prompts import get_prompts

    parts = spec.strip().split(":") if isinstance(spec, str) else []
    if len(parts) not in (3, 4) or not all(parts):
        raise ValueError(f"prompt set {spec!r}: write kind:split:n or kind:split:n:attack, e.g. harmful:anchor:400 "
                         "or harmful:eval:100:flip_attack (kind harmful|harmless, split train|anchor|eval|all)")
    kind, split, n = parts[:3]
    if n != "all" and not (n.isdigit() and int(n) > 0):
        raise ValueError(f"prompt set {spec!r}: n must be a positive integer or 'all', got {n!r}")
    prompts = get_prompts(kind, split, n=None if n == "all" else int(n), seed=seed)
    if len(parts) == 4:
        from .prompts import apply_attack
        prompts = apply_attack(parts[3], prompts, seed=seed, split="train" if split == "train" else "eval")
    return spec.strip(), prompts


def read_prompts_file(path: str | Path) -> tuple[str, list[str]]:
    """(name, prompts) from a UTF-8 text file with one prompt per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file {path}: no such file")
    prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not prompts:
        raise ValueError(f"--prompts-file {path} has no prompts; write one prompt per line")
    return f"file:{path.name}", prompts


# ----------------------------------------------------------------------------------------------- profiles
def profile_plan(profile: str, models: Sequence[str] = (), runs: Sequence[str] = (),
                 root: str | Path | None = None):
    """The profile's trace plan (:func:`srilib.plan.build_plan`) restricted to ``models`` and run labels ``runs``."""
    from .plan import build_plan

    full = build_plan(profile, root)
    labels = [resolve_run(r).label for r in runs]
    plan = full.select(models, labels)
    if not plan.needs:
        have = sorted({r.label for r in full.runs() if r.kind != "?"})
        raise ValueError(f"profile {profile!r} traces no run of {', '.join([*models, *labels])}; its runs are: "
                         f"{', '.join(have)}")
    return plan


# ----------------------------------------------------------------------------------------------- tracing
def _check_shard(rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard ({rank}, {world}): need world >= 1 and 0 <= rank < world")


def trace_shard(exp: Experiment, run: Run | str, lm, prompt_sets: dict[str, Sequence[str]], rank: int,
                world: int) -> None:
    """Trace this process's batches (every ``world``-th batch from ``rank``) of every prompt set; never merges."""
    _check_shard(rank, world)
    run = exp.resolve(run)
    store = exp.store  # generate_traces(shard=...) writes this shard's parts only and never merges
    layers = resolve_layers(lm, exp.layers)
    for name, prompts in prompt_sets.items():
        sampler = exp.sampler(run)
        key = trace_key(lm.fingerprint, list(prompts), sampler.config(), layers=layers, batch_size=exp.batch_size,
                        dtype=lm.dtype_name)
        if store.has(key):  # finished earlier: do not load it on every process
            continue
        generate_traces(lm, list(prompts), sampler, store=store, batch_size=exp.batch_size, layers=layers,
                        progress=exp.progress, shard=(rank, world), desc=f"[{rank + 1}/{world}] {run.label} {name}")


def merge_sets(exp: Experiment, run: Run | str, lm, prompt_sets: dict[str, Sequence[str]]) -> dict[str, TraceSet]:
    """Merge the parts of every prompt set (computing any batch still missing) into the cache; returns them."""
    run = exp.resolve(run)
    layers = resolve_layers(lm, exp.layers)
    return {name: generate_traces(lm, list(prompts), exp.sampler(run), store=exp.store, batch_size=exp.batch_size,
                                  layers=layers, progress=exp.progress, desc=f"{run.label} {name} (merge)")
            for name, prompts in prompt_sets.items()}


def _state(state, cpu: bool):
    if state is None:
        from accelerate import PartialState
        state = PartialState(cpu=cpu, timeout=timedelta(hours=24))  # a slow shard must not time out the barrier
    return state


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_jobs(jobs: dict[str, list[Job]], *, cache: str | None = None, state=None, progress: bool = True,
             cpu: bool = False) -> dict[str, dict[str, dict]] | None:
    """Trace every (run -> jobs) on this process's shard, wait for all processes, merge on the main one.

    ``state`` is an ``accelerate.PartialState`` (made here when None). Returns, on the main process, run label ->
    set name -> ``{"key", "n", "T", "path"}`` of the merged cache entry (read it with ``TraceStore.load``), and
    None on the others.
    """
    state = _state(state, cpu)
    rank, world = state.process_index, state.num_processes
    work = []
    for label, run_jobs_ in jobs.items():
        for job in run_jobs_:
            exp = Experiment(**job.settings, cache=cache, progress=progress, device=str(state.device))
            work.append((exp, resolve_run(label), job))
    work.sort(key=lambda w: w[1].model)  # one model in memory at a time
    for i, (exp, run, job) in enumerate(work):
        trace_shard(exp, run, exp.model(run.model), job.prompts, rank, world)
        if i + 1 == len(work) or work[i + 1][1].model != run.model:
            exp.release()
            _free()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    out: dict[str, dict[str, dict]] = {}
    for exp, run, job in work:
        for name, prompts in job.prompts.items():  # one set in memory at a time (paper-scale sets are large)
            ts = merge_sets(exp, run, exp.model(run.model), {name: prompts})[name]
            key = ts.meta["key"]
            out.setdefault(run.label, {})[name] = {"key": key, "n": len(ts), "T": ts.T,
                                                   "path": str(exp.store.path(key))}
        exp.release()
    return out


def run_plan_sharded(plan, *, state=None, progress: bool = True, cpu: bool = False) -> dict | None:
    """A trace plan (:mod:`srilib.plan`) over every process: each traces its shard of the needs with fixed
    prompts, model by model; after all processes are done the main process runs the plan, which merges those
    and computes the rest (canvas attacks, adaptive attacks). Returns the plan's report on the main process,
    None on the others."""
    state = _state(state, cpu)
    rank, world = state.process_index, state.num_processes
    for n in plan.needs:
        if n.exp is not None:
            n.exp.device, n.exp.progress = str(state.device), progress
    fixed = [n for n in plan.needs if n.error is None and not n.lazy and not n.canvas_attack and not n.references]
    for model in plan.models():
        mine = [n for n in fixed if n.run.model == model]
        for n in mine:
            trace_shard(n.exp, n.run, n.exp.model(model), {n.name: list(n.prompts)}, rank, world)
        if mine:
            mine[0].exp.release(model)
            _free()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return plan.run(progress=progress)


# ----------------------------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accelerate launch -m srilib.distributed",
                                description=__doc__.split("\n")[0], epilog="See the module docstring for examples.")
    p.add_argument("--run", action="append", default=[], metavar="MODEL[@SAMPLER]",
                   help="model or model@sampler to trace (repeatable; e.g. llada-8b-instruct@random)")
    p.add_argument("--model", action="append", default=[], metavar="MODEL",
                   help="with --profile: every run of this model that the profile evaluates (repeatable)")
    p.add_argument("--prompts", action="append", default=[], metavar="KIND:SPLIT:N[:ATTACK]",
                   help="built-in prompt set, e.g. harmful:anchor:400 or harmful:eval:100:flip_attack (repeatable)")
    p.add_argument("--prompts-file", action="append", default=[], type=Path, metavar="FILE",
                   help="text file with one prompt per line (repeatable)")
    p.add_argument("--profile", help="trace the profile's trace plan for --run / --model (srilib.plan)")
    p.add_argument("--steps", type=int, default=None, help="steps T (default 32, or the profile's)")
    p.add_argument("--gen-length", type=int, default=None,
                   help="diffusion canvas length (default 64, or the profile's)")
    p.add_argument("--block-length", type=int, default=None, help="diffusion block length (default: the canvas)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts per batch (default 16, or the profile's)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the model's)")
    p.add_argument("--quantization", choices=["8bit"], default=None, help="load in 8 bit (bitsandbytes, GPU)")
    p.add_argument("--seed", type=int, default=None, help="prompt subset and sampler seed (default 0)")
    p.add_argument("--cache", default=None, help="trace cache root (default $SRILIB_CACHE or ~/.cache/srilib)")
    p.add_argument("--cpu", action="store_true", help="force CPU processes (gloo), e.g. to try a launch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def build_jobs(args: argparse.Namespace) -> dict[str, list[Job]]:
    """The jobs of the --prompts/--prompts-file sets of a parsed command line, for every --run (explicit options
    over the defaults)."""
    explicit = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
    if not (args.prompts or args.prompts_file):
        return {}
    if not args.run:
        raise ValueError("--prompts / --prompts-file need --run MODEL[@SAMPLER] (which run traces them)")
    seed = int(explicit.get("seed", 0))
    sets = dict(parse_prompt_spec(s, seed=seed) for s in args.prompts)
    sets.update(read_prompts_file(f) for f in args.prompts_file)
    return {resolve_run(spec).label: [Job(dict(explicit), dict(sets))] for spec in args.run}


def check_args(args: argparse.Namespace) -> None:
    """Refuse a command line that would trace nothing or trace what no chapter reads, before any model loads."""
    if not (args.prompts or args.prompts_file or args.profile):
        raise ValueError("nothing to trace: give --prompts KIND:SPLIT:N, --prompts-file FILE or --profile NAME")
    if args.model and not args.profile:
        raise ValueError("--model needs --profile (it means: every run of the model in that profile); without a "
                         "profile name the runs with --run MODEL@SAMPLER")
    if not (args.run or args.model):
        raise ValueError("no run given: pass --run MODEL[@SAMPLER] (or --model MODEL with --profile)")
    explicit = [k for k in SETTINGS if getattr(args, k, None) is not None]
    if args.profile and explicit and not (args.prompts or args.prompts_file):
        raise ValueError(f"--profile traces with the chapters' own settings (so that the notebooks find the traces); "
                         f"--{explicit[0].replace('_', '-')} applies to --prompts sets only: change the profile "
                         "instead")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m srilib.distributed`` / ``accelerate launch -m srilib.distributed``."""
    import os

    args = _parser().parse_args(argv)
    try:
        check_args(args)
        if args.cache:
            os.environ["SRILIB_CACHE"] = str(args.cache)  # the plan's experiments use the default store
        plan = profile_plan(args.profile, args.model, args.run) if args.profile else None
        jobs = build_jobs(args)
        result = run_jobs(jobs, cache=args.cache, progress=not args.no_progress, cpu=args.cpu) if jobs else None
        report = run_plan_sharded(plan, progress=not args.no_progress, cpu=args.cpu) if plan else None
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: model / prompt source
        print(f"srilib.distributed: error: {e}", file=sys.stderr)
        return 1
    for label, sets in (result or {}).items():
        for name, r in sets.items():
            print(f"{label:40s} {name:40s} N={r['n']:4d} T={r['T']:3d} {r['path']}")
    if report is not None:
        print(f"profile {args.profile}: {report['distinct']} distinct trace sets ({report['computed']} computed, "
              f"{report['cached']} from the cache), {len(report['failed'])} failed")
        for f in report["failed"]:
            print("  FAILED", " / ".join(f))
    return 1 if report and report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
