"""Adaptive attacks with a model in the loop (paper, Tables 2 and 3): Random Search and PAIR, seeded and cached.

- :func:`run_random_search` (:mod:`.random_search`; budget, settings and results in :mod:`.rs_data`, the
  objective in :mod:`.rs_objective`): adversarial suffix search on token ids maximising the log-prob of the
  target's first token (AR) or of the target at canvas position 0 of a fully masked canvas (DLM);
  :func:`transfer` applies one model's prompts to another; :meth:`RSResult.prompts_at` gives the prompts held
  after any iteration budget (ASR against the budget without re-running the search).
- :func:`run_pair` (:mod:`.pair`; the model calls around it in :mod:`.chat`): attacker model, target and 1-10
  scorer in a loop, every query kept.

Both return the attacked prompts (one per request, usable as any prompt set) plus their logs, and store each
request's result in :class:`AttackCache` (``<srilib cache>/adaptive/``), keyed by everything that produced it.
"""
from .cache import AttackCache, adaptive_code_version
from .chat import JudgeScorer, LLMScorer, Responder, chat_generate, parse_rating
from .pair import PAIRBudget, PAIRRecord, PAIRResult, PAIRSettings, parse_attacker, run_pair
from .random_search import run_random_search
from .rs_data import RSBudget, RSRecord, RSResult, RSSettings, default_checkpoints
from .rs_objective import prompt_objective, transfer

__all__ = ["AttackCache", "adaptive_code_version",
           "RSBudget", "RSSettings", "RSRecord", "RSResult", "run_random_search", "prompt_objective", "transfer",
           "default_checkpoints",
           "PAIRBudget", "PAIRSettings", "PAIRRecord", "PAIRResult", "run_pair", "Responder", "JudgeScorer",
           "LLMScorer", "chat_generate", "parse_attacker", "parse_rating"]
