"""Autoregressive decoding of any Hugging Face causal LM, traced step by step.

Batched, left-padded, KV-cached decoding of T tokens (greedy, or temperature sampling from a seeded generator).
Each forward pass returns only the requested hidden-state layers (transformers 5 selects them by index; older
versions return every layer and we keep the requested ones) at the one new position.

Capture (``capture``, see :mod:`srilib.traces`): step t is the choice of token t.

- ``"after"`` (default): step t's state is read from the pass over token t itself (the pass that also gives the
  logits of token t + 1), so tracing costs one extra single-token forward pass in total (over the last token).
- ``"decision"``: step t's state is read from the pass whose logits chose token t (the pass over token t - 1, or
  the prompt for t = 1): exactly the passes of plain generation, no extra one. This is the authors' Llama code.

Poolings (running means over the steps so far; a generation stops contributing after the token that ends it,
end-of-text included, except ``producer_all``):

- ``generated`` (paper Section 3.1): under ``"after"``, the mean of the states of tokens 1..t at their own
  positions; under ``"decision"``, the tokens whose states the deciding pass holds, i.e. tokens 1..t-1 (the same
  vector as ``"after"`` gives at step t - 1). At step 1 under ``"decision"`` no token is generated yet: the state
  of the position that chooses token 1 (the prompt's last position, ``producer`` at step 1) stands in, flagged in
  ``TraceSet.empty`` (``meta["empty_pooling"] = "producer"``).
- ``producer``: the mean of the states at the positions that *produced* tokens 1..t (the prompt's last
  position, then tokens 1..t-1): the deciding passes' states, whatever the capture.
- ``producer_all`` (the authors' Llama code exactly): ``producer``, except that after end-of-text it keeps
  averaging, adding the state that produced end-of-text once per remaining step (their loop stops at
  end-of-text and pads the remaining steps with that state before a running mean over all T steps).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..models import left_pad
from ..traces import TracedLoop, TraceSet, check_capture, check_poolings

AR_POOLINGS = ("generated", "producer", "producer_all")


def pick_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None):
    """Greedy argmax (temperature 0) or nucleus sampling from softmax(logits / temperature), the logits warped by
    transformers' own temperature and top-p warpers (as ``generate(do_sample=True)`` does), then one seeded draw."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopPLogitsWarper)

    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                  + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))
    probs = torch.softmax(warpers(None, logits), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def cache_kwargs(model, cache) -> dict:
    """The KV-cache keyword of this model's forward (transformers 5.x: ``cache``; older and remote code:
    ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def out_cache(out):
    """The KV cache returned by a forward pass, whatever the output class calls it."""
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def hidden_request(layers: Sequence[int]):
    """``output_hidden_states`` argument that returns the requested layers: their indices where transformers can
    select them (5.x, so the others are not kept), else ``True``."""
    try:
        from transformers.utils.output_capturing import selected_hidden_states  # noqa: F401
    except ImportError:  # older transformers: all layers
        return True
    return [int(k) for k in layers]


def select_layers(hidden_states: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Stack the requested hidden-state layers of the last position: [B, K, D] float32.

    ``hidden_states`` is the model's tuple (embeddings, layer 1, ..., last layer after the final norm); index -1
    is the last layer, 0 the embeddings, k the output of block k.
    """
    return torch.stack([hidden_states[k][:, -1, :] for k in layers], dim=1).float()


@dataclass
class ARSampler(TracedLoop):
    """Left-to-right decoding of T tokens with per-step traces (see the module docstring).

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
    capture : str
        ``"after"`` (default; one extra forward pass) or ``"decision"`` (the authors' convention; no extra pass).
    poolings : tuple of str or None
        Poolings to record (None: all of ``generated``, ``producer``, ``producer_all``).
    """

    steps: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    kind: str = "ar"
    capture: str = "after"
    poolings: tuple | None = None

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1 (got {self.steps}); the SRI signal needs at least one step")
        check_capture(self.capture)
        self.poolings = check_poolings(self.poolings, AR_POOLINGS, "ARSampler")

    @property
    def name(self) -> str:
        return "ar-greedy" if self.temperature <= 0 else f"ar-t{self.temperature:g}"

    @property
    def canvas_length(self) -> int:
        return self.steps

    def config(self) -> dict:
        return {"sampler": "ar", **asdict(self)}

    @torch.no_grad()
    def _run(self, lm, prompts: list[str], layers: list[int], record: bool):
        model, T, dev = lm.model, self.steps, lm.device
        ids = lm.validate_prompts(prompts, reserve=T)
        input_ids, attn = left_pad(ids, lm.pad_id, dev)
        B = len(prompts)
        eos = torch.tensor(lm.eos_ids, device=dev)
        gen = None
        if self.temperature > 0:
            gen = torch.Generator(device=dev).manual_seed(self.seed)
        decision = self.capture == "decision"
        want = self.poolings or AR_POOLINGS
        hs = hidden_request(layers) if record else False
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True,
                    output_hidden_states=hs, **keep)
        tokens = torch.full((B, T), -1, dtype=torch.long, device=dev)
        valid = torch.zeros((B, T), dtype=torch.bool, device=dev)
        alive = torch.ones(B, dtype=torch.bool, device=dev)  # not finished before this token
        if record:
            K, D = len(layers), model.config.hidden_size
            zeros = lambda: torch.zeros((B, K, D), device=dev)  # noqa: E731
            sum_gen, sum_prod, sum_all = zeros(), zeros(), zeros()
            pooled = {k: torch.zeros((B, T, K, D), device=dev) for k in want}
            empty = torch.zeros((B, T), dtype=torch.bool, device=dev)
            dec = select_layers(out.hidden_states, layers)  # state of the position that chooses token 1
            hold = dec
        logits, past = out.logits[:, -1, :], out_cache(out)
        last_pos = pos[:, -1:]
        t_done = T
        for t in range(T):
            nxt = pick_next(logits, self.temperature, self.top_p, gen)
            nxt = torch.where(alive, nxt, torch.full_like(nxt, lm.pad_id))
            tokens[:, t] = torch.where(alive, nxt, torch.full_like(nxt, -1))
            valid[:, t] = alive
            if record:  # the deciding pass's state `dec` produced token t
                w = alive.float()[:, None, None]
                n = valid[:, : t + 1].sum(1).clamp(min=1).float()[:, None, None]
                sum_prod += w * dec
                if "producer" in pooled:
                    pooled["producer"][:, t] = sum_prod / n
                if "producer_all" in pooled:
                    hold = torch.where(alive[:, None, None], dec, hold)
                    sum_all += hold
                    pooled["producer_all"][:, t] = sum_all / (t + 1)
                if decision and "generated" in pooled:  # tokens before t, whose states this pass holds
                    if t == 0:
                        pooled["generated"][:, 0] = dec
                        empty[:, 0] = True
                    else:
                        pooled["generated"][:, t] = torch.where(alive[:, None, None], sum_gen / t,
                                                                pooled["generated"][:, t - 1])
            finished = alive & torch.isin(nxt, eos)
            more = t + 1 < T and bool((alive & ~finished).any())
            if more or (record and not decision):  # the pass over token t (after the last one: "after" only)
                attn = torch.cat([attn, torch.ones((B, 1), dtype=attn.dtype, device=attn.device)], dim=1)
                last_pos = last_pos + 1
                out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=last_pos, use_cache=True,
                            output_hidden_states=hs, **cache_kwargs(model, past))
                if record:
                    dec = select_layers(out.hidden_states, layers)  # token t's own state
                    sum_gen += w * dec
                    if not decision and "generated" in pooled:
                        pooled["generated"][:, t] = sum_gen / n
                logits, past = out.logits[:, -1, :], out_cache(out)
            alive = alive & ~finished
            if not more:
                t_done = t + 1
                break
        if record and t_done < T:  # everyone finished: the means stay constant from here on ...
            for k, v in pooled.items():
                v[:, t_done:] = v[:, t_done - 1: t_done]
            if "producer_all" in pooled:  # ... except the authors' one, which keeps adding the last state
                extra = torch.arange(1, T - t_done + 1, device=dev, dtype=torch.float32)[None, :, None, None]
                steps = torch.arange(t_done + 1, T + 1, device=dev, dtype=torch.float32)[None, :, None, None]
                pooled["producer_all"][:, t_done:] = (sum_all[:, None] + extra * hold[:, None]) / steps
        if record and decision and t_done < T and "generated" in pooled:
            empty[:, t_done:] = empty[:, t_done - 1: t_done]
        tokens, valid = tokens.cpu().numpy(), valid.cpu().numpy()
        if not record:
            seqs = [[int(x) for x in row if x >= 0] for row in tokens]
            return lm.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        return self._assemble(lm, prompts, tokens, valid, layers, {k: v.cpu().numpy() for k, v in pooled.items()},
                              empty.cpu().numpy())

    def _assemble(self, lm, prompts, tokens: np.ndarray, valid: np.ndarray, layers, pooled, empty) -> TraceSet:
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
        meta = {"sampler": self.name, "capture": self.capture}
        if self.capture == "decision":
            meta["empty_pooling"] = "producer"
        return TraceSet(prompts=list(prompts), tokens=canvas, committed=committed, predictions=canvas.copy(),
                        pooled={k: v.astype(np.float32) for k, v in pooled.items()}, layers=list(layers),
                        texts=[s[-1] for s in step_texts], step_texts=step_texts, pred_texts=None,
                        empty=empty.astype(bool),  # "after": never (the first token always counts, EOS included)
                        meta=meta, step_runs=[list(s) for s in step_texts])  # AR text has no gaps
