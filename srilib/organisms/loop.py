"""The organisms' model and optimisation: a fresh seeded Llama, SmolLM2's LoRA adapter, the learning-rate schedule
and the AdamW loop every recipe runs (the v3 pair's included)."""
from __future__ import annotations

import math
import os

from .recipe import OrganismConfig

# One thread by default: on a shared 2-core machine a 2-thread pool spent most of its time waiting for a
# descheduled worker (6x slower per step, measured); SRILIB_TRAIN_THREADS overrides (not part of the key).
THREADS = int(os.environ.get("SRILIB_TRAIN_THREADS", "1"))


def lr_at(step: int, cfg: OrganismConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` x the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def build_model(cfg: OrganismConfig, tok):
    """A fresh (seeded) Llama: causal LM ("ar") or its bidirectional masked-diffusion variant ("dlm")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .modeling import DiffusionLlamaForMaskedLM

    if cfg.kind not in ("ar", "dlm"):
        raise ValueError(f"unknown organism kind {cfg.kind!r}; use 'ar' or 'dlm'")
    torch.manual_seed(cfg.seed)
    mcfg = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                       max_position_embeddings=1024, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       bos_token_id=None, tie_word_embeddings=True)
    if cfg.kind == "dlm":
        mcfg.mask_token_id = tok.mask_token_id
        return DiffusionLlamaForMaskedLM(mcfg)
    model = LlamaForCausalLM(mcfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def train_loop(model, params, cfg: OrganismConfig, step_loss, desc: str, start: int = 0, stop: int | None = None,
               opt_state: dict | None = None, rewarm: bool = False) -> tuple[list[list[float]], object]:
    """AdamW over steps ``start .. stop - 1`` (default: to ``cfg.steps``) with the global schedule.

    ``opt_state`` resumes an optimiser (an AR run continued from its snapshot is the same run); ``rewarm``
    re-warms the learning rate linearly over ``cfg.rewarmup`` steps (a DLM started from an AR snapshot).
    Returns the (step, smoothed loss) curve and the optimiser.
    """
    import torch
    from tqdm.auto import tqdm

    stop = cfg.steps if stop is None else stop
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    model.train()
    curve, run = [], None
    bar = tqdm(range(start, stop), desc=desc, unit="step")
    for step in bar:
        warm = min(1.0, (step - start + 1) / cfg.rewarmup) if rewarm else 1.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg) * warm
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        v = float(loss.detach())
        run = v if run is None else 0.95 * run + 0.05 * v
        if step % 10 == 0 or step == stop - 1:
            bar.set_postfix(loss=f"{run:.3f}")
            curve.append([step, round(run, 4)])
    model.eval()
    return curve, opt


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(cfg: OrganismConfig, n_layers: int):
    """The peft adapter of ``smollm2-135m-refusal``: rank ``lora_rank`` on every projection of the top
    ``train_layers`` blocks."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                      layers_to_transform=list(range(n_layers - cfg.train_layers, n_layers)), bias="none",
                      task_type="CAUSAL_LM")
