"""Built-in harmful and harmless prompt sets with fixed train / anchor / eval splits, and public-set loaders.

The built-in sets live in ``srilib/data/{harmful,harmless}_prompts.txt`` (written for this project, one prompt
per line under a ``[category]`` header) and work offline. Many harmless prompts mirror the form of a harmful one
("How do I make bread?" / "How do I make a pipe bomb?") so that phrasing alone does not separate the sets.

Splits are disjoint and deterministic: within each category, prompts are ordered by the SHA-256 of their text and
the first 40% go to ``train``, the next 30% to ``anchor`` (SRI anchors, paper Section 3.1) and the rest to
``eval``. Every category therefore appears in every split (given at least three prompts in it). The split of a
prompt depends only on the prompts of its own category in the data file.

Public sets (Alpaca, AdvBench, JailbreakBench, HarmBench) are loaded through the optional ``datasets`` package
with :func:`load_public` and are split the same way.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

KINDS = ("harmful", "harmless")
SPLITS = ("train", "anchor", "eval")
SPLIT_FRACTIONS = {"train": 0.4, "anchor": 0.3, "eval": 0.3}
_FILES = {"harmful": "harmful_prompts.txt", "harmless": "harmless_prompts.txt"}
_HEADER = re.compile(r"\[([A-Za-z0-9_]+)\]")


class PromptSourceError(RuntimeError):
    """A public prompt set could not be loaded (``datasets`` missing, offline, or hub unreachable)."""


# ----------------------------------------------------------------------------------------------- validation

def validate_prompts(prompts: Sequence[str]) -> list[str]:
    """Check a list of prompts and return it as a list.

    Raises
    ------
    TypeError
        If ``prompts`` is a single string or an item is not a string.
    ValueError
        If the list is empty or a prompt is empty / whitespace only (the message names its index).
    """
    if isinstance(prompts, str):
        raise TypeError("pass a list of prompts, not a single string (wrap it: [prompt])")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("got an empty prompt list; pass at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is {type(p).__name__}, not str; pass text prompts")
        if not p.strip():
            raise ValueError(f"prompt {i} is empty or whitespace only; remove it or give it text")
    return prompts


def _check_choice(value: str, options: Iterable[str], what: str) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(map(repr, options))}")
    return value


# ----------------------------------------------------------------------------------------------- splits

def stable_hash(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 text (stable across runs and Python versions, unlike ``hash``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assign_splits(texts: Sequence[str], groups: Sequence[str] | None = None) -> list[str]:
    """Deterministic, disjoint train / anchor / eval labels, stratified by ``groups``.

    Within each group the texts are ordered by :func:`stable_hash`; the first ``round(0.4 n)`` are ``train``,
    the next ``round(0.3 n)`` ``anchor`` and the rest ``eval``.
    """
    groups = list(groups) if groups is not None else [""] * len(texts)
    if len(groups) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(groups)} group labels; pass one label per text")
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    out = [""] * len(texts)
    for idx in by_group.values():
        idx = sorted(idx, key=lambda i: (stable_hash(texts[i]), i))
        n = len(idx)
        n_train = int(SPLIT_FRACTIONS["train"] * n + 0.5)
        n_anchor = int(SPLIT_FRACTIONS["anchor"] * n + 0.5)
        for rank, i in enumerate(idx):
            out[i] = "train" if rank < n_train else "anchor" if rank < n_train + n_anchor else "eval"
    return out


# ----------------------------------------------------------------------------------------------- built-in sets

def parse_prompt_file(text: str, source: str = "<text>") -> list[tuple[str, str]]:
    """Parse the ``[category]`` / one-prompt-per-line format into ``(category, prompt)`` pairs."""
    out, seen, category = [], set(), None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _HEADER.fullmatch(line)
        if m:
            category = m.group(1)
            continue
        if category is None:
            raise ValueError(f"{source}:{lineno}: prompt before any [category] header; add a header above it")
        if line in seen:
            raise ValueError(f"{source}:{lineno}: duplicate prompt {line!r}; remove one copy")
        seen.add(line)
        out.append((category, line))
    return out


@lru_cache(maxsize=None)
def _builtin(kind: str) -> tuple[tuple[str, str, str], ...]:
    """(text, category, split) for every built-in prompt of ``kind``, in file order (cached, immutable)."""
    name = _FILES[kind]
    raw = resources.files("srilib").joinpath("data", name).read_text(encoding="utf-8")
    pairs = parse_prompt_file(raw, source=name)
    texts = [t for _, t in pairs]
    splits = assign_splits(texts, [c for c, _ in pairs])
    return tuple((t, c, s) for (c, t), s in zip(pairs, splits))


def categories(kind: str) -> list[str]:
    """Category (harmful) or topic (harmless) labels of a built-in set, in file order."""
    _check_choice(kind, KINDS, "kind")
    return list(dict.fromkeys(c for _, c, _ in _builtin(kind)))


def _subset(items: list, n: int | None, seed: int, what: str, hint: str) -> list:
    """All items (n=None) or the first n of a seeded permutation (so smaller n gives a prefix of larger n)."""
    if n is None:
        return items
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"n={n} is not positive; ask for at least one prompt or pass n=None for all")
    if n > len(items):
        raise ValueError(f"asked for n={n} {what} but only {len(items)} are available; lower n, {hint}")
    order = np.random.default_rng(int(seed)).permutation(len(items))[: int(n)]
    return [items[i] for i in order]


def get_records(kind: str, split: str = "all", n: int | None = None, seed: int = 0,
                category: str | None = None) -> list[dict]:
    """Built-in prompts as dicts ``{"text", "category", "split", "kind"}``.

    Parameters
    ----------
    kind : "harmful" or "harmless".
    split : "train", "anchor", "eval" or "all".
    n : number of prompts (None = all, in file order); a seeded subset otherwise.
    seed : seed of the subset; the same (n, seed) always gives the same prompts in the same order.
    category : keep only this category (harmful) or topic (harmless).
    """
    _check_choice(kind, KINDS, "kind")
    _check_choice(split, SPLITS + ("all",), "split")
    rows = [r for r in _builtin(kind) if split == "all" or r[2] == split]
    if category is not None:
        _check_choice(category, categories(kind), f"{kind} category")
        rows = [r for r in rows if r[1] == category]
    public = "load_public('advbench')" if kind == "harmful" else "load_public('alpaca')"
    where = f"split={split!r}" + (f", category={category!r}" if category else "")
    hint = (f"use split='all' ({len(_builtin(kind))} {kind} prompts in all), or load a larger public set with "
            f"{public} (needs `pip install datasets`)")
    rows = _subset(rows, n, seed, f"{kind} prompts ({where})", hint)
    return [{"text": t, "category": c, "split": s, "kind": kind} for t, c, s in rows]


def get_prompts(kind: str, split: str = "all", n: int | None = None, seed: int = 0,
                category: str | None = None) -> list[str]:
    """Built-in prompt texts; see :func:`get_records` for the arguments.

    Examples
    --------
    >>> anchors = get_prompts("harmful", "anchor")          # doctest: +SKIP
    >>> evals = get_prompts("harmless", "eval", n=50, seed=1)  # doctest: +SKIP
    """
    return [r["text"] for r in get_records(kind, split, n, seed, category)]


# ----------------------------------------------------------------------------------------------- public sets

@dataclass(frozen=True)
class PublicSource:
    """Where a public prompt set lives on the Hugging Face hub and which columns hold the prompt."""

    hub_id: str
    config: str | None
    hub_split: str
    kind: str
    text_columns: tuple[str, ...]
    category_columns: tuple[str, ...] = ()
    no_input_column: str | None = None  # keep only rows where this column is empty (Alpaca: no extra input)


PUBLIC_SOURCES: dict[str, PublicSource] = {
    "alpaca": PublicSource("tatsu-lab/alpaca", None, "train", "harmless", ("instruction",),
                           no_input_column="input"),
    "advbench": PublicSource("walledai/AdvBench", None, "train", "harmful", ("prompt", "goal")),
    "jailbreakbench": PublicSource("JailbreakBench/JBB-Behaviors", "behaviors", "harmful", "harmful",
                                   ("Goal", "goal"), ("Category", "category")),
    "jailbreakbench_benign": PublicSource("JailbreakBench/JBB-Behaviors", "behaviors", "benign", "harmless",
                                          ("Goal", "goal"), ("Category", "category")),
    "harmbench": PublicSource("walledai/HarmBench", "standard", "train", "harmful", ("prompt", "Behavior"),
                              ("category", "SemanticCategory")),
}

_OFFLINE_NOTE = ("The built-in sets work offline: get_prompts('harmful' | 'harmless', split=...). ")


def _hub_rows(name: str, spec: PublicSource) -> Iterable[dict]:
    try:
        import datasets  # optional dependency, imported lazily
    except ImportError as err:
        raise PromptSourceError(f"load_public({name!r}) needs the `datasets` package: pip install datasets "
                                f"(or pip install 'srilib[data]'). {_OFFLINE_NOTE}") from err
    args = (spec.hub_id,) if spec.config is None else (spec.hub_id, spec.config)
    try:
        return datasets.load_dataset(*args, split=spec.hub_split)
    except Exception as err:  # network, auth, missing dataset: all mean "cannot get it now"
        raise PromptSourceError(f"could not load {spec.hub_id} from the Hugging Face hub "
                                f"({type(err).__name__}: {err}). If you are offline, {_OFFLINE_NOTE}or pass "
                                f"path= to a local copy (CSV or JSON lines).") from err


def _file_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}; pass path= to a CSV or JSON-lines copy of the set")
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".csv":
            return list(csv.DictReader(f))
        return [json.loads(line) for line in f if line.strip()]


def _pick(row: dict, columns: tuple[str, ...], name: str, required: bool = True) -> str | None:
    for c in columns:
        if c in row:
            return row[c]
    if not required:
        return None
    raise PromptSourceError(f"{name}: none of the columns {columns} found (row has {sorted(row)}); "
                            "the dataset layout changed or the file is not this set")


def load_public(name: str, n: int | None = None, split: str = "all", seed: int = 0,
                path: str | Path | None = None, records: bool = False) -> list[str] | list[dict]:
    """Prompts from a public set, split train / anchor / eval like the built-in sets.

    Parameters
    ----------
    name : one of ``PUBLIC_SOURCES`` ("alpaca", "advbench", "jailbreakbench", "jailbreakbench_benign",
        "harmbench"). Alpaca keeps only instructions without an extra input.
    n, seed : seeded subset as in :func:`get_prompts`.
    split : "train", "anchor", "eval" or "all".
    path : a local CSV / JSON-lines copy instead of the hub (e.g. llm-attacks' harmful_behaviors.csv).
    records : return dicts with text/category/split/kind instead of strings.

    Raises
    ------
    PromptSourceError
        When ``datasets`` is missing or the hub cannot be reached; the built-in sets still work offline.
    """
    _check_choice(name, PUBLIC_SOURCES, "public prompt set")
    _check_choice(split, SPLITS + ("all",), "split")
    spec = PUBLIC_SOURCES[name]
    rows = _file_rows(path) if path is not None else _hub_rows(name, spec)
    texts, cats, seen = [], [], set()
    for row in rows:
        if spec.no_input_column and str(row.get(spec.no_input_column) or "").strip():
            continue
        text = str(_pick(row, spec.text_columns, name) or "").strip()
        if not text or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        cats.append(str(_pick(row, spec.category_columns, name, required=False) or name))
    if not texts:
        raise PromptSourceError(f"{name}: no prompts found; check the source or use get_prompts()")
    splits = assign_splits(texts, cats)
    out = [{"text": t, "category": c, "split": s, "kind": spec.kind}
           for t, c, s in zip(texts, cats, splits) if split == "all" or s == split]
    out = _subset(out, n, seed, f"{name} prompts (split={split!r})", "or use split='all'")
    return out if records else [r["text"] for r in out]


# ----------------------------------------------------------------------------------------------- harmless families

FAMILY_FILE = "harmless_families.txt"
FAMILY_SPLITS = ("dev", "untouched")
# a family read from another file: the organisms' false-refusal check set (never trained on; the organisms'
# preconditions were measured on it, see book/organisms.md)
EXTERNAL_FAMILIES = {"organism_check": ("organisms", "data", "broad_harmless.txt")}


def _family_split(texts: Sequence[str]) -> list[str]:
    """Within a family, texts ordered by :func:`stable_hash`: the first two thirds "dev", the rest "untouched"."""
    order = sorted(range(len(texts)), key=lambda i: (stable_hash(texts[i]), i))
    n_dev = int(2 * len(texts) / 3 + 0.5)
    out = [""] * len(texts)
    for rank, i in enumerate(order):
        out[i] = "dev" if rank < n_dev else "untouched"
    return out


@lru_cache(maxsize=None)
def _families() -> dict[str, tuple[tuple[str, str], ...]]:
    """family -> ((text, split), ...) in file order (cached)."""
    raw = resources.files("srilib").joinpath("data", FAMILY_FILE).read_text(encoding="utf-8")
    by: dict[str, list[str]] = {}
    for fam, text in parse_prompt_file(raw, source=FAMILY_FILE):
        by.setdefault(fam, []).append(text)
    for fam, parts in EXTERNAL_FAMILIES.items():
        lines = resources.files("srilib").joinpath(*parts).read_text(encoding="utf-8").splitlines()
        by[fam] = list(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")))
    return {f: tuple(zip(t, _family_split(t))) for f, t in by.items()}


def harmless_families() -> list[str]:
    """Names of the harmless prompt families (``srilib/data/harmless_families.txt`` plus
    :data:`EXTERNAL_FAMILIES`), in file order.

    They are an evaluation set for the detector chapter's harmless distribution shift: styles, lengths, domains
    and formats (short questions, tasks, code, creative writing, multi-sentence requests, formatted output, long
    context) that the built-in harmless set (mostly single-sentence "how do I" requests) under-represents.
    """
    return list(_families())


def get_family_prompts(family: str, split: str = "dev", n: int | None = None, seed: int = 0) -> list[str]:
    """Harmless prompts of one family.

    ``split``: "dev" (two thirds, seeded by text hash; may be used to fit a detector), "untouched" (the rest:
    never used to fit or choose anything, reported separately) or "all". ``n``/``seed``: a seeded subset as in
    :func:`get_prompts`.
    """
    _check_choice(family, harmless_families(), "harmless family")
    _check_choice(split, FAMILY_SPLITS + ("all",), "family split")
    items = [t for t, s in _families()[family] if split == "all" or s == split]
    return _subset(items, n, seed, f"{family} prompts (split={split!r})", "or use split='all'")
