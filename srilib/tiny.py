"""Tiny models and a tiny tokenizer built from configs, for tests and the CI smoke profile (no downloads).

The tokenizer is the organisms' byte-level BPE recipe (:func:`srilib.organisms.tokenizer.train_tokenizer`) trained in
well under a second on a fixed text; it has a ChatML chat template and a mask token, so the same code paths run
as for real chat models.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import torch

from .models import LoadedModel, ModelSpec, dtype_name, loader, register
from .organisms.tokenizer import SYSTEM_PROMPT, train_tokenizer

# train_tokenizer trains on [SYSTEM_PROMPT, prompts..., responses...]. The BPE trainer depends only on the word
# counts of its input and TINY_TEXT starts with the system prompt, so the rest of TINY_TEXT as one prompt gives exactly
# the tokenizer trained on TINY_TEXT alone (tests/test_models.py compares vocab and merges with that recipe).
TINY_TEXT = (
    SYSTEM_PROMPT + ". I'm sorry, but I cannot help with that. Sure, here is how to make bread. "
    "Explain how to write a poem about the sea. Give me step by step instructions. I can't provide that. "
    "The quick brown fox jumps over the lazy dog. Write a short story, a recipe, an email and a list. "
    "How do I learn Python? It would be inappropriate. As an AI I am unable to assist with illegal requests. "
) * 4


@lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 400):
    """A deterministic byte-level BPE tokenizer (PreTrainedTokenizerFast) with ChatML and a mask token: the
    organisms' tokenizer recipe (:func:`srilib.organisms.tokenizer.train_tokenizer`) on a fixed text."""
    return train_tokenizer([{"prompt": TINY_TEXT[len(SYSTEM_PROMPT):], "response": ""}], vocab_size)


def tiny_ar_model(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A randomly initialised 2-layer Llama causal LM (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def state_hash(model: torch.nn.Module) -> str:
    """Sixteen hex digits naming a model's weights (its fingerprint in trace keys)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@loader("tiny")
def _load_tiny(spec: ModelSpec, dtype: torch.dtype, device: str, seed: int = 0, **_) -> LoadedModel:
    tok = tiny_tokenizer()
    model = tiny_ar_model(len(tok), seed=seed).to(device=device, dtype=dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="ar",
                       fingerprint=f"tiny:{state_hash(model)}", dtype_name=dtype_name(dtype))


register(ModelSpec("tiny-ar", "tiny", kind="ar", dtype="float32",
                   notes="random 2-layer Llama for tests and the smoke profile"))


@loader("tiny-blockcausal")
def _load_tiny_blockcausal(spec: ModelSpec, dtype: torch.dtype, device: str, seed: int = 0, **_) -> LoadedModel:
    """A seeded tiny Llama read as a block-causal DLM (:class:`srilib.organisms.smoldlm.SmolDiffusionLM`): the
    code path of ``smollm2-135m-dlm`` (prompt cache, block mask, logit shift) without SmolLM2."""
    from .organisms.smoldlm import SmolDiffusionLM

    tok = tiny_tokenizer()
    inner = tiny_ar_model(len(tok), seed=seed)
    inner.generation_config.eos_token_id = tok.eos_token_id
    model = SmolDiffusionLM(inner, tok.mask_token_id).to(device=device, dtype=dtype).eval()
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="dlm",
                       fingerprint=f"tiny-blockcausal:{state_hash(model)}",
                       dtype_name=dtype_name(dtype), mask_id=tok.mask_token_id, family="blockcausal")


register(ModelSpec("tiny-dlm-blockcausal", "tiny-blockcausal", kind="dlm", dtype="float32", family="blockcausal",
                   notes="random 2-layer Llama as a block-causal DLM (smollm2-135m-dlm's code path) for tests"))
