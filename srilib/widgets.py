"""Explore SRI trajectories step by step, from cached traces only (no model is ever called).

Two views of the same thing, one generation at a time: the SRI signal sigma_t in the paper's zones, the
text-level refusal signal, and the text at the chosen step (AR: the text so far, newest token highlighted;
DLM: the intermediate prediction, committed tokens in black and predictions at still-masked positions in orange).

* :func:`sri_explorer` -- live ipywidgets (JupyterLab, Colab). Every control redraws from the stored pooled
  activations: sigma is recomputed with ``anchors.signal(phi, tau=...)``, which is cheap.
* :func:`srilib.explorer_static.static_explorer` -- a self-contained HTML/JavaScript view for the static book
  (no kernel): sigma is precomputed in Python for a few tau values and embedded as JSON with the step texts, the
  zones, the IRR rule's threshold and the status words defined here; no external script.

Token colours: pass ``tokenizer=`` (e.g. ``lm.tokenizer``) for exact per-position colours from the trace's
token arrays. Without it the colours come from aligning the committed text with the prediction (difflib), which
needs no model but may misplace a boundary by a character or two.

One room: how both explorers read traces (runs, sets, σ per τ, recoveries, status words) and the live widget
that shows them, kept together so that the static page (:mod:`srilib.explorer_static`) only serialises it.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import html
import io
from typing import Mapping, Sequence

import numpy as np

from .signal import DEFAULT_LAMBDA_C, DEFAULT_LAMBDA_R, internal_recovery_rate
from .judges import is_refusal, text_signals
from .signal import ZONE_NAMES, Anchors, zone
from .traces import TraceSet

TAU_RANGE = (0.02, 0.5)
COLORS = {"committed": "#111111", "predicted": "#d95f02", "new": "#08519c", "sigma": "#08519c", "text": "#a50f15",
          "lambda": "#6a3d9a", "step": "#444444"}
# The words of the explorers' status line, defined once: the live widget formats them here, the static page's
# JavaScript reads them from its embedded data (explorer_data()["status"]).
STATUS = {"refused": "refused", "complied": "complied", "meets": "meets", "fails": "does not meet",
          "generation": "this generation {verdict} the IRR criterion "
                        f"(σ > {DEFAULT_LAMBDA_C:g} before the end, σ_T < {{lam}})"}


# ------------------------------------------------------------------------------------------- shared data
def as_sets(traces: Mapping[str, TraceSet] | TraceSet, anchors: Anchors) -> dict[str, TraceSet]:
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


@dataclasses.dataclass(frozen=True)
class ExplorerRun:
    """One run for the explorers' run picker: its traces (a TraceSet or a dict set name -> TraceSet), the anchors
    of the same model, layer and pooling, and optionally a tokenizer (or model) for exact token colours."""

    traces: Mapping[str, TraceSet] | TraceSet
    anchors: Anchors
    tokenizer: object = None


def as_runs(traces, anchors, tokenizer) -> dict[str, ExplorerRun]:
    """The explorers' input as label -> ExplorerRun: a dict of ExplorerRun as given (several runs, the reader
    picks one), else one unnamed run of ``traces`` and ``anchors``."""
    if isinstance(traces, Mapping) and traces and all(isinstance(v, ExplorerRun) for v in traces.values()):
        if anchors is not None:
            raise TypeError("with a dict of ExplorerRun, each run carries its own anchors: pass anchors=None")
        return {str(k): v for k, v in traces.items()}
    return {"": ExplorerRun(traces, anchors, tokenizer)}


def is_harmful_set(name: str) -> bool:
    """Whether an evaluation set is a harmful one (raw or attacked): every set but the harmless ones."""
    return not name.startswith("harmless")


def check_tau(tau: float) -> float:
    tau = float(tau)
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    return tau


def runs_from_tokens(ts: TraceSet, n: int, t: int, tokenizer) -> tuple[str, list[int]]:
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


def runs_from_alignment(pred: str, committed: str) -> list[int]:
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


def text_delta(prev: str, cur: str) -> list:
    """``[p, s, mid]``: cur = prev[:p] + mid + prev[len(prev) - s:] (indices in code points)."""
    p = 0
    n = min(len(prev), len(cur))
    while p < n and prev[p] == cur[p]:
        p += 1
    s = 0
    while s < n - p and prev[len(prev) - 1 - s] == cur[len(cur) - 1 - s]:
        s += 1
    return [p, s, cur[p:len(cur) - s]]


def step_segments(ts: TraceSet, n: int, t: int, tokenizer=None) -> list[tuple[str, str]]:
    """Text of generation ``n`` at step ``t`` (0-based) as ``(text, kind)`` pieces.

    kind is ``"committed"``, ``"predicted"`` (DLM: current prediction at a still-masked position) or ``"new"``
    (AR: the text added at this step).
    """
    if ts.pred_texts is None:  # AR: text so far, with what this step added
        cur, prev = ts.step_texts[n][t], (ts.step_texts[n][t - 1] if t > 0 else "")
        p = text_delta(prev, cur)[0]
        return [(s, k) for s, k in ((cur[:p], "committed"), (cur[p:], "new")) if s]
    if tokenizer is not None:
        text, runs = runs_from_tokens(ts, n, t, tokenizer)
    else:
        text = ts.pred_texts[n][t]
        runs = runs_from_alignment(text, ts.step_texts[n][t])
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
    """The paper's zone of one sigma value, by name (:func:`srilib.signal.zone`)."""
    return ZONE_NAMES[int(zone(s))]


def _recovered(sig, lam: float) -> bool:
    """The IRR criterion for one generation (:func:`srilib.signal.internal_recovery_rate`): compliant
    (sigma > lambda_c) at some step before the end and below ``lam`` at the end; False with fewer than 2 steps."""
    sig = np.asarray(sig, dtype=np.float64)
    if sig.shape[-1] < 2:
        return False
    return bool(internal_recovery_rate(sig[None], lambda_r=float(lam))[float(lam)].outcomes[0])


def _recovery_status(sig, lam: float) -> str:
    """The status sentence for one generation: it meets / does not meet the IRR criterion at ``lam``."""
    verdict = STATUS["meets"] if _recovered(sig, lam) else STATUS["fails"]
    return STATUS["generation"].replace("{verdict}", verdict).replace("{lam}", f"{float(lam):g}")


class Signals:
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
            self._sigma[key] = self.anchors.signal(self.phi[name], tau=check_tau(tau))
        return self._sigma[key]

    def irr(self, name: str, tau: float, lam: float) -> str | None:
        """IRR of the whole set at (tau, lam) as text with its 95% Wilson interval (None when T < 2)."""
        sig = self.sigma(name, tau)
        if sig.shape[1] < 2:
            return None
        return str(internal_recovery_rate(sig, lambda_r=lam)[float(lam)])


def recoveries(sets: dict[str, TraceSet], sig: Signals, tau: float, lam: float) -> list[tuple[str, int]]:
    """The generations of the harmful sets that meet the IRR criterion at (tau, lam): compliant before the end,
    refusing at it (the informative cases the explorer opens on)."""
    out = []
    for name in sets:
        s = sig.sigma(name, tau)
        if is_harmful_set(name) and s.shape[1] >= 2:
            rec = internal_recovery_rate(s, lambda_r=lam)[float(lam)].outcomes
            out += [(name, int(i)) for i in np.flatnonzero(rec)]
    return out


def _label(ts: TraceSet, i: int, refused: bool, width: int = 70) -> str:
    p = " ".join(ts.prompts[i].split())
    outcome = STATUS["refused"] if refused else STATUS["complied"]
    return f"#{i} [{outcome}] " + (p[:width] + "…" if len(p) > width else p)


# ------------------------------------------------------------------------------------------- live widget
def sri_explorer(traces: Mapping[str, TraceSet | ExplorerRun] | TraceSet, anchors: Anchors | None = None,
                 tau: float = 0.1, tokenizer=None, lambda_r: float = 0.3, start: str | None = None):
    """Interactive explorer of cached traces (ipywidgets; needs a live kernel: JupyterLab, Colab).

    Parameters
    ----------
    traces : TraceSet, dict name -> TraceSet, or dict label -> ExplorerRun
        Generations to browse (same T as the anchors); a dict of :class:`ExplorerRun` gives a run picker (each
        run with its own anchors and tokenizer; ``anchors`` stays None).
    anchors : Anchors
        Anchors of the same model, layer and pooling (one run).
    tau : float
        Initial temperature (slider range 0.02-0.5, widened to include ``tau`` when it lies outside).
    tokenizer : optional
        For exact per-token colours of DLM predictions (e.g. ``lm.tokenizer``); not needed otherwise.
    lambda_r : float
        Initial IRR refusal threshold (choices 0.5, 0.3, 0.1); the zone lines stay at 0.5 and 0.3.
    start : str, optional
        The run label to open on (default: the first). Each run opens on its first harmful generation that
        meets the IRR criterion at the initial τ and λ_r, else its first generation.

    Returns
    -------
    SRIExplorer, an ``ipywidgets.VBox``. Nothing here loads or runs a model.
    """
    return _explorer_class()(traces, anchors, tau=tau, tokenizer=tokenizer, lambda_r=lambda_r, start=start)


@functools.lru_cache(maxsize=1)
def _explorer_class():
    import ipywidgets as W

    class _SRIExplorer(W.VBox):
        """See :func:`sri_explorer`. Attributes: the controls (``run_select``, ``set_select``, ``prompt``,
        ``tau``, ``lam``, ``step``), the matplotlib ``figure`` and its lines (``sigma_line``, ``text_line``),
        ``image`` (the rendered figure) and ``text`` (HTML of the step's text)."""

        def __init__(self, traces, anchors: Anchors | None, tau: float = 0.1, tokenizer=None, lambda_r: float = 0.3,
                     start: str | None = None):
            from matplotlib.figure import Figure

            self.runs = as_runs(traces, anchors, tokenizer)
            self._sets = {k: as_sets(r.traces, r.anchors) for k, r in self.runs.items()}  # every run checked now
            labels = list(self.runs)
            if start is not None and start not in self.runs:
                raise KeyError(f"start={start!r} is not among the runs: {labels}")
            start = labels[0] if start is None else start
            sets, anchors, tokenizer = self._sets[start], self.runs[start].anchors, self.runs[start].tokenizer
            tau = check_tau(tau)  # a τ outside TAU_RANGE widens the slider to it
            if float(lambda_r) not in DEFAULT_LAMBDA_R:
                raise ValueError(f"lambda_r must be one of {DEFAULT_LAMBDA_R} (the paper's thresholds), got {lambda_r}")
            self._signals = {start: Signals(sets, anchors)}
            self.signals = self._signals[start]
            self._quiet = False
            self.anchors, self.tokenizer, self.T = anchors, tokenizer, anchors.T
            names = list(sets)
            self.run_select = W.Dropdown(options=labels, value=start, description="run",
                                         layout=W.Layout(width="420px"))
            self.set_select = W.Dropdown(options=names, value=names[0], description="set",
                                         layout=W.Layout(width="220px"))
            self.prompt = W.Dropdown(description="prompt", layout=W.Layout(width="560px"))
            self.tau = W.FloatSlider(value=tau, min=min(TAU_RANGE[0], tau), max=max(TAU_RANGE[1], tau), step=0.01,
                                     description="τ",
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
            self._axes(lambda_r)

            self.run_select.observe(self._on_run, names="value")
            self.set_select.observe(self._on_set, names="value")
            for w in (self.prompt, self.tau, self.lam):
                w.observe(self._redraw, names="value")
            self.step.observe(self._redraw, names="value")
            rows = [W.HBox([self.set_select, self.prompt]), W.HBox([self.tau, self.lam]),
                    self.step, self.image, self.status, self.text, note]
            if len(names) == 1:
                rows[0] = self.prompt
            if len(labels) > 1:
                rows.insert(0, self.run_select)
            super().__init__(rows)
            self.add_class("sri-explorer")
            self._open()

        def _axes(self, lambda_r: float):
            """(Re)draw the axes for the current run's T: zones, lines, step marker."""
            from .figures import sigma_axes

            self.figure.clear()
            ax = self.ax = self.figure.add_subplot(111)
            anchors = self.anchors
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

        def _open(self):
            """Show the run's opening case: its first harmful generation that recovers (IRR criterion at the
            current τ and λ_r), else the first generation of its first set."""
            rec = recoveries(self.signals.sets, self.signals, self.tau.value, float(self.lam.value))
            name, i = rec[0] if rec else (next(iter(self.signals.sets)), 0)
            self._quiet = True
            try:
                self.set_select.options = list(self.signals.sets)
                self.set_select.value = name
            finally:
                self._quiet = False
            self._on_set(index=i)

        # ---- state
        @property
        def current(self) -> tuple[str, int]:
            return self.set_select.value, int(self.prompt.value or 0)

        def sigma(self) -> np.ndarray:
            """sigma [T] of the selected generation at the current tau."""
            name, i = self.current
            return self.signals.sigma(name, self.tau.value)[i]

        # ---- callbacks
        def _on_run(self, *_):
            label = self.run_select.value
            run = self.runs[label]
            if label not in self._signals:
                self._signals[label] = Signals(self._sets[label], run.anchors)
            self.signals, self.anchors, self.tokenizer = self._signals[label], run.anchors, run.tokenizer
            self._quiet = True
            try:
                self.T = run.anchors.T
                self.step.max = self.T
                self.step.value = self.T
                self._axes(float(self.lam.value))  # this run's T and anchor note
            finally:
                self._quiet = False
            self._open()

        def _on_set(self, *_, index: int = 0):
            if self._quiet:
                return
            name = self.set_select.value
            ts = self.signals.sets[name]
            opts = [(_label(ts, i, r), i) for i, r in enumerate(self.signals.refused[name])]
            self._quiet = True  # one redraw below, not one per trait change
            try:
                self.prompt.options = opts
                self.prompt.value = index
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
            run = self.run_select.value
            self.ax.set_title((f"{run} · " if run else "") + f"{name} #{i} · τ = {self.tau.value:.2f}", fontsize=10)
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png")
            self.image.value = buf.getvalue()
            irr = self.signals.irr(name, self.tau.value, lam)
            extra = ""
            if ts.pred_texts is not None:
                extra = f" · committed {int(ts.committed[i, t - 1].sum())}/{ts.L} positions"
            self.status.value = (
                (f"<b>{html.escape(run)}</b> · " if run else "") + f"<b>step {t}/{self.T}</b> · σ_t = {sig[t - 1]:.3f} ({_zone_name(sig[t - 1])}) · text signal "
                f"{int(txt[t - 1])}{extra}<br>{_recovery_status(sig, lam)}"
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


__all__ = ["sri_explorer", "step_segments", "slim", "SRIExplorer", "ExplorerRun", "STATUS"]
