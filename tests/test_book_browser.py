"""The built book in a real browser: headless Chromium over the DevTools protocol, served from 127.0.0.1.

Per page: no console errors or uncaught exceptions, no failed or off-machine requests, every image decoded,
MathJax typeset where there is math, widgets rendered where the notebook saved widget state. Screenshots go to
``_build/screenshots/``. Skipped unless the book is built (``make book`` or ``make smoke-book``) and Chromium is
installed (Debian: ``apt-get install chromium``); ``SRILIB_REQUIRE_BROWSER=1`` turns those skips into failures.
``SRILIB_BOOK_HTML=DIR`` checks another build.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The built book the tests read: $SRILIB_BOOK_HTML, else the $SRILIB_BOOK_PROFILE profile's (default cpu)
HTML = Path(os.environ.get("SRILIB_BOOK_HTML")
            or REPO / "_build" / os.environ.get("SRILIB_BOOK_PROFILE", "cpu") / "html")
SHOTS = HTML.parent / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM") or next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
     if p and Path(p).is_file()), None)
pytestmark = pytest.mark.browser

PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
               if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts)) if HTML.is_dir() else []


RENDERED_VIEWS = ("Array.from(document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]'))"
                  ".filter(s => s.previousElementSibling && s.previousElementSibling.matches('.widget-subarea')"
                  " && s.previousElementSibling.querySelector('.jupyter-widgets')).length")


def _missing() -> str | None:
    if not (HTML / "index.html").is_file():
        return f"no built book at {HTML} (run `make book`, or `make smoke-book` with SRILIB_BOOK_PROFILE=smoke)"
    if CHROMIUM is None:
        return "chromium not installed (Debian: apt-get install chromium)"
    return None


# ------------------------------------------------------------------------------------------- plumbing
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class CDP:
    """Minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        import websocket
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if "method" in msg:
                self.events.append(msg)
        self.ws.settimeout(30)

    def eval(self, expr: str):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr[:60]}...: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.eval(expr):
                return True
            self.pump(0.25)
        return False


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1000):
    """Headless Chromium with a DevTools connection (:class:`CDP`) to one blank tab; no host name resolves (a page
    that wants the network fails here without any traffic leaving), 127.0.0.1 excepted."""
    profile = tempfile.mkdtemp(prefix="srilib-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         f"--window-size={width},{height}", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": profile})  # its singleton socket dirs go away with the profile
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()) and proc.poll() is None:
            if time.monotonic() > end:
                pytest.fail("chromium did not open its DevTools port within 30 s")
            time.sleep(0.1)
        if proc.poll() is not None:
            pytest.fail(f"chromium exited with {proc.returncode} on start")
        port = int(port_file.read_text().split()[0])
        req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        target = json.loads(urllib.request.urlopen(req, timeout=10).read())
        cdp = CDP(target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable")
        yield cdp
        cdp.ws.close()
    finally:
        stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a helper process (browser, server), killing it when it does not exit within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("SRILIB_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with chromium() as cdp:
            yield cdp, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def load(cdp: CDP, url: str) -> None:
    cdp.events.clear()
    cdp.send("Page.navigate", url=url)
    end = time.monotonic() + 30
    while not any(e["method"] == "Page.loadEventFired" for e in cdp.events):
        if time.monotonic() > end:
            raise AssertionError(f"{url} did not finish loading in 30 s")
        cdp.pump(0.2)


def problems(cdp: CDP, origin: str) -> list[str]:
    """Console errors, exceptions, failed requests and requests that leave this machine."""
    out = []
    favicon = origin + "favicon.ico"  # requested by the browser itself, not by the page
    for e in cdp.events:
        m, p = e["method"], e["params"]
        if favicon in json.dumps(p):
            continue
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith((origin, "data:", "blob:", "about:")):
                out.append(f"off-machine request: {url}")
    return out


# ------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("page", PAGES or ["index.html"])
def test_page_renders_offline(browser, page):
    cdp, origin = browser
    load(cdp, origin + page)
    has_math = cdp.eval("document.querySelectorAll('div.math, span.math').length > 0")
    if has_math:
        assert cdp.wait_for("!!(window.MathJax && MathJax.startup && MathJax.startup.document"
                            " && document.querySelectorAll('mjx-container').length > 0)"), \
            f"{page}: math present but MathJax did not typeset it"
        cdp.eval("MathJax.startup.promise.then(() => true)")
    n_views = cdp.eval("document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]').length")
    has_state = cdp.eval("!!document.querySelector('script[type=\"application/vnd.jupyter.widget-state+json\"]')")
    if n_views:
        assert has_state, f"{page}: widget views but no saved widget state (papermill store_widget_state)"
        # html-manager renders each saved view into a .widget-subarea just before its view script
        assert cdp.wait_for(RENDERED_VIEWS + " === " + str(n_views)), \
            f"{page}: {n_views} widget view(s) saved but not rendered"
    cdp.wait_for("document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)", 15)
    cdp.pump(0.5)  # late console messages and requests
    broken = cdp.eval("Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = min(int(cdp.send("Page.getLayoutMetrics")["cssContentSize"]["height"]), 8000)
    cdp.send("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
    cdp.pump(0.3)
    shot = cdp.send("Page.captureScreenshot", format="png")["data"]
    cdp.send("Emulation.clearDeviceMetricsOverride")
    (SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")).write_bytes(base64.b64decode(shot))
    issues = problems(cdp, origin) + [f"image not decoded: {src}" for src in broken]
    assert not issues, f"{page}:\n  " + "\n  ".join(issues)


# ------------------------------------------------------------------------------------------- legibility
# Problems of layout on a page: an image shown at less than 60% of its natural width (a multi-panel figure
# squeezed into the column), a table wider than the content column outside a box that scrolls it, a code cell
# whose lines run past its box.
LAYOUT_JS = """(() => {
  const art = document.querySelector('.bd-article') || document.querySelector('main') || document.body;
  const W = art.getBoundingClientRect().width, out = [];
  for (const img of art.querySelectorAll('img')) {
    const w = img.getBoundingClientRect().width;
    if (img.naturalWidth && w > 0 && w < 0.6 * img.naturalWidth)
      out.push(`image shown at ${Math.round(100 * w / img.naturalWidth)}% of its natural ${img.naturalWidth} px: `
               + img.src.slice(0, 60));
  }
  for (const t of art.querySelectorAll('table')) {
    const r = t.getBoundingClientRect();
    if (r.width <= W + 1) continue;
    let el = t, ok = false;
    for (; el && el !== art; el = el.parentElement) {
      const s = getComputedStyle(el);
      if (['auto', 'scroll'].includes(s.overflowX) && el.getBoundingClientRect().width <= W + 1) { ok = true; break; }
    }
    if (!ok) out.push(`table ${Math.round(r.width)} px wide in a ${Math.round(W)} px column: `
                      + t.innerText.slice(0, 50).replace(/\\s+/g, ' '));
  }
  for (const pre of art.querySelectorAll('div.cell_input pre'))
    if (pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 1)
      out.push('code line wider than its cell: ' + pre.textContent.slice(0, 50).replace(/\\s+/g, ' '));
  return out;
})()"""
PARAMS_JS = """(() => {
  const art = document.querySelector('.bd-article') || document.body;
  const folded = Array.from(art.querySelectorAll('details')).filter(
      d => (d.querySelector('summary') || {}).textContent.includes('Parameters of this build')).length;
  const visible = Array.from(art.querySelectorAll('div.cell_input, div.cell pre')).filter(
      e => e.offsetParent !== null && /^\\s*# Parameters/.test(e.textContent)).length;
  return [folded, visible];
})()"""
CHAPTERS = [p for p in PAGES if p.startswith("book/executed/")]


def _settled(cdp: CDP, page: str, origin: str) -> None:
    load(cdp, origin + page)
    cdp.wait_for("document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)", 15)


@pytest.mark.parametrize("page", PAGES or ["index.html"])
def test_page_is_legible(browser, page):
    """Figures are shown at >= 60% of their natural width, tables fit or scroll, no reference to a file a reader
    cannot open (PAPER.md was the project's private summary of the paper)."""
    cdp, origin = browser
    _settled(cdp, page, origin)
    issues = cdp.eval(LAYOUT_JS)
    if cdp.eval("document.body.textContent.includes('PAPER.md')"):
        issues.append("the page mentions PAPER.md, which is not part of the book")
    assert not issues, f"{page}:\n  " + "\n  ".join(issues)


@pytest.mark.parametrize("page", CHAPTERS or ["book/executed/none.html"])
def test_chapter_shows_its_parameters_once(browser, page):
    cdp, origin = browser
    _settled(cdp, page, origin)
    folded, visible = cdp.eval(PARAMS_JS)
    assert (folded, visible) == (1, 0), f"{page}: {folded} 'Parameters of this build' block(s), {visible} visible " \
                                        "parameter cell(s); want exactly one folded block"
    links = cdp.eval("Array.from(document.querySelectorAll('a.download')).map(a => a.getAttribute('href'))")
    assert any(h.endswith(Path(page).stem + ".ipynb") for h in links) and len(links) >= 2, links


def test_legibility_check_catches_a_squeezed_figure_and_a_wide_table(browser):
    """Mutation check of LAYOUT_JS on a real chapter page: a five-panel, single-row figure at the old size and a
    table that does not scroll must both be flagged; a wide table in a chapter's output box scrolls and passes."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cdp, origin = browser
    page = (CHAPTERS or PAGES or ["index.html"])[0]
    _settled(cdp, page, origin)
    assert cdp.eval(LAYOUT_JS) == []
    fig, axes = plt.subplots(1, 5, figsize=(5.2 * 5, 3.8), dpi=110)  # the old one-panel-per-run layout
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    cells = "".join(f"<td>{'column %d of a wide table' % i}</td>" for i in range(40))
    cdp.eval(f"""(() => {{ const art = document.querySelector('.bd-article') || document.body;
        art.insertAdjacentHTML('beforeend', '<div class="cell_output"><img id="m-img" src="{src}"></div>'
          + '<div class="cell_output"><table id="m-ok"><tr>{cells}</tr></table></div>'
          + '<div><table id="m-bad" style="display:table"><tr>{cells}</tr></table></div>'); return true; }})()""")
    assert cdp.wait_for("document.getElementById('m-img').complete", 10)
    found = cdp.eval(LAYOUT_JS)
    assert any(f.startswith("image shown at") and "2860" in f for f in found), found  # its natural width
    assert sum(f.startswith("table ") for f in found) == 1, found  # m-bad only: m-ok scrolls in its box


# ------------------------------------------------------------------------------------------- findings first
# Issue 23: every analysis chapter opens with its findings. The top of the "At a glance" section's table (or of
# its "no finding" line, e.g. in a smoke build) in page pixels at 1366 px, -1 when the section is missing.
GLANCE_TOP_JS = """(() => {
  const h = Array.from(document.querySelectorAll('h2')).find(e => /At a glance/.test(e.textContent));
  if (!h) return -1;
  const sec = h.closest('section') || h.parentElement;
  const t = sec.querySelector('table') || Array.from(sec.querySelectorAll('p, em')).find(
      e => /No finding/.test(e.textContent));
  return t ? t.getBoundingClientRect().top + window.scrollY : -1;
})()"""
# Process noise: stderr blocks of executed cells, and absolute paths of the machine that built the book.
NOISE_JS = """(() => {
  const art = document.querySelector('.bd-article') || document.body, out = [];
  for (const e of art.querySelectorAll('.output.stderr, .stderr'))
    out.push('stderr block: ' + e.textContent.slice(0, 80).replace(/\\s+/g, ' '));
  const m = art.innerText.match(/(^|[\\s'"(=])(\\/(home|work|tmp|root|Users|usr|opt|var)\\/[^\\s'")]+)/);
  if (m) out.push('absolute path: ' + m[2]);
  return out;
})()"""
ANALYSES = [p for p in CHAPTERS if Path(p).stem in ("sri_geometry", "sampling_vs_representation",
                                                    "incomplete_recovery", "detector_transfer")]


@pytest.mark.parametrize("page", ANALYSES or ["book/executed/none.html"])
def test_chapter_opens_with_its_findings(browser, page):
    cdp, origin = browser
    cdp.send("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1, mobile=False)
    try:
        _settled(cdp, page, origin)
        top = cdp.eval(GLANCE_TOP_JS)
    finally:
        cdp.send("Emulation.clearDeviceMetricsOverride")
    assert 0 <= top <= 1500, f"{page}: the at-a-glance table starts at {top} px (want within the first 1,500 px)"


@pytest.mark.parametrize("page", PAGES or ["index.html"])
def test_pages_carry_no_process_noise(browser, page):
    cdp, origin = browser
    _settled(cdp, page, origin)
    found = cdp.eval(NOISE_JS)
    assert not found, f"{page}:\n  " + "\n  ".join(found)


def test_noise_check_catches_a_warning_and_a_local_path(browser):
    cdp, origin = browser
    page = (CHAPTERS or PAGES or ["index.html"])[0]
    _settled(cdp, page, origin)
    cdp.eval("""(() => { const art = document.querySelector('.bd-article') || document.body;
        art.insertAdjacentHTML('beforeend', '<div class="output stderr"><pre>/work/x/site-packages/a.py:1: '
          + 'FutureWarning: gone</pre></div>'); return true; })()""")
    found = cdp.eval(NOISE_JS)
    assert any(f.startswith("stderr block") for f in found) and any(f.startswith("absolute path") for f in found)


# ------------------------------------------------------------------------------------------- model output
def test_model_output_renders_literally(browser):
    """Issue 23: model output is shown escaped, never read as Markdown. A generation with ``**`` and a blank line,
    as srilib renders every generation it shows (srilib.figures.output_html), reads as written on a
    chapter page in the browser; and every generation the built chapters show holds no markup."""
    import json

    from srilib.figures import output_html

    cdp, origin = browser
    page = next((p for p in CHAPTERS if "incomplete_recovery" in p), (CHAPTERS or PAGES or ["index.html"])[0])
    _settled(cdp, page, origin)
    shown = cdp.eval("""Array.from(document.querySelectorAll('.srilib-output')).filter(
        e => e.querySelector('*') !== null).length""")
    assert shown == 0, f"{page}: {shown} generation(s) rendered with markup"
    text = "**Crystal meth**\n\nStep 1: <b>heat</b>"
    cdp.eval(f"""(() => {{ const art = document.querySelector('.bd-article') || document.body;
        art.insertAdjacentHTML('beforeend', '<div class="cell_output" id="m-out">' + {json.dumps(output_html(text))}
                               + '</div>'); return true; }})()""")
    assert cdp.eval("document.getElementById('m-out').innerText") == text
    assert cdp.eval("document.getElementById('m-out').querySelector('strong, b, em, li, p') === null")


def test_no_run_of_the_built_profile_was_left_out():
    """Every run of every chapter of the built profile was analysed (run summary: no ``failed_runs``). On the smoke
    profile (what CI builds) that includes the tiny DiffusionGemma, the one real DLM code path runnable without the
    Hub, in every chapter."""
    profile = os.environ.get("SRILIB_BOOK_PROFILE", "cpu")
    summary = REPO / "book" / "executed" / profile / "run_summary.json"
    if not summary.is_file():
        if os.environ.get("SRILIB_REQUIRE_BROWSER"):
            pytest.fail(f"no run summary at {summary}")
        pytest.skip(f"no run summary at {summary} (build the {profile} book first)")
    nbs = json.loads(summary.read_text())["notebooks"]
    assert {n: e.get("failed_runs") for n, e in nbs.items() if e.get("failed_runs")} == {}
    if profile == "smoke":
        assert all(any(str(r).startswith("tiny-diffusiongemma") for r in e["params"]["runs"]) for e in nbs.values())
