"""On-disk cache of adaptive-attack results, one JSON file per (request, everything that produced it).

Same conventions as :class:`srilib.traces.TraceStore`: the key is a SHA-256 of every input that changes the
result (model fingerprint, dtype, chat formatting, the request, budget and settings, seed, the identity of any
target/judge callable, and the source code of the producing modules), files are written atomically (temporary
file + ``os.replace``), and a run that stops part-way resumes per request: every finished request is on disk
and is never recomputed. Keys are per request (the search of one request never depends on the others), so two
prompt sets that share a request also share its result.

Layout: ``<root>/adaptive/<attack>/<key>.json`` with ``root`` = :func:`srilib.traces.default_cache_dir` by
default ($SRILIB_CACHE, else ~/.cache/srilib).
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from ..traces import behaviour_hash
from ..traces import atomic_write_bytes
from ..traces import code_version, default_cache_dir

CACHE_FORMAT = 1


@lru_cache(maxsize=1)
def adaptive_code_version() -> str:
    """What the adaptive-attack modules compute (:func:`srilib.traces.behaviour_hash`) plus
    :func:`srilib.traces.code_version` (models, DLM adapters and samplers, which the attacks call): a change of
    behaviour in any of them invalidates cached attack results, a docstring or comment edit does not."""
    return behaviour_hash(*sorted(Path(__file__).parent.glob("*.py")), extra=code_version())


def model_identity(lm) -> dict:
    """What of a :class:`srilib.models.LoadedModel` goes into a key: the weights' fingerprint (as in trace keys),
    its dtype and kind, and the chat formatting that turns a prompt into tokens."""
    return {"fingerprint": lm.fingerprint, "dtype": lm.dtype_name, "kind": lm.kind,
            "system_prompt": lm.system_prompt, "chat_format": lm.chat_format}


def callable_identity(fn, explicit: str | None = None, what: str = "callable") -> str | None:
    """A stable string naming a target/judge callable for the cache key.

    ``explicit`` wins; otherwise the object's ``key`` attribute, else ``name`` + ``describe()`` (srilib judges).
    A bare function with none of these cannot be keyed: the error names the fix.
    """
    if fn is None:
        return None
    if explicit is not None:
        return str(explicit)
    key = getattr(fn, "key", None)
    if isinstance(key, str) and key:
        return key
    describe = getattr(fn, "describe", None)
    if callable(describe):
        return f"{getattr(fn, 'name', type(fn).__name__)}|{describe()}"
    raise ValueError(f"cannot key the {what} {fn!r} for the cache: give it a `key` string attribute (e.g. use "
                     f"srilib.adaptive.Responder / JudgeScorer), or pass {what}_key='...' naming everything that "
                     "changes its output")


def request_seed(seed: int, request: str) -> int:
    """Per-request seed derived from the run seed and the request text (so a request's result does not depend
    on its position in a prompt set, and resuming reproduces it exactly)."""
    return int(hashlib.sha256(f"{int(seed)}|{request}".encode()).hexdigest()[:15], 16)


def make_key(attack: str, payload: dict) -> str:
    """SHA-256 key (24 hex digits) of one attack result."""
    full = {"attack": attack, "format": CACHE_FORMAT, "code": adaptive_code_version(), **payload}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:24]


class AttackCache:
    """Directory of adaptive-attack results (see module docstring). ``root=None``: the srilib cache dir."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dir = self.root / "adaptive"

    def path(self, attack: str, key: str) -> Path:
        return self.dir / attack / f"{key}.json"

    def has(self, attack: str, key: str) -> bool:
        return self.path(attack, key).exists()

    def load(self, attack: str, key: str) -> dict:
        return json.loads(self.path(attack, key).read_text(encoding="utf-8"))

    def save(self, attack: str, key: str, record: dict) -> None:
        atomic_write_bytes(self.path(attack, key), json.dumps(record, sort_keys=True).encode("utf-8"))

    def keys(self, attack: str) -> list[str]:
        return sorted(p.stem for p in (self.dir / attack).glob("*.json"))


def as_cache(cache) -> AttackCache | None:
    """``None`` -> the default cache; ``False`` -> no cache; a path -> a cache there; an AttackCache as is."""
    if cache is False:
        return None
    if cache is None or cache is True:
        return AttackCache()
    if isinstance(cache, AttackCache):
        return cache
    return AttackCache(cache)
