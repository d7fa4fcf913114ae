"""Fixtures shared by several test files."""
import pytest


@pytest.fixture
def one_thread():
    """Tiny models run much faster on one thread (no OpenMP contention on a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
