"""Runner pieces that need no notebook execution: offline check, toc check, stamps, errors, CLI, benchmarks."""
from __future__ import annotations

import json
import re
import sys

import pytest

from srilib import build, execute, record
from srilib.bench import run_benchmarks
from srilib.offline import check_offline
from srilib.organisms.parallel import training_groups
from srilib.__main__ import main
from srilib.experiment import available_profiles, parse_profile


def md_rows(md: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``md``."""
    return [[c.strip() for c in line.strip()[1:-1].split("|")] for line in md.splitlines() if line.startswith("|")]


PAGE = """<html><head>
<script src="_static/local.js"></script>
<script src="https://cdn.example.org/lib.js"></script>
<link rel="stylesheet" href="//cdn.example.org/style.css">
<link rel="canonical" href="https://example.org/page.html">
<link rel="stylesheet" href="_static/local.css">
<script>var LAZY = "https://cdn.example.org/later.min.js?v=1"; var page = "https://example.org/";</script>
<script type="application/json">{"u": "https://example.org/not-loaded.js"}</script>
<script src="_static/embed.js" data-jupyter-widgets-cdn="https://cdn.jsdelivr.net/npm/"></script>
<style>@import url("https://fonts.example.org/f.css");</style>
</head><body>
<a href="https://example.org/paper.pdf">paper</a>
<img src="_images/local.png"><img src="http://example.org/remote.png">
<div style="background: url(https://example.org/bg.png)"></div>
</body></html>"""


def test_check_offline_flags_every_remote_load(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.html").write_text(PAGE)
    (tmp_path / "ok.html").write_text('<script src="_static/a.js"></script><a href="https://x.org">x</a>')
    (tmp_path / "s.css").write_text("a{background:url('https://example.org/i.png')} b{src:url(fonts/x.woff)}")
    found = check_offline(tmp_path)
    urls = sorted(f.split(" ")[-1] for f in found)
    assert urls == sorted(["https://cdn.example.org/lib.js", "//cdn.example.org/style.css",
                           "https://cdn.example.org/later.min.js?v=1", "https://cdn.jsdelivr.net/npm/",
                           "https://fonts.example.org/f.css", "http://example.org/remote.png",
                           "https://example.org/bg.png", "https://example.org/i.png"])
    assert all(f.startswith(("sub/p.html:", "s.css:")) for f in found)


def test_toc_files_and_check_toc(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n- caption: A\n  chapters:\n"
                   "  - file: book/executed/one\n  - file: book/executed/two\n  - file: book/gone\n")
    assert build.toc_files(toc) == ["book/intro", "book/executed/one", "book/executed/two", "book/gone"]
    (tmp_path / "book/executed").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book/intro.md").write_text("# hi\n")
    (tmp_path / "notebooks/one.ipynb").write_text("{}")
    prof = parse_profile({"name": "cpu", "hardware": "cpu", "notebooks": {"one": {}}})
    with pytest.raises(RuntimeError) as e:
        build.check_toc(tmp_path, toc, prof)
    msg = str(e.value)
    # every problem at once, one line per page, each naming its fix: the command, the notebook to write
    assert [line.split(":")[0].strip() for line in msg.splitlines()[1:]] == \
        ["book/executed/one", "book/executed/two", "book/gone"]
    assert "--profile cpu --only one" in msg and "notebooks/two.ipynb" in msg
    (tmp_path / "book/executed/one.ipynb").write_text(json.dumps({"metadata": {"srilib": {"profile": "cpu"}}}))
    toc.write_text("root: book/intro\nchapters:\n- file: book/executed/one\n")
    build.check_toc(tmp_path, toc, prof)


def test_stamp_tracks_source_params_and_code(tmp_path):
    nb = tmp_path / "a.ipynb"
    nb.write_text('{"cells": []}')
    s = execute.notebook_stamp(nb, {"n": 1}, "code1")
    assert s == execute.notebook_stamp(nb, {"n": 1}, "code1")
    assert s != execute.notebook_stamp(nb, {"n": 2}, "code1")
    assert s != execute.notebook_stamp(nb, {"n": 1}, "code2")
    nb.write_text('{"cells": [1]}')
    assert s != execute.notebook_stamp(nb, {"n": 1}, "code1")


def test_run_profile_names_missing_sources_and_unknown_only(tmp_path):
    prof = parse_profile({"name": "p", "hardware": "cpu", "notebooks": {"alpha": {}, "beta": {}}})
    with pytest.raises(FileNotFoundError, match=r"notebooks/alpha.ipynb, notebooks/beta.ipynb"):
        execute.run_profile(prof, tmp_path)
    with pytest.raises(ValueError, match=r"--only \['gamma'\]: not in profile 'p'"):
        execute.run_profile(prof, tmp_path, only=["gamma"])


def test_find_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="no _toc.yml"):
        build.find_root(tmp_path)
    (tmp_path / "_toc.yml").write_text("root: x\n")
    assert build.find_root(tmp_path) == tmp_path.resolve()


def test_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager
    assert execute.ensure_kernel() == "python3"
    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    assert argv0 in ("python", "python3", f"python3.{sys.version_info[1]}", sys.executable)


def test_git_info_outside_a_repo(tmp_path):
    assert record.git_info(tmp_path) == {"commit": None, "dirty": None}


def test_cli_errors_and_profiles(tmp_path, capsys):
    (tmp_path / "_toc.yml").write_text("root: x\n")
    assert main(["--root", str(tmp_path), "run", "--profile", "nope"]) == 1
    err = capsys.readouterr().err
    assert all(name in err for name in available_profiles())  # the profiles to pick from
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "paper" in out
    assert main(["--root", str(tmp_path), "check"]) == 1
    assert "make book" in capsys.readouterr().err
    (tmp_path / "_build/smoke/html").mkdir(parents=True)
    (tmp_path / "_build/smoke/html/index.html").write_text('<script src="https://cdn.example.org/x.js"></script>')
    assert main(["--root", str(tmp_path), "check"]) == 1  # the cpu book (default) is not built
    assert "_build/cpu/html/index.html" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "check", "--profile", "smoke"]) == 1
    assert "cdn.example.org" in capsys.readouterr().out


def test_bench_runs_each_file_and_counts_failures(tmp_path, capsys):
    assert run_benchmarks(tmp_path) == 0
    assert "benchmarks/*.py" in capsys.readouterr().out
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "ok.py").write_text("print('fast')\n")
    (tmp_path / "benchmarks" / "bad.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "benchmarks" / "_helper.py").write_text("raise SystemExit(9)\n")
    assert run_benchmarks(tmp_path) == 1
    done = re.findall(r"bench: (\S+) (ok|FAILED \(exit \d+\)) in", capsys.readouterr().out)
    assert done == [("bad.py", "FAILED (exit 3)"), ("ok.py", "ok")]  # _helper.py is not a benchmark
    assert run_benchmarks(tmp_path, ["ok"]) == 0
    with pytest.raises(ValueError, match="no benchmarks/missing.py"):
        run_benchmarks(tmp_path, ["missing"])


def test_organisms_among_and_training_groups():
    models = ["tiny-ar", "organism-dlm-tiny", "smollm2-135m-refusal-tiny", "smollm2-135m", "organism-dlm-tiny"]
    assert execute.organisms_among(models) == ["organism-dlm-tiny", "smollm2-135m-refusal-tiny"]
    assert execute.organisms_among(["organism-ar", "tiny-dlm"], to_train=True) == []  # shipped weights: loaded
    # the DLM starts from the AR organism's snapshot: same group, AR first; the SmolLM2 fine-tune is independent
    assert training_groups(["organism-dlm-tiny", "smollm2-135m-refusal-tiny", "organism-ar-tiny"]) == \
        [["organism-ar-tiny", "organism-dlm-tiny"], ["smollm2-135m-refusal-tiny"]]
    assert training_groups([]) == []


@pytest.mark.slow
def test_pretrain_organisms_trains_groups_in_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRILIB_CACHE", str(tmp_path))
    done = execute.pretrain_organisms(["organism-dlm-tiny"], tmp_path, heartbeat=0.0)
    assert list(done) == ["organism-ar-tiny -> organism-dlm-tiny"]
    assert len(list((tmp_path / "models").glob("organism-dlm-tiny-*/DONE"))) == 1
    assert "organism-dlm-tiny" in (tmp_path / "organisms" / "train-organism-dlm-tiny.log").read_text()
    assert execute.pretrain_organisms(["tiny-ar"], tmp_path) == {}


def test_present_folds_the_parameters_once_and_links_the_downloads():
    def cell(kind, src, tags=()):
        return {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": src}

    nb = {"cells": [cell("markdown", "# Chapter"), cell("code", "n = 3", ["parameters"]),
                    cell("code", "# Parameters\nn = 5\n", ["injected-parameters"]), cell("code", "print(n)")]}
    out = execute.present(nb, "sri_geometry", "cpu")
    assert out == execute.present(out, "sri_geometry", "cpu")  # idempotent
    kinds = [c.get("id") or c["cell_type"] for c in out["cells"]]
    assert kinds == ["markdown", "srilib-downloads", "code", "code", "srilib-params", "code"]
    assert all("remove-cell" in c["metadata"]["tags"] for c in out["cells"][2:4])
    params = out["cells"][4]["source"]
    assert "`cpu`" in params and params.split("```python\n")[1].split("\n```")[0] == "# Parameters\nn = 5"
    links = out["cells"][1]["source"]
    assert "<sri_geometry.ipynb>" in links and "<../../notebooks/sri_geometry.ipynb>" in links
    # a notebook run with its defaults shows the defaults
    plain = execute.present({"cells": nb["cells"][:2]}, "x", "smoke")
    assert "n = 3" in plain["cells"][-1]["source"]


def test_execution_table_lists_each_chapter():
    summary = {"profile": "cpu", "hardware": "cpu", "finished_at": "2026-11-29T17:00:00+00:00", "wall_s": 812.0,
               "organisms_s": {"organism-ar -> organism-dlm": 1580.2},
               "notebooks": {"a": {"profile": "cpu", "started_at": "2026-11-29T16:50:00+00:00", "elapsed_s": 281.4,
                                   "status": "executed", "git_commit": "e00a3bbcafe1234", "failed_runs": [],
                                   "traces_generated": []},
                             "b": {"profile": "cpu", "status": "failed", "error": "ValueError: x | y",
                                   "elapsed_s": 3.0, "failed_runs": [{"run": "m@ar", "error": "E"}],
                                   "traces_generated": ["m@ar raw", "m@ar harmless"]}},
               "trace_plan": {"distinct": 40, "computed": 31, "cached": 9, "failed": [("c", "m@ar", "raw", "E")],
                              "seconds": 612.4}}
    md = record.execution_table(summary)
    assert md_rows(md)[2:] == [
        ["a", "cpu", "2026-11-29T16:50:00+00:00", "281 s", "executed", "none", "0 (all from the trace plan)",
         "e00a3bbcaf"],
        ["b", "cpu", "–", "3 s", "failed: ValueError: x / y", "m@ar", "2", "–"]]
    head = md.split("\n\n")[0]  # organism training and the trace plan, with their numbers
    assert "organism-ar -> organism-dlm 1580 s" in head and "(9 were in the cache, 1 failed) in 612 s" in head
    assert "(E)" in record.execution_table({**summary, "trace_plan": {"error": "E"}})


def test_paper_page_tables_come_from_the_chapters_constants():
    from srilib.chapters.paper_numbers import PAPER_ABLATION
    from srilib.chapters.paper_numbers import PAPER_TABLE3
    from srilib.paper import published_tables

    md = published_tables()
    rows = md_rows(md)
    starts = [r[:5] for r in rows]  # the first cells of each row
    assert ["LLaMA-3", "AR", "83 / 13", "23.4 / 59.2", "1 / 98"] in starts
    assert ["LLaDA-1.5", "+15 / +21", "+38 / +60", "+0 / +2", "+52 / +20"] in starts
    assert ["SRI, last layer (SRI Guard)", "0.920 ± 0.047"] in rows and ["DIJA", "0.76", "0.59", "0.29"] in rows
    assert md.count("\n### ") + md.startswith("### ") == 7  # Tables 1-4, 13, 14 and Figures 5-6
    by_model = {r[0]: r for r in rows if r[1] in ("AR", "DLM")}  # Table 3: model, family, RR / ASR per attack
    for model, cols in PAPER_TABLE3.items():  # every Table 3 cell, as the chapters hold it
        assert by_model[model][2:] == [f"{rr:g} / {asr:g}" for rr, asr in cols.values()]
    cells = {c for r in rows for c in r}
    assert {f"{m:.3f} ± {s:.3f}" for m, s in PAPER_ABLATION.values()} <= cells
