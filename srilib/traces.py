"""One trace format for every model and sampler, and an on-disk store keyed by everything that produced it.

A :class:`TraceSet` holds N generations of T steps. A *step* is one generated token for AR decoding and one
denoising iteration for a diffusion sampler. Per step it records the response canvas (L positions; L = T for
AR decoding), which positions are committed, the current prediction at every position, the decoded text so far,
and the last-layer hidden state (plus optional extra layers) pooled in several named ways at once, so that
switching pooling never means regenerating.

A step with nothing generated yet (a diffusion sampler that commits end-of-text at the tail of the canvas
first, as LLaDA does) has no tokens for the paper's ``generated`` pooling to average: its ``generated`` vector
is then the ``canvas`` pooling of that step (the mean over every response position, masked ones included: the
authors' LLaDA pooling), and ``TraceSet.empty`` marks the (prompt, step) pairs where that happened; the trace
metadata names the rule (``empty_pooling``) and the share of such pairs (``empty_share``).

Capture convention (``capture``, a setting of every sampler, recorded as ``TraceSet.meta["capture"]`` and part
of the trace key):

- ``"after"`` (default): the activation of step t is read from the forward pass that sees every token committed
  up to and including step t (for AR decoding: the pass over token t itself; the pass after the last step is one
  extra forward pass that plain generation does not run);
- ``"decision"``: the activation of step t is read from the forward pass that *made* step t's decision, i.e.
  the pass over what was committed before step t (for AR decoding: the pass whose logits chose token t). No
  extra pass. This is what the authors' code does for both LLaDA and Llama. Every pooling then averages the
  positions that were committed *in that pass's input*: at the first step nothing is (unless a prefill is),
  so ``generated`` takes its fallback there and ``TraceSet.empty`` marks it.

The authors'-code poolings ``canvas_decision`` and ``producer_all`` always read the decision passes, whatever
``capture`` says (under ``capture="after"`` they cost no extra pass: the pass after step t - 1 is the decision
pass of step t).

Text for the refusal dictionary: ``step_texts`` is what a reader sees (committed tokens in canvas order, masked
gaps closed up), so for a diffusion sampler it can join words across a masked gap. ``step_runs`` holds, per step,
the *contiguous* runs of committed text joined by :data:`RUN_SEPARATOR`, which no dictionary phrase can span;
:attr:`TraceSet.match_texts` is what the text-level refusal signal must read (AR: identical to ``step_texts``).

:class:`TraceStore` writes each batch atomically as it finishes; an interrupted run resumes from the batches on
disk, and a changed input (model weights, prompts, sampler settings, steps, dtype, layers, batch size or the
trace-producing source code) gives a different key, so a stale cache is never reused.

**What every store rests on** (the end of this module; the model, guard, adaptive-attack and organism stores use it
too): atomic writes (a file or a whole directory appears complete or not at all) and cache keys on behaviour (a hash
of what code does, not of its bytes).

* :func:`sha256_file` -- the sha256 of a file's bytes (the corpus and the shipped weights are recorded by it).

* :func:`atomic_write_bytes` -- a file via a temporary sibling, fsync and an atomic rename.
* :func:`atomic_replace_dir` -- a directory built into a temporary sibling and renamed into place.
* :func:`behaviour_hash` -- the syntax tree of source files or objects (functions, classes) with every docstring,
  every other bare string statement and every comment left out, without line numbers and with the leading
  underscore of private names dropped, so fixing prose, moving a function to another file or making a helper public
  keeps the key, and any change to what the code computes (a statement, a constant, an argument default) moves it.
  The tree is written out by :func:`normalised`, which skips empty and absent fields, so the key does not depend on
  fields that newer Pythons add with empty defaults (``type_params`` since 3.12). The trace store
  (:func:`code_version`), the adaptive-attack cache and the organisms' recipe identity
  (:func:`srilib.organisms.train.code_version`) are built on it.

One room: the trace store and the atomic writes and behaviour keys it is built on; the other stores borrow them.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import os
import shutil
import tempfile
import textwrap
import uuid
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np


TRACE_FORMAT = 2  # 2: step_runs (contiguous committed text per step); format-1 files still load
READABLE_FORMATS = (1, 2)
DEFAULT_POOLING = "generated"
CAPTURES = ("after", "decision")  # see the module docstring
# Pooling names (paper Section 3.1, and the authors' release). Each is read from the capture pass of step t
# (``capture``), except the two "authors' code" ones, which always read the decision passes:
#   generated        the paper's definition: mean over response tokens generated so far (DLM: committed,
#                    before the first end-of-text); AR under capture="decision": tokens before step t
#   producer         AR: running mean of the state at the position that *produced* each token, up to and
#                    including the token that ends the text (end-of-text), then constant
#   producer_all     AR, authors' Llama code exactly: the same running mean, but it keeps averaging after
#                    end-of-text, repeating the state that produced end-of-text at every remaining step
#   canvas           DLM: mean over every response position of the capture pass, still-masked ones included
#   canvas_decision  DLM, authors' LLaDA code exactly: mean over every response position of the pass that made
#                    step t's decision (before step t's commit)
#   committed        DLM: mean over committed response positions, end-of-text padding included
POOLINGS = ("generated", "producer", "producer_all", "canvas", "canvas_decision", "committed")
EMPTY_POOLING = "canvas"  # what `generated` holds at a step with nothing generated yet (see the module docstring)
RUN_SEPARATOR = " \u2026 "  # between contiguous committed runs in step_runs: no refusal phrase can span it


@dataclass
class TraceSet:
    """N generations x T steps in the shared format (see module docstring)."""

    prompts: list[str]
    tokens: np.ndarray  # int32 [N, T, L]; -1 where nothing is committed yet
    committed: np.ndarray  # bool  [N, T, L]
    predictions: np.ndarray  # int32 [N, T, L]; committed tokens + current argmax at uncommitted positions
    pooled: dict[str, np.ndarray]  # pooling -> float32 [N, T, K, D]
    layers: list[int]  # hidden-state indices recorded (-1 = last layer, after the final norm)
    texts: list[str]  # final response text
    step_texts: list[list[str]]  # [N][T] committed text after step t
    pred_texts: list[list[str]] | None = None  # [N][T] decoded full intermediate prediction (DLMs)
    empty: np.ndarray | None = None  # bool [N, T]: nothing generated yet; `generated` fell back to
    # meta["empty_pooling"] (`canvas`; AR under capture="decision": `producer`)
    meta: dict = field(default_factory=dict)
    step_runs: list[list[str]] | None = None  # [N][T] contiguous committed runs joined by RUN_SEPARATOR

    @property
    def match_texts(self) -> list[list[str]]:
        """[N][T] text that the refusal dictionary is matched against at each step: only contiguous committed
        text, so a phrase never joins words across a masked gap (``step_runs``). Identical to ``step_texts``
        for AR decoding, and wherever the committed positions of a step have no masked gap.

        Traces without ``step_runs`` (format 1, written by an older srilib, or built by hand) fall back to
        ``step_texts``; where a step has a masked gap between committed positions that fallback can match across
        it, so it warns (regenerate the traces to get ``step_runs``).
        """
        if self.step_runs is not None:
            return self.step_runs
        c = self.committed
        L = c.shape[-1]
        first, last = c.argmax(-1), L - 1 - np.flip(c, -1).argmax(-1)
        n = c.sum(-1)
        if ((n > 0) & (last - first + 1 != n)).any():  # a masked position between two committed ones
            warnings.warn("these traces have masked gaps between committed tokens but no step_runs (an older "
                          "srilib, or built by hand): the refusal dictionary reads step_texts, which can join "
                          "words across a gap; regenerate the traces with this srilib", RuntimeWarning,
                          stacklevel=2)
        return self.step_texts

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def T(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def L(self) -> int:
        return int(self.tokens.shape[2])

    @property
    def D(self) -> int:
        return int(next(iter(self.pooled.values())).shape[-1])

    @property
    def poolings(self) -> list[str]:
        return list(self.pooled)

    @property
    def empty_share(self) -> float:
        """Share of (prompt, step) pairs with nothing generated yet (0.0 when not recorded, e.g. old traces)."""
        return float(self.empty.mean()) if self.empty is not None and self.empty.size else 0.0

    def phi(self, pooling: str | None = None, layer: int = -1) -> np.ndarray:
        """Pooled activations [N, T, D] for one pooling and one recorded layer."""
        pooling = pooling or DEFAULT_POOLING
        if pooling not in self.pooled:
            raise KeyError(f"pooling {pooling!r} was not recorded for these traces; available: {self.poolings}")
        if layer not in self.layers:
            raise KeyError(f"layer {layer} was not recorded; recorded layers: {self.layers}. Pass "
                           f"layers=[...,{layer}] to generate_traces.")
        return self.pooled[pooling][:, :, self.layers.index(layer), :]

    def subset(self, idx) -> "TraceSet":
        """The traces at ``idx`` (indices or boolean mask), same format."""
        idx = np.arange(len(self))[idx] if not isinstance(idx, np.ndarray) or idx.dtype == bool else idx
        idx = np.asarray(idx, dtype=int)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return TraceSet(
            prompts=pick(self.prompts), tokens=self.tokens[idx], committed=self.committed[idx],
            predictions=self.predictions[idx], pooled={k: v[idx] for k, v in self.pooled.items()},
            layers=list(self.layers), texts=pick(self.texts), step_texts=pick(self.step_texts),
            pred_texts=pick(self.pred_texts) if self.pred_texts is not None else None,
            empty=self.empty[idx] if self.empty is not None else None, meta=dict(self.meta),
            step_runs=pick(self.step_runs) if self.step_runs is not None else None)

    @staticmethod
    def concat(parts: Sequence["TraceSet"]) -> "TraceSet":
        """Join TraceSets of the same format (same T, L, layers and poolings)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.tokens.shape[1:] != first.tokens.shape[1:] or p.layers != first.layers or \
                    set(p.pooled) != set(first.pooled):
                raise ValueError("cannot concatenate traces with different steps, canvas, layers or poolings")
        has_pred = all(p.pred_texts is not None for p in parts)
        has_empty = all(p.empty is not None for p in parts)
        has_runs = all(p.step_runs is not None for p in parts)
        return TraceSet(
            prompts=[x for p in parts for x in p.prompts],
            tokens=np.concatenate([p.tokens for p in parts]),
            committed=np.concatenate([p.committed for p in parts]),
            predictions=np.concatenate([p.predictions for p in parts]),
            pooled={k: np.concatenate([p.pooled[k] for p in parts]) for k in first.pooled},
            layers=list(first.layers), texts=[x for p in parts for x in p.texts],
            step_texts=[x for p in parts for x in p.step_texts],
            pred_texts=[x for p in parts for x in p.pred_texts] if has_pred else None,
            empty=np.concatenate([p.empty for p in parts]) if has_empty else None, meta=dict(first.meta),
            step_runs=[x for p in parts for x in p.step_runs] if has_runs else None)

    # ---- serialisation (no pickle) ----
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"tokens": self.tokens, "committed": self.committed, "predictions": self.predictions}
        arrays.update({f"pooled__{k}": v for k, v in self.pooled.items()})
        if self.empty is not None:
            arrays["empty"] = self.empty
        text = {"prompts": self.prompts, "texts": self.texts, "step_texts": self.step_texts,
                "pred_texts": self.pred_texts, "step_runs": self.step_runs, "layers": self.layers,
                "meta": self.meta, "format": TRACE_FORMAT}
        np.savez(buf, text=np.array(json.dumps(text)), **arrays)
        return buf.getvalue()

    @classmethod
    def from_file(cls, path) -> "TraceSet":
        with np.load(path, allow_pickle=False) as z:
            text = json.loads(str(z["text"]))
            if text.get("format") not in READABLE_FORMATS:
                raise ValueError(f"{path} has trace format {text.get('format')}, expected one of "
                                 f"{READABLE_FORMATS}: regenerate it with this srilib")
            pooled = {k[len("pooled__"):]: z[k] for k in z.files if k.startswith("pooled__")}
            return cls(prompts=text["prompts"], tokens=z["tokens"], committed=z["committed"],
                       predictions=z["predictions"], pooled=pooled, layers=text["layers"], texts=text["texts"],
                       step_texts=text["step_texts"], pred_texts=text["pred_texts"],
                       empty=z["empty"] if "empty" in z.files else None, meta=text["meta"],
                       step_runs=text.get("step_runs"))


class Sampler(Protocol):
    """What the trace store needs of a sampler (see srilib.samplers)."""

    name: str

    def config(self) -> dict:
        """Every setting that changes the output (goes into the cache key)."""

    def trace_batch(self, lm, prompts: list[str], layers: Sequence[int]) -> TraceSet:
        """Generate and trace one batch of prompts."""


TRACE_SOURCES = ("traces.py", "models.py", "diffusion_gemma.py", "tiny.py")  # with srilib/samplers/*.py


# ---- what every sampler shares: the traced loop and the checks of its trace settings
def check_capture(capture: str) -> None:
    """Raise a clear error unless ``capture`` is one of :data:`srilib.traces.CAPTURES`."""
    if capture not in CAPTURES:
        raise ValueError(f"capture must be 'after' (the state of step t from the forward pass that sees step t's "
                         f"commit; one extra pass) or 'decision' (from the pass that made step t's decision; no "
                         f"extra pass), got {capture!r}")


def check_poolings(poolings, available: Sequence[str], sampler: str):
    """``None`` (every pooling) or a tuple of known pooling names (duplicates dropped, order kept)."""
    if poolings is None:
        return None
    if isinstance(poolings, str):
        poolings = (poolings,)
    out = tuple(dict.fromkeys(poolings))
    bad = [p for p in out if p not in available]
    if bad or not out:
        raise ValueError(f"{sampler} records the poolings {', '.join(available)}; got {list(poolings)!r} "
                         "(None records them all)")
    return out


class TracedLoop:
    """``trace_batch`` and ``generate`` of every sampler, over its one loop ``self._run(lm, prompts, layers,
    record)``: traced, or final texts only (the same loop with no hidden states requested and nothing pooled, so
    the same texts)."""

    def trace_batch(self, lm, prompts: list[str], layers: Sequence[int]) -> TraceSet:
        """Generate and trace one batch (left-padded) of prompts."""
        layers = list(layers)
        if not layers:
            raise ValueError("pass at least one layer to trace, e.g. layers=[-1] (the last layer)")
        return self._run(lm, list(prompts), layers, record=True)

    def generate(self, lm, prompts: list[str]) -> list[str]:
        """Final texts only: the same loop, no hidden states requested, nothing pooled (the same texts)."""
        return self._run(lm, list(prompts), [], record=False)


@lru_cache(maxsize=1)
def code_version() -> str:
    """What the code that produces traces computes (:func:`srilib.traces.behaviour_hash` of its modules): a change
    of behaviour there invalidates cached traces, a docstring or comment edit does not."""
    here = Path(__file__).parent
    return behaviour_hash(*(here / f for f in TRACE_SOURCES), *sorted((here / "samplers").glob("*.py")))


def trace_key(model_fingerprint: str, prompts: Sequence[str], sampler_config: dict, *, layers: Sequence[int],
              batch_size: int, dtype: str) -> str:
    """Key of a trace set: a hash of every input that produced it (and the producing code's version)."""
    payload = {"model": model_fingerprint, "prompts": list(prompts), "sampler": sampler_config,
               "layers": list(layers), "batch_size": batch_size, "dtype": dtype, "code": code_version(),
               "format": TRACE_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    """$SRILIB_CACHE, else ~/.cache/srilib."""
    return Path(os.environ.get("SRILIB_CACHE") or Path.home() / ".cache" / "srilib")


class TraceStore:
    """Directory of trace sets: ``<root>/traces/<key>/traces.npz`` plus per-batch parts while in progress."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dir = self.root / "traces"

    def path(self, key: str) -> Path:
        return self.dir / key / "traces.npz"

    def part_path(self, key: str, i: int) -> Path:
        return self.dir / key / "parts" / f"part-{i:05d}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def load(self, key: str) -> TraceSet:
        return TraceSet.from_file(self.path(key))

    def save(self, key: str, ts: TraceSet) -> None:
        atomic_write_bytes(self.path(key), ts.to_bytes())

    def keys(self) -> list[str]:
        return sorted(p.parent.name for p in self.dir.glob("*/traces.npz"))

    @property
    def log_path(self) -> Path:
        """``<root>/generated.jsonl``: one line per trace set this store computed (not loaded), in order."""
        return self.root / "generated.jsonl"

    def log_generated(self, key: str, desc: str, n: int, batches: int) -> None:
        """Record that ``key`` was computed here (``batches`` batches of ``n`` prompts generated by this call):
        the book's runner reads the log to show that its notebooks only read what the trace plan computed."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "desc": desc, "n": n, "batches": batches, "pid": os.getpid()})
        with open(self.log_path, "a", encoding="utf-8") as f:  # one short append per trace set
            f.write(line + "\n")

    def log_mark(self) -> int:
        """A position in the log (its size in bytes): :meth:`generated` ``(since=mark)`` reads only what follows."""
        return self.log_path.stat().st_size if self.log_path.is_file() else 0

    def generated(self, since: int = 0) -> list[dict]:
        """The log's records (see :meth:`log_generated`) after the mark ``since``, oldest first; [] when none."""
        if not self.log_path.is_file():
            return []
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return [json.loads(x) for x in f.read().decode("utf-8").splitlines() if x.strip()]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of items with these token ``lengths``, in batches of ``batch_size`` taken in order of length (ties
    keep the given order), so that a batch holds prompts of similar length and left padding wastes little."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate_traces(lm, prompts: Sequence[str], sampler: Sampler, *, store: TraceStore | None = None,
                    batch_size: int = 16, layers: Sequence[int] = (-1,), progress: bool | None = None,
                    shard: tuple[int, int] | None = None, desc: str | None = None) -> TraceSet | None:
    """Trace ``prompts`` with ``sampler`` on ``lm`` (a :class:`srilib.models.LoadedModel`), through the cache.

    Prompts are batched by token length (:func:`length_batches`); the result is in the given order. Batches
    are saved as they finish, so an interrupted call resumes where it stopped. ``progress=None`` shows
    a progress bar unless the environment sets TQDM_DISABLE=1 (the book's runner does). With
    ``shard=(i, n)`` only every n-th batch starting at i is computed (for multi-process runs) and None is
    returned: shards never merge (two finishing together would race); a later call without ``shard`` (one
    process) merges the parts, computing any batch still missing.
    """
    from tqdm.auto import tqdm

    prompts = list(prompts)
    if not prompts:
        raise ValueError("generate_traces got an empty prompt list; pass at least one prompt "
                         "(check the prompt-count parameters of the profile)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if getattr(sampler, "kind", None) and getattr(lm, "kind", None) and sampler.kind != lm.kind:
        raise ValueError(f"sampler {sampler.name!r} needs a {sampler.kind} model but {lm.name!r} is a {lm.kind} "
                         "model; pick a sampler from srilib.samplers that fits the model")
    lengths = [len(x) for x in lm.validate_prompts(prompts)]
    layers = list(layers)
    key = trace_key(lm.fingerprint, prompts, sampler.config(), layers=layers, batch_size=batch_size,
                    dtype=lm.dtype_name)
    store = store if store is not None else TraceStore()
    if store.has(key):
        return store.load(key)
    batches = length_batches(lengths, batch_size)
    mine = [i for i in range(len(batches)) if shard is None or i % shard[1] == shard[0]]
    todo = [i for i in mine if not store.part_path(key, i).exists()]
    if progress is None:
        progress = os.environ.get("TQDM_DISABLE", "").lower() in ("", "0", "false")
    label = desc or f"{lm.name} / {sampler.name}"
    bar = tqdm(total=len(prompts), desc=label, disable=not progress, unit="prompt")
    bar.update(sum(len(batches[i]) for i in mine if i not in todo))
    for i in todo:
        chunk = [prompts[j] for j in batches[i]]
        ts = sampler.trace_batch(lm, chunk, layers)
        atomic_write_bytes(store.part_path(key, i), ts.to_bytes())
        bar.update(len(chunk))
    bar.close()
    if shard is not None:
        return None  # the merge is done once, by a call without shard
    merged = TraceSet.concat([TraceSet.from_file(store.part_path(key, i)) for i in range(len(batches))])
    merged = merged.subset(np.argsort(np.concatenate(batches)))  # back to the given prompt order
    merged.meta.update({"key": key, "model": lm.name, "model_fingerprint": lm.fingerprint, "model_kind": lm.kind,
                        "sampler": sampler.name, "sampler_config": sampler.config(), "dtype": lm.dtype_name,
                        "batch_size": batch_size, "code_version": code_version(),
                        "capture": getattr(sampler, "capture", "after"),
                        "empty_pooling": merged.meta.get("empty_pooling", EMPTY_POOLING),
                        "empty_share": merged.empty_share})
    store.save(key, merged)
    store.log_generated(key, label, len(prompts), len(todo))
    for i in range(len(batches)):
        store.part_path(key, i).unlink(missing_ok=True)
    return merged


# ---- what every store rests on: file hashes and atomic writes
def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes (the corpus, shipped weights and data files are recorded by it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
