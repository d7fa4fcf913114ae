"""DiffuGuard (Li et al., "DiffuGuard: How Intrinsic Safety is Lost and Found in Diffusion Large Language Models",
arXiv 2509.24296, ICLR 2026) as a variant of srilib's LLaDA-style sampler (:class:`DiffuGuardSampler`).

Re-implemented from the paper's description and the settings of the authors' public LLaDA runner (repository
zhrli324/DiffuGuard, ``utility/generate_function_llada.py``, read for what it computes; no code copied). Two
training-free parts, both switchable:

- **Stochastic Annealing Remasking (SAR).** A step commits the top-k of ``(1 - alpha) * p_i + alpha * R_i``
  instead of the top-k of ``p_i`` (``p_i``: probability of position i's proposed token, LLaDA's
  ``low_confidence`` score; ``R_i ~ U[0, 1)`` drawn from the sampler's seeded generator over the current block).
  ``anneal`` sets alpha at the s-th step (0-based) of a block of S steps, or the t-th (1-based) of all T:
  ``"block"`` (default; the authors' ``adaptive_step``): ``alpha0 * (1 - s / (S - 1))``, alpha0 at each block's
  first step down to 0 at its last (alpha0 when S = 1); ``"linear"``: ``alpha0 * (1 - (t - 1) / T)`` over the
  whole canvas; ``"cosine"``: ``alpha0 * (1 + cos(pi * (t - 1) / T)) / 2``; ``"constant"``: alpha0 (the authors'
  ``adaptive``). ``alpha0 = 0`` turns SAR off (no random draw, so the generator stream is the plain sampler's);
  ``alpha0 = 1`` with ``"constant"`` is LLaDA's ``random`` remasking exactly (same draws). Default alpha0: 0.3.
- **Block-level Audit and Repair.** After the last step of a block the block is audited; if flagged,
  ``floor(remask_ratio * n)`` of its ``n`` positions (uniformly at random, seeded generator) are
  remasked and regenerated in ``refinement_steps`` extra forward passes (LLaDA's even split over those passes,
  plain low-confidence ranking as the authors do; rows not flagged commit nothing in them). The correction is
  *guided* as the authors' code guides it: during the refinement passes the token that stood at a remasked
  position before the repair gets ``suppression`` subtracted from its logit there (default 1e6: it cannot come
  back), so the block is rewritten rather than re-derived. ``repair_first_block_only`` (default True, the
  authors' ``correct_only_first_block``) repairs only the first block (later blocks are still audited and
  logged). ``repair_prefill`` (default True, as in the authors' code, where the attack's canvas text is part of
  the sequence and only system-prompt positions are protected) lets the repair remask prefilled positions
  (a canvas attack's text) too; with False they are never remasked (srilib's usual prefill contract). Prefilled
  positions are never remasked by anything else.

  Audit score, ``sp_mode``:

  - ``"hidden"`` (default; the official setting, ``sp_threshold = 0.35``): the cosine *distance*
    ``1 - cos(h_block, h_prompt)`` between the mean last-layer (``audit_layer``) hidden state over the block's
    positions in the forward pass that decided the block's first step (the canvas as the block started: the
    prompt, earlier blocks, prefilled positions, the rest masked) and the mean hidden state of the
    chat-formatted prompt alone (its real tokens, no canvas; one extra pass per batch; the authors use the
    un-attacked prompt, which is the sampler's prompt for srilib's canvas attacks: they only prefill). A canvas
    attack's
    prefill pulls the first block's state away from the prompt's own state. Flagged when the score is
    ``>= sp_threshold``. (The authors' code additionally flags a block whose logit "conflict" between
    accept/refuse cue tokens is ``>= sp_threshold``: ``sp_logit``, on by default, in either mode.) They take the
    block state from the first step's own pass; srilib recomputes that pass in the audit (same input, so the
    same states), i.e. one extra forward pass per audited block.
  - ``"direction"`` (srilib's variant, needs fitted data): ``cos(h - c, d)`` of the mean hidden state ``h`` of
    the *decoded* block (a pass after the block's last commit) at ``audit_direction.layer``, with ``d`` the
    harmful-minus-harmless direction and ``c`` the midpoint of the two class means (an :class:`AuditDirection`:
    :meth:`AuditDirection.fit` from prompts or :meth:`AuditDirection.from_anchors` from srilib's anchors, the
    geometry of :mod:`srilib.signal`); flagged when the score is ``> sp_threshold``. Its digest is in
    :meth:`DiffuGuardSampler.config` (the cache key).

Traces (the shared :class:`srilib.traces.TraceSet`): the T recorded steps are the T denoising steps; the
refinement passes are *not* extra recorded steps. The repair runs right after the commit of a block's last step
and before the pass that follows it, so the recorded state of that step (canvas, committed, predictions, texts,
activations) is the *repaired* block, and the next block is decoded against it. ``meta["audit"]`` holds, per
prompt, one ``{"block": lo, "score": s, "conflict": c or None, "flagged": bool, "remasked": n}`` per audited
block (empty when the audit is off). It is per :meth:`trace_batch` call: :func:`srilib.traces.generate_traces`
concatenates batches keeping the first batch's ``meta``, so with several batches only the first batch's audit
entries survive.

Not reproduced: the authors' runner also uses classifier-free guidance (``cfg_scale`` 0.1) and temperature 0.5 by
default; srilib's sampler has neither CFG nor those defaults (``temperature`` is the usual setting).

Cost (for the defenses table): SAR draws one uniform per block position per step (negligible); the audit adds
one forward pass per block (``"hidden"``: plus one prompt-only pass per batch), and each repaired block
``refinement_steps`` more (for the whole batch when any row is flagged). ``generate`` runs the same loop
untraced, so it can be timed like the plain sampler.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from .ar import left_pad
from .diffusion import DiffusionSampler, _confidence, _top_k_mask, gumbel_argmax, num_transfer_tokens

ANNEALS = ("block", "linear", "cosine", "constant")
SP_MODES = ("hidden", "direction")
# the logit audit's cue phrases (the authors' defaults); every token of a phrase counts
ACCEPT_CUES = ("Sure", "Of course", "Here", "Step", "1.", "First", "Proceed", "Let's")
REFUSE_CUES = ("Sorry", "I can't", "cannot", "won't", "illegal", "harmful", "not assist", "refuse")


@dataclass(frozen=True, eq=False)
class AuditDirection:
    """What the audit scores a block against: ``cos(h - center, direction)`` of the block's mean hidden state ``h``
    at ``layer`` (an index into the model's hidden states as :func:`srilib.dlm.mask_predict` takes it: -1 = last
    layer after the final norm). Build with :meth:`fit` (from prompts) or :meth:`from_anchors` (srilib anchors)."""

    direction: np.ndarray  # [D], harmful minus harmless
    center: np.ndarray  # [D], midpoint of the two class means (zeros: score is a plain cosine with direction)
    layer: int = -1
    source: str = ""

    def __post_init__(self):
        d = np.asarray(self.direction, dtype=np.float32).reshape(-1)
        c = np.zeros_like(d) if self.center is None else np.asarray(self.center, dtype=np.float32).reshape(-1)
        if d.size == 0 or not np.isfinite(d).all() or not np.linalg.norm(d) > 0:
            raise ValueError("audit direction must be a finite, non-zero vector (harmful minus harmless mean)")
        if c.shape != d.shape or not np.isfinite(c).all():
            raise ValueError(f"audit center must be a finite vector of the direction's size {d.size}, got {c.shape}")
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "layer", int(self.layer))

    def digest(self) -> str:
        """Content hash (direction, center, layer): what the cache key sees."""
        h = hashlib.sha256()
        h.update(self.direction.tobytes())
        h.update(self.center.tobytes())
        h.update(str(self.layer).encode())
        return h.hexdigest()[:16]

    def score(self, h: torch.Tensor) -> torch.Tensor:
        """Audit scores [B] of mean block states ``h`` [B, D] (a zero vector after centring scores 0)."""
        d = torch.as_tensor(self.direction, device=h.device, dtype=torch.float32)
        c = torch.as_tensor(self.center, device=h.device, dtype=torch.float32)
        v = h.float() - c
        return (v @ d) / (v.norm(dim=-1) * d.norm()).clamp(min=1e-12)

    @classmethod
    def from_anchors(cls, anchors, step: int = -1) -> "AuditDirection":
        """From srilib anchors (:class:`srilib.signal.Anchors`): harmful minus harmless mean at ``step``, centred on
        their midpoint, at the anchors' layer. The anchors' pooling should be what the audit reads (``generated``
        or ``committed`` of a trace), and their layer a valid ``mask_predict`` index."""
        hf, hl = np.asarray(anchors.mu_harmful)[step], np.asarray(anchors.mu_harmless)[step]
        return cls(hf - hl, (hf + hl) / 2, layer=anchors.layer,
                   source=f"anchors:{anchors.pooling}:step{step}:{getattr(anchors, 'key', '')}")

    @classmethod
    def fit(cls, lm, harmful: Sequence[str], harmless: Sequence[str], layer: int = -1, gen_length: int = 32,
            batch_size: int = 8) -> "AuditDirection":
        """Fit from prompts without generating: one forward pass of each chat-formatted prompt followed by
        ``gen_length`` masks; a prompt's state is the mean over those canvas positions at ``layer``; the
        direction is mean(harmful) - mean(harmless), centred on their midpoint. Cheap; the states it averages are
        those of a fully masked response, not of a decoded block (use :meth:`from_anchors` for those)."""
        from ..dlm import mask_predict

        if not harmful or not harmless:
            raise ValueError("fit needs at least one harmful and one harmless prompt")
        if gen_length < 1 or batch_size < 1:
            raise ValueError(f"gen_length and batch_size must be >= 1 (got {gen_length}, {batch_size})")

        @torch.no_grad()
        def mean_state(prompts):
            rows = []
            for i in range(0, len(prompts), batch_size):
                chunk = list(prompts[i:i + batch_size])
                ids = lm.validate_prompts(chunk, reserve=gen_length)
                pad = lm.pad_id if lm.pad_id != lm.mask_id else lm.eos_ids[0]
                x, attn = left_pad(ids, pad, lm.device)
                B, P = x.shape
                x = torch.cat([x, torch.full((B, gen_length), int(lm.mask_id), dtype=torch.long, device=lm.device)], 1)
                attn = torch.cat([attn, torch.ones((B, gen_length), dtype=attn.dtype, device=lm.device)], 1)
                _, hidden = mask_predict(lm, x, attn, [layer], start=P)
                rows.append(hidden[:, :, 0].mean(1).cpu())
            return torch.cat(rows).mean(0).numpy()

        hf, hl = mean_state(harmful), mean_state(harmless)
        return cls(hf - hl, (hf + hl) / 2, layer=layer,
                   source=f"fit:{lm.fingerprint}:{len(harmful)}+{len(harmless)}:L{gen_length}")


@dataclass
class DiffuGuardSampler(DiffusionSampler):
    """:class:`~srilib.samplers.diffusion.DiffusionSampler` (low-confidence remasking) with DiffuGuard's two
    defenses (see the module docstring for what each computes). Defaults: the official settings.

    Parameters
    ----------
    gen_length, steps, block_length, temperature, seed, prefill, capture, poolings, schedule :
        As for :class:`DiffusionSampler` (``remasking`` is fixed to ``low_confidence``, the score SAR perturbs).
        ``seed`` seeds the one generator used for Gumbel noise, SAR's uniforms and the repair's choice of positions.
    alpha0 : float in [0, 1]
        SAR's initial randomness weight (official 0.3; 0 = SAR off).
    anneal : str
        ``"block"`` (official), ``"linear"``, ``"cosine"`` or ``"constant"``: alpha over the steps.
    audit : bool
        Block-level audit and repair on or off.
    sp_mode : str
        ``"hidden"`` (official: distance from the prompt's own state) or ``"direction"`` (needs
        ``audit_direction``).
    sp_threshold : float in [-1, 2]
        Flag threshold (official 0.35): ``score >= sp_threshold`` under ``"hidden"`` (a cosine distance in
        [0, 2]), ``score > sp_threshold`` under ``"direction"`` (a cosine in [-1, 1]).
    refinement_steps : int >= 1
        Forward passes that regenerate a flagged block's remasked positions (official: 8).
    remask_ratio : float in (0, 1]
        Share of a flagged block's positions (``repair_prefill=False``: non-prefilled ones) remasked, rounded down
        (official: 0.9).
    suppression : float >= 0
        Logit penalty on a remasked position's previous token during the refinement (official 1e6; 0 = unguided;
        ``inf`` bans it outright).
    repair_first_block_only : bool
        Repair only the first block (official: True); every block is still audited.
    audit_layer : int
        Hidden-state index (``mask_predict``'s ``layers``) for ``sp_mode="hidden"`` (official: -1, the last).
    sp_logit : bool
        Also flag a block whose logit *conflict* score is ``>= sp_threshold`` (official: on, OR-ed with the
        hidden test): the mean over the block's positions of ``4 * p_accept * p_refuse``, the probability mass
        on the tokens of :data:`ACCEPT_CUES` and of :data:`REFUSE_CUES` in the pass that decided the block's last
        step (softmax without the mask token).
    repair_prefill : bool
        The repair may remask prefilled positions (a canvas attack's text) too (official: True).
    audit_direction : AuditDirection or None
        The fitted direction for ``sp_mode="direction"``.
    """

    alpha0: float = 0.3
    anneal: str = "block"
    audit: bool = True
    sp_mode: str = "hidden"
    sp_threshold: float = 0.35
    refinement_steps: int = 8
    remask_ratio: float = 0.9
    suppression: float = 1e6
    repair_first_block_only: bool = True
    audit_layer: int = -1
    sp_logit: bool = True
    repair_prefill: bool = True
    audit_direction: AuditDirection | None = None
    _audit_log: list = field(default_factory=list, init=False, repr=False, compare=False)
    sparse_logits = False  # the logit-conflict audit averages the block's predictions at committed positions too

    def __post_init__(self):
        if self.remasking != "low_confidence":
            raise ValueError(f"DiffuGuard perturbs low-confidence remasking; got remasking={self.remasking!r} "
                             "(drop it; alpha0=1, anneal='constant' gives random remasking)")
        super().__post_init__()

        def number(v):
            return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))

        if not number(self.alpha0) or not 0.0 <= float(self.alpha0) <= 1.0:
            raise ValueError(f"alpha0 must be a number in [0, 1] (0 turns SAR off), got {self.alpha0!r}")
        if self.anneal not in ANNEALS:
            raise ValueError(f"unknown anneal {self.anneal!r}; use one of {', '.join(ANNEALS)}")
        for flag in ("audit", "repair_first_block_only", "sp_logit", "repair_prefill"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.sp_mode not in SP_MODES:
            raise ValueError(f"unknown sp_mode {self.sp_mode!r}; use 'hidden' (official) or 'direction' (needs "
                             "audit_direction)")
        if self.audit_direction is not None and not isinstance(self.audit_direction, AuditDirection):
            raise ValueError("audit_direction must be an AuditDirection (AuditDirection.fit(lm, harmful, harmless) "
                             f"or AuditDirection.from_anchors(anchors)), got {type(self.audit_direction).__name__}")
        if self.audit and self.sp_mode == "direction" and self.audit_direction is None:
            raise ValueError("sp_mode='direction' needs a fitted direction: pass audit_direction="
                             "AuditDirection.fit(lm, harmful_prompts, harmless_prompts) (or from_anchors), or use "
                             "sp_mode='hidden' (official, no fitted data)")
        if not number(self.sp_threshold) or not -1.0 <= float(self.sp_threshold) <= 2.0:
            raise ValueError(f"sp_threshold is compared with a cosine (distance): use a number in [-1, 2], got "
                             f"{self.sp_threshold!r}")
        if isinstance(self.refinement_steps, bool) or not isinstance(self.refinement_steps, (int, np.integer)) or \
                self.refinement_steps < 1:
            raise ValueError(f"refinement_steps must be an integer >= 1, got {self.refinement_steps!r}")
        if not number(self.remask_ratio) or not 0.0 < float(self.remask_ratio) <= 1.0:
            raise ValueError(f"remask_ratio must be in (0, 1], got {self.remask_ratio!r}")
        if not number(self.suppression) or not float(self.suppression) >= 0.0:
            raise ValueError(f"suppression must be >= 0 (0 = unguided repair, inf = ban), got {self.suppression!r}")
        if isinstance(self.audit_layer, bool) or not isinstance(self.audit_layer, (int, np.integer)):
            raise ValueError(f"audit_layer must be an integer hidden-state index (-1 = last), got "
                             f"{self.audit_layer!r}")
        self.alpha0, self.sp_threshold, self.remask_ratio = float(self.alpha0), float(self.sp_threshold), \
            float(self.remask_ratio)
        self.suppression, self.refinement_steps, self.audit_layer = float(self.suppression), \
            int(self.refinement_steps), int(self.audit_layer)

    # ---- SAR
    def alpha(self, step: int, n_steps: int) -> float:
        """SAR weight at ``step`` (1-based) of ``n_steps`` (the block's step is derived from the block schedule)."""
        if self.alpha0 == 0.0 or self.anneal == "constant":
            return self.alpha0
        if self.anneal == "block":
            per = n_steps // (self.gen_length // self.block_length)
            i = (step - 1) % per
            return self.alpha0 * (1.0 - i / (per - 1)) if per > 1 else self.alpha0
        frac = (step - 1) / n_steps
        if self.anneal == "linear":
            return self.alpha0 * (1.0 - frac)
        return self.alpha0 * (1.0 + math.cos(math.pi * frac)) / 2.0

    def _rank(self, blk, x0, remasking, gen, step, n_steps):
        if self.audit and self.sp_logit:
            self._blk_logits = blk  # the last one of a block is what the logit audit reads
        p = _confidence(blk, x0, "low_confidence", gen)  # no draw
        a = self.alpha(step, n_steps)
        if a == 0.0:
            return p
        r = torch.rand(x0.shape, generator=gen, device=x0.device)
        return r if a == 1.0 else (1.0 - a) * p + a * r

    # ---- audit and repair
    def _run(self, lm, prompts, layers, record):
        self._audit_log = [[] for _ in prompts]
        self._fixed = self._prompt_state = self._blk_logits = self._cue_ids = None
        out = super()._run(lm, prompts, layers, record)
        if record:
            out.meta["audit"] = self._audit_log
        return out

    def _prefilled(self, lm, B: int, device) -> torch.Tensor:
        if self._fixed is None:
            fixed = torch.zeros((B, self.gen_length), dtype=torch.bool, device=device)
            for pos, toks in self._prefill_ids(lm):
                fixed[:, pos:pos + len(toks)] = True
            self._fixed = fixed
        return self._fixed

    def _score(self, lm, x, attn, P, canvas, lo, hi, fixed) -> torch.Tensor:
        """Audit score per row [B] (see the module docstring)."""
        from ..dlm import mask_predict

        if self.sp_mode == "direction":
            d = self.audit_direction
            x[:, P:] = canvas
            _, hidden = mask_predict(lm, x, attn, [d.layer], start=P)
            return d.score(hidden[:, lo:hi, 0].mean(1))
        if self._prompt_state is None:  # mean state of the prompt alone (real tokens only)
            _, hp = mask_predict(lm, x[:, :P], attn[:, :P], [self.audit_layer], start=0)
            w = attn[:, :P].float()
            self._prompt_state = torch.einsum("bp,bpd->bd", w, hp[:, :, 0]) / w.sum(1, keepdim=True).clamp(min=1)
        start = canvas.clone()  # the canvas as the block started: its non-prefilled positions masked
        start[:, lo:hi] = torch.where(fixed[:, lo:hi], canvas[:, lo:hi], int(lm.mask_id))
        x[:, P:] = start
        _, hidden = mask_predict(lm, x, attn, [self.audit_layer], start=P)
        hb = hidden[:, lo:hi, 0].mean(1)
        return 1.0 - torch.nn.functional.cosine_similarity(hb, self._prompt_state, dim=-1, eps=1e-12)

    def _conflict(self, lm) -> torch.Tensor:
        """Logit conflict score per row [B] of the block's last deciding pass (see ``sp_logit``)."""
        if self._cue_ids is None:
            def ids(phrases):
                return sorted({t for ph in phrases for t in lm.tokenizer(ph, add_special_tokens=False)["input_ids"]})
            self._cue_ids = ids(ACCEPT_CUES), ids(REFUSE_CUES)
        acc, ref = self._cue_ids
        p = torch.softmax(self._blk_logits, dim=-1)
        dev = p.device
        pa = p[..., torch.tensor(acc, device=dev)].sum(-1) if acc else torch.zeros(p.shape[:2], device=dev)
        pr = p[..., torch.tensor(ref, device=dev)].sum(-1) if ref else torch.zeros(p.shape[:2], device=dev)
        return (4.0 * pa * pr).mean(1)

    @torch.no_grad()
    def _after_block(self, lm, x, attn, P, canvas, done, lo, hi, gen, step, n_steps):
        from ..dlm import mask_predict

        if not self.audit:
            return False
        B = canvas.shape[0]
        fixed = self._prefilled(lm, B, canvas.device)
        score = self._score(lm, x, attn, P, canvas, lo, hi, fixed)
        flag = score > self.sp_threshold if self.sp_mode == "direction" else score >= self.sp_threshold
        conflict = self._conflict(lm) if self.sp_logit else None
        if conflict is not None:
            flag = flag | (conflict >= self.sp_threshold)
        free = torch.ones_like(fixed[:, lo:hi]) if self.repair_prefill else ~fixed[:, lo:hi]
        repair = flag & (not self.repair_first_block_only or lo == 0)
        n_remask = torch.where(repair, torch.floor(self.remask_ratio * free.sum(1).double()).long(),
                               torch.zeros_like(flag, dtype=torch.long))
        for b in range(B):
            self._audit_log[b].append({"block": lo, "score": float(score[b]), "flagged": bool(flag[b]),
                                       "remasked": int(n_remask[b]),
                                       "conflict": None if conflict is None else float(conflict[b])})
        if not bool((n_remask > 0).any()):
            return False
        mask_id = int(lm.mask_id)
        r = torch.rand(free.shape, generator=gen, device=canvas.device).masked_fill(~free, -torch.inf)
        remask = _top_k_mask(r, n_remask) & free
        old = canvas[:, lo:hi].clone()
        canvas[:, lo:hi] = torch.where(remask, mask_id, canvas[:, lo:hi])
        done[:, lo:hi] &= ~remask
        k_sched = num_transfer_tokens(n_remask, self.refinement_steps)
        for s in range(self.refinement_steps):
            x[:, P:] = canvas
            logits, _ = mask_predict(lm, x, attn, [], start=P)
            blk = logits[:, lo:hi].float()
            blk[..., mask_id] = -torch.inf
            if self.suppression > 0:  # guidance: a remasked position's previous token is penalised there
                prev = blk.gather(-1, old[..., None]).squeeze(-1)
                blk.scatter_(-1, old[..., None], torch.where(remask, prev - self.suppression, prev)[..., None])
            x0 = gumbel_argmax(blk, self.temperature, gen) if self.temperature > 0 else blk.argmax(-1)
            conf = _confidence(blk, x0, "low_confidence", gen).masked_fill(done[:, lo:hi], -torch.inf)
            pick = _top_k_mask(conf, k_sched[:, s]) & ~done[:, lo:hi]
            canvas[:, lo:hi] = torch.where(pick, x0, canvas[:, lo:hi])
            done[:, lo:hi] |= pick
        return True

    # ---- identity
    @property
    def name(self) -> str:
        blk = f"-b{self.block_length}" if self.block_length != self.gen_length else ""
        sar = f"-a{self.alpha0:g}{'' if self.anneal == 'block' else self.anneal}" if self.alpha0 else "-nosar"
        aud = f"-{self.sp_mode}{'' if self.sp_logit else '-nologit'}{self.sp_threshold:g}" if self.audit else ""
        return f"diffuguard{blk}{sar}{aud}{'-dream' if self.schedule == 'dream' else ''}{self._suffix()}"

    def config(self) -> dict:
        cfg = {k: v for k, v in asdict(self).items() if k not in ("audit_direction", "_audit_log")}
        d = self.audit_direction
        cfg["audit_direction"] = None if d is None else {"digest": d.digest(), "layer": d.layer, "source": d.source}
        return {"sampler": "diffuguard", **cfg}
