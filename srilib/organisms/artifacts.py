"""Cache directories built once: atomically and under an inter-process lock (the organisms' and the v3 pair's
trained models)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive inter-process lock (POSIX ``flock``; a no-op where it does not exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; two processes may then train the same artifact twice
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(out: Path, build) -> Path:
    """``out`` built by ``build(tmp)`` into a temporary directory and renamed atomically, under a lock, so that
    parallel processes that need the same artifact train it once (the others wait and reuse it)."""
    if (out / "DONE").exists():
        return out
    with _lock(out.parent / ".locks" / f"{out.name}.lock"):
        if (out / "DONE").exists():
            return out
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            (tmp / "DONE").write_text(json.dumps({"key": out.name}))
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out
