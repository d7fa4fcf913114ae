"""Explore SRI trajectories step by step, from cached traces only (no model is ever called).

Two views of the same thing, one generation at a time: the SRI signal sigma_t in the paper's zones, the
text-level refusal signal, and the text at the chosen step (AR: the text so far, newest token highlighted;
DLM: the intermediate prediction, committed tokens in black and predictions at still-masked positions in orange).

* :func:`sri_explorer` -- live ipywidgets (JupyterLab, Colab). Every control redraws from the stored pooled
  activations: sigma is recomputed with ``anchors.signal(phi, tau=...)``, which is cheap.
* :func:`static_explorer` -- a self-contained HTML/JavaScript view for the static book (no kernel): sigma is
  precomputed in Python for a few tau values and embedded as JSON with the step texts; no external script.

Token colours: pass ``tokenizer=`` (e.g. ``lm.tokenizer``) for exact per-position colours from the trace's
token arrays. Without it the colours come from aligning the committed text with the prediction (difflib), which
needs no model but may misplace a boundary by a character or two.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import html
import io
import itertools
import json
from typing import Mapping, Sequence

import numpy as np

from .metrics import DEFAULT_LAMBDA_R, internal_recovery_rate
from .refusal import is_refusal, text_signals
from .signal import COMPLIANCE_ZONE, REFUSAL_ZONE, Anchors
from .traces import TraceSet

TAU_RANGE = (0.02, 0.5)
COLORS = {"committed": "#111111", "predicted": "#d95f02", "new": "#08519c", "sigma": "#08519c", "text": "#a50f15",
          "lambda": "#6a3d9a", "step": "#444444"}
_ids = itertools.count()


# ------------------------------------------------------------------------------------------- shared data
def _as_sets(traces: Mapping[str, TraceSet] | TraceSet, anchors: Anchors) -> dict[str, TraceSet]:
    """Validate the input: a TraceSet or a non-empty dict name -> TraceSet, all with the anchors' T."""
    if not isinstance(anchors, Anchors):
        raise TypeError(f"anchors must be srilib.signal.Anchors (from build_anchors or Experiment.anchors), "
                        f"got {type(anchors).__name__}")
    sets = {"traces": traces} if isinstance(traces, TraceSet) else dict(traces)
    if not sets:
        raise ValueError("no traces to explore: pass a TraceSet or a dict name -> TraceSet with at least one set")
    for name, ts in sets.items():
        if not isinstance(ts, TraceSet):
            raise TypeError(f"traces[{name!r}] is {type(ts).__name__}, not a TraceSet")
        if len(ts) == 0:
            raise ValueError(f"traces[{name!r}] is empty; drop it or pass a set with at least one generation")
        if ts.T != anchors.T:
            raise ValueError(f"traces[{name!r}] has T={ts.T} steps but the anchors have T={anchors.T}; explore "
                             "traces generated with the same steps as the anchors")
    return sets


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    return tau


def _runs_from_tokens(ts: TraceSet, n: int, t: int, tokenizer) -> tuple[str, list[int]]:
    """Prediction text at step t and run lengths (characters) alternating committed / predicted, from the
    token arrays. The canvas is cut at the first end-of-text token, as in the trace's own texts."""
    if hasattr(tokenizer, "eos_ids") and hasattr(tokenizer, "tokenizer"):  # a LoadedModel
        ends, tokenizer = set(tokenizer.eos_ids), tokenizer.tokenizer
    else:
        eos = getattr(tokenizer, "eos_token_id", None)
        ends = set(eos) if isinstance(eos, (list, tuple)) else {eos} if eos is not None else set()
    pred, com = ts.predictions[n, t], ts.committed[n, t]
    groups: list[tuple[bool, list[int]]] = []
    for tok, c in zip(pred.tolist(), com.tolist()):
        if tok < 0 or tok in ends:
            break
        if groups and groups[-1][0] == bool(c):
            groups[-1][1].append(tok)
        else:
            groups.append((bool(c), [tok]))
    text, runs, want = "", [], True  # runs start with a committed run (possibly of length 0)
    for c, toks in groups:
        piece = tokenizer.decode(toks, skip_special_tokens=True)
        if c != want:
            runs.append(0)
            want = not want
        runs.append(len(piece))
        want = not want
        text += piece
    return text, runs


def _runs_from_alignment(pred: str, committed: str) -> list[int]:
    """Run lengths over ``pred`` alternating committed / predicted, from aligning it with the committed text."""
    flags = np.zeros(len(pred), dtype=bool)
    sm = difflib.SequenceMatcher(None, pred, committed, autojunk=False)
    for a, _, size in sm.get_matching_blocks():
        flags[a:a + size] = True
    runs, want, i = [], True, 0
    while i < len(pred):
        j = i
        while j < len(pred) and flags[j] == want:
            j += 1
        runs.append(j - i)
        want, i = not want, j
    return runs


def step_segments(ts: TraceSet, n: int, t: int, tokenizer=None) -> list[tuple[str, str]]:
    """Text of generation ``n`` at step ``t`` (0-based) as ``(text, kind)`` pieces.

    kind is ``"committed"``, ``"predicted"`` (DLM: current prediction at a still-masked position) or ``"new"``
    (AR: the text added at this step).
    """
    if ts.pred_texts is None:  # AR: text so far, with what this step added
        cur, prev = ts.step_texts[n][t], (ts.step_texts[n][t - 1] if t > 0 else "")
        p = _delta(prev, cur)[0]
        return [(s, k) for s, k in ((cur[:p], "committed"), (cur[p:], "new")) if s]
    if tokenizer is not None:
        text, runs = _runs_from_tokens(ts, n, t, tokenizer)
    else:
        text = ts.pred_texts[n][t]
        runs = _runs_from_alignment(text, ts.step_texts[n][t])
    out, i = [], 0
    for j, r in enumerate(runs):
        if r:
            out.append((text[i:i + r], "committed" if j % 2 == 0 else "predicted"))
        i += r
    return out


def _segments_html(segs: Sequence[tuple[str, str]]) -> str:
    style = {"committed": f"color:{COLORS['committed']}",
             "predicted": f"color:{COLORS['predicted']};font-style:italic",
             "new": f"color:{COLORS['new']};background:#deebf7"}
    body = "".join(f'<span style="{style[k]}">{html.escape(s)}</span>' for s, k in segs)
    return body or '<span style="color:#888">(nothing yet)</span>'


def slim(traces: Mapping[str, TraceSet] | TraceSet, anchors: Anchors, n: int | None = None):
    """What the explorers need, and nothing more: the anchors' pooling and layer only, first ``n`` generations.

    A TraceSet keeps every pooling and layer ([N, T, K, D] each); a slim copy is ~K x poolings times smaller, so
    a chapter can keep its example traces in memory for an explorer cell. Returns the same shape of input.
    """
    if not isinstance(traces, TraceSet):
        return {k: slim(v, anchors, n) for k, v in traces.items()}
    ts = traces if n is None else traces.subset(np.arange(min(int(n), len(traces))))
    phi = ts.phi(anchors.pooling, anchors.layer)
    return dataclasses.replace(ts, pooled={anchors.pooling: np.ascontiguousarray(phi[:, :, None, :])},
                               layers=[anchors.layer])


def _zone_name(s: float) -> str:
    return "compliance" if s > COMPLIANCE_ZONE else "refusal" if s < REFUSAL_ZONE else "transitional"


def _recovered(sig: np.ndarray, lam: float) -> bool:
    """The IRR criterion for one generation: compliant (> 0.5) at some step before the end, below lam at the end."""
    return bool(len(sig) >= 2 and sig[:-1].max() > COMPLIANCE_ZONE and sig[-1] < lam)


class _Signals:
    """phi, text signals and refusal outcomes per set, read once; sigma per (set, tau) computed on demand."""

    def __init__(self, sets: dict[str, TraceSet], anchors: Anchors):
        self.sets, self.anchors = sets, anchors
        self.phi = {k: ts.phi(anchors.pooling, anchors.layer) for k, ts in sets.items()}
        self.text = {k: text_signals(ts.match_texts) for k, ts in sets.items()}
        self.refused = {k: np.array([is_refusal(x) for x in ts.texts]) for k, ts in sets.items()}
        self._sigma: dict[tuple[str, float], np.ndarray] = {}

    def sigma(self, name: str, tau: float) -> np.ndarray:
        key = (name, round(float(tau), 6))
        if key not in self._sigma:
            if len(self._sigma) > 64:
                self._sigma.clear()
            self._sigma[key] = self.anchors.signal(self.phi[name], tau=_check_tau(tau))
        return self._sigma[key]

    def irr(self, name: str, tau: float, lam: float) -> str | None:
        """IRR of the whole set at (tau, lam) as text with its 95% Wilson interval (None when T < 2)."""
        sig = self.sigma(name, tau)
        if sig.shape[1] < 2:
            return None
        return str(internal_recovery_rate(sig, lambda_r=lam)[float(lam)])


def _label(ts: TraceSet, i: int, refused: bool, width: int = 70) -> str:
    p = " ".join(ts.prompts[i].split())
    return f"#{i} [{'refused' if refused else 'complied'}] " + (p[:width] + "…" if len(p) > width else p)


# ------------------------------------------------------------------------------------------- live widget
def sri_explorer(traces: Mapping[str, TraceSet] | TraceSet, anchors: Anchors, tau: float = 0.1,
                 tokenizer=None, lambda_r: float = 0.3):
    """Interactive explorer of cached traces (ipywidgets; needs a live kernel: JupyterLab, Colab).

    Parameters
    ----------
    traces : TraceSet or dict name -> TraceSet
        Generations to browse (same T as the anchors).
    anchors : Anchors
        Anchors of the same model, layer and pooling.
    tau : float
        Initial temperature (slider range 0.02-0.5).
    tokenizer : optional
        For exact per-token colours of DLM predictions (e.g. ``lm.tokenizer``); not needed otherwise.
    lambda_r : float
        Initial IRR refusal threshold (choices 0.5, 0.3, 0.1); the zone lines stay at 0.5 and 0.3.

    Returns
    -------
    SRIExplorer, an ``ipywidgets.VBox``. Nothing here loads or runs a model.
    """
    return _explorer_class()(traces, anchors, tau=tau, tokenizer=tokenizer, lambda_r=lambda_r)


@functools.lru_cache(maxsize=1)
def _explorer_class():
    import ipywidgets as W

    class _SRIExplorer(W.VBox):
        """See :func:`sri_explorer`. Attributes: the controls (``set_select``, ``prompt``, ``tau``, ``lam``,
        ``step``), the matplotlib ``figure`` and its lines (``sigma_line``, ``text_line``), ``image`` (the
        rendered figure) and ``text`` (HTML of the step's text)."""

        def __init__(self, traces, anchors: Anchors, tau: float = 0.1, tokenizer=None, lambda_r: float = 0.3):
            from matplotlib.figure import Figure

            from .plots import sigma_axes

            sets = _as_sets(traces, anchors)
            tau = _check_tau(tau)
            if not TAU_RANGE[0] <= tau <= TAU_RANGE[1]:
                raise ValueError(f"tau={tau} is outside the slider range {TAU_RANGE}; pick a value inside it")
            if float(lambda_r) not in DEFAULT_LAMBDA_R:
                raise ValueError(f"lambda_r must be one of {DEFAULT_LAMBDA_R} (the paper's thresholds), got {lambda_r}")
            self.signals = _Signals(sets, anchors)
            self._quiet = False
            self.anchors, self.tokenizer, self.T = anchors, tokenizer, anchors.T
            names = list(sets)
            self.set_select = W.Dropdown(options=names, value=names[0], description="set",
                                         layout=W.Layout(width="220px"))
            self.prompt = W.Dropdown(description="prompt", layout=W.Layout(width="560px"))
            self.tau = W.FloatSlider(value=tau, min=TAU_RANGE[0], max=TAU_RANGE[1], step=0.01, description="τ",
                                     readout_format=".2f", continuous_update=False)
            self.lam = W.ToggleButtons(options=[(f"λ_r = {x:g}", float(x)) for x in DEFAULT_LAMBDA_R],
                                       value=float(lambda_r), description="IRR λ_r",
                                       style={"button_width": "80px"})
            self.step = W.IntSlider(value=self.T, min=1, max=self.T, description="step t",
                                    layout=W.Layout(width="560px"))
            self.image = W.Image(format="png", layout=W.Layout(max_width="720px"))
            self.status = W.HTML()
            self.text = W.HTML(layout=W.Layout(max_width="900px"))
            note = W.HTML('<span style="font-size:85%;color:#555">Live view: every control recomputes from the '
                          'stored hidden states (no model runs). In the static book use '
                          '<code>static_explorer</code> instead.</span>')

            self.figure = Figure(figsize=(6.6, 3.4), dpi=100)
            ax = self.ax = self.figure.add_subplot(111)
            sigma_axes(ax, self.T)
            steps = np.arange(1, self.T + 1)
            (self.sigma_line,) = ax.plot(steps, np.full(self.T, 0.5), "-o", ms=3, lw=1.8, color=COLORS["sigma"],
                                         label="SRI σ_t", zorder=3)
            (self.text_line,) = ax.step(steps, np.ones(self.T), where="mid", lw=1.4, ls=":", color=COLORS["text"],
                                        label="text signal", zorder=3)
            self.lam_line = ax.axhline(lambda_r, color=COLORS["lambda"], lw=1.0, ls="-.", zorder=2,
                                       label="IRR λ_r")
            self.step_line = ax.axvline(self.T, color=COLORS["step"], lw=1.0, zorder=2)
            (self.step_dot,) = ax.plot([self.T], [0.5], "o", ms=8, mfc="none", mec="k", zorder=4)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
            if anchors.fallback:
                ax.text(0.99, 0.02, anchors.label, transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
                        color="#b30000")
            self.figure.subplots_adjust(left=0.1, right=0.94, bottom=0.27, top=0.9)

            self.set_select.observe(self._on_set, names="value")
            for w in (self.prompt, self.tau, self.lam):
                w.observe(self._redraw, names="value")
            self.step.observe(self._redraw, names="value")
            rows = [W.HBox([self.set_select, self.prompt]), W.HBox([self.tau, self.lam]),
                    self.step, self.image, self.status, self.text, note]
            if len(names) == 1:
                rows[0] = self.prompt
            super().__init__(rows)
            self.add_class("sri-explorer")
            self._on_set()

        # ---- state
        @property
        def current(self) -> tuple[str, int]:
            return self.set_select.value, int(self.prompt.value or 0)

        def sigma(self) -> np.ndarray:
            """sigma [T] of the selected generation at the current tau."""
            name, i = self.current
            return self.signals.sigma(name, self.tau.value)[i]

        # ---- callbacks
        def _on_set(self, *_):
            name = self.set_select.value
            ts = self.signals.sets[name]
            opts = [(_label(ts, i, r), i) for i, r in enumerate(self.signals.refused[name])]
            self._quiet = True  # one redraw below, not one per trait change
            try:
                self.prompt.options = opts
                self.prompt.value = 0
            finally:
                self._quiet = False
            self._redraw()

        def _redraw(self, *_):
            if self._quiet:
                return
            name, i = self.current
            ts, t = self.signals.sets[name], int(self.step.value)
            sig, txt, lam = self.sigma(), self.signals.text[name][i], float(self.lam.value)
            self.sigma_line.set_ydata(sig)
            self.text_line.set_ydata(txt)
            self.lam_line.set_ydata([lam, lam])
            self.step_line.set_xdata([t, t])
            self.step_dot.set_data([t], [sig[t - 1]])
            self.ax.set_title(f"{name} #{i} · τ = {self.tau.value:.2f}", fontsize=10)
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png")
            self.image.value = buf.getvalue()
            irr = self.signals.irr(name, self.tau.value, lam)
            rec = _recovered(sig, lam)
            extra = ""
            if ts.pred_texts is not None:
                extra = f" · committed {int(ts.committed[i, t - 1].sum())}/{ts.L} positions"
            self.status.value = (
                f"<b>step {t}/{self.T}</b> · σ_t = {sig[t - 1]:.3f} ({_zone_name(sig[t - 1])}) · text signal "
                f"{int(txt[t - 1])}{extra}<br>this generation {'meets' if rec else 'does not meet'} the IRR "
                f"criterion (σ > 0.5 before the end, σ_T < {lam:g})"
                + (f" · IRR of <i>{html.escape(name)}</i> at τ = {self.tau.value:.2f}: {irr}"
                   if irr is not None else ""))
            legend = ("<span style='color:#08519c;background:#deebf7'>blue</span> = added at this step"
                      if ts.pred_texts is None else
                      "black = committed, <i style='color:#d95f02'>orange</i> = current prediction at a masked "
                      "position" + ("" if self.tokenizer is not None else " (aligned from text; pass tokenizer= "
                                    "for exact token colours)"))
            self.text.value = (f"<div style='font-size:85%;color:#555'>prompt: {html.escape(ts.prompts[i])}</div>"
                               f"<div style='white-space:pre-wrap;border:1px solid #ddd;padding:6px;"
                               f"font-family:monospace;font-size:90%'>"
                               f"{_segments_html(step_segments(ts, i, t - 1, self.tokenizer))}</div>"
                               f"<div style='font-size:80%;color:#555'>{legend}</div>")

    return _SRIExplorer


def __getattr__(name: str):  # SRIExplorer is built on first use, so importing srilib.widgets needs no ipywidgets
    if name == "SRIExplorer":
        return _explorer_class()
    raise AttributeError(name)


# ------------------------------------------------------------------------------------------- static view
def _delta(prev: str, cur: str) -> list:
    """``[p, s, mid]``: cur = prev[:p] + mid + prev[len(prev) - s:] (indices in code points)."""
    p = 0
    n = min(len(prev), len(cur))
    while p < n and prev[p] == cur[p]:
        p += 1
    s = 0
    while s < n - p and prev[len(prev) - 1 - s] == cur[len(cur) - 1 - s]:
        s += 1
    return [p, s, cur[p:len(cur) - s]]


def _deltas(texts: Sequence[str]) -> list[list]:
    out, prev = [], ""
    for x in texts:
        out.append(_delta(prev, x))
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


def _pick(sets: dict[str, TraceSet], max_prompts: int, pick) -> list[tuple[str, int]]:
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
    per = [iter(range(len(ts))) for ts in sets.values()]
    out, names = [], list(sets)
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
                  pick: Mapping[str, Sequence[int]] | None = None) -> dict:
    """The data behind :func:`static_explorer` (JSON-ready; sigma rounded to 3 decimals, texts delta-encoded)."""
    sets = _as_sets(traces, anchors)
    taus = [_check_tau(x) for x in tau_values]
    if not taus:
        raise ValueError("tau_values is empty; pass at least one tau, e.g. (0.05, 0.1, 0.2, 0.3)")
    lams = [float(x) for x in lambda_r]
    if not lams or not all(0 < x < 1 for x in lams):
        raise ValueError(f"lambda_r must be thresholds in (0, 1), got {list(lambda_r)}")
    if max_prompts < 1:
        raise ValueError(f"max_prompts must be >= 1, got {max_prompts}")
    sig = _Signals(sets, anchors)
    r3 = lambda a: [round(float(x), 3) for x in a]  # noqa: E731
    set_info = []
    for name, ts in sets.items():
        irr = [[sig.irr(name, tau, lam) for lam in lams] for tau in taus]
        set_info.append({"name": name, "n": len(ts), "dlm": ts.pred_texts is not None, "irr": irr,
                         "refused": int(sig.refused[name].sum())})
    names = list(sets)
    items = []
    for name, i in _pick(sets, int(max_prompts), pick):
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
                    p, r = _runs_from_tokens(ts, i, t, tokenizer)
                else:
                    p = ts.pred_texts[i][t]
                    r = _runs_from_alignment(p, ts.step_texts[i][t])
                p, r = _clip(p, r, max_chars)
                preds.append(p)
                runs.append(r)
            item["text"] = _deltas(preds)
            item["runs"] = runs
            item["ncommitted"] = ts.committed[i].sum(axis=1).astype(int).tolist()
            item["L"] = ts.L
        items.append(item)
    return {"T": anchors.T, "taus": [round(x, 4) for x in taus], "lams": lams,
            "zones": [COMPLIANCE_ZONE, REFUSAL_ZONE], "anchors": anchors.label, "fallback": bool(anchors.fallback),
            "exact_tokens": tokenizer is not None, "sets": set_info, "items": items, "colors": COLORS}


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
  var D = JSON.parse(document.getElementById(id + "-data").textContent);
  var $ = function (s) { return root.querySelector("." + s); };
  var sel = $("sx-prompt"), step = $("sx-step"), tauSel = $("sx-tau"), lamSel = $("sx-lam"), play = $("sx-play");
  var T = D.T, C = D.colors, cache = {};
  function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  function opt(v, label) { var o = document.createElement("option"); o.value = v; o.textContent = label; return o; }
  D.items.forEach(function (it, k) {
    var p = it.prompt.replace(/\s+/g, " ");
    sel.appendChild(opt(k, D.sets[it.set].name + " #" + it.i + " [" + (it.refused ? "refused" : "complied") + "] " +
                        (p.length > 70 ? p.slice(0, 70) + "\u2026" : p)));
  });
  D.taus.forEach(function (t, k) { tauSel.appendChild(opt(k, "\u03c4 = " + t)); });
  D.lams.forEach(function (l, k) { lamSel.appendChild(opt(k, "\u03bb_r = " + l)); });
  var t0 = D.taus.indexOf(0.1); tauSel.value = t0 < 0 ? 0 : t0;
  var l0 = D.lams.indexOf(0.3); lamSel.value = l0 < 0 ? 0 : l0;
  step.max = T; step.value = T;
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
    g.push('<rect x="' + L + '" y="' + y(1.02) + '" width="' + (W - L - R) + '" height="' + (y(z[0]) - y(1.02)) + '" fill="#fde0dd"/>');
    g.push('<rect x="' + L + '" y="' + y(z[0]) + '" width="' + (W - L - R) + '" height="' + (y(z[1]) - y(z[0])) + '" fill="#f0f0f0"/>');
    g.push('<rect x="' + L + '" y="' + y(z[1]) + '" width="' + (W - L - R) + '" height="' + (y(-0.02) - y(z[1])) + '" fill="#e5f5e0"/>');
    z.forEach(function (v) { g.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y(v) + '" y2="' + y(v) + '" stroke="#888" stroke-dasharray="5 3"/>'); });
    g.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y(lam) + '" y2="' + y(lam) + '" stroke="' + C.lambda + '" stroke-dasharray="8 3 2 3"/>');
    [0, 0.3, 0.5, 1].forEach(function (v) { g.push('<text x="' + (L - 6) + '" y="' + (y(v) + 4) + '" text-anchor="end" font-size="11">' + v + '</text>'); });
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
    g.push('<text x="' + (W - R + 12) + '" y="' + y(0.76) + '" font-size="10" fill="#666" text-anchor="middle" transform="rotate(90 ' + (W - R + 12) + ' ' + y(0.76) + ')">compliance</text>');
    g.push('<text x="' + (W - R + 12) + '" y="' + y(0.15) + '" font-size="10" fill="#666" text-anchor="middle" transform="rotate(90 ' + (W - R + 12) + ' ' + y(0.15) + ')">refusal</text>');
    g.push('<text x="' + (W - R) + '" y="14" text-anchor="end" font-size="11" fill="#444">' + esc(D.sets[it.set].name) + ' #' + it.i + ', \u03c4 = ' + D.taus[tauK] + '</text>');
    if (D.fallback) { g.push('<text x="' + (W - R) + '" y="' + (H - B - 4) + '" text-anchor="end" font-size="10" fill="#b30000">' + esc(D.anchors) + '</text>'); }
    g.push("</svg>");
    return g.join("");
  }
  function zoneName(v) { return v > D.zones[0] ? "compliance" : v < D.zones[1] ? "refusal" : "transitional"; }
  function draw() {
    var k = +sel.value, it = D.items[k], tauK = +tauSel.value, lamK = +lamSel.value, lam = D.lams[lamK];
    var t = +step.value, s = it.sigma[tauK], set = D.sets[it.set];
    $("sx-plot").innerHTML = svg(it, tauK, lam, t);
    var early = T > 1 ? Math.max.apply(null, s.slice(0, T - 1)) : -1;
    var rec = early > 0.5 && s[T - 1] < lam;             /* the IRR criterion for this generation */
    var irr = set.irr[tauK][lamK];
    var txtSig = it.refuse_at !== null && t >= it.refuse_at ? 0 : 1;
    $("sx-status").innerHTML = "<b>step " + t + "/" + T + "</b> \u00b7 \u03c3_t = " + s[t - 1].toFixed(3) + " (" +
      zoneName(s[t - 1]) + ") \u00b7 text signal " + txtSig +
      (set.dlm ? " \u00b7 committed " + it.ncommitted[t - 1] + "/" + it.L + " positions" : "") +
      "<br>this generation " + (rec ? "meets" : "does not meet") + " the IRR criterion (\u03c3 > 0.5 before the end, \u03c3_T < " + lam + ")" +
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
  step.addEventListener("input", function () { stop(); draw(); });
  draw();
})();
"""


def static_explorer(traces: Mapping[str, TraceSet] | TraceSet, anchors: Anchors,
                    tau_values: Sequence[float] = (0.05, 0.1, 0.2, 0.3), max_prompts: int = 12, tokenizer=None,
                    lambda_r: Sequence[float] = DEFAULT_LAMBDA_R, max_chars: int = 600,
                    pick: Mapping[str, Sequence[int]] | None = None):
    """Self-contained HTML/JS explorer for pages without a kernel (the static book), as ``IPython.display.HTML``.

    Sigma is precomputed for each of ``tau_values`` (3 decimals) and embedded as JSON with the text signal and
    the per-step texts (delta-encoded, clipped at ``max_chars``) of at most ``max_prompts`` generations (round
    robin over the sets, or ``pick``: dict set -> indices). Set-level IRR is computed over every generation of
    each set. No external script or style is loaded; each call gets its own DOM ids.
    """
    from IPython.display import HTML

    data = explorer_data(traces, anchors, tau_values, max_prompts, tokenizer, lambda_r, max_chars, pick)
    payload = _json_for_html(data)
    uid = f"sri-x-{hashlib.sha256(payload.encode()).hexdigest()[:8]}-{next(_ids)}"
    taus = ", ".join(f"{t:g}" for t in data["taus"])
    note = (f"Static view: the prompt, step, τ ({taus}) and λ_r controls work in this page without a kernel "
            f"(σ precomputed for these τ; {len(data['items'])} generation(s) embedded). Any other τ, every "
            "generation and exact token colours need a live kernel: <code>srilib.widgets.sri_explorer(traces, "
            "anchors)</code> in JupyterLab or Colab.")
    body = f"""<div id="{uid}" class="sri-explorer tex2jax_ignore mathjax_ignore">
<style>{_CSS.format(id=uid)}</style>
<div class="sx-row"><label>generation <select class="sx-prompt" aria-label="generation"></select></label></div>
<div class="sx-row"><label>τ <select class="sx-tau" aria-label="tau"></select></label>
<label>IRR threshold <select class="sx-lam" aria-label="lambda_r"></select></label>
<button type="button" class="sx-play">▶ play</button>
<label>step t <input type="range" class="sx-step" min="1" max="{data['T']}" value="{data['T']}" step="1"
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


__all__ = ["sri_explorer", "static_explorer", "explorer_data", "step_segments", "slim", "SRIExplorer"]
