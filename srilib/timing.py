"""Wall-clock timing shared by the overhead benchmark and the detector chapter."""
from __future__ import annotations

import time

import numpy as np


def median_seconds(fn, repeats: int, warmup: bool = True, slow: float | None = None) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` (after one untimed warm-up call unless ``warmup=False``).

    With ``slow`` set, timing stops after the first call that takes longer than ``slow`` seconds (one long call
    is already a stable measurement; the median of the calls made so far is returned).
    """
    if warmup:
        fn()
    t: list[float] = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
        if slow is not None and t[-1] > slow:
            break
    return float(np.median(t))
