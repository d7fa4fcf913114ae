"""Autoregressive decoding of any Hugging Face causal LM, traced step by step.

Batched, left-padded, KV-cached decoding of T tokens (greedy, or temperature sampling from a seeded generator).
Each forward pass returns the hidden states of the one new position, so capturing the SRI activations costs one
extra single-token forward pass in total (the state at the last token's own position) on top of plain decoding.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..traces import TraceSet


def left_pad(ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists; returns (input_ids [B, P], attention_mask [B, P])."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return input_ids.to(device), mask.to(device)


def pick_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None):
    """Greedy argmax (temperature 0) or nucleus sampling from softmax(logits / temperature)."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = sp.cumsum(-1) - sp > top_p
        sp[drop] = 0
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def cache_kwargs(model, cache) -> dict:
    """The KV-cache keyword of this model's forward (transformers 5.x: ``cache``; older and remote code:
    ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def out_cache(out):
    """The KV cache returned by a forward pass, whatever the output class calls it."""
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def select_layers(hidden_states: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Stack the requested hidden-state layers of the last position: [B, K, D] float32.

    ``hidden_states`` is the model's tuple (embeddings, layer 1, ..., last layer after the final norm); index -1
    is the last layer, 0 the embeddings, k the output of block k.
    """
    return torch.stack([hidden_states[k][:, -1, :] for k in layers], dim=1).float()


@dataclass
class ARSampler:
    """Left-to-right decoding of T tokens with per-step traces.

    Parameters
    ----------
    steps : int
        T, the number of generated tokens (= steps; paper: 32).
    temperature : float
        0 for greedy decoding (paper default).
    top_p : float
        Nucleus cut-off when sampling.
    seed : int
        Seed of the sampling generator (ignored when greedy).
    """

    steps: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    kind: str = "ar"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1 (got {self.steps}); the SRI signal needs at least one step")

    @property
    def name(self) -> str:
        return "ar-greedy" if self.temperature <= 0 else f"ar-t{self.temperature:g}"

    @property
    def canvas_length(self) -> int:
        return self.steps

    def config(self) -> dict:
        return {"sampler": "ar", **asdict(self)}

    @torch.no_grad()
    def trace_batch(self, lm, prompts: list[str], layers: Sequence[int]) -> TraceSet:
        model, T = lm.model, self.steps
        ids = lm.validate_prompts(prompts, reserve=T)
        input_ids, attn = left_pad(ids, lm.pad_id, lm.device)
        B = len(prompts)
        eos = torch.tensor(lm.eos_ids, device=lm.device)
        gen = None
        if self.temperature > 0:
            gen = torch.Generator(device=lm.device).manual_seed(self.seed)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True,
                    output_hidden_states=True, **keep)
        K, D = len(layers), model.config.hidden_size
        tokens = torch.full((B, T), -1, dtype=torch.long)
        alive = torch.ones(B, dtype=torch.bool, device=lm.device)  # not finished before this token
        valid = torch.zeros((B, T), dtype=torch.bool)
        sum_gen = torch.zeros((B, K, D), device=lm.device)
        sum_prod = torch.zeros((B, K, D), device=lm.device)
        pooled_gen = torch.zeros((B, T, K, D))
        pooled_prod = torch.zeros((B, T, K, D))
        prod_state = select_layers(out.hidden_states, layers)  # state at the position producing token 1
        logits, past = out.logits[:, -1, :], out_cache(out)
        last_pos = pos[:, -1:]
        t_done = T
        for t in range(T):
            nxt = pick_next(logits, self.temperature, self.top_p, gen)
            nxt = torch.where(alive, nxt, torch.full_like(nxt, lm.pad_id))
            tokens[:, t] = torch.where(alive, nxt, torch.full_like(nxt, -1)).cpu()
            valid[:, t] = alive.cpu()
            w = alive.float()[:, None, None]
            sum_prod += w * prod_state
            # one forward pass over the new token: its own state ("generated") and the next token's logits
            attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype, device=attn.device)], dim=1)
            last_pos = last_pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=last_pos, use_cache=True,
                        output_hidden_states=True, **cache_kwargs(model, past))
            state = select_layers(out.hidden_states, layers)
            sum_gen += w * state
            n = valid[:, : t + 1].sum(1).clamp(min=1).to(lm.device).float()[:, None, None]
            pooled_gen[:, t] = (sum_gen / n).cpu()
            pooled_prod[:, t] = (sum_prod / n).cpu()
            prod_state, logits, past = state, out.logits[:, -1, :], out_cache(out)
            alive = alive & ~torch.isin(nxt, eos)
            if not alive.any():
                t_done = t + 1
                break
        if t_done < T:  # everyone finished: the pooled means stay constant from here on
            pooled_gen[:, t_done:] = pooled_gen[:, t_done - 1: t_done]
            pooled_prod[:, t_done:] = pooled_prod[:, t_done - 1: t_done]
        return self._assemble(lm, prompts, tokens.numpy(), valid.numpy(), layers,
                              {"generated": pooled_gen.numpy(), "producer": pooled_prod.numpy()})

    def _assemble(self, lm, prompts, tokens: np.ndarray, valid: np.ndarray, layers, pooled) -> TraceSet:
        B, T = tokens.shape
        canvas = np.full((B, T, T), -1, dtype=np.int32)
        committed = np.zeros((B, T, T), dtype=bool)
        for t in range(T):
            canvas[:, t, : t + 1] = np.where(valid[:, : t + 1], tokens[:, : t + 1], -1)
            committed[:, t, : t + 1] = valid[:, : t + 1]
        # text so far after each step (special tokens such as EOS are not shown)
        seqs = [[int(x) for x in tokens[b, : t + 1] if x >= 0] for b in range(B) for t in range(T)]
        flat = lm.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        step_texts = [flat[b * T:(b + 1) * T] for b in range(B)]
        return TraceSet(prompts=list(prompts), tokens=canvas, committed=committed, predictions=canvas.copy(),
                        pooled={k: v.astype(np.float32) for k, v in pooled.items()}, layers=list(layers),
                        texts=[s[-1] for s in step_texts], step_texts=step_texts, pred_texts=None,
                        empty=np.zeros((B, T), dtype=bool),  # the first token always counts, EOS included
                        meta={"sampler": self.name})
