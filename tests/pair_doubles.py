"""PAIR attacker double shared by tests/test_adaptive.py and tests/test_pair.py (import with
``from pair_doubles import ...``)."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from srilib.adaptive import pair as P


class ScriptedAttacker:
    """Stands in for :func:`srilib.adaptive.chat.chat_generate` inside :mod:`srilib.adaptive.pair` (``install``).

    Each call to the attacker takes the next entry of ``script`` (one continuation after the prefill per
    conversation of the call, in order); once the script is used up, every conversation gets a valid JSON reply
    whose prompt carries a number drawn from the run's seeded generator (so the seed matters). Records every call
    as ``(conversations, prefill)`` in ``calls``. ``lm`` is the attacker object to pass to ``run_pair``."""

    lm = SimpleNamespace(name="scripted-attacker", kind="ar", device=torch.device("cpu"), fingerprint="scripted",
                         dtype_name="float32", system_prompt=None, chat_format="chat")

    def __init__(self, script=()):
        self.script = [list(c) for c in script]
        self.calls: list[tuple[list[list[dict]], str]] = []

    @staticmethod
    def valid(prefill: str, text: str) -> str:
        """A valid continuation of ``prefill`` whose prompt is ``text``."""
        return f'{text}"}}' if prefill.endswith('"prompt": "') else f'I change it.", "prompt": "{text}"}}'

    def __call__(self, lm, conversations, *, prefill="", max_new_tokens=200, temperature=0.0, top_p=1.0,
                 generator=None, stop_at=None):
        convs = [list(c) for c in conversations]
        self.calls.append((convs, prefill))
        k = len(self.calls) - 1
        if k < len(self.script):
            out = self.script[k]
            assert len(out) == len(convs), f"call {k}: scripted {len(out)} replies for {len(convs)} conversations"
            return list(out)
        draws = torch.randint(0, 10**6, (len(convs),), generator=generator).tolist()
        return [self.valid(prefill, f"attack {n}") for n in draws]

    def install(self, monkeypatch) -> "ScriptedAttacker":
        monkeypatch.setattr(P, "chat_generate", self)
        return self

    def systems(self, call: int = 0) -> list[str]:
        """The system prompt of each conversation of a call."""
        return [c[0]["content"] for c in self.calls[call][0]]


class ScriptedScorer:
    """Scores a query ``scores[n]`` for the n-th call's items (then 1); records every call."""

    key = "scripted"

    def __init__(self, per_call=()):
        self.per_call, self.calls = list(per_call), []

    def __call__(self, requests, prompts, responses):
        self.calls.append((list(requests), list(prompts), list(responses)))
        k = len(self.calls) - 1
        return list(self.per_call[k]) if k < len(self.per_call) else [1] * len(prompts)


def echo_respond(prompts):
    """Target double: a reply naming the prompt's start."""
    return [f"reply to {p[:12]}" for p in prompts]


echo_respond.key = "echo-double"
