"""Build the book of a profile and check it offline (:func:`make_book`; :mod:`srilib.offline`).

A profile's executed notebooks (:mod:`srilib.execute`) are copied to ``book/executed/`` for the pages
(:func:`stage`) -> ``jupyter-book build`` (never re-executes) -> ``_build/<profile>/html``. Building one profile
never touches another's notebooks or HTML.

One failure never takes the book down: a failed notebook or a run left out of a chapter is shown in the book
(:mod:`srilib.execute`) and the book is still built and checked; then :class:`BookIncomplete` names every
failure in one line (``python -m srilib book`` exits 1).

The pipeline runs top to bottom in this order (find the root, vendor, execute with the trace plan first, stage,
check the toc, build, check offline), tied together by the run summary that :func:`make_book` reports from.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .execute import DEFAULT_TIMEOUT, run_profile
from .offline import check_offline
from .experiment import Profile
from .record import EXECUTED, SOURCES, executed_meta, failure_summary, profile_store


class BookIncomplete(RuntimeError):
    """The book was built, but a chapter or a run failed (the message is the one-line summary)."""


# ----------------------------------------------------------------------------------------------- locations
def find_root(start: str | Path | None = None) -> Path:
    """The repository root: ``start`` (default: the working directory) or the folder above the srilib package,
    whichever holds ``_toc.yml``."""
    candidates = [Path(start)] if start is not None else [Path.cwd(), Path(__file__).resolve().parent.parent]
    for c in candidates:
        if (c / "_toc.yml").is_file():
            return c.resolve()
    raise FileNotFoundError(f"no _toc.yml in {', '.join(map(str, candidates))}: run from the repository root "
                            f"(the folder with _config.yml, _toc.yml and notebooks/) or pass --root")


def html_dir(root: Path, profile: str) -> Path:
    """Where one profile's built book lives: ``_build/<profile>/html`` (its Sphinx caches beside it)."""
    return Path(root) / "_build" / profile / "html"


def stage(root: Path, profile: str) -> list[str]:
    """Put a profile's executed notebooks and records where the book's pages read them (``book/executed/``),
    replacing whatever another profile staged there; the profiles' own stores are never touched. Returns the
    files staged."""
    src, dst = profile_store(root, profile), Path(root) / EXECUTED
    dst.mkdir(parents=True, exist_ok=True)
    for f in dst.iterdir():
        if f.is_file():
            f.unlink()
    out = []
    for f in sorted(src.iterdir()) if src.is_dir() else []:
        if f.is_file():
            shutil.copy2(f, dst / f.name)
            out.append(f.name)
    return out


# ------------------------------------------------------------------------------------------------ the book
def toc_files(toc: Path) -> list[str]:
    """Every document (``root`` and ``file`` entries) a Jupyter Book ``_toc.yml`` names, in order."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("root", "file") and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(yaml.safe_load(Path(toc).read_text()))
    return found


def check_toc(root: Path, toc: Path, profile: Profile | None = None) -> None:
    """Fail clearly when a page of the toc is missing or an executed notebook came from another profile."""
    problems = []
    for doc in toc_files(toc):
        p = root / doc
        hits = [p.with_name(p.name + s) for s in ("", ".md", ".ipynb", ".rst") if p.with_name(p.name + s).is_file()]
        executed = Path(doc).parent == EXECUTED
        name = Path(doc).name
        if not hits:
            if not executed:
                problems.append(f"{doc}: no such page")
            elif not (root / SOURCES / f"{name}.ipynb").is_file():
                problems.append(f"{doc}: {SOURCES}/{name}.ipynb does not exist yet; write it, or build with "
                                f"--toc FILE naming only the chapters that exist")
            else:
                problems.append(f"{doc}: not executed; add `{name}` to the profile and run "
                                f"`python -m srilib run --profile {profile.name if profile else 'NAME'} --only {name}`")
        elif executed and profile is not None:
            ran = executed_meta(hits[0]).get("profile")
            if ran != profile.name:
                problems.append(f"{doc}: executed with profile {ran!r}, not {profile.name!r}; add `{name}` to "
                                f"{profile.path or 'the profile'} so that every chapter uses one profile")
    if problems:
        raise RuntimeError(f"the table of contents {toc} cannot be built:\n  " + "\n  ".join(problems))


def build_book(root: Path, *, toc: Path | None = None, all_pages: bool = False, profile: str = "cpu") -> Path:
    """``jupyter-book build`` with warnings as errors of what ``book/executed/`` holds (:func:`stage`), into the
    profile's own folder; returns :func:`html_dir` (``_build/<profile>/html``)."""
    out = Path(root) / "_build" / profile
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(root),
           "-W", "--keep-going", "--path-output", str(out)]
    if toc is not None:
        cmd += ["--toc", str(toc)]
    if all_pages:
        cmd.append("--all")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=root)
    if r.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {r.returncode}); every Sphinx warning is an error, "
                           f"see the messages above")
    html = html_dir(root, profile)
    if html.exists():
        shutil.rmtree(html)
    os.replace(out / "_build" / "html", html)  # jupyter-book writes <path-output>/_build/html
    print(f"book: built in {time.perf_counter() - t0:.1f} s")
    return html


def vendor_js(root: Path, *, force: bool = False) -> Path:
    """Vendor require.js, the widget HTML manager and MathJax into ``book/_static/vendor``."""
    from .vendor import vendor
    return vendor(root / "book" / "_static", root / ".cache" / "npm", force=force)


def make_book(profile: Profile, root: Path, *, toc: Path | None = None, force: bool = False,
              timeout: int | None = DEFAULT_TIMEOUT, all_pages: bool = True) -> Path:
    """Vendor, execute, build (-W) and check that the book loads nothing from the network.

    ``all_pages`` (default) re-reads every page: an incremental Sphinx build does not repeat the warnings of
    unchanged pages, so a page that failed -W once could pass unchanged the second time.
    Returns the page to open (``_build/<profile>/html/index.html``). Another profile's executed notebooks and
    built book are left as they are.
    """
    root = Path(root)
    t0 = time.perf_counter()
    vendor_js(root)
    summary = run_profile(profile, root, force=force, timeout=timeout)
    stage(root, profile.name)
    toc = Path(toc) if toc is not None else root / "_toc.yml"
    check_toc(root, toc, profile)
    html = build_book(root, toc=toc if toc != root / "_toc.yml" else None, all_pages=all_pages,
                      profile=profile.name)
    remote = check_offline(html)
    if remote:
        raise RuntimeError("the built book loads files from the network (it must work offline):\n  "
                           + "\n  ".join(remote[:50]) + ("\n  ..." if len(remote) > 50 else ""))
    index = html / "index.html"
    print(f"book: offline check passed; total {time.perf_counter() - t0:.1f} s\nOpen {index}")
    failed = failure_summary(summary)
    if failed:
        raise BookIncomplete(f"the book was built ({index}) but not everything ran: {failed}")
    return index
