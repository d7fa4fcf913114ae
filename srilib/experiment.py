"""What every notebook shares: named runs (model + sampler), the standard prompt sets, cached traces and anchors.

A *run* is written ``model`` or ``model@sampler`` (e.g. ``organism-dlm@dlm-ar``); the default sampler is ``ar``
for autoregressive models and ``low_confidence`` for diffusion models. Because every notebook builds its prompt
sets here with the same parameters, their traces share cache keys: a trace generated for one chapter is reused
by the next, never regenerated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .attacks import apply_attack
from .prompts import get_prompts
from .signal import AnchorError, Anchors, build_anchors
from .traces import TraceSet, TraceStore, generate_traces

DLM_DEFAULT_SAMPLER = "low_confidence"


@dataclass(frozen=True)
class Run:
    """One model under one sampler."""

    model: str
    sampler: str

    @property
    def label(self) -> str:
        return f"{self.model}@{self.sampler}"


def parse_run(spec: str) -> Run:
    """``'model'`` or ``'model@sampler'`` -> :class:`Run` (the sampler is resolved from the model kind)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a run is written 'model' or 'model@sampler', got {spec!r}")
    model, _, sampler = spec.strip().partition("@")
    return Run(model, sampler or "")


@dataclass
class Experiment:
    """Shared settings of a notebook (the profile's common parameters) and a cache of loaded models.

    Parameters mirror the profiles: ``steps`` (T), ``gen_length`` and ``block_length`` for diffusion samplers,
    ``batch_size``, ``dtype`` (None: each model's default), ``seed``, ``layers`` recorded in traces, and
    ``cache`` (the trace store's root; default $SRILIB_CACHE or ~/.cache/srilib).
    """

    steps: int = 32
    gen_length: int = 64
    block_length: int | None = None
    batch_size: int = 16
    dtype: str | None = None
    seed: int = 0
    temperature: float = 0.0
    layers: Sequence[int] = (-1,)
    cache: str | None = None
    progress: bool = True
    _models: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.store = TraceStore(self.cache)
        self.layers = tuple(self.layers)

    # ---- models and samplers
    def model(self, name: str):
        """Load (once) and return a model by name."""
        if name not in self._models:
            from .models import load_model
            self._models[name] = load_model(name, **({"dtype": self.dtype} if self.dtype else {}))
        return self._models[name]

    def resolve(self, spec: str | Run) -> Run:
        run = parse_run(spec) if isinstance(spec, str) else spec
        if run.sampler:
            return run
        from .models import REGISTRY, list_models
        list_models()
        kind = REGISTRY[run.model].kind if run.model in REGISTRY else "ar"
        return Run(run.model, "ar" if kind == "ar" else DLM_DEFAULT_SAMPLER)

    def sampler(self, run: Run):
        from .samplers import make_sampler
        if run.sampler in ("ar", "ar-greedy"):
            return make_sampler("ar", steps=self.steps, temperature=self.temperature, seed=self.seed)
        kw = {"gen_length": self.gen_length, "steps": self.steps, "temperature": self.temperature, "seed": self.seed}
        if run.sampler != "dlm-ar":
            kw["block_length"] = self.block_length or self.gen_length
        name, _, block = run.sampler.partition(":")  # e.g. low_confidence:b16 = block length 16
        if block:
            kw["block_length"] = int(block.lstrip("b"))
        return make_sampler(name, **kw)

    def is_dlm(self, spec) -> bool:
        return self.model(self.resolve(spec).model).kind == "dlm"

    # ---- traces and anchors
    def traces(self, spec: str | Run, prompts: Sequence[str], desc: str = "") -> TraceSet:
        """Traces of ``prompts`` under a run, from the cache when the key matches."""
        run = self.resolve(spec)
        lm = self.model(run.model)
        return generate_traces(lm, prompts, self.sampler(run), store=self.store, batch_size=self.batch_size,
                               layers=self.layers, progress=self.progress, desc=f"{run.label} {desc}".strip())

    def anchors(self, spec: str | Run, sets: "PromptSets", allow_unfiltered: bool = True,
                layer: int = -1, pooling: str = "generated") -> Anchors:
        """Anchors of a run from the anchor split; falls back to unfiltered means only when allowed, and then
        the fallback is recorded in the anchors and printed."""
        h = self.traces(spec, sets.anchor_harmless, "anchors/harmless")
        r = self.traces(spec, sets.anchor_harmful, "anchors/harmful")
        try:
            return build_anchors(h, r, layer=layer, pooling=pooling)
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
    def build(cls, n_anchor: int, n_eval: int, attacks: Sequence[str] = (), seed: int = 0) -> "PromptSets":
        """``n_anchor`` harmless + harmful prompts from the anchor split, ``n_eval`` of each from the eval split,
        and each attack applied to the eval harmful prompts (its eval templates)."""
        if n_anchor < 1 or n_eval < 1:
            raise ValueError(f"n_anchor and n_eval must be >= 1 (got {n_anchor}, {n_eval})")
        eval_harmful = get_prompts("harmful", "eval", n=n_eval, seed=seed)
        return cls(anchor_harmless=get_prompts("harmless", "anchor", n=n_anchor, seed=seed),
                   anchor_harmful=get_prompts("harmful", "anchor", n=n_anchor, seed=seed),
                   eval_harmless=get_prompts("harmless", "eval", n=n_eval, seed=seed),
                   eval_harmful=eval_harmful,
                   attacked={a: apply_attack(a, eval_harmful, seed=seed, split="eval") for a in attacks})

    def evaluation(self) -> dict[str, tuple[list[str], bool]]:
        """Every evaluation set: name -> (prompts, harmful?). 'raw' is the unattacked harmful set."""
        out = {"harmless": (self.eval_harmless, False), "raw": (self.eval_harmful, True)}
        out.update({a: (p, True) for a, p in self.attacked.items()})
        return out

    @property
    def requests(self) -> list[str]:
        """The original harmful requests behind every attacked prompt (judges see these, not the attack)."""
        return self.eval_harmful


def stack_signals(anchors: Anchors, traces: dict[str, TraceSet], tau: float = 0.1) -> dict[str, np.ndarray]:
    """SRI signals [N, T] of several trace sets against one set of anchors."""
    return {k: anchors.signal(v, tau=tau) for k, v in traces.items()}
