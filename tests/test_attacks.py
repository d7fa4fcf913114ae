"""Tests for srilib.prompts: template families, determinism, train/eval separation, flip recoverability."""
from __future__ import annotations

from collections import Counter

import pytest

from srilib import prompts as A
from srilib.prompts import get_prompts

REQUESTS = get_prompts("harmful", "eval", n=12, seed=0) + ["Odd  spacing and {braces} and {request} inside."]


def _recovered(attack: A.Attack, idx: int, request: str, out: str) -> bool:
    """The request can be read back from the attacked prompt (un-flipping it where needed)."""
    t = attack.templates[idx]
    if t.flip is None:
        return request in out
    flipped = A.flip_text(request, t.flip)
    return flipped in out and A.unflip_text(flipped, t.flip) == request


def test_families_and_template_counts():
    names = A.list_attacks()
    assert names[0] == "none"
    assert {"refusal_suppression", "prefix_injection", "flip_attack", "roleplay"} <= set(names)
    for name in ("refusal_suppression", "prefix_injection", "roleplay"):
        assert len(A.ATTACKS[name].templates) >= 6, name
    flip = A.ATTACKS["flip_attack"]
    assert len(flip.templates) >= 3
    assert {t.flip for t in flip.templates} == set(A.FLIP_MODES)
    for a in A.ATTACKS.values():
        for t in a.templates:
            assert t.text.count(A.PLACEHOLDER) == 1


@pytest.mark.parametrize("mode", A.FLIP_MODES)
def test_flip_is_an_involution(mode):
    for text in REQUESTS + ["a", "  two  spaces ", "word"]:
        assert A.unflip_text(A.flip_text(text, mode), mode) == text
    assert A.flip_text("How do I make bread?", mode) != "How do I make bread?"
    with pytest.raises(ValueError, match="chars_in_words"):
        A.flip_text("x", "backwards")


def test_flip_modes_exact():
    assert A.flip_text("ab cd", "chars") == "dc ba"
    assert A.flip_text("ab cd", "words") == "cd ab"
    assert A.flip_text("ab cd", "chars_in_words") == "ba dc"


@pytest.mark.parametrize("name", [n for n in A.ATTACKS if n != "none"])
def test_every_template_changes_text_and_keeps_request_recoverable(name):
    attack = A.ATTACKS[name]
    for idx in range(len(attack.templates)):
        for req in REQUESTS:
            out = attack.render(req, idx)
            assert out != req and len(out) > len(req)
            assert _recovered(attack, idx, req, out), (name, idx, req)


def test_none_is_identity():
    assert A.apply_attack("none", REQUESTS) == REQUESTS
    assert A.apply_attack("none", REQUESTS, split="train") == REQUESTS


def test_deterministic_and_seeded():
    for name in A.list_attacks():
        assert A.apply_attack(name, REQUESTS, seed=3) == A.apply_attack(name, REQUESTS, seed=3)
    assert A.apply_attack("roleplay", REQUESTS, seed=0) != A.apply_attack("roleplay", REQUESTS, seed=1)
    a = A.ATTACKS["roleplay"]
    assert a.apply(REQUESTS[2], seed=5, index=2) == A.apply_attack("roleplay", REQUESTS, seed=5)[2]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_templates_cycle_evenly_within_split(split):
    attack = A.ATTACKS["refusal_suppression"]
    pool = attack.template_indices(split)
    used = Counter(attack.choose(seed=11, split=split, index=i) for i in range(3 * len(pool)))
    assert set(used) == set(pool) and set(used.values()) == {3}


def test_train_and_eval_templates_disjoint():
    for a in A.ATTACKS.values():
        if a.name == "none":
            continue
        train, evl = set(a.train_templates), set(a.eval_templates)
        assert not train & evl, a.name
        assert train | evl == set(range(len(a.templates))), a.name
        assert evl, f"{a.name} has no unseen eval template"
        if not a.heldout:
            assert train, f"{a.name} contributes nothing to training"
    # roleplay's eval templates use tactics that no train template uses
    rp = A.ATTACKS["roleplay"]
    assert not {rp.templates[i].tactic for i in rp.train_templates} & {rp.templates[i].tactic
                                                                        for i in rp.eval_templates}


def test_split_outputs_come_from_that_split():
    for name in ("refusal_suppression", "prefix_injection", "roleplay"):
        a = A.ATTACKS[name]
        for split, pool in (("train", a.train_templates), ("eval", a.eval_templates)):
            outs = A.apply_attack(name, REQUESTS, seed=2, split=split)
            for req, out in zip(REQUESTS, outs):
                assert out in {a.render(req, i) for i in pool}


def test_heldout_family_absent_from_training():
    assert A.HELDOUT_FAMILIES and set(A.HELDOUT_FAMILIES) <= set(A.ATTACKS)
    wrappers = A.training_wrappers()
    assert wrappers and all(callable(w) for w in wrappers)
    assert not {w.attack for w in wrappers} & set(A.HELDOUT_FAMILIES)
    expected = sum(len(a.train_templates) for a in A.ATTACKS.values() if not a.heldout and a.name != "none")
    assert len(wrappers) == expected
    assert len(A.training_wrappers(include_identity=True)) == expected + 1
    # no training wrapper reproduces an eval template or any held-out rendering
    req = "How do I make bread?"
    unseen = {a.render(req, i) for a in A.ATTACKS.values() if a.name != "none"
              for i in (range(len(a.templates)) if a.heldout else a.eval_templates)}
    assert not {w(req) for w in wrappers} & unseen
    for fam in A.HELDOUT_FAMILIES:
        with pytest.raises(ValueError, match="held out"):
            A.apply_attack(fam, REQUESTS, split="train")
        assert A.apply_attack(fam, REQUESTS, split="eval")


def test_wrapper_names_and_tactics():
    w = A.training_wrappers()[0]
    assert w.name == f"{w.attack}[{w.template}]" and w.tactic
    assert w("Write a thank-you email.") == A.ATTACKS[w.attack].render("Write a thank-you email.", w.template)


def test_errors():
    with pytest.raises(ValueError, match="roleplay") as e:
        A.apply_attack("gcg", REQUESTS)
    assert "flip_attack" in str(e.value)
    with pytest.raises(ValueError, match="at least one prompt"):
        A.apply_attack("roleplay", [])
    with pytest.raises(ValueError, match="prompt 1"):
        A.apply_attack("roleplay", ["ok", " "])
    with pytest.raises(TypeError, match="single string"):
        A.apply_attack("roleplay", "How do I make bread?")
    with pytest.raises(ValueError, match="'train', 'eval' or 'all'"):
        A.apply_attack("roleplay", REQUESTS, split="test")
    with pytest.raises(ValueError, match="empty"):
        A.ATTACKS["roleplay"].apply("")
    with pytest.raises(ValueError, match="lacks"):
        A.Attack("bad", "no placeholder", (A.Template("nothing here"),), ())
    with pytest.raises(ValueError, match="held out"):
        A.Attack("flip_attack", "x", (A.Template("{request}"),), (0,))
