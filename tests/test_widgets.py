"""Trace explorers on synthetic traces (no model): live ipywidgets redraws, static HTML/JS data and rendering."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from srilib.explorer_static import CLASSIFY_BEGIN, CLASSIFY_END, explorer_data, static_explorer
from srilib.signal import internal_recovery_rate
from srilib.judges import text_signals
from srilib.signal import ZONE_NAMES, Anchors, zone
from srilib.traces import RUN_SEPARATOR, TraceSet
from srilib.widgets import _recovered, _recovery_status, _zone_name, slim, sri_explorer, step_segments

T, D = 8, 16
WORDS = ("Sure , here is how you do it : first take the flour and mix it with water . I'm sorry but I "
         "cannot help with that request https://example.com/x.js </script> <b>bold</b> & more 😀").split()


def make_anchors(seed: int = 1) -> Anchors:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(D)
    return Anchors(mu_harmless=base + 0.6 * rng.standard_normal((T, D)),
                   mu_harmful=base + 0.6 * rng.standard_normal((T, D)), n_harmless=5, n_harmful=5)


def _phi(rng, n, a: Anchors) -> np.ndarray:
    w = rng.uniform(0, 1, size=(n, T, 1))
    phi = w * a.mu_harmless + (1 - w) * a.mu_harmful + 0.3 * rng.standard_normal((n, T, D))
    return phi[:, :, None, :].astype(np.float32)


def ar_set(n: int, a: Anchors, seed: int = 0) -> TraceSet:
    rng = np.random.default_rng(seed)
    tokens = np.full((n, T, T), -1, np.int32)
    committed = np.zeros((n, T, T), bool)
    for t in range(T):
        tokens[:, t, : t + 1], committed[:, t, : t + 1] = 5, True
    steps = []
    for _ in range(n):
        s = int(rng.integers(0, len(WORDS) - T))
        steps.append([" ".join(WORDS[s:s + t + 1]) for t in range(T)])
    return TraceSet(prompts=[f"prompt {i} <x> & y" for i in range(n)], tokens=tokens, committed=committed,
                    predictions=tokens.copy(), pooled={"generated": _phi(rng, n, a)}, layers=[-1],
                    texts=[s[-1] for s in steps], step_texts=steps, meta={"sampler": "ar"})


def dlm_set(tok, n: int, a: Anchors, L: int = 16, seed: int = 0) -> TraceSet:
    """Like a diffusion sampler's output: random commit order, noisy predictions at masked positions."""
    rng = np.random.default_rng(seed)
    eos = tok.eos_token_id
    vocab = [i for i in range(len(tok)) if i not in tok.all_special_ids]
    tokens = np.full((n, T, L), -1, np.int32)
    committed = np.zeros((n, T, L), bool)
    preds = np.zeros((n, T, L), np.int32)
    steps, predt, step_runs = [], [], []
    for i in range(n):
        s = int(rng.integers(0, len(WORDS) - 10))
        ids = tok.encode(" ".join(WORDS[s:s + 10]))[: L - 2]
        ids = np.array(ids + [eos] * (L - len(ids)))
        order = rng.permutation(L)
        st, pt, rt = [], [], []
        for t in range(T):
            c = np.zeros(L, bool)
            c[order[: (t + 1) * L // T]] = True
            p = ids.copy()
            noise = ~c & (rng.uniform(size=L) < 0.5)
            p[noise] = rng.choice(vocab, size=int(noise.sum()))
            committed[i, t], preds[i, t], tokens[i, t] = c, p, np.where(c, ids, -1)
            cut = next((j for j in range(L) if c[j] and ids[j] == eos), L)
            st.append(tok.decode([int(ids[j]) for j in range(cut) if c[j]], skip_special_tokens=True))
            runs = [[]]  # contiguous committed runs (what the refusal dictionary may match), as the sampler records
            for j in range(cut):
                if c[j]:
                    runs[-1].append(int(ids[j]))
                elif runs[-1]:
                    runs.append([])
            rt.append(RUN_SEPARATOR.join(x for x in tok.batch_decode([r for r in runs if r], skip_special_tokens=True)
                                         if x.strip()))
            pcut = next((j for j in range(L) if p[j] == eos), L)
            pt.append(tok.decode(p[:pcut].tolist(), skip_special_tokens=True))
        steps.append(st)
        predt.append(pt)
        step_runs.append(rt)
    return TraceSet(prompts=[f"dlm prompt {i}" for i in range(n)], tokens=tokens, committed=committed,
                    predictions=preds, pooled={"generated": _phi(rng, n, a)}, layers=[-1],
                    texts=[s[-1] for s in steps], step_texts=steps, pred_texts=predt, step_runs=step_runs,
                    meta={"sampler": "lc"})


@pytest.fixture(scope="module")
def tok():
    from srilib.tiny import tiny_tokenizer
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def data(tok):
    a = make_anchors()
    return a, {"harmless": ar_set(5, a, 0), "harmful": ar_set(6, a, 3), "dlm": dlm_set(tok, 4, a, seed=5)}


@pytest.fixture(autouse=True)
def no_model(monkeypatch):
    """Explorers must never load or run a model."""
    import srilib.models
    import srilib.traces

    def boom(*a, **k):
        raise AssertionError("an explorer tried to load or run a model")
    monkeypatch.setattr(srilib.models, "load_model", boom)
    monkeypatch.setattr(srilib.traces, "generate_traces", boom)


# ------------------------------------------------------------------------------------------- live widget
def test_live_explorer_redraws_from_phi(data):
    import ipywidgets as W
    a, sets = data
    ex = sri_explorer(sets, a, tau=0.1)
    assert isinstance(ex, W.VBox)
    ex.set_select.value = "harmless"  # it opened on a recovery (test below); the harmless set's first generation
    assert ex.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    phi = sets["harmless"].phi()
    np.testing.assert_allclose(ex.sigma_line.get_ydata(), a.signal(phi, tau=0.1)[0])
    png0, y0 = ex.image.value, np.array(ex.sigma_line.get_ydata())
    ex.tau.value = 0.3
    y1 = np.array(ex.sigma_line.get_ydata())
    np.testing.assert_allclose(y1, a.signal(phi, tau=0.3)[0])
    assert not np.allclose(y0, y1) and ex.image.value != png0
    ex.prompt.value = 2
    np.testing.assert_allclose(ex.sigma_line.get_ydata(), a.signal(phi, tau=0.3)[2])
    np.testing.assert_array_equal(ex.text_line.get_ydata(), text_signals(sets["harmless"].step_texts)[2])


def test_live_explorer_step_threshold_and_set(data):
    a, sets = data
    ex = sri_explorer(sets, a)
    ex.set_select.value = "harmless"
    ex.step.value = 3
    assert list(ex.step_line.get_xdata()) == [3, 3]
    ts = sets["harmless"]
    new = ts.step_texts[0][2][len(ts.step_texts[0][1]):]
    assert "3/8" in ex.status.value and "#deebf7" in ex.text.value  # the token added at step 3 is highlighted
    assert new.replace("&", "&amp;").replace("<", "&lt;") in ex.text.value
    ex.lam.value = 0.5
    assert list(ex.lam_line.get_ydata()) == [0.5, 0.5]
    rate = internal_recovery_rate(a.signal(ts, tau=0.1), lambda_r=0.5)[0.5]
    assert str(rate) in ex.status.value
    ex.set_select.value = "dlm"
    assert len(ex.prompt.options) == 4 and ex.prompt.value == 0
    assert "committed" in ex.status.value and "font-style:italic" in ex.text.value  # predicted positions shown


def test_live_explorer_picks_the_run_and_opens_on_a_recovery(data):
    """Issue 28: the live explorer lists every run given; each opens on its first harmful generation that meets the
    IRR criterion at the current τ and λ_r; switching runs swaps the traces, anchors and step range."""
    from srilib.widgets import ExplorerRun, _recovered

    a, sets = data
    short = {k: ts.subset([0, 1]) for k, ts in sets.items() if k != "dlm"}
    runs = {"x@ar": ExplorerRun(short, a), "y@low_confidence": ExplorerRun(sets, a)}
    ex = sri_explorer(runs, start="y@low_confidence")
    assert list(ex.run_select.options) == ["x@ar", "y@low_confidence"] and ex.children[0] is ex.run_select
    name, i = ex.current
    assert name != "harmless" and _recovered(a.signal(sets[name], tau=0.1)[i], 0.3)
    ex.run_select.value = "x@ar"
    assert list(ex.set_select.options) == list(short) and len(ex.prompt.options) == 2
    assert ex.step.value == ex.T == a.T and ex.image.value[:4] == b"\x89PNG"
    with pytest.raises(KeyError, match="not among the runs"):
        sri_explorer(runs, start="z@ar")


def test_slim_keeps_what_the_explorers_need(data):
    a, sets = data
    big = sets["dlm"]
    big = dataclasses.replace(big, pooled={"generated": np.repeat(big.pooled["generated"], 2, axis=2),
                                           "canvas": big.pooled["generated"] * 0}, layers=[1, -1])
    small = slim({"dlm": big}, a, n=2)["dlm"]
    assert len(small) == 2 and small.layers == [-1] and list(small.pooled) == ["generated"]
    np.testing.assert_array_equal(small.phi(), big.phi()[:2])
    assert small.pred_texts == big.pred_texts[:2]
    np.testing.assert_allclose(a.signal(small), a.signal(big)[:2])


def test_live_explorer_errors(data):
    a, sets = data
    short = sets["harmless"].subset([0])
    short.pooled = {"generated": short.pooled["generated"][:, :4]}
    short.tokens = short.tokens[:, :4]
    with pytest.raises(ValueError, match="T=4 steps but the anchors have T=8"):
        sri_explorer({"x": short}, a)
    wide = sri_explorer(sets, a, tau=0.9)  # a valid τ outside the default range widens the slider (issue 28)
    assert wide.tau.value == 0.9 and wide.tau.max == 0.9 and wide.tau.min == 0.02
    with pytest.raises(ValueError, match="tau must be positive"):
        sri_explorer(sets, a, tau=-1)
    with pytest.raises(TypeError, match="Anchors"):
        sri_explorer(sets, None)
    with pytest.raises(ValueError, match="at least one set"):
        sri_explorer({}, a)


def test_step_segments(data, tok):
    a, sets = data
    # exact colours from the token arrays: committed prefix, predicted middle, then the end token cuts the canvas
    ids = tok.encode("How do I make bread? You need flour")
    L = len(ids) + 3
    pred = np.array(ids + [tok.eos_token_id] + [7, 8], np.int32)
    com = np.zeros(L, bool)
    com[:3] = True
    ts = dlm_set(tok, 1, a, L=L)
    ts.predictions[0, 0], ts.committed[0, 0] = pred, com
    assert step_segments(ts, 0, 0, tok) == [(tok.decode(ids[:3]), "committed"), (tok.decode(ids[3:]), "predicted")]
    ts.committed[0, 0] = np.arange(L) == 2
    assert [k for _, k in step_segments(ts, 0, 0, tok)] == ["predicted", "committed", "predicted"]
    # without a tokenizer: the prediction text, coloured by alignment with the committed text
    ts = sets["dlm"]
    for t in (0, 3, T - 1):
        approx = step_segments(ts, 1, t)
        assert "".join(s for s, _ in approx) == ts.pred_texts[1][t]
        assert set(k for _, k in approx) <= {"committed", "predicted"}
    ar = step_segments(sets["harmless"], 0, 2)
    assert "".join(s for s, _ in ar) == sets["harmless"].step_texts[0][2] and ar[-1][1] == "new"


# ------------------------------------------------------------------------------------------- static view
def _payload(html: str) -> tuple[str, dict]:
    m = re.search(r'<script type="application/json" id="([^"]+)-data">(.*?)</script>', html, re.S)
    assert m, "no embedded JSON"
    return m.group(1), json.loads(m.group(2))["runs"][0]


def _undelta(deltas: list) -> list[str]:
    out, prev = [], ""
    for p, s, mid in deltas:
        prev = prev[:p] + mid + prev[len(prev) - s:]
        out.append(prev)
    return out


def test_static_explorer_data_and_controls(data):
    a, sets = data
    html = static_explorer(sets, a, tau_values=(0.05, 0.1, 0.3), max_prompts=5).data
    uid, shown = _payload(html)
    d = explorer_data(sets, a, tau_values=(0.05, 0.1, 0.3), max_prompts=5, informative=False)  # round robin only
    key = lambda it: (it["set"], it["i"])  # noqa: E731
    lead = shown["items"][0]  # a recovery first (the page opens on it), then the round robin without it
    assert shown["start"] == 0 and shown["sets"][lead["set"]]["name"] != "harmless"
    rest = [key(it) for it in shown["items"][1:]]
    assert [k[0] for k in rest] == [0, 1, 2, 0] and len(set(rest + [key(lead)])) == 5
    for k in rest:  # each set's next generation not shown yet
        assert k[1] == min(i for i in range(10) if (k[0], i) not in rest[:rest.index(k)] + [key(lead)])
    assert d["T"] == T and d["taus"] == [0.05, 0.1, 0.3] and len(d["items"]) == 5
    assert [d["sets"][it["set"]]["name"] for it in d["items"]] == ["harmless", "harmful", "dlm", "harmless", "harmful"]
    it = d["items"][1]
    np.testing.assert_allclose(it["sigma"][2], a.signal(sets["harmful"], tau=0.3)[0], atol=6e-4)
    assert all(len(str(v)) <= 6 for v in it["sigma"][0])  # rounded to 3 decimals
    assert _undelta(d["items"][0]["text"]) == sets["harmless"].step_texts[0]
    dl = d["items"][2]
    assert _undelta(dl["text"]) == sets["dlm"].pred_texts[0]
    assert sum(dl["runs"][3]) == len(sets["dlm"].pred_texts[0][3])
    irr = internal_recovery_rate(a.signal(sets["harmless"], tau=0.1), lambda_r=0.3)[0.3]
    assert d["sets"][0]["irr"][1][1] == str(irr)
    for control in ('class="sx-prompt"', 'class="sx-tau"', 'class="sx-lam"', 'type="range" class="sx-step"',
                    'class="sx-play"'):
        assert control in html
    assert uid in re.findall(r'\bid="([^"]*)"', html)
    # no network: no URL anywhere (the traces' URL text is escaped), no external script or style
    assert not re.search(r"https?://|src=|href=|require\(", html, re.I)
    assert html.count("</script>") == html.count("<script")  # raw text cannot close the data element


def test_static_explorer_picks_runs_and_opens_on_a_recovery(data):
    """Issue 23/28: the reader picks the run (every run of the chapter), and the page opens on an informative case:
    a harmful generation that meets the IRR criterion at the opening τ = 0.1 and λ_r = 0.3."""
    from srilib.widgets import ExplorerRun, _recovered

    a, sets = data
    one = explorer_data(sets, a, max_prompts=6)
    first = one["items"][one["start"]]
    assert one["sets"][first["set"]]["name"] != "harmless"
    assert _recovered(a.signal(sets[one["sets"][first["set"]]["name"]], tau=0.1)[first["i"]], 0.3)
    runs = {"x@ar": ExplorerRun({"harmless": sets["harmless"]}, a), "y@low_confidence": ExplorerRun(sets, a)}
    html = static_explorer(runs, max_prompts=6, start="y@low_confidence").data
    payload = json.loads(re.search(r'<script type="application/json" id="[^"]+-data">(.*?)</script>', html,
                                   re.S).group(1))
    assert [r["label"] for r in payload["runs"]] == ["x@ar", "y@low_confidence"]
    assert payload["start"] == [1, payload["runs"][1]["start"]] and payload["runs"][1]["items"] == one["items"]
    assert 'class="sx-run"' in html
    with pytest.raises(KeyError, match="not among the runs"):
        static_explorer(runs, start="z@ar")
    with pytest.raises(TypeError, match="anchors=None"):
        static_explorer(runs, a)


def test_static_explorer_unique_ids_and_size(data, tok):
    a, sets = data
    h1, h2 = static_explorer(sets, a).data, static_explorer(sets, a).data
    assert _payload(h1)[0] != _payload(h2)[0]
    # paper-sized canvas: 12 generations x 32 steps x 128 positions stay small
    rng = np.random.default_rng(0)
    big_a = Anchors(mu_harmless=rng.standard_normal((32, D)), mu_harmful=rng.standard_normal((32, D)),
                    n_harmless=1, n_harmful=1)
    n, Tb, L = 12, 32, 128
    words = [f"w{i}x" for i in range(150)]  # 600 characters of distinct words
    full = " ".join(words)[:600]
    texts = [[full[: 18 * (t + 1)] for t in range(Tb)] for _ in range(n)]
    preds = [[full[: 18 * (t + 1)] + " ".join(words[::-1])[18 * (t + 1):600] for t in range(Tb)] for _ in range(n)]
    big = TraceSet(prompts=["p"] * 30, tokens=np.zeros((30, Tb, L), np.int32), committed=np.zeros((30, Tb, L), bool),
                   predictions=np.zeros((30, Tb, L), np.int32),
                   pooled={"generated": rng.standard_normal((30, Tb, 1, D)).astype(np.float32)}, layers=[-1],
                   texts=[""] * 30, step_texts=texts * 3, pred_texts=preds * 3)
    html = static_explorer({"big": big}, big_a).data
    assert len(_payload(html)[1]["items"]) == 12
    assert len(html) < 80_000, len(html)  # texts are delta-encoded step to step
    with pytest.raises(ValueError, match="tau_values is empty"):
        explorer_data(sets, a, tau_values=())
    with pytest.raises(IndexError, match="has 5 traces"):
        explorer_data(sets, a, pick={"harmless": [7]})


NODE = shutil.which("node")


def _classify_block(html: str) -> str:
    """The page script's classification block (functions of the embedded data D only)."""
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)  # the page's script, not its JSON data
    assert script.count(CLASSIFY_BEGIN) == 1 and script.count(CLASSIFY_END) == 1, "classify block not delimited"
    return script[script.index(CLASSIFY_BEGIN):script.index(CLASSIFY_END) + len(CLASSIFY_END)]


def _trajectories(d: dict) -> list[list[float]]:
    """Synthetic sigma trajectories: zone boundaries and IRR thresholds hit exactly and missed by 1e-3, every
    length from 1 step, random walks, and the page's own embedded trajectories."""
    rng = np.random.default_rng(7)
    out = [[0.5], [0.1], [0.5, 0.29], [0.501, 0.29], [0.501, 0.3], [0.501, 0.299], [0.9, 0.5], [0.9, 0.499],
           [0.9, 0.1], [0.9, 0.099], [0.3, 0.3, 0.3], [0.2, 0.6, 0.05], [0.6, 0.05, 0.6], [0.0, 1.0, 0.0],
           [0.5, 0.5, 0.5, 0.001], [0.4999, 0.5001, 0.2999, 0.3001]]
    out += [[float(v) for v in np.round(rng.uniform(0, 1, n), 3)] for n in (1, 2, 3, 5, 8, 32) for _ in range(6)]
    out += [[float(v) for v in np.clip(np.round(0.5 + np.cumsum(rng.normal(0, 0.15, 16)), 3), 0, 1)]
            for _ in range(20)]
    out += [s for it in d["items"] for s in it["sigma"]]
    return out


def test_static_explorer_js_classifies_like_python(data):
    """The page's JavaScript zone, IRR and status functions, run under node on the page's own data, agree with
    srilib's Python definitions on every synthetic trajectory; the block holds no constant of its own."""
    if NODE is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("node is missing under CI: .ci/run installs npm (and node) so that the static explorer's "
                        "JavaScript is tested")
        pytest.skip("node not installed (Debian: apt-get install nodejs): cannot run the static explorer's JavaScript")
    a, sets = data
    html = static_explorer(sets, a, lambda_r=(0.5, 0.3, 0.1, 0.25)).data
    payload = re.search(r'<script type="application/json" id="[^"]+-data">(.*?)</script>', html, re.S).group(1)
    d = json.loads(payload)["runs"][0]
    block = _classify_block(html)
    code = re.sub(r"/\*.*?\*/", "", block, flags=re.S)
    # no threshold and no word of its own: numbers and strings come from D (placeholders excepted)
    assert not re.search(r"\d\.\d", code) and set(re.findall(r'"([^"]*)"', code)) == {"{verdict}", "{lam}"}
    trajs, lams = _trajectories(d), d["lams"]
    js = (f"var D = JSON.parse({json.dumps(payload)}).runs[0];\n{block}\n"
          f"var S = {json.dumps(trajs)}, L = {json.dumps(lams)};\n"
          "console.log(JSON.stringify(S.map(function (s) { return {zones: s.map(zoneName), "
          "rec: L.map(function (l) { return recovered(s, l); }), "
          "status: L.map(function (l) { return recoveryStatus(s, l); })}; })));")
    r = subprocess.run([NODE, "-e", js], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out) == len(trajs) > 100
    for s, o in zip(trajs, out):
        x = np.array(s)
        assert o["zones"] == [ZONE_NAMES[z] for z in zone(x)] == [_zone_name(v) for v in s], s
        assert o["rec"] == [_recovered(x, lam) for lam in lams], s
        if len(s) >= 2:  # the metric itself (IRR needs a step before the end)
            assert o["rec"] == [bool(internal_recovery_rate(x[None], lambda_r=lam)[lam].outcomes[0]) for lam in lams]
        assert o["status"] == [_recovery_status(x, lam) for lam in lams], s
    # the paper's definitions, spelled out: strict inequalities at the zone boundaries and at both IRR thresholds
    by = {tuple(s): o for s, o in zip(trajs, out)}
    assert by[(0.5,)]["zones"] == ["transitional"] and by[(0.3, 0.3, 0.3)]["zones"] == ["transitional"] * 3
    assert by[(0.4999, 0.5001, 0.2999, 0.3001)]["zones"] == ["transitional", "compliance", "refusal", "transitional"]
    k = lams.index(0.3)
    assert [by[s]["rec"][k] for s in [(0.5, 0.29), (0.501, 0.3), (0.501, 0.299), (0.5,)]] == [False, False, True, False]
    assert by[(0.501, 0.299)]["status"][k] == "this generation meets the IRR criterion (σ > 0.5 before the end, σ_T < 0.3)"
    assert by[(0.5, 0.29)]["status"][k].startswith("this generation does not meet the IRR criterion")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = """<script>
(function () {
  var ex = document.querySelectorAll(".sri-explorer"), out = {n: ex.length, ids: []};
  ex.forEach(function (e) { out.ids.push(e.id); });
  var e = ex[0], q = function (s) { return e.querySelector(s); };
  out.svg = !!q(".sx-plot svg polyline");
  var p0 = q(".sx-plot polyline").getAttribute("points");
  q(".sx-tau").value = "3"; q(".sx-tau").dispatchEvent(new Event("change"));
  out.tauChanged = q(".sx-plot polyline").getAttribute("points") !== p0;
  q(".sx-step").value = "3"; q(".sx-step").dispatchEvent(new Event("input"));
  out.status = q(".sx-status").textContent;
  var opts = Array.from(q(".sx-prompt").options);
  var k = opts.findIndex(function (o) { return /^dlm/.test(o.textContent); });
  q(".sx-prompt").value = String(k); q(".sx-prompt").dispatchEvent(new Event("change"));
  out.dlmText = q(".sx-text").innerHTML;
  out.otherUntouched = ex[1].querySelector(".sx-status").textContent.indexOf("step 8/8") >= 0;
  document.body.setAttribute("data-result", JSON.stringify(out));
})();
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
def test_static_explorer_in_headless_chromium(data, tmp_path):
    """Two explorers on one page: no console message, SVG drawn, controls work without a kernel."""
    a, sets = data
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    + static_explorer(sets, a).data + static_explorer(sets, a).data + DRIVER + "</body></html>")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=60)
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln]
    assert not console, console
    m = re.search(r'data-result="([^"]*)"', r.stdout)
    assert m, r.stdout[:500]
    out = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert out["n"] == 2 and len(set(out["ids"])) == 2 and out["svg"] and out["tauChanged"]
    assert "3/8" in out["status"] and out["otherUntouched"]
    assert "font-style:italic" in out["dlmText"]  # predicted tokens at masked positions in their own colour


RUN_DRIVER = """<script>
(function () {
  var e = document.querySelector(".sri-explorer"), q = function (s) { return e.querySelector(s); }, out = {};
  out.runs = Array.from(q(".sx-run").options).map(function (o) { return o.textContent; });
  out.opened = q(".sx-status").textContent;
  out.prompts0 = q(".sx-prompt").options.length;
  q(".sx-run").value = "0"; q(".sx-run").dispatchEvent(new Event("change"));
  out.switched = q(".sx-status").textContent;
  out.prompts1 = q(".sx-prompt").options.length;
  document.body.setAttribute("data-result", JSON.stringify(out));
})();
</script>"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
def test_static_explorer_run_picker_in_headless_chromium(data, tmp_path):
    """The static page's run picker lists every run, opens on the start run, and swaps the generations when the
    reader picks another run; the status line names the run shown."""
    from srilib.widgets import ExplorerRun

    a, sets = data
    runs = {"x@ar": ExplorerRun({"harmless": sets["harmless"].subset([0, 1])}, a),
            "y@low_confidence": ExplorerRun(sets, a)}
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    + static_explorer(runs, max_prompts=6, start="y@low_confidence").data + RUN_DRIVER
                    + "</body></html>")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=60)
    assert not [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln]
    m = re.search(r'data-result="([^"]*)"', r.stdout)
    out = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert out["runs"] == ["x@ar", "y@low_confidence"]
    assert out["opened"].startswith("y@low_confidence · step 8/8") and out["prompts0"] == 6
    assert out["switched"].startswith("x@ar · step 8/8") and out["prompts1"] == 2
