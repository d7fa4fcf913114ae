"""What the on-disk stores rest on: atomic writes (a file or a whole directory appears complete or not at all) and
cache keys on behaviour (a hash of what code does, not of its bytes).

* :func:`atomic_write_bytes` -- a file via a temporary sibling, fsync and an atomic rename.
* :func:`atomic_replace_dir` -- a directory built into a temporary sibling and renamed into place.
* :func:`behaviour_hash` -- the syntax tree of source files or objects (functions, classes) with every docstring,
  every other bare string statement and every comment left out, without line numbers and with the leading
  underscore of private names dropped, so fixing prose, moving a function to another file or making a helper public
  keeps the key, and any change to what the code computes (a statement, a constant, an argument default) moves it.
  The tree is written out by :func:`normalised`, which skips empty and absent fields, so the key does not depend on
  fields that newer Pythons add with empty defaults (``type_params`` since 3.12). The trace store
  (:func:`srilib.traces.code_version`), the adaptive-attack cache and the organisms' recipe identity
  (:func:`srilib.organisms.train.code_version`) are built on it.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import os
import shutil
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable


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


# ---- cache keys on behaviour
_SKIPPED_FIELDS = {"kind", "type_comment"}  # Constant.kind ('u' prefix) and type comments compute nothing


def _is_string_statement(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def normalised(node: Any) -> str:
    """A stable text of a syntax tree: node types and non-empty fields, string statements (docstrings) dropped."""
    if isinstance(node, ast.AST):
        parts = []
        for name, value in ast.iter_fields(node):
            if name in _SKIPPED_FIELDS or value is None or (isinstance(value, list) and not value):
                continue
            if isinstance(value, list):
                value = [v for v in value if not _is_string_statement(v)]
            parts.append(f"{name}={repr(value) if isinstance(node, ast.Constant) else normalised(value)}")
        return f"{type(node).__name__}({','.join(parts)})"
    if isinstance(node, list):
        return "[" + ",".join(normalised(v) for v in node) + "]"
    if isinstance(node, str) and node.startswith("_") and not node.startswith("__"):  # an identifier
        return repr(node.lstrip("_"))  # a privacy mark computes nothing: making a helper public keeps the key
    return repr(node)


def source_of(item: Any) -> str:
    """The source text of a path (a file) or of an object ``inspect`` can read (function, class, module)."""
    if isinstance(item, (str, Path)):
        return Path(item).read_text(encoding="utf-8")
    return textwrap.dedent(inspect.getsource(item))


def behaviour_hash(*items: Any, extra: Any = None) -> str:
    """Twelve hex digits naming what ``items`` (files or objects, in order) compute; ``extra`` (a JSON-able value,
    e.g. module constants that are data, not code) is hashed beside them."""
    h = hashlib.sha256()
    for item in items:
        h.update(normalised(ast.parse(source_of(item))).encode())
        h.update(b"\0")
    if extra is not None:
        h.update(repr(extra).encode())
    return h.hexdigest()[:12]


__all__ = ["atomic_write_bytes", "atomic_replace_dir", "behaviour_hash", "normalised", "source_of"]
