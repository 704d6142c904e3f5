"""Multiple-choice extraction from free text (zoomjax.eval.choices)."""
import pytest

from zoomjax.eval.choices import extract_choice, normalize_letters, option_letter, option_text

OPTS = ["(A) 3", "(B) 5", "(C) water", "(D) 9"]


@pytest.mark.parametrize("text,want", [
    ("(B)", "B"), ("B", "B"), ("b", "B"), ("B.", "B"), ("C) water", "C"),
    ("The answer is b", "B"), ("The answer is B because of the tanks", "B"), ("answer: c.", "C"),
    ("Answer: (D)", "D"), ("Option C", "C"), ("The correct option is E.", "E"),
    ("I think (C) fits best.", "C"), ("B. 5 storage tanks", "B"),
    ("Between (A) and (B), the answer is (B).", "B"),
    ("<think>(A) or (B)?</think><answer>B</answer>", "B"),
    ("5", "B"), ("Water.", "C"),                       # an option's text
    ("A, C", None),                                    # two letters for a single choice: ambiguous
    ("a car", None), ("The answer is a dog", None), ("It is a large port", None),
    ("F", None), ("none", None), ("", None), (None, None), (42, None),
])
def test_single_choice(text, want):
  assert extract_choice(text, options=OPTS) == want


@pytest.mark.parametrize("text,want", [
    ("A, C", "AC"), ("A,C", "AC"), ("A and C", "AC"), ("AC", "AC"), ("CA", "AC"), ("(A)(C)", "AC"),
    ("(a) and (c)", "AC"), ("The answers are A and C.", "AC"), ("B", "B"), ("(D)", "D"),
])
def test_multi_select(text, want):
  assert extract_choice(text, letters="ABCD", multi=True) == want


def test_helpers():
  assert option_text("(B) 5 storage tanks") == "5 storage tanks"
  assert option_letter("(C) water", 0) == "C" and option_letter("water", 2) == "C"
  assert normalize_letters("A, C") == "AC" and normalize_letters("(b)") == "B"
  assert normalize_letters("") is None and normalize_letters(None) is None
