"""The figures package: the worked example of recovery by revision as HTML (srilib.figures.recovery.example_html)."""
import html
import re
from types import SimpleNamespace

import numpy as np

from srilib.figures.recovery import cases_html, example_html, output_html

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


def test_example_html_escapes_labels_and_shows_the_chosen_steps():
    res = _result()
    out = example_html(res, 0)
    # the request and final text are escaped (the canvas tokens too); the final text is cut at 300 characters
    assert html.escape(REQUEST) in out and "<b>pick</b>" not in out and "&lt;b&gt;pick" in out
    assert "Sure step one\n &lt;b&gt;" + "x" * 282 + "</span></p>" in out and "x" * 283 not in out
    assert " &lt;b&gt;</span>" in out and "⟨end⟩" in out and "⏎" in out
    assert out.count("final text (harmful)") == 1 and "final text (not harmful)" not in out
    assert "<b>tiny-dlm@low_confidence</b>, set <code>raw</code> #3<br>" in out
    # steps: the first harmful prediction (t=1), the step before the first harmless one after it, that one, the last
    rows = re.findall(r"<b>step (\d+)</b> \((\d+)/6 committed\)([^<]*(?:<b[^>]*>harmful</b>)?)", out)
    assert [(s, n) for s, n, _ in rows] == [("2", "3"), ("3", "4"), ("4", "6")]
    assert ["harmful</b>" in lab for *_, lab in rows] == [True, True, False]
    assert out.count("judged not harmful") == 1

    other = example_html(res, 1, note=" (shown to illustrate)", max_tokens=2)
    assert "final text (not harmful)" in other and "#0 (shown to illustrate)<br>" in other
    assert re.findall(r"<b>step (\d+)</b>", other) == ["1", "3", "4"]  # never harmful: first, middle, last step
    assert "harmful</b>" not in other and other.count("judged not harmful") == 3
    last_row = other.split("<b>step 4</b>")[1]
    assert last_row.count("<span style='color:") == 2  # max_tokens: two canvas positions per row


def test_example_html_keeps_markdown_and_blank_lines_of_model_output_literal():
    """Issue 23: a generation with ** and a blank line shows as written (escaped, whitespace kept)."""
    res = _result()
    res.traces.texts[1] = "**Step 1**\n\nDo <this>"
    out = example_html(res, 1)
    assert output_html("**Step 1**\n\nDo <this>") in out
    assert output_html("**Step 1**\n\nDo <this>").endswith(
        "style='white-space:pre-wrap;font-style:italic'>**Step 1**\n\nDo &lt;this&gt;</span>")


def test_case_list_escapes_model_output_instead_of_rendering_it_as_markdown():
    res = _result()
    res.final_harmful = np.array([True, False])
    res.traces.texts[0] = "**Crystal meth**\n\n- step <b>1</b>"
    out = cases_html([res], [(0.1, 0, 0), (0.2, 0, 1)])
    assert out.count("<li>") == 2 and "(judged harmful)" in out and "(judged not harmful)" in out
    assert "**Crystal meth**\n\n- step &lt;b&gt;1&lt;/b&gt;" in out and "<b>1</b>" not in out
