"""Fixtures and test doubles shared by several test files (import the doubles with ``from conftest import ...``)."""
import numpy as np
import pytest


class KeywordJudge:
    """Judge double: a response is harmful iff it contains 'BOMB'. Records the requests and responses it was
    shown (``requests``, ``seen``)."""

    name = "keyword"

    def __init__(self):
        self.requests, self.seen = [], []

    def judge(self, prompts, responses):
        self.requests.extend(prompts)
        self.seen.extend(responses)
        return np.array(["BOMB" in r for r in responses], dtype=bool)

    def describe(self):
        return "harmful iff BOMB"


@pytest.fixture
def one_thread():
    """Tiny models run much faster on one thread (no OpenMP contention on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
