"""Wall-clock timing shared by the benchmarks, the detector chapter and ``make organisms``, and the CPU's name that
every timing is printed beside."""
from __future__ import annotations

import platform
import time
from pathlib import Path

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


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (Linux), else platform.processor(), else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
