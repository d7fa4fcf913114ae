"""Run the benchmark scripts (``benchmarks/*.py``) one after another: ``python -m srilib bench [NAME ...]``.

Each script measures its ratios within one run and prints them with the CPU model; this runner only starts them
and reports which failed.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable


def run_benchmarks(root: Path, names: Iterable[str] = ()) -> int:
    """Run ``benchmarks/*.py`` (or the named ones) one after another; returns the number that failed."""
    files = sorted(p for p in (Path(root) / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    names = list(names)
    if names:
        files = [p for p in files if p.stem in names]
        unknown = set(names) - {p.stem for p in files}
        if unknown:
            raise ValueError(f"no benchmarks/{'/'.join(sorted(unknown))}.py")
    if not files:
        print("bench: no benchmarks/*.py yet")
        return 0
    failed = 0
    for f in files:
        print(f"bench: {f.name} ...", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(f)], cwd=root)
        failed += r.returncode != 0
        print(f"bench: {f.name} {'ok' if r.returncode == 0 else f'FAILED (exit {r.returncode})'} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return failed
