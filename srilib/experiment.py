"""What every notebook shares: named runs (model + sampler), the standard prompt sets, cached traces and anchors.

A *run* is written ``model`` or ``model@sampler`` (e.g. ``organism-dlm@dlm-ar``); the default sampler is ``ar``
for autoregressive models and ``low_confidence`` for diffusion models. Because every notebook builds its prompt
sets here with the same parameters, their traces share cache keys: a trace generated for one chapter is reused
by the next, never regenerated.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

from .attacks import apply_attack
from .prompts import get_prompts
from .signal import AnchorError, Anchors, AnchorStepError, build_anchors
from .traces import TraceSet, TraceStore, generate_traces

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
    traces (ints, or the names "first", "middle", "last", resolved per model by :func:`resolve_layers`; every
    notebook of a profile should record the same layers so that they share traces), and ``cache`` (the trace
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


def num_layers(lm) -> int:
    """Transformer blocks of a model's text stack (``get_text_config()``: multimodal configurations such as
    DiffusionGemma's keep ``num_hidden_layers`` on their text configuration); 0 when unknown."""
    cfg = lm.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(getattr(cfg, "num_hidden_layers", 0) or 0)


def layer_index(lm, layer: int | str) -> int:
    """One layer name to its hidden-state index for this model: "first" = 1 (output of the first block),
    "middle" = n_layers // 2, "last" = -1 (after the final norm). Ints pass through."""
    if not isinstance(layer, str):
        return int(layer)
    n = num_layers(lm)
    names = {"first": 1, "middle": max(1, n // 2), "last": -1}
    if layer not in names:
        raise ValueError(f"unknown layer name {layer!r}; use 'first', 'middle', 'last' or an int")
    return names[layer]


def resolve_layers(lm, layers: Sequence[int | str]) -> list[int]:
    """Layer names to hidden-state indices (see :func:`layer_index`); duplicates are dropped, order kept, and the
    last layer must be among them (the SRI signal is defined on it)."""
    out = list(dict.fromkeys(layer_index(lm, x) for x in layers))
    if -1 not in out:
        raise ValueError("layers must include the last layer (-1 or 'last'): the SRI signal is defined on it")
    return out


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
