"""DiffusionGemma and its autoregressive twin, loaded natively by transformers (no remote code), and tiny random
versions of both built from the real classes (tests and the smoke profile; nothing is downloaded).

- ``diffusiongemma-26b-a4b-it`` (``google/diffusiongemma-26B-A4B-it``): ``DiffusionGemmaForBlockDiffusion``, a
  uniform-noise block-diffusion model (Mixture-of-Experts, 26B total and about 4B active parameters). One shared
  stack runs two ways: causally over the prompt and every finished canvas (the "encoder", which writes the KV cache)
  and bidirectionally over the canvas being denoised (the "decoder", which reads that cache and is conditioned on
  the previous step's logits). Its samplers are in :mod:`srilib.samplers.block_diffusion`: ``entropy_bound``
  (the model's own ``generate()``, traced step by step) and ``dlm-ar`` (the encoder decoding one token at a time).
- ``gemma-4-26b-a4b-it`` (``google/gemma-4-26B-A4B-it``): the AR twin named by the expert-parallel plan of
  DiffusionGemma's text configuration (transformers ``configuration_diffusion_gemma.py``,
  ``DiffusionGemmaTextConfig.base_model_ep_plan``). Its checkpoint is the multimodal
  ``Gemma4ForConditionalGeneration`` (what ``AutoModelForCausalLM`` maps ``gemma4`` to); srilib keeps its text
  stack as a ``Gemma4ForCausalLM`` holding the very same modules (:func:`gemma4_text_only`; the vision tower is
  dropped), so that every AR code path of srilib (hidden size, layer count, context) reads a text configuration.
- ``tiny-diffusiongemma`` / ``tiny-gemma4``: seeded random configurations of the same classes (2 layers, hidden 64,
  4 experts, top-2 routing) on :func:`srilib.tiny.tiny_tokenizer`. ``tiny-diffusiongemma`` has a canvas of 8
  tokens and 6 denoising steps in its generation configuration, so that a 16-token response spans two canvases.

DiffusionGemma has no mask token: its ``LoadedModel`` has ``mask_id=None`` and ``family="diffusion_gemma"``, which
the masked-diffusion samplers refuse and :mod:`srilib.samplers.block_diffusion` requires.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from .models import LoadedModel, ModelLoadError, ModelSpec, dtype_name, loader, register

FAMILY = "diffusion_gemma"
TINY_CANVAS = 8  # tiny-diffusiongemma's canvas (block) length
TINY_DENOISING_STEPS = 6  # ... and its denoising steps per canvas (generation config)


# ------------------------------------------------------------------------------------------ helpers

def _device_kwargs(device: str) -> dict:
    """Load straight onto a GPU (a 26B model would not fit twice in host memory); on CPU, the default."""
    return {"device_map": {"": device}} if str(device).startswith("cuda") else {}


def _hub_fingerprint(src: str, model, revision: str | None) -> str:
    from .models import fingerprint_dir

    local = Path(src)
    if local.is_dir():
        return f"dir:{fingerprint_dir(local)}"
    return f"hf:{src}@{getattr(model.config, '_commit_hash', None) or revision or 'unknown-revision'}"


def _load_error(src: str, e: Exception) -> ModelLoadError:
    from .models import list_models

    return ModelLoadError(
        f"could not load {src!r}: {e}\nThis model is loaded natively by transformers (no remote code) but its "
        "weights come from the Hub: it needs network access and, for gated Gemma models, `huggingface-cli login` "
        "after accepting the licence. Offline, use 'tiny-diffusiongemma' / 'tiny-gemma4' "
        f"(registered names: {', '.join(list_models())}).")


def gemma4_text_only(model: nn.Module) -> nn.Module:
    """The text stack of a ``Gemma4ForConditionalGeneration`` as a ``Gemma4ForCausalLM`` sharing its modules (no
    copy; the vision and audio towers are dropped). A ``Gemma4ForCausalLM`` passes through. For text input the two
    compute the same logits and hidden states (tests/test_diffusion_gemma.py compares them on a padded batch)."""
    from transformers import Gemma4ForCausalLM

    if isinstance(model, Gemma4ForCausalLM):
        return model
    lang = getattr(getattr(model, "model", None), "language_model", None)
    if lang is None or not hasattr(model, "lm_head"):
        raise ModelLoadError(f"{type(model).__name__} is not a Gemma 4 model with a language model and an LM head")
    with torch.device("meta"):  # no second copy of the weights: the modules below replace these at once
        text = Gemma4ForCausalLM(model.config.get_text_config())
    text.model = lang
    text.lm_head = model.lm_head
    text.generation_config = model.generation_config
    return text.eval()


def _config_hash(model: nn.Module) -> str:
    h = hashlib.sha256(model.config.to_json_string().encode())
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        h.update(gc.to_json_string().encode())
    return h.hexdigest()[:8]


# ------------------------------------------------------------------------------------------ the Hub models

@loader("diffusion-gemma")
def _load_diffusion_gemma(spec: ModelSpec, dtype: torch.dtype, device: str, revision: str | None = None,
                          **kw) -> LoadedModel:
    """``DiffusionGemmaForBlockDiffusion`` and its tokenizer from the Hub (or a local directory), no remote code."""
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    src = spec.hf_id or spec.name
    try:
        tok = AutoTokenizer.from_pretrained(src, revision=revision)
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(src, dtype=dtype, revision=revision,
                                                                **_device_kwargs(device), **kw)
    except OSError as e:
        raise _load_error(src, e) from e
    model = model.to(device).eval()
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="dlm",
                       fingerprint=_hub_fingerprint(src, model, revision), dtype_name=dtype_name(dtype),
                       mask_id=None, family=FAMILY)


@loader("gemma4-text")
def _load_gemma4_text(spec: ModelSpec, dtype: torch.dtype, device: str, revision: str | None = None,
                      **kw) -> LoadedModel:
    """A Gemma 4 checkpoint through ``AutoModelForCausalLM`` (``Gemma4ForConditionalGeneration``), kept as its text
    stack (:func:`gemma4_text_only`), no remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = spec.hf_id or spec.name
    try:
        tok = AutoTokenizer.from_pretrained(src, revision=revision)
        full = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, revision=revision, **_device_kwargs(device),
                                                    **kw)
    except OSError as e:
        raise _load_error(src, e) from e
    fp = _hub_fingerprint(src, full, revision)
    model = gemma4_text_only(full).to(device)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="ar", fingerprint=fp,
                       dtype_name=dtype_name(dtype), family="gemma4")


register(ModelSpec("diffusiongemma-26b-a4b-it", "diffusion-gemma", "google/diffusiongemma-26B-A4B-it", kind="dlm",
                   family=FAMILY, default_sampler="entropy_bound", noise="uniform",
                   notes="DiffusionGemma 26B-A4B (MoE, ~4B active), uniform-noise block diffusion, loaded natively "
                         "by transformers (no remote code); about 52 GB in bfloat16. Samplers: entropy_bound (its "
                         "generate()) and dlm-ar (its causal encoder, left to right)"))
register(ModelSpec("gemma-4-26b-a4b-it", "gemma4-text", "google/gemma-4-26B-A4B-it", kind="ar", family="gemma4",
                   notes="Gemma 4 26B-A4B (MoE), DiffusionGemma's AR twin, loaded natively (text stack only); "
                         "about 52 GB in bfloat16"))


# ------------------------------------------------------------------------------------------ tiny versions

def _tiny_text_kwargs(tok, hidden: int, layers: int) -> dict:
    """Text-configuration fields shared by the tiny DiffusionGemma and Gemma 4 (one full-attention layer last, as
    the real configurations have; a sliding window shorter than a chat prompt, so that both masks are exercised)."""
    return dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=16, num_experts=4,
                top_k_experts=2, moe_intermediate_size=hidden // 2, sliding_window=16, max_position_embeddings=1024,
                layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                final_logit_softcapping=30.0)


def _tiny_vision_config():
    from transformers import Gemma4VisionConfig

    return Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              num_key_value_heads=2, head_dim=8, position_embedding_size=64)


def tiny_diffusion_gemma(tok, seed: int = 0, hidden: int = 64, layers: int = 2, canvas_length: int = TINY_CANVAS,
                         denoising_steps: int = TINY_DENOISING_STEPS, init_range: float = 0.5) -> nn.Module:
    """A seeded random ``DiffusionGemmaForBlockDiffusion`` over ``tok``'s vocabulary (``init_range`` above the
    default 0.02) so that its predictions are peaked enough for the entropy-bound sampler to accept several tokens
    per step, as a trained model does)."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.configuration_diffusion_gemma import DiffusionGemmaTextConfig

    text = DiffusionGemmaTextConfig(**_tiny_text_kwargs(tok, hidden, layers), initializer_range=init_range)
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=_tiny_vision_config(), canvas_length=canvas_length,
                               initializer_range=init_range)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id = tok.eos_token_id, tok.pad_token_id
    gc.max_denoising_steps = denoising_steps
    return model


def tiny_gemma4(tok, seed: int = 0, hidden: int = 64, layers: int = 2, init_range: float = 0.2) -> nn.Module:
    """A seeded random ``Gemma4ForConditionalGeneration`` (MoE text stack, tiny vision tower) over ``tok``'s
    vocabulary: what ``AutoModelForCausalLM`` returns for the real checkpoint."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig

    text = Gemma4TextConfig(**_tiny_text_kwargs(tok, hidden, layers), enable_moe_block=True,
                            hidden_size_per_layer_input=0, vocab_size_per_layer_input=len(tok),
                            initializer_range=init_range)
    cfg = Gemma4Config(text_config=text, vision_config=_tiny_vision_config(), audio_config=None,
                       initializer_range=init_range)
    torch.manual_seed(seed)
    model = Gemma4ForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


@loader("tiny-diffusion-gemma")
def _load_tiny_diffusion_gemma(spec: ModelSpec, dtype: torch.dtype, device: str, seed: int = 0,
                               **_) -> LoadedModel:
    from .tiny import state_hash, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_diffusion_gemma(tok, seed=seed).to(device=device, dtype=dtype).eval()
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="dlm",
                       fingerprint=f"tiny-diffusiongemma:{state_hash(model)}:{_config_hash(model)}",
                       dtype_name=dtype_name(dtype), mask_id=None, family=FAMILY)


@loader("tiny-gemma4")
def _load_tiny_gemma4(spec: ModelSpec, dtype: torch.dtype, device: str, seed: int = 0, **_) -> LoadedModel:
    from .tiny import state_hash, tiny_tokenizer

    tok = tiny_tokenizer()
    full = tiny_gemma4(tok, seed=seed)
    fp = f"tiny-gemma4:{state_hash(full)}:{_config_hash(full)}"
    model = gemma4_text_only(full).to(device=device, dtype=dtype)
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="ar", fingerprint=fp,
                       dtype_name=dtype_name(dtype), family="gemma4")


register(ModelSpec("tiny-diffusiongemma", "tiny-diffusion-gemma", kind="dlm", dtype="float32", family=FAMILY,
                   default_sampler="entropy_bound", noise="uniform",
                   notes="random 2-layer DiffusionGemma (the real class; MoE with 4 experts, canvas 8, 6 denoising "
                         "steps) for tests and the smoke profile"))
register(ModelSpec("tiny-gemma4", "tiny-gemma4", kind="ar", dtype="float32", family="gemma4",
                   notes="random 2-layer Gemma 4 (the real class, MoE with 4 experts), text stack, for tests"))
