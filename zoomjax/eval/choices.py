"""Multiple-choice answers from free text: "(B)", "B.", "The answer is b", "A, C", an option's text.

`extract_choice(text, letters="ABCDE", options=None, multi=False)` returns the chosen letter(s) as an
upper-case string in alphabetical order ("B", "AC"), or None when no choice can be read. Rules, first
match wins:

1. the content of `<answer>…</answer>` when present, else the whole text;
2. an explicit answer phrase: "answer is (b)", "Answer: B", "answers are A and C", "option C";
3. the whole reply is a choice list: "B", "(b)", "B.", "A, C", "A and C", "AC", "(A)(C)";
4. parenthesised letters anywhere: "I think (B) fits" (single choice: exactly one distinct letter);
5. a reply that starts with an upper-case letter followed by ".", ")" or ":" ("B. 5 tanks", "C) water");
6. the reply equals an option's text ("5" for "(B) 5"), case- and trailing-dot-insensitive.

Lower-case letters count only where they cannot be the English article "a" (rules 2–4 and a whole reply
of one letter). With `multi=False` a reading with several distinct letters is ambiguous -> None.
"""

from __future__ import annotations

import re
from typing import Sequence

_ANSWER_TAG = re.compile(r"<answer\s*>(.*?)</answer\s*>", re.S | re.I)
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Za-z])[).:]\s*")


def _letters_class(letters: str) -> str:
  return "[" + letters.upper() + letters.lower() + "]"


def _finish(found: Sequence[str], multi: bool) -> str | None:
  uniq = sorted({c.upper() for c in found})
  if not uniq:
    return None
  if not multi and len(uniq) > 1:
    return None
  return "".join(uniq)


def option_text(option: str) -> str:
  """"(B) 5 storage tanks" -> "5 storage tanks"."""
  return _OPTION_PREFIX.sub("", option, count=1).strip()


def extract_choice(text: str | None, letters: str = "ABCDE", options: Sequence[str] | None = None,
                   multi: bool = False) -> str | None:
  """The letter(s) chosen in a free-text reply (see the module docstring); never raises."""
  if not isinstance(text, str):
    return None
  m = _ANSWER_TAG.search(text)
  body = (m.group(1) if m else text).strip()
  if not body:
    return None
  L = _letters_class(letters)
  one = rf"\(?({L})\)?"
  sep = r"\s*(?:,|;|/|&|\band\b|\bor\b|\s)\s*"
  # 2. answer phrases (a lower-case letter only when the phrase ends there: not "is a dog")
  phrase = r"(?i:\b(?:answers?|options?|choices?)\b\s*(?:is|are|:|=)?\s*(?:options?\s*)?)"
  U = "[" + letters.upper() + "]"
  upper = rf"\(?({U})\)?"
  for pat in (rf"{phrase}({upper}(?:{sep}{upper})*)(?![A-Za-z])",
              rf"{phrase}({one}(?:{sep}{one})*)(?=\s*[.,;:!?)\]]|\s*$)"):
    m = re.search(pat, body)
    if m:
      got = _finish(re.findall(rf"(?<![A-Za-z])({L})(?![A-Za-z])", m.group(1)), multi)
      if got:
        return got
  # 3. the whole reply is a choice list
  stripped = body.rstrip(".").strip()
  if re.fullmatch(rf"{one}(?:{sep}{one})*", stripped) or re.fullmatch(rf"(?:\(({L})\))+", stripped):
    return _finish(re.findall(rf"(?<![A-Za-z])({L})(?![A-Za-z])", stripped), multi)
  if multi and re.fullmatch(rf"[{letters.upper()}]{{2,}}", stripped):
    return _finish(list(stripped), multi)
  # 4. parenthesised letters anywhere
  found = re.findall(rf"\(({L})\)", body)
  if found:
    return _finish(found, multi)
  # 5. leading upper-case letter with punctuation
  m = re.match(rf"([{letters.upper()}])[.):](?:\s|$)", body)
  if m:
    return m.group(1)
  # 6. option text
  if options:
    norm = body.lower().rstrip(".").strip()
    hits = [option_letter(o, i) for i, o in enumerate(options)
            if option_text(o).lower().rstrip(".").strip() == norm]
    if len(hits) == 1:
      return hits[0]
  return None


def option_letter(option: str, index: int) -> str:
  """The letter an option is labelled with ("(C) water" -> "C"), else the index's letter."""
  m = _OPTION_PREFIX.match(option)
  return m.group(1).upper() if m else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index]


def normalize_letters(answer: str | None) -> str | None:
  """Ground-truth letters ("B", "AC", "A, C", "(B)") -> sorted upper-case string, or None."""
  if not isinstance(answer, str):
    return None
  found = re.findall(r"[A-Za-z]", re.sub(r"\band\b", " ", answer))
  if not found or len(found) > 26:
    return None
  return "".join(sorted({c.upper() for c in found}))
