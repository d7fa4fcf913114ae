"""Random Search (Andriushchenko, Croce and Flammarion, "Jailbreaking leading safety-aligned LLMs with simple
adaptive attacks", 2024), the paper's adaptive suffix attack (paper, Tables 2 and 3), re-implemented on token ids.

The default is the published open-weight configuration (:data:`srilib.adaptive.rs_data.PUBLISHED`, from the
authors' ``experiments/exps_llama3_8b.sh``: ``--n-tokens-adv 25 --n-tokens-change-max 4 --schedule_prob
--judge-max-n-calls 10 --n-restarts 10 --n-iterations 10000``); every departure is a named option of
:class:`~srilib.adaptive.rs_data.RSBudget`, reported as "ours" by :meth:`RSBudget.recipe`:

1. A fixed prompt template with rules ("start your reply with ...", "never refuse ...") around the request
   (:data:`srilib.adaptive.rs_data.DEFAULT_TEMPLATE`, our wording), followed by an adversarial suffix of
   ``n_tokens_adv`` tokens. Its initial value is ``" !"`` repeated, or, with ``self_transfer`` (published: the
   authors start each model's runs from a suffix found on earlier requests, which their README calls key to their
   success rates), the suffix of the latest earlier request of the run whose search succeeded.
2. The objective is the log-probability of the target's first token ("Sure"; the larger of "Sure" and
   " Sure" when the tokenizer has both) as the first token of the reply, given the chat-formatted prompt.
3. Each iteration changes ``n`` contiguous suffix tokens at a random position to random tokens of the target's
   vocabulary (special tokens excluded), and keeps the change iff the objective rises strictly. ``n`` follows
   ``schedule``: ``"prob"`` (published for open-weight targets) by the best target probability so far,
   ``n_tokens_change_max`` up to 0.01, /2 up to 0.1, /4 above; ``"fixed"`` by iteration
   (``n_tokens_change_max`` for iterations 1-10, halved up to 25, quartered up to 50, /8 up to 100, /16 up to
   500, /32 after, at least 1); ``"constant"``. The published code scores one candidate per iteration
   (``n_candidates=1``); more, scored in batched forward passes keeping the best, is ours. The substituted run
   never runs past the end of the suffix (the published code lets it lengthen the suffix).
4. Stopping, ``stop="judge"`` (published): once the best target probability of the restart exceeds
   ``RSSettings.stop_prob`` (0.1, the published threshold for open-weight targets), each iteration's candidate
   prompt gets a reply from the target (``respond``: the run's own sampler); a reply that starts with the target
   word is judged (``judge``), and the restart ends when the judge says jailbroken or after ``judge_max_calls``
   judge calls. A restart that spends its iterations has its best prompt's reply judged once. ``stop="argmax"``
   (ours): stop as soon as the target token is the argmax, no reply generated.
5. Restarts, ``restarts="independent"`` (published): each begins again from the initial suffix, the search ends at
   the first restart the judge confirms, and that restart's prompt is returned (else the last restart's).
   ``"best"`` (ours): the best prompt by objective over all restarts.

Not reproduced: the published search samples the target's judged replies at temperature 1 (here: the run's
sampler, greedy), stops early when the target is out of the API's top-5 log-probabilities (open-weight targets
always give a log-probability), and uses GPT-4 as judge (here: the profile's judge).

Diffusion LMs (``lm.kind == "dlm"``): the objective is the log-probability of the target token at the *first
canvas position* of a fully masked response canvas of ``gen_length`` positions, read from one
:func:`srilib.models.mask_predict` pass (the mask token itself is excluded from the softmax, as the samplers never
propose it). This is our choice for DLMs; the paper does not state one for its Random Search runs. A uniform-noise
diffusion model (DiffusionGemma) has no mask token: its objective is its causal encoder's log-probability of the
target as the first reply token (:func:`.rs_objective.objective_view`, also our choice).

Suffixes are searched in token space but the attack's output is text: a candidate is only scored when
``lm.encode(template + decode(suffix))`` gives back exactly the scored token ids (chat prefix, the suffix, chat
suffix), so the recorded objective is the objective of the returned prompt string (candidates that do not survive
the round trip are redrawn up to 8 times, then dropped and counted). Results go through
:class:`srilib.adaptive.cache.AttackCache` per request (the key holds the initial suffix, so a self-transferred
start never reuses a result searched from another start).

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
from .rs_objective import Layout, Scorer, allowed_token_ids, target_token_ids

ATTACK = "random_search"


# --------------------------------------------------------------------------------------------- the search

def _propose(cur: list[int], n: int, B: int, gen: torch.Generator, allowed: torch.Tensor, layout: Layout,
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
                   respond: Callable[[list[str]], list[str]] | None = None, judge=None,
                   init_ids: Sequence[int] | None = None, init_from: str | None = None) -> RSRecord:
    """Random Search for one request (no cache; see :func:`run_random_search`). ``init_ids``: the initial suffix
    (a self-transferred one, found on the request ``init_from``); None: ``settings.init`` repeated."""
    t0 = time.perf_counter()
    base = settings.render(request)
    layout = Layout(lm, base, settings, budget.n_tokens_adv)
    if init_ids is not None:
        init_ids = [int(i) for i in init_ids]
        if len(init_ids) != budget.n_tokens_adv or not layout.valid([init_ids])[0]:
            init_ids, init_from = None, None  # does not fit this request's layout: the default initial suffix
    init = list(init_ids) if init_ids is not None else list(layout.init)
    tids = target_token_ids(lm.tokenizer, budget.target)
    scorer = Scorer(lm, layout, tids, settings, settings.prefix_cache)
    allowed = allowed_token_ids(lm)
    gen = torch.Generator().manual_seed(request_seed(seed, request))
    bs = settings.batch_size
    by_judge = budget.stop == "judge"
    independent = budget.restarts == "independent"
    judge_calls: list[dict] = []
    restarts: list[dict] = []

    def entry(g, obj, ids, hit, why):
        return {"iteration": g, "objective": float(obj), "suffix_ids": list(map(int, ids)),
                "suffix_text": layout.text(ids), "argmax": bool(hit), "why": why}

    def judged(g, r, obj, ids, why, need_target: bool) -> bool | None:
        """Generate the reply to the prompt with suffix ``ids`` and judge it (the published code judges a reply
        inside the loop only when it starts with the target). Returns the verdict, or None when not judged."""
        reply = list(respond([base + layout.text(ids)]))[0]
        if need_target and not reply.strip().startswith(budget.target):
            judge_calls.append({"iteration": g, "restart": r, "objective": float(obj), "response": reply,
                                "jailbroken": None, "why": "reply does not start with the target: not judged"})
            return None
        verdict = bool(np.asarray(judge.judge([request], [reply]))[0])
        judge_calls.append({"iteration": g, "restart": r, "objective": float(obj), "response": reply,
                            "jailbroken": verdict, "why": why})
        return verdict

    init_obj, init_hit = scorer([init], bs)
    init_obj, init_hit = float(init_obj[0]), bool(init_hit[0])
    best = (init_obj, list(init), init_hit)  # over all restarts ("best"); the held prompt of a restart otherwise
    improvements = [entry(0, init_obj, init, init_hit, "init")]
    trajectory, cand_best = [init_obj], [init_obj]
    n_dropped, g = 0, 0
    reason = "argmax" if (not by_judge and settings.early_stop and init_hit) else None
    final = best
    for r in range(budget.n_restarts):
        if reason:
            break
        cur_obj, cur, cur_hit = init_obj, list(init), init_hit
        if r > 0 and independent:  # held from the restart's first iteration on (the last restart's is held up to g)
            improvements.append(entry(g + 1, init_obj, init, init_hit, "restart"))
        n_calls, end, it = 0, "budget", 0
        for it in range(1, budget.n_iterations + 1):
            g += 1
            n = n_to_change(budget, it, math.exp(cur_obj))
            # the published early-stopping condition reads the best probability before this iteration's query
            judge_now = by_judge and settings.early_stop and math.exp(cur_obj) > settings.stop_prob
            cands, dropped = _propose(cur, n, budget.n_candidates, gen, allowed, layout, settings.max_redraws)
            n_dropped += dropped
            top = None  # every candidate dropped by the round trip
            if cands:
                objs, hits = scorer(cands, bs)
                j = int(np.argmax(objs))  # first of ties: deterministic
                top = float(objs[j])
                cand = (top, list(cands[j]), bool(hits[j]))
                if judge_now:
                    verdict = judged(g, r, top, cand[1], "in the loop", need_target=True)
                    if verdict is not None:
                        n_calls += 1
                        if verdict:
                            reason, end, final = "judge", "judge", cand
                        elif n_calls >= budget.judge_max_calls:
                            end = "judge_max_calls"
                if top > cur_obj:
                    cur_obj, cur, cur_hit = cand
                    if independent or cur_obj > best[0]:
                        improvements.append(entry(g, cur_obj, cur, cur_hit, "improved"))
                    if cur_obj > best[0]:
                        best = (cur_obj, list(cur), cur_hit)
                    if not by_judge and settings.early_stop and cur_hit:
                        reason, end, final = "argmax", "argmax", (cur_obj, list(cur), cur_hit)
                if reason and final[1] != (cur if independent else best[1]):
                    improvements.append(entry(g, *final, f"stop:{reason}"))
            trajectory.append(cur_obj if independent else best[0])
            cand_best.append(top)
            if reason or end == "judge_max_calls":
                break
        if by_judge and not reason and end != "judge_max_calls" and settings.early_stop:
            # a restart that ran out of iterations: its best prompt's reply is judged once (published)
            if judged(g, r, cur_obj, cur, "end of restart", need_target=False):
                reason, end, final = "judge", "judge", (cur_obj, list(cur), cur_hit)
        restarts.append({"restart": r, "end": end, "iterations": it})
        if not reason and independent:
            final = (cur_obj, list(cur), cur_hit)
    if not reason and not independent:
        final = best
    obj, ids, hit = final
    text = layout.text(ids)
    return RSRecord(request=request, prompt=base + text, suffix_ids=list(map(int, ids)), suffix_text=text,
                    objective=float(obj), target_argmax=bool(hit), iterations_used=g, stopped_early=bool(reason),
                    stop_reason=reason or "budget", trajectory=trajectory, candidate_best=cand_best,
                    improvements=improvements, judge_calls=judge_calls, n_scored=scorer.n_scored,
                    n_dropped=n_dropped, seconds=time.perf_counter() - t0, restarts=restarts,
                    init_ids=list(map(int, init)), init_from=init_from)


def request_key(lm, request: str, budget: RSBudget, settings: RSSettings, seed: int, *,
                respond_key: str | None = None, judge_key: str | None = None,
                init_ids: Sequence[int] | None = None) -> str:
    """Cache key of one request's search: model identity, request, budget and recipe, settings, seed, the
    target/judge callables of a judge-confirmed stop (if any), the initial suffix when it is a self-transferred
    one, and the producing source code."""
    return make_key(ATTACK, {"model": model_identity(lm), "request": request, "budget": asdict(budget),
                             "settings": asdict(settings), "seed": int(seed), "respond": respond_key,
                             "judge": judge_key, "init_ids": None if init_ids is None else list(map(int, init_ids))})


def run_random_search(lm, requests: Sequence[str], budget: RSBudget = RSBudget(), settings: RSSettings = RSSettings(),
                      *, seed: int = 0, respond: Callable[[list[str]], list[str]] | None = None, judge=None,
                      respond_key: str | None = None, judge_key: str | None = None, cache=None,
                      progress: bool | None = None, desc: str | None = None) -> RSResult:
    """Random Search on every request, in order (see the module docstring), through the per-request cache.

    Parameters
    ----------
    lm : LoadedModel
        The target (``kind`` "ar" or "dlm").
    requests : list of str
        The original requests. With ``budget.self_transfer`` a request starts from the suffix of the latest earlier
        request whose search succeeded, so the order matters (and the initial suffix is in each request's key).
    budget, settings : RSBudget, RSSettings
        Budget and recipe (default: the published open-weight recipe and budget), everything else.
    seed : int
        Run seed; each request's generator is seeded from (seed, request text).
    respond, judge :
        ``respond(prompts) -> replies`` (e.g. :class:`srilib.adaptive.Responder`: the target under its sampler) and
        a srilib Judge, both needed by ``budget.stop="judge"`` (the published judge-confirmed stop) and refused
        under ``stop="argmax"``. ``respond`` needs a ``key`` (or ``respond_key=``) for the cache; a judge is keyed by
        its ``name`` and ``describe()`` (or ``judge_key=``).
    cache : None (default srilib cache dir), False (no cache), a path, or an AttackCache.
    progress : None shows a bar unless TQDM_DISABLE=1.
    """
    import os

    from tqdm.auto import tqdm

    requests = list(requests)
    if not requests:
        raise ValueError("run_random_search got no requests; pass at least one")
    if budget.stop == "judge" and (respond is None or judge is None):
        raise ValueError("RSBudget(stop='judge') (the published judge-confirmed stop) needs both respond= (the "
                         "target's replies, e.g. srilib.adaptive.Responder) and judge=; pass them, or "
                         "RSBudget(stop='argmax') for srilib's stop on the argmax (no replies generated)")
    if budget.stop == "argmax" and (respond is not None or judge is not None):
        raise ValueError("RSBudget(stop='argmax') generates no replies: drop respond= and judge=, or use "
                         "stop='judge' (the published judge-confirmed stop)")
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
    transfer: tuple[list[int], str] | None = None  # (suffix ids, request) of the latest success
    for req in requests:
        init_ids, init_from = transfer if (budget.self_transfer and transfer) else (None, None)
        key = request_key(lm, req, budget, settings, seed, respond_key=rkey, judge_key=jkey, init_ids=init_ids)
        keys.append(key)
        if store is not None and store.has(ATTACK, key):
            rec = RSRecord(**store.load(ATTACK, key))
        else:
            rec = search_request(lm, req, budget, settings, seed, respond=respond, judge=judge, init_ids=init_ids,
                                 init_from=init_from)
            rec.key = key
            if store is not None:
                store.save(ATTACK, key, asdict(rec))
        records.append(rec)
        if rec.stop_reason in ("judge", "argmax"):
            transfer = (list(rec.suffix_ids), req)
        bar.update(1)
        bar.set_postfix(best=f"{rec.objective:.2f}", it=rec.iterations_used)
    bar.close()
    meta = {"attack": ATTACK, "model": lm.name, "model_identity": model_identity(lm), "budget": asdict(budget),
            "settings": asdict(settings), "seed": int(seed), "keys": keys, "respond": rkey, "judge": jkey,
            "recipe": budget.recipe(), "target_tokens": target_token_ids(lm.tokenizer, budget.target),
            "objective": ("log p(target token at canvas position 0 | prompt, fully masked canvas of "
                          f"{settings.gen_length})") if lm.kind == "dlm" else
            "log p(first reply token = target token | chat-formatted prompt)"}
    return RSResult(requests=requests, prompts=[r.prompt for r in records], records=records, meta=meta)


__all__ = ["run_random_search", "search_request", "request_key"]
