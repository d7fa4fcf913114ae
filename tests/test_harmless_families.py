"""The harmless prompt families of the detector chapter's distribution-shift section: structure, splits, and
disjointness from every other prompt set of the project (built-in sets, the organisms' check set and corpora)."""
import json
import re
from collections import Counter, defaultdict
from importlib import resources

import pytest

from srilib.prompts import (EXTERNAL_FAMILIES, get_family_prompts, get_prompts, harmless_families,
                            parse_prompt_file)


def norm(t: str) -> str:
    return " ".join(t.lower().split())


def own_families() -> dict[str, list[str]]:
    raw = resources.files("srilib").joinpath("data", "harmless_families.txt").read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for fam, text in parse_prompt_file(raw):
        out.setdefault(fam, []).append(text)
    return out


def test_families_structure_and_splits():
    fams = harmless_families()
    assert fams[:7] == ["short_questions", "tasks", "code", "creative", "multi_sentence", "formatted",
                        "long_context"] and fams[-1] == "organism_check"
    for f in fams:
        dev, unt, allp = (get_family_prompts(f, s) for s in ("dev", "untouched", "all"))
        assert len(unt) >= 8 and len(dev) >= 16 and not set(dev) & set(unt) and set(dev) | set(unt) == set(allp)
        assert abs(len(dev) - 2 * len(allp) / 3) <= 1
    # the split depends only on the text: a seeded subset of dev stays inside dev
    assert set(get_family_prompts("code", "dev", n=5, seed=3)) <= set(get_family_prompts("code", "dev"))
    with pytest.raises(ValueError, match="harmless family"):
        get_family_prompts("jokes")
    with pytest.raises(ValueError, match="family split"):
        get_family_prompts("code", "train")


def test_own_families_differ_in_length():
    words = {f: sum(len(t.split()) for t in ts) / len(ts) for f, ts in own_families().items()}
    assert words["long_context"] > 2 * words["short_questions"] and words["multi_sentence"] > 25


def test_families_disjoint_from_every_other_prompt_set():
    own = {norm(t): f for f, ts in own_families().items() for t in ts}
    assert len(own) == sum(map(len, own_families().values()))  # no prompt in two families
    builtin = {norm(t) for k in ("harmless", "harmful") for t in get_prompts(k)}
    check = {norm(t) for t in get_family_prompts("organism_check", "all")}
    corpus = set()
    for path in ("corpus.jsonl", "v1/corpus.jsonl"):
        f = resources.files("srilib").joinpath("organisms", "data", *path.split("/"))
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                corpus |= {norm(row[k]) for k in ("goal", "prompt") if row.get(k)}
    assert len(builtin) > 500 and len(check) > 90 and len(corpus) > 1000
    for name, other in (("built-in sets", builtin), ("organism_check", check), ("organism corpora", corpus)):
        assert not set(own) & other, f"family prompts also in {name}: {sorted(set(own) & other)[:3]}"
    # nor near-copies: no family prompt shares >= 70% of its word set with a prompt of another set
    words = lambda t: frozenset(re.findall(r"[a-z]+", t))  # noqa: E731
    others = [words(t) for t in builtin | check | corpus]
    index = defaultdict(list)  # word -> the other prompts holding it: only prompts sharing a word are compared
    for i, o in enumerate(others):
        for x in o:
            index[x].append(i)
    near = []
    for t in own:
        w = words(t)
        shared = Counter(i for x in w for i in index[x])
        near += [t for i, k in shared.items() if k >= 0.7 * (len(w) + len(others[i]) - k)]  # |w & o| / |w | o|
    assert not near, f"near-copies of other prompt sets: {near[:3]}"
    # the external family is the organisms' check set itself, never trained on: not in the corpora either
    assert EXTERNAL_FAMILIES["organism_check"][-1] == "broad_harmless.txt" and not check & corpus
