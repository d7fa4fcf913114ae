"""Random Search (Andriushchenko, Croce and Flammarion, "Jailbreaking leading safety-aligned LLMs with simple
adaptive attacks", 2024), the paper's adaptive suffix attack (paper, Tables 2 and 3), re-implemented on token ids.

The recipe (our implementation of the published one):

1. A fixed prompt template with rules ("start your reply with ...", "never refuse ...") around the request
   (:data:`srilib.adaptive.rs_data.DEFAULT_TEMPLATE`, our wording), followed by an adversarial suffix of ``n_tokens_adv`` tokens,
   initialised to ``" !"`` repeated (the published default initialisation).
2. The objective is the log-probability of the target's first token ("Sure"; the larger of "Sure" and
   " Sure" when the tokenizer has both) as the first token of the reply, given the chat-formatted prompt.
3. Each iteration changes ``n`` contiguous suffix tokens at a random position to random tokens of the target's
   vocabulary (special tokens excluded), and keeps the change iff the objective rises strictly. ``n`` follows
   the published schedule (``schedule="fixed"``: ``n_tokens_change_max`` for iterations 1-10, halved up to 25,
   quartered up to 50, /8 up to 100, /16 up to 500, /32 after, at least 1; ``"prob"``: by the current target
   probability, /1 up to 0.01, /2 up to 0.1, /4 above; ``"constant"``). Unlike the published code, which scores one
   candidate per iteration, each iteration scores ``n_candidates`` candidates in batched forward passes and keeps
   the best of them (``n_candidates=1`` is the published recipe); the substituted run never runs past the end of
   the suffix (the published code lets it lengthen the suffix).
4. Restarts begin again from the initial suffix; the best over all restarts is kept.
5. Early stop as soon as the target token is the argmax of the first reply token. With a ``judge`` (and a
   ``respond`` callable giving the target's reply), that prompt's reply is then judged and the search stops when
   the judge says jailbroken or after ``judge_max_calls`` judge calls (the published default is one call).

Diffusion LMs (``lm.kind == "dlm"``): the objective is the log-probability of the target token at the *first
canvas position* of a fully masked response canvas of ``gen_length`` positions, read from one
:func:`srilib.dlm.mask_predict` pass (the mask token itself is excluded from the softmax, as the samplers never
propose it). This is our choice for DLMs; the paper does not state one for its Random Search runs.

Suffixes are searched in token space but the attack's output is text: a candidate is only scored when
``lm.encode(template + decode(suffix))`` gives back exactly the scored token ids (chat prefix, the suffix, chat
suffix), so the recorded objective is the objective of the returned prompt string (candidates that do not survive
the round trip are redrawn up to 8 times, then dropped and counted). Results go through
:class:`srilib.adaptive.cache.AttackCache` per request.

This module holds the search itself (:func:`run_random_search` through the cache, :func:`search_request` for one
request); the budget, settings and results are in :mod:`.rs_data`, the objective's scoring and the transfer of
prompts to another model in :mod:`.rs_objective`.
"""
from __future__ import annotations
from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Callable, Sequence

import numpy as np
import torch

from .cache import (AttackCache, as_cache, callable_identity, make_key, model_identity, request_seed)
from .rs_data import RSBudget, RSRecord, RSResult, RSSettings, n_to_change
from .rs_objective import _Layout, _Scorer, allowed_token_ids, target_token_ids

ATTACK = "random_search"


# --------------------------------------------------------------------------------------------- the search

def _propose(cur: list[int], n: int, B: int, gen: torch.Generator, allowed: torch.Tensor, layout: _Layout,
             max_redraws: int) -> tuple[list[list[int]], int]:
    """``B`` candidates: ``n`` contiguous random tokens at a random start; redraws those that do not survive the
    round trip (or equal ``cur``). Returns (candidates, number dropped)."""
    L = len(cur)

    def draw() -> list[int]:
        start = int(torch.randint(0, L - n + 1, (1,), generator=gen))
        sub = allowed[torch.randint(0, len(allowed), (n,), generator=gen)].tolist()
        return cur[:start] + sub + cur[start + n:]

    slots: list[list[int] | None] = [draw() for _ in range(B)]
    todo = list(range(B))
    for attempt in range(max_redraws + 1):
        ok = layout.valid([slots[i] for i in todo])
        bad = [i for i, v in zip(todo, ok) if not v or slots[i] == cur]
        if not bad:
            todo = []
            break
        if attempt == max_redraws:
            for i in bad:
                slots[i] = None
            todo = bad
            break
        for i in bad:
            slots[i] = draw()
        todo = bad
    out = [s for s in slots if s is not None]
    return out, B - len(out)


def search_request(lm, request: str, budget: RSBudget, settings: RSSettings, seed: int, *,
                   respond: Callable[[list[str]], list[str]] | None = None, judge=None) -> RSRecord:
    """Random Search for one request (no cache; see :func:`run_random_search`)."""
    t0 = time.perf_counter()
    base = settings.render(request)
    layout = _Layout(lm, base, settings, budget.n_tokens_adv)
    tids = target_token_ids(lm.tokenizer, budget.target)
    scorer = _Scorer(lm, layout, tids, settings, settings.prefix_cache)
    allowed = allowed_token_ids(lm)
    gen = torch.Generator().manual_seed(request_seed(seed, request))
    bs = settings.batch_size
    judge_calls: list[dict] = []

    def entry(g, obj, ids, hit, why):
        return {"iteration": g, "objective": float(obj), "suffix_ids": list(map(int, ids)),
                "suffix_text": layout.text(ids), "argmax": bool(hit), "why": why}

    def stop_check(g, obj, ids, hit) -> str | None:
        """Early-stop decision for a prompt whose target token is the argmax."""
        if not hit or not settings.early_stop:
            return None
        if judge is None or respond is None:
            return "argmax"
        prompt = base + layout.text(ids)
        reply = list(respond([prompt]))[0]
        verdict = bool(np.asarray(judge.judge([request], [reply]))[0])
        judge_calls.append({"iteration": g, "objective": float(obj), "response": reply, "jailbroken": verdict})
        if verdict:
            return "judge"
        return "judge_max_calls" if len(judge_calls) >= settings.judge_max_calls else None

    init_obj, init_hit = scorer([layout.init], bs)
    init_obj, init_hit = float(init_obj[0]), bool(init_hit[0])
    best = (init_obj, list(layout.init), init_hit)
    improvements = [entry(0, init_obj, layout.init, init_hit, "init")]
    trajectory, cand_best = [init_obj], [init_obj]
    n_dropped, g = 0, 0
    reason = stop_check(0, init_obj, layout.init, init_hit)
    final = best
    for _r in range(budget.n_restarts):
        if reason:
            break
        cur_obj, cur, cur_hit = init_obj, list(layout.init), init_hit
        for it in range(1, budget.n_iterations + 1):
            g += 1
            n = n_to_change(budget, it, math.exp(cur_obj))
            cands, dropped = _propose(cur, n, budget.n_candidates, gen, allowed, layout, settings.max_redraws)
            n_dropped += dropped
            top = None  # every candidate dropped by the round trip
            if cands:
                objs, hits = scorer(cands, bs)
                j = int(np.argmax(objs))  # first of ties: deterministic
                top = float(objs[j])
                if objs[j] > cur_obj:
                    cur_obj, cur, cur_hit = float(objs[j]), cands[j], bool(hits[j])
                    if cur_obj > best[0]:
                        best = (cur_obj, list(cur), cur_hit)
                        improvements.append(entry(g, cur_obj, cur, cur_hit, "improved"))
                    reason = stop_check(g, cur_obj, cur, cur_hit)
                    if reason:
                        final = (cur_obj, list(cur), cur_hit)
                        if final[1] != best[1]:
                            improvements.append(entry(g, cur_obj, cur, cur_hit, f"stop:{reason}"))
            trajectory.append(best[0])
            cand_best.append(top)
            if reason:
                break
    if not reason:
        final = best
    obj, ids, hit = final
    text = layout.text(ids)
    return RSRecord(request=request, prompt=base + text, suffix_ids=list(map(int, ids)), suffix_text=text,
                    objective=float(obj), target_argmax=bool(hit), iterations_used=g, stopped_early=bool(reason),
                    stop_reason=reason or "budget", trajectory=trajectory, candidate_best=cand_best,
                    improvements=improvements, judge_calls=judge_calls, n_scored=scorer.n_scored,
                    n_dropped=n_dropped, seconds=time.perf_counter() - t0)


def request_key(lm, request: str, budget: RSBudget, settings: RSSettings, seed: int, *,
                respond_key: str | None = None, judge_key: str | None = None) -> str:
    """Cache key of one request's search: model identity, request, budget, settings, seed, the target/judge
    callables used for early stopping (if any) and the producing source code."""
    return make_key(ATTACK, {"model": model_identity(lm), "request": request, "budget": asdict(budget),
                             "settings": asdict(settings), "seed": int(seed), "respond": respond_key,
                             "judge": judge_key})


def run_random_search(lm, requests: Sequence[str], budget: RSBudget = RSBudget(), settings: RSSettings = RSSettings(),
                  *, seed: int = 0, respond: Callable[[list[str]], list[str]] | None = None, judge=None,
                  respond_key: str | None = None, judge_key: str | None = None, cache=None,
                  progress: bool | None = None,
                  desc: str | None = None) -> RSResult:
    """Random Search on every request (see the module docstring), through the per-request cache.

    Parameters
    ----------
    lm : LoadedModel
        The target (``kind`` "ar" or "dlm").
    requests : list of str
        The original requests.
    budget, settings : RSBudget, RSSettings
    seed : int
        Run seed; each request's generator is seeded from (seed, request text).
    respond, judge : optional
        ``respond(prompts) -> replies`` (e.g. :class:`srilib.adaptive.Responder`) and a srilib Judge: when both
        are given, a prompt whose target token is the argmax is only accepted once the judge says jailbroken (or
        after ``settings.judge_max_calls`` calls). ``respond`` needs a ``key`` (or ``respond_key=``) for the cache;
        a judge is keyed by its ``name`` and ``describe()`` (or ``judge_key=``).
    cache : None (default srilib cache dir), False (no cache), a path, or an AttackCache.
    progress : None shows a bar unless TQDM_DISABLE=1.
    """
    import os

    from tqdm.auto import tqdm

    requests = list(requests)
    if not requests:
        raise ValueError("run_random_search got no requests; pass at least one")
    if (respond is None) != (judge is None):
        raise ValueError("pass both respond= and judge= (judge-confirmed early stop) or neither (stop on argmax)")
    base_prompts = [settings.render(r) for r in requests]
    extra = settings.gen_length if lm.kind == "dlm" else 1
    lm.validate_prompts(base_prompts, reserve=extra + budget.n_tokens_adv * 2)
    rkey = callable_identity(respond, respond_key, "respond")
    jkey = callable_identity(judge, judge_key, "judge")
    store: AttackCache | None = as_cache(cache)
    if progress is None:
        progress = os.environ.get("TQDM_DISABLE", "").lower() in ("", "0", "false")
    records: list[RSRecord] = []
    keys = []
    bar = tqdm(total=len(requests), desc=desc or f"random search / {lm.name}", unit="request",
               disable=not progress)
    for req in requests:
        key = request_key(lm, req, budget, settings, seed, respond_key=rkey, judge_key=jkey)
        keys.append(key)
        if store is not None and store.has(ATTACK, key):
            rec = RSRecord(**store.load(ATTACK, key))
        else:
            rec = search_request(lm, req, budget, settings, seed, respond=respond, judge=judge)
            rec.key = key
            if store is not None:
                store.save(ATTACK, key, asdict(rec))
        records.append(rec)
        bar.update(1)
        bar.set_postfix(best=f"{rec.objective:.2f}", it=rec.iterations_used)
    bar.close()
    meta = {"attack": ATTACK, "model": lm.name, "model_identity": model_identity(lm), "budget": asdict(budget),
            "settings": asdict(settings), "seed": int(seed), "keys": keys, "respond": rkey, "judge": jkey,
            "target_tokens": target_token_ids(lm.tokenizer, budget.target),
            "objective": ("log p(target token at canvas position 0 | prompt, fully masked canvas of "
                          f"{settings.gen_length})") if lm.kind == "dlm" else
            "log p(first reply token = target token | chat-formatted prompt)"}
    return RSResult(requests=requests, prompts=[r.prompt for r in records], records=records, meta=meta)


__all__ = ["run_random_search", "search_request", "request_key"]
