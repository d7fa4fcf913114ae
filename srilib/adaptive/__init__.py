"""Adaptive attacks with a model in the loop (paper, Tables 2 and 3): Random Search and PAIR, seeded and cached.

- :func:`run_random_search` (:mod:`.random_search`): adversarial suffix search on token ids maximising the log-prob
  of the target's first token (AR) or of the target at canvas position 0 of a fully masked canvas (DLM);
  :func:`transfer` applies one model's prompts to another; :meth:`RSResult.prompts_at` gives the prompts held
  after any iteration budget (ASR against the budget without re-running the search).
- :func:`run_pair` (:mod:`.pair`): attacker model, target and 1-10 scorer in a loop, every query kept.

Both return the attacked prompts (one per request, usable as any prompt set) plus their logs, and store each
request's result in :class:`AttackCache` (``<srilib cache>/adaptive/``), keyed by everything that produced it.
"""
from .cache import AttackCache, adaptive_code_version
from .pair import (JudgeScorer, LLMScorer, PAIRBudget, PAIRRecord, PAIRResult, PAIRSettings, Responder,
                   chat_generate, parse_attacker, parse_rating, run_pair)
from .random_search import (RSBudget, RSRecord, RSResult, RSSettings, default_checkpoints, prompt_objective,
                            run_random_search, transfer)

__all__ = ["AttackCache", "adaptive_code_version",
           "RSBudget", "RSSettings", "RSRecord", "RSResult", "run_random_search", "prompt_objective", "transfer",
           "default_checkpoints",
           "PAIRBudget", "PAIRSettings", "PAIRRecord", "PAIRResult", "run_pair", "Responder", "JudgeScorer",
           "LLMScorer", "chat_generate", "parse_attacker", "parse_rating"]
