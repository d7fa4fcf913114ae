"""Masked diffusion LMs (DLMs): one mask-predictor interface over three model families, and their loaders.

A DLM is a :class:`srilib.models.LoadedModel` with ``kind="dlm"``, a ``mask_id`` and a ``family`` that selects
the adapter used by :func:`mask_predict`:

- ``"llada"``: LLaDA's remote code (``LLaDAModelLM``). ``logits[:, i]`` predicts position i; positions are always
  0..S-1 (RoPE, so left padding only shifts them, which attention does not see); padding goes in as a 2-D
  ``attention_mask`` (accepted by recent revisions of the remote code). Its ``hidden_states`` tuple ends with the
  output of the final norm ``ln_f``.
- ``"dream"``: Dream's remote code (``DreamModel``). Logits are *shifted*: the prediction for position i is read at
  i - 1 (Dream's own sampler does the same shift). Padding goes in as a boolean [B, 1, S, S] mask plus position ids
  counted over real tokens, as Dream's sampler does; without padding the mask is the string ``"full"``. Its
  ``hidden_states`` tuple ends with the output of the final norm.
- ``"bidirectional"``: any Hugging Face masked-LM class (ModernBERT, BERT, ...), unshifted. The last layer is read
  from the base model's ``last_hidden_state`` (after the final norm where the architecture has one).
- ``"blockcausal"``: :class:`srilib.organisms.smoldlm.SmolDiffusionLM` (``smollm2-135m-dlm``): a causal prompt
  and a bidirectional block (last prompt token + canvas), Dream's shift. Its prompt does not attend to the canvas,
  so :func:`prompt_cache` computes the prompt once per batch and each step runs the block only (exact).

Hidden states are never shifted: the state of position i is the state at position i for every family.

Loaders: the paper's LLaDA-8B-Instruct, LLaDA-1.5 and Dream-v0-Instruct-7B (Hub, remote code, network needed),
and ``tiny-dlm``: a seeded 2-layer ModernBERT masked LM on :func:`srilib.tiny.tiny_tokenizer` for tests and the
smoke profile, plus ``tiny-dlm-llada`` / ``tiny-dlm-dream``, test doubles that wrap the same weights behind
LLaDA's and Dream's forward conventions so both adapters are tested without downloads.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .models import LoadedModel, ModelLoadError, ModelSpec, dtype_name, loader, register

FAMILIES = ("llada", "dream", "bidirectional", "blockcausal")


# ------------------------------------------------------------------------------------------ mask predictor

def _select(hidden_states, final: torch.Tensor | None, layers: Sequence[int], start: int) -> torch.Tensor:
    """Stack the requested layers of positions ``start:``: [B, S', K, D] float32 (-1 = ``final``)."""
    out = []
    n = len(hidden_states) if hidden_states is not None else 0
    for k in layers:
        if k == -1:
            h = final
        else:
            if not -n <= k < n:
                raise ValueError(f"layer {k} does not exist: this model returns {n} hidden states "
                                 f"(0 = embeddings, {n - 1} = last); pass layers in [-{n}, {n - 1}]")
            h = hidden_states[k]
        out.append(h[:, start:])
    return torch.stack(out, dim=2).float()


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _llada(model, input_ids, attention_mask, layers, start):
    kw = {}
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        kw["attention_mask"] = attention_mask
    out = model(input_ids=input_ids, output_hidden_states=bool(layers), **kw)
    hidden = None
    if layers:
        hs = out.hidden_states  # (embeddings, block 1, ..., ln_f(last block)): -1 is after the final norm
        hidden = _select(hs, hs[-1], layers, start)
    return out.logits[:, start:], hidden


def _dream(model, input_ids, attention_mask, layers, start):
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        valid = attention_mask.bool()
        B, S = valid.shape
        # every query may see every real token (padding rows too, so that no row is fully masked)
        mask4 = valid[:, None, None, :].expand(B, 1, S, S)
        pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
        kw = {"attention_mask": mask4, "position_ids": pos}
    else:
        kw = {"attention_mask": "full", "position_ids": None}
    out = model(input_ids=input_ids, output_hidden_states=bool(layers), **kw)
    logits = out.logits
    # Dream: logits[:, i - 1] predicts position i (position 0 keeps its own row, as in Dream's sampler)
    aligned = logits[:, start - 1:-1] if start > 0 else torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    hidden = None
    if layers:
        hs = out.hidden_states  # Dream appends the final-norm output last
        hidden = _select(hs, hs[-1], layers, start)
    return aligned, hidden


def _bidirectional(model, input_ids, attention_mask, layers, start):
    kw = {}
    if attention_mask is not None:
        kw["attention_mask"] = attention_mask
        if _accepts(model, "position_ids"):  # positions counted over real tokens (absolute-position models)
            kw["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    base = getattr(model, "base_model", model)
    hook_final = -1 in layers and base is not model
    others = any(k != -1 for k in layers) or (-1 in layers and not hook_final)
    captured: dict = {}
    handle = None
    if hook_final:
        def grab(_m, _a, o):
            captured["h"] = o.last_hidden_state if hasattr(o, "last_hidden_state") else o[0]
        handle = base.register_forward_hook(grab)
    try:
        out = model(input_ids=input_ids, output_hidden_states=others, **kw)
    finally:
        if handle is not None:
            handle.remove()
    hidden = None
    if layers:
        hs = out.hidden_states if others else None
        hidden = _select(hs, captured["h"] if hook_final else hs[-1], layers, start)
    return out.logits[:, start:], hidden


def _blockcausal(model, input_ids, attention_mask, layers, start, cache=None, need=None):
    logits, (hs, final, offset) = model.predict(input_ids, attention_mask, start, layers, cache, need)
    return logits, (_select(hs, final, layers, offset) if layers else None)


_ADAPTERS = {"llada": _llada, "dream": _dream, "bidirectional": _bidirectional, "blockcausal": _blockcausal}
CACHED_FAMILIES = ("blockcausal",)  # families whose prompt keys/values do not depend on the canvas


@torch.no_grad()
def prompt_cache(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, start: int):
    """An exact cache of the prompt for :func:`mask_predict`, or None where the family has none (LLaDA, Dream and
    bidirectional models let the prompt attend to the canvas, so nothing of it can be reused across steps)."""
    if (lm.family or "bidirectional") not in CACHED_FAMILIES:
        return None
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return lm.model.prompt_cache(input_ids, attention_mask, start)


@torch.no_grad()
def mask_predict(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 layers: Sequence[int] = (-1,), start: int = 0, cache=None,
                 need: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass of a DLM, aligned across families.

    Parameters
    ----------
    lm : LoadedModel
        A model with ``kind="dlm"``; ``lm.family`` picks the adapter (empty means ``"bidirectional"``).
    input_ids, attention_mask : Tensor [B, S]
        Token ids (masked positions hold ``lm.mask_id``) and 1 for real tokens, 0 for (left) padding.
    layers : sequence of int
        Hidden states to return (-1 = last layer after the final norm, 0 = embeddings, k = block k); empty for
        none (cheaper).
    start : int
        Return only positions ``start:`` (e.g. the response canvas), before any dtype conversion.
    cache : object or None
        :func:`prompt_cache` of these prompts (``blockcausal`` family only): the prompt is not run again.
    need : Tensor [B, S - start] bool or None
        A hint: only these positions' logits are used (the ``blockcausal`` family computes only them and leaves
        zeros elsewhere; other families compute every position).

    Returns
    -------
    logits : Tensor [B, S - start, V]
        ``logits[:, i]`` predicts position ``start + i`` (model dtype).
    hidden : Tensor [B, S - start, K, D] float32, or None when ``layers`` is empty.
    """
    family = lm.family or "bidirectional"
    if family not in _ADAPTERS:
        raise ValueError(f"unknown DLM family {family!r} for {lm.name}; use one of {', '.join(FAMILIES)} "
                         "(ModelSpec.family)")
    if getattr(lm.model, "srilib_ignores_padding", False) and attention_mask is not None and \
            not bool(attention_mask.bool().all()):
        raise ValueError(f"{lm.name}'s forward ignores attention_mask (older LLaDA remote code attends to every "
                         "token), so left padding would change its predictions: trace with batch_size=1, or load a "
                         "revision whose remote code supports attention_mask (load_model(..., revision=...))")
    if family in CACHED_FAMILIES:
        return _ADAPTERS[family](lm.model, input_ids, attention_mask, list(layers), start, cache=cache, need=need)
    if cache is not None:
        raise ValueError(f"the {family!r} family has no prompt cache; pass cache=None")
    return _ADAPTERS[family](lm.model, input_ids, attention_mask, list(layers), start)


@torch.no_grad()
def ignores_padding(lm: LoadedModel) -> bool:
    """True when the model's forward ignores the attention mask (checked once with a masked-out first token:
    a forward that honours masks changes its output, one that ignores them returns exactly the same)."""
    ids = lm.tokenizer("Hello, how are you today? Fine.", add_special_tokens=False)["input_ids"][:12]
    x = torch.tensor([ids + [lm.mask_id] * 4], device=lm.device)
    full = torch.ones_like(x)
    cut = full.clone()
    cut[0, 0] = 0
    flag = getattr(lm.model, "srilib_ignores_padding", False)
    lm.model.srilib_ignores_padding = False
    try:
        a, _ = mask_predict(lm, x, full, [])
        b, _ = mask_predict(lm, x, cut, [])
    finally:
        lm.model.srilib_ignores_padding = flag
    return bool(torch.equal(a[:, 1:], b[:, 1:]))


# ------------------------------------------------------------------------------------------ Hub loaders

def _end_ids(tok, names: Sequence[str]) -> list[int]:
    ids = []
    for n in names:
        i = tok.convert_tokens_to_ids(n)
        if isinstance(i, int) and i >= 0 and i != getattr(tok, "unk_token_id", None):
            ids.append(i)
    return ids


@loader("dlm-hf")
def _load_dlm_hf(spec: ModelSpec, dtype: torch.dtype, device: str, load_in_8bit: bool = False,
                 mask_id: int | None = None, end_tokens: Sequence[str] = (), revision: str | None = None,
                 **kw) -> LoadedModel:
    """A Hugging Face DLM by hub id or local directory: ``AutoModel`` with remote code (LLaDA, Dream), or
    ``AutoModelForMaskedLM`` for the ``bidirectional`` family."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, GenerationConfig

    from .models import fingerprint_dir, list_models

    src = spec.hf_id or spec.name
    extra = {}
    if load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as e:
            raise ModelLoadError("load_in_8bit needs bitsandbytes and a CUDA GPU: pip install bitsandbytes") from e
        extra = {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": device}}
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=spec.trust_remote_code, revision=revision)
        auto = AutoModelForMaskedLM if (spec.family or "bidirectional") == "bidirectional" else AutoModel
        model = auto.from_pretrained(src, dtype=dtype, trust_remote_code=spec.trust_remote_code, revision=revision,
                                     **extra, **kw)
    except OSError as e:
        raise ModelLoadError(
            f"could not load {src!r}: {e}\nHub models need network access (the DLMs also run remote code: "
            "trust_remote_code=True). Offline, use 'tiny-dlm' or an organism "
            f"(registered names: {', '.join(list_models())}).") from e
    if not load_in_8bit:
        model = model.to(device)
    model.eval()
    mask = mask_id if mask_id is not None else tok.mask_token_id
    if mask is None:
        raise ModelLoadError(f"{src} has no mask token: pass mask_id=... to load_model (LLaDA: 126336)")
    ends = _end_ids(tok, end_tokens)
    if ends:  # LoadedModel.eos_ids reads the generation config: make every end-of-text token count
        gc = getattr(model, "generation_config", None) or GenerationConfig()
        old = gc.eos_token_id
        gc.eos_token_id = sorted(set(ends) | set([old] if isinstance(old, int) else (old or [])))
        model.generation_config = gc
    local = Path(src)
    fp = f"dir:{fingerprint_dir(local)}" if local.is_dir() else \
        f"hf:{src}@{getattr(model.config, '_commit_hash', None) or revision or 'unknown-revision'}"
    lm = LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="dlm", fingerprint=fp,
                     dtype_name=dtype_name(dtype) + ("+int8" if load_in_8bit else ""), mask_id=int(mask),
                     family=spec.family)
    if ignores_padding(lm):  # older LLaDA remote code: refuse padded batches instead of silently mixing them
        model.srilib_ignores_padding = True
    return lm


_LLADA = {"mask_id": 126336, "end_tokens": ("<|eot_id|>", "<|endoftext|>")}
register(ModelSpec("llada-8b-instruct", "dlm-hf", "GSAI-ML/LLaDA-8B-Instruct", kind="dlm", trust_remote_code=True,
                   family="llada", options=dict(_LLADA),
                   notes="paper DLM (LLaDA-8B-Instruct, remote code, mask id 126336); ~16 GB in bf16, "
                         "load_in_8bit=True for a T4"))
register(ModelSpec("llada-1.5", "dlm-hf", "GSAI-ML/LLaDA-1.5", kind="dlm", trust_remote_code=True,
                   family="llada", options=dict(_LLADA), notes="paper DLM (LLaDA-1.5, remote code)"))
register(ModelSpec("dream-v0-instruct-7b", "dlm-hf", "Dream-org/Dream-v0-Instruct-7B", kind="dlm",
                   trust_remote_code=True, family="dream",
                   options={"end_tokens": ("<|im_end|>", "<|endoftext|>")},
                   notes="paper DLM (Dream-v0-Instruct-7B, remote code, shifted logits, tokenizer mask token)"))


# ------------------------------------------------------------------------------------------ tiny DLM + doubles

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
    from .tiny import state_hash, tiny_tokenizer

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
