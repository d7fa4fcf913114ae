"""``dlm-ar`` on DiffusionGemma: its weights decoded left to right through its causal encoder.

:class:`srilib.samplers.diffusion.ARDiffusionSampler` (``make_sampler("dlm-ar")``) hands a DiffusionGemma model to
:func:`encoder_ar` (same settings, same config, hence the same trace keys): DiffusionGemma
(``family="diffusion_gemma"``, :mod:`srilib.diffusion_gemma`), which has no mask token and no canvas to decode one
position at a time. There the next token is the argmax of the model's LM head over the encoder's last hidden state, in
float32 and softcapped as the decoder's logits are: the causal path that DiffusionGemma's training reads for its
autoregressive loss (transformers ``modeling_diffusion_gemma.py``: ``encoder_last_hidden_state`` "to compute an
autoregressive loss on the encoder during training"; NeMo AutoModel's DiffusionGemma fine-tuning recipe adds that
next-token cross-entropy on "fp32, softcapped" encoder logits to the diffusion loss,
``nemo_automodel.components.loss.dllm_loss.encoder_ar_loss``). Decoding is one token per forward pass with a KV cache
(:class:`srilib.samplers.ARSampler` over :class:`EncoderLM`) and stops at end-of-text, as AR decoding does; the trace
keeps every (``gen_length / steps``)-th token, as :class:`ARDiffusionSampler` does for masked DLMs, so that at traced
step t the first (t+1) * gen_length / steps tokens are committed. Its poolings are the AR ones (``generated``,
``producer``, ``producer_all``: a causal encoder has no canvas to pool); no prefill.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..traces import TraceSet
from .ar import AR_POOLINGS, ARSampler


class _EncoderOutput:
    def __init__(self, logits, hidden_states, cache):
        self.logits, self.hidden_states, self.cache, self.past_key_values = logits, hidden_states, cache, None


class EncoderLM(nn.Module):
    """DiffusionGemma's causal encoder read as a causal LM: the next-token logits are the model's LM head over the
    encoder's last hidden state, in float32 and softcapped as the decoder's logits are (the AR co-loss of the
    fine-tuning recipe; see the module docstring). ``forward`` takes and returns what
    :class:`srilib.samplers.ARSampler` uses (``cache``, ``logits_to_keep``, selected ``hidden_states``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.dg = model
        self.config = model.config.get_text_config()
        self.generation_config = model.generation_config

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True,
                output_hidden_states=False, logits_to_keep: int = 0):
        enc = self.dg.model.encoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    cache=cache, output_hidden_states=output_hidden_states)
        h = enc.last_hidden_state[:, -logits_to_keep:] if logits_to_keep else enc.last_hidden_state
        cap = self.dg.final_logit_softcapping
        logits = self.dg.lm_head(h).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return _EncoderOutput(logits, enc.hidden_states, enc.cache)


def encoder_ar(sampler, lm, prompts: list[str], layers: list[int], record: bool):
    """dlm-ar on DiffusionGemma (``sampler``: the :class:`~srilib.samplers.diffusion.ARDiffusionSampler` whose
    settings it follows): ARSampler over :class:`EncoderLM`, one token per pass, every
    (gen_length / steps)-th state kept (see the module docstring)."""
    if sampler.prefill:
        raise ValueError("dlm-ar on DiffusionGemma decodes with its causal encoder, which has no canvas to prefill; "
                         "drop prefill")
    want = sampler.poolings
    if want is not None and set(want) - set(AR_POOLINGS):
        raise ValueError(f"dlm-ar on DiffusionGemma records the AR poolings {', '.join(AR_POOLINGS)} (its encoder "
                         f"has no canvas); got {list(want)}")
    ar = ARSampler(steps=sampler.gen_length, temperature=sampler.temperature, seed=sampler.seed,
                   capture=sampler.capture, poolings=want)
    enc_lm = replace(lm, model=EncoderLM(lm.model), kind="ar")
    if not record:
        return ar.generate(enc_lm, prompts)
    ts = ar.trace_batch(enc_lm, prompts, layers)
    every = sampler.gen_length // sampler.steps
    keep = np.arange(every - 1, sampler.gen_length, every)
    pick = lambda xs: [[row[i] for i in keep] for row in xs]  # noqa: E731
    return TraceSet(prompts=ts.prompts, tokens=ts.tokens[:, keep], committed=ts.committed[:, keep],
                    predictions=ts.predictions[:, keep], pooled={k: v[:, keep] for k, v in ts.pooled.items()},
                    layers=ts.layers, texts=ts.texts, step_texts=pick(ts.step_texts), pred_texts=None,
                    empty=ts.empty[:, keep], meta={**ts.meta, "sampler": sampler.name, "path": "encoder"},
                    step_runs=pick(ts.step_runs))
