"""The DLM organism's model class: a Llama with bidirectional attention used as a masked-diffusion predictor.

``logits[:, i]`` (the prediction for position i, the "bidirectional" convention of :mod:`srilib.models`) is computed
from the hidden state at position i - 1, as Dream does: a causal LM's output head already predicts the next
position, so an AR checkpoint is a natural initialisation (Dream-v0 starts from Qwen2.5; organism-dlm starts from
organism-ar part-way through its training, see :mod:`srilib.organisms.train`). Every position attends to every
real (non-padding) token. Hidden states are not shifted. Position 0 keeps its own row.
"""
from __future__ import annotations

import torch
from transformers import LlamaForCausalLM


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """Row i of the result is row i - 1 of ``x`` along dim 1 (row 0 is kept)."""
    return torch.cat([x[:, :1], x[:, :-1]], dim=1)


def bidirectional_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, S] 0/1 padding mask -> [B, 1, S, S] boolean mask in which every query sees every real token."""
    valid = attention_mask.bool()
    B, S = valid.shape
    return valid[:, None, None, :].expand(B, 1, S, S)


class DiffusionLlamaForMaskedLM(LlamaForCausalLM):
    """LlamaForCausalLM with full (bidirectional) attention and logits at i read from the state at i - 1."""

    logit_shift = 1  # read by the training loss

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None,
                output_hidden_states=None, **kwargs):
        if labels is not None:
            raise ValueError("DiffusionLlamaForMaskedLM does not compute a loss; train it with "
                             "srilib.organisms.train (the masked-diffusion loss)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.dim() == 2:
            if position_ids is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            attention_mask = bidirectional_mask(attention_mask)
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False, output_hidden_states=output_hidden_states, **kwargs)
        out.logits = shift_right(out.logits)
        return out
