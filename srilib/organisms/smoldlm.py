"""``smollm2-135m-dlm``'s model class: a causal Llama read as a block-causal masked-diffusion LM.

Attention (block-causal, with an exact prompt cache). The prompt but its last token is read causally, as the AR
model reads it, and never attends to the response. The *block* -- the last prompt token and the canvas (response)
positions -- attends to every real prompt token and bidirectionally within itself. Logits use Dream's shift:
canvas position i is predicted from the block state one position to its left, so canvas position 0 is predicted
from the last prompt token. That token sits inside the block, so it sees the canvas and its prediction is revised
with it (a probe that kept it outside the block could never change the AR model's first token). No prompt position
attends to the block, so the prompt's keys and values do not depend on the canvas: they are computed once per
prompt batch (:meth:`SmolDiffusionLM.prompt_cache`) and every denoising step runs only the block. This is exact,
not an approximation (tested: cached and uncached decoding commit the same tokens at the same steps).

``[MASK]`` is a trainable embedding vector: the id of an unused special token names it in the canvas, and its row
of the (tied) embedding matrix is never read. The training and the shipped weights are in
:mod:`srilib.organisms.v3`; :func:`srilib.models.mask_predict` calls :meth:`SmolDiffusionLM.predict` for the
``"blockcausal"`` family, and ``tiny-dlm-blockcausal`` (:mod:`srilib.tiny`) runs this class on a seeded tiny
Llama for the tests and the smoke profile.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# --------------------------------------------------------------------------------------------- the model
@dataclass
class PromptCache:
    """Keys and values of the causal prompt prefix (every position before the block), computed once."""

    kv: object  # a transformers Cache
    ids: torch.Tensor  # [B, start - 1] the prefix it was computed from (checked on use)
    length: int


def cache_kw(lm_model, kv) -> dict:
    """The cache keyword of this transformers version's model forward (``cache`` from 5.x on, before it
    ``past_key_values``)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(lm_model.forward).parameters else "past_key_values"
    return {name: kv}


def block_mask(attn: torch.Tensor, block_start: int, past: int = 0) -> torch.Tensor:
    """[B, K] 0/1 key padding mask -> [B, 1, K - past, K] boolean attention mask for the queries ``past:``.

    Queries before ``block_start`` attend causally; queries from ``block_start`` on (the block) attend to every key.
    Padding keys are hidden from everyone; every query sees itself (no fully masked row on left padding)."""
    B, K = attn.shape
    q = torch.arange(past, K, device=attn.device)[:, None]
    k = torch.arange(K, device=attn.device)[None, :]
    allowed = (k <= q) | (q >= block_start)
    m = allowed[None] & attn.bool()[:, None, :]
    m = m | (k == q)[None]
    return m[:, None]


class SmolDiffusionLM(nn.Module):
    """A causal Llama read as a block-causal masked-diffusion LM (see the module docstring).

    ``predict(input_ids, attention_mask, start)`` returns the logits of canvas positions ``start:`` (canvas
    position i from the state at i - 1) and the hidden states of those positions; :func:`srilib.models.mask_predict`
    calls it for the ``"blockcausal"`` family.
    """

    logit_shift = 1

    def __init__(self, lm, mask_id: int, mask_embedding: torch.Tensor | None = None):
        super().__init__()
        self.lm = lm
        self.config = lm.config
        self.generation_config = lm.generation_config
        self.mask_id = int(mask_id)
        emb = lm.get_input_embeddings().weight
        init = emb.detach().mean(0) if mask_embedding is None else mask_embedding
        self.mask_embedding = nn.Parameter(init.detach().clone().reshape(emb.shape[1]).to(emb.dtype))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.lm.get_input_embeddings()(ids)
        return torch.where((ids == self.mask_id)[..., None], self.mask_embedding.to(e.dtype), e)

    @staticmethod
    def positions(attn: torch.Tensor) -> torch.Tensor:
        return (attn.long().cumsum(-1) - 1).clamp(min=0)

    @torch.no_grad()
    def prompt_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int) -> PromptCache | None:
        """The causal prefix's keys and values (positions before ``start - 1``), or None when there is none."""
        b0 = start - 1
        if b0 < 1:
            return None
        from transformers import DynamicCache

        attn = attention_mask[:, :b0]
        kv = DynamicCache(config=self.config)
        self.lm.model(inputs_embeds=self.embed(input_ids[:, :b0]), attention_mask=block_mask(attn, b0),
                      position_ids=self.positions(attn), use_cache=True, **cache_kw(self.lm.model, kv))
        return PromptCache(kv=kv, ids=input_ids[:, :b0].clone(), length=b0)

    def forward_states(self, input_ids, attention_mask, start: int, cache: PromptCache | None = None,
                       hidden_layers: bool = False):
        """Final-norm states of positions ``past:`` (past = the cached prefix length) and, with ``hidden_layers``,
        the per-layer hidden-states tuple of the same positions."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        b0 = max(start - 1, 0)
        past = 0
        if cache is not None:
            if cache.length != b0 or not torch.equal(cache.ids, input_ids[:, :b0]):
                raise ValueError("the prompt cache was computed for other prompts or another canvas start; build it "
                                 "again with prompt_cache() for this batch")
            past = b0
        out = self.lm.model(inputs_embeds=self.embed(input_ids[:, past:]),
                            attention_mask=block_mask(attention_mask, b0, past),
                            position_ids=self.positions(attention_mask)[:, past:],
                            use_cache=cache is not None, **cache_kw(self.lm.model, cache.kv if cache else None),
                            output_hidden_states=hidden_layers)
        if cache is not None:
            cache.kv.crop(past - cache.kv.get_seq_length())  # drop the block's keys and values again
        return out.last_hidden_state, (out.hidden_states if hidden_layers else None), past

    def predict(self, input_ids, attention_mask, start: int, layers=(), cache: PromptCache | None = None,
                need: torch.Tensor | None = None):
        """Logits [B, S - start, V] of the canvas (``need`` [B, S - start] bool: only those rows are computed, zeros
        elsewhere) and the states ``(hidden-states tuple or None, final-norm states, offset)``, in which position
        ``offset`` is canvas position 0 (what :func:`srilib.models.mask_predict` selects ``layers`` from; the
        per-layer tuple is computed only when ``layers`` names a layer other than -1, the final norm's)."""
        others = any(k != -1 for k in layers)
        if start == 0:  # a prompt alone (e.g. DiffuGuard's audit): read as generation reads it, causally to its end
            final, hs, _ = self.forward_states(input_ids, attention_mask, input_ids.shape[1], None, others)
            h = torch.cat([final[:, :1], final[:, :-1]], 1)  # position 0 keeps its own row, as in Dream
            past = 0
        else:
            final, hs, past = self.forward_states(input_ids, attention_mask, start, cache, others)
            h = final[:, start - 1 - past: -1]  # the state at i - 1 predicts canvas position i
        head = self.lm.get_output_embeddings()
        if need is None:
            logits = head(h)
        else:
            logits = h.new_zeros(h.shape[0], h.shape[1], head.weight.shape[0])
            logits[need] = head(h[need])
        return logits, (hs, final, start - past)
