"""End to end on a fixture: papermill run (widget state saved) -> jupyter-book build -W -> offline check.

A tiny notebook with a widget, a matplotlib figure and math is built into a temporary copy of the book (the real
_config.yml and book/*.md pages), so the pipeline is proven without the real notebooks or any model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from srilib import build, execute, record
from srilib.chapters import FAILED_RUN_KEY, output_records
from srilib.offline import check_offline
from srilib.experiment import load_profile

REPO = Path(__file__).resolve().parent.parent
VENDOR = REPO / "book" / "_static" / "vendor"
pytestmark = pytest.mark.slow


def fixture_notebook() -> nbformat.NotebookNode:
    """A notebook exercising what the book must render: parameters, math, a figure and a widget."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Fixture chapter\n\nInline math $\\sigma_t \\in (0, 1)$ and display\n\n"
                                      "$$\\ell_t = \\frac{\\log d_t^{h} - \\log d_t^{c}}{\\tau}$$"),
        nbformat.v4.new_code_cell("profile = 'unset'\nn = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
                                  "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\n"
                                  "ax.plot(range(n), [i * i for i in range(n)])\nplt.show()"),
        nbformat.v4.new_code_cell("import ipywidgets as w\nslider = w.IntSlider(value=n, min=0, max=10, "
                                  "description='steps')\nout = w.Output()\nwith out:\n    print('n =', n)\n"
                                  "w.VBox([slider, out])"),
        nbformat.v4.new_code_cell("print(profile, n)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def make_fixture_book(root: Path) -> Path:
    """Lay out a buildable book in ``root`` (fixture notebook, real config and pages); returns its profile."""
    (root / "notebooks").mkdir(parents=True)
    nbformat.write(fixture_notebook(), root / "notebooks" / "fixture.ipynb")
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    (root / "book").mkdir()
    # the real landing page pastes the four chapters' headlines, which this fixture book does not have
    (root / "book" / "intro.md").write_text("# Fixture book\n\nMath must typeset offline:\n\n$$\\sigma_t = 1$$\n")
    for page in ("reproduce.md", "references.md"):
        shutil.copy(REPO / "book" / page, root / "book" / page)
    shutil.copytree(VENDOR, root / "book" / "_static" / "vendor")
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n- file: book/executed/fixture\n"
        "- file: book/reproduce\n- file: book/references\n")
    prof = root / "fixture.yaml"
    prof.write_text("name: fixture\nhardware: cpu\ncommon: {profile: fixture}\nnotebooks:\n  fixture: {n: 5}\n")
    return prof


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (VENDOR / "VERSIONS.json").is_file():
        if os.environ.get("CI"):
            pytest.fail("book/_static/vendor is missing: run `python -m srilib vendor` (make vendor) first")
        pytest.skip("vendored JS missing; run `python -m srilib vendor` first")
    root = tmp_path_factory.mktemp("book")
    prof = load_profile(make_fixture_book(root))
    with pytest.MonkeyPatch.context() as mp:
        # the stamp covers the srilib source; pin its hash so that edits made meanwhile cannot change it
        mp.setattr(execute, "srilib_source_hash", lambda: "fixed")
        summary = execute.run_profile(prof, root)
        build.stage(root, prof.name)  # what make_book does between running and building
        html = build.build_book(root, profile=prof.name)
        yield root, html, summary, prof


def test_papermill_injects_parameters_and_saves_widget_state(built):
    root, _, summary, _ = built
    nb = json.loads((root / "book/executed/fixture.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("".join(o.get("text", "")) == "fixture 5\n" for o in outputs)  # injected parameters were used
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert {s["model_name"] for s in state.values()} >= {"IntSliderModel", "VBoxModel", "OutputModel"}
    assert nb["metadata"]["srilib"]["profile"] == "fixture" and nb["metadata"]["srilib"]["widget_state"]
    assert summary["notebooks"]["fixture"]["status"] == "executed"
    assert isinstance(summary["notebooks"]["fixture"]["elapsed_s"], float)  # printed by the execution table, else "–"
    on_disk = json.loads((root / "book/executed/run_summary.json").read_text())
    assert on_disk["profile"] == "fixture" and "fixture" in on_disk["notebooks"]


def test_rerun_is_skipped_until_parameters_change(built):
    root, _, _, prof = built
    again = execute.run_profile(prof, root)
    assert again["notebooks"]["fixture"]["status"] == "cached"
    changed = load_profile(root / "fixture.yaml")
    changed.notebook_params["fixture"]["n"] = 6  # new parameters -> new stamp
    assert execute.notebook_stamp(root / "notebooks/fixture.ipynb", changed.params_for("fixture")) != \
        again["notebooks"]["fixture"]["stamp"]


def test_built_pages_use_vendored_js_only(built):
    _, html, _, _ = built
    page = (html / "book/executed/fixture.html").read_text()
    assert 'type="application/vnd.jupyter.widget-state+json"' in page
    assert "application/vnd.jupyter.widget-view+json" in page
    assert "_static/vendor/require.js" in page and "_static/vendor/html-manager/dist/embed-amd.js" in page
    assert "_static/vendor/mathjax/tex-mml-chtml.js" in page
    assert (html / "_static/vendor/mathjax/tex-mml-chtml.js").is_file()
    assert list((html / "_images").glob("*.png")), "the matplotlib figure was not written"
    assert check_offline(html) == []
    assert (html / "index.html").is_file()


def test_chapter_folds_its_parameters_offers_downloads_and_is_in_the_execution_record(built):
    _, html, summary, _ = built
    page = (html / "book/executed/fixture.html").read_text()
    assert page.count('class="sd-sphinx-override sd-dropdown') == 1
    assert "n = 3" not in page  # the notebook's default is not shown; the injected n = 5 is, folded
    assert page.count('class="reference download internal"') == 2
    record = (html / "book/reproduce.html").read_text()
    started = summary["notebooks"]["fixture"]["started_at"]
    assert "<td><p>fixture</p></td>" in record and started in record


def test_toc_check_refuses_mixed_profiles(built):
    root, _, _, _ = built
    other = load_profile(root / "fixture.yaml").__class__(name="other", description="", hardware="cpu",
                                                         notebook_params={"fixture": {}})
    with pytest.raises(RuntimeError, match="executed with profile 'fixture', not 'other'"):
        build.check_toc(root, root / "_toc.yml", other)
    build.check_toc(root, root / "_toc.yml", load_profile(root / "fixture.yaml"))


def test_a_failing_chapter_and_a_failing_run_do_not_take_the_book_down(tmp_path, monkeypatch):
    """One notebook raises after gluing one result and before gluing another; another chapter reports a run it
    could not analyse. The book is still built (the landing page pastes both results), the failures are named in
    the chapters, and make_book ends with one line naming both."""
    if not (VENDOR / "VERSIONS.json").is_file():
        pytest.skip("vendored JS missing; run `python -m srilib vendor` first")
    root = tmp_path
    prof = make_fixture_book(root)
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    bad = nbformat.v4.new_notebook(metadata={"kernelspec": kernel})
    bad.cells = [nbformat.v4.new_markdown_cell("# Bad chapter"),
                 nbformat.v4.new_code_cell("from myst_nb import glue\nglue('early', 1.5, display=False)"),
                 nbformat.v4.new_code_cell("raise ValueError('mu_harmful has a zero-norm step')"),
                 nbformat.v4.new_code_cell("glue('late', 2.5, display=False)")]
    nbformat.write(bad, root / "notebooks" / "bad.ipynb")
    runs = nbformat.v4.new_notebook(metadata={"kernelspec": kernel})
    runs.cells = [nbformat.v4.new_markdown_cell("# Runs chapter"),
                  nbformat.v4.new_code_cell("from srilib.chapters import each_run\n"
                                            "def analyse(m):\n    if m == 'b':\n        raise KeyError('no traces')\n"
                                            "    return m.upper()\nresults = each_run(['a', 'b', 'c'], analyse)\n"
                                            "print(sorted(results.values()))")]
    nbformat.write(runs, root / "notebooks" / "runs.ipynb")
    (root / "book" / "intro.md").write_text("# Fixture book\n\n```{glue} early\n:doc: executed/bad.ipynb\n```\n\n"
                                            "```{glue} late\n:doc: executed/bad.ipynb\n```\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: book/executed/bad\n"
                                   "- file: book/executed/runs\n- file: book/executed/fixture\n")
    prof.write_text("name: fixture\nhardware: cpu\ncommon: {profile: fixture}\nnotebooks:\n  bad: {}\n"
                    "  runs: {}\n  fixture: {n: 5}\n")
    monkeypatch.setattr(build, "vendor_js", lambda root, force=False: None)
    monkeypatch.setattr(execute, "srilib_source_hash", lambda: "fixed")
    with pytest.raises(build.BookIncomplete) as e:
        build.make_book(load_profile(prof), root)
    # one line ending with one part per failure: the failed chapter with its error, the run left out with its error
    failed = record.failure_summary(json.loads((root / "book/executed/run_summary.json").read_text()))
    assert str(e.value).endswith(failed) and "\n" not in str(e.value)
    assert failed.split("; ") == ["bad FAILED (ValueError: mu_harmful has a zero-norm step)",
                                  "runs: run b left out (KeyError: 'no traces')"]
    html = build.html_dir(root, "fixture")
    landing = (html / "book/intro.html").read_text()
    assert "1.5" in landing and "Not available: the chapter bad failed" in landing
    bad_nb = json.loads((root / "book/executed/bad.ipynb").read_text())
    note = next(c for c in bad_nb["cells"] if c.get("id") == "srilib-failed")
    assert "`python -m srilib run --only bad`" in "".join(note["source"])  # the command that re-executes it after a fix
    assert (html / "book/executed/bad.html").is_file()
    runs_nb = json.loads((root / "book/executed/runs.ipynb").read_text())
    assert [r["run"] for r in output_records(runs_nb, FAILED_RUN_KEY)] == ["b"]  # reported where it failed
    assert "['A', 'C']" in (html / "book/executed/runs.html").read_text()  # the other runs were analysed
    assert (html / "book/executed/fixture.html").is_file()  # the chapter after the failure ran and was built
    summary = json.loads((root / "book/executed/run_summary.json").read_text())
    assert summary["notebooks"]["bad"]["status"] == "failed" and summary["notebooks"]["fixture"]["status"] == "executed"
    assert summary["notebooks"]["runs"]["failed_runs"][0]["run"] == "b"
    # a failed chapter is re-executed next time (no stamp), a good one is not
    again = execute.run_profile(load_profile(prof), root)
    assert again["notebooks"]["bad"]["status"] == "failed" and again["notebooks"]["fixture"]["status"] == "cached"


def test_profiles_live_side_by_side(tmp_path, monkeypatch):
    """Issue 27: building a second profile (as `make smoke-book` after `make book`) leaves the first profile's
    executed notebooks, run record and HTML byte for byte; building the first again only re-stages it."""
    if not (VENDOR / "VERSIONS.json").is_file():
        pytest.skip("vendored JS missing; run `python -m srilib vendor` first")
    root = tmp_path
    first = load_profile(make_fixture_book(root))
    (root / "second.yaml").write_text("name: second\nhardware: cpu\ncommon: {profile: second}\n"
                                      "notebooks:\n  fixture: {n: 7}\n")
    monkeypatch.setattr(build, "vendor_js", lambda root, force=False: None)
    monkeypatch.setattr(execute, "srilib_source_hash", lambda: "fixed")
    build.make_book(first, root)
    snap = lambda d: {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}  # noqa: E731
    store, html = record.profile_store(root, "fixture"), build.html_dir(root, "fixture")
    before_store, before_html = snap(store), snap(html)
    assert before_store and (html / "index.html").is_file()
    build.make_book(load_profile(root / "second.yaml"), root)
    assert snap(store) == before_store and snap(html) == before_html  # untouched
    assert (build.html_dir(root, "second") / "index.html").is_file()
    staged = json.loads((root / "book/executed/fixture.ipynb").read_text())
    assert staged["metadata"]["srilib"]["profile"] == "second"  # the pages read the profile built last
    again = execute.run_profile(first, root)
    assert again["notebooks"]["fixture"]["status"] == "cached"  # its own store: nothing re-executed
