"""The v3 pair: SmolLM2 made to refuse more, and the same model turned into a masked-diffusion LM (recipes,
training, shipped weights, loader).

* ``smollm2-135m-refusal-v3``: the v2 refusal adapter of SmolLM2-135M-Instruct (``smollm2-135m-refusal``, shipped)
  trained on for ``steps`` more steps on a fresh seeded subset of the frozen corpus (AR loss on the response and the
  first end-of-turn token), to lift its refusal of held-out harmful requests above the 80% precondition.
* ``smollm2-135m-dlm``: the v3 AR model (its adapter merged) adapted into a masked-diffusion LM, as the
  AR-to-diffusion adaptation literature does (DiffuGPT/DiffuLLaMA; Dream-7B from Qwen2.5): a new LoRA adapter on
  every projection of every block and one trainable ``[MASK]`` embedding, trained with LLaDA's masked-diffusion SFT
  loss. Model class: :class:`~srilib.organisms.smoldlm.SmolDiffusionLM`.

Attention, logit shift, ``[MASK]`` and the exact prompt cache: :mod:`srilib.organisms.smoldlm`.

End of turn. The canvas is the response followed by end-of-turn tokens up to ``canvas`` positions, all of them
supervised (LLaDA's instruct SFT: the model learns the length). Under the paper's plain low-confidence remasking
(one block) the confident end-of-turn tail tends to be committed early and content fills in from both ends (LLaDA
documents this for its instruct model and recommends semi-autoregressive blocks); the chapters run the paper's
setting (``@low_confidence``) and ``dlm-ar``, and any block length is a run (``@low_confidence:b8``). A share ``suffix_share`` of training examples gets a random *suffix* mask (everything
after a random cut masked) instead of the uniform one: the patterns left-to-right decoding (``dlm-ar``) and
semi-AR blocks meet, which uniform masking almost never draws.

Shipping: both adapters are stored in float16 (the trained float32 values rounded once; the loader and every
measurement use the rounded values) and checked by sha256 like v2 (:mod:`srilib.organisms.weights`).
``make organisms`` retrains them from the shipped v2 adapter and the frozen corpus. There are no tiny variants:
the tests and the smoke profile run :class:`~srilib.organisms.smoldlm.SmolDiffusionLM` on a seeded tiny Llama
(``tiny-dlm-blockcausal``, :mod:`srilib.tiny`). The cache key of a retrained model (:func:`v3_code_version`)
covers the code that decides its weights, not this module's prose.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..models import LoadedModel, ModelSpec, loader, register
from .smoldlm import SmolDiffusionLM, cache_kw, block_mask

V3_NAMES = ("smollm2-135m-refusal-v3", "smollm2-135m-dlm")
AR_V3, DLM_V3 = V3_NAMES
MASK_TOKEN = "<empty_output>"  # an unused special token of SmolLM2's tokenizer names [MASK] in the canvas
MASK_FILE = "mask_embedding.safetensors"


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class V3Config:
    """Everything that decides a v3 model's weights (all of it goes into the cache key)."""

    kind: str  # "ar" (continue the v2 adapter) | "dlm" (a new adapter on the merged v3 AR model)
    steps: int
    batch_size: int = 8
    lr: float = 5e-4
    warmup: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    rewarmup: int = 1
    max_rows: int = 1200
    harmful_share: float = 0.3
    canvas: int = 32
    max_prompt: int = 400
    lora_rank: int = 16
    lora_alpha: int = 32
    t_eps: float = 1e-3
    suffix_share: float = 0.4
    seed: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


V3_CONFIGS = {
    AR_V3: V3Config("ar", steps=150, lr=5e-4, max_rows=1200, harmful_share=0.3, seed=3),
    DLM_V3: V3Config("dlm", steps=350, lr=1e-3, max_rows=2800, harmful_share=0.3, seed=4),
}


@lru_cache(maxsize=1)
def v3_code_version() -> str:
    """The v3 recipe's identity: the organisms' shared training code (:func:`train.code_version`: the loop, batching,
    encoding) and what this module's model, losses and training function compute (:mod:`srilib.traces`).
    Docstrings, comments, prose and the loaders elsewhere in this module are not part of it, so editing them
    retrains and unfreezes nothing."""
    from ..traces import behaviour_hash
    from .train import code_version

    return behaviour_hash(cache_kw, block_mask, SmolDiffusionLM, V3Config, _rows, ar_loss, dlm_noise, dlm_loss,
                          _save_half, train_v3, extra=code_version())  # smoldlm's model class, this module's training


# --------------------------------------------------------------------------------------------- weights
def _merged_ar_v3(weights: str):
    """SmolLM2 (float32) with the v3 AR adapter merged (shipped or retrained): the AR model, and the DLM's base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import dequantised_smollm2_dir

    base_dir = dequantised_smollm2_dir()[0]
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")
    path, fp = v3_path(AR_V3, weights)
    return PeftModel.from_pretrained(model, path).merge_and_unload(), tok, fp


def v3_path(name: str, weights: str = "shipped") -> tuple[Path, str]:
    """(directory, fingerprint) of a v3 model: its shipped files, or the retrained ones in the cache."""
    from . import weights as W

    if weights == "shipped":
        path = W.shipped_dir(name)
        if path is None:
            raise W.ShippedWeightsError(f"no shipped weights for {name} are recorded in the manifest; train them with "
                                        "`make organisms` (or load with weights='trained')")
        return path, f"organism:{name}:shipped:{W.fingerprint(name)}"
    if weights != "trained":
        raise ValueError(f"weights={weights!r}; use 'shipped' or 'trained'")
    path = ensure_v3(name)
    return path, f"organism:{path.name}"


def mask_id_of(tok) -> int:
    i = tok.convert_tokens_to_ids(MASK_TOKEN)
    if not isinstance(i, int) or i < 0 or i == tok.unk_token_id:
        raise RuntimeError(f"the tokenizer has no {MASK_TOKEN!r} token to name [MASK]")
    return int(i)


def load_v3(name: str, weights: str = "shipped", dtype=torch.float32, device: str = "cpu"):
    """(model, tokenizer, fingerprint): the v3 AR model (a merged causal LM) or the DLM (:class:`SmolDiffusionLM`)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    if name == AR_V3:
        model, tok, fp = _merged_ar_v3(weights)
        return model.to(dtype=dtype, device=device).eval(), tok, fp
    if name != DLM_V3:
        raise ValueError(f"unknown v3 model {name!r}; use one of {V3_NAMES}")
    src, tok, _ = _merged_ar_v3(weights)
    path, fp = v3_path(DLM_V3, weights)
    merged = PeftModel.from_pretrained(src, path).merge_and_unload()
    mask = load_file(str(path / MASK_FILE))["mask_embedding"].float()
    model = SmolDiffusionLM(merged, mask_id_of(tok), mask)
    return model.to(dtype=dtype, device=device).eval(), tok, fp


@loader("organism-v3")
def _load_v3(spec: ModelSpec, dtype, device: str, weights: str = "shipped", **_) -> LoadedModel:
    from ..models import dtype_name

    model, tok, fp = load_v3(spec.name, weights, dtype, device)
    kind = "dlm" if spec.name == DLM_V3 else "ar"
    return LoadedModel(name=spec.name, model=model, tokenizer=tok, kind=kind, fingerprint=fp,
                       dtype_name=dtype_name(dtype), mask_id=model.mask_id if kind == "dlm" else None,
                       family="blockcausal" if kind == "dlm" else "")


register(ModelSpec("smollm2-135m-refusal-v3", "organism-v3", kind="ar", dtype="float32",
                   notes="SmolLM2-135M-Instruct with the v2 refusal adapter trained on (v3): the source of "
                         "smollm2-135m-dlm. Shipped with srilib (see book/organisms.md)."))
register(ModelSpec("smollm2-135m-dlm", "organism-v3", kind="dlm", dtype="float32", family="blockcausal",
                   notes="smollm2-135m-refusal-v3 adapted into a masked-diffusion LM (block-causal attention, exact "
                         "prompt cache, Dream's logit shift). Shipped with srilib (see book/organisms.md)."))


# --------------------------------------------------------------------------------------------- training
def _rows(cfg: V3Config, tok):
    from .corpus import load_corpus
    from .train import batches, encode_rows, subset_rows  # hashed by v3_code_version: keep .train
    import numpy as np

    rows = subset_rows(load_corpus(), cfg.max_rows, cfg.seed, cfg.harmful_share)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    prompts, canvas, lens, dropped = encode_rows(tok, rows, cfg.canvas, cfg.max_prompt, eos)
    plan = batches(np.array([len(p) for p in prompts]), cfg.batch_size, cfg.steps, cfg.seed)
    return rows, prompts, torch.from_numpy(canvas), torch.from_numpy(lens), dropped, plan


def ar_loss(model, ids, att, P, cv, lens):
    """Next-token cross-entropy on the response tokens and the first end-of-turn token."""
    import torch.nn.functional as F

    L = int(lens.max())
    cv = cv[:, :L]
    x = torch.cat([ids, cv], 1)
    a = torch.cat([att, torch.ones_like(cv)], 1)
    h = model.model(input_ids=x[:, :-1], attention_mask=a[:, :-1],
                    position_ids=SmolDiffusionLM.positions(a)[:, :-1]).last_hidden_state
    logits = model.lm_head(h[:, P - 1:])
    keep = torch.arange(L)[None, :] < lens[:, None]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cv.reshape(-1), reduction="none")
    return (ce.view(-1, L) * keep).sum() / keep.sum()


def dlm_noise(cv: torch.Tensor, mask_id: int, t_eps: float, suffix_share: float, gen: torch.Generator):
    """LLaDA's forward process on a canvas batch: t ~ U(eps, 1) (stratified over the batch), each token masked with
    probability t; a ``suffix_share`` of rows instead masks every position from a random cut on (t = masked share).
    Returns the noisy canvas, the mask and t per row."""
    B, L = cv.shape
    u = (torch.rand(1, generator=gen) + torch.arange(B) / B) % 1.0
    t = t_eps + (1 - t_eps) * u
    masked = torch.rand((B, L), generator=gen) < t[:, None]
    suffix = torch.rand(B, generator=gen) < suffix_share
    cut = torch.randint(0, L, (B,), generator=gen)
    suf = torch.arange(L)[None, :] >= cut[:, None]
    masked = torch.where(suffix[:, None], suf, masked)
    t = torch.where(suffix, suf.float().mean(1), t)
    return torch.where(masked, torch.full_like(cv, mask_id), cv), masked, t


def dlm_loss(dlm: SmolDiffusionLM, ids, att, P, cv, t_eps, suffix_share, gen):
    """Masked-diffusion SFT loss (LLaDA): CE on masked canvas tokens weighted by 1/t, averaged over positions."""
    import torch.nn.functional as F

    noisy, masked, t = dlm_noise(cv, dlm.mask_id, t_eps, suffix_share, gen)
    x = torch.cat([ids, noisy], 1)
    a = torch.cat([att, torch.ones_like(cv)], 1)
    logits, _ = dlm.predict(x, a, P)  # logits of the canvas (the states are not needed)
    B, L = cv.shape
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cv.reshape(-1), reduction="none")
    return (ce.view(B, L) * masked / t[:, None]).sum() / (B * L)


def _save_half(model, out: Path) -> None:
    """peft's adapter files, with the weights rounded to float16 (what ships and what every load uses)."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(out)
    f = out / "adapter_model.safetensors"
    sd = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(f)).items()}
    save_file(sd, str(f))


def train_v3(name: str, out: Path) -> dict:
    """Train ``name`` (see the module docstring) and save its adapter (and [MASK] embedding) to ``out``."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import save_file

    from .corpus import CORPUS_FILE, sha256_file
    from .train import LORA_TARGETS, THREADS, train_loop, collate  # hashed by v3_code_version: keep .train

    cfg = V3_CONFIGS[name]
    torch.set_num_threads(THREADS)
    t0 = time.time()
    if cfg.kind == "ar":  # continue the v2 adapter (its rank and layers) from its shipped weights
        from ..models import dequantised_smollm2_dir
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from . import weights as W

        base_dir = dequantised_smollm2_dir()[0]
        tok = AutoTokenizer.from_pretrained(base_dir)
        src = W.shipped_dir("smollm2-135m-refusal")
        base_fp = f"organism:smollm2-135m-refusal:shipped:{W.fingerprint('smollm2-135m-refusal')}"
        torch.manual_seed(cfg.seed)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32"), src,
                                          is_trainable=True)
        core = model.get_base_model()
    else:
        merged, tok, base_fp = _merged_ar_v3("trained")
        torch.manual_seed(cfg.seed)
        n = merged.config.num_hidden_layers
        lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=list(LORA_TARGETS), layers_to_transform=list(range(n)), bias="none",
                          task_type="CAUSAL_LM")
        model = get_peft_model(merged, lcfg)
        core = SmolDiffusionLM(model.get_base_model(), mask_id_of(tok))
    rows, prompts, canvas, lens, dropped, plan = _rows(cfg, tok)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.kind == "dlm":
        params.append(core.mask_embedding)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|im_end|>")
    tokens = [0]

    def step_loss(step: int):
        idx = plan[step]
        ids, att, P = collate(prompts, idx, pad)
        tokens[0] += ids.numel() + len(idx) * cfg.canvas
        if cfg.kind == "ar":
            return ar_loss(core, ids, att, P, canvas[idx], lens[idx])
        return dlm_loss(core, ids, att, P, canvas[idx], cfg.t_eps, cfg.suffix_share, gen)

    t1 = time.time()
    curve, _ = train_loop(core, params, cfg, step_loss, f"train {name}")
    seconds = time.time() - t1
    _save_half(model, out)
    if cfg.kind == "dlm":
        save_file({"mask_embedding": core.mask_embedding.detach().to(torch.float16).contiguous()},
                  str(out / MASK_FILE))
    return {"name": name, "config": cfg.as_dict(), "corpus_sha256": sha256_file(CORPUS_FILE),
            "code_version": v3_code_version(), "base": base_fp, "rows": len(rows),
            "rows_dropped_long_prompt": dropped, "params_trained": sum(p.numel() for p in params),
            "train_seconds": round(seconds, 1), "total_seconds": round(time.time() - t0, 1),
            "tokens_processed": tokens[0], "tokens_per_second": round(tokens[0] / max(seconds, 1e-9)),
            "threads": torch.get_num_threads(), "loadavg_end": os.getloadavg()[0], "loss_curve": curve,
            "epochs": round(cfg.steps * cfg.batch_size / len(prompts), 2), "stored_dtype": "float16",
            "lora": "v2 adapter continued" if cfg.kind == "ar" else
            f"rank {cfg.lora_rank} on {', '.join(LORA_TARGETS)} of every block"}


def v3_dir(name: str) -> Path:
    """Cache directory of a retrained v3 model: keyed by corpus, config, code and the base it starts from."""
    from ..traces import default_cache_dir
    from .corpus import CORPUS_FILE, sha256_file
    from . import weights as W

    base = (f"v2:{W.fingerprint('smollm2-135m-refusal')}" if name == AR_V3 else f"v3ar:{v3_dir(AR_V3).name}")
    payload = {"name": name, "corpus": sha256_file(CORPUS_FILE), "config": V3_CONFIGS[name].as_dict(),
               "code": v3_code_version(), "base": base}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return default_cache_dir() / "models" / f"{name}-{key}"


def ensure_v3(name: str) -> Path:
    """The cache directory of v3 model ``name``, trained now (atomically, once) if it is not there yet."""
    from .artifacts import build_once

    if name == DLM_V3:
        ensure_v3(AR_V3)

    def build(tmp: Path) -> None:
        (tmp / "train_log.json").write_text(json.dumps(train_v3(name, tmp), indent=1))

    return build_once(v3_dir(name), build)


if __name__ == "__main__":  # python -m srilib.organisms.v3 [NAME ...]: train (or find) the v3 models
    import sys

    for n in sys.argv[1:] or list(V3_NAMES):
        print(n, ensure_v3(n))
