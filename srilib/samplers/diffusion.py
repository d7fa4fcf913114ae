"""Masked-diffusion sampling of a DLM, traced step by step in the shared format (srilib.traces.TraceSet).

The response is a *canvas* of ``gen_length`` mask tokens appended to the chat-formatted (left-padded) prompt. Each
step runs the model once over prompt + canvas, proposes a token for every masked position and commits some of
them; committed tokens are never remasked.

- :class:`DiffusionSampler`: LLaDA-style denoising. The canvas is split into blocks of ``block_length`` decoded
  left to right (semi-AR); the ``steps`` are split evenly over the blocks, and a block's masked positions are
  committed at an even rate over its steps (the remainder goes to the first steps: LLaDA's
  ``get_num_transfer_tokens``, ``schedule="llada"``, the default), or at Dream's rate (``schedule="dream"``: with
  timesteps ``linspace(1, 1e-3, steps + 1)``, step i commits ``int(m * (1 - t[i+1] / t[i]))`` of the ``m`` still
  masked positions, and the last step commits the rest; uneven, e.g. 3 per step then a large final step for 128
  positions in 32 steps). Which positions are committed is ranked by a *remasking* rule within the current
  block: ``low_confidence`` (probability of the proposed token, LLaDA), ``random``, and Dream's ``entropy``
  (negative entropy), ``maskgit_plus`` (top-1 probability; identical to ``low_confidence`` when greedy) and
  ``topk_margin`` (top-1 minus top-2).
- :class:`ARDiffusionSampler` (``dlm-ar``): the same weights decoded left to right, one position per forward pass
  (LLaDA with block length 1); see its docstring for how its ``steps`` relate to the canvas.

Proposals are the argmax of the logits; with ``temperature`` > 0 they are drawn as LLaDA's ``generate()`` draws
them (Gumbel-max in float64: ``argmax(exp(logits) / (-log u) ** temperature)``, u uniform from the seeded
``torch.Generator``, drawn over the current block; ``random`` remasking then draws its ranks over the block).
The mask token itself is never proposed. Confidences use the untempered softmax (as LLaDA's do; Dream's
samplers sample with a tempered softmax instead, which srilib does not reproduce).

Recorded per step t (see :class:`srilib.traces.TraceSet`): the canvas after step t (-1 where masked), the committed
mask, the predictions (committed tokens + the argmax at every masked position, from the forward pass that made
step t's commit decision), the text a reader would see (committed tokens in canvas order, masked positions and
special tokens skipped, up to the first committed end-of-text token), the decoded full prediction (cut the same
way), the same text split at masked gaps (``step_runs``: contiguous committed runs only, what the refusal
dictionary reads), and pooled activations.

Capture (``capture``, see :mod:`srilib.traces`). The pass after step t's commit is also the pass that decides
step t + 1.

- ``"after"`` (default): step t's activation comes from the forward pass that sees every token committed up to
  and including step t, so tracing adds exactly one forward pass (after the last step).
- ``"decision"``: step t's activation comes from the pass that made step t's decision (its input: what was
  committed before step t): exactly the passes of untraced generation. The authors' LLaDA code does this.

Poolings over the response canvas of the capture pass, with the committed positions *of that pass's input*
(under ``"decision"``: those committed before step t, so nothing at step 1 unless prefilled):

- ``generated`` (paper): committed positions before the first committed end-of-text/padding token; at a step
  where there are none (nothing a reader would see yet, e.g. only end-of-text committed at the tail, which is
  what low-confidence remasking often commits first, or step 1 under ``"decision"``), the ``canvas`` pooling
  of that step, flagged in ``TraceSet.empty`` (see :mod:`srilib.traces`);
- ``committed``: every committed position, end-of-text padding included (where none: ``canvas``, as above);
- ``canvas``: all ``gen_length`` positions, masked ones included;
- ``canvas_decision`` (the authors' LLaDA code exactly): ``canvas`` of the pass that made step t's decision,
  whatever ``capture`` says (under ``"decision"`` it equals ``canvas``; under ``"after"`` it is the ``canvas``
  of the previous step's pass, and of the first pass at step 1).

One room: one canvas loop (``_CanvasSampler``: forward pass, proposals, commits, capture and pooling, the recorded
step) that both samplers share and only parametrise (block length, model steps and recording stride, their
``_schedule``), with the helpers that loop calls; splitting it would put the loop and its two users in different
files, and :mod:`srilib.samplers.diffuguard` builds on the same loop (its ``_rank`` / ``_after_block`` hooks) and
helpers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..diffusion_gemma import FAMILY
from ..models import left_pad
from ..traces import RUN_SEPARATOR, TracedLoop, TraceSet, check_capture, check_poolings

REMASKINGS = ("low_confidence", "random", "entropy", "maskgit_plus", "topk_margin")
SAMPLER_NAMES = REMASKINGS + ("dlm-ar",)
DIFFUGUARD_NAMES = ("diffuguard", "diffuguard-sar")  # srilib.samplers.diffuguard: SAR + audit/repair, SAR only
DLM_POOLINGS = ("generated", "committed", "canvas", "canvas_decision")
SCHEDULES = ("llada", "dream")
DREAM_EPS = 1e-3  # Dream's diffusion_generate default: timesteps = linspace(1, eps, steps + 1)


def num_transfer_tokens(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Tokens to commit at each of ``steps`` steps for rows with ``n_masked`` masked positions, [B] -> [B, steps]:
    an even split with the remainder spread over the first steps (sums to ``n_masked``)."""
    n = n_masked.long()
    base, rem = n // steps, n % steps
    first = torch.arange(steps, device=n.device)[None, :] < rem[:, None]
    return base[:, None] + first.long()


def dream_transfer_tokens(n_masked: torch.Tensor, i: int, steps: int) -> torch.Tensor:
    """Dream's schedule: tokens to commit at step ``i`` (0-based) of ``steps`` for rows with ``n_masked`` masked
    positions *now*, [B] -> [B]: ``int(m * (1 - s / t))`` with ``t, s`` = timesteps i, i + 1 of
    ``linspace(1, 1e-3, steps + 1)`` (float32, as Dream computes it), and every remaining mask at the last step.
    Dream averages the masked count over its batch; srilib counts per row (identical for one prompt)."""
    m = n_masked.float()
    if i >= steps - 1:
        return n_masked.long()
    ts = torch.linspace(1, DREAM_EPS, steps + 1)
    t, s = ts[i], ts[i + 1]
    return (m.cpu() * (1 - s / t)).long().to(n_masked.device)


def gumbel_argmax(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """LLaDA's proposal at ``temperature`` > 0: in float64, ``argmax(exp(logits) / (-log u) ** temperature)`` with
    u ~ U[0, 1) drawn from ``gen`` in the shape of ``logits`` (Gumbel-max sampling from softmax(logits / T))."""
    l64 = logits.to(torch.float64)
    u = torch.rand(l64.shape, dtype=torch.float64, generator=gen, device=l64.device)
    return (l64.exp() / (-torch.log(u)) ** temperature).argmax(-1)


def pairs(mapping, what: str) -> list[tuple]:
    """The ``(key, value)`` pairs of a dict or of a sequence of pairs; a clear error naming ``what`` (e.g.
    "prefill entries are (position, text) pairs") for anything else."""
    items = mapping.items() if isinstance(mapping, dict) else mapping
    out = []
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise ValueError(f"{what} or a dict; got {item!r}") from None
        out.append((key, value))
    return out


def normalize_prefill(prefill, gen_length: int) -> tuple[tuple[int, str], ...] | None:
    """``{position: text}`` (or pairs) -> sorted ``((position, text), ...)``, checked against the canvas length."""
    if prefill is None:
        return None
    out = []
    for pos, text in pairs(prefill, "prefill entries are (position, text) pairs"):
        if isinstance(pos, str) and pos.strip().lstrip("-").isdigit():
            pos = int(pos)  # JSON round trips turn keys into strings
        if not isinstance(pos, (int, np.integer)) or isinstance(pos, bool):
            raise ValueError(f"prefill position {pos!r} is not an integer canvas position")
        if not 0 <= int(pos) < gen_length:
            raise ValueError(f"prefill position {pos} is outside the canvas [0, {gen_length}); use positions "
                             f"below gen_length={gen_length} or raise gen_length")
        if not isinstance(text, str) or not text:
            raise ValueError(f"prefill text at position {pos} must be a non-empty string, got {text!r}")
        out.append((int(pos), text))
    return tuple(sorted(out)) or None


def top_k_mask(conf: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the ``k[b]`` highest entries of each row of ``conf`` (ties: lower index first)."""
    B, n = conf.shape
    order = conf.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=conf.device).expand(B, n))
    return rank < k[:, None]


def confidence(logits: torch.Tensor, x0: torch.Tensor, remasking: str, gen: torch.Generator) -> torch.Tensor:
    """Ranking score of each proposal [B, n] (higher = committed first)."""
    if remasking == "random":
        return torch.rand(x0.shape, generator=gen, device=x0.device)
    logp = torch.log_softmax(logits, dim=-1)
    if remasking == "low_confidence":
        return logp.gather(-1, x0[..., None]).squeeze(-1).exp()
    p = logp.exp()
    if remasking == "maskgit_plus":
        return p.max(dim=-1).values
    if remasking == "topk_margin":
        top = p.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    if remasking == "entropy":
        return torch.special.xlogy(p, p).sum(-1)  # negative entropy
    raise ValueError(f"unknown remasking {remasking!r}; use one of {', '.join(REMASKINGS)}")


def visible(tokens: torch.Tensor, done: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Committed positions before the first committed end-of-text token (what a reader sees)."""
    stop = torch.isin(tokens, end) & done
    return done & (stop.long().cumsum(-1) == 0)


def _decode_seqs(tok, seqs: list[list[int]]) -> list[str]:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None and not getattr(tok, "clean_up_tokenization_spaces", True):
        return backend.decode_batch(seqs, skip_special_tokens=True)  # what batch_decode does, without its overhead
    return tok.batch_decode(seqs, skip_special_tokens=True)


def decode(tok, tokens: np.ndarray, keep: np.ndarray) -> list[str]:
    """Decode each row's kept tokens in canvas order (special tokens skipped): rows of [..., L] -> flat list."""
    t2, k2 = tokens.reshape(-1, tokens.shape[-1]), keep.reshape(-1, keep.shape[-1])
    return _decode_seqs(tok, [row[m].tolist() for row, m in zip(t2, k2)])


def decode_runs(tok, tokens: np.ndarray, keep: np.ndarray, joined: list[str]) -> list[str]:
    """Like :func:`decode`, but each maximal run of consecutive kept positions is decoded on its own and the runs
    are joined by :data:`srilib.traces.RUN_SEPARATOR`, so that no text spans a masked gap. ``joined`` is
    ``decode(tok, tokens, keep)``, reused where a row has no gap."""
    t2, k2 = tokens.reshape(-1, tokens.shape[-1]), keep.reshape(-1, keep.shape[-1]).astype(bool)
    starts = k2.copy()
    starts[:, 1:] &= ~k2[:, :-1]  # first position of each run
    ends = k2.copy()
    ends[:, :-1] &= ~k2[:, 1:]  # last position of each run
    out, jobs, seqs = list(joined), [], []
    for i in np.flatnonzero(starts.sum(1) > 1):  # rows with a gap
        row = t2[i].tolist()
        runs = [row[a:b + 1] for a, b in zip(np.flatnonzero(starts[i]).tolist(), np.flatnonzero(ends[i]).tolist())]
        jobs.append((int(i), len(runs)))
        seqs.extend(runs)
    if jobs:
        texts = iter(_decode_seqs(tok, seqs))
        for i, n in jobs:
            parts = [next(texts) for _ in range(n)]
            out[i] = RUN_SEPARATOR.join(p for p in parts if p.strip())
    return out


class _CanvasSampler(TracedLoop):
    """Shared denoising loop; subclasses define the block length, model steps and recording stride."""

    kind = "dlm"
    gen_length: int
    temperature: float
    seed: int
    prefill: tuple | None
    capture: str
    poolings: tuple | None
    schedule = "llada"

    # ---- provided by subclasses
    def _schedule(self) -> tuple[int, int, int, str]:
        """(block_length, model steps, record every n-th step, remasking)."""
        raise NotImplementedError

    @property
    def canvas_length(self) -> int:
        return self.gen_length

    @property
    def T(self) -> int:
        _, steps, every, _ = self._schedule()
        return steps // every

    def _check_common(self) -> None:
        check_capture(self.capture)
        self.poolings = check_poolings(self.poolings, DLM_POOLINGS, type(self).__name__)


    # ---- internals
    def _prefill_ids(self, lm) -> list[tuple[int, list[int]]]:
        out, taken = [], {}
        for pos, text in self.prefill or ():
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"prefill text {text!r} at position {pos} tokenizes to nothing; use visible text")
            if lm.mask_id in ids:
                raise ValueError(f"prefill text {text!r} contains the mask token; leave masked runs out of the "
                                 "prefill (positions not prefilled stay masked)")
            if pos + len(ids) > self.gen_length:
                raise ValueError(f"prefill {text!r} at position {pos} needs {len(ids)} tokens and overruns the "
                                 f"canvas of {self.gen_length}; move it earlier or raise gen_length")
            for i in range(pos, pos + len(ids)):
                if i in taken:
                    raise ValueError(f"prefill {text!r} at position {pos} overlaps {taken[i]!r} at canvas position "
                                     f"{i} ({len(ids)} tokens); space the prefill positions further apart")
                taken[i] = text
            out.append((pos, ids))
        return out

    # Exact speed-ups (they change no committed token; tests compare them with the plain passes): the prompt's
    # keys and values computed once where the model's prompt never attends to the canvas (srilib.models.prompt_cache),
    # and logits only at the positions the next step can commit or record (``sparse_logits``).
    use_prompt_cache = True
    sparse_logits = True

    def _need(self, done: torch.Tensor, p: int, n_steps: int, block: int, every: int, record: bool) -> torch.Tensor:
        """Canvas positions whose logits pass ``p`` (the pass after step p) can use: the masked positions of the
        block of step p + 1, or every masked position when step p + 1 is recorded (its full prediction)."""
        if p >= n_steps:
            return torch.zeros_like(done)
        if record and (p + 1) % every == 0:
            return ~done
        spb = n_steps // (self.gen_length // block)
        lo = (p // spb) * block
        need = torch.zeros_like(done)
        need[:, lo:lo + block] = ~done[:, lo:lo + block]
        return need

    @torch.no_grad()
    def _run(self, lm, prompts: list[str], layers: list[int], record: bool):
        from ..models import mask_predict, prompt_cache

        if getattr(lm, "kind", None) != "dlm" or getattr(lm, "mask_id", None) is None:
            raise ValueError(f"{self.name} needs a diffusion LM (kind='dlm' with a mask_id); {lm.name!r} is "
                             f"kind={getattr(lm, 'kind', None)!r}: use ARSampler for causal LMs")
        block, n_steps, every, remasking = self._schedule()
        L, dev, mask_id = self.gen_length, lm.device, int(lm.mask_id)
        ids = lm.validate_prompts(prompts, reserve=L)
        pad = lm.pad_id if lm.pad_id != mask_id else lm.eos_ids[0]
        end = torch.tensor(sorted(set(lm.eos_ids) | {pad}), device=dev)
        x, attn = left_pad(ids, pad, dev)
        B, P = x.shape
        canvas = torch.full((B, L), mask_id, dtype=torch.long, device=dev)
        done = torch.zeros((B, L), dtype=torch.bool, device=dev)
        for pos, toks in self._prefill_ids(lm):
            canvas[:, pos:pos + len(toks)] = torch.tensor(toks, device=dev)
            done[:, pos:pos + len(toks)] = True
        x = torch.cat([x, canvas], dim=1)
        attn = torch.cat([attn, torch.ones((B, L), dtype=attn.dtype, device=dev)], dim=1)
        gen = torch.Generator(device=dev).manual_seed(self.seed)

        want = set(self.poolings or DLM_POOLINGS)
        decision = self.capture == "decision"
        need_dec = record and (decision or "canvas_decision" in want)  # decision passes' states needed

        def hidden_for(p: int) -> bool:
            """Pass p (0: before step 1; p >= 1: after step p's commit = the pass that decides step p + 1)."""
            if not record:
                return False
            decides_recorded = p + 1 <= n_steps and (p + 1) % every == 0
            after_recorded = p >= 1 and p % every == 0
            return (need_dec and decides_recorded) or (not decision and after_recorded)

        cache = prompt_cache(lm, x, attn, P) if self.use_prompt_cache else None

        def predict(p: int, hidden_layers: list[int]):
            need = self._need(done, p, n_steps, block, every, record) if self.sparse_logits else None
            return mask_predict(lm, x, attn, hidden_layers, start=P, cache=cache, need=need)

        logits, hidden = predict(0, layers if hidden_for(0) else [])
        pool = self._pool(hidden, canvas, done, end) if hidden is not None else None
        recs, step = [], 0
        steps_per_block = n_steps // (L // block)
        for lo in range(0, L, block):
            hi = lo + block
            if self.schedule == "llada":
                k_sched = num_transfer_tokens((~done[:, lo:hi]).sum(1), steps_per_block)
            for s in range(steps_per_block):
                step += 1
                rec_step = record and step % every == 0
                dec_pool = pool if rec_step and need_dec else None  # this step's deciding pass
                full = logits.float() if rec_step else logits[:, lo:hi].float()  # whole canvas only to record
                full[..., mask_id] = -torch.inf  # the mask token is never proposed
                blk = full[:, lo:hi] if rec_step else full
                if rec_step:  # intermediate full prediction, from this (decision) pass
                    argmax = full.argmax(-1)
                    pred = torch.where(done, canvas, argmax)
                if self.temperature > 0:
                    x0 = gumbel_argmax(blk, self.temperature, gen)
                else:
                    x0 = argmax[:, lo:hi] if rec_step else blk.argmax(-1)
                k = k_sched[:, s] if self.schedule == "llada" else \
                    dream_transfer_tokens((~done[:, lo:hi]).sum(1), s, steps_per_block)
                conf = self._rank(blk, x0, remasking, gen, step, n_steps).masked_fill(done[:, lo:hi], -torch.inf)
                pick = top_k_mask(conf, k) & ~done[:, lo:hi]
                canvas[:, lo:hi] = torch.where(pick, x0, canvas[:, lo:hi])
                done[:, lo:hi] |= pick
                if rec_step:
                    pred[:, lo:hi] = torch.where(pick, x0, pred[:, lo:hi])
                if s == steps_per_block - 1 and self._after_block(lm, x, attn, P, canvas, done, lo, hi, gen, step,
                                                                  n_steps) and rec_step:
                    pred[:, lo:hi] = torch.where(done[:, lo:hi], canvas[:, lo:hi], pred[:, lo:hi])
                pool = None
                if step < n_steps or hidden_for(step):  # no pass after the last step unless it is captured
                    x[:, P:] = canvas
                    logits, hidden = predict(step, layers if hidden_for(step) else [])
                    if hidden is not None:
                        pool = self._pool(hidden, canvas, done, end)
                if rec_step:
                    recs.append(self._record(canvas, done, pred, end, dec_pool if decision else pool, dec_pool))
        if not record:
            keep = visible(canvas, done, end)
            return decode(lm.tokenizer, canvas.cpu().numpy(), keep.cpu().numpy())
        return self._assemble(lm, prompts, recs, layers, end)

    # ---- hooks for sampler variants (srilib.samplers.diffuguard); the defaults are the plain sampler exactly
    def _rank(self, blk: torch.Tensor, x0: torch.Tensor, remasking: str, gen: torch.Generator, step: int,
              n_steps: int) -> torch.Tensor:
        """Commit score of each proposal in the current block [B, block] (higher = committed first) at ``step``
        (1-based) of ``n_steps``; ``blk`` are the block's logits (mask token at -inf). Default: the remasking
        rule's :func:`confidence` (same generator draws)."""
        return confidence(blk, x0, remasking, gen)

    def _after_block(self, lm, x: torch.Tensor, attn: torch.Tensor, P: int, canvas: torch.Tensor,
                     done: torch.Tensor, lo: int, hi: int, gen: torch.Generator, step: int, n_steps: int) -> bool:
        """Called once per block, right after the commit of its last step (``step``) and *before* the forward pass
        that follows that commit (so that pass, the recorded state of ``step`` and the next block all see any
        change). May edit ``canvas`` / ``done`` in place (``x[:, P:]`` is stale: write ``canvas`` into it before
        any forward pass of its own); returns True when it changed them. Default: nothing (False)."""
        return False

    @staticmethod
    def _pool(hidden, canvas, done, end) -> dict:
        """Poolings of one pass's hidden states [B, L, K, D], with the committed positions of its input."""
        vis = visible(canvas, done, end)

        def mean(w):
            w = w.float()
            return torch.einsum("bl,blkd->bkd", w, hidden) / w.sum(1).clamp(min=1)[:, None, None]

        whole = hidden.mean(1)
        empty = ~vis.any(1)  # nothing generated yet: `generated` falls back to the canvas mean
        none = ~done.any(1)
        return {"generated": torch.where(empty[:, None, None], whole, mean(vis)),
                "committed": torch.where(none[:, None, None], whole, mean(done)), "canvas": whole, "empty": empty}

    @staticmethod
    def _record(canvas, done, pred, end, pool, dec_pool) -> dict:
        vis = visible(canvas, done, end)
        rec = {"tokens": torch.where(done, canvas, -1), "done": done.clone(), "pred": pred, "vis": vis,
               "pred_vis": torch.isin(pred, end).long().cumsum(-1) == 0, "empty": pool["empty"],
               "generated": pool["generated"], "committed": pool["committed"], "canvas": pool["canvas"]}
        if dec_pool is not None:
            rec["canvas_decision"] = dec_pool["canvas"]
        return rec

    def _assemble(self, lm, prompts, recs: list[dict], layers, end) -> TraceSet:
        st = {k: torch.stack([r[k] for r in recs], dim=1).cpu().numpy() for k in recs[0]}
        B, T = st["tokens"].shape[:2]
        step = decode(lm.tokenizer, st["tokens"], st["vis"])
        pred = decode(lm.tokenizer, st["pred"], st["pred_vis"])
        runs = decode_runs(lm.tokenizer, st["tokens"], st["vis"], step)
        step_texts = [step[b * T:(b + 1) * T] for b in range(B)]
        pred_texts = [pred[b * T:(b + 1) * T] for b in range(B)]
        want = self.poolings or DLM_POOLINGS
        return TraceSet(prompts=list(prompts), tokens=st["tokens"].astype(np.int32), committed=st["done"],
                        predictions=st["pred"].astype(np.int32),
                        pooled={k: st[k].astype(np.float32) for k in want}, layers=list(layers),
                        texts=[s[-1] for s in step_texts], step_texts=step_texts, pred_texts=pred_texts,
                        empty=st["empty"].astype(bool), meta={"sampler": self.name, "capture": self.capture},
                        step_runs=[runs[b * T:(b + 1) * T] for b in range(B)])

    def _suffix(self) -> str:
        return (f"-t{self.temperature:g}" if self.temperature > 0 else "") + ("+prefill" if self.prefill else "")


@dataclass
class DiffusionSampler(_CanvasSampler):
    """LLaDA-style masked diffusion with per-step traces (see the module docstring).

    Parameters
    ----------
    gen_length : int
        Canvas length L (paper: 128).
    steps : int
        T, denoising steps = traced steps (paper: 32, i.e. 4 tokens per step).
    block_length : int or None
        Semi-AR block length; None = one block of ``gen_length`` (paper). ``gen_length`` must be a multiple.
    temperature : float
        0 = greedy (paper); > 0 adds Gumbel noise (seeded).
    remasking : str
        ``low_confidence`` (paper), ``random``, ``entropy``, ``maskgit_plus`` or ``topk_margin``.
    seed : int
        Seed of the generator used for Gumbel noise and random remasking.
    prefill : dict or None
        ``{canvas position: text}`` committed before step 1 and never remasked (canvas attacks).
    capture : str
        ``"after"`` (default; one extra forward pass) or ``"decision"`` (the authors' convention; no extra pass).
    poolings : tuple of str or None
        Poolings to record (None: all of ``generated``, ``committed``, ``canvas``, ``canvas_decision``).
    schedule : str
        How many positions each step commits: ``"llada"`` (default; LLaDA's ``get_num_transfer_tokens``, the
        paper's setting) or ``"dream"`` (Dream's ``diffusion_generate`` timestep schedule, per block).
    """

    gen_length: int = 128
    steps: int = 32
    block_length: int | None = None
    temperature: float = 0.0
    remasking: str = "low_confidence"
    seed: int = 0
    prefill: dict | tuple | None = None
    kind: str = "dlm"
    capture: str = "after"
    poolings: tuple | None = None
    schedule: str = "llada"

    def __post_init__(self):
        if self.block_length is None:
            self.block_length = self.gen_length
        if self.gen_length < 1 or self.steps < 1 or self.block_length < 1:
            raise ValueError(f"gen_length, steps and block_length must be >= 1 (got {self.gen_length}, "
                             f"{self.steps}, {self.block_length})")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} is not a multiple of block_length={self.block_length}; "
                             "pick a block_length that divides gen_length")
        n_blocks = self.gen_length // self.block_length
        if self.steps % n_blocks:
            raise ValueError(f"steps={self.steps} cannot be split evenly over {n_blocks} blocks; use a multiple of "
                             f"{n_blocks} steps (or a longer block_length)")
        if self.steps > self.gen_length:
            raise ValueError(f"steps={self.steps} > gen_length={self.gen_length} would leave steps that commit "
                             "nothing; use steps <= gen_length")
        if self.remasking not in REMASKINGS:
            raise ValueError(f"unknown remasking {self.remasking!r}; use one of {', '.join(REMASKINGS)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use 'llada' (LLaDA's even split, the default) or "
                             "'dream' (Dream's timestep schedule)")
        self.prefill = normalize_prefill(self.prefill, self.gen_length)
        self._check_common()

    def _schedule(self):
        return self.block_length, self.steps, 1, self.remasking

    @property
    def name(self) -> str:
        blk = f"-b{self.block_length}" if self.block_length != self.gen_length else ""
        return f"{self.remasking}{blk}{'-dream' if self.schedule == 'dream' else ''}{self._suffix()}"

    def config(self) -> dict:
        return {"sampler": "diffusion", **asdict(self)}


@dataclass
class ARDiffusionSampler(_CanvasSampler):
    """Left-to-right (AR) decoding of a DLM's weights: the paper's sampler ablation (``dlm-ar``).

    The model sees the same canvas as :class:`DiffusionSampler` (``gen_length`` masks after the prompt) and commits
    exactly one position per forward pass, left to right (LLaDA with block length 1 and ``gen_length`` steps),
    until the whole canvas is decoded. The trace keeps every (``gen_length / steps``)-th state, so it has T =
    ``steps`` steps and at traced step t the first (t+1) * gen_length / steps positions are committed: the same
    number of committed tokens as :class:`DiffusionSampler` (same ``gen_length`` and ``steps``) at its step t, which
    makes the two SRI signals comparable step by step. With ``gen_length == steps`` each traced step is one
    token. Prefilled positions are skipped (their pass commits nothing). Tracing adds one forward pass under
    ``capture="after"``, none under ``"decision"``.

    Parameters
    ----------
    gen_length : int
        Canvas length L (decoded completely; L forward passes).
    steps : int
        T, traced steps; must divide ``gen_length``.
    temperature, seed, prefill, capture, poolings :
        As for :class:`DiffusionSampler`. Under ``capture="after"`` a traced step's state comes from the pass after
        its last commit; under ``"decision"``, from the pass that decided that commit (so with
        ``gen_length > steps`` it sees the first (t+1) * gen_length / steps - 1 positions committed).
    """

    gen_length: int = 128
    steps: int = 32
    temperature: float = 0.0
    seed: int = 0
    prefill: dict | tuple | None = None
    kind: str = "dlm"
    capture: str = "after"
    poolings: tuple | None = None

    def __post_init__(self):
        if self.gen_length < 1 or self.steps < 1:
            raise ValueError(f"gen_length and steps must be >= 1 (got {self.gen_length}, {self.steps})")
        if self.gen_length % self.steps:
            raise ValueError(f"dlm-ar traces every (gen_length / steps)-th token: gen_length={self.gen_length} must "
                             f"be a multiple of steps={self.steps} (gen_length=steps traces every token)")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        self.prefill = normalize_prefill(self.prefill, self.gen_length)
        self._check_common()

    def _schedule(self):
        return 1, self.gen_length, self.gen_length // self.steps, "low_confidence"

    def _run(self, lm, prompts: list[str], layers: list[int], record: bool):
        if getattr(lm, "family", "") == FAMILY:  # no mask token, no canvas: its causal encoder decodes
            from .encoder_ar import encoder_ar

            return encoder_ar(self, lm, prompts, layers, record)
        return super()._run(lm, prompts, layers, record)

    @property
    def name(self) -> str:
        return f"dlm-ar{self._suffix()}"

    def config(self) -> dict:
        return {"sampler": "dlm-ar", **asdict(self)}


def make_diffusion_sampler(name: str, **kw):
    """Diffusion sampler by name: a remasking rule (``low_confidence``, ``random``, ``entropy``, ``maskgit_plus``,
    ``topk_margin``) for :class:`DiffusionSampler` or ``dlm-ar`` for :class:`ARDiffusionSampler` (the DiffuGuard
    names, which build on this module, are resolved by :func:`srilib.samplers.make_sampler`)."""
    if name == "dlm-ar":
        if kw.pop("block_length", None) not in (None, 1):
            raise ValueError("dlm-ar decodes one position at a time (block length 1); drop block_length")
        return ARDiffusionSampler(**kw)
    if name in REMASKINGS:
        if "remasking" in kw and kw["remasking"] != name:
            raise ValueError(f"sampler {name!r} conflicts with remasking={kw['remasking']!r}; pass one of them")
        kw.pop("remasking", None)
        return DiffusionSampler(remasking=name, **kw)
    raise ValueError(f"unknown sampler {name!r}; use 'ar' for causal LMs or one of "
                     f"{', '.join(SAMPLER_NAMES + DIFFUGUARD_NAMES)} for diffusion LMs")
