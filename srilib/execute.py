"""Execute a profile's notebooks with papermill (:func:`run_profile`).

``notebooks/<name>.ipynb`` (thin sources) -> ``book/executed/<profile>/<name>.ipynb`` (executed, widget state
saved; each profile keeps its own). A notebook is only re-executed when its source, its parameters or the srilib
source changed (a stamp in the executed notebook's metadata), or with ``force``.

Before the notebooks, the trace plan of the notebooks to execute (:mod:`srilib.plan`) trains the organisms it
needs and computes every trace its chapters declare; the trace store's log then shows, per notebook, what it still
generated itself (the run summary and the execution record show the count: zero when the plan is complete).

One failure never stops the run: a run a chapter cannot analyse is reported in that chapter (see
:func:`srilib.chapters.each_run`) and a notebook that fails is kept as far as it ran, with a note at its top and
placeholders for the results the landing page pastes from it (:func:`mark_failed`). Every executed notebook is
saved as the book shows it (:func:`present`); the run summary and the pages of the run record
(:mod:`srilib.record`) are written at the end, whatever failed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from html import escape as html_escape
from pathlib import Path
from typing import Sequence

from .organisms.parallel import train_in_processes, training_groups
from .paper import published_tables
from .experiment import Profile
from .record import (EXECUTED, EXECUTION_TABLE, GLANCE, ORGANISMS_SUMMARY, PAPER_NUMBERS, SOURCES, SUMMARY,
                     executed_meta, execution_table, git_info, glance_page, organisms_summary, profile_store)

KERNEL = "python3"
DEFAULT_TIMEOUT = 3600  # seconds per cell


# -------------------------------------------------------------------------------------------------- stamps
def srilib_source_hash() -> str:
    """Hash of every srilib source file (code and package data); any edit re-executes the notebooks."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".yaml", ".json", ".txt", ".csv") and "__pycache__" not in f.parts:
            h.update(f.relative_to(pkg).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def notebook_stamp(source: Path, params: dict, code_hash: str | None = None) -> str:
    """Stamp of one execution: hash of the source notebook, the parameters and the srilib source."""
    h = hashlib.sha256(Path(source).read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update((code_hash or srilib_source_hash()).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- execution
def ensure_kernel() -> str:
    """Make sure the ``python3`` kernel runs this interpreter; returns the kernel name for papermill."""
    os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")  # this environment's kernelspec before a user's
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def usable() -> bool:
        try:
            argv0 = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
        except NoSuchKernel:
            return False
        # jupyter_client replaces a bare "python"/"python3" with sys.executable
        names = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
        return argv0 in names or Path(argv0).resolve() == Path(sys.executable).resolve()

    if not usable():
        from ipykernel.kernelspec import install
        install(prefix=sys.prefix)
        if not usable():
            raise RuntimeError(f"the {KERNEL!r} Jupyter kernel does not run {sys.executable}; run "
                               f"`{sys.executable} -m ipykernel install --sys-prefix` or remove the stray "
                               f"kernelspec shown by `jupyter kernelspec list`")
    return KERNEL


def _atomic_write_text(path: Path, text: str) -> None:
    from .traces import atomic_write_bytes  # one atomic write for the project (temp file, fsync, rename)
    atomic_write_bytes(path, text.encode())


def run_notebook(source: Path, output: Path, params: dict, *, cwd: Path, timeout: int | None = DEFAULT_TIMEOUT,
                 log_output: bool = False) -> float:
    """Execute ``source`` with ``params`` into ``output`` (widget state saved); returns seconds taken."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(str(source), str(output), parameters=params, kernel_name=ensure_kernel(), cwd=str(cwd),
                        execution_timeout=timeout, progress_bar=sys.stderr.isatty(), log_output=log_output,
                        store_widget_state=True)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------- failures and presentation
def failed_runs(nb: dict) -> list[dict]:
    """The runs a chapter reported as not analysed (outputs tagged by :func:`srilib.chapters.report_failure`)."""
    from .chapters import FAILED_RUN_KEY, output_records

    return output_records(nb, FAILED_RUN_KEY)


def _error_line(err: BaseException) -> str:
    """One line naming a notebook's failure (papermill's exception carries the failing cell's error)."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(err).__name__}: {err}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    return first[:300]


def mark_failed(source: Path, output: Path, meta: dict) -> None:
    """Keep a failed notebook in the book: the executed copy (or the source, if papermill wrote nothing) gets a
    note under its title naming the error, and a placeholder for every result it glues, so that pages which
    paste those results still build and say why they are missing."""
    from myst_nb.ext.glue import GLUE_PREFIX

    try:
        nb = json.loads(output.read_text())
    except (OSError, ValueError):
        nb = json.loads(source.read_text())
    why = (f"**This chapter failed to run** (profile `{meta.get('profile')}`): `{meta['error']}`. The cells below "
           "show how far it got; the failing cell holds the traceback. `python -m srilib run --only "
           f"{source.stem}` re-executes it after a fix.")
    note = {"cell_type": "markdown", "id": "srilib-failed", "metadata": {}, "source": why}
    cells = [c for c in nb.get("cells", []) if c.get("id") not in ("srilib-failed", "srilib-missing-glue")]
    glued = set(re.findall(r'(?:glue\(\s*|glue_name\s*=\s*)["\']([\w-]+)["\']', source.read_text()))
    have = {o.get("metadata", {}).get("scrapbook", {}).get("name") for c in cells for o in c.get("outputs", []) or []}
    outs = [{"output_type": "display_data", "metadata": {"scrapbook": {"name": k, "mime_prefix": GLUE_PREFIX}},
             "data": {GLUE_PREFIX + "text/html": f"<p><em>Not available: the chapter {source.stem} failed "
                                                 f"({html_escape(meta['error'])}).</em></p>",
                      GLUE_PREFIX + "text/plain": f"Not available: the chapter {source.stem} failed."}}
            for k in sorted(glued - have)]
    if outs:
        cells.append({"cell_type": "code", "id": "srilib-missing-glue", "metadata": {"tags": ["remove-cell"]},
                      "execution_count": None, "outputs": outs, "source": "# results this chapter did not produce"})
    nb = present({**nb, "cells": cells}, source.stem, meta.get("profile"))
    nb["cells"] = nb["cells"][:1] + [note] + nb["cells"][1:]
    nb.setdefault("metadata", {})["srilib"] = meta
    output.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(output, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def present(nb: dict, name: str, profile: str | None) -> dict:
    """An executed notebook as the book shows it: the notebook's own default parameters and papermill's injected
    cell are removed from the page, and the values this build used are shown once, folded, under "Parameters of
    this build"; under the title, links download the executed notebook and its source, and the cells tagged
    ``glance`` (the chapter's findings at a glance, computed last) move up to follow them; links to book pages
    written as their GitHub source (:data:`srilib.colab.BOOK_LINK`) become links between the book's pages.
    Idempotent."""
    cells = [c for c in nb.get("cells", []) if c.get("id") not in ("srilib-params", "srilib-downloads")]
    used = None
    for c in cells:
        tags = c.setdefault("metadata", {}).setdefault("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            if "remove-cell" not in tags:
                tags.append("remove-cell")
            if used is None or "injected-parameters" in tags:
                used = (cells.index(c), "".join(c.get("source", "")).strip())
    downloads = {"cell_type": "markdown", "id": "srilib-downloads", "metadata": {}, "source":
                 f"Download {{download}}`this chapter as executed <{name}.ipynb>` or "
                 f"{{download}}`its source notebook <../../{SOURCES.as_posix()}/{name}.ipynb>` (what Colab opens)."}
    from .colab import BOOK_LINK
    for c in cells:  # a notebook links book pages by their GitHub source (works in JupyterLab and Colab); here,
        if c.get("cell_type") == "markdown":  # between the book's own pages (book/executed/ -> book/)
            src = "".join(c.get("source", ""))
            if BOOK_LINK.search(src):
                c["source"] = BOOK_LINK.sub(r"../\1", src)
    glance = [c for c in cells[1:] if "glance" in c.get("metadata", {}).get("tags", [])]
    out = cells[:1] + [downloads] + glance + [c for c in cells[1:] if c not in glance]
    if used is not None:
        used = (out.index(cells[used[0]]) - 1, used[1])
        params = {"cell_type": "markdown", "id": "srilib-params", "metadata": {}, "source":
                  f":::{{dropdown}} Parameters of this build (profile `{profile}`)\n```python\n{used[1]}\n```\n:::"}
        out.insert(used[0] + 2, params)  # where the parameters stood (after the downloads line)
    return {**nb, "cells": out}


# ---------------------------------------------------------------------------- organisms and the trace plan
def organisms_among(models: Sequence[str], to_train: bool = False) -> list[str]:
    """The model organisms (srilib.organisms, incl. ``-tiny`` variants) among ``models`` (e.g. a trace plan's
    :meth:`~srilib.plan.TracePlan.models`), in order; ``to_train`` keeps only those without shipped weights."""
    from .organisms import ORGANISMS, resolve_name
    from .organisms.weights import record

    out = list(dict.fromkeys(resolve_name(m) for m in models if m.removesuffix("-tiny") in ORGANISMS))
    return [n for n in out if not record(n)] if to_train else out


def pretrain_organisms(models: Sequence[str], root: Path, *, jobs: int = 2, heartbeat: float = 60.0
                       ) -> dict[str, float]:
    """Train the organisms among ``models`` (the trace plan's) that ship no weights (the ``-tiny`` variants of the
    tests and the smoke profile) before the notebooks run, independent groups in parallel
    (:func:`train_in_processes`). Shipped organisms (srilib/organisms/weights) are loaded, never trained, here.
    Returns group -> wall seconds."""
    return train_in_processes(training_groups(organisms_among(models, to_train=True)), root, jobs=jobs,
                              heartbeat=heartbeat)


def run_plan(profile: Profile, root: Path, names: Sequence[str]) -> tuple[dict, dict]:
    """The trace plan of the notebooks ``names`` (:mod:`srilib.plan`): train the organisms it needs, then compute
    every trace its chapters declare, so that the notebooks only read. Returns (organism training seconds, the
    plan's report); a plan that cannot even be built is reported and the notebooks generate what they need."""
    from .plan import build_plan

    try:
        plan = build_plan(profile, root, names)
    except Exception as e:  # noqa: BLE001 - the notebooks still run (and generate their own traces)
        print(f"trace plan: could not be built ({type(e).__name__}: {e}); the notebooks generate their traces",
              flush=True)
        return {}, {"error": f"{type(e).__name__}: {e}"}
    trained = pretrain_organisms(plan.models(), root)
    if not plan.needs:
        return trained, {}
    print(f"trace plan: {len(plan.needs)} trace sets declared by {', '.join(names)} ...", flush=True)
    report = plan.run(log=lambda m: print(m, flush=True))
    print(f"trace plan: {report['distinct']} distinct sets, {report['computed']} computed, {report['cached']} "
          f"from the cache, {len(report['failed'])} failed, in {report['seconds']:.0f} s", flush=True)
    return trained, report


# ------------------------------------------------------------------------------------------------- the run
def _adopt_unstored(root: Path, profile: str) -> None:
    """Executed notebooks of ``profile`` written before profiles had their own stores (directly in
    ``book/executed/``) move into its store, so that they are not executed again."""
    staged, store = Path(root) / EXECUTED, profile_store(root, profile)
    if store.is_dir() or not staged.is_dir():
        return
    mine = [f for f in staged.glob("*.ipynb") if executed_meta(f).get("profile") == profile]
    if not mine:
        return
    store.mkdir(parents=True)
    for f in mine:
        shutil.copy2(f, store / f.name)
    summary = staged / SUMMARY
    try:
        if json.loads(summary.read_text()).get("profile") == profile:
            shutil.copy2(summary, store / SUMMARY)
    except (OSError, ValueError):
        pass


def run_profile(profile: Profile, root: Path, *, only: Sequence[str] | None = None, force: bool = False,
                timeout: int | None = DEFAULT_TIMEOUT, log_output: bool = False) -> dict:
    """Execute the profile's notebooks (or ``only`` those) in order; returns and writes the run summary."""
    root = Path(root)
    names = profile.notebooks
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"--only {unknown}: not in profile {profile.name!r}, which runs {names}")
        names = [n for n in names if n in only]
    missing = [n for n in names if not (root / SOURCES / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"profile {profile.name!r} names notebooks with no source: "
                                f"{', '.join(f'{SOURCES}/{n}.ipynb' for n in missing)}; write them or remove "
                                f"them from {profile.path or 'the profile'}")
    from .experiment import check_profile
    check_profile(profile, root)  # every chapter's parameters, before any model loads or trace is computed
    os.environ.setdefault("SRILIB_CACHE", str(root / ".cache"))
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silence a debugger warning in the kernel
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bar
    code_hash = srilib_source_hash()
    _adopt_unstored(root, profile.name)
    out_dir = profile_store(root, profile.name)  # never another profile's notebooks
    summary_path = out_dir / SUMMARY
    entries: dict = {}
    if summary_path.is_file():
        try:
            old = json.loads(summary_path.read_text())
            if old.get("profile") == profile.name:
                entries = old.get("notebooks", {})
        except ValueError:
            pass
    t_all = time.perf_counter()
    summary: dict = {}
    stamps = {n: notebook_stamp(root / SOURCES / f"{n}.ipynb", profile.params_for(n), code_hash) for n in names}
    stale = [n for n in names if force or not (out_dir / f"{n}.ipynb").is_file()
             or executed_meta(out_dir / f"{n}.ipynb").get("stamp") != stamps[n]]
    trained, plan_report = run_plan(profile, root, stale) if stale else ({}, {})  # one tqdm bar per trace set
    # in the notebooks, tqdm bars would be saved as widgets and shown in the book: the kernels inherit this (set
    # after the trace plan, whose bars the terminal shows); `export TQDM_DISABLE=` (empty) keeps them
    os.environ.setdefault("TQDM_DISABLE", "1")
    from .traces import TraceStore
    store = TraceStore()  # the notebooks' store ($SRILIB_CACHE); its log shows what they still generated

    def write_summary() -> None:
        summary.update({"profile": profile.name, "hardware": profile.hardware, "srilib_source": code_hash,
                        **{f"git_{k}": v for k, v in git_info(root).items()}, "python": sys.version.split()[0],
                        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "wall_s": round(time.perf_counter() - t_all, 2), "organisms_s": trained,
                        "trace_plan": plan_report, "notebooks": entries})
        out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(summary_path, json.dumps(summary, indent=1, default=str) + "\n")
        _atomic_write_text(out_dir / EXECUTION_TABLE, execution_table(summary))
        _atomic_write_text(out_dir / PAPER_NUMBERS, published_tables())
        _atomic_write_text(out_dir / ORGANISMS_SUMMARY, organisms_summary())
        _atomic_write_text(out_dir / GLANCE, glance_page(out_dir, profile.notebooks))

    try:
        for i, name in enumerate(names, 1):
            source, output = root / SOURCES / f"{name}.ipynb", out_dir / f"{name}.ipynb"
            params, stamp = profile.params_for(name), stamps[name]
            meta = executed_meta(output) if output.is_file() else {}
            tag = f"[{i}/{len(names)}] {name}"
            if not force and meta.get("stamp") == stamp:
                print(f"{tag}: up to date ({output.relative_to(root)}, executed in {meta.get('elapsed_s', 0):.1f} s;"
                      f" --force re-executes)", flush=True)
                entries[name] = {**meta, "status": "cached"}
                continue
            print(f"{tag}: executing {source.relative_to(root)} -> {output.relative_to(root)} ...", flush=True)
            entries[name] = {"status": "failed", "profile": profile.name, "params": params}
            base = {"profile": profile.name, "params": params, "git_commit": git_info(root)["commit"],
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            t_nb = time.perf_counter()
            mark = store.log_mark()
            try:
                elapsed = run_notebook(source, output, params, cwd=source.parent, timeout=timeout,
                                       log_output=log_output)
            except Exception as e:  # noqa: BLE001 - the book goes on; the failure is named in it and at the end
                meta = {**base, "stamp": None, "status": "failed", "error": _error_line(e),
                        "elapsed_s": round(time.perf_counter() - t_nb, 2),
                        "executed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                mark_failed(source, output, meta)
                entries[name] = meta
                print(f"{tag}: FAILED after {meta['elapsed_s']:.0f} s: {meta['error']}\n    the partly executed "
                      f"notebook is {output} (the book shows it with this note); going on", flush=True)
                continue
            nb = json.loads(output.read_text())
            meta = {**base, "stamp": stamp, "elapsed_s": round(elapsed, 2),
                    "executed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "widget_state": bool(nb.get("metadata", {}).get("widgets")), "failed_runs": failed_runs(nb),
                    "traces_generated": [r["desc"] for r in store.generated(since=mark)]}
            nb = present(nb, name, profile.name)
            nb.setdefault("metadata", {})["srilib"] = meta
            _atomic_write_text(output, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            entries[name] = {**meta, "status": "executed"}
            left = f"; {len(meta['failed_runs'])} run(s) left out" if meta["failed_runs"] else ""
            print(f"{tag}: done in {elapsed:.1f} s{left}", flush=True)
    finally:
        write_summary()
    print(f"run: {len(names)} notebook(s) in {summary['wall_s']:.1f} s; summary in {summary_path.relative_to(root)}")
    return summary
