"""Atomic writes, one implementation for the project: a file or a whole directory appears complete or not at all.

* :func:`atomic_write_bytes` -- a file via a temporary sibling, fsync and an atomic rename.
* :func:`atomic_replace_dir` -- a directory built into a temporary sibling and renamed into place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_replace_dir(path, build: Callable[[Path], None]) -> Path:
    """Directory ``path`` made by ``build(tmp)`` in a fresh temporary sibling, then renamed into place atomically.

    Readers never see a half-built directory. If ``path`` exists by the time the build finishes (another process
    finished first), that directory is kept and this build is discarded. On any error the temporary directory is
    removed and the error propagates. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        build(tmp)
        if path.exists():  # another process finished first: keep its directory
            shutil.rmtree(tmp)
        else:
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.is_dir():  # not the race above: a real failure
                    raise
                shutil.rmtree(tmp)  # lost the race between the check and the rename
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


__all__ = ["atomic_write_bytes", "atomic_replace_dir"]
