"""From a profile to an experiment: one way to configure a run (the profile file, the chapter's parameters checked,
the runs they name), and what every notebook shares (named runs, the standard prompt sets, cached traces, anchors).

**Profiles.** Run profiles say which notebooks the book runs, with which parameters, on which hardware.

A profile is a YAML file (``srilib/profiles/<name>.yaml`` or any path)::

    name: cpu
    description: ...
    hardware: cpu                # cpu | t4 | a100
    common: {profile: cpu, seed: 0, steps: 32}
    notebooks:                   # run in this order
      sri_geometry: {models: [smollm2-135m], n_anchor: 120}

The parameters a notebook receives are ``{**common, **notebooks[name]}`` over the defaults of its ``parameters``
cell (:func:`notebook_params`); papermill injects them.

Checked all at once before any model loads (:func:`check_params`): every chapter checks its parameters first
(:class:`srilib.chapters.chapter.Chapter`), and ``python -m srilib run`` checks each chapter's profile parameters
the same way before the trace plan starts (:func:`check_profile`). One :class:`ParameterError` names every bad
parameter with what it got and how to fix it, so that a typo in a run name or ``tau = -1`` stops a chapter at once
instead of after its models load (or, worse, after it has printed findings about runs that never ran). Rules are
per parameter name (a name means the same in every chapter): types, ranges (``tau > 0``, thresholds in (0, 1),
counts >= 1), run names (registered model, known sampler), attack names, the judges' forms and the adaptive
attacks' sections. A name without a rule is not checked here.

**Runs and the experiment.** A *run* is written ``model`` or ``model@sampler`` (e.g. ``organism-dlm@dlm-ar``); the
default sampler is ``ar`` for autoregressive models and ``low_confidence`` for diffusion models (:func:`resolve_run`).
Because every notebook builds its prompt sets here with the same parameters (:func:`setup_from`), their traces share
cache keys: a trace generated for one chapter is reused by the next, never regenerated.

One room: one way to configure a run, from the profile to the models, samplers and prompt sets a chapter analyses.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Callable, Mapping, Sequence

import yaml

from .prompts import apply_attack, get_prompts
from .signal import AnchorError, Anchors, AnchorStepError, build_anchors
from .traces import TraceSet, TraceStore, generate_traces

PROFILE_DIR = Path(__file__).parent / "profiles"
HARDWARE = ("cpu", "t4", "a100")
_KEYS = {"name", "description", "hardware", "common", "notebooks"}
_NB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Profile:
    """A parsed profile.

    Attributes
    ----------
    name, description, hardware : str
    common : dict
        Parameters shared by every notebook.
    notebook_params : dict
        Notebook name -> its own parameters, in run order.
    path : Path or None
        File the profile was read from.
    """

    name: str
    description: str
    hardware: str
    common: dict = field(default_factory=dict)
    notebook_params: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def notebooks(self) -> list[str]:
        """Notebook names in run order."""
        return list(self.notebook_params)

    def params_for(self, notebook: str) -> dict:
        """Parameters for ``notebook``: ``{**common, **notebooks[notebook]}``."""
        if notebook not in self.notebook_params:
            raise KeyError(f"profile {self.name!r} has no notebook {notebook!r}; it has {self.notebooks}. "
                           f"Add a `{notebook}:` entry under `notebooks:` in {self.path or 'the profile'}.")
        return {**self.common, **self.notebook_params[notebook]}


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``srilib/profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"profile file {p} does not exist")
        return p
    shipped = PROFILE_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ValueError(f"unknown profile {str(name_or_path)!r}; available: {', '.join(available_profiles())} "
                         f"(or pass a path to a .yaml file)")
    return shipped


def parse_profile(data: object, path: Path | None = None) -> Profile:
    """Validate a profile mapping (as read from YAML) and build a :class:`Profile`."""
    where = f"profile {path}" if path else "profile"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {sorted(_KEYS)}, got {type(data).__name__}")
    unknown = set(data) - _KEYS
    missing = {"name", "hardware", "notebooks"} - set(data)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                         f"allowed keys are {sorted(_KEYS)}")
    if data["hardware"] not in HARDWARE:
        raise ValueError(f"{where}: hardware must be one of {HARDWARE}, got {data['hardware']!r}")
    common = data.get("common") or {}
    notebooks = data["notebooks"] or {}
    if not isinstance(common, dict):
        raise ValueError(f"{where}: `common` must be a mapping of parameter -> value")
    if not isinstance(notebooks, dict) or not notebooks:
        raise ValueError(f"{where}: `notebooks` must be a non-empty mapping of notebook name -> parameters")
    for nb, params in notebooks.items():
        if not isinstance(nb, str) or not _NB_NAME.match(nb):
            raise ValueError(f"{where}: notebook name {nb!r} must be a notebook file stem like `sri_geometry`")
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"{where}: parameters of {nb!r} must be a mapping, got {type(params).__name__}")
    return Profile(name=str(data["name"]), description=str(data.get("description", "")).strip(),
                   hardware=data["hardware"], common=dict(common),
                   notebook_params={nb: dict(p or {}) for nb, p in notebooks.items()}, path=path)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``"cpu"``) or a profile YAML file by path."""
    path = _resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"profile {path} is not valid YAML: {e}") from e
    return parse_profile(data, path)


# ------------------------------------------------------------------------------- a notebook's parameters
def notebook_defaults(path: str | Path) -> dict:
    """The defaults of a notebook's ``parameters`` cell, as papermill reads them (``papermill.inspect_notebook``),
    evaluated as Python literals; a default that is not a literal is left out."""
    import papermill as pm

    out = {}
    for name, p in pm.inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(p["default"])
        except (ValueError, SyntaxError):
            pass
    return out


def notebook_params(profile, notebook: str, root: str | Path | None = None) -> dict:
    """A notebook's parameters as papermill gives them to it in the book: the profile's values over the
    notebook's own defaults."""
    root = Path(root) if root is not None else default_root()
    path = root / "notebooks" / f"{notebook}.ipynb"
    return {**(notebook_defaults(path) if path.is_file() else {}), **profile.params_for(notebook)}


def default_root() -> Path:
    """The repository root: the working directory when it holds ``notebooks/``, else the checkout srilib is in."""
    cwd = Path.cwd()
    return cwd if (cwd / "notebooks").is_dir() else Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------- the parameters' rules
class ParameterError(ValueError):
    """Bad chapter parameters: ``problems`` holds one line per parameter (name, value, fix)."""

    def __init__(self, chapter: str, problems: list[str]):
        self.chapter, self.problems = chapter, problems
        super().__init__(f"{len(problems)} bad parameter(s) for {chapter}; nothing was run:\n  - "
                         + "\n  - ".join(problems))


def _int(lo: int = 1) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < lo:
            return f"an integer >= {lo}"
    return check


def _num(lo: float, hi: float | None = None, open_lo: bool = True, open_hi: bool = True) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, Real) or math.isnan(v):
            return "a number" + _range(lo, hi, open_lo, open_hi)
        if (v <= lo if open_lo else v < lo) or (hi is not None and (v >= hi if open_hi else v > hi)):
            return "a number" + _range(lo, hi, open_lo, open_hi)
    return check


def _range(lo, hi, open_lo, open_hi) -> str:
    if hi is None:
        return f" {'>' if open_lo else '>='} {lo:g}"
    return f" in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"


def _optional(check: Callable) -> Callable:
    return lambda v: None if v is None else (lambda e: e and f"None or {e}")(check(v))


def _list_of(check: Callable, empty_ok: bool = False) -> Callable:
    """A list whose every item passes ``check``; the message names each bad item with what it must be."""
    def run(v):
        if not isinstance(v, (list, tuple)) or (not v and not empty_ok):
            return f"a {'' if empty_ok else 'non-empty '}list, each item {check(object()) or 'valid'}"
        bad = [f"{x!r} must be {e}" for x in v if (e := check(x))]
        if bad:
            return "a list of valid items: " + "; ".join(bad)
    return run


def _choice(*options) -> Callable:
    return lambda v: None if v in options else f"one of {', '.join(repr(o) for o in options)}"


def _bool(v):
    return None if isinstance(v, bool) else "True or False"


def _run(v):
    """A run name that resolves: registered model, known sampler for its kind (no model is loaded)."""
    from .models import masked_diffusion
    from .samplers.block_diffusion import BLOCK_DIFFUSION_NAMES
    from .samplers.diffusion import DIFFUGUARD_NAMES, SAMPLER_NAMES

    if not isinstance(v, str):
        return "a run name 'model' or 'model@sampler'"
    try:
        run = resolve_run(v)
    except ValueError as e:
        return f"a run that resolves ({e})"
    ok = (("ar", "ar-greedy") if run.kind == "ar" else SAMPLER_NAMES + DIFFUGUARD_NAMES if masked_diffusion(run.model)
          else BLOCK_DIFFUSION_NAMES + ("dlm-ar",))
    if run.sampler not in ok:
        return f"a known sampler for the {run.kind.upper()} model {run.model}: {', '.join(ok)}"


def _model(v):
    from .models import REGISTRY, list_models

    if v not in REGISTRY:
        return f"a registered model: {', '.join(list_models())}"


def _attack(v):
    from .prompts import ATTACKS

    return None if v in ATTACKS else f"a known attack: {', '.join(ATTACKS)}"


def _canvas_attack(v):
    from .canvas_attacks import CANVAS_ATTACKS

    return None if v in CANVAS_ATTACKS else f"a known canvas attack: {', '.join(CANVAS_ATTACKS)}"


def _judge(v):
    if v == "heuristic" or (isinstance(v, str) and v.startswith("llm:") and len(v) > 4):
        return None
    return "'heuristic' or 'llm:<hub id>' (e.g. 'llm:meta-llama/Llama-Guard-3-8B')"


_COUNTS = {"n_requests": 0, "n_iterations": 0, "n_restarts": 1, "n_candidates": 1, "n_tokens_adv": 1,
           "n_streams": 1, "max_new_tokens": 1, "judge_max_calls": 1}


def _guard_model(v):
    if v is not None and not (isinstance(v, str) and v):
        return "None (not run), 'auto' (Llama Guard 3 when a GPU is there) or a Hugging Face model name"


def _profile(v):
    if not (isinstance(v, str) and v):
        return "the profile's name or path (a label; the values come from the profile)"


def _section(name: str, *runs_keys: str) -> Callable:
    """An adaptive attack's section (``random_search`` / ``pair``): None (off) or a dict of known keys."""
    def check(v):
        if v is None:
            return None
        if not isinstance(v, Mapping):
            return "None (off) or a dict such as the profile's"
        problems = [f"{k}: {e}" for k, c in _COUNTS.items() if k in v and (e := _int(c)(v[k]))]
        for runs_key in runs_keys:
            if runs_key in v and v[runs_key] is not None and (e := _list_of(_run)(v[runs_key])):
                problems.append(f"{runs_key}: {e}")
        if "checkpoints" in v and (e := _list_of(_int(0))(v["checkpoints"])):
            problems.append(f"checkpoints: {e}")
        if "attacker" in v and (e := _model(v["attacker"])):
            problems.append(f"attacker: {e}")
        if problems:
            return f"a valid {name} section ({'; '.join(problems)})"
    return check


RULES: dict[str, Callable] = {
    "runs": _list_of(_run),
    "n_anchor": _int(1), "n_eval": _int(1), "steps": _int(1), "gen_length": _int(1), "batch_size": _int(1),
    "n_train_harmless": _int(1), "n_timing": _int(1), "n_per_family": _int(1), "guard_epochs": _int(1),
    "n_boot": _int(1), "self_examine_tokens": _int(1), "min_calibration": _int(1), "max_canvas_tokens": _int(1),
    "n_examples": _int(0), "n_cases": _int(0), "seed": _int(0),
    "seeds": _list_of(_int(0)), "seed_n_eval": _optional(_int(1)), "block_lengths": _list_of(_int(1), empty_ok=True),
    "tau": _num(0.0),
    "lambda_r": _list_of(_num(0.0, 1.0)), "dip": _num(0.0, 1.0), "paper_dip": _num(0.0, 1.0),
    "recover": _num(0.0, 1.0), "calib_fraction": _num(0.0, 1.0), "quantile": _num(0.0, 1.0),
    "attacks": _list_of(_attack, empty_ok=True), "canvas_attacks": _list_of(_canvas_attack, empty_ok=True),
    "source": _choice("builtin", "public"),
    "dtype": _choice(None, "float32", "bfloat16", "float16"),
    "quantization": _choice(None, "8bit", "4bit"),
    "judge": _judge, "judge2": _optional(_judge),
    "seed_runs": _optional(_list_of(_run)), "shift_runs": _optional(_list_of(_run)),
    "random_search": _section("Random Search", "curve_runs", "targets"), "pair": _section("PAIR", "targets"),
    "dlm_ppl_scorer": _model, "self_examine": _bool, "diffuguard": _bool, "diffuguard_rates": _bool,
    "guard_model": _guard_model, "profile": _profile,
}
FIXES = {"tau": "the paper uses 0.1", "lambda_r": "the paper's are [0.5, 0.3, 0.1]",
         "runs": "see the profile (srilib/profiles/cpu.yaml) for names that work"}


def check_params(chapter: str, params: Mapping) -> dict:
    """Check every parameter of ``params`` (a notebook's ``globals()`` or a profile's parameters) that has a rule
    in :data:`RULES`; raise one :class:`ParameterError` naming all bad ones, else return the checked values.
    Per-section run lists (``seed_runs``, ``shift_runs``, ``curve_runs``, ``targets``) must also name runs of
    ``runs``."""

    problems, checked = [], {}
    for name, rule in RULES.items():
        if name not in params:
            continue
        v = params[name]
        err = rule(v)
        if err:
            fix = f"; {FIXES[name]}" if name in FIXES else ""
            problems.append(f"{name} = {v!r}: must be {err}{fix}")
        checked[name] = v
    runs = checked.get("runs")
    if runs and not any(p.startswith("runs =") for p in problems):
        have = {resolve_run(r).label for r in runs}
        subsets = [("seed_runs", params.get("seed_runs")), ("shift_runs", params.get("shift_runs")),
                   ("random_search.curve_runs", (params.get("random_search") or {}).get("curve_runs")),
                   ("random_search.targets", (params.get("random_search") or {}).get("targets")),
                   ("pair.targets", (params.get("pair") or {}).get("targets"))]
        for key, sub in subsets:
            if isinstance(sub, (list, tuple)) and not any(p.startswith(key.split(".")[0] + " =") for p in problems):
                missing = [s for s in sub if isinstance(s, str) and _run(s) is None
                           and resolve_run(s).label not in have]
                if missing:
                    one = len(missing) == 1
                    it = "it" if one else "them"
                    problems.append(f"{key} = {list(sub)!r}: names {missing}, which {'is' if one else 'are'} not "
                                    f"among runs; add {it} to runs or drop {it}")
    if problems:
        raise ParameterError(chapter, problems)
    return checked


def check_profile(profile, root) -> None:
    """Check every chapter the profile runs before anything runs (``python -m srilib run``/``book`` call this
    first): each chapter's parameters (:func:`check_params`), and no parameter its notebook's parameters cell does
    not define (papermill would only warn, and the chapter would silently use its default). Raises one
    :class:`ParameterError` for the whole profile."""
    from pathlib import Path

    import papermill

    problems = []
    for name in profile.notebooks:
        params = profile.params_for(name)
        source = Path(root) / "notebooks" / f"{name}.ipynb"
        known = set(papermill.inspect_notebook(str(source))) if source.is_file() else set()
        if known:  # a notebook without a parameters cell takes what papermill injects
            problems += [f"{name}: {k} is not a parameter of notebooks/{name}.ipynb (misspelt? it defines "
                         f"{', '.join(sorted(known))})" for k in params if k not in known]
        try:
            check_params(name, params)
        except ParameterError as e:
            problems += [f"{name}: {p}" for p in e.problems]
    if problems:
        raise ParameterError(f"profile {profile.name!r} ({profile.path or 'in memory'})", problems)


DLM_DEFAULT_SAMPLER = "low_confidence"


@dataclass(frozen=True)
class Run:
    """One model under one sampler, resolved once (:func:`resolve_run`) from the name a profile writes.

    ``kind`` is the model's family ("ar" or "dlm", from the model registry, without loading it), ``sampler`` the
    sampler's name as :func:`srilib.samplers.make_sampler` takes it, ``block_length`` a diffusion block length
    written ``:bB`` after the sampler (None: the experiment's). Everything downstream reads these fields; nothing
    parses the written name again.
    """

    model: str
    kind: str
    sampler: str
    block_length: int | None = None

    @property
    def sampler_label(self) -> str:
        """The sampler as written: ``low_confidence`` or ``low_confidence:b16``."""
        return self.sampler + (f":b{self.block_length}" if self.block_length else "")

    @property
    def label(self) -> str:
        """``model@sampler[:bB]``: the run's name in tables, figures and caches of results."""
        return f"{self.model}@{self.sampler_label}"

    def __str__(self) -> str:
        return self.label

    def with_sampler(self, sampler: str) -> "Run":
        """The same model and block length under another sampler (e.g. DiffuGuard replacing the run's)."""
        return replace(self, sampler=sampler)


def resolve_run(spec: "str | Run", kind: str | None = None) -> Run:
    """``'model'``, ``'model@sampler'`` or ``'model@sampler:bB'`` -> :class:`Run`, the one place a run's written
    name is parsed. The model must be registered (its kind is looked up without loading it), unless ``kind``
    ("ar" or "dlm") is given for a model outside the registry (a test double); the default sampler is the model's
    ``default_sampler`` when registered with one (DiffusionGemma: ``entropy_bound``, its own ``generate()``), else
    ``ar`` for autoregressive models and ``low_confidence`` for diffusion models. A :class:`Run` passes through."""
    if isinstance(spec, Run):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a run is written 'model', 'model@sampler' or 'model@sampler:bB', got {spec!r}")
    model, _, sampler = spec.strip().partition("@")
    registered = None
    if kind is None:
        from .models import REGISTRY, model_kind

        kind, registered = model_kind(model), REGISTRY[model].default_sampler
    default = registered or ("ar" if kind == "ar" else DLM_DEFAULT_SAMPLER)
    name, _, block = sampler.partition(":")
    if block and not (block.startswith("b") and block[1:].isdigit() and int(block[1:]) > 0):
        raise ValueError(f"run {spec!r}: a block length is written ':bB' with B a positive integer, e.g. "
                         f"{model}@{name or default}:b16")
    if block and kind != "dlm":
        raise ValueError(f"run {spec!r}: {model} is autoregressive; block lengths apply to diffusion samplers only")
    name = name or default
    return Run(model=model, kind=kind, sampler=name, block_length=int(block[1:]) if block else None)


def selected(spec: "str | Run", runs: "Sequence[str | Run] | None") -> bool:
    """Whether a profile's per-section run list (``curve_runs``, ``pair.targets``, ``seed_runs``, ``shift_runs``)
    covers this run: ``None`` covers every run; names are compared as resolved runs, so ``organism-ar`` matches
    ``organism-ar@ar``."""
    if runs is None:
        return True
    label = resolve_run(spec).label
    return any(resolve_run(r).label == label for r in runs)


@dataclass
class Experiment:
    """Shared settings of a notebook (the profile's common parameters) and a cache of loaded models.

    Parameters mirror the profiles, and the defaults are the cpu profile's (the embedded default; no default
    here contradicts it, tests/test_profile_defaults.py): ``steps`` (T), ``gen_length`` and ``block_length`` for
    diffusion samplers, ``batch_size``, ``dtype`` (None: each model's default), ``seed``, ``layers`` recorded in
    traces (ints, or the names "first", "middle", "last", resolved per model by
    :func:`srilib.models.resolve_layers`; every notebook of a profile should record the same layers so that they
    share traces), and ``cache`` (the trace
    store's root; default $SRILIB_CACHE or ~/.cache/srilib). ``capture`` ("after", the default, or "decision") is
    passed to every sampler (see :mod:`srilib.traces`: which forward pass a step's activation is read from).
    """

    steps: int = 32
    gen_length: int = 32
    block_length: int | None = None
    batch_size: int = 16
    dtype: str | None = "float32"
    quantization: str | None = None  # None | "8bit" (bitsandbytes, GPU only; the colab profile)
    seed: int = 0
    temperature: float = 0.0
    layers: Sequence[int | str] = ("first", "middle", "last")
    cache: str | None = None
    progress: bool | None = None  # None: on unless TQDM_DISABLE=1
    capture: str = "after"
    device: str | None = None  # None: the model's default device (srilib.distributed sets each process's)
    _models: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.store = TraceStore(self.cache)
        self.layers = tuple(self.layers)

    # ---- models and samplers
    def release(self, name: str | None = None) -> None:
        """Free loaded models (one, or all): on a GPU, run models one at a time and release each after use."""
        import gc
        for k in ([name] if name else list(self._models)):
            self._models.pop(k, None)
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def model(self, name: str):
        """Load (once) and return a model by name."""
        if name not in self._models:
            from .models import load_model
            kw = {"dtype": self.dtype} if self.dtype else {}
            if self.device:
                kw["device"] = self.device
            if self.quantization == "8bit":
                kw["load_in_8bit"] = True
            elif self.quantization:
                raise ValueError(f"unknown quantization {self.quantization!r}; use None or '8bit'")
            self._models[name] = load_model(name, **kw)
        return self._models[name]

    def resolve(self, spec: str | Run) -> Run:
        """:func:`resolve_run` (kept on the experiment so that chapters take a name or a Run alike)."""
        return resolve_run(spec)

    def sampler(self, run: str | Run):
        """The run's sampler with this experiment's settings (block length: the run's, else the experiment's, else
        one block; ``dlm-ar`` has none)."""
        from .samplers import make_sampler
        run = resolve_run(run)
        if run.sampler in ("ar", "ar-greedy"):
            return make_sampler("ar", steps=self.steps, temperature=self.temperature, seed=self.seed,
                                capture=self.capture)
        kw = {"gen_length": self.gen_length, "steps": self.steps, "temperature": self.temperature, "seed": self.seed,
              "capture": self.capture}
        if run.sampler != "dlm-ar":
            kw["block_length"] = run.block_length or self.block_length or self.gen_length
        return make_sampler(run.sampler, **kw)

    # ---- traces and anchors
    def traces(self, spec: str | Run, prompts: Sequence[str], desc: str = "",
               references: Sequence[str] | None = None) -> TraceSet:
        """Traces of ``prompts`` under a run, from the cache when the key matches. ``references`` (one per prompt;
        samplers with ``with_references`` only, i.e. DiffuGuard): the text each prompt's audit compares with, e.g.
        an attacked prompt's un-attacked request; it is part of the sampler's config, hence of the cache key."""
        from .models import resolve_layers

        run = self.resolve(spec)
        lm = self.model(run.model)
        sampler = self.sampler(run)
        if references is not None:
            if not hasattr(sampler, "with_references"):
                raise ValueError(f"{run.label}: its sampler {sampler.name!r} takes no references (only DiffuGuard's "
                                 "audit compares a prompt with a reference); drop references=")
            sampler = sampler.with_references(prompts, references)
        return generate_traces(lm, prompts, sampler, store=self.store, batch_size=self.batch_size,
                               layers=resolve_layers(lm, self.layers), progress=self.progress,
                               desc=f"{run.label} {desc}".strip())

    def anchors(self, spec: str | Run, sets: "PromptSets", allow_unfiltered: bool = True,
                layer: int = -1, pooling: str = "generated") -> Anchors:
        """Anchors of a run from the anchor split; falls back to unfiltered means only when allowed, and then
        the fallback is recorded in the anchors and printed."""
        h = self.traces(spec, sets.anchor_harmless, "anchors/harmless")
        r = self.traces(spec, sets.anchor_harmful, "anchors/harmful")
        try:
            return build_anchors(h, r, layer=layer, pooling=pooling)
        except AnchorStepError:
            raise  # unfiltered means would not fill an empty step
        except AnchorError as e:
            if not allow_unfiltered:
                raise
            print(f"[{self.resolve(spec).label}] {e}\n-> using the explicit unfiltered fallback.")
            return build_anchors(h, r, layer=layer, pooling=pooling, allow_unfiltered=True)


@dataclass
class PromptSets:
    """The standard prompt lists of every notebook (same parameters -> same lists -> shared trace caches)."""

    anchor_harmless: list[str]
    anchor_harmful: list[str]
    eval_harmless: list[str]
    eval_harmful: list[str]
    attacked: dict[str, list[str]]

    @classmethod
    def build(cls, n_anchor: int, n_eval: int, attacks: Sequence[str] = (), seed: int = 0,
              source: str = "builtin") -> "PromptSets":
        """``n_anchor`` harmless + harmful anchor prompts, ``n_eval`` evaluation prompts of each kind, and each
        attack applied to the evaluation harmful prompts (with the attack's evaluation templates).

        ``source="builtin"`` (offline): the built-in sets' anchor and eval splits. ``source="public"`` (needs
        network and `datasets`; the paper's setting): anchors from Alpaca (harmless) and AdvBench (harmful),
        evaluation from Alpaca's eval split and the 100 JailbreakBench behaviours, disjoint from the anchors.
        """
        if n_anchor < 1 or n_eval < 1:
            raise ValueError(f"n_anchor and n_eval must be >= 1 (got {n_anchor}, {n_eval})")
        if source == "builtin":
            ah = get_prompts("harmless", "anchor", n=n_anchor, seed=seed)
            ar = get_prompts("harmful", "anchor", n=n_anchor, seed=seed)
            eh = get_prompts("harmless", "eval", n=n_eval, seed=seed)
            er = get_prompts("harmful", "eval", n=n_eval, seed=seed)
        elif source == "public":
            from .prompts import load_public
            ah = load_public("alpaca", n=n_anchor, split="anchor", seed=seed)
            ar = load_public("advbench", n=n_anchor, seed=seed)
            eh = load_public("alpaca", n=n_eval, split="eval", seed=seed)
            er = [p for p in load_public("jailbreakbench", seed=seed) if p not in set(ar)][:n_eval]
        else:
            raise ValueError(f"unknown prompt source {source!r}; use 'builtin' (offline) or 'public'")
        return cls(anchor_harmless=ah, anchor_harmful=ar, eval_harmless=eh, eval_harmful=er,
                   attacked={a: apply_attack(a, er, seed=seed, split="eval") for a in attacks})

    def evaluation(self) -> dict[str, tuple[list[str], bool]]:
        """Every evaluation set: name -> (prompts, harmful?). 'raw' is the unattacked harmful set."""
        out = {"harmless": (self.eval_harmless, False), "raw": (self.eval_harmful, True)}
        out.update({a: (p, True) for a, p in self.attacked.items()})
        return out

    @property
    def requests(self) -> list[str]:
        """The original harmful requests behind every attacked prompt (judges see these, not the attack)."""
        return self.eval_harmful


def setup(*, steps: int, gen_length: int, n_anchor: int, n_eval: int, attacks: Sequence[str],
          batch_size: int = 16, dtype: str | None = "float32", quantization: str | None = None, seed: int = 0,
          source: str = "builtin", cache: str | None = None,
          capture: str = "after") -> tuple[Experiment, PromptSets]:
    """The experiment and prompt sets of a chapter from its profile parameters (every chapter calls this with
    the profile's shared `common` values, so all chapters share prompt lists and cached traces)."""
    exp = Experiment(steps=steps, gen_length=gen_length, batch_size=batch_size, dtype=dtype,
                     quantization=quantization, seed=seed, cache=cache, capture=capture)
    return exp, PromptSets.build(n_anchor=n_anchor, n_eval=n_eval, attacks=attacks, seed=seed, source=source)


def setup_from(params: dict) -> tuple[Experiment, PromptSets]:
    """:func:`setup` with the entries of a notebook's parameters that it takes (what each chapter's notebook
    passes to it; the trace plan builds the same experiment and prompt sets from the same parameters)."""
    import inspect

    keys = set(inspect.signature(setup).parameters) - {"cache", "capture"}
    return setup(**{k: v for k, v in params.items() if k in keys})
