"""Model organisms: small safety-aligned models trained here, on two CPU cores, by srilib itself.

* ``organism-ar``: Llama causal LM (~3.8M parameters) trained from scratch on the safety corpus.
* ``organism-dlm``: the same Llama with bidirectional attention, started from organism-ar part-way and trained
  on with the masked-diffusion SFT loss (LLaDA-style), same size, tokenizer, corpus and compute; a
  "bidirectional" DLM for the diffusion samplers.
* ``smollm2-135m-refusal``: the embedded SmolLM2-135M-Instruct with its top layers fine-tuned on the same corpus.

Append ``-tiny`` to a name (or pass ``config="tiny"`` to :func:`srilib.models.load_model`) for a seconds-scale
variant used by tests and the smoke profile. Loading a name trains it when it is not cached yet
(``$SRILIB_CACHE/models/<name>-<key>/``); see :mod:`srilib.organisms.train` and book/organisms.md.
This module stays light: torch-heavy work happens only inside the loader.
"""
from __future__ import annotations

from ..models import LoadedModel, ModelSpec, loader, register

ORGANISMS = ("organism-ar", "organism-dlm", "smollm2-135m-refusal")
CONFIG_CHOICES = ("full", "tiny")


def resolve_name(name: str, config: str = "full") -> str:
    """Config name for a registered organism name and a ``config`` option ("full" or "tiny")."""
    if config not in CONFIG_CHOICES:
        raise ValueError(f"unknown organism config {config!r}; use one of {CONFIG_CHOICES}")
    base = name[: -len("-tiny")] if name.endswith("-tiny") else name
    return f"{base}-tiny" if (config == "tiny" or name.endswith("-tiny")) else base


@loader("organism")
def _load_organism(spec: ModelSpec, dtype, device: str, config: str = "full", **_) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling import DiffusionLlamaForMaskedLM
    from .train import ensure_trained, get_config

    name = resolve_name(spec.name, config)
    cfg = get_config(name)
    path = ensure_trained(name, cfg)
    tok = AutoTokenizer.from_pretrained(path)
    cls = DiffusionLlamaForMaskedLM if cfg.kind == "dlm" else AutoModelForCausalLM
    model = cls.from_pretrained(path, dtype=dtype).to(device)
    kind = "dlm" if cfg.kind == "dlm" else "ar"
    return LoadedModel(name=spec.name if name == spec.name else name, model=model, tokenizer=tok, kind=kind,
                       fingerprint=f"organism:{path.name}", dtype_name=str(dtype).replace("torch.", ""),
                       mask_id=tok.mask_token_id if kind == "dlm" else None,
                       family="bidirectional" if kind == "dlm" else "")


_NOTE = " Trained here on the srilib safety corpus when first loaded (see book/organisms.md)."
for _tiny in ("", "-tiny"):
    _t = " Tiny (seconds) variant for tests." if _tiny else ""
    register(ModelSpec(f"organism-ar{_tiny}", "organism", kind="ar", dtype="float32",
                       notes="Aligned Llama causal-LM organism, ~3.8M parameters." + _NOTE + _t))
    register(ModelSpec(f"organism-dlm{_tiny}", "organism", kind="dlm", dtype="float32", family="bidirectional",
                       notes="Aligned masked-diffusion organism (bidirectional Llama), matched to organism-ar." + _NOTE + _t))
    register(ModelSpec(f"smollm2-135m-refusal{_tiny}", "organism", kind="ar", dtype="float32",
                       notes="SmolLM2-135M-Instruct, top layers fine-tuned to refuse." + _NOTE + _t))
