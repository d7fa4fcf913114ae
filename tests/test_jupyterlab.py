"""Issue 28: a chapter notebook as a researcher opens it. JupyterLab serves the geometry notebook with the smoke
profile's parameters injected (as papermill would), headless Chromium opens it, Run All executes every cell, then
the live explorer's run selector and τ slider are moved: its status line and plot must follow, and the browser
console must stay free of errors. Runs after the smoke book (its traces are in the cache), in about 20 s."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_book_browser import CHROMIUM, REPO, _missing, chromium, load, problems, stop

pytestmark = pytest.mark.browser
JUPYTER = Path(sys.executable).with_name("jupyter")
EXPLORER = "document.querySelector('.jp-OutputArea .widget-vbox.sri-explorer')"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    why = _missing() or (None if JUPYTER.is_file() else f"no jupyter at {JUPYTER}")
    if why:
        if os.environ.get("SRILIB_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    import papermill

    from srilib.experiment import load_profile

    root = tmp_path_factory.mktemp("lab")
    papermill.execute_notebook(str(REPO / "notebooks" / "sri_geometry.ipynb"), str(root / "sri_geometry.ipynb"),
                               parameters=load_profile("smoke").params_for("sri_geometry"), prepare_only=True,
                               progress_bar=False)
    port, token = _free_port(), "srilib-test"
    env = {**os.environ, "SRILIB_CACHE": os.environ.get("SRILIB_CACHE") or str(REPO / ".cache"),
           "TQDM_DISABLE": "1", "JUPYTER_CONFIG_DIR": str(root / ".jupyter"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([str(JUPYTER), "lab", "--allow-root", "--no-browser", f"--ServerApp.port={port}",
                             "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
                             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=root)
    try:
        url = f"http://127.0.0.1:{port}/"
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    pytest.fail("jupyter lab did not start within 60 s")
                time.sleep(0.3)
        yield url, token
    finally:
        stop(proc, 15)
        shutil.rmtree(root, ignore_errors=True)


def _click(cdp, element_js: str) -> None:
    """A real mouse click (move, press, release) on the centre of the element ``element_js`` evaluates to."""
    xy = cdp.eval(f"(() => {{ const e = {element_js}; if (!e) return null; e.scrollIntoView({{block: 'center'}}); "
                  "const b = e.getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; })()")
    assert xy, f"nothing to click: {element_js}"
    cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=xy[0], y=xy[1])
    cdp.pump(0.2)
    for kind in ("mousePressed", "mouseReleased"):
        cdp.send("Input.dispatchMouseEvent", type=kind, x=xy[0], y=xy[1], button="left", clickCount=1)


def _menu(cdp, menu: str, item: str) -> None:
    _click(cdp, f"Array.from(document.querySelectorAll('.lm-MenuBar-itemLabel')).find(e => e.textContent.trim() "
                f"=== {menu!r})")
    cdp.pump(0.4)
    _click(cdp, f"Array.from(document.querySelectorAll('.lm-Menu-itemLabel')).find(e => e.textContent.trim() "
                f"=== {item!r})")


def _status(cdp) -> str:
    return cdp.eval(EXPLORER + ".querySelector('.widget-html-content').textContent")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
def test_run_all_in_jupyterlab_then_drive_the_live_explorer(lab):
    url, token = lab
    with chromium(1400, 1000) as cdp:
        load(cdp, f"{url}lab/tree/sri_geometry.ipynb?token={token}")
        assert cdp.wait_for("!!document.querySelector('.jp-NotebookPanel .jp-Cell')", 60), "the notebook did not open"
        assert cdp.wait_for("/Python/.test((document.querySelector('.jp-KernelName, .jp-Toolbar-kernelName') || "
                            "{}).textContent || '')", 60), "no kernel"
        cdp.pump(2)
        t0 = time.monotonic()
        _menu(cdp, "Run", "Run All Cells")
        finished = """(() => { const p = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))
            .map(e => e.textContent); return p.length > 0 && p.every(x => /\\[\\d+\\]/.test(x)); })()"""
        assert cdp.wait_for(finished, 240), "Run All did not finish within 4 minutes"
        run_all_s = time.monotonic() - t0
        errors = cdp.eval("Array.from(document.querySelectorAll('.jp-OutputArea-output[data-mime-type="
                          "\"application/vnd.jupyter.stderr\"], .jp-RenderedText[data-mime-type="
                          "\"application/vnd.jupyter.error\"]')).map(e => e.textContent.slice(0, 300))")
        assert not [e for e in errors if "Error" in e or "Traceback" in e], errors
        assert cdp.wait_for(f"!!{EXPLORER} && !!{EXPLORER}.querySelector('img')", 30), "no live explorer"

        runs = cdp.eval(f"Array.from({EXPLORER}.querySelector('select').options).map(o => o.textContent)")
        assert len(runs) >= 2 and any("dlm" in r for r in runs), runs  # every run, diffusion runs included
        before, img0 = _status(cdp), cdp.eval(f"{EXPLORER}.querySelector('img').src")
        assert before.startswith(tuple(runs)), before  # the status line names the run shown
        other = next(r for r in runs if not before.startswith(r))
        cdp.eval(f"""(() => {{ const s = {EXPLORER}.querySelector('select');
            s.selectedIndex = Array.from(s.options).findIndex(o => o.textContent === {other!r});
            s.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()""")
        assert cdp.wait_for(f"{EXPLORER}.querySelector('.widget-html-content').textContent.startsWith({other!r})", 20)
        assert cdp.eval(f"{EXPLORER}.querySelector('img').src") != img0  # the plot was redrawn

        tau0 = cdp.eval(f"{EXPLORER}.querySelector('.widget-readout').textContent")
        cdp.eval(f"{EXPLORER}.querySelector('.noUi-handle').focus()")
        for _ in range(3):
            for kind in ("keyDown", "keyUp"):
                cdp.send("Input.dispatchKeyEvent", type=kind, key="ArrowRight", code="ArrowRight",
                         windowsVirtualKeyCode=39)
        moved = f"{EXPLORER}.querySelector('.widget-readout').textContent !== {tau0!r}"
        assert cdp.wait_for(moved, 10), "the τ slider did not move"
        tau1 = cdp.eval(f"{EXPLORER}.querySelector('.widget-readout').textContent")
        assert cdp.wait_for(f"{EXPLORER}.querySelector('.widget-html-content').textContent.includes('τ = {tau1}')",
                            20), _status(cdp)  # the kernel recomputed σ for the new τ
        found = [p for p in problems(cdp, url) if not p.startswith("off-machine request")]
        assert not found, found
    print(f"\nJupyterLab Run All of sri_geometry (smoke profile, warm cache): {run_all_s:.1f} s")
