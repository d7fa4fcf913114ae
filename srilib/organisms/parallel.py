"""Train organisms in parallel processes: independent groups at once, each group in order (one that starts from
another trains after it). Used by ``make book`` (only what ships no weights) and ``make organisms`` (all)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence


def training_groups(names: Sequence[str]) -> list[list[str]]:
    """Organisms grouped so that one that starts from another (``init_from``) trains after it, in the same group;
    different groups are independent and can train in parallel."""
    from .recipe import get_config

    groups: dict[str, list[str]] = {}
    for n in names:
        chain, cfg = [n], get_config(n)
        while cfg.init_from:
            chain.insert(0, cfg.init_from)
            cfg = get_config(cfg.init_from)
        g = groups.setdefault(chain[0], [])
        g += [c for c in chain if c not in g]
    return list(groups.values())


def _last_progress(log: Path) -> str:
    """The last progress-bar state written to a log (tqdm separates updates with carriage returns)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 2000))
            parts = [p.strip() for p in f.read().decode("utf-8", "replace").replace("\r", "\n").split("\n")]
    except OSError:
        return ""
    return next((p for p in reversed(parts) if p), "")


def train_in_processes(groups: Sequence[Sequence[str]], root: Path, *, jobs: int = 2,
                       heartbeat: float = 60.0) -> dict[str, float]:
    """Train groups of organisms (each group in order, in its own process), up to ``jobs`` processes at once.

    Each process uses one torch thread (``SRILIB_TRAIN_THREADS``) and logs its progress bar to
    ``$SRILIB_CACHE/organisms/train-<last name>.log``; a line per group is printed every ``heartbeat`` seconds.
    Already trained organisms cost one import each. Returns group -> wall seconds.
    """
    if not groups:
        return {}
    from ..traces import default_cache_dir

    logdir = default_cache_dir() / "organisms"
    logdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TQDM_DISABLE": "", "SRILIB_TRAIN_THREADS": os.environ.get("SRILIB_TRAIN_THREADS", "1")}
    pending, running, done = [list(g) for g in groups], [], {}
    t0 = last = time.perf_counter()
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                g = pending.pop(0)
                log = logdir / f"train-{g[-1]}.log"
                code = ("from srilib.organisms import ensure\n"
                        f"for n in {g!r}:\n    print(n, ensure(n), flush=True)\n")
                fh = open(log, "w")
                proc = subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                        cwd=root)
                running.append((g, proc, fh, log, time.perf_counter()))
            time.sleep(0.5)
            for item in list(running):
                g, proc, fh, log, start = item
                if proc.poll() is None:
                    continue
                fh.close()
                running.remove(item)
                if proc.returncode:
                    raise RuntimeError(f"training {' -> '.join(g)} failed (exit {proc.returncode}); its log: {log}")
                done[" -> ".join(g)] = round(time.perf_counter() - start, 1)
                print(f"organisms: {' -> '.join(g)} ready after {done[' -> '.join(g)]:.0f} s", flush=True)
            if running and time.perf_counter() - last >= heartbeat:
                last = time.perf_counter()
                for g, *_, log, _s in running:
                    print(f"organisms [{last - t0:.0f} s]: {_last_progress(log) or ' -> '.join(g) + ' starting'}",
                          flush=True)
    finally:
        for _g, proc, fh, *_ in running:
            proc.terminate()
            fh.close()
    return done
