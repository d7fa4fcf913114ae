"""Model organisms: small safety-aligned models trained here, on two CPU cores, by srilib itself.

* ``organism-ar``: Llama causal LM (~3.8M parameters) trained from scratch on the safety corpus.
* ``organism-dlm``: the same Llama with bidirectional attention, started from organism-ar part-way and trained
  on with the masked-diffusion SFT loss (LLaDA-style), same size, tokenizer, corpus and compute; a
  "bidirectional" DLM for the diffusion samplers.
* ``smollm2-135m-refusal``: the embedded SmolLM2-135M-Instruct with a low-rank adapter trained on the same corpus.

Loading a full-size name loads the weights shipped in ``srilib/organisms/weights/`` (checked against the
manifest's sha256, :mod:`srilib.organisms.weights`); ``weights="trained"`` loads the model retrained from the
recipe in ``$SRILIB_CACHE/models/`` instead (training it first if needed, as ``make organisms`` does). Append
``-tiny`` to a name (or pass ``config="tiny"``) for a seconds-scale variant used by tests and the smoke profile,
always trained on first use. See :mod:`srilib.organisms.train` and book/organisms.md.
This module stays light: torch-heavy work happens only inside the loader.
"""
from __future__ import annotations

import warnings

from ..models import LoadedModel, ModelSpec, dtype_name, loader, register
from . import weights as W

# peft's PeftModel.from_pretrained reads transformers' deprecated `is_gradient_checkpointing` on every adapter load,
# and the FutureWarning (with the path of the interpreter's site-packages) would print in every chapter that loads
# a shipped adapter; nothing a user of srilib can act on, so only that message is silenced.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

ORGANISMS = ("organism-ar", "organism-dlm", "smollm2-135m-refusal")
CONFIG_CHOICES = ("full", "tiny")


def resolve_name(name: str, config: str = "full") -> str:
    """Config name for a registered organism name and a ``config`` option ("full" or "tiny")."""
    if config not in CONFIG_CHOICES:
        raise ValueError(f"unknown organism config {config!r}; use one of {CONFIG_CHOICES}")
    base = name[: -len("-tiny")] if name.endswith("-tiny") else name
    return f"{base}-tiny" if (config == "tiny" or name.endswith("-tiny")) else base


WEIGHT_SOURCES = ("shipped", "trained")


def organism_path(name: str, weights: str = "shipped"):
    """(directory, fingerprint) of organism ``name``: its shipped weights, or the retrained ones in the cache."""
    from .v3 import V3_NAMES, v3_path

    if name in V3_NAMES:  # the v3 pair has its own recipes (srilib.organisms.v3)
        return v3_path(name, weights)
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"weights={weights!r}; use one of {WEIGHT_SOURCES}")
    if weights == "shipped" and name in W.SHIPPED:
        path = W.shipped_dir(name)
        if path is None:
            raise W.ShippedWeightsError(f"no shipped weights for {name} are recorded in the manifest; train them with "
                                        "`make organisms` (or load with weights='trained')")
        return path, f"organism:{name}:shipped:{W.fingerprint(name)}"
    from .recipe import get_config
    from .train import ensure_trained

    path = ensure_trained(name, get_config(name))
    return path, f"organism:{path.name}"


@loader("organism")
def load_organism(spec: ModelSpec, dtype, device: str, config: str = "full", weights: str = "shipped",
                  **_) -> LoadedModel:
    """The loader of every organism: the shipped weights (checked against the manifest) or the retrained ones; an
    adapter (its directory holds ``adapter_config.json``) is merged into the embedded SmolLM2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .modeling import DiffusionLlamaForMaskedLM

    name = resolve_name(spec.name, config)
    path, fp = organism_path(name, weights)
    if (path / "adapter_config.json").is_file():  # the adapter on the embedded SmolLM2 (its tokenizer too), merged
        from peft import PeftModel

        from ..models import dequantised_smollm2_dir

        base_dir = dequantised_smollm2_dir()[0]
        tok = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")
        model = PeftModel.from_pretrained(base, path).merge_and_unload().to(dtype=dtype, device=device)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        cls = DiffusionLlamaForMaskedLM if spec.kind == "dlm" else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=dtype).to(device)
    kind = spec.kind
    return LoadedModel(name=spec.name if name == spec.name else name, model=model, tokenizer=tok, kind=kind,
                       fingerprint=fp, dtype_name=dtype_name(dtype),
                       mask_id=tok.mask_token_id if kind == "dlm" else None,
                       family="bidirectional" if kind == "dlm" else "")


def ensure(name: str):
    """The cache directory of any trainable model (v2 organisms and adapter, the v3 pair), trained now if needed."""
    from .v3 import V3_NAMES, ensure_v3

    if name in V3_NAMES:
        return ensure_v3(name)
    from .train import ensure_trained
    return ensure_trained(name)


SHIPPED = " Trained by srilib on its safety corpus; the weights ship with srilib (see book/organisms.md)."
TINY = " Tiny (seconds) variant for tests."
AR_NOTE = "Aligned Llama causal-LM organism, ~3.9M parameters." + SHIPPED
DLM_NOTE = "Aligned masked-diffusion organism (bidirectional Llama), matched to organism-ar." + SHIPPED
LORA_NOTE = "SmolLM2-135M-Instruct with a LoRA adapter trained to refuse." + SHIPPED
register(ModelSpec("organism-ar", "organism", kind="ar", dtype="float32", notes=AR_NOTE))
register(ModelSpec("organism-dlm", "organism", kind="dlm", dtype="float32", family="bidirectional", notes=DLM_NOTE))
register(ModelSpec("smollm2-135m-refusal", "organism", kind="ar", dtype="float32", notes=LORA_NOTE))
register(ModelSpec("organism-ar-tiny", "organism", kind="ar", dtype="float32", notes=AR_NOTE + TINY))
register(ModelSpec("organism-dlm-tiny", "organism", kind="dlm", dtype="float32", family="bidirectional",
                   notes=DLM_NOTE + TINY))
register(ModelSpec("smollm2-135m-refusal-tiny", "organism", kind="ar", dtype="float32", notes=LORA_NOTE + TINY))
