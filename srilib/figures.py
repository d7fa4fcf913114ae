"""The book's figures: what they share (style, layout, colours, the SRI axis), then each chapter's figures.

Shared here: the book's matplotlib style and layout (:func:`book_style`, :func:`figure_grid`, :data:`BOOK_WIDTH`),
the colours of prompt groups, model families and thresholds, the SRI axis in the paper's conventions (step axis
t = 1..T, SRI in [0, 1], zones at 0.5 and 0.3; :func:`sigma_axes`) and error bars of rates.

Sections, in order: SRI over steps (the geometry and recovery chapters), the geometry chapter's projections and anchor
separation, the recovery chapter's IRR bars, worked examples and diffusion canvases as HTML, the sampling chapter's
sampler deltas and per-family rates, ASR against the Random Search budget, and the detector chapter's ROC curves,
overhead, transfer and shift. Every function takes arrays, plain mappings and labels, never a chapter object.
Matplotlib is imported inside the functions, so importing this module needs no plotting backend.

One room: every figure of the book, drawn from arrays in one style (split by chapter, each part imported only the
shared helpers above it).
"""
from __future__ import annotations

import html
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from .geometry import trajectory_summary
from .signal import COMPLIANCE_ZONE, REFUSAL_ZONE

# The book's content column is about 720 px wide and the notebooks save figures at 110 dpi: a figure of
# BOOK_WIDTH inches is shown at (nearly) its natural size, so fonts of 8-10 pt stay legible. Multi-panel figures
# put at most MAX_COLS panels in a row and add rows instead of shrinking panels (figure_grid).
BOOK_DPI = 110
BOOK_WIDTH = 6.8  # inches: 748 px at BOOK_DPI
MAX_COLS = 2
BOOK_STYLE = {"figure.dpi": BOOK_DPI, "savefig.dpi": BOOK_DPI, "font.size": 9, "axes.titlesize": 9.5,
              "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8}


def book_style() -> None:
    """Matplotlib settings of the book's figures (dpi and font sizes matched to :data:`BOOK_WIDTH`)."""
    import matplotlib.pyplot as plt
    plt.rcParams.update(BOOK_STYLE)


def figure_grid(n: int, *, ncols: int = MAX_COLS, panel_height: float = 2.9, width: float = BOOK_WIDTH, **kw):
    """A figure for ``n`` panels laid out at most ``ncols`` to a row (more rows, never narrower panels), as wide
    as the book's content column; returns ``(fig, axes)`` with exactly ``n`` axes (unused cells removed).
    ``kw`` goes to ``plt.subplots`` (e.g. ``sharey=True``)."""
    import matplotlib.pyplot as plt

    if n < 1:
        raise ValueError(f"figure_grid needs at least one panel, got {n}")
    cols = max(1, min(ncols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, panel_height * rows), squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


# ------------------------------------------------------------------------------------------------ colours
GROUP_COLORS = {"harmless": "#2b8cbe", "harmful": "#d7301f", "refusal": "#31a354", "jailbreak": "#d7301f"}
# The zones are shades of grey, so that no group's colour (the harmful band's red, the refused band's green) is
# confused with the zone it is drawn on; the labels on the right name them.
ZONE_STYLE = {"compliance": ("#e3e3e3", "compliance  (σ > 0.5)"), "transitional": ("#f4f4f4", "transitional"),
              "refusal": ("#ffffff", "refusal  (σ < 0.3)")}
FAMILY_COLORS = {"AR": "#d95f02", "DLM": "#1b9e77", "DLM, AR sampling": "#7570b3"}
THRESHOLD_COLORS = ("#c6dbef", "#6baed6", "#08519c")


def group_color(name: str, i: int) -> str:
    """Colour of a prompt group: its own (:data:`GROUP_COLORS`) or the ``i``-th of matplotlib's cycle."""
    import matplotlib.pyplot as plt
    return GROUP_COLORS.get(name, plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])


# ------------------------------------------------------------------------------------------------ axes
def sigma_axes(ax, T: int, title: str | None = None, zones: bool = True, ylabel: str = "SRI  σ_t"):
    """Prepare an axis for SRI over steps: shaded zones, step ticks 1..T, y in [0, 1]."""
    if zones:
        ax.axhspan(COMPLIANCE_ZONE, 1.02, color=ZONE_STYLE["compliance"][0], zorder=0, lw=0)
        ax.axhspan(REFUSAL_ZONE, COMPLIANCE_ZONE, color=ZONE_STYLE["transitional"][0], zorder=0, lw=0)
        ax.axhspan(-0.02, REFUSAL_ZONE, color=ZONE_STYLE["refusal"][0], zorder=0, lw=0)
        for y in (COMPLIANCE_ZONE, REFUSAL_ZONE):
            ax.axhline(y, color="0.5", lw=0.8, ls="--", zorder=1)
        ax.text(1.01, (1 + COMPLIANCE_ZONE) / 2, "compliance", transform=ax.get_yaxis_transform(), va="center",
                fontsize=8, color="0.35", rotation=90)
        ax.text(1.01, REFUSAL_ZONE / 2, "refusal", transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                color="0.35", rotation=90)
    ax.set_xlim(0.5, T + 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step t")
    ax.set_ylabel(ylabel)
    ticks = np.unique(np.linspace(1, T, min(T, 9)).round().astype(int))
    ax.set_xticks(ticks)
    if title:
        fit_title(ax, title, 10)
    return ax


def fit_title(ax, text: str, fontsize: float = 9.5) -> None:
    """Set ``ax``'s title wrapped to the panel's width (so a long title never runs into the next panel)."""
    import textwrap

    width_px = ax.get_position().width * ax.figure.get_figwidth() * ax.figure.dpi
    chars = max(12, int(width_px / (0.55 * fontsize * ax.figure.dpi / 72)))
    lines = [w for para in str(text or "").split("\n") for w in (textwrap.wrap(para, chars) or [""])]
    ax.set_title("\n".join(lines) if text else "", fontsize=fontsize)


def legend_below(ax, handles=None, labels=None, title: str | None = None, ncol: int | None = None,
                 fontsize: float = 7.5):
    """A legend under ``ax``, below its tick labels and x label, in as many columns as fit the panel's width:
    never over the data. ``tight_layout`` makes room for it. Returns the legend (None without entries)."""
    from matplotlib.transforms import ScaledTranslation

    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    elif labels is None:
        labels = [h.get_label() for h in handles]
    if not handles:
        return None
    fig = ax.figure
    r = fig.canvas.get_renderer()
    drop_px = max(0.0, ax.get_window_extent(r).y0 - ax.get_tightbbox(r).y0)  # ticks and x label, in pixels
    shift = ScaledTranslation(0, -(drop_px + 3) / fig.dpi, fig.dpi_scale_trans)
    axis_w = ax.get_window_extent(r).width
    leg = None
    for nc in range(ncol or min(len(handles), 3), 0, -1):
        if leg is not None:
            leg.remove()
        leg = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0),
                        bbox_transform=ax.transAxes + shift, ncol=nc, fontsize=fontsize, frameon=False,
                        title=title, title_fontsize=fontsize, borderaxespad=0, columnspacing=1.2, handlelength=1.6)
        if leg.get_window_extent(r).width <= 1.1 * axis_w:
            break
    return leg


def layout_problems(fig) -> list[str]:
    """What hides data or text in a drawn figure: a legend over any axes' data area or over another legend, a
    title over another title. Empty when the figure is clean (the book's figure tests check this)."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axes = [a for a in fig.axes if a.get_visible()]
    legends = [(i, a.get_legend()) for i, a in enumerate(axes) if a.get_legend() is not None]
    legends += [(-1, lg) for lg in fig.legends]
    out = []
    for i, lg in legends:
        lb = lg.get_window_extent(r)
        for j, a in enumerate(axes):
            if lb.overlaps(a.get_window_extent(r)):
                out.append(f"legend of panel {i} lies over the data of panel {j}")
        for k, other in legends:
            if other is not lg and k > i and lb.overlaps(other.get_window_extent(r)):
                out.append(f"legends of panels {i} and {k} overlap")
    titles = [(i, a.title.get_window_extent(r)) for i, a in enumerate(axes) if a.get_title()]
    for n, (i, tb) in enumerate(titles):
        for j, ob in titles[n + 1:]:
            if tb.overlaps(ob):
                out.append(f"titles of panels {i} and {j} overlap")
    return out


_FIGURE_NUMBER = [0]


def show_figure(fig, caption: str, numbered: bool = True, glue_name: str | None = None) -> int | None:
    """Lay out, display and close ``fig`` with its caption below it: "Figure n. ...", numbered in the order a
    notebook shows its figures (returns n), or, with ``numbered=False`` (a figure repeated at the top of a
    chapter), "Headline figure. ..." (returns None). With ``glue_name`` the laid-out figure is also glued under
    that name (myst-nb) for another page to paste, from the very image shown here."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    fig.tight_layout()
    if glue_name:
        from myst_nb import glue
        glue(glue_name, fig, display=False)
    display(fig)
    plt.close(fig)
    if not numbered:
        display(Markdown(f"**Headline figure.** {caption}"))
        return None
    _FIGURE_NUMBER[0] += 1
    display(Markdown(f"**Figure {_FIGURE_NUMBER[0]}.** {caption}"))
    return _FIGURE_NUMBER[0]


def rate_errorbars(rates) -> tuple[np.ndarray, np.ndarray]:
    """(values [n], error bars [2, n]) of rates with intervals (``.value``, ``.lo``, ``.hi``); NaN bars become 0."""
    v = np.array([r.value for r in rates], dtype=float)
    lo = np.array([r.lo for r in rates], dtype=float)
    hi = np.array([r.hi for r in rates], dtype=float)
    return v, np.nan_to_num(np.vstack([v - lo, hi - v]))


# --------------------------------------------------------------------------------------------------------------
# SRI over steps (the geometry and recovery chapters): group means with their interquartile band, one
# generation's SRI beside its text-level refusal signal
# --------------------------------------------------------------------------------------------------------------
def plot_trajectories(ax, groups: dict[str, np.ndarray], title: str | None = None, band: bool = True,
                      note: str | None = None):
    """Mean SRI per step for each group (dict name -> sigma [N, T]), with the interquartile band; ``note`` (e.g.
    the anchors' fallback) goes under the title."""
    T = next(iter(groups.values())).shape[1]
    sigma_axes(ax, T)
    fit_title(ax, (title or "") + (f"\n⚠ {note}" if note else ""), 10)  # the note above the data, not on it
    steps = np.arange(1, T + 1)
    for i, (name, sig) in enumerate(groups.items()):
        if len(sig) == 0:
            continue
        s = trajectory_summary(sig)
        c = group_color(name, i)
        ax.plot(steps, s["mean"], color=c, lw=2, label=f"{name} (n={len(sig)})", zorder=3)
        if band:
            ax.fill_between(steps, s["lo"], s["hi"], color=c, alpha=0.18, lw=0, zorder=2)
    legend_below(ax)
    return ax


def plot_signal_with_text(ax, sigma: np.ndarray, text_sig: np.ndarray | None = None, title: str | None = None,
                          label: str = "SRI σ_t"):
    """One generation: SRI per step and, if given, the text-level refusal signal (1 until a phrase appears)."""
    T = len(sigma)
    sigma_axes(ax, T, title)
    steps = np.arange(1, T + 1)
    ax.plot(steps, sigma, "-o", ms=3, color="#08519c", lw=1.8, label=label, zorder=3)
    if text_sig is not None:
        ax.step(steps, text_sig, where="mid", color="#a50f15", lw=1.4, ls=":", label="text signal", zorder=3)
    legend_below(ax)
    return ax


# --------------------------------------------------------------------------------------------------------------
# The SRI geometry chapter: a 2-D projection of pooled activations coloured by prompt group; the distance
# between the harmless and harmful anchors at each step
# --------------------------------------------------------------------------------------------------------------
def plot_projection(ax, Z: np.ndarray, labels: np.ndarray, axes: tuple[str, str], title: str,
                    max_points: int = 2000, seed: int = 0):
    """Scatter of a 2-D projection ``Z`` [N, 2] (e.g. a :class:`srilib.geometry.Projection`'s), coloured by group
    (``labels`` [N]), its axes named ``axes``; at most ``max_points`` points, a seeded sample."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(Z))
    if len(idx) > max_points:
        idx = rng.choice(idx, max_points, replace=False)
    for i, g in enumerate(sorted(set(labels.tolist()))):
        m = idx[labels[idx] == g]
        ax.scatter(Z[m, 0], Z[m, 1], s=14, alpha=0.7, color=group_color(g, i), label=f"{g} (n={len(m)})",
                   edgecolors="none")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    fit_title(ax, title, 9)
    legend_below(ax)
    return ax


def anchor_separation(ax, separation: Mapping[str, np.ndarray], title: str = "anchor separation per step"):
    """Cosine distance between the harmless and harmful anchors at each step t = 1..T, one line per legend label
    (``separation``: label -> [T])."""
    for name, sep in separation.items():
        ax.plot(np.arange(1, len(sep) + 1), sep, lw=1.8, label=name)
    ax.set_xlabel("step t")
    ax.set_ylabel("1 − cos(μ_harmless, μ_harmful)")
    fit_title(ax, title, 10)
    legend_below(ax)
    return ax


# --------------------------------------------------------------------------------------------------------------
# The incomplete-recovery chapter (paper Figures 5-6, Table 1): a few generations' SRI beside their text
# signal, a diffusion canvas step by step (canvas_html), a worked example of recovery by revision (example_html)
# --------------------------------------------------------------------------------------------------------------
def plot_cases(axes, sigma: Sequence[np.ndarray], text_sig: Sequence[np.ndarray], titles: Sequence[str]):
    """Several generations, the k-th with its SRI ``sigma[k]`` [T] and text-level signal ``text_sig[k]`` [T] on
    ``axes[k]`` (:func:`srilib.figures.plot_signal_with_text`); axes left over are hidden."""
    for ax, s, ts, t in zip(axes, sigma, text_sig, titles):
        plot_signal_with_text(ax, s, ts, title=t)
    for ax in list(axes)[len(titles):]:
        ax.set_visible(False)
    return axes


# ------------------------------------------------------------------------------------------------ canvas
CANVAS_CSS = {
    "old": "color:#222;",
    "new": "color:#000;background:#c7e9c0;font-weight:600;",
    "pred": "color:#a50f15;background:#fde0dd;font-style:italic;",
    "changed": "color:#a50f15;background:#fcbba1;font-style:italic;text-decoration:underline;",
    "end": "color:#999;font-size:80%;",
}
LEGEND_HTML = ("<div style='font-size:85%;margin:4px 0'>"
               f"<span style='{CANVAS_CSS['old']}'>committed earlier</span> · "
               f"<span style='{CANVAS_CSS['new']}'>committed at this step</span> · "
               f"<span style='{CANVAS_CSS['pred']}'>still masked: current prediction</span> · "
               f"<span style='{CANVAS_CSS['changed']}'>prediction changed since the row above</span> · "
               f"<span style='{CANVAS_CSS['end']}'>⟨end⟩</span> end-of-text</div>")


def canvas_html(tokens: np.ndarray, committed: np.ndarray, predictions: np.ndarray, steps: Sequence[int],
                decode: Callable[[int], str], end_ids: Sequence[int] = (), labels: Mapping[int, str] | None = None,
                max_tokens: int | None = None) -> str:
    """HTML rows showing a diffusion canvas at chosen steps: committed tokens vs current predictions.

    Parameters
    ----------
    tokens, committed, predictions : arrays [T, L] of one generation (TraceSet fields, one row).
    steps : 0-based steps to show, in order.
    decode : token id -> text.
    end_ids : end-of-text / padding ids (shown as a small ⟨end⟩; a trailing run is collapsed to one mark).
    labels : step -> extra text after the step number (e.g. the judge's verdict on that step's prediction).
    max_tokens : cut each row after this many canvas positions.
    """
    end = set(int(x) for x in end_ids)
    labels = labels or {}
    L = tokens.shape[1]
    L = min(L, max_tokens) if max_tokens else L
    rows, prev_t = [], None
    for t in steps:
        cells = []
        # collapse the trailing run of end tokens (committed or predicted) into one mark
        ids = np.where(committed[t], tokens[t], predictions[t])
        last = L
        while last > 0 and int(ids[last - 1]) in end:
            last -= 1
        for p in range(min(L, last + 1)):
            tid = int(ids[p])
            if committed[t, p]:
                style = "new" if t == 0 or not committed[t - 1, p] else "old"
            else:
                style = "changed" if prev_t is not None and not committed[prev_t, p] and \
                    int(predictions[prev_t, p]) != tid else "pred"
            text = "⟨end⟩" if tid in end else html.escape(decode(tid)).replace("\n", "⏎")
            cells.append(f"<span style='{CANVAS_CSS['end'] if tid in end else CANVAS_CSS[style]}'>{text}</span>")
        n_done = int(committed[t].sum())
        head = f"<b>step {t + 1}</b> ({n_done}/{tokens.shape[1]} committed){labels.get(t, '')}"
        rows.append(f"<div style='margin:2px 0'>{head}<br><span style='font-family:monospace;white-space:pre-wrap'>"
                    + "".join(cells) + "</span></div>")
        prev_t = t
    return LEGEND_HTML + "".join(rows)


def example_html(run: str, set_name: str, position: int, request: str, text: str, harmful: bool,
                 tokens: np.ndarray, committed: np.ndarray, predictions: np.ndarray, steps: Sequence[int],
                 harmful_steps: Sequence[bool], decode: Callable[[int], str], end_ids: Sequence[int] = (),
                 note: str = "", max_tokens: int = 48) -> str:
    """A worked example of recovery by revision as one HTML block: one diffusion generation's run, evaluation set
    and position (``note`` follows it, e.g. why it is shown), its request and final ``text``, escaped, with the
    judge's verdict on the text (``harmful``), then its canvas (:func:`canvas_html` of ``tokens``, ``committed``,
    ``predictions`` [T, L], ``decode`` and ``end_ids``; at most ``max_tokens`` positions per row) at ``steps``
    (0-based), each labelled with the judge's verdict on that step's full prediction (``harmful_steps`` [T])."""
    labels = {t: (" — full prediction judged <b style='color:#a50f15'>harmful</b>" if harmful_steps[t]
                  else " — full prediction judged not harmful") for t in steps}
    body = canvas_html(tokens, committed, predictions, steps, decode, end_ids=end_ids, labels=labels,
                       max_tokens=max_tokens)
    head = (f"<p><b>{html.escape(run)}</b>, set <code>{set_name}</code> #{position}{note}<br>request: "
            f"<i>{html.escape(request)}</i><br>final text ({'harmful' if harmful else 'not harmful'}): "
            f"{output_html(text, 300)}</p>")
    return "<div style='border:1px solid #ddd;padding:6px;margin:6px 0'>" + head + body + "</div>"


def output_html(text: str, max_chars: int = 300) -> str:
    """A model's output as the book shows it: HTML-escaped, whitespace and blank lines kept, never read as Markdown
    (a generation's ``**`` or a blank line prints literally), at most ``max_chars`` characters."""
    return f"<span class='srilib-output' style='white-space:pre-wrap;font-style:italic'>{html.escape(text[:max_chars])}</span>"


def cases_html(cases: Sequence[Mapping], max_chars: int = 200) -> str:
    """A list of single generations (``cases``: mappings with ``run``, ``set_name``, ``position``, ``harmful``, the
    judge's verdict on the final text, and ``text``): run, set, position, the verdict and the output
    (:func:`output_html`, stripped)."""
    items = []
    for c in cases:
        verdict = "judged harmful" if c["harmful"] else "judged not harmful"
        items.append(f"<li><b>{html.escape(c['run'])}</b>, {html.escape(str(c['set_name']))} #{c['position']} "
                     f"({verdict}): “{output_html(c['text'].strip(), max_chars)}”</li>")
    return "<ul>" + "".join(items) + "</ul>"


# --------------------------------------------------------------------------------------------------------------
# The sampling-vs-representation chapter (paper Tables 2-3 as figures): the change of RR, ASR and IRR when
# the same weights are sampled another way, one rate per run coloured by model family, the IRR bars (Figure 6)
# --------------------------------------------------------------------------------------------------------------
# x-axis labels: what each delta subtracts from what (right of 0 = safer under remasking on every axis)
DELTA_LABELS = {"d_rr": "ΔRR = RR(remasking) − RR(AR sampling); > 0 safer",
                "d_asr": "ΔASR = ASR(AR sampling) − ASR(remasking); > 0 safer",
                "d_irr": "ΔIRR = IRR(remasking) − IRR(AR sampling)"}


def plot_sampler_deltas(axes, rows: Sequence[dict], title: str | None = None,
                        paper: Mapping[str, Mapping[str, tuple[float, float]]] | None = None):
    """Table 2 as a figure: per evaluation set, ΔRR, ΔASR and ΔIRR with their intervals (three axes).

    ``rows``: dicts with ``set``, ``paper`` (the paper's column name or None) and Estimates ``d_rr``, ``d_asr``,
    ``d_irr`` signed as the paper's Table 2 (:class:`srilib.chapters.sampling_compare.Comparison`): ΔRR and ΔIRR =
    remasking − AR sampling, ΔASR = AR sampling − remasking, so on every axis right of 0 is safer under remasking.
    ``paper``: model -> {column: (RR pts, ASR pts)} drawn as hollow markers on the first two axes.
    """
    names = [r["set"] for r in rows]
    y = np.arange(len(rows))[::-1]
    markers = ("D", "s", "^")
    for k, (ax, key, label) in enumerate(zip(axes, ("d_rr", "d_asr", "d_irr"),
                                             (DELTA_LABELS["d_rr"], DELTA_LABELS["d_asr"],
                                              DELTA_LABELS["d_irr"]))):
        est = [r[key] for r in rows]
        v = np.array([e.value for e in est])
        err = np.nan_to_num(np.vstack([v - [e.lo for e in est], [e.hi for e in est] - v]))
        ax.errorbar(v, y, xerr=err, fmt="o", color="#08519c", ms=5, capsize=2, label="ours (95% CI)")
        if paper and k < 2:
            for j, (m, vals) in enumerate(paper.items()):
                px = [vals[r["paper"]][k] / 100 if r.get("paper") in vals else math.nan for r in rows]
                ax.scatter(px, y + 0.18 * (j + 1) - 0.27, marker=markers[j % 3], facecolors="none",
                           edgecolors="#a50f15", s=30, label=f"paper: {m}")
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(names if k == 0 else [], fontsize=8)
        ax.set_xlabel(label, fontsize=9)
        ax.set_xlim(-1, 1)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fit_title(axes[1], title, 10)
    legend_below(axes[0])
    return axes


def plot_family_rates(ax, rates: Mapping[str, object], families: Mapping[str, str], metric: str = "ASR",
                      bands: Sequence[tuple[float, float, str, str]] = (), title: str | None = None):
    """One rate per run (``rates``: run -> Rate) coloured by family; ``bands``: (lo, hi, label, family) reference
    ranges (e.g. the paper's per-family ASR) shaded in the family's colour."""
    runs = list(rates)
    v, e = rate_errorbars([rates[r] for r in runs])
    x = np.arange(len(runs))
    ax.bar(x, np.nan_to_num(v), 0.6, yerr=e, capsize=3, edgecolor="0.3", lw=0.5,
           color=[FAMILY_COLORS.get(families.get(r, ""), "0.6") for r in runs])
    for lo, hi, label, fam in bands:
        ax.axhspan(lo, hi, color=FAMILY_COLORS.get(fam, "0.6"), alpha=0.15, lw=0, zorder=0)
        ax.text(-0.45, hi, label, ha="left", va="bottom", fontsize=7, color="0.25")
    ax.set_xticks(x)
    ax.set_xticklabels(runs, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    from matplotlib.patches import Patch
    handles = [Patch(color=c, label=f) for f, c in FAMILY_COLORS.items() if f in set(families.values())]
    if title:
        fit_title(ax, title, 10)
    legend_below(ax, handles=handles)
    return ax


def plot_irr_bars(ax, irr: Mapping[str, Mapping[float, object]], title: str | None = None,
                  bands: Sequence[tuple[float, float, str]] = (), families: Mapping[str, str] | None = None):
    """IRR per run (groups) and threshold (bars), with 95% Wilson intervals.

    ``irr``: run -> {lambda_r: Rate}. ``bands``: (lo, hi, label) horizontal reference ranges, e.g. the paper's.
    ``families``: run -> family, to colour the tick labels.
    """
    runs = list(irr)
    lams = sorted({lam for d in irr.values() for lam in d}, reverse=True)
    width = 0.8 / max(1, len(lams))
    x = np.arange(len(runs))
    for j, lam in enumerate(lams):
        rates = [irr[r][lam] for r in runs]
        v, e = rate_errorbars(rates)
        ax.bar(x + (j - (len(lams) - 1) / 2) * width, np.nan_to_num(v), width, yerr=e, capsize=2,
               color=THRESHOLD_COLORS[j % len(THRESHOLD_COLORS)], edgecolor="0.3", lw=0.5,
               label=f"λ_r = {lam:g}", error_kw={"lw": 0.8})
    for lo, hi, label in bands:
        ax.axhspan(lo, hi, color="0.6", alpha=0.15, lw=0, zorder=0)
        ax.text(len(runs) - 0.5, hi, label, ha="right", va="bottom", fontsize=7, color="0.3")
    ax.set_xticks(x)
    ax.set_xticklabels(runs, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    if families:
        for t, r in zip(ax.get_xticklabels(), runs):
            t.set_color(FAMILY_COLORS.get(families.get(r, ""), "black"))
    ax.set_ylim(0, 1)
    ax.set_ylabel("IRR (share of generations)")
    if title:
        fit_title(ax, title, 10)
    legend_below(ax)
    return ax


# --------------------------------------------------------------------------------------------------------------
# The adaptive attacks (sampling chapter): attack success rate against the Random Search iteration budget
# --------------------------------------------------------------------------------------------------------------
def plot_budget_curves(ax, curves: Mapping[str, tuple[Sequence[int], Sequence]], title: str = "") -> None:
    """ASR against the Random Search iteration budget, one line per run (``curves``: run -> (iterations, ASR at each,
    rates with ``value`` / ``lo`` / ``hi``)), with the intervals as bands."""
    for run, (iterations, asr) in curves.items():
        x = np.array(iterations, dtype=float)
        xs = np.where(x == 0, 0.5, x)  # 0 iterations (the initial suffix) at 0.5 on the log axis
        v = np.array([r.value for r in asr])
        lo, hi = np.array([r.lo for r in asr]), np.array([r.hi for r in asr])
        line, = ax.plot(xs, v, marker="o", ms=3, label=run)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.08, lw=0)
        ax.plot(xs, lo, color=line.get_color(), lw=0.6, ls=":")  # the band's edges, so overlapping bands stay apart
        ax.plot(xs, hi, color=line.get_color(), lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("Random Search iterations (0 = template + initial suffix, plotted at 0.5)")
    ax.set_ylabel("ASR (95% Wilson)")
    ax.set_ylim(-0.02, 1.02)
    if title:
        fit_title(ax, title, 10)
    legend_below(ax)


# --------------------------------------------------------------------------------------------------------------
# The detector-transfer chapter: ROC curves of the ablation detectors and of SRI Guard per run, the defenses'
# overhead against attack success (Figure 7 style), the transfer matrix, SRI Guard's false positives under shift
# --------------------------------------------------------------------------------------------------------------
Curve = tuple[np.ndarray, np.ndarray]  # an ROC curve: (false-positive rates, true-positive rates)


def _roc_axes(ax, curves: Mapping[str, Curve], widths: Sequence[float], title: str, legend_title: str, ncol: int,
              note: str | None = None) -> None:
    """ROC curves (legend label -> curve) at the given line widths over the diagonal, ``note`` in the lower right."""
    for (label, (fpr, tpr)), lw in zip(curves.items(), widths):
        ax.plot(fpr, tpr, lw=lw, label=label)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    if note:
        ax.text(0.98, 0.03, note, ha="right", va="bottom", fontsize=8, color="0.3", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (harmless)",
           ylabel="true-positive rate (jailbreaks)")
    fit_title(ax, title, 9.5)
    legend_below(ax, title=legend_title, ncol=ncol)


def plot_rocs(ax, curves: Mapping[str, Curve], title: str, thick: str | None = None) -> None:
    """ROC curves of several detectors of one run (``curves``: legend label, e.g. "detector (AUROC)" -> curve); the
    curve labelled ``thick`` (SRI Guard) is drawn thicker."""
    _roc_axes(ax, curves, [2.2 if label == thick else 1.2 for label in curves], title, "detector (AUROC)", 2)


def plot_guard_rocs(ax, curves: Mapping[str, Curve], note: str | None = None,
                    title: str = "SRI Guard, jailbreaks vs harmless") -> None:
    """SRI Guard's ROC curve of every run on one axis (``curves``: legend label, e.g. "run (AUROC)" -> curve);
    ``note`` (e.g. the paper's AUROC) goes in the lower right corner."""
    _roc_axes(ax, curves, [1.8] * len(curves), title, "run (AUROC)", 1, note=note)


def plot_overhead(ax, ours: Mapping[str, np.ndarray], undefended: float,
                  paper: Mapping[str, tuple[float, float]] | None = None, paper_undefended: float | None = None
                  ) -> None:
    """Paper Figure 7 style: overhead (% of plain generation time, log x) against ASR after the defense (%).

    ``ours``: defense -> [runs, 2] points (overhead %, ASR %), in the order that gives each defense its colour (a
    defense without points keeps its colour); filled, one small point per run and a large one for their mean.
    Overheads at or below zero (capture timing within noise) are drawn at 1e-4. ``paper``: defense -> (overhead %,
    ASR %), hollow. ``undefended`` / ``paper_undefended``: ASR without a defense (%), dashed / dotted lines.
    """
    import matplotlib.pyplot as plt

    colors = dict(zip(ours, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name, pts in ours.items():
        if len(pts):
            x, y = np.asarray(pts, dtype=float).T
            x = np.maximum(x, 1e-4)  # log axis: a capture timing within noise of zero is drawn at 1e-4
            ax.scatter(x, y, s=14, color=colors[name], alpha=0.5)
            ax.scatter([np.mean(x)], [np.mean(y)], s=90, color=colors[name], label=f"{name} (ours)", zorder=3)
        if paper and name in paper:
            px, py = paper[name]
            ax.scatter([px], [py], s=90, facecolors="none", edgecolors=colors[name], lw=1.8,
                       label=f"{name} (paper)", zorder=3)
    ax.axhline(undefended, color="0.3", ls="--", lw=1, label="undefended (ours)")
    if paper_undefended is not None:
        ax.axhline(paper_undefended, color="0.6", ls=":", lw=1, label="undefended (paper)")
    ax.set_xscale("log")
    ax.set(xlabel="overhead (% of plain generation time, incl. state capture, log scale)",
           ylabel="jailbreak ASR after defense (%)\nours: our attack pool; paper: its five attacks")
    legend_below(ax, ncol=2)


def plot_transfer(ax, tm: dict, key: str = "auroc", title: str = "AUROC of a guard fitted on A, applied to B"):
    """Heatmap of the transfer matrix (``tm``: ``labels`` and [A, B] matrices such as ``auroc`` and ``fpr``; rows:
    fitted on, columns: applied to)."""
    M, L = tm[key], tm["labels"]
    im = ax.imshow(M, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(L)):
        for j in range(len(L)):
            ax.text(j, i, "–" if np.isnan(M[i, j]) else f"{M[i, j]:.2f}", ha="center", va="center",
                    color="w" if (np.isnan(M[i, j]) or M[i, j] < 0.6) else "k", fontsize=8)
    ax.set_xticks(range(len(L)), L, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(L)), L, fontsize=8)
    ax.set(xlabel="applied to (B)", ylabel="fitted on (A)")
    fit_title(ax, title, 9.5)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label={"auroc": "AUROC", "fpr": "false-positive rate"}.get(key, key))
    return im


def plot_shift(ax, fpr: Mapping[str, Sequence], families: Sequence[str], aim: float) -> None:
    """False-positive rate of SRI Guard on each harmless family (``fpr``: run -> one rate with ``value`` / ``lo``
    / ``hi`` per family, in the order of ``families``), one marker per run with its 95% interval; the dashed line
    is the rate the threshold aims at (``aim``, a share: 1 - its quantile)."""
    if not fpr:
        return
    width = 0.8 / len(fpr)
    for k, (run, rates) in enumerate(fpr.items()):
        v = np.array([r.value for r in rates])
        lo = np.array([r.lo for r in rates])
        hi = np.array([r.hi for r in rates])
        x = np.arange(len(rates)) - 0.4 + width * (k + 0.5)
        ax.errorbar(x, 100 * v, yerr=100 * np.array([v - lo, hi - v]), fmt="o", ms=4, capsize=2, label=run)
    ax.axhline(100 * aim, color="0.4", ls="--", lw=1, label=f"threshold's aim ({100 * aim:g}%)")
    ax.set_xticks(range(len(families)), [f.replace(" (eval split)", "\n(eval split)") for f in families],
                  rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="harmless prompts flagged (%)")
    fit_title(ax, "SRI Guard fitted on the built-in harmless set, applied to other harmless families", 9.5)
    legend_below(ax, ncol=2)


__all__ = ["BOOK_DPI", "BOOK_WIDTH", "MAX_COLS", "BOOK_STYLE", "book_style", "figure_grid", "GROUP_COLORS",
           "ZONE_STYLE", "FAMILY_COLORS", "THRESHOLD_COLORS", "group_color", "sigma_axes", "fit_title",
           "legend_below", "layout_problems", "show_figure", "rate_errorbars", "plot_trajectories",
           "plot_signal_with_text", "plot_projection", "anchor_separation", "plot_cases", "CANVAS_CSS",
           "LEGEND_HTML", "canvas_html", "example_html", "output_html", "cases_html", "DELTA_LABELS",
           "plot_sampler_deltas", "plot_family_rates", "plot_irr_bars", "plot_budget_curves", "Curve", "plot_rocs",
           "plot_guard_rocs", "plot_overhead", "plot_transfer", "plot_shift"]
