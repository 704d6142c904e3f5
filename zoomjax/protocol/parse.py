"""Reading model text: crop requests, tool calls, `<answer>` and `<think>` bodies. Nothing here raises.

`parse_crop_request(text, protocol, view_size=None)` -> `[x1, y1, x2, y2]` floats in the global-view frame
with `x1 < x2` and `y1 < y2`, or None (no crop). The defined action for each kind of model output:

  where the box is read
    released   the first `"bbox_2d": [...]` in the text (key in double, single or no quotes; the list may
               itself be quoted) whose list holds 4 numbers (the release's `extract_bbox(...)[0]`). The
               loop passes the stage-1 text only.
    multiturn  the first `<tool_call>` block that calls `crop_and_zoom` (JSON
               `{"name": …, "arguments": {"bbox_2d": [...]}}`, `arguments` also accepted as a JSON string
               or under `parameters`). A block runs to `</tool_call>`, the next `<tool_call>` or the end
               of the text (a call cut by the token budget still counts). If the JSON does not parse, the
               block still counts when it mentions `crop_and_zoom` and has a `"bbox_2d": [...]` list.
               No `<tool_call>` tag -> None.
  numbers      ASCII decimal literals only (`12`, `-3.5`, `1e2`, `"12"` in quotes), separated by commas
               or spaces. Anything else in the list (words, unicode digits, `true`, nested lists,
               `NaN`, `Infinity`, literals that overflow to inf) makes that list unusable: released
               looks on to the next `bbox_2d`; multiturn to the next tool call. A list of != 4 numbers
               is unusable the same way.
  geometry (applied to the first usable list, never looking further afterwards)
    swapped    x1 > x2 or y1 > y2: the corners are swapped.
    outside    clamped to the global view `[0, W] x [0, H]` when `view_size=(W, H)` is given, otherwise
               to `[0, MAX_COORD]` (negatives -> 0, huge -> MAX_COORD).
    empty      zero width or height after clamping (a point, a line, a box entirely outside the view)
               -> None.
  anything else (missing tags, non-string input, unbalanced JSON, deep nesting, junk) -> None.

Also: `parse_tool_calls(text)` -> every `<tool_call>` as `ToolCall(name, arguments)`;
`extract_answer(text)` -> the (last, by default) `<answer>…</answer>` body stripped, or None;
`extract_thinks(text)` -> every `<think>…</think>` body; `released_stage1(text)` -> the text before the
first `<answer>` (what the released protocol keeps of stage 1 when it zooms).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from typing import Any, NamedTuple, Sequence

from zoomjax.protocol.templates import CROP_TOOL

MAX_COORD = 65536.0
"""Clamp bound for coordinates when the view size is unknown (global views are <= 512 px)."""


_NUM = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_BBOX_KEY = re.compile(r"""(?:"bbox_2d"|'bbox_2d'|\bbbox_2d\b)\s*:\s*["']?\s*\[""")
_SPLIT = re.compile(r"[,\s]+")
_TOOL_OPEN, _TOOL_CLOSE = "<tool_call>", "</tool_call>"
_MAX_JSON_CHARS = 20000   # a tool call longer than this is not JSON-decoded (regex fallback only)
_MAX_LIST_CHARS = 512     # a bbox list longer than this is junk (keeps the scan linear)


class ToolCall(NamedTuple):
  """One parsed `<tool_call>`: the tool name and its arguments dict."""

  name: str
  arguments: dict


def _as_text(text: Any) -> str | None:
  if isinstance(text, str):
    return text
  if isinstance(text, (bytes, bytearray)):
    return bytes(text).decode("utf-8", errors="replace")
  return None


def _number(v: Any) -> float | None:
  """A finite float from a JSON value / list item, or None (bools, NaN, inf, non-ASCII digits, words)."""
  if isinstance(v, bool):
    return None
  if isinstance(v, (int, float)):
    try:
      f = float(v)
    except OverflowError:
      return None
    return f if math.isfinite(f) else None
  if isinstance(v, str):
    s = v.strip().strip("\"'").strip()
    if not _NUM.fullmatch(s):
      return None
    f = float(s)
    return f if math.isfinite(f) else None
  return None


def _numbers_from_list_text(body: str) -> list[float] | None:
  items = [s for s in _SPLIT.split(body.strip()) if s]
  if len(items) != 4:
    return None
  nums = [_number(s) for s in items]
  return None if any(n is None for n in nums) else nums  # type: ignore[return-value]


def _bbox_lists(text: str):
  """Yields the inner text of each `bbox_2d: [ ... ]` list, in order of appearance."""
  for m in _BBOX_KEY.finditer(text):
    end = text.find("]", m.end(), m.end() + _MAX_LIST_CHARS)
    if end < 0:
      continue
    inner = text[m.end():end]
    if "[" in inner:  # nested list: not a flat box
      continue
    yield inner


def _first_box_in_text(text: str) -> list[float] | None:
  for inner in _bbox_lists(text):
    nums = _numbers_from_list_text(inner)
    if nums is not None:
      return nums
  return None


def sanitize_box(nums: Sequence[float], view_size: Sequence[float] | None) -> list[float] | None:
  """Swap, clamp, reject empty (module docstring): 4 numbers -> a valid box or None."""
  x1, y1, x2, y2 = (float(v) for v in nums)
  if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
    return None
  if x1 > x2:
    x1, x2 = x2, x1
  if y1 > y2:
    y1, y2 = y2, y1
  w_max, h_max = MAX_COORD, MAX_COORD
  if view_size is not None:
    try:
      w_max, h_max = float(view_size[0]), float(view_size[1])
    except (TypeError, ValueError, IndexError):
      w_max, h_max = MAX_COORD, MAX_COORD
    if not (math.isfinite(w_max) and math.isfinite(h_max) and w_max > 0 and h_max > 0):
      w_max, h_max = MAX_COORD, MAX_COORD
  x1, x2 = min(max(x1, 0.0), w_max), min(max(x2, 0.0), w_max)
  y1, y2 = min(max(y1, 0.0), h_max), min(max(y2, 0.0), h_max)
  if not (x1 < x2 and y1 < y2):
    return None
  return [x1, y1, x2, y2]


def _tool_blocks(text: str):
  """Yields the body of each `<tool_call>` block (to its close tag, the next open tag, or the end)."""
  opens = [m.start() for m in re.finditer(re.escape(_TOOL_OPEN), text)]
  closes = [m.start() for m in re.finditer(re.escape(_TOOL_CLOSE), text)]
  for k, pos in enumerate(opens):
    start = pos + len(_TOOL_OPEN)
    c = bisect.bisect_left(closes, start)
    end = min(closes[c] if c < len(closes) else len(text), opens[k + 1] if k + 1 < len(opens) else len(text))
    yield text[start:end]


def _closed_blocks(text: str, open_tag: str, close_tag: str) -> list[str]:
  """Bodies of non-overlapping `open…close` blocks (like a non-greedy regex, but linear time)."""
  out, pos = [], 0
  while True:
    i = text.find(open_tag, pos)
    if i < 0:
      return out
    j = text.find(close_tag, i + len(open_tag))
    if j < 0:
      return out
    out.append(text[i + len(open_tag):j])
    pos = j + len(close_tag)


def _strip_fence(s: str) -> str:
  s = s.strip()
  if s.startswith("```"):
    s = s[3:]
    if s[:4].lower() == "json":
      s = s[4:]
    if s.rstrip().endswith("```"):
      s = s.rstrip()[:-3]
  return s.strip()


def _decode_call(body: str) -> ToolCall | None:
  """A tool-call body as JSON -> ToolCall, or None when it is not a JSON object with a string name."""
  s = _strip_fence(body)
  if not s or len(s) > _MAX_JSON_CHARS:
    return None
  try:
    obj = json.loads(s)
  except (ValueError, RecursionError):
    return None
  if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
    return None
  args = obj.get("arguments", obj.get("parameters", {}))
  if isinstance(args, str):
    try:
      args = json.loads(args) if len(args) <= _MAX_JSON_CHARS else None
    except (ValueError, RecursionError):
      args = None
  if not isinstance(args, dict):
    args = {}
  return ToolCall(obj["name"].strip(), args)


def parse_tool_calls(text: Any) -> list[ToolCall]:
  """Every `<tool_call>` block that decodes as JSON `{"name": str, "arguments": {...}}`, in order."""
  text = _as_text(text)
  if text is None:
    return []
  calls = []
  for body in _tool_blocks(text):
    c = _decode_call(body)
    if c is not None:
      calls.append(c)
  return calls


def box_from_arguments(args: dict) -> list[float] | None:
  """The 4 numbers of a tool call's `bbox_2d` argument (list, or list as a string), unsanitized, or None."""
  v = args.get("bbox_2d")
  if isinstance(v, str):
    inner = v.strip().strip("\"'").strip()
    if inner.startswith("[") and inner.endswith("]") and "[" not in inner[1:-1]:
      return _numbers_from_list_text(inner[1:-1])
    return None
  if isinstance(v, list) and len(v) == 4:
    nums = [_number(x) for x in v]
    return None if any(n is None for n in nums) else nums  # type: ignore[return-value]
  return None


def _first_multiturn_box(text: str) -> list[float] | None:
  for body in _tool_blocks(text):
    call = _decode_call(body)
    if call is not None:
      if call.name == CROP_TOOL:
        nums = box_from_arguments(call.arguments)
        if nums is not None:
          return nums
      continue
    if CROP_TOOL in body:  # sloppy JSON: fall back to the bbox_2d list
      nums = _first_box_in_text(body)
      if nums is not None:
        return nums
  return None


def parse_crop_request(text: Any, protocol: str = "released",
                       view_size: Sequence[float] | None = None) -> list[float] | None:
  """The model's crop request as `[x1, y1, x2, y2]` floats (global-view frame), or None. Never raises.

  Args:
    text: model output (stage-1 text for `released`, one assistant turn for `multiturn`).
    protocol: "released" or "multiturn" (anything else -> None).
    view_size: `(W, H)` of the global view, to clamp the box into it (module docstring).
  """
  try:
    text = _as_text(text)
    if text is None:
      return None
    if protocol == "released":
      nums = _first_box_in_text(text)
    elif protocol == "multiturn":
      nums = _first_multiturn_box(text)
    else:
      return None
    return None if nums is None else sanitize_box(nums, view_size)
  except (ValueError, TypeError, OverflowError, RecursionError, IndexError):  # defensive: never raise
    return None


def extract_answer(text: Any, which: str = "last") -> str | None:
  """The `<answer>…</answer>` body (stripped); `which` = "last" (the final answer) or "first"; else None.

  An unclosed `<answer>` (cut by the budget) is not an answer.
  """
  text = _as_text(text)
  if text is None:
    return None
  found = _closed_blocks(text, "<answer>", "</answer>")
  if not found:
    return None
  return (found[0] if which == "first" else found[-1]).strip()


def extract_thinks(text: Any) -> list[str]:
  """Every closed `<think>…</think>` body, stripped, in order."""
  text = _as_text(text)
  return [] if text is None else [t.strip() for t in _closed_blocks(text, "<think>", "</think>")]


def released_stage1(text: Any) -> str:
  """The released protocol's stage-1 text kept before the crop: everything before the first `<answer>`."""
  text = _as_text(text) or ""
  i = text.find("<answer>")
  return text if i < 0 else text[:i]
