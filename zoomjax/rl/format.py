"""Format reward (SPEC §4): 1 when a trajectory's generated text has the required structure, else 0.

Works on plain strings — the text the model generated in each stage (released protocol) or turn
(multi-turn protocol) — so it does not depend on the rollout code. Never raises.

released (two stages at most; a stage is "absent" when its text is empty, as in the released reward):
  * no crop (one stage): a non-empty `<think>…</think>` and a non-empty `<answer>…</answer>`;
  * crop (two stages): stage 1 has a non-empty `<think>` and a box that
    `parse_crop_request(text, "released")` reads (the released check accepts any list of numbers;
    zoomjax wants a usable box), and stage 2 has a non-empty `<think>` and a non-empty `<answer>`.
multiturn (any number of turns): every turn before the last has a non-empty `<think>` and a
  `crop_and_zoom` `<tool_call>` whose box `parse_crop_request(text, "multiturn")` reads; the last turn
  has a non-empty `<think>` and a non-empty `<answer>`.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from zoomjax.protocol import parse
from zoomjax.protocol.templates import PROTOCOLS

_TAGS: dict[str, re.Pattern] = {}


def extract_tag(text: str, tag: str) -> str | None:
  """Stripped content of the first `<tag>…</tag>` (whitespace allowed before `>`), or None."""
  pat = _TAGS.get(tag)
  if pat is None:
    t = re.escape(tag)
    pat = _TAGS[tag] = re.compile(rf"<{t}\s*>\s*(.*?)\s*</{t}\s*>", re.S)
  m = pat.search(text or "")
  return m.group(1).strip() if m else None


def _has(text: str, tag: str) -> bool:
  return bool(extract_tag(text, tag))


def has_box(text: str) -> bool:
  """True when the text holds a usable released-protocol box: what `parse_crop_request(text, "released")`
  reads as a crop request (the one box parser, so the reward and the loop agree on what is a box)."""
  return parse.parse_crop_request(text, "released") is not None


def _tool_call_has_box(text: str) -> bool:
  """True when the turn holds a `crop_and_zoom` tool call with a usable box (`parse_crop_request`)."""
  return parse.parse_crop_request(text, "multiturn") is not None


def format_reward(stages: Sequence[str] | str, protocol: str = "released") -> float:
  """1.0 if the generated `stages` (one string per stage or turn) have the required structure, else 0.0.

  Empty strings after the first stage are ignored (the released code passes "" for "no second stage").
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
  if isinstance(stages, str):
    stages = [stages]
  texts = [s if isinstance(s, str) else "" for s in stages]
  while len(texts) > 1 and not texts[-1]:
    texts.pop()
  if not texts:
    return 0.0
  last = texts[-1]
  if not (_has(last, "think") and _has(last, "answer")):
    return 0.0
  if protocol == "released":
    if len(texts) > 2:
      return 0.0
    if len(texts) == 2 and not (_has(texts[0], "think") and has_box(texts[0])):
      return 0.0
    return 1.0
  ok = all(_has(t, "think") and _tool_call_has_box(t) for t in texts[:-1])
  return 1.0 if ok else 0.0


def format_rewards(batch: Iterable[Sequence[str] | str], protocol: str = "released") -> np.ndarray:
  """`format_reward` over a batch of trajectories -> float32[B]."""
  return np.asarray([format_reward(s, protocol) for s in batch], dtype=np.float32)
