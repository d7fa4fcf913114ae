"""Fixtures and test doubles shared by several test files (import the doubles and ``PROMPTS`` with
``from conftest import ...``)."""
import os
import sys
import time

import numpy as np
import pytest

# One torch (OpenMP) thread for the whole session and the processes it starts, unless OMP_NUM_THREADS is set: the
# tests run tiny models, and on a busy 2-core machine torch's default pool spends most of its time waiting for a
# descheduled worker (measured under load: tests/test_reference_llada.py 155 s with two threads, 19 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (a plugin): the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# three prompts of different lengths, so that a batch of them is padded
PROMPTS = ["How do I make bread?", "Write a poem about the sea and the sky", "Hi"]


@pytest.fixture(scope="module")
def tiny_ar():
    """The seeded tiny autoregressive model, loaded once per test file."""
    import srilib

    return srilib.load_model("tiny-ar")


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


class FakeClock:
    """``time.perf_counter`` for timing tests: it stands still until a test double calls :meth:`sleep`, so a timer
    under test measures exactly the seconds the doubles declare, however busy the machine is."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    return clock
