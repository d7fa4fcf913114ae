"""Random Search's objective on a model (:mod:`srilib.adaptive.random_search`): the log-probability of the
target's first token as the first reply token (AR) or at canvas position 0 of a fully masked canvas (DLM).

The search scores candidate suffixes of one request in batches (:class:`Layout`: the request's chat prefix,
suffix and tail, and which suffixes survive the decode/encode round trip; :class:`Scorer`: batched forward passes,
with a KV cache of the chat prefix on AR models); :func:`prompt_objective` scores arbitrary prompt strings on any
model, which :func:`transfer` uses to apply one model's prompts to another.
"""
from __future__ import annotations

import copy
import warnings
from typing import Sequence

import numpy as np
import torch

from .rs_data import RSResult, RSSettings

_SUFFIX_MARK = "\u2063SRILIB_SUFFIX\u2063"


def objective_view(lm):
    """The model the objective is read from: ``lm`` itself, except for a uniform-noise diffusion model
    (DiffusionGemma), which has no mask token and so no fully masked canvas: its causal encoder read as a causal LM
    (:class:`srilib.samplers.encoder_ar.EncoderLM`, the path its autoregressive training loss trains), whose
    log p(target | prompt) as the first reply token is the objective (our choice)."""
    from ..diffusion_gemma import FAMILY

    if lm.kind == "dlm" and getattr(lm, "family", "") == FAMILY:
        from dataclasses import replace

        from ..samplers.encoder_ar import EncoderLM
        return replace(lm, model=EncoderLM(lm.model), kind="ar")
    return lm


def target_token_ids(tokenizer, target: str) -> list[int]:
    """First token of ``target`` and of ``" " + target`` (the published code takes the better of "Sure" and
    " Sure"); when a variant is several tokens, its first token stands for it."""
    ids = []
    for t in (target, " " + target.lstrip()):
        enc = tokenizer(t, add_special_tokens=False)["input_ids"]
        if enc and enc[0] not in ids:
            ids.append(int(enc[0]))
    if not ids:
        raise ValueError(f"target {target!r} tokenizes to nothing")
    return ids


_VOCAB_CACHE: dict[tuple, torch.Tensor] = {}


def allowed_token_ids(lm) -> torch.Tensor:
    """Token ids a suffix may use: not special (nor the mask token), within the model's vocabulary, and each one
    decodes to text that encodes back to that same single token (computed once per tokenizer)."""
    tok = lm.tokenizer
    vocab = len(tok)
    out_dim = getattr(lm.model.config, "vocab_size", None) or vocab
    k = (lm.fingerprint, vocab, int(out_dim))
    if k in _VOCAB_CACHE:
        return _VOCAB_CACHE[k]
    special = set(getattr(tok, "all_special_ids", []) or [])
    if lm.mask_id is not None:
        special.add(int(lm.mask_id))
    cand = [i for i in range(min(vocab, int(out_dim))) if i not in special]
    texts = tok.batch_decode([[i] for i in cand], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    keep = [i for i, t, e in zip(cand, texts, enc) if t and e == [i] and "\ufffd" not in t]
    if not keep:
        raise ValueError(f"{lm.name}: no token survives the decode/encode round trip; cannot build suffixes")
    _VOCAB_CACHE[k] = torch.tensor(keep, dtype=torch.long)
    return _VOCAB_CACHE[k]


class Layout:
    """Token layout of one request: chat prefix ids + suffix ids + chat tail ids."""

    def __init__(self, lm, base: str, settings: RSSettings, n_adv: int):
        self.lm, self.base = lm, base
        tok = lm.tokenizer
        chat = lm.format_chat(base + _SUFFIX_MARK)
        if chat.count(_SUFFIX_MARK) != 1:
            raise ValueError(f"{lm.name}'s chat format changes the prompt text; cannot place a suffix")
        pre, post = chat.split(_SUFFIX_MARK)
        self.prefix = tok(pre, add_special_tokens=False)["input_ids"]
        self.post = tok(post, add_special_tokens=False)["input_ids"]
        unit = tok(settings.init, add_special_tokens=False)["input_ids"]
        if not unit:
            raise ValueError(f"RSSettings.init {settings.init!r} tokenizes to nothing")
        init = (unit * (n_adv // len(unit) + 1))[:n_adv]
        if not self.valid([init])[0]:
            raise ValueError(f"the initial suffix ({settings.init!r} repeated to {n_adv} tokens) does not survive "
                             f"the decode/encode round trip in {lm.name}'s chat format; pass another "
                             "RSSettings.init (e.g. ' !', ' x') or change n_tokens_adv")
        self.init = init

    def text(self, ids: Sequence[int]) -> str:
        return self.lm.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def valid(self, cands: Sequence[Sequence[int]]) -> list[bool]:
        """Each candidate's text, encoded as the attacked prompt, gives back exactly prefix + ids + tail."""
        texts = [self.text(c) for c in cands]
        encs = self.lm.encode([self.base + t for t in texts])
        return [e == self.prefix + list(c) + self.post for e, c in zip(encs, cands)]


_PREFIX_CACHE_OK: dict[tuple, bool] = {}  # (fingerprint, dtype, device) -> the cached prefix was checked


class Scorer:
    """Batched objective of candidate suffixes (all of one length) for one request."""

    def __init__(self, lm, layout: Layout, target_ids: list[int], settings: RSSettings, use_prefix_cache: bool):
        view = objective_view(lm)
        use_prefix_cache = use_prefix_cache and view is lm  # the encoder view takes full forward passes
        lm = view
        self.lm, self.layout, self.settings = lm, layout, settings
        self.dev = lm.device
        self.target = torch.tensor(target_ids, device=self.dev)
        self.prefix = torch.tensor([layout.prefix], device=self.dev)
        self.post = torch.tensor([layout.post], device=self.dev)
        self.cache = None
        self.n_scored = 0
        if lm.kind == "ar" and use_prefix_cache:
            self.cache = self._prefix_cache()

    @torch.no_grad()
    def _prefix_cache(self):
        """KV cache of the chat prefix; None (full forward passes) when the model does not support it. The first
        use per model and process is checked against a full forward pass (cached logits that disagree switch the
        cache off for that model, with a warning)."""
        from ..samplers.ar import out_cache
        ident = (self.lm.fingerprint, self.lm.dtype_name, str(self.dev))
        if _PREFIX_CACHE_OK.get(ident) is False:
            return None
        try:
            out = self.lm.model(input_ids=self.prefix, use_cache=True)
            cache = out_cache(out)
            if cache is None or not hasattr(cache, "batch_repeat_interleave"):
                _PREFIX_CACHE_OK[ident] = False
                return None
            if ident in _PREFIX_CACHE_OK:
                return cache
            self.cache = cache
            probe = torch.tensor([self.layout.init], device=self.dev)
            a = self._logits(probe)
            self.cache = None
            b = self._logits(probe)
        except Exception as e:  # noqa: BLE001 - any failure means: no prefix cache for this model
            warnings.warn(f"{self.lm.name}: prefix KV cache unavailable ({type(e).__name__}: {e}); using full "
                          "forward passes", stacklevel=3)
            self.cache = None
            _PREFIX_CACHE_OK[ident] = False
            return None
        ok = bool(torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3))
        _PREFIX_CACHE_OK[ident] = ok
        if not ok:
            warnings.warn(f"{self.lm.name}: prefix-cached logits differ from full forward passes; using full passes",
                          stacklevel=3)
            return None
        return cache

    def _logits(self, cands: torch.Tensor) -> torch.Tensor:
        """Logits [B, V] of the first reply token (AR) or of canvas position 0 (DLM)."""
        B = cands.shape[0]
        model = self.lm.model
        if self.lm.kind == "dlm":
            from ..models import mask_predict
            L = self.settings.gen_length
            canvas = torch.full((B, L), int(self.lm.mask_id), dtype=torch.long, device=self.dev)
            x = torch.cat([self.prefix.expand(B, -1), cands, self.post.expand(B, -1), canvas], dim=1)
            logits, _ = mask_predict(self.lm, x, None, [], start=x.shape[1] - L)
            out = logits[:, 0].float()
            out[:, int(self.lm.mask_id)] = -torch.inf  # the mask token is never proposed
            return out
        from ..samplers.ar import cache_kwargs
        import inspect
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        if self.cache is not None:
            c = copy.deepcopy(self.cache)
            c.batch_repeat_interleave(B)
            x = torch.cat([cands, self.post.expand(B, -1)], dim=1)
            out = model(input_ids=x, use_cache=True, **cache_kwargs(model, c), **keep)
        else:
            x = torch.cat([self.prefix.expand(B, -1), cands, self.post.expand(B, -1)], dim=1)
            out = model(input_ids=x, use_cache=False, **keep)
        return out.logits[:, -1].float()

    @torch.no_grad()
    def __call__(self, cands: Sequence[Sequence[int]], batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(objective [B] float64, target-is-argmax [B] bool) of the candidates."""
        x = torch.tensor([list(c) for c in cands], dtype=torch.long, device=self.dev)
        bs = batch_size or len(x)
        objs, hits = [], []
        for s in range(0, len(x), bs):
            logits = self._logits(x[s:s + bs])
            lp = torch.log_softmax(logits, dim=-1)
            objs.append(lp[:, self.target].max(-1).values.double().cpu())
            hits.append(torch.isin(logits.argmax(-1), self.target).cpu())
        self.n_scored += len(x)
        return torch.cat(objs).numpy(), torch.cat(hits).numpy()


@torch.no_grad()
def prompt_objective(lm, prompts: Sequence[str], target: str = "Sure", *, gen_length: int = 64,
                     batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Random Search's objective for arbitrary prompt strings on any model: (log p of the target token as the
    first reply token, AR; or at canvas position 0 of a fully masked canvas of ``gen_length``, DLM), and
    whether it is the argmax. Prompts are left-padded (attention mask and position ids), so the values match the
    search's unpadded scoring up to float tolerance."""
    from ..models import left_pad

    prompts = list(prompts)
    ids = lm.validate_prompts(prompts, reserve=gen_length if lm.kind == "dlm" else 1)
    lm = objective_view(lm)
    tgt = torch.tensor(target_token_ids(lm.tokenizer, target), device=lm.device)
    objs, hits = [], []
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        if lm.kind == "dlm":
            from ..models import mask_predict
            mask_id = int(lm.mask_id)
            pad = lm.pad_id if lm.pad_id != mask_id else lm.eos_ids[0]
            x, attn = left_pad(chunk, pad, lm.device)
            B = x.shape[0]
            x = torch.cat([x, torch.full((B, gen_length), mask_id, dtype=torch.long, device=lm.device)], dim=1)
            attn = torch.cat([attn, torch.ones((B, gen_length), dtype=attn.dtype, device=lm.device)], dim=1)
            logits, _ = mask_predict(lm, x, attn, [], start=x.shape[1] - gen_length)
            logits = logits[:, 0].float()
            logits[:, mask_id] = -torch.inf
        else:
            x, attn = left_pad(chunk, lm.pad_id, lm.device)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            logits = lm.model(input_ids=x, attention_mask=attn, position_ids=pos, use_cache=False).logits[:, -1]
            logits = logits.float()
        lp = torch.log_softmax(logits, -1)
        objs.append(lp[:, tgt].max(-1).values.double().cpu())
        hits.append(torch.isin(logits.argmax(-1), tgt).cpu())
    return torch.cat(objs).numpy(), torch.cat(hits).numpy()


def transfer(result: RSResult, lm, *, iteration: int | None = None, batch_size: int = 8) -> dict:
    """Apply the prompts (suffixes) found on one model to another (text level), e.g. the AR twin's suffixes to the
    DLM. Returns ``prompts`` (to generate and judge on ``lm`` like any prompt set), and per request the objective
    on the source (``source_objective``) and on ``lm`` (``objective``, ``target_argmax``), plus
    ``source``/``target`` model names. ``iteration``: use the prompts held after that many iterations."""
    prompts = result.prompts if iteration is None else result.prompts_at(iteration)
    lm.validate_prompts(prompts)
    target = result.meta["budget"]["target"]
    gl = result.meta["settings"]["gen_length"]
    obj, hit = prompt_objective(lm, prompts, target, gen_length=gl, batch_size=batch_size)
    src = result.objectives if iteration is None else None
    return {"prompts": list(prompts), "source": result.meta["model"], "target": lm.name,
            "source_objective": None if src is None else src.tolist(), "objective": obj.tolist(),
            "target_argmax": hit.tolist()}


__all__ = ["target_token_ids", "allowed_token_ids", "prompt_objective", "transfer"]
