"""The shape of the package: no import circle among srilib's modules, and no long module without a reason.

Import graph. Every ``.py`` file under ``srilib/`` is a node; an edge goes from a module to every srilib module it
imports, read from its source with ``ast`` (nothing is imported to find out):

* every import statement of the file: module level, inside functions and methods, under ``try`` / ``if`` /
  ``with``, under main guards (``python -m srilib.x`` runs them) and under ``if TYPE_CHECKING:`` alike;
* absolute (``import srilib.x``, ``from srilib.x import y``) and relative (``from .x import y``, ``from .. import
  x``) imports; ``from package import name`` points at ``package.name`` when that is a module, else at the
  package (its ``__init__``); the implicit import of a module's parent packages is not an edge.

Any strongly connected component of more than one module is a circle and fails the test, except the circles
listed in ``PENDING_CYCLES`` (modules another engineer owns; each entry says what fixes it, and an entry that no
longer matches a circle fails too, so the list cannot rot). No module may import another's private name (one
leading underscore): what a module shares is public.

Module size. A module of more than ``MAX_LINES`` lines must say in its module docstring why it is one room: a
sentence that starts with the marker ``"One room:"`` followed by the reason (e.g. "One room: one algorithm and its
batching; splitting would scatter the loop."), except the modules of ``PENDING_LONG``, being split by their
owners now.
"""
from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "srilib"
MAX_LINES = 450
MARKER = "One room:"
# module -> why it may still be long: being split by another engineer (remove the entry when they are done)
PENDING_LONG: dict[str, str] = {}
# circles in modules outside this change's files: frozenset of module names -> the fix their owner applies
PENDING_CYCLES: dict[frozenset, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@lru_cache(maxsize=None)
def parsed(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once per test session."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node of a module: at module level, in functions, under main guards, anywhere."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def _owning_module(name: str) -> str | None:
    """``name`` if it is a srilib module, else the closest enclosing srilib module (``a.b.c`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> set[str]:
    """The srilib modules that module ``name`` imports (see the module docstring for what counts)."""
    path = MODULES[name]
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]  # the package of this module
    out = set()
    for node in _imports(parsed(path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                src = f"{base}.{node.module}" if node.module else base
            else:
                src = node.module or ""
            targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in MODULES else src for a in node.names]
        for t in targets:
            if t == "srilib" or t.startswith("srilib."):
                m = _owning_module(t)
                if m is not None and m != name:
                    out.add(m)
    return out


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[frozenset]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(frozenset(comp))
    return out


def _path_in(comp: frozenset, graph: dict[str, set[str]]) -> str:
    """One circle through ``comp``, as 'a -> b -> ... -> a', for the failure message."""
    start = min(comp)
    prev, todo = {start: None}, [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return " -> ".join(reversed(path)) + f" -> {start}"
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return ", ".join(sorted(comp))


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """Function-level, relative, absolute and main-guard imports are all edges."""
    g = import_graph()
    assert "srilib.chapters.sampling" in g["srilib.chapters.recovery"]  # relative, module level
    assert "srilib.organisms.train" in g["srilib.organisms.rebuild"]  # relative, inside a function
    assert "srilib.organisms.corpus" in g["srilib.organisms.train"]
    assert "srilib.adaptive" in g["srilib.chapters.adaptive"]  # from .. import adaptive (a package)
    assert "srilib.chapters" in g["srilib.chapters.sampling"]  # from . import each_run (the package's __init__)
    tree = ast.parse("import srilib.x\nif TYPE_CHECKING:\n    import srilib.y\n"
                     "if __name__ == '__main__':\n    import srilib.z\nelse:\n    import srilib.w\n"
                     "def f():\n    from srilib import v\n")
    seen = [a.name if isinstance(n, ast.Import) else n.module for n in _imports(tree) for a in n.names]
    assert sorted(seen) == ["srilib", "srilib.w", "srilib.x", "srilib.y", "srilib.z"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def private_imports() -> list[str]:
    """``module: name`` for every private name (one leading underscore) that a srilib module imports from another."""
    out = []
    for name, path in MODULES.items():
        for node in _imports(parsed(path)):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("srilib")):
                out += [f"{name}: {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return sorted(out)


def test_no_private_name_is_imported_across_modules():
    assert private_imports() == []


def test_no_import_circle():
    g = import_graph()
    found = cycles(g)
    new = [c for c in found if c not in PENDING_CYCLES]
    assert not new, "import circles:\n" + "\n".join(_path_in(c, g) for c in new)
    fixed = [sorted(c) for c in PENDING_CYCLES if c not in found]
    assert not fixed, f"no longer circles, remove them from PENDING_CYCLES: {fixed}"


def test_figures_import_nothing_from_the_chapters():
    """Figures sit below the chapters (issue 25): they take arrays, mappings and labels, so
    srilib.figures imports no chapter module, not even the paper's numbers (they come in as arguments)."""
    g = import_graph()
    assert "srilib.figures" in g
    up = sorted(t for t in g["srilib.figures"] if t == "srilib.chapters" or t.startswith("srilib.chapters."))
    assert up == []


def test_the_organisms_corpus_and_training_code_are_not_a_circle():
    """train.py (frozen) imports the corpus; the corpus reaches nothing that imports train.py."""
    g = import_graph()
    reach, todo = set(), ["srilib.organisms.corpus"]
    while todo:
        for w in g[todo.pop()] - reach:
            reach.add(w)
            todo.append(w)
    assert "srilib.organisms.train" not in reach and "srilib.organisms.corpus" in g["srilib.organisms.train"]


def _docstring(path: Path) -> str:
    return ast.get_docstring(parsed(path)) or ""


def long_modules_without_a_reason() -> list[str]:
    """Every module over ``MAX_LINES`` lines whose docstring gives no 'One room: <reason of 4+ words>.'."""
    out = []
    for path in MODULES.values():
        rel, n = str(path.relative_to(ROOT)), len(path.read_text(encoding="utf-8").splitlines())
        doc = " ".join(_docstring(path).split())
        reason = doc.split(MARKER, 1)[1].split(".")[0].split() if f"{MARKER} " in doc else []
        if n > MAX_LINES and rel not in PENDING_LONG and len(reason) < 4:
            out.append(f"{rel} ({n} lines)")
    return out


def test_long_modules_say_why_they_are_one_room():
    assert long_modules_without_a_reason() == [], (
        f"modules over {MAX_LINES} lines: split each, or give its module docstring a sentence "
        f"'{MARKER} <why it is one job>.'")


def test_the_room_check_reads_the_reason(tmp_path, monkeypatch):
    long = "\n" * (MAX_LINES + 1)
    for i, (doc, flagged) in enumerate([("Tools.", True), ("One room: short.", True),
                                        ("Tools. One room: one algorithm and its batching.", False)]):
        (tmp_path / f"m{i}.py").write_text(f'"""{doc}"""{long}')  # a new file each time: trees are parsed once
        monkeypatch.setattr(sys.modules[__name__], "MODULES", {"m": tmp_path / f"m{i}.py"})
        monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
        assert bool(long_modules_without_a_reason()) is flagged, doc


def test_every_model_is_registered_by_its_literal_name():
    """A search for a model's name finds where it is registered: every ``register(ModelSpec(name, ...))`` names it
    with a string literal, and those literals are exactly the registered models."""
    from srilib.models import list_models

    literal, computed = set(), []
    for name, path in MODULES.items():
        for node in ast.walk(parsed(path)):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register" and node.args
                    and isinstance(node.args[0], ast.Call) and getattr(node.args[0].func, "id", None) == "ModelSpec"):
                first = node.args[0].args[0] if node.args[0].args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    literal.add(first.value)
                else:
                    computed.append(f"{name}:{node.lineno}")
    assert computed == [] and literal == set(list_models())
