"""Crop-request / answer parsing: explicit junk cases and a hypothesis fuzz (never raises, always valid)."""
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoomjax.rollout import parse_crop_request
from zoomjax.protocol import templates as P
from zoomjax.protocol.parse import (MAX_COORD, extract_answer, extract_thinks, parse_tool_calls,
                                   released_stage1)


def rel(box_text, label="x"):
  return f'<think>scene. ```json\n[\n    {{"bbox_2d": {box_text}, "label": "{label}"}}\n]\n```\n</think>\n'


def mt(args_text, name="crop_and_zoom", close=True):
  return (f'<think>z</think>\n<tool_call>\n{{"name": "{name}", "arguments": {{"bbox_2d": {args_text}}}}}\n'
          + ("</tool_call>" if close else ""))


@pytest.mark.parametrize("text, view, expected", [
    (rel("[10, 20, 30, 40]"), None, [10, 20, 30, 40]),
    (rel("[10.5, 20, 30, 40.25]"), None, [10.5, 20, 30, 40.25]),
    (rel("[30, 40, 10, 20]"), None, [10, 20, 30, 40]),                         # swapped corners
    (rel("[30, 20, 10, 40]"), None, [10, 20, 30, 40]),                         # swapped x only
    (rel("[-10, -5, 30, 40]"), None, [0, 0, 30, 40]),                          # negative -> clamped
    (rel("[10, 20, 9000, 400]"), (512, 384), [10, 20, 512, 384]),              # huge -> clamped to view
    (rel("[10, 20, 1e30, 40]"), None, [10, 20, MAX_COORD, 40]),                 # huge, view unknown
    (rel("[600, 600, 700, 700]"), (512, 512), None),                           # entirely outside the view
    (rel("[10, 20, 10, 40]"), None, None),                                     # zero width
    (rel("[10, 20, 30, 20]"), None, None),                                     # zero height
    (rel("[NaN, 20, 30, 40]"), None, None),                                    # NaN
    (rel("[10, 20, Infinity, 40]"), None, None),                               # inf
    (rel("[10, 20, 1e999, 40]"), None, None),                                  # overflows to inf
    (rel("[10, 20, 30]"), None, None),                                         # 3 numbers
    (rel("[10, 20, 30, 40, 50]"), None, None),                                 # 5 numbers
    (rel("[[10, 20], [30, 40]]"), None, None),                                 # nested
    (rel("[١٠, 20, 30, 40]"), None, None),                                     # unicode digits
    (rel('["10", "20", "30", "40"]'), None, [10, 20, 30, 40]),                 # quoted numbers
    (rel("[true, 20, 30, 40]"), None, None),
    ("bbox_2d: [1 2 3 4]", None, [1, 2, 3, 4]),                                # bare key, spaces
    ("'bbox_2d': '[1, 2, 3, 4]'", None, [1, 2, 3, 4]),                         # single quotes, quoted list
    (rel("[1, 2, x, 4]") + rel("[5, 6, 7, 8]"), None, [5, 6, 7, 8]),           # first usable box
    (rel("[5, 6, 7, 8]") + rel("[1, 2, 3, 4]"), None, [5, 6, 7, 8]),           # several boxes -> first
    (rel("[5, 6, 5, 8]") + rel("[1, 2, 3, 4]"), None, None),                   # first usable is empty
    ("no box at all", None, None),
    ("", None, None),
    ('{"bbox_2d": [1, 2, 3, 4', None, None),                                   # unclosed list
    ("\x00\ud800\U0001F600 bbox_2d \u202e[", None, None),
])
def test_released_cases(text, view, expected):
  assert parse_crop_request(text, "released", view_size=view) == expected


@pytest.mark.parametrize("text, expected", [
    (mt("[10, 20, 30, 40]"), [10, 20, 30, 40]),
    (mt("[30, 40, 10, 20]"), [10, 20, 30, 40]),
    (mt("[10, 20, 30, 40]", close=False), [10, 20, 30, 40]),                   # cut by the budget
    (mt("[10, 20, 30, 40]", name="denoise"), None),                            # another tool
    (mt("[10, 20, 30, 40]", name="denoise") + mt("[1, 2, 3, 4]"), [1, 2, 3, 4]),
    (mt("[1, 2, 3, 4]") + mt("[5, 6, 7, 8]"), [1, 2, 3, 4]),
    (mt('"[1, 2, 3, 4]"'), [1, 2, 3, 4]),                                      # list as a string
    ('<tool_call>{"name": "crop_and_zoom", "arguments": "{\\"bbox_2d\\": [1, 2, 3, 4]}"}</tool_call>',
     [1, 2, 3, 4]),                                                            # arguments as a JSON string
    ("<tool_call>{name: crop_and_zoom, arguments: {bbox_2d: [1, 2, 3, 4]}}</tool_call>", [1, 2, 3, 4]),
    ("<tool_call>```json\n" + json.dumps({"name": "crop_and_zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}})
     + "\n```</tool_call>", [1, 2, 3, 4]),
    (mt("[NaN, 2, 3, 4]"), None),
    (mt("[1, 2, 3]"), None),
    ('{"name": "crop_and_zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}', None),  # no tool_call tag
    ("<tool_call>" + "[" * 100000 + "</tool_call>", None),                    # deep nesting
    ("<tool_call><tool_call></tool_call>", None),
])
def test_multiturn_cases(text, expected):
  assert parse_crop_request(text, "multiturn") == expected


def test_non_string_and_bad_protocol():
  for junk in (None, 12, 3.5, [], {}, object()):
    assert parse_crop_request(junk) is None
  assert parse_crop_request(rel("[1, 2, 3, 4]").encode(), "released") == [1, 2, 3, 4]
  assert parse_crop_request(rel("[1, 2, 3, 4]"), "other") is None
  assert parse_crop_request(rel("[1, 2, 3, 4]"), "released", view_size=("a", None)) == [1, 2, 3, 4]


def test_answer_think_helpers():
  assert extract_answer("<think>a</think><answer> red \n</answer>") == "red"
  assert extract_answer("<answer>a</answer> then <answer>b</answer>") == "b"
  assert extract_answer("<answer>a</answer> then <answer>b</answer>", which="first") == "a"
  assert extract_answer("<answer>cut off") is None
  assert extract_answer(None) is None
  assert extract_thinks("<think> a </think>x<think>b</think><think>c") == ["a", "b"]
  assert released_stage1("<think>a</think>\n<answer>b</answer>") == "<think>a</think>\n"
  calls = parse_tool_calls(mt("[1, 2, 3, 4]") + "<tool_call>junk</tool_call>")
  assert calls == [("crop_and_zoom", {"bbox_2d": [1, 2, 3, 4]})]


def _valid(box, view=None):
  if box is None:
    return True
  x1, y1, x2, y2 = box
  ok = all(isinstance(v, float) and math.isfinite(v) for v in box) and x1 < x2 and y1 < y2
  ok = ok and min(box) >= 0
  if view is not None:
    ok = ok and x2 <= view[0] and y2 <= view[1]
  return ok


_nums = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from(["NaN", "Infinity", "-1e999", '"12"', "true", "null", "٣", "1.2.3", ""]))
_junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@st.composite
def model_texts(draw):
  """Sloppy model output: junk interleaved with box-like fragments of both protocols."""
  parts = []
  for _ in range(draw(st.integers(0, 4))):
    kind = draw(st.sampled_from(["junk", "rel", "mt", "tag", "num"]))
    nums = draw(st.lists(_nums, min_size=0, max_size=6))
    lst = "[" + draw(st.sampled_from([", ", ",", " "])).join(str(n) for n in nums) + draw(
        st.sampled_from(["]", "", "]]"]))
    if kind == "junk":
      parts.append(draw(_junk))
    elif kind == "rel":
      parts.append(rel(lst, draw(_junk)))
    elif kind == "mt":
      parts.append(mt(lst, draw(st.sampled_from(["crop_and_zoom", "x", ""])), close=draw(st.booleans())))
    elif kind == "tag":
      parts.append(draw(st.sampled_from(["<tool_call>", "</tool_call>", "<think>", "</think>", "<answer>",
                                         "</answer>", '"bbox_2d":', "{", "}", "[", "]", '"'])))
    else:
      parts.append(lst)
  return "".join(parts)


_views = st.one_of(st.none(), st.tuples(st.integers(1, 600), st.integers(1, 600)))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=model_texts(), view=_views, protocol=st.sampled_from(["released", "multiturn"]))
def test_fuzz_structured(text, view, protocol):
  box = parse_crop_request(text, protocol, view_size=view)
  assert _valid(box, view)
  extract_answer(text)
  extract_thinks(text)
  parse_tool_calls(text)


@settings(max_examples=2000, deadline=None)
@given(text=st.text(max_size=300), protocol=st.sampled_from(["released", "multiturn"]))
def test_fuzz_arbitrary_text(text, protocol):
  assert _valid(parse_crop_request(text, protocol))


_coord = st.integers(0, 512) | st.floats(0, 512, allow_nan=False).map(lambda v: round(v, 2))


@settings(max_examples=1000, deadline=None)
@given(box=st.tuples(_coord, _coord, _coord, _coord), label=_junk)
def test_fuzz_roundtrip_of_rendered_requests(box, label):
  """A box the templates render comes back ordered and unchanged, in both protocols."""
  x1, y1, x2, y2 = box
  expected = [float(min(x1, x2)), float(min(y1, y2)), float(max(x1, x2)), float(max(y1, y2))]
  if not (expected[0] < expected[2] and expected[1] < expected[3]):
    expected = None
  text = "<think>s " + P.released_bbox_json(box, label) + "</think>"
  assert parse_crop_request(text, "released", view_size=(512, 512)) == expected
  call = P.tool_call_text("crop_and_zoom", {"bbox_2d": list(box)})
  assert parse_crop_request("<think>a</think>\n" + call, "multiturn", view_size=(512, 512)) == expected
