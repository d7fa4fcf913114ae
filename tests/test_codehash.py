"""Cache keys on behaviour (srilib.traces.behaviour_hash): a docstring or comment edit to any srilib module keeps every
trace, attack and organism key; a change of what the code computes moves them."""
import ast
import inspect
from pathlib import Path

import pytest

import srilib
from srilib import traces as codehash
from srilib.adaptive.cache import adaptive_code_version
from srilib.organisms import train, weights
from srilib.organisms.v3 import v3_code_version
from srilib.traces import code_version

PKG = Path(srilib.__file__).parent
KEYS = (code_version, adaptive_code_version, train.code_version, v3_code_version)


def reworded(text: str) -> str:
    """``text`` with every docstring replaced by another, a comment added on top and a blank line after each def:
    prose changes only."""
    lines = [line.encode() for line in text.splitlines(keepends=True)]  # ast's column offsets count UTF-8 bytes
    spans = []
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and codehash._is_string_statement(body[0]):
            d = body[0].value
            spans.append((d.lineno, d.col_offset, d.end_lineno, d.end_col_offset))
    for l0, c0, l1, c1 in sorted(spans, reverse=True):  # from the end, so earlier offsets stay valid
        head, tail = lines[l0 - 1][:c0], lines[l1 - 1][c1:]
        lines[l0 - 1:l1] = [head + b'"""Reworded: a docstring fix."""' + tail]
    return "# an added comment\n" + b"".join(lines).decode()


def keys():
    for k in KEYS:
        k.cache_clear()
    try:
        return [k() for k in KEYS]
    finally:
        for k in KEYS:
            k.cache_clear()


def test_a_docstring_or_comment_edit_to_every_module_keeps_every_key(monkeypatch):
    before = keys()
    read, seen = codehash.source_of, set()

    def edited(item):
        seen.add(Path(item if isinstance(item, Path) else inspect.getsourcefile(inspect.unwrap(item))).name)
        return reworded(read(item))

    monkeypatch.setattr(codehash, "source_of", edited)
    assert keys() == before
    assert seen >= {"traces.py", "models.py", "ar.py", "modeling.py", "train.py", "v3.py", "smoldlm.py", "pair.py"}


def test_reworded_changes_only_prose():
    """The helper above is a real edit: the bytes differ, the tree without docstrings does not (on modules with
    non-ASCII docstrings, nested classes and functions)."""
    for path in (PKG / "traces.py", PKG / "samplers" / "diffusion.py", PKG / "organisms" / "v3.py"):
        text = path.read_text()
        assert codehash.normalised(ast.parse(reworded(text))) == codehash.normalised(ast.parse(text)), path
    text = (PKG / "traces.py").read_text()
    assert reworded(text) != text


@pytest.mark.parametrize("module, old, new", [
    ("samplers/ar.py", "def ", "X_ADDED = 1\n\n\ndef "),  # a new statement
    ("diffusion_gemma.py", "return ", "return  0 or "),  # an expression
    ("traces.py", "TRACE_FORMAT = ", "TRACE_FORMAT = 1 + "),  # a constant
])
def test_a_change_of_behaviour_in_the_trace_code_moves_the_trace_key(monkeypatch, module, old, new):
    before = keys()
    read = codehash.source_of

    def edited(item):
        text = read(item)
        return text.replace(old, new, 1) if isinstance(item, Path) and item == PKG / module else text

    monkeypatch.setattr(codehash, "source_of", edited)
    after = keys()
    assert after[0] != before[0] and after[1] != before[1]  # traces, and the attacks that call them
    assert after[2:] == before[2:]  # the organisms' recipe does not read these modules


def test_a_change_of_the_recipe_moves_its_identity(monkeypatch):
    before = keys()
    read = codehash.source_of

    def edited(item):
        text = read(item)
        return text.replace("cfg.warmup:", "cfg.warmup + 1:", 1) if item is train.lr_at else text

    monkeypatch.setattr(codehash, "source_of", edited)
    after = keys()
    assert after[2] != before[2] and after[3] != before[3] and after[:2] == before[:2]


def test_recipe_constants_are_part_of_the_identity(monkeypatch):
    before = keys()
    monkeypatch.setattr(train, "CHATML", train.CHATML + ".")
    assert keys()[2] != before[2]


def test_the_shipped_organisms_stay_frozen_under_the_new_identity():
    """The manifest's re-key record maps the recorded (byte-hash) identities to today's: the v3 freeze holds."""
    from srilib.organisms.preconditions import current_identity, v3_frozen

    m = weights.load_manifest()
    assert v3_frozen(m)
    assert current_identity(m, m["freeze"]["code_version"]) == train.code_version()
    assert not v3_frozen({**m, "identity_rekeys": []})  # without the record, the old name no longer matches


def test_private_marks_and_prose_are_not_behaviour_but_constants_are():
    n = lambda src: codehash.normalised(ast.parse(src))  # noqa: E731
    assert n('def _f(x):\n    "doc"\n    return _g(x)  # note') == n("def f(x):\n    return g(x)")
    assert n("x = '_a'") != n("x = 'a'") and n("x = 1") != n("x = 2") and n("f(a, b)") != n("f(b, a)")
