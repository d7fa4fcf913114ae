"""Tiny models and a tiny tokenizer built from configs, for tests and the CI smoke profile (no downloads).

The tokenizer is the organisms' byte-level BPE recipe (:func:`srilib.organisms.tokenizer.train_tokenizer`) trained in
well under a second on a fixed text; it has a ChatML chat template and a mask token, so the same code paths run
as for real chat models.

Models: ``tiny-ar`` (a seeded Llama causal LM), ``tiny-dlm-blockcausal`` (a seeded Llama read as a block-causal DLM),
``tiny-dlm`` (a seeded 2-layer ModernBERT masked LM) and its test doubles ``tiny-dlm-llada`` / ``tiny-dlm-dream`` /
``tiny-dlm-end-first``, which wrap the same weights behind LLaDA's and Dream's forward conventions (and LLaDA's
end-of-text-first commits), so the adapters of :func:`srilib.models.mask_predict` are tested without downloads.
These doubles' code is part of the trace key (:data:`srilib.traces.TRACE_SOURCES`).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import torch
from torch import nn

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


# ------------------------------------------------------------------------------------------ tiny DLM + doubles
# tiny-dlm: a seeded 2-layer ModernBERT masked LM on tiny_tokenizer, and test doubles that wrap the same weights
# behind LLaDA's and Dream's forward conventions (srilib.models' adapters tested without downloads)

def tiny_dlm_model(tok, seed: int = 0, hidden: int = 32, layers: int = 2) -> nn.Module:
    """A randomly initialised (seeded) ModernBERT masked LM over ``tok``'s vocabulary."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(seed)
    cfg = ModernBertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=1024,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id,
                           eos_token_id=tok.eos_token_id, cls_token_id=tok.pad_token_id,
                           sep_token_id=tok.eos_token_id, initializer_range=0.2)
    return ModernBertForMaskedLM(cfg)


def _inner_forward(inner: nn.Module, input_ids, attention_mask, position_ids, output_hidden_states):
    """Run the wrapped masked LM; hidden states end with the final-norm output (the HF convention)."""
    from transformers.modeling_outputs import MaskedLMOutput

    got = {}
    h = inner.base_model.register_forward_hook(lambda _m, _a, o: got.__setitem__("h", o.last_hidden_state))
    try:
        out = inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    output_hidden_states=bool(output_hidden_states))
    finally:
        h.remove()
    hs = tuple(out.hidden_states[:-1]) + (got["h"],) if output_hidden_states else None
    return MaskedLMOutput(logits=out.logits, hidden_states=hs)


class TinyLLaDA(nn.Module):
    """Test double with LLaDA's forward convention: ``forward(input_ids, attention_mask=None, ...)``, no position
    ids (positions 0..S-1), unshifted logits, a 2-D attention mask used only when it holds a zero."""

    def __init__(self, inner: nn.Module, honour_mask: bool = True):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.honour_mask = honour_mask  # False mimics older LLaDA revisions, which ignore attention_mask

    def forward(self, input_ids, input_embeddings=None, attention_mask=None, attention_bias=None,
                past_key_values=None, use_cache=False, output_hidden_states=None, **_):
        if self.honour_mask and attention_mask is not None and not bool(attention_mask.bool().all()):
            am = attention_mask
        else:
            am = None
        return _inner_forward(self.inner, input_ids, am, None, output_hidden_states)


class TinyDream(nn.Module):
    """Test double with Dream's forward convention: ``forward(input_ids, attention_mask, position_ids)`` where the
    mask is ``"full"`` or boolean [B, 1, S, S], and logits shifted by one (``logits[:, i-1]`` predicts i)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=None, **_):
        if attention_mask is None or isinstance(attention_mask, str):
            am = None
        else:  # a key is real when some query may attend to it
            am = attention_mask[:, 0].any(dim=1).long()
        out = _inner_forward(self.inner, input_ids, am, position_ids, output_hidden_states)
        out.logits = torch.cat([out.logits[:, 1:], out.logits[:, -1:]], dim=1)  # row i-1 now predicts i
        return out


class TinyEndFirst(nn.Module):
    """Test double of a DLM that commits end-of-text at the tail of the canvas first, as real LLaDA does by
    default: the logit of ``end_id`` at the last ``tail`` positions of the sequence (the canvas ends the sequence)
    gets ``bias`` added, so low-confidence remasking commits those positions, and nothing a reader sees, in its
    first steps. Bidirectional forward convention (unshifted logits)."""

    def __init__(self, inner: nn.Module, end_id: int, tail: int = 8, bias: float = 30.0):
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.end_id, self.tail, self.bias = int(end_id), int(tail), float(bias)

    def forward(self, input_ids, attention_mask=None, position_ids=None, output_hidden_states=None, **_):
        out = _inner_forward(self.inner, input_ids, attention_mask, position_ids, output_hidden_states)
        logits = out.logits.clone()
        logits[:, -self.tail:, self.end_id] += self.bias
        out.logits = logits
        return out


@loader("tiny-dlm")
def _load_tiny_dlm(spec: ModelSpec, dtype: torch.dtype, device: str, seed: int = 0, end_first_tail: int = 0,
                   **_) -> LoadedModel:
    tok = tiny_tokenizer()
    inner = tiny_dlm_model(tok, seed=seed)
    family = spec.family or "bidirectional"
    model = {"bidirectional": lambda m: m, "llada": TinyLLaDA, "dream": TinyDream}[family](inner)
    variant = family
    if end_first_tail:
        model, variant = TinyEndFirst(inner, tok.eos_token_id, tail=end_first_tail), f"{family}+end-first"
    model = model.to(device=device, dtype=dtype)
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="dlm",
                       fingerprint=f"tiny-dlm:{variant}:{end_first_tail}:{state_hash(inner)}",
                       dtype_name=dtype_name(dtype), mask_id=int(tok.mask_token_id), family=family)


register(ModelSpec("tiny-dlm", "tiny-dlm", kind="dlm", dtype="float32", family="bidirectional",
                   notes="random 2-layer ModernBERT masked LM for tests and the smoke profile"))
register(ModelSpec("tiny-dlm-llada", "tiny-dlm", kind="dlm", dtype="float32", family="llada",
                   notes="tiny-dlm's weights behind LLaDA's forward convention (adapter test double)"))
register(ModelSpec("tiny-dlm-end-first", "tiny-dlm", kind="dlm", dtype="float32", family="bidirectional",
                   options={"end_first_tail": 8},
                   notes="tiny-dlm that commits end-of-text at the canvas tail first (the last 8 positions), "
                         "as LLaDA does: its first steps show nothing generated (tests, smoke profile)"))
register(ModelSpec("tiny-dlm-dream", "tiny-dlm", kind="dlm", dtype="float32", family="dream",
                   notes="tiny-dlm's weights behind Dream's shifted-logits convention (adapter test double)"))
