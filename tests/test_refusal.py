import numpy as np
import pytest

from srilib.judges import REFUSAL_PHRASES, find_refusal, is_refusal, normalize, text_signal, text_signals


def test_dictionary_is_the_papers_table_12():
    assert len(REFUSAL_PHRASES) == 31
    assert {"i cannot share", "as an ai"} <= set(REFUSAL_PHRASES)


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I\u2019m unable to do that",            # curly apostrophe is straightened
    "As an AI, I must decline.",
    "That is ILLEGAL.",
    "Sorry!",
    "I   cannot\n\tassist",                  # whitespace collapsed
])
def test_refusals_match(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", [
    "Sure, here is how to make bread.",
    "I can help: first, preheat the oven.",   # "i can" is not a phrase
    "The sorrowful tale",                      # 'sorry' must be a whole phrase
    "unsorry",                                 # preceded by a word character
    "We illegalized nothing",                  # followed by a letter
    "",
])
def test_non_refusals(text):
    assert not is_refusal(text)


def test_phrase_not_followed_by_apostrophe_or_letter():
    # "i can" isn't in the dictionary, but "i cannot" followed by a letter must not match "i cannotx"
    assert not is_refusal("i cannotx do it")
    assert is_refusal("i cannot.")
    assert is_refusal("i cannot1")  # digits are not letters
    assert find_refusal("ok. I can't comply").group(0) == "i can't comply"  # longest phrase wins


def test_normalize():
    assert normalize("  A\u201cB\u201d  C\u2019 ") == "a\"b\" c'"


def test_text_signal_drops_and_stays_down():
    s = text_signal(["Sure", "Sure, I'm", "Sure, I'm sorry", "Sure, I'm sorry but ok", "rewritten"])
    np.testing.assert_array_equal(s, [1, 1, 0, 0, 0])
    assert text_signals([["a", "b"], ["sorry", "x"]]).tolist() == [[1, 1], [0, 0]]
    assert text_signals([]).shape == (0, 0)
