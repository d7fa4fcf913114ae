"""The organisms' configurations: every field that decides a model's weights, by name (the recipes themselves are
described in :mod:`srilib.organisms.train`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that decides an organism's weights (all of it goes into the cache key).

    ``kind`` is "ar", "dlm" or "lora" (SmolLM2 with a low-rank adapter of rank ``lora_rank`` on the projections of
    its top ``train_layers`` blocks). ``steps`` x ``batch_size`` sequences are seen in training; ``max_rows``
    keeps a seeded subset of the corpus (None = all rows).
    """

    kind: str
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 768
    vocab_size: int = 1536
    canvas: int = 32
    max_prompt: int = 400
    batch_size: int = 16
    steps: int = 1600
    lr: float = 2e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    t_eps: float = 1e-3
    train_layers: int = 0
    snapshot_step: int = 0  # AR: also save the weights reached after this many steps (0 = none)
    init_from: str = ""  # DLM: start from this organism's snapshot ...
    init_step: int = 0  # ... taken after this many steps, and train the remaining steps
    rewarmup: int = 20  # DLM: linear re-warm-up (steps) of the learning rate after initialisation
    lm_loss_steps: int = 0  # AR: the first steps also model the prompt tokens (<= snapshot_step: shared phase)
    max_rows: int | None = None
    harmful_share: float | None = None  # with max_rows: share of harmful rows in the subset (None: uniform)
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, OrganismConfig] = {
    "organism-ar": OrganismConfig("ar", vocab_size=2048, steps=2400, snapshot_step=1200, lm_loss_steps=1200),
    "organism-dlm": OrganismConfig("dlm", vocab_size=2048, steps=2400, init_from="organism-ar", init_step=1200),
    "smollm2-135m-refusal": OrganismConfig("lora", batch_size=8, steps=300, lr=1e-3, warmup=10, min_lr_ratio=0.1,
                                           weight_decay=0.0, train_layers=8, max_rows=2400, harmful_share=0.25,
                                           canvas=48, max_prompt=400),
    # seconds-scale variants for tests and the smoke profile
    "organism-ar-tiny": OrganismConfig("ar", hidden=32, layers=2, heads=4, intermediate=64, vocab_size=512,
                                       canvas=24, max_prompt=160, batch_size=8, steps=12, warmup=2,
                                       max_rows=96, snapshot_step=6),
    "organism-dlm-tiny": OrganismConfig("dlm", hidden=32, layers=2, heads=4, intermediate=64, vocab_size=512,
                                        canvas=24, max_prompt=160, batch_size=8, steps=12, warmup=2,
                                        max_rows=96, init_from="organism-ar-tiny", init_step=6, rewarmup=2),
    "smollm2-135m-refusal-tiny": OrganismConfig("lora", batch_size=2, steps=2, lr=5e-5, warmup=1,
                                                train_layers=1, max_rows=8, canvas=16, max_prompt=120, lora_rank=2,
                                                lora_alpha=4),
}


def get_config(name: str) -> OrganismConfig:
    if name not in CONFIGS:
        raise ValueError(f"no organism config {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name]


def with_overrides(name: str, **kw) -> OrganismConfig:
    """A copy of a named config with some fields changed (for probes; changes the cache key)."""
    return replace(get_config(name), **kw)


# What an organism that starts from another's snapshot (``init_from``) must share with it: data, size and schedule.
SHARED_FIELDS = ("hidden", "layers", "heads", "intermediate", "vocab_size", "canvas", "max_prompt", "batch_size",
                 "steps", "lr", "warmup", "min_lr_ratio", "weight_decay", "max_rows", "seed")
