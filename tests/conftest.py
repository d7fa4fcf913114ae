"""Fixtures and test doubles shared by several test files (import the doubles with ``from conftest import ...``)."""
import os
import sys

import numpy as np
import pytest

# One torch (OpenMP) thread for the whole session and the processes it starts, unless OMP_NUM_THREADS is set: the
# tests run tiny models, and on a busy 2-core machine torch's default pool spends most of its time waiting for a
# descheduled worker (measured under load: tests/test_reference_llada.py 155 s with two threads, 19 s with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported before this file (a plugin): the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


def run_of(label: str, kind: str):
    """A resolved run of an unregistered test model from its label and kind (``"m@low_confidence:b8", "dlm"``);
    srilib.experiment.resolve_run would look the model up in the registry."""
    from srilib.experiment import Run

    model, _, sampler = label.partition("@")
    name, _, block = sampler.partition(":")
    return Run(model, kind, name or ("ar" if kind == "ar" else "low_confidence"),
               int(block[1:]) if block else None)


@pytest.fixture
def one_thread():
    """Tiny models run much faster on one thread (no OpenMP contention on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
