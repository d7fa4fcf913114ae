"""Generate traces on several GPUs (or processes) at once with Hugging Face accelerate, into the shared cache.

Each process loads the model on its own device, traces every n-th batch of each prompt set
(``generate_traces(..., shard=(rank, world))``), then the main process waits for the others and merges the parts
into the same cache entries that the notebooks read: run the notebooks afterwards and they generate nothing.

Prompt sets are written ``kind:split:n[:attack]`` (built-in prompts, :func:`srilib.prompts.get_prompts`, seeded
by ``--seed``; ``n`` may be ``all``; the attack is applied as :class:`srilib.experiment.PromptSets` does), or
given as a file with one prompt per line. ``--profile NAME`` adds every set that the profile's notebooks build
for the given run(s) (``--run``, or ``--model``: all of a model's runs in the profile), with the profile's
steps, canvas, batch size, dtype and seed, so the cache keys are the notebooks' own.

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
Interrupted runs resume from the batches on disk. Not covered by ``--profile``: traces made with the extra
``seeds`` of a chapter (the sampling chapter's seed-stability check), which the chapter generates itself.
"""
from __future__ import annotations

import argparse
import ast
import gc
import inspect
import json
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Sequence

from .experiment import Experiment, Run, parse_run, resolve_layers
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
        from .attacks import apply_attack
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
def notebook_defaults(path: str | Path) -> dict:
    """Literal assignments of a notebook's ``parameters`` cell (papermill's defaults); {} if unreadable."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell.get("source", ""))
            try:
                tree = ast.parse(src)
            except SyntaxError:
                return {}
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return out


def _notebook_runs(exp: Experiment, params: dict) -> set[str]:
    """Run labels (model@sampler) a notebook evaluates: its ``models``/``runs`` plus block-length variants."""
    runs = list(params.get("models") or []) + list(params.get("runs") or [])
    if params.get("block_lengths"):
        from .chapters.sampling import expand_runs
        from .models import REGISTRY, list_models
        list_models()
        kinds = {m: REGISTRY[m].kind for m in (parse_run(r).model for r in runs) if m in REGISTRY}
        runs = expand_runs(runs, params["block_lengths"], kinds)
    return {exp.resolve(r).label for r in runs}


def _profile_notebooks(profile: str, root: str | Path | None, overrides: dict | None):
    """(profile, [(notebook, params, run labels)]): each notebook's parameters as papermill would inject them."""
    from .experiment import setup
    from .profiles import load_profile

    prof = load_profile(profile)
    root = Path(root) if root is not None else _default_root()
    setup_args = set(inspect.signature(setup).parameters)
    out = []
    for nb in prof.notebooks:
        params = {**notebook_defaults(root / "notebooks" / f"{nb}.ipynb"), **prof.params_for(nb)}
        params.update({k: v for k, v in (overrides or {}).items() if k in setup_args})
        out.append((nb, params, _notebook_runs(Experiment(), params)))
    return prof, out


def _setup(prof, nb: str, params: dict):
    """``srilib.experiment.setup`` with a notebook's parameters (builds its prompt sets), as the notebook does."""
    from .experiment import setup

    missing = {"steps", "gen_length", "n_anchor", "n_eval"} - set(params)
    if missing:
        raise ValueError(f"profile {prof.name!r}, notebook {nb}: no value for {sorted(missing)} (neither in the "
                         f"profile nor in the notebook's parameters cell); run from the repository root (or pass "
                         "root=) or set them in the profile's `common`")
    return setup(**{k: v for k, v in params.items() if k in inspect.signature(setup).parameters})


def profile_runs(profile: str, model: str, root: str | Path | None = None) -> list[str]:
    """Every run label (model@sampler) of ``model`` that the profile's notebooks evaluate."""
    prof, nbs = _profile_notebooks(profile, root, None)
    runs = sorted({r for *_, rs in nbs for r in rs if parse_run(r).model == model})
    if not runs:
        models = sorted({parse_run(r).model for *_, rs in nbs for r in rs})
        raise ValueError(f"profile {prof.name!r} evaluates no run of {model!r}; its models are: {', '.join(models)}")
    return runs


def profile_jobs(profile: str, runs: Sequence[str], root: str | Path | None = None,
                 overrides: dict | None = None) -> dict[str, list[Job]]:
    """Per run label, the jobs (settings + prompt sets) that the profile's notebooks need for that run.

    A notebook's parameters are its ``parameters`` cell (``<root>/notebooks/<name>.ipynb``) updated with the
    profile's; like the notebooks, they go through :func:`srilib.experiment.setup`, whose experiment settings and
    :class:`~srilib.experiment.PromptSets` (anchor, evaluation and attacked sets) are traced, plus the detector's
    guard training prompts where a notebook sets ``n_train_harmless``. ``overrides`` (Experiment settings)
    replace the profile's; the notebooks then no longer find these traces unless the profile changes too.
    """
    prof, nbs = _profile_notebooks(profile, root, overrides)
    out: dict[str, list[Job]] = {}
    for spec in runs:
        label = Experiment().resolve(spec).label
        jobs: dict[tuple, Job] = {}
        for nb, params, nb_runs in nbs:
            if label not in nb_runs:
                continue
            exp, sets = _setup(prof, nb, params)
            settings = {k: getattr(exp, k) for k in SETTINGS}
            settings.update(overrides or {})
            job = jobs.setdefault(tuple(sorted(settings.items())), Job(settings, {}, f"profile {prof.name}:"))
            job.source += f" {nb}"
            named = {"anchor/harmless": sets.anchor_harmless, "anchor/harmful": sets.anchor_harmful,
                     "harmless": sets.eval_harmless, "raw": sets.eval_harmful, **sets.attacked}
            if params.get("n_train_harmless"):
                from .chapters.detector import guard_prompts
                named["guard/harmless-train"] = guard_prompts(params["n_train_harmless"], seed=exp.seed)
            for name, prompts in named.items():
                if job.prompts.setdefault(name, prompts) != prompts:
                    job.prompts[f"{name} ({nb})"] = prompts
        if not jobs:
            listed = sorted({r for *_, rs in nbs for r in rs})
            raise ValueError(f"no notebook of profile {prof.name!r} evaluates {label}; its runs are: "
                             f"{', '.join(listed)}. Pass one of those to --run, or give the sets with --prompts")
        out[label] = list(jobs.values())
    return out


def _default_root() -> Path:
    cwd = Path.cwd()
    return cwd if (cwd / "notebooks").is_dir() else Path(__file__).resolve().parent.parent


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


def run_jobs(jobs: dict[str, list[Job]], *, cache: str | None = None, state=None, progress: bool = True,
             cpu: bool = False) -> dict[str, dict[str, dict]] | None:
    """Trace every (run -> jobs) on this process's shard, wait for all processes, merge on the main one.

    ``state`` is an ``accelerate.PartialState`` (made here when None). Returns, on the main process, run label ->
    set name -> ``{"key", "n", "T", "path"}`` of the merged cache entry (read it with ``TraceStore.load``), and
    None on the others.
    """
    import torch

    from .models import load_model

    if state is None:
        from accelerate import PartialState
        state = PartialState(cpu=cpu, timeout=timedelta(hours=24))  # a slow shard must not time out the barrier
    rank, world = state.process_index, state.num_processes
    device = str(state.device)
    loaded: dict[tuple, object] = {}

    def model(exp: Experiment, run: Run):
        key = (run.model, exp.dtype, exp.quantization)
        if key not in loaded:
            if loaded:  # one model in memory at a time
                loaded.clear()
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            kw = {"dtype": exp.dtype} if exp.dtype else {}
            if exp.quantization == "8bit":  # as Experiment.model does
                kw["load_in_8bit"] = True
            elif exp.quantization:
                raise ValueError(f"unknown quantization {exp.quantization!r}; use None or '8bit'")
            loaded[key] = load_model(run.model, device=device, **kw)
        return loaded[key]

    plan = []
    for label, run_jobs_ in sorted(jobs.items(), key=lambda kv: parse_run(kv[0]).model):
        for job in run_jobs_:
            exp = Experiment(**job.settings, cache=cache, progress=progress)
            plan.append((exp, exp.resolve(label), job))
    for exp, run, job in plan:
        trace_shard(exp, run, model(exp, run), job.prompts, rank, world)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    out: dict[str, dict[str, dict]] = {}
    for exp, run, job in plan:
        for name, prompts in job.prompts.items():  # one set in memory at a time (paper-scale sets are large)
            ts = merge_sets(exp, run, model(exp, run), {name: prompts})[name]
            key = ts.meta["key"]
            out.setdefault(run.label, {})[name] = {"key": key, "n": len(ts), "T": ts.T,
                                                   "path": str(exp.store.path(key))}
    return out


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
    p.add_argument("--profile", help="add every set the profile's notebooks need for --run, with its settings")
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
    """The jobs of a parsed command line: --profile sets (profile settings, overridden by explicit options)
    plus --prompts/--prompts-file sets (explicit options over the defaults)."""
    explicit = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
    if not (args.prompts or args.prompts_file or args.profile):
        raise ValueError("nothing to trace: give --prompts KIND:SPLIT:N, --prompts-file FILE or --profile NAME")
    if args.model and not args.profile:
        raise ValueError("--model needs --profile (it means: every run of the model in that profile); without a "
                         "profile name the runs with --run MODEL@SAMPLER")
    runs = list(args.run) + [r for m in args.model for r in profile_runs(args.profile, m)]
    if not runs:
        raise ValueError("no run given: pass --run MODEL[@SAMPLER] (or --model MODEL with --profile)")
    jobs: dict[str, list[Job]] = {}
    if args.profile:
        jobs.update(profile_jobs(args.profile, runs, overrides=explicit))
    if args.prompts or args.prompts_file:
        seed = int(explicit.get("seed", 0))
        sets = dict(parse_prompt_spec(s, seed=seed) for s in args.prompts)
        sets.update(read_prompts_file(f) for f in args.prompts_file)
        for spec in runs:
            label = Experiment().resolve(spec).label
            jobs.setdefault(label, []).append(Job(dict(explicit), dict(sets)))
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m srilib.distributed`` / ``accelerate launch -m srilib.distributed``."""
    args = _parser().parse_args(argv)
    try:
        jobs = build_jobs(args)
        result = run_jobs(jobs, cache=args.cache, progress=not args.no_progress, cpu=args.cpu)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: model / prompt source
        print(f"srilib.distributed: error: {e}", file=sys.stderr)
        return 1
    if result is not None:
        for label, sets in result.items():
            for name, r in sets.items():
                print(f"{label:40s} {name:40s} N={r['n']:4d} T={r['T']:3d} {r['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
