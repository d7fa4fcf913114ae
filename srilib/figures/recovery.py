"""Figures and HTML renderings of the incomplete-recovery chapter (paper Figures 5-6, Table 1): IRR bars per run
and threshold, a few generations' SRI beside their text signal, a diffusion canvas step by step
(:func:`canvas_html`) and a worked example of recovery by revision (:func:`example_html`). Every function takes
arrays, plain mappings and labels; :mod:`srilib.chapters.recovery_figures` gives the chapter's in that form."""
from __future__ import annotations

import html
from typing import Callable, Mapping, Sequence

import numpy as np

from .trajectories import plot_signal_with_text


def plot_cases(axes, sigma: Sequence[np.ndarray], text_sig: Sequence[np.ndarray], titles: Sequence[str]):
    """Several generations, the k-th with its SRI ``sigma[k]`` [T] and text-level signal ``text_sig[k]`` [T] on
    ``axes[k]`` (:func:`srilib.figures.trajectories.plot_signal_with_text`); axes left over are hidden."""
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


__all__ = ["plot_cases", "CANVAS_CSS", "LEGEND_HTML", "canvas_html", "example_html", "output_html",
           "cases_html"]
