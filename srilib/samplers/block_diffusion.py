"""DiffusionGemma (uniform-noise block diffusion) traced step by step: its own ``generate()``, ``entropy_bound``.

DiffusionGemma (:mod:`srilib.diffusion_gemma`) generates the response as a sequence of *canvases* of
``canvas_length`` tokens (``DiffusionGemmaConfig``'s default: 256), left to right; it denoises each canvas for up to
``max_denoising_steps`` steps (transformers' default: 48). A canvas starts as uniform-random vocabulary tokens:
there is no [MASK] and every position always holds a token. Each step runs the bidirectional decoder over the canvas
(reading the KV cache that the causal encoder wrote for the prompt and every finished canvas, and conditioned on the
previous step's logits: self-conditioning), samples a token at every position from the temperature-scaled prediction
(a linear schedule from ``t_max`` to ``t_min``), *accepts* the lowest-entropy positions whose summed entropy, the
largest excluded, stays within ``entropy_bound``, and *renoises* every other position with fresh uniform tokens. A
canvas stops early once its argmax draft is stable and its mean entropy is below ``confidence_threshold``; the
argmax draft of its last step is what ``generate()`` appends to the sequence (and after an end-of-text token, pad).
transformers ``generation_diffusion_gemma.py``: ``DiffusionGemmaGenerationMixin.generate`` (steps 1.a-1.f),
``EntropyBoundSampler.accept_canvas`` / ``renoise_canvas``, ``StableAndConfidentStoppingCriteria``.

:class:`BlockDiffusionSampler` (``entropy_bound``) runs that loop by calling the generation mixin's own pieces in
``generate()``'s order (``_prepare_encoder_inputs``, ``_prepare_denoiser_inputs``, ``_denoising_step``,
``_finalize_canvas``, ``_prepare_kwargs_for_next_canvas``; its decoder pass is the model's ``forward`` with hidden
states requested, which changes no number), from the same global torch generator seeded with ``seed``: the
tokens are those of ``model.generate()`` with that seed and settings, step by step (tests/test_diffusion_gemma.py
compares every step with the drafts ``generate()`` streams and with what its sampler accepted). Seeding happens
inside a forked generator state, so tracing leaves the caller's random state alone.

Definitions (uniform noise; the choices the methods page explains)
-------------------------------------------------------------------

*Committed.* A position of the canvas being denoised is committed after step t when step t's acceptance rule
accepted it: it holds a token sampled from the model's prediction, which the next step reads as content, while
every other position was renoised and holds a uniform-random token the next step reads as noise. Acceptance is
re-decided at every step, so unlike masked diffusion committed positions can be released again (and an accepted
position can get a different sample at the next step); ``TraceSet.committed`` is not monotone within a canvas.
At the step a canvas's draft becomes final (its adaptive stop, or its last denoising step) the whole canvas is
committed with the finalized draft (end-of-text padding applied), because that is what ``generate()`` appends;
finished canvases stay committed, later canvases are uncommitted (-1) until they start. A sequence that ended
in an earlier canvas is still denoised in the later ones, as in ``generate()``, which appends them as pad; its
visible text and ``generated`` pooling stop at its first end-of-text token. Alternatives not taken:
the union of positions ever accepted (counts positions that were later renoised), positions whose argmax draft
did not change since the previous step (a stability notion the sampler does not act on), or an entropy threshold
of its own (a second rule beside the sampler's).

*Tokens and predictions.* ``tokens`` holds the accepted samples (the canvas the next step reads) at committed
positions; ``predictions`` is the argmax draft at *every* position (what ``generate()`` streams as the draft and
eventually appends), so at a committed position it can differ from the sampled token (the one departure from the
masked-diffusion invariant "predictions = tokens where committed"); ``pred_texts`` decodes the draft up to its
first end-of-text token. Canvases that have not started have -1 in both.

*Poolings* (step t, over the response positions of every canvas started so far; a finished canvas contributes the
hidden states of the capture pass of its final step):

- ``generated`` (paper Section 3.1): the committed positions a reader would see (before the first committed
  end-of-text/pad token). Nothing is masked in a uniform-noise canvas, so "generated" cannot mean "not masked"
  (that would be every position, i.e. ``canvas``): it reads the accepted positions only, the tokens the sampler
  keeps, never the noise it will overwrite. The acceptance rule always accepts at least the lowest-entropy
  position, so ``generated`` is empty only when everything accepted so far is end-of-text/pad (or at the first
  step under ``capture="decision"``); it then falls back to ``canvas``, flagged in ``TraceSet.empty`` as for the
  masked samplers. Alternatives not taken: the mean over every position (``canvas``, recorded), an
  entropy-weighted mean over all positions, or the argmax draft's positions.
- ``committed``: every committed position, end-of-text padding included.
- ``canvas``: every position of the started canvases, noise included.

*Capture* (:mod:`srilib.traces`): under ``"after"`` (default) step t reads the decoder pass that sees step t's
accepted and renoised canvas (the pass of step t + 1; at a canvas's final step, one extra decoder pass over the
finalized draft with the last self-conditioning logits: one pass per canvas that ``generate()`` does not run).
Under ``"decision"`` step t reads the pass that made step t's decision, pooled with the positions committed in its
input (those accepted at step t - 1; nothing in the first step of the first canvas): exactly ``generate()``'s
passes.

*Steps (T).* Steps are aligned on a fixed grid of ``canvases x max_denoising_steps`` slots: slot (c, k) is
denoising step k of canvas c for every prompt, and a canvas that stopped early (or a batch whose every sequence
ended) repeats its final state in its remaining slots, as an AR trace repeats its last state after end-of-text.
``steps=None`` records every slot (T = canvases x max_denoising_steps, e.g. 48 with transformers' defaults and a
response of at most 256 tokens); ``steps=T`` records T slots spread evenly over the grid (slot
``ceil((j + 1) G / T) - 1`` for j = 0..T-1, the last slot always included), which gives the paper's T = 32 for any
response length. Alternative not taken: T points spread over each prompt's own steps (its progress), which would
let step t mean different denoising steps for different prompts, while anchors average prompts step by step.

The same weights decoded left to right (``dlm-ar``, through the causal encoder) are in
:mod:`srilib.samplers.encoder_ar`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..diffusion_gemma import FAMILY
from ..models import left_pad
from ..traces import TracedLoop, TraceSet, check_capture, check_poolings
from .diffusion import decode, decode_runs, visible

BLOCK_DIFFUSION_NAMES = ("entropy_bound",)
BLOCK_POOLINGS = ("generated", "committed", "canvas")


def _require_family(lm, sampler: str) -> None:
    if getattr(lm, "family", "") != FAMILY:
        raise ValueError(f"{sampler} runs DiffusionGemma's own generation loop; {getattr(lm, 'name', lm)!r} is not a "
                         f"DiffusionGemma model (family {getattr(lm, 'family', '')!r}); use a masked-diffusion "
                         "sampler (low_confidence, ...) for masked DLMs")


def grid_slots(G: int, T: int | None) -> list[int]:
    """The recorded slots of a grid of ``G`` (0-based): every slot for ``T=None``, else ``ceil((j + 1) G / T) - 1``
    for j = 0..T-1 (strictly increasing, the last slot included)."""
    if T is None:
        return list(range(G))
    if not 1 <= T <= G:
        raise ValueError(f"steps={T} recorded steps do not fit the grid of {G} denoising steps (canvases x "
                         f"max_denoising_steps); use steps <= {G} or steps=None (every step)")
    return [math.ceil((j + 1) * G / T) - 1 for j in range(T)]


def _pool(states: torch.Tensor, tokens: torch.Tensor, end: torch.Tensor) -> dict:
    """Poolings of ``states`` [B, n, K, D] over the response positions with ``tokens`` [B, n] (-1: not committed)."""
    done = tokens >= 0
    vis = visible(tokens, done, end)

    def mean(w):
        w = w.float()
        return torch.einsum("bl,blkd->bkd", w, states) / w.sum(1).clamp(min=1)[:, None, None]

    whole = states.mean(1)
    empty, none = ~vis.any(1), ~done.any(1)
    return {"generated": torch.where(empty[:, None, None], whole, mean(vis)),
            "committed": torch.where(none[:, None, None], whole, mean(done)), "canvas": whole, "empty": empty}


def _where_rows(rows: torch.Tensor, a, b):
    """Row-wise choice between two records' tensors (``rows`` [B] bool: take ``a``)."""
    return torch.where(rows.view(-1, *([1] * (a.dim() - 1))), a, b)


@dataclass
class BlockDiffusionSampler(TracedLoop):
    """DiffusionGemma's ``generate()`` with per-step traces (``entropy_bound``; see the module docstring).

    Settings left at None take the model's generation configuration (transformers' defaults where it sets none:
    256 new tokens, 48 denoising steps, entropy bound 0.1, temperatures 0.8 -> 0.4, stability 1, confidence
    0.005); every setting is part of the trace key.

    Parameters
    ----------
    gen_length : int or None
        ``max_new_tokens``: the response spans ``ceil(gen_length / canvas_length)`` whole canvases.
    steps : int or None
        T recorded steps, spread evenly over the grid of canvases x denoising steps; None records every step.
    max_denoising_steps, entropy_bound, t_min, t_max, stability_threshold, confidence_threshold :
        The generation-config settings of the same names.
    seed : int
        Seed of the global torch generator that ``generate()`` draws from (canvas noise, samples, renoising).
    capture : str
        ``"after"`` (default; one extra decoder pass per canvas) or ``"decision"`` (``generate()``'s passes only).
    poolings : tuple of str or None
        Poolings to record (None: ``generated``, ``committed`` and ``canvas``).
    """

    gen_length: int | None = None
    steps: int | None = None
    max_denoising_steps: int | None = None
    entropy_bound: float | None = None
    t_min: float | None = None
    t_max: float | None = None
    stability_threshold: int | None = None
    confidence_threshold: float | None = None
    seed: int = 0
    kind: str = "dlm"
    capture: str = "after"
    poolings: tuple | None = None

    def __post_init__(self):
        for k in ("gen_length", "steps", "max_denoising_steps"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{k} must be a positive integer or None (the model's setting), got {v!r}")
        for k in ("entropy_bound", "t_min", "t_max", "confidence_threshold"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, float(v))  # the generation config accepts floats only
        if self.stability_threshold is not None and self.stability_threshold < 0:
            raise ValueError(f"stability_threshold must be >= 0, got {self.stability_threshold}")
        check_capture(self.capture)
        self.poolings = check_poolings(self.poolings, BLOCK_POOLINGS, type(self).__name__)

    @property
    def name(self) -> str:
        return "entropy_bound"

    def config(self) -> dict:
        return {"sampler": "entropy_bound", **asdict(self)}


    # ---- internals
    def generation_kwargs(self) -> dict:
        """The keyword arguments of ``model.generate()`` that these settings give (None: the model's)."""
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

        kw = {"max_new_tokens": self.gen_length, "max_denoising_steps": self.max_denoising_steps,
              "t_min": self.t_min, "t_max": self.t_max, "stability_threshold": self.stability_threshold,
              "confidence_threshold": self.confidence_threshold,
              "sampler_config": None if self.entropy_bound is None else
              EntropyBoundSamplerConfig(entropy_bound=self.entropy_bound)}
        return {k: v for k, v in kw.items() if v is not None}

    @torch.no_grad()
    def _run(self, lm, prompts: list[str], layers: list[int], record: bool):
        _require_family(lm, self.name)
        model, dev = lm.model, lm.device
        gc, extra = model._prepare_generation_config(None, **self.generation_kwargs())
        if extra:
            raise ValueError(f"settings not understood by DiffusionGemma's generation config: {sorted(extra)}")
        Lc, S = int(model.config.canvas_length), int(gc.max_denoising_steps)
        ids = lm.validate_prompts(prompts, reserve=math.ceil(gc.max_new_tokens / Lc) * Lc)
        pad = lm.pad_id
        end = torch.tensor(sorted(set(lm.eos_ids) | {pad}), device=dev)
        input_ids, attn = left_pad(ids, pad, dev)
        B, P = input_ids.shape
        max_length, max_new = model._prepare_generated_length(gc, P)
        C = math.ceil(max_new / Lc)
        L, G = C * Lc, C * S
        slots = grid_slots(G, self.steps)
        decision = self.capture == "decision"
        text_cfg = model.config.get_text_config()
        n_hs = int(text_cfg.num_hidden_layers) + 1
        for k in layers:
            if not -n_hs <= k < n_hs:
                raise ValueError(f"layer {k} does not exist: {lm.name} has {n_hs} hidden states (0 = embeddings, "
                                 f"{n_hs - 1} = last); pass layers in [-{n_hs}, {n_hs - 1}]")
        idx = [k % n_hs for k in layers]
        box: dict = {}

        def decoder_forward(**kw):
            if not record:
                return model(**kw)
            out = model(**kw, output_hidden_states=sorted(set(idx)))
            box["h"] = torch.stack([out.hidden_states[i] for i in idx], dim=2).float()  # [B, Lc, K, D]
            return out

        final_tok = torch.full((B, L), -1, dtype=torch.long, device=dev)
        buf = torch.zeros((B, L, len(idx), int(text_cfg.hidden_size)), device=dev) if record else None
        grid: list[dict] = []
        cuda = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            # generate()'s step 0: cache, positions, masks, the sampler, logits processors and stopping criteria
            cache = model._prepare_cache_for_generation(generation_config=gc, batch_size=B, max_length=max_length)
            eos_tensor = torch.tensor(gc.eos_token_id, device=dev) if gc.eos_token_id is not None else None
            cur_len = P
            enc_pos = torch.arange(0, P, dtype=torch.int32, device=dev)[None]
            dec_pos = torch.arange(P, P + Lc, dtype=torch.int32, device=dev)[None]
            attention_mask = attn.bool()
            dec_attn = torch.nn.functional.pad(attention_mask, (0, Lc), value=True)
            eb = model._prepare_sampler(gc)  # transformers' EntropyBoundSampler
            processors = model._prepare_logits_processor(gc, None)
            stopping = model._prepare_ar_stopping_criteria(gc, None)
            diffusion_stop = model._prepare_diffusion_stopping_criteria(gc)
            finished = torch.zeros(B, dtype=torch.bool, device=dev)
            seq = input_ids
            for c in range(C):
                lo, hi = c * Lc, (c + 1) * Lc
                # 1.a the encoder writes the prompt (first canvas) or the last finished canvas into the KV cache
                enc_ids, enc_mask = model._prepare_encoder_inputs(
                    input_ids=seq, attention_mask=attention_mask, encoder_position_ids=enc_pos, cache=cache,
                    is_prefill=c == 0, canvas_length=Lc, batch_size=B)
                cache = model.model.encoder(input_ids=enc_ids, attention_mask=enc_mask, cache=cache,
                                            position_ids=enc_pos).cache
                # 1.b a fresh noise canvas (the generator's draw, as in generate())
                canvas, sc_logits, mask_mapping, stopped = model._prepare_denoiser_inputs(
                    decoder_attention_mask=dec_attn, cache=cache, sampler=eb,
                    diffusion_stopping_criteria=diffusion_stop, batch_size=B, device=dev, model_kwargs={})
                draft = canvas
                steps: list[dict] = []  # per executed step: accepted samples (-1 elsewhere), draft, pooling
                stop = torch.full((B,), -1, dtype=torch.long, device=dev)  # the step each row's draft became final
                dec_final = torch.zeros_like(buf[:, lo:hi]) if record and decision else None
                for cur_step in reversed(range(1, S + 1)):  # 1.c denoising steps (counted down, as generate())
                    k = S - cur_step
                    before = stopped.clone()
                    canvas, draft, sc_logits, stopped = model._denoising_step(
                        decoder_forward=decoder_forward, current_canvas=canvas, argmax_canvas=draft,
                        input_ids=seq, decoder_position_ids=dec_pos, self_conditioning_logits=sc_logits,
                        mask_mapping=mask_mapping, cache=cache, finished_denoising=stopped, cur_step=cur_step,
                        sampler=eb, logits_processor=processors, diffusion_stopping_criteria=diffusion_stop)
                    accepted = eb.accepted_token_mask
                    stop[stopped & ~before] = k
                    step = {"tok": torch.where(accepted, canvas, -1), "draft": draft.clone()}
                    if record:
                        h = box.pop("h")
                        if decision:  # this pass decided step k; its input held the samples accepted at k - 1
                            prev = steps[-1]["tok"] if steps else torch.full_like(step["tok"], -1)
                            step["pool"] = _pool(torch.cat([buf[:, :lo], h], 1),
                                                 torch.cat([final_tok[:, :lo], prev], 1), end)
                            dec_final[~before] = h[~before]
                        elif steps:  # this pass is the first to see step k - 1's accepted and renoised canvas
                            steps[-1]["pool"] = _pool(torch.cat([buf[:, :lo], h], 1),
                                                      torch.cat([final_tok[:, :lo], steps[-1]["tok"]], 1), end)
                    steps.append(step)
                    if bool(stopped.all()):
                        break
                stop[stop < 0] = len(steps) - 1
                # 1.d / 1.e the draft is appended; end-of-text padding and finished sequences, as in generate()
                seq = torch.cat([seq, draft], dim=-1)
                seq, finished = model._finalize_canvas(
                    input_ids=seq, finished_sequences=finished, generation_config=gc, stopping_criteria=stopping,
                    canvas_length=Lc, eos_tensor=eos_tensor)
                final_tok[:, lo:hi] = seq[:, -Lc:]
                if record:
                    if decision:
                        buf[:, lo:hi] = dec_final
                        fin_pool = {key: torch.stack([steps[s]["pool"][key][b] for b, s in enumerate(stop.tolist())])
                                    for key in steps[0]["pool"]}
                    else:  # one decoder pass over the finalized canvas (what generate() appends)
                        decoder_forward(decoder_input_ids=seq[:, -Lc:], self_conditioning_logits=sc_logits,
                                        decoder_attention_mask=mask_mapping, cache=cache,
                                        decoder_position_ids=dec_pos)
                        buf[:, lo:hi] = box.pop("h")
                        fin_pool = _pool(buf[:, :hi], final_tok[:, :hi], end)
                grid.extend(self._canvas_records(steps, stop, S, final_tok, lo, hi, L, fin_pool if record else None))
                if bool(finished.all()):
                    break
                # 1.f the next canvas's masks and positions
                cur_len, dec_attn, attention_mask, enc_pos, dec_pos = model._prepare_kwargs_for_next_canvas(
                    attention_mask=attention_mask, decoder_attention_mask=dec_attn, decoder_position_ids=dec_pos,
                    canvas_length=Lc, cur_len=cur_len)
        if not record:
            vis = visible(final_tok, final_tok >= 0, end)
            return decode(lm.tokenizer, final_tok.cpu().numpy(), vis.cpu().numpy())
        grid.extend([grid[-1]] * (G - len(grid)))  # canvases never run: every sequence had ended
        return self._assemble(lm, prompts, [grid[s] for s in slots], layers, end,
                              {"canvases": C, "canvas_length": Lc, "denoising_steps": S, "grid_slots": slots})

    @staticmethod
    def _canvas_records(steps, stop, S, final_tok, lo, hi, L, fin_pool) -> list[dict]:
        """The S grid records of one canvas: row b shows step k's accepted samples and draft while k < stop[b], and
        the finalized canvas from its stop step on."""
        B = final_tok.shape[0]
        rest = torch.full((B, L - hi), -1, dtype=torch.long, device=final_tok.device)
        out = []
        for k in range(S):
            final = k >= stop
            if k < len(steps) and not bool(final.all()):
                st = steps[k]
                tok = _where_rows(final, final_tok[:, lo:hi], st["tok"])
                pred = _where_rows(final, final_tok[:, lo:hi], st["draft"])
                pool = None if fin_pool is None else \
                    {key: _where_rows(final, fin_pool[key], st["pool"][key]) for key in fin_pool}
            else:
                tok = pred = final_tok[:, lo:hi]
                pool = fin_pool
            rec = {"tokens": torch.cat([final_tok[:, :lo], tok, rest], 1),
                   "pred": torch.cat([final_tok[:, :lo], pred, rest], 1)}
            if pool is not None:
                rec.update(pool)
            out.append(rec)
        return out

    def _assemble(self, lm, prompts, recs: list[dict], layers, end, info: dict) -> TraceSet:
        st = {k: torch.stack([r[k] for r in recs], dim=1) for k in recs[0]}
        tokens, pred = st["tokens"], st["pred"]
        done = tokens >= 0
        vis = visible(tokens, done, end)
        pred_vis = (torch.isin(pred, end).long().cumsum(-1) == 0) & (pred >= 0)
        tokens_np, vis_np = tokens.cpu().numpy(), vis.cpu().numpy()
        B, T = tokens.shape[:2]
        step = decode(lm.tokenizer, tokens_np, vis_np)
        pred_t = decode(lm.tokenizer, pred.cpu().numpy(), pred_vis.cpu().numpy())
        runs = decode_runs(lm.tokenizer, tokens_np, vis_np, step)
        cut = lambda xs: [xs[b * T:(b + 1) * T] for b in range(B)]  # noqa: E731
        step_texts = cut(step)
        want = self.poolings or BLOCK_POOLINGS
        return TraceSet(prompts=list(prompts), tokens=tokens_np.astype(np.int32), committed=done.cpu().numpy(),
                        predictions=pred.cpu().numpy().astype(np.int32),
                        pooled={k: st[k].cpu().numpy().astype(np.float32) for k in want}, layers=list(layers),
                        texts=[s[-1] for s in step_texts], step_texts=step_texts, pred_texts=cut(pred_t),
                        empty=st["empty"].cpu().numpy().astype(bool),
                        meta={"sampler": self.name, "capture": self.capture, **info}, step_runs=cut(runs))


def make_block_diffusion_sampler(name: str, **kw) -> BlockDiffusionSampler:
    """``entropy_bound`` with an experiment's common settings: ``block_length`` may only be None or ``gen_length``
    (one block: the canvas length is the model's), ``temperature`` only 0 (srilib's default; DiffusionGemma always
    samples, with its own ``t_max`` -> ``t_min`` schedule)."""
    if name not in BLOCK_DIFFUSION_NAMES:
        raise ValueError(f"unknown block-diffusion sampler {name!r}; use one of {', '.join(BLOCK_DIFFUSION_NAMES)}")
    block = kw.pop("block_length", None)
    if block not in (None, kw.get("gen_length")):
        raise ValueError(f"{name}: DiffusionGemma's block is its canvas (canvas_length in the model configuration); "
                         f"drop block_length={block}")
    temperature = kw.pop("temperature", 0.0)
    if temperature:
        raise ValueError(f"{name}: DiffusionGemma samples with its own temperature schedule; set t_min / t_max "
                         f"instead of temperature={temperature}")
    return BlockDiffusionSampler(**kw)
