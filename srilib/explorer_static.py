"""The static SRI explorer: a self-contained HTML/JavaScript page for the book (no kernel, no external script).

:func:`static_explorer` embeds, as JSON, sigma precomputed in Python for a few tau values, the per-step texts and
everything the page's JavaScript classifies with: the zone boundaries and names (:mod:`srilib.signal`), the IRR
rule's compliance threshold (:mod:`srilib.signal`) and the status words (:data:`srilib.widgets.STATUS`). The
script's classification functions sit in one delimited block (``BEGIN classify`` ... ``END classify``) that reads
only that data; tests/test_widgets.py runs the block under node against the Python definitions.
The live ipywidgets view of the same traces is :func:`srilib.widgets.sri_explorer`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from typing import Mapping, Sequence

import numpy as np

from .signal import DEFAULT_LAMBDA_C, DEFAULT_LAMBDA_R
from .figures import ZONE_STYLE
from .signal import COMPLIANCE_ZONE, REFUSAL_ZONE, ZONE_NAMES, Anchors
from .traces import TraceSet
from .widgets import (COLORS, STATUS, ExplorerRun, Signals, as_runs, as_sets, check_tau, is_harmful_set, recoveries,
                      runs_from_alignment, runs_from_tokens, text_delta)

_ids = itertools.count()
CLASSIFY_BEGIN = "/* BEGIN classify"
CLASSIFY_END = "/* END classify */"


def _deltas(texts: Sequence[str]) -> list[list]:
    out, prev = [], ""
    for x in texts:
        out.append(text_delta(prev, x))
        prev = x
    return out


def _clip(text: str, runs: list[int] | None, max_chars: int) -> tuple[str, list[int] | None]:
    """Cut ``text`` (and its run lengths) at ``max_chars`` characters plus an ellipsis."""
    if len(text) <= max_chars:
        return text, runs
    if runs is None:
        return text[:max_chars] + "…", None
    out, total = [], 0
    for r in runs:
        out.append(max(0, min(r, max_chars - total)))
        total += out[-1]
    out[-1] += 1  # the ellipsis takes the colour of the last run
    return text[:max_chars] + "…", out


def _pick(sets: dict[str, TraceSet], max_prompts: int, pick, lead: Sequence[tuple[str, int]] = ()
          ) -> list[tuple[str, int]]:
    if pick is not None:
        out = []
        for name, idx in pick.items():
            if name not in sets:
                raise KeyError(f"pick names set {name!r}, which is not among the traces: {list(sets)}")
            for i in idx:
                if not 0 <= int(i) < len(sets[name]):
                    raise IndexError(f"pick[{name!r}] has index {i}, but that set has {len(sets[name])} traces")
                out.append((name, int(i)))
        return out[:max_prompts]
    out, names = list(lead)[:max_prompts], list(sets)
    per = [iter([i for i in range(len(ts)) if (name, i) not in out]) for name, ts in sets.items()]
    while len(out) < max_prompts:  # round robin over the sets
        added = False
        for name, it in zip(names, per):
            i = next(it, None)
            if i is not None and len(out) < max_prompts:
                out.append((name, i))
                added = True
        if not added:
            break
    return out


def explorer_data(traces: Mapping[str, TraceSet] | TraceSet, anchors: Anchors,
                  tau_values: Sequence[float] = (0.05, 0.1, 0.2, 0.3), max_prompts: int = 12,
                  tokenizer=None, lambda_r: Sequence[float] = DEFAULT_LAMBDA_R, max_chars: int = 600,
                  pick: Mapping[str, Sequence[int]] | None = None, informative: bool = True) -> dict:
    """The data behind :func:`static_explorer` (JSON-ready; sigma rounded to 3 decimals, texts delta-encoded).

    Which generations: ``pick`` (dict set -> indices), else, with ``informative``, up to a third of
    ``max_prompts`` harmful generations that recover (the IRR criterion at the page's opening τ and λ_r: 0.1 and
    0.3 when offered) first, then the sets round robin. ``start`` is the generation the page opens on: the first
    recovery, else the first refused harmful generation, else the first.

    Besides the traces it carries the classification constants the page's script reads: ``zones`` (sigma above
    ``zones[0]`` is compliance, below ``zones[1]`` refusal), ``zone_names`` (indexed by :func:`srilib.signal.zone`),
    ``recovery`` (the IRR rule's ``lambda_c``) and ``status`` (:data:`srilib.widgets.STATUS`).
    """
    sets = as_sets(traces, anchors)
    taus = [check_tau(x) for x in tau_values]
    if not taus:
        raise ValueError("tau_values is empty; pass at least one tau, e.g. (0.05, 0.1, 0.2, 0.3)")
    lams = [float(x) for x in lambda_r]
    if not lams or not all(0 < x < 1 for x in lams):
        raise ValueError(f"lambda_r must be thresholds in (0, 1), got {list(lambda_r)}")
    if max_prompts < 1:
        raise ValueError(f"max_prompts must be >= 1, got {max_prompts}")
    sig = Signals(sets, anchors)
    tau0 = 0.1 if 0.1 in taus else taus[0]  # the page's opening tau and lambda_r (its script picks the same)
    lam0 = 0.3 if 0.3 in lams else lams[0]
    lead = recoveries(sets, sig, tau0, lam0)[:max(1, int(max_prompts) // 3)] if informative and pick is None else []
    r3 = lambda a: [round(float(x), 3) for x in a]  # noqa: E731
    set_info = []
    for name, ts in sets.items():
        irr = [[sig.irr(name, tau, lam) for lam in lams] for tau in taus]
        set_info.append({"name": name, "n": len(ts), "dlm": ts.pred_texts is not None, "irr": irr,
                         "refused": int(sig.refused[name].sum())})
    names = list(sets)
    items = []
    chosen = _pick(sets, int(max_prompts), pick, lead)
    for name, i in chosen:
        ts = sets[name]
        txt = sig.text[name][i]
        item = {"set": names.index(name), "i": i, "prompt": _clip(ts.prompts[i], None, 400)[0],
                "refused": bool(sig.refused[name][i]),
                "sigma": [r3(sig.sigma(name, tau)[i]) for tau in taus],
                "refuse_at": int(np.argmin(txt)) + 1 if (txt == 0).any() else None}
        if ts.pred_texts is None:
            item["text"] = _deltas([_clip(x, None, max_chars)[0] for x in ts.step_texts[i]])
        else:
            preds, runs = [], []
            for t in range(ts.T):
                if tokenizer is not None:
                    p, r = runs_from_tokens(ts, i, t, tokenizer)
                else:
                    p = ts.pred_texts[i][t]
                    r = runs_from_alignment(p, ts.step_texts[i][t])
                p, r = _clip(p, r, max_chars)
                preds.append(p)
                runs.append(r)
            item["text"] = _deltas(preds)
            item["runs"] = runs
            item["ncommitted"] = ts.committed[i].sum(axis=1).astype(int).tolist()
            item["L"] = ts.L
        items.append(item)
    refused_harmful = [k for k, (name, i) in enumerate(chosen) if is_harmful_set(name) and sig.refused[name][i]]
    start = 0 if lead else (refused_harmful[0] if refused_harmful else 0)
    return {"T": anchors.T, "taus": [round(x, 4) for x in taus], "lams": lams, "start": start,
            "zones": [COMPLIANCE_ZONE, REFUSAL_ZONE], "zone_names": list(ZONE_NAMES),
            "recovery": {"lambda_c": DEFAULT_LAMBDA_C}, "status": dict(STATUS),
            "anchors": anchors.label, "fallback": bool(anchors.fallback),
            "exact_tokens": tokenizer is not None, "sets": set_info, "items": items,
            "colors": {**COLORS, "zones": [ZONE_STYLE[z][0] for z in ("refusal", "transitional", "compliance")]}}


def _json_for_html(data: dict) -> str:
    """JSON safe inside a <script> element: only ASCII, no '<', '>', '&' and no '//' (no URL-looking text)."""
    s = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("/", "\\/"))


_CSS = """
#{id} {{font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; color: #222;
  border: 1px solid #ddd; border-radius: 4px; padding: 8px 10px; margin: 6px 0; max-width: 900px}}
#{id} .sx-row {{display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin: 3px 0}}
#{id} label {{white-space: nowrap}}
#{id} select {{max-width: 560px; font-size: 12px}}
#{id} input[type=range] {{width: 300px; vertical-align: middle}}
#{id} .sx-plot svg {{width: 100%; max-width: 680px; height: auto; display: block}}
#{id} .sx-text {{white-space: pre-wrap; border: 1px solid #ddd; padding: 6px; font-family: monospace;
  font-size: 12px; max-height: 16em; overflow-y: auto; background: #fff}}
#{id} .sx-note {{font-size: 11px; color: #555}}
#{id} .sx-status {{margin: 3px 0}}
"""

# Plain ES5 apart from Array.from; everything is looked up through the explorer's own id.
_JS = r"""
(function () {
  "use strict";
  var id = "{id}";
  var root = document.getElementById(id);
  if (!root || root.getAttribute("data-ready")) { return; }
  root.setAttribute("data-ready", "1");
  var ALL = JSON.parse(document.getElementById(id + "-data").textContent);
  var D = ALL.runs[ALL.start[0]];   /* the run shown; the run picker swaps it */
  var $ = function (s) { return root.querySelector("." + s); };
  var sel = $("sx-prompt"), step = $("sx-step"), tauSel = $("sx-tau"), lamSel = $("sx-lam"), play = $("sx-play");
  var runSel = $("sx-run");
  var T = D.T, C = D.colors, cache = {};
  function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  function opt(v, label) { var o = document.createElement("option"); o.value = v; o.textContent = label; return o; }
  function loadRun(r, k) {          /* show run r, opening on its generation k */
    D = ALL.runs[r]; T = D.T; cache = {}; sel.innerHTML = "";
    D.items.forEach(function (it, j) {
      var p = it.prompt.replace(/\s+/g, " ");
      sel.appendChild(opt(j, D.sets[it.set].name + " #" + it.i + " [" + (it.refused ? D.status.refused : D.status.complied) + "] " +
                          (p.length > 70 ? p.slice(0, 70) + "\u2026" : p)));
    });
    sel.value = k; step.max = T; step.value = T; runSel.value = r;
  }
  ALL.runs.forEach(function (r, k) { runSel.appendChild(opt(k, r.label)); });
  if (ALL.runs.length < 2) { runSel.parentNode.style.display = "none"; }
  loadRun(ALL.start[0], ALL.start[1]);
  D.taus.forEach(function (t, k) { tauSel.appendChild(opt(k, "\u03c4 = " + t)); });
  D.lams.forEach(function (l, k) { lamSel.appendChild(opt(k, "\u03bb_r = " + l)); });
  var t0 = D.taus.indexOf(0.1); tauSel.value = t0 < 0 ? 0 : t0;
  var l0 = D.lams.indexOf(0.3); lamSel.value = l0 < 0 ? 0 : l0;
  function texts(k) {               /* decode the delta-encoded texts of item k once (arrays of code points) */
    if (cache[k]) { return cache[k]; }
    var prev = [], out = [];
    D.items[k].text.forEach(function (d) {
      var cur = prev.slice(0, d[0]).concat(Array.from(d[2]), prev.slice(prev.length - d[1]));
      out.push({chars: cur, p: d[0]}); prev = cur;
    });
    cache[k] = out; return out;
  }
  var W = 640, H = 280, L = 48, R = 26, TOP = 24, B = 40;
  function r1(v) { return Math.round(v * 10) / 10; }
  function x(t) { return r1(L + (t - 0.5) / T * (W - L - R)); }
  function y(v) { return r1(TOP + (1.02 - v) / 1.04 * (H - TOP - B)); }
  function svg(it, tauK, lam, t) {
    var s = it.sigma[tauK], z = D.zones, g = [];
    g.push('<svg viewBox="0 0 ' + W + ' ' + H + '" role="img" aria-label="SRI over steps">');
    g.push('<rect x="' + L + '" y="' + y(1.02) + '" width="' + (W - L - R) + '" height="' + (y(z[0]) - y(1.02)) + '" fill="' + C.zones[2] + '"/>');
    g.push('<rect x="' + L + '" y="' + y(z[0]) + '" width="' + (W - L - R) + '" height="' + (y(z[1]) - y(z[0])) + '" fill="' + C.zones[1] + '"/>');
    g.push('<rect x="' + L + '" y="' + y(z[1]) + '" width="' + (W - L - R) + '" height="' + (y(-0.02) - y(z[1])) + '" fill="' + C.zones[0] + '"/>');
    z.forEach(function (v) { g.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y(v) + '" y2="' + y(v) + '" stroke="#888" stroke-dasharray="5 3"/>'); });
    g.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y(lam) + '" y2="' + y(lam) + '" stroke="' + C.lambda + '" stroke-dasharray="8 3 2 3"/>');
    [0, z[1], z[0], 1].forEach(function (v) { g.push('<text x="' + (L - 6) + '" y="' + (y(v) + 4) + '" text-anchor="end" font-size="11">' + v + '</text>'); });
    var nt = Math.min(T, 9);
    for (var k = 0; k < nt; k++) {
      var tt = Math.round(1 + k * (T - 1) / Math.max(1, nt - 1));
      g.push('<text x="' + x(tt) + '" y="' + (H - B + 15) + '" text-anchor="middle" font-size="11">' + tt + '</text>');
    }
    g.push('<text x="' + ((L + W - R) / 2) + '" y="' + (H - 6) + '" text-anchor="middle" font-size="12">step t</text>');
    g.push('<text x="12" y="' + ((TOP + H - B) / 2) + '" text-anchor="middle" font-size="12" transform="rotate(-90 12 ' + ((TOP + H - B) / 2) + ')">SRI \u03c3_t</text>');
    g.push('<line x1="' + x(t) + '" x2="' + x(t) + '" y1="' + y(1.02) + '" y2="' + y(-0.02) + '" stroke="' + C.step + '"/>');
    var ts = "";      /* text signal: 1 until the first refusal phrase, then 0 (step plot) */
    for (var i = 1; i <= T; i++) {
      var v = it.refuse_at !== null && i >= it.refuse_at ? 0 : 1;
      ts += (i === 1 ? "M" : "L") + (x(i) - (i === 1 ? 0 : 0.5 * (x(2) - x(1)))) + " " + y(v) + " L" + (x(i) + (i === T ? 0 : 0.5 * (x(2) - x(1)))) + " " + y(v) + " ";
    }
    g.push('<path d="' + ts + '" fill="none" stroke="' + C.text + '" stroke-width="1.4" stroke-dasharray="2 2"/>');
    g.push('<polyline fill="none" stroke="' + C.sigma + '" stroke-width="1.8" points="' + s.map(function (v, i) { return x(i + 1) + "," + y(v); }).join(" ") + '"/>');
    s.forEach(function (v, i) { g.push('<circle cx="' + x(i + 1) + '" cy="' + y(v) + '" r="2.2" fill="' + C.sigma + '"/>'); });
    g.push('<circle cx="' + x(t) + '" cy="' + y(s[t - 1]) + '" r="5.5" fill="none" stroke="#000"/>');
    var lg = [[C.sigma, "", "SRI \u03c3_t"], [C.text, "2 2", "text signal"], [C.lambda, "8 3 2 3", "IRR \u03bb_r"]];
    lg.forEach(function (e, k) {            /* legend in the top margin, never over the data */
      var lx = L + k * 105;
      g.push('<line x1="' + lx + '" x2="' + (lx + 20) + '" y1="10" y2="10" stroke="' + e[0] + '" stroke-width="1.8"' +
             (e[1] ? ' stroke-dasharray="' + e[1] + '"' : "") + '/><text x="' + (lx + 25) + '" y="14" font-size="11">' + e[2] + '</text>');
    });
    g.push('<text x="' + (W - R + 12) + '" y="' + y((1.02 + z[0]) / 2) + '" font-size="10" fill="#666" text-anchor="middle" transform="rotate(90 ' + (W - R + 12) + ' ' + y((1.02 + z[0]) / 2) + ')">' + esc(D.zone_names[2]) + '</text>');
    g.push('<text x="' + (W - R + 12) + '" y="' + y(z[1] / 2) + '" font-size="10" fill="#666" text-anchor="middle" transform="rotate(90 ' + (W - R + 12) + ' ' + y(z[1] / 2) + ')">' + esc(D.zone_names[0]) + '</text>');
    g.push('<text x="' + (W - R) + '" y="14" text-anchor="end" font-size="11" fill="#444">' + esc(D.sets[it.set].name) + ' #' + it.i + ', \u03c4 = ' + D.taus[tauK] + '</text>');
    if (D.fallback) { g.push('<text x="' + (W - R) + '" y="' + (H - B - 4) + '" text-anchor="end" font-size="10" fill="#b30000">' + esc(D.anchors) + '</text>'); }
    g.push("</svg>");
    return g.join("");
  }
  /* BEGIN classify: pure functions of D, whose zones, zone names, IRR threshold and status words srilib writes
     (srilib.signal, srilib.widgets.STATUS); tests/test_widgets.py runs this block under node. */
  function zoneOf(v) { return v > D.zones[0] ? 2 : v < D.zones[1] ? 0 : 1; }  /* as srilib.signal.zone */
  function zoneName(v) { return D.zone_names[zoneOf(v)]; }
  function recovered(s, lam) {   /* the IRR criterion for one generation: compliant before the end, < lam at it */
    return s.length >= 2 && Math.max.apply(null, s.slice(0, s.length - 1)) > D.recovery.lambda_c &&
      s[s.length - 1] < lam;
  }
  function recoveryStatus(s, lam) {
    return D.status.generation.replace("{verdict}", recovered(s, lam) ? D.status.meets : D.status.fails)
      .replace("{lam}", String(lam));
  }
  /* END classify */
  function draw() {
    var k = +sel.value, it = D.items[k], tauK = +tauSel.value, lamK = +lamSel.value, lam = D.lams[lamK];
    var t = +step.value, s = it.sigma[tauK], set = D.sets[it.set];
    $("sx-plot").innerHTML = svg(it, tauK, lam, t);
    var irr = set.irr[tauK][lamK];
    var txtSig = it.refuse_at !== null && t >= it.refuse_at ? 0 : 1;
    $("sx-status").innerHTML = (D.label ? "<b>" + esc(D.label) + "</b> \u00b7 " : "") + "<b>step " + t + "/" + T + "</b> \u00b7 \u03c3_t = " + s[t - 1].toFixed(3) + " (" +
      zoneName(s[t - 1]) + ") \u00b7 text signal " + txtSig +
      (set.dlm ? " \u00b7 committed " + it.ncommitted[t - 1] + "/" + it.L + " positions" : "") +
      "<br>" + recoveryStatus(s, lam) +
      (irr === null ? "" : " \u00b7 IRR of <i>" + esc(set.name) + "</i> at \u03c4 = " + D.taus[tauK] + ": " + esc(irr));
    var tx = texts(k)[t - 1], h = "";
    if (set.dlm) {
      var runs = it.runs[t - 1], pos = 0;
      runs.forEach(function (r, j) {
        var piece = esc(tx.chars.slice(pos, pos + r).join("")); pos += r;
        if (piece) { h += j % 2 === 0 ? '<span style="color:' + C.committed + '">' + piece + "</span>"
                                      : '<span style="color:' + C.predicted + ';font-style:italic">' + piece + "</span>"; }
      });
      h += esc(tx.chars.slice(pos).join(""));
    } else {
      var p = t > 1 ? Math.min(tx.p, texts(k)[t - 2].chars.length) : 0;
      h = '<span style="color:' + C.committed + '">' + esc(tx.chars.slice(0, p).join("")) + "</span>" +
          '<span style="color:' + C["new"] + ';background:#deebf7">' + esc(tx.chars.slice(p).join("")) + "</span>";
    }
    $("sx-text").innerHTML = h || '<span style="color:#888">(nothing yet)</span>';
    $("sx-prompttext").textContent = "prompt: " + it.prompt;
    $("sx-legend").innerHTML = set.dlm ? "black = committed, <i style=\"color:" + C.predicted + "\">orange</i> = current prediction at a masked position" +
      (D.exact_tokens ? "" : " (aligned from text)") : "<span style=\"color:" + C["new"] + ";background:#deebf7\">blue</span> = added at this step";
  }
  var timer = null;
  function stop() { if (timer) { clearInterval(timer); timer = null; play.textContent = "\u25b6 play"; } }
  play.addEventListener("click", function () {
    if (timer) { stop(); return; }
    if (+step.value >= T) { step.value = 1; }
    play.textContent = "\u25a0 stop"; draw();
    timer = setInterval(function () { if (+step.value >= T) { stop(); return; } step.value = +step.value + 1; draw(); }, 350);
  });
  [sel, tauSel, lamSel].forEach(function (e) { e.addEventListener("change", draw); });
  runSel.addEventListener("change", function () { stop(); loadRun(+runSel.value, D.start); draw(); });
  step.addEventListener("input", function () { stop(); draw(); });
  draw();
})();
"""


def static_explorer(traces: Mapping[str, TraceSet | ExplorerRun] | TraceSet, anchors: Anchors | None = None,
                    tau_values: Sequence[float] = (0.05, 0.1, 0.2, 0.3), max_prompts: int = 12, tokenizer=None,
                    lambda_r: Sequence[float] = DEFAULT_LAMBDA_R, max_chars: int = 600,
                    pick: Mapping[str, Sequence[int]] | None = None, start: str | None = None):
    """Self-contained HTML/JS explorer for pages without a kernel (the static book), as ``IPython.display.HTML``.

    ``traces``: one run's traces (a TraceSet or dict set -> TraceSet, with ``anchors`` and ``tokenizer``), or a
    dict label -> :class:`srilib.widgets.ExplorerRun` (several runs: the page gets a run picker; ``anchors`` stays
    None). ``start``: the label of the run the page opens on (default: the first).

    Sigma is precomputed for each of ``tau_values`` (3 decimals) and embedded as JSON with the text signal and
    the per-step texts (delta-encoded, clipped at ``max_chars``) of at most ``max_prompts`` generations per run
    (:func:`explorer_data`: recoveries first, or ``pick``: dict set -> indices); the page opens on the run's first
    recovery. Set-level IRR is computed over every generation of each set. No external script or style is
    loaded; each call gets its own DOM ids.
    """
    from IPython.display import HTML

    runs = as_runs(traces, anchors, tokenizer)
    if start is not None and start not in runs:
        raise KeyError(f"start={start!r} is not among the runs: {list(runs)}")
    per = [{"label": label, **explorer_data(r.traces, r.anchors, tau_values, max_prompts, r.tokenizer, lambda_r,
                                            max_chars, pick)} for label, r in runs.items()]
    r0 = list(runs).index(start) if start is not None else 0
    payload = _json_for_html({"runs": per, "start": [r0, per[r0]["start"]]})
    uid = f"sri-x-{hashlib.sha256(payload.encode()).hexdigest()[:8]}-{next(_ids)}"
    first = per[r0]
    taus = ", ".join(f"{t:g}" for t in first["taus"])
    n_items = sum(len(r["items"]) for r in per)
    note = (f"Static view: the run, prompt, step, τ ({taus}) and λ_r controls work in this page without a kernel "
            f"(σ precomputed for these τ; {n_items} generation(s) of {len(per)} run(s) embedded). Any other τ, "
            "every generation and exact token colours need a live kernel: <code>srilib.widgets.sri_explorer(traces, "
            "anchors)</code> in JupyterLab or Colab.")
    body = f"""<div id="{uid}" class="sri-explorer tex2jax_ignore mathjax_ignore">
<style>{_CSS.format(id=uid)}</style>
<div class="sx-row"><label>run <select class="sx-run" aria-label="run"></select></label></div>
<div class="sx-row"><label>generation <select class="sx-prompt" aria-label="generation"></select></label></div>
<div class="sx-row"><label>τ <select class="sx-tau" aria-label="tau"></select></label>
<label>IRR threshold <select class="sx-lam" aria-label="lambda_r"></select></label>
<button type="button" class="sx-play">▶ play</button>
<label>step t <input type="range" class="sx-step" min="1" max="{first['T']}" value="{first['T']}" step="1"
 aria-label="step"></label></div>
<div class="sx-plot"></div>
<div class="sx-status"></div>
<div class="sx-note sx-prompttext"></div>
<div class="sx-text"></div>
<div class="sx-note sx-legend"></div>
<div class="sx-note">{note}</div>
<script type="application/json" id="{uid}-data">{payload}</script>
<script>{_JS.replace("{id}", uid)}</script>
</div>"""
    return HTML(body)


__all__ = ["static_explorer", "explorer_data", "CLASSIFY_BEGIN", "CLASSIFY_END"]
