"""DiffuGuard (Li et al., "DiffuGuard: How Intrinsic Safety is Lost and Found in Diffusion Large Language Models",
arXiv 2509.24296, ICLR 2026) as a variant of srilib's LLaDA-style sampler (:class:`DiffuGuardSampler`).

Re-implemented from the paper's description and the authors' public LLaDA runner (repository zhrli324/DiffuGuard:
``utility/generate_function_llada.py``, ``models/jailbreakbench_llada.py``, ``test.sh``; read for what they compute,
no code copied). The defaults are the settings of the authors' hidden-state runs in ``test.sh`` (LLaDA-1.5 and
MMaDA with ``--remasking adaptive_step --sp_mode hidden --sp_threshold 0.1 --refinement_steps 8 --remask_ratio 0.9
--fill_all_masks``, the runner's defaults for everything else); every setting that is srilib's own is labelled
"ours" (here, in :meth:`DiffuGuardSampler.describe` and in the chapter's settings text).

One room: annealed remasking, the audit and the repair act inside one denoising loop on one canvas and one seeded
generator, so their settings, their validation and the words that describe them stay with that loop.

Two training-free parts, both switchable:

- **Stochastic Annealing Remasking (SAR).** A step commits the top-k of ``(1 - alpha) * p_i + alpha * R_i``
  instead of the top-k of ``p_i`` (``p_i``: probability of position i's proposed token, LLaDA's
  ``low_confidence`` score; ``R_i ~ U[0, 1)`` drawn from the sampler's seeded generator over the current block).
  ``anneal`` sets alpha at the s-th step (0-based) of a block of S steps, or the t-th (1-based) of all T:
  ``"block"`` (default; the authors' ``adaptive_step``, as in their runs): ``alpha0 * (1 - s / (S - 1))``, alpha0
  at each block's first step down to 0 at its last (alpha0 when S = 1); ``"linear"`` (ours):
  ``alpha0 * (1 - (t - 1) / T)`` over the whole canvas; ``"cosine"`` (ours):
  ``alpha0 * (1 + cos(pi * (t - 1) / T)) / 2``; ``"constant"``: alpha0 (the authors' ``adaptive``).
  ``alpha0 = 0`` turns SAR off (the authors' ``low_confidence`` remasking; no random draw, so the generator
  stream is the plain sampler's); ``alpha0 = 1`` with ``"constant"`` is LLaDA's ``random`` remasking exactly
  (same draws). Default alpha0: 0.3 (the runner's default, which its SAR runs keep).
- **Block-level Audit and Repair.** After the last step of a block the block is audited; if flagged,
  ``floor(remask_ratio * n)`` of its ``n`` positions (uniformly at random, seeded generator) are remasked and
  regenerated in ``refinement_steps`` extra forward passes (LLaDA's even split over those passes; rows not
  flagged commit nothing in them). Which remasked positions a refinement pass commits follows the authors'
  refinement loop: with SAR on (``alpha0 > 0``; their ``remasking`` other than ``low_confidence``, e.g.
  ``adaptive_step``) the top-k of *fresh uniform draws* (``torch.rand``, one per block position per pass, from the
  seeded generator), not of the confidence; with SAR off, the top-k of the confidence (their ``low_confidence``).
  The correction is *guided* as the authors' code guides it: during the refinement passes the token that stood at
  a remasked position before the repair gets ``suppression`` subtracted from its logit there (default 1e6: it
  cannot come back), so the block is rewritten rather than re-derived. ``repair_first_block_only`` (default True,
  the authors' ``correct_only_first_block``) repairs only the first block (later blocks are still audited and
  logged). ``repair_prefill`` (default True, as in the authors' code, where the attack's canvas text is part of
  the sequence and only system-prompt positions are protected) lets the repair remask prefilled positions (a
  canvas attack's text) too; with False (ours) they are never remasked (srilib's usual prefill contract).
  Prefilled positions are never remasked by anything else.

  Audit score, ``sp_mode``:

  - ``"hidden"`` (default; as in the authors' runs, ``--sp_mode hidden --fill_all_masks``). Their
    ``fill_all_masks`` sets the block to the whole sequence (``block_start, block_end = 0, x.shape[1]``), so the
    state they audit is the mean last-layer hidden state over *every* position, the chat-formatted prompt and
    the whole response canvas, in the forward pass of the block's first step (the canvas as the block started:
    masks, plus a canvas attack's text and, for later blocks, the decoded earlier blocks). Score: the cosine
    distance ``1 - cos(h_seq, h_ref)`` (each vector divided by its norm + 1e-12, as they do) to ``h_ref``, the mean
    last-layer state of the *reference* chat-formatted alone (real tokens, no canvas; one extra pass per batch):
    their ``compute_baseline_hidden(vanilla_text)``, the un-attacked request (see ``references``). Flagged when
    ``score >= sp_threshold``. Default threshold: 0.1 with SAR on (every hidden-state ``--fill_all_masks`` run of
    ``test.sh`` that uses ``--remasking adaptive_step``), 0.2 with SAR off (the two such runs without SAR: DIJA on
    LLaDA-1.5 and on LLaDA-8B). srilib averages the real positions only (left padding excluded; the authors run
    one prompt at a time, unpadded) and recomputes the first step's pass in the audit (same input, so the same
    states; one extra forward pass per audited block).
  - ``"hidden-block"`` (ours; srilib's earlier variant): the same distance, but of the mean state over the *block's*
    canvas positions only (same pass, same reference). Default threshold 0.35 (ours: the runner's argparse
    default, which none of the authors' hidden-state runs uses).
  - ``"direction"`` (ours, needs fitted data): ``cos(h - c, d)`` of the mean hidden state ``h`` of the *decoded*
    block (a pass after the block's last commit) at ``audit_direction.layer``, with ``d`` the harmful-minus-
    harmless direction and ``c`` the midpoint of the two class means (an :class:`AuditDirection`:
    :meth:`AuditDirection.fit` from prompts or :meth:`AuditDirection.from_anchors` from srilib's anchors, the
    geometry of :mod:`srilib.signal`); flagged when ``score > sp_threshold`` (default 0.35, ours). Its digest is
    in :meth:`DiffuGuardSampler.config` (the cache key).

  The authors' code also flags a block whose logit "conflict" is ``>= sp_threshold`` (``sp_logit``, on by default,
  OR-ed with the score): ``4 * p_accept * p_refuse`` (the probability mass on the tokens of :data:`ACCEPT_CUES`
  and of :data:`REFUSE_CUES`) averaged over the audited positions of the pass that decided the block's last step.
  Under ``"hidden"`` those are, as in their ``fill_all_masks`` runs, every real position of the sequence (prompt
  and canvas; softmax over the whole vocabulary; one more forward pass per audited block, since srilib's loop
  computes only the canvas's logits); under ``"hidden-block"`` and ``"direction"`` (ours) the block's positions
  (softmax without the mask token, from the loop's own pass).

  References (``references``; :meth:`DiffuGuardSampler.with_references`): per prompt, the text whose state the
  hidden audit compares with. The authors compare an attacked prompt with its un-attacked request; srilib's
  chapter passes the request for every template jailbreak. A prompt without a reference is its own reference:
  canvas attacks (their prompt *is* the un-attacked request; they only prefill the canvas) and plain prompts.
  The references are part of :meth:`DiffuGuardSampler.config` (a digest of the pairs), so traces generated with
  another reference never share a cache entry; each audit log entry says which reference was used.

Traces (the shared :class:`srilib.traces.TraceSet`): the T recorded steps are the T denoising steps; the
refinement passes are *not* extra recorded steps. The repair runs right after the commit of a block's last step
and before the pass that follows it, so the recorded state of that step (canvas, committed, predictions, texts,
activations) is the *repaired* block, and the next block is decoded against it. ``meta["audit"]`` holds, per
prompt, one ``{"block": lo, "score": s, "conflict": c or None, "flagged": bool, "remasked": n, "reference":
"request" | "prompt" | None}`` per audited block (empty when the audit is off; ``reference`` is None under
``"direction"``, which uses none). It is per :meth:`trace_batch` call: :func:`srilib.traces.generate_traces`
concatenates batches keeping the first batch's ``meta``, so with several batches only the first batch's audit
entries survive.

Not reproduced (documented, not hidden): the authors' runner also uses classifier-free guidance (``cfg_scale``
0.1) and temperature 0.5 by default; srilib's sampler has neither CFG nor those defaults (``temperature`` is the
usual setting). Their runner puts 36 mask tokens inside the user turn of every generation prompt (its
``mask_counts``; the baseline has none), which its ``fill_all_masks`` block fills too; srilib's prompts carry no
masks. With ``fill_all_masks`` their repair also draws its remasked positions from the whole sequence (the
prompt's tokens included; only a self-reminder system prompt is protected) and rewrites them; srilib's repair
stays within the block of the canvas (the prompt is never rewritten).

Cost (for the defenses table): SAR draws one uniform per block position per step (negligible); the audit adds
one forward pass per block (``"hidden"`` with ``sp_logit``: two), plus one reference-only pass per batch in the
hidden modes, and each repaired block ``refinement_steps`` more (for the whole batch when any row is flagged).
``generate`` runs the same loop untraced, so it can be timed like the plain sampler.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..models import left_pad
from .diffusion import DiffusionSampler, confidence, gumbel_argmax, num_transfer_tokens, pairs, top_k_mask

ANNEALS = ("block", "linear", "cosine", "constant")
SP_MODES = ("hidden", "hidden-block", "direction")
# the logit audit's cue phrases (the authors' defaults); every token of a phrase counts
ACCEPT_CUES = ("Sure", "Of course", "Here", "Step", "1.", "First", "Proceed", "Let's")
REFUSE_CUES = ("Sorry", "I can't", "cannot", "won't", "illegal", "harmful", "not assist", "refuse")
# sp_threshold when none is given. "hidden", as in the authors' runs (test.sh, every --sp_mode hidden run with
# --fill_all_masks): 0.1 beside --remasking adaptive_step (SAR on), 0.2 in the two runs without SAR. srilib's own
# modes ("hidden-block", "direction"): 0.35, ours (the runner's argparse default; no hidden-state run of theirs uses it)
AUTHORS_THRESHOLD_SAR = 0.1
AUTHORS_THRESHOLD_NO_SAR = 0.2
OURS_THRESHOLD = 0.35
# settings of the authors' hidden-state runs (test.sh flags, else the runner's defaults), for describe()
AUTHORS_RUNS = {"alpha0": 0.3, "anneal": "block", "refinement_steps": 8, "remask_ratio": 0.9, "suppression": 1e6,
                "repair_first_block_only": True, "audit_layer": -1, "sp_logit": True, "repair_prefill": True}
AUTHORS_NOT_REPRODUCED = ("classifier-free guidance (cfg_scale 0.1)", "temperature 0.5",
                          "36 masks inside the user turn (mask_counts)", "the repair of prompt positions")


def mean_state(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over positions: ``hidden`` [B, S, D], ``weights`` [B, S] (1 = real position, 0 = padding) ->
    [B, D] (float32)."""
    w = weights.float()
    return torch.einsum("bs,bsd->bd", w, hidden.float()) / w.sum(1, keepdim=True).clamp(min=1e-12)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a, b)`` per row [B] of [B, D] (or [D]) vectors, as the authors compute it: each vector divided by
    its norm + 1e-12 (a zero vector is at distance 1 from everything)."""
    a, b = a.float(), b.float()
    a = a / (a.norm(dim=-1, keepdim=True) + 1e-12)
    b = b / (b.norm(dim=-1, keepdim=True) + 1e-12)
    return 1.0 - (a * b).sum(-1)


def conflict_score(logits: torch.Tensor, weights: torch.Tensor, accept: Sequence[int],
                   refuse: Sequence[int]) -> torch.Tensor:
    """The logit audit's conflict per row [B]: the ``weights``-mean over positions of ``4 * p_accept * p_refuse``,
    with ``p`` the softmax of ``logits`` [B, S, V] and ``p_accept`` / ``p_refuse`` its mass on the token ids
    ``accept`` / ``refuse`` (0 when either is empty, as in the authors' code). One row at a time (memory)."""
    w = weights.float()
    out = torch.zeros(logits.shape[0], device=logits.device)
    if not accept or not refuse:
        return out
    acc = torch.tensor(sorted(accept), device=logits.device)
    ref = torch.tensor(sorted(refuse), device=logits.device)
    for b in range(logits.shape[0]):
        p = torch.softmax(logits[b].float(), dim=-1)
        c = 4.0 * p[:, acc].sum(-1) * p[:, ref].sum(-1)
        out[b] = (c * w[b]).sum() / w[b].sum().clamp(min=1e-12)
    return out


def normalize_references(references) -> tuple[tuple[str, str], ...] | None:
    """``{prompt: reference}`` or ``(prompt, reference)`` pairs -> sorted pairs without the prompts that are their
    own reference (None when none is left: the same sampler, and cache key, as no references)."""
    if references is None:
        return None
    out: dict[str, str] = {}
    for prompt, ref in pairs(references, "references are (prompt, reference) pairs"):
        for what, v in (("prompt", prompt), ("reference", ref)):
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"a reference pair's {what} must be a non-empty string, got {v!r}")
        if out.get(prompt, ref) != ref:
            raise ValueError(f"prompt {prompt[:60]!r} is given two different references; give each prompt one")
        out[prompt] = ref
    return tuple(sorted((p, r) for p, r in out.items() if p != r)) or None


@dataclass(frozen=True, eq=False)
class AuditDirection:
    """What the audit scores a block against: ``cos(h - center, direction)`` of the block's mean hidden state ``h``
    at ``layer`` (an index into the model's hidden states as :func:`srilib.models.mask_predict` takes it: -1 = last
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
        from ..models import mask_predict

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
    defenses (see the module docstring for what each computes). Defaults: the settings of the authors'
    hidden-state runs (``test.sh``: SAR ``adaptive_step`` + hidden-state audit with ``--fill_all_masks``);
    :meth:`describe` names each setting and whether it is theirs.

    Parameters
    ----------
    gen_length, steps, block_length, temperature, seed, prefill, capture, poolings, schedule :
        As for :class:`DiffusionSampler` (``remasking`` is fixed to ``low_confidence``, the score SAR perturbs).
        ``seed`` seeds the one generator used for Gumbel noise, SAR's uniforms, the repair's choice of positions
        and, with SAR on, the refinement's commit order.
    alpha0 : float in [0, 1]
        SAR's initial randomness weight (0.3 as in the authors' runs; 0 = SAR off).
    anneal : str
        ``"block"`` (the authors' ``adaptive_step``, as in their runs), ``"linear"`` (ours), ``"cosine"`` (ours)
        or ``"constant"`` (their ``adaptive``): alpha over the steps.
    audit : bool
        Block-level audit and repair on or off.
    sp_mode : str
        ``"hidden"`` (as in the authors' runs: whole-sequence mean state vs the reference's, their
        ``--fill_all_masks``), ``"hidden-block"`` (ours: the block's mean state vs the reference's) or
        ``"direction"`` (ours; needs ``audit_direction``).
    sp_threshold : float in [-1, 2] or None
        Flag threshold: ``score >= sp_threshold`` under the hidden modes (a cosine distance in [0, 2]),
        ``score > sp_threshold`` under ``"direction"`` (a cosine in [-1, 1]); the logit conflict is compared with
        it too (``>=``). None (default): as in the authors' runs under ``"hidden"``, 0.1 with SAR on (``alpha0 >
        0``) and 0.2 with SAR off; 0.35 (ours) under ``"hidden-block"`` and ``"direction"``.
    refinement_steps : int >= 1
        Forward passes that regenerate a flagged block's remasked positions (8, as in the authors' runs).
    remask_ratio : float in (0, 1]
        Share of a flagged block's positions (``repair_prefill=False``: non-prefilled ones) remasked, rounded down
        (0.9, as in the authors' runs).
    suppression : float >= 0
        Logit penalty on a remasked position's previous token during the refinement (1e6 as in the authors' runs;
        0 = unguided; ``inf`` bans it outright).
    repair_first_block_only : bool
        Repair only the first block (True, as in the authors' runs); every block is still audited.
    audit_layer : int
        Hidden-state index (``mask_predict``'s ``layers``) of the hidden modes (-1, the last, as in the authors'
        runs).
    sp_logit : bool
        Also flag a block whose logit *conflict* is ``>= sp_threshold`` (on, OR-ed with the score, as in the
        authors' code): the mean of ``4 * p_accept * p_refuse`` (:data:`ACCEPT_CUES`, :data:`REFUSE_CUES`) over
        the audited positions of the pass that decided the block's last step: the whole sequence under
        ``"hidden"`` (softmax over the whole vocabulary), the block under the other modes (softmax without the mask
        token).
    repair_prefill : bool
        The repair may remask prefilled positions (a canvas attack's text) too (True, as in the authors' code).
    audit_direction : AuditDirection or None
        The fitted direction for ``sp_mode="direction"``.
    references : dict, pairs or None
        ``{prompt: reference}`` (or pairs): the text the hidden audit compares a prompt with, e.g. an attacked
        prompt's un-attacked request (the authors' ``compute_baseline_hidden(vanilla_text)``); a prompt not listed
        is its own reference. Part of :meth:`config` (the cache key). See :meth:`with_references`.
    """

    alpha0: float = 0.3
    anneal: str = "block"
    audit: bool = True
    sp_mode: str = "hidden"
    sp_threshold: float | None = None
    refinement_steps: int = 8
    remask_ratio: float = 0.9
    suppression: float = 1e6
    repair_first_block_only: bool = True
    audit_layer: int = -1
    sp_logit: bool = True
    repair_prefill: bool = True
    audit_direction: AuditDirection | None = None
    references: dict | tuple | None = None
    _audit_log: list = field(default_factory=list, init=False, repr=False, compare=False)
    sparse_logits = False  # the block logit-conflict audit averages the block's predictions at committed positions

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
            raise ValueError(f"unknown sp_mode {self.sp_mode!r}; use 'hidden' (as in the authors' runs), "
                             "'hidden-block' (ours) or 'direction' (ours, needs audit_direction)")
        if self.audit_direction is not None and not isinstance(self.audit_direction, AuditDirection):
            raise ValueError("audit_direction must be an AuditDirection (AuditDirection.fit(lm, harmful, harmless) "
                             f"or AuditDirection.from_anchors(anchors)), got {type(self.audit_direction).__name__}")
        if self.audit and self.sp_mode == "direction" and self.audit_direction is None:
            raise ValueError("sp_mode='direction' needs a fitted direction: pass audit_direction="
                             "AuditDirection.fit(lm, harmful_prompts, harmless_prompts) (or from_anchors), or use "
                             "sp_mode='hidden' (as in the authors' runs, no fitted data)")
        if self.sp_threshold is None:
            self.sp_threshold = (AUTHORS_THRESHOLD_SAR if float(self.alpha0) > 0 else AUTHORS_THRESHOLD_NO_SAR) \
                if self.sp_mode == "hidden" else OURS_THRESHOLD
        if not number(self.sp_threshold) or not -1.0 <= float(self.sp_threshold) <= 2.0:
            raise ValueError(f"sp_threshold is compared with a cosine (distance): use a number in [-1, 2] (or None "
                             f"for the default), got {self.sp_threshold!r}")
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
        self.references = normalize_references(self.references)
        self.alpha0, self.sp_threshold, self.remask_ratio = float(self.alpha0), float(self.sp_threshold), \
            float(self.remask_ratio)
        self.suppression, self.refinement_steps, self.audit_layer = float(self.suppression), \
            int(self.refinement_steps), int(self.audit_layer)

    def with_references(self, prompts: Sequence[str], references: Sequence[str]) -> "DiffuGuardSampler":
        """A copy whose hidden audit compares ``prompts[i]`` with ``references[i]`` (e.g. attacked prompts and
        their un-attacked requests); replaces any references it had. A prompt equal to its reference needs none
        (it is dropped: same cache key as without)."""
        prompts, references = list(prompts), list(references)
        if len(prompts) != len(references):
            raise ValueError(f"with_references needs one reference per prompt: got {len(prompts)} prompts and "
                             f"{len(references)} references")
        return dataclasses.replace(self, references=tuple(zip(prompts, references)))

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
        if self.audit and self.sp_logit and self.sp_mode != "hidden":
            self._blk_logits = blk  # the last one of a block is what the block logit audit reads
        p = confidence(blk, x0, "low_confidence", gen)  # no draw
        a = self.alpha(step, n_steps)
        if a == 0.0:
            return p
        r = torch.rand(x0.shape, generator=gen, device=x0.device)
        return r if a == 1.0 else (1.0 - a) * p + a * r

    # ---- audit and repair
    def _run(self, lm, prompts, layers, record):
        self._audit_log = [[] for _ in prompts]
        given = dict(self.references or ())
        self._refs = [given.get(p, p) for p in prompts]
        self._ref_kind = ["request" if p in given else "prompt" for p in prompts]
        self._fixed = self._ref_state = self._blk_logits = self._cue_ids = None
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

    def _reference_state(self, lm, device) -> torch.Tensor:
        """Mean ``audit_layer`` state [B, D] of each row's reference, chat-formatted alone (real tokens only)."""
        from ..models import mask_predict

        pad = lm.pad_id if lm.pad_id != lm.mask_id else lm.eos_ids[0]
        xr, ar = left_pad(lm.validate_prompts(self._refs), pad, device)
        _, h = mask_predict(lm, xr, ar, [self.audit_layer], start=0)
        return mean_state(h[:, :, 0], ar)

    def _score(self, lm, x, attn, P, canvas, lo, hi, fixed) -> torch.Tensor:
        """Audit score per row [B] (see the module docstring). Overwrites ``x[:, P:]``."""
        from ..models import mask_predict

        if self.sp_mode == "direction":
            d = self.audit_direction
            x[:, P:] = canvas
            _, hidden = mask_predict(lm, x, attn, [d.layer], start=P)
            return d.score(hidden[:, lo:hi, 0].mean(1))
        if self._ref_state is None:
            self._ref_state = self._reference_state(lm, canvas.device)
        start = canvas.clone()  # the canvas as the block started: its non-prefilled positions masked
        start[:, lo:hi] = torch.where(fixed[:, lo:hi], canvas[:, lo:hi], int(lm.mask_id))
        x[:, P:] = start
        if self.sp_mode == "hidden":  # the authors' fill_all_masks: every real position, prompt and canvas
            _, hidden = mask_predict(lm, x, attn, [self.audit_layer], start=0)
            h = mean_state(hidden[:, :, 0], attn)
        else:  # "hidden-block" (ours): the block's positions
            _, hidden = mask_predict(lm, x, attn, [self.audit_layer], start=P)
            h = hidden[:, lo:hi, 0].mean(1)
        return cosine_distance(h, self._ref_state)

    def _conflict(self, lm, x, attn) -> torch.Tensor:
        """Logit conflict per row [B] of the pass that decided the block's last step (see ``sp_logit``); ``x`` is
        that pass's input (the loop's ``x`` as :meth:`_after_block` receives it)."""
        from ..models import mask_predict

        if self._cue_ids is None:
            def ids(phrases):
                return sorted({t for ph in phrases for t in lm.tokenizer(ph, add_special_tokens=False)["input_ids"]})
            self._cue_ids = ids(ACCEPT_CUES), ids(REFUSE_CUES)
        acc, ref = self._cue_ids
        if self.sp_mode == "hidden":  # the whole sequence, full vocabulary, as in the authors' fill_all_masks runs
            logits, _ = mask_predict(lm, x, attn, [], start=0)
            return conflict_score(logits, attn, acc, ref)
        blk = self._blk_logits
        return conflict_score(blk, torch.ones(blk.shape[:2], device=blk.device), acc, ref)

    @torch.no_grad()
    def _after_block(self, lm, x, attn, P, canvas, done, lo, hi, gen, step, n_steps):
        from ..models import mask_predict

        if not self.audit:
            return False
        B = canvas.shape[0]
        fixed = self._prefilled(lm, B, canvas.device)
        conflict = self._conflict(lm, x, attn) if self.sp_logit else None  # before _score overwrites x
        score = self._score(lm, x, attn, P, canvas, lo, hi, fixed)
        flag = score > self.sp_threshold if self.sp_mode == "direction" else score >= self.sp_threshold
        if conflict is not None:
            flag = flag | (conflict >= self.sp_threshold)
        free = torch.ones_like(fixed[:, lo:hi]) if self.repair_prefill else ~fixed[:, lo:hi]
        repair = flag & (not self.repair_first_block_only or lo == 0)
        n_remask = torch.where(repair, torch.floor(self.remask_ratio * free.sum(1).double()).long(),
                               torch.zeros_like(flag, dtype=torch.long))
        for b in range(B):
            self._audit_log[b].append({"block": lo, "score": float(score[b]), "flagged": bool(flag[b]),
                                       "remasked": int(n_remask[b]),
                                       "conflict": None if conflict is None else float(conflict[b]),
                                       "reference": None if self.sp_mode == "direction" else self._ref_kind[b]})
        if not bool((n_remask > 0).any()):
            return False
        mask_id = int(lm.mask_id)
        r = torch.rand(free.shape, generator=gen, device=canvas.device).masked_fill(~free, -torch.inf)
        remask = top_k_mask(r, n_remask) & free
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
            if self.alpha0 > 0:  # SAR on: the authors' refinement commits in the order of fresh uniform draws
                conf = torch.rand(x0.shape, generator=gen, device=x0.device)
            else:  # SAR off (their low_confidence): by confidence
                conf = confidence(blk, x0, "low_confidence", gen)
            pick = top_k_mask(conf.masked_fill(done[:, lo:hi], -torch.inf), k_sched[:, s]) & ~done[:, lo:hi]
            canvas[:, lo:hi] = torch.where(pick, x0, canvas[:, lo:hi])
            done[:, lo:hi] |= pick
        return True

    # ---- identity
    @property
    def name(self) -> str:
        blk = f"-b{self.block_length}" if self.block_length != self.gen_length else ""
        sar = f"-a{self.alpha0:g}{'' if self.anneal == 'block' else self.anneal}" if self.alpha0 else "-nosar"
        aud = f"-{self.sp_mode}{'' if self.sp_logit else '-nologit'}{self.sp_threshold:g}" if self.audit else ""
        ref = "+ref" if self.audit and self.references else ""
        return f"diffuguard{blk}{sar}{aud}{'-dream' if self.schedule == 'dream' else ''}{self._suffix()}{ref}"

    def config(self) -> dict:
        cfg = {k: v for k, v in asdict(self).items() if k not in ("audit_direction", "_audit_log", "references")}
        d = self.audit_direction
        cfg["audit_direction"] = None if d is None else {"digest": d.digest(), "layer": d.layer, "source": d.source}
        refs = self.references
        cfg["references"] = None if not refs else {
            "n": len(refs), "sha256": hashlib.sha256(json.dumps(refs, ensure_ascii=False).encode()).hexdigest()}
        return {"sampler": "diffuguard", **cfg}

    def describe(self) -> str:
        """The settings in words, each named as the authors' (as in their runs: ``test.sh``, the LLaDA runner's
        defaults otherwise) or as srilib's own ("ours"), and what is not reproduced."""
        def src(key):
            return "" if getattr(self, key) == AUTHORS_RUNS[key] else " (ours; not the authors' runs)"

        if self.alpha0 == 0:
            sar = "SAR off (alpha0 = 0, the authors' low_confidence remasking)"
        else:
            how = {"block": "adaptive_step", "constant": "adaptive"}.get(self.anneal)
            sar = (f"SAR alpha0 = {self.alpha0:g}{src('alpha0')}, anneal '{self.anneal}'"
                   + (f" (their {how}{'' if self.anneal == 'block' else '; not in their runs'})" if how else
                      " (ours)"))
        if not self.audit:
            return (f"{sar}; audit and repair off; block length {self.block_length} of {self.gen_length}, "
                    f"{self.steps} steps; not reproduced: {', '.join(AUTHORS_NOT_REPRODUCED[:2])}")
        authors_thr = AUTHORS_THRESHOLD_SAR if self.alpha0 > 0 else AUTHORS_THRESHOLD_NO_SAR
        if self.sp_mode == "hidden":
            what = ("hidden-state audit as in the authors' runs (test.sh: --sp_mode hidden --fill_all_masks): "
                    "cosine distance of the mean last-layer state over the whole sequence (prompt + canvas) at "
                    "each block's first pass from the reference's (the un-attacked request, else the prompt)")
            thr = f"threshold {self.sp_threshold:g}" + (
                f" (as in their runs {'with' if self.alpha0 > 0 else 'without'} SAR: --sp_threshold {authors_thr:g})"
                if self.sp_threshold == authors_thr else
                f" (ours; their runs use {authors_thr:g} {'with' if self.alpha0 > 0 else 'without'} SAR)")
            logit = "whole sequence"
        else:
            what = ("hidden-state audit 'hidden-block' (ours; not the authors' runs): cosine distance of the mean "
                    "last-layer state over the block at its first pass from the reference's"
                    if self.sp_mode == "hidden-block" else
                    "fitted-direction audit 'direction' (ours; not the authors' runs)")
            thr = f"threshold {self.sp_threshold:g}" + (" (ours)" if self.sp_threshold == OURS_THRESHOLD else "")
            logit = "over the block, ours"
        layer = "" if self.sp_mode == "direction" else f", layer {self.audit_layer}{src('audit_layer')}"
        order = ("committed in the order of fresh uniform draws (SAR on, as in the authors' code)" if self.alpha0 > 0
                 else "committed by confidence (SAR off, as in the authors' code)")
        repair = (f"repair of {'the first block only' if self.repair_first_block_only else 'every flagged block'}"
                  f"{src('repair_first_block_only')}: remask ratio {self.remask_ratio:g}{src('remask_ratio')}"
                  f"{'' if self.repair_prefill else ' (prefilled positions kept; ours)'}, {self.refinement_steps} "
                  f"refinement steps{src('refinement_steps')} {order}, suppression {self.suppression:g}"
                  f"{src('suppression')}")
        return (f"{sar}; {what}{layer}, {thr}, logit-conflict test "
                f"{f'on ({logit})' if self.sp_logit else 'off' + src('sp_logit')}; {repair}; block length "
                f"{self.block_length} of {self.gen_length}, {self.steps} steps; not reproduced: "
                f"{', '.join(AUTHORS_NOT_REPRODUCED)}")
