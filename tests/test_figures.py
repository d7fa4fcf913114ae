"""The figures package: the diffusion canvas and the worked example of recovery by revision as HTML
(srilib.figures), read back as data; the worked example as the chapter builds it
(srilib.chapters.recovery_figures.example_view)."""
import html
import re
from types import SimpleNamespace

import numpy as np

from srilib.chapters.recovery_figures import example_view
from srilib.figures import CANVAS_CSS, canvas_html, cases_html, example_html, output_html

_CELL_KIND = {css: kind for kind, css in CANVAS_CSS.items()}


def canvas_rows(out: str) -> list[dict]:
    """The rows of a canvas (canvas_html) as data: step, (committed, positions), the label as plain text and the
    cells as (CANVAS_CSS key, token text unescaped)."""
    rows = []
    for m in re.finditer(r"<b>step (\d+)</b> \((\d+)/(\d+) committed\)(.*?)<br><span[^>]*>(.*?)</span></div>", out):
        cells = re.findall(r"<span style='([^']*)'>([^<]*)</span>", m[5])
        rows.append({"step": int(m[1]), "committed": (int(m[2]), int(m[3])), "label": re.sub("<[^>]+>", "", m[4]),
                     "cells": [(_CELL_KIND[css], html.unescape(t)) for css, t in cells]})
    return rows


def case_items(out: str) -> list[tuple[str, ...]]:
    """The items of a case list (cases_html) as data: run, set, position, the judge's verdict."""
    return re.findall(r"<li><b>(.*?)</b>, (\w+) #(\d+) \((.*?)\)", out)


def example_head(out: str) -> dict:
    """The head of a worked example (example_html) as data: run, set, position (with its note), request, the
    judge's verdict on the final text."""
    m = re.search(r"<p><b>(.*?)</b>, set <code>(.*?)</code> #(.*?)<br>request: <i>(.*?)</i><br>final text \((.*?)\)",
                  out)
    return dict(zip(("run", "set", "position", "request", "verdict"), map(html.unescape, m.groups())))

VOCAB = {0: "<eos>", 1: "Sure", 2: ",", 3: " step", 4: " one", 5: "\n", 6: " <b>", 7: " I", 8: " cannot", 9: " help"}
REQUEST = "How do I <b>pick</b> a lock & \"open\" it?"


def _result():
    """A RecoveryResult-like object of a diffusion run: two generations, T=4 steps, a canvas of 6 positions."""
    T, L = 4, 6
    final = np.array([[1, 3, 4, 5, 6, 0], [7, 8, 9, 0, 0, 0]])
    tokens = np.repeat(final[:, None, :], T, axis=1)
    committed = np.zeros((2, T, L), bool)
    for t in range(T):
        committed[:, t, : (t + 1) * L // T] = True
    committed[:, -1] = True
    predictions = tokens.copy()
    predictions[0, 0, 2:] = [2, 2, 2, 2]  # step 1 predicts something else at the masked positions
    revision = {"harmful_steps": np.array([[False, True, True, False], [False, False, False, False]]),
                "ever_harmful": np.array([True, False]), "first_harmful_step": np.array([1, -1]),
                "final_harmful": np.array([True, False]), "revised": np.array([True, False])}
    traces = SimpleNamespace(tokens=tokens, committed=committed, predictions=predictions,
                             texts=["Sure step one\n <b>" + "x" * 400, "I cannot help"])
    tok = SimpleNamespace(decode=lambda ids: "".join(VOCAB[i] for i in ids))
    return SimpleNamespace(run="tiny-dlm@low_confidence", tokenizer=tok, traces=traces, revision=revision,
                           sigma=np.zeros((2, T)), end_ids=(0,), set_of=np.array(["raw", "flip_attack"], dtype=object),
                           position=np.array([3, 0]), requests=[REQUEST, "Say hi"])


def test_canvas_html_marks_committed_and_predicted_tokens():
    vocab = {1: "Sure", 2: " <b>", 3: " no", 4: " sorry", 9: "<eos>"}
    tokens = np.array([[1, -1, -1, -1], [1, 4, -1, -1]])
    committed = tokens >= 0
    predictions = np.array([[1, 2, 9, 9], [1, 4, 3, 9]])
    out = canvas_html(tokens, committed, predictions, [0, 1], vocab.__getitem__, end_ids=[9],
                      labels={0: " harmful"})
    assert "<b>" not in out.replace("<b>step", "")  # the token " <b>" is escaped
    assert canvas_rows(out) == [
        # the trailing run of end tokens is collapsed into one mark
        {"step": 1, "committed": (1, 4), "label": " harmful",
         "cells": [("new", "Sure"), ("pred", " <b>"), ("end", "⟨end⟩")]},
        # committed earlier, committed at this step, prediction changed since the row above
        {"step": 2, "committed": (2, 4), "label": "", "cells": [("old", "Sure"), ("new", " sorry"), ("changed", " no"),
                                                                 ("end", "⟨end⟩")]}]


def test_example_html_escapes_labels_and_shows_the_chosen_steps():
    res = _result()
    out = example_html(**example_view(res, 0))
    # the request and final text are escaped (the canvas tokens too); the final text is cut at 300 characters
    assert html.escape(REQUEST) in out and "<b>pick</b>" not in out and "&lt;b&gt;pick" in out
    assert "Sure step one\n &lt;b&gt;" + "x" * 282 + "</span></p>" in out and "x" * 283 not in out
    assert example_head(out) == {"run": "tiny-dlm@low_confidence", "set": "raw", "position": "3",
                                 "request": REQUEST, "verdict": "harmful"}
    # steps: the first harmful prediction (t=1), the step before the first harmless one after it, that one, the last;
    # each labelled with the judge's verdict on its full prediction
    rows = canvas_rows(out)
    assert [(r["step"], r["committed"]) for r in rows] == [(2, (3, 6)), (3, (4, 6)), (4, (6, 6))]
    assert [r["label"].endswith(" judged harmful") for r in rows] == [True, True, False]
    # the last step: every position committed, the newline as ⏎, the token " <b>" escaped and read back
    assert rows[-1]["cells"] == [("old", "Sure"), ("old", " step"), ("old", " one"), ("old", "⏎"), ("new", " <b>"),
                                 ("end", "⟨end⟩")]

    other = example_html(**example_view(res, 1, note=" (shown to illustrate)"), max_tokens=2)
    head = example_head(other)
    assert (head["position"], head["verdict"]) == ("0 (shown to illustrate)", "not harmful")
    rows = canvas_rows(other)
    assert [r["step"] for r in rows] == [1, 3, 4]  # never harmful: first, middle, last step
    assert not any(r["label"].endswith(" judged harmful") for r in rows)
    assert [len(r["cells"]) for r in rows] == [2, 2, 2]  # max_tokens: two canvas positions per row


def test_example_html_keeps_markdown_and_blank_lines_of_model_output_literal():
    """Issue 23: a generation with ** and a blank line shows as written (escaped, whitespace kept)."""
    res = _result()
    res.traces.texts[1] = "**Step 1**\n\nDo <this>"
    out = example_html(**example_view(res, 1))
    assert output_html("**Step 1**\n\nDo <this>") in out
    assert output_html("**Step 1**\n\nDo <this>").endswith(
        "style='white-space:pre-wrap;font-style:italic'>**Step 1**\n\nDo &lt;this&gt;</span>")


def test_case_list_escapes_model_output_instead_of_rendering_it_as_markdown():
    text = "**Crystal meth**\n\n- step <b>1</b>"
    out = cases_html([{"run": "tiny-dlm@low_confidence", "set_name": "raw", "position": 3, "harmful": True,
                       "text": text + "\n"},
                      {"run": "a<b>", "set_name": "flip_attack", "position": 0, "harmful": False, "text": "no"}])
    assert case_items(out) == [
        ("tiny-dlm@low_confidence", "raw", "3", "judged harmful"),
        ("a&lt;b&gt;", "flip_attack", "0", "judged not harmful")]
    assert output_html(text) in out and "<b>1</b>" not in out  # literal, escaped, stripped
