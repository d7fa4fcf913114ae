"""Model organisms: small safety-aligned models trained here, on two CPU cores, by srilib itself.

* ``organism-ar``: Llama causal LM (~3.8M parameters) trained from scratch on the safety corpus.
* ``organism-dlm``: the same Llama with bidirectional attention, started from organism-ar part-way and trained
  on with the masked-diffusion SFT loss (LLaDA-style), same size, tokenizer, corpus and compute; a
  "bidirectional" DLM for the diffusion samplers.
* ``smollm2-135m-refusal``: the embedded SmolLM2-135M-Instruct with a low-rank adapter trained on the same corpus.

Loading a full-size name loads the weights shipped in ``srilib/organisms/weights/`` (checked against the
manifest's sha256 and loaded by :func:`load_organism`, both in :mod:`srilib.organisms.weights`);
``weights="trained"`` loads the model retrained from the recipe in ``$SRILIB_CACHE/models/`` instead (training it
first if needed, as ``make organisms`` does). Append ``-tiny`` to a name (or pass ``config="tiny"``) for a
seconds-scale variant used by tests and the smoke profile, always trained on first use. See
:mod:`srilib.organisms.train` and book/organisms.md. This module registers the organisms' names; torch-heavy work
happens only inside the loader.
"""
from __future__ import annotations

import warnings

from ..models import ModelSpec, register
from .weights import CONFIG_CHOICES, WEIGHT_SOURCES, load_organism, organism_path, resolve_name  # the loader

__all__ = ["ORGANISMS", "CONFIG_CHOICES", "WEIGHT_SOURCES", "ensure", "load_organism", "organism_path", "resolve_name"]

# peft's PeftModel.from_pretrained reads transformers' deprecated `is_gradient_checkpointing` on every adapter load,
# and the FutureWarning (with the path of the interpreter's site-packages) would print in every chapter that loads
# a shipped adapter; nothing a user of srilib can act on, so only that message is silenced.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

ORGANISMS = ("organism-ar", "organism-dlm", "smollm2-135m-refusal")


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
