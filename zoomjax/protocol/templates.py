"""Prompt and trajectory templates of the two crop-and-zoom protocols, in Qwen's chat format.

Two protocols (SPEC §3), each a versioned template:

* `released` (version `RELEASED_VERSION`): ZoomEarth's released protocol, kept for compatibility with the
  public checkpoint and data. One user turn (global view + question + the analyst instruction); the
  model writes `<think>` with a JSON box list `[{"bbox_2d": [x1, y1, x2, y2], "label": …}]` in
  global-view pixels; the system appends the crop *inside the same assistant turn* as
  `<|vision_start|><|image_pad|><|vision_end|>`; the model continues with a second `<think>` and
  `<answer>`. At most one zoom. The prompt text is the released RL/eval prompt (`LRS_GRO` case),
  character for character, including its quirks (a leading newline, `assistant. <|im_end|>`, typos).
* `multiturn` (version `MULTITURN_VERSION`): a Qwen2.5 tool-use conversation. The system turn
  describes the tools (Qwen's `# Tools` block); the model calls
  `<tool_call>\\n{"name": "crop_and_zoom", "arguments": {"bbox_2d": [...]}}\\n</tool_call>` and ends
  its turn; the crop comes back as a user turn `<tool_response>` holding the image; up to
  `max_turns` zooms, then `<answer>`.

Text is built from the tokenizer's special-token *strings* (`IM_START`, `IMAGE_PAD`, …), never ids.
Every image appears as ONE placeholder `IMAGE_PLACEHOLDER` (`<|vision_start|><|image_pad|><|vision_end|>`);
the data side (or `encode_segments`) expands its `<|image_pad|>` to the image's token count.

A rendering is a `Rendered`: a tuple of `Segment(text, kind)` with kind in

  "prompt"     system/user text the model is given             loss mask 0
  "generated"  text the model writes (incl. its `<|im_end|>`)   loss mask 1
  "image"      one `IMAGE_PLACEHOLDER`                          loss mask 0
  "tool"       tool-response scaffolding the system appends     loss mask 0

Every segment boundary sits next to a special token or right after the newline of
`<|im_start|>assistant\n` (where byte-level pre-tokenisers always split), so tokenising segment by segment
gives the same ids as tokenising `Rendered.text` in one go.

API:
  render_prompt(question, protocol="released", *, tools=None, max_turns=None, version=None) -> Rendered
  render_released_trajectory(question, stage1, stage2=None, answer=…, *, crop=…) -> Rendered
      crop form: <think>stage1</think>\\n [image] \\n<think>stage2</think>\\n<answer>answer</answer><|im_end|>
      no-crop form: <think>stage1 stage2</think>\\n<answer>answer</answer><|im_end|>
  render_multiturn_trajectory(question, assistant_turns, tool_responses, *, tools=None, max_turns=None)
  released_bbox_json(box, label) / tool_call_text(name, arguments)       the model-side box formats
  released_crop_segments() / tool_response_segments(parts)               what the rollout appends
  encode_segments(segments, encode, image_token_counts, image_pad_id) -> (ids, loss_mask)
  END_OF_TURN_TOKENS                                                      where an assistant turn ends

Note on the released SFT script: it closed the assistant text with ` <|endoftext|>` and put a bare
`<|image_pad|>` for the crop; the released *inference* and RL code (which this protocol follows) wrap the
crop in `<|vision_start|>…<|vision_end|>`, and zoomjax closes every assistant turn with `<|im_end|>`.
Decoding stops on either `<|im_end|>` or `<|endoftext|>` (`END_OF_TURN_TOKENS`), so both checkpoints work.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------------------------------------
# Special-token strings (Qwen2.5-VL tokenizer).

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_RESPONSE_START = "<tool_response>"
TOOL_RESPONSE_END = "</tool_response>"

IMAGE_PLACEHOLDER = VISION_START + IMAGE_PAD + VISION_END
END_OF_TURN_TOKENS = (IM_END, ENDOFTEXT)
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, TOOL_CALL_START,
                  TOOL_CALL_END)

THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"

PROTOCOLS = ("released", "multiturn")
RELEASED_VERSION = "released-v1"
TOY_VERSION = "released-toy-v1"
MULTITURN_VERSION = "multiturn-v1"
# Known template versions per protocol; the first is the protocol's default.
VERSIONS = {"released": (RELEASED_VERSION, TOY_VERSION), "multiturn": (MULTITURN_VERSION,)}

SEGMENT_KINDS = ("prompt", "generated", "image", "tool")


class ProtocolError(ValueError):
  """An unknown protocol / version, or arguments a template cannot render."""


# ---------------------------------------------------------------------------------------------------------
# `released-v1`: ZoomEarth's prompt (released `qwen_module.py` case LRS_GRO == `infer.py`), reproduced as
# a compatibility string. `{question}` is inserted right after the image, as the release does.

RELEASED_SYSTEM = "You are a helpful assistant. "  # (sic: trailing space before <|im_end|>)

RELEASED_INSTRUCTION = (
    "\nYou are an intelligent remote sensing analyst.\n"
    "Given a natural language question about a satellite image, generate a structured reasoning answer "
    "as follows:\n"
    "1. <think> ... </think>\n"
    "    - Provide a neutral one-sentence description of the whole image scene.\n"
    "    - Cropping task: \"This question is asking about <short intent>, therefore I need to crop the "
    "image to examine the surroundings of the mentioned target.\"\n"
    "    - Non-cropping task: \"This question is asking about <short intent>, therefore I need to analyze "
    "the entire image without cropping.\"\n"
    "    - Include:\n"
    "        * Question Intent: describe the type of question (object category, spatial relation, count, "
    "etc.) and needed visual info.\n"
    "        * Localization Strategy:\n"
    "            - Cropping: approximate referent object location in natural language (no coordinates).\n"
    "            - Non-cropping: strategy to detect all relevant objects.      * Reasoning Result:\n"
    "    - Cropping: output exactly one JSON-formatted bbox for the referent:          "
    "[{\"bbox_2d\": [x_min,y_min,x_max,y_max], \"label\": \"<short description>\"}]\n"
    "    - Non-cropping: summarize how detected objects will be used to produce the count.\n"
    "2. <think> ... </think> (only when saw the cropped image)\n"
    "    - Explain how to reason step by step from the referent (or detected objects) to the final "
    "answer. \n"
    "3. <answer> ... </answer>\n"
    "    - Your final answer, use a single word or phrase.\n"
    "Rules: \n"
    "    - Always return exactly one <answer> block, for tasks that need cropping, you can provide the "
    "bounding box of the object you are intrested, after given the cropped image, you can generate "
    "another <think> block to find the answer. \n"
    "    - For cropping tasks, also include a bounidng box in <stage_2_reasoning> block \n"
    "    - If unsure about localization, make a best guess\u2014never say uncertain.\n"
)

# The full released prompt; `{question}` is the only field (filled with str.replace: the text has braces).
RELEASED_PROMPT_TEMPLATE = (
    "\n" + IM_START + "system\n" + RELEASED_SYSTEM + IM_END + "\n"
    + IM_START + "user\n" + IMAGE_PLACEHOLDER + "{question}" + RELEASED_INSTRUCTION + IM_END + "\n"
    + IM_START + "assistant\n"
)

# `released-toy-v1`: the released protocol (same assistant structure, crop inside the turn, same parser)
# with a one-line instruction instead of the ~300-token analyst text, for models trained from scratch on
# Toy Earth, where the long instruction costs most of every sequence and teaches nothing.
TOY_SYSTEM = "You are a helpful assistant."
TOY_INSTRUCTION = ("\nThink in <think></think>; to look closer, give a \"bbox_2d\" of the global view; "
                   "answer in <answer></answer>.")
TOY_PROMPT_TEMPLATE = (
    IM_START + "system\n" + TOY_SYSTEM + IM_END + "\n"
    + IM_START + "user\n" + IMAGE_PLACEHOLDER + "{question}" + TOY_INSTRUCTION + IM_END + "\n"
    + IM_START + "assistant\n"
)
_RELEASED_PROMPTS = {RELEASED_VERSION: RELEASED_PROMPT_TEMPLATE, TOY_VERSION: TOY_PROMPT_TEMPLATE}

# ---------------------------------------------------------------------------------------------------------
# `multiturn-v1`: Qwen2.5's tool-use chat format (its `# Tools` system block and `<tool_response>` user turn).

MULTITURN_SYSTEM = "You are a helpful assistant."

_TOOLS_BLOCK = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>"
    "\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}}\n</tool_call>"
)

MULTITURN_INSTRUCTION = (
    "\nYou are an intelligent remote sensing analyst. The image above is a low-resolution global view "
    "of a much larger satellite image.\n"
    "First think inside <think> ... </think>. If answering needs finer detail, call the crop_and_zoom "
    "tool with \"bbox_2d\": [x_min, y_min, x_max, y_max] in pixel coordinates of the global view; the "
    "region is cut from the full-resolution image and returned to you. You may zoom at most {max_turns} "
    "time(s).\n"
    "When you can answer, write <think> ... </think> then <answer> ... </answer> with a single word or "
    "phrase."
)

# The box argument every region tool takes (JSON schema), and the schema of `crop_and_zoom` (OpenAI
# function format, as Qwen's template embeds it). The tool registry (`zoomjax.rollout.tools`) builds its
# tools' schemas from `BBOX_2D_PARAM`; this module owns both so the prompt renders without the registry.
BBOX_2D_PARAM: Mapping[str, Any] = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 4,
    "maxItems": 4,
    "description": "[x_min, y_min, x_max, y_max] in global-view pixels",
}
CROP_TOOL = "crop_and_zoom"
CROP_AND_ZOOM_DESCRIPTION = ("Crop a region of the full-resolution image and return it zoomed in. The box is "
                             "in pixel coordinates of the global view shown to you.")
CROP_AND_ZOOM_SCHEMA: Mapping[str, Any] = {
    "type": "function",
    "function": {
        "name": CROP_TOOL,
        "description": CROP_AND_ZOOM_DESCRIPTION,
        "parameters": {"type": "object", "properties": {"bbox_2d": BBOX_2D_PARAM}, "required": ["bbox_2d"]},
    },
}

DEFAULT_MAX_TURNS = 3


# ---------------------------------------------------------------------------------------------------------
# Renderings.

@dataclasses.dataclass(frozen=True)
class Segment:
  """A run of chat text with one loss-mask kind (see module docstring)."""

  text: str
  kind: str

  def __post_init__(self):
    if self.kind not in SEGMENT_KINDS:
      raise ProtocolError(f"segment kind must be one of {SEGMENT_KINDS}, got {self.kind!r}")
    if self.kind == "image" and self.text != IMAGE_PLACEHOLDER:
      raise ProtocolError(f"an image segment holds exactly {IMAGE_PLACEHOLDER!r}, got {self.text!r}")

  @property
  def trainable(self) -> bool:
    return self.kind == "generated"


@dataclasses.dataclass(frozen=True)
class Rendered:
  """A chat rendering: `segments` in order; `text` is their concatenation."""

  segments: tuple[Segment, ...]
  protocol: str
  version: str

  @property
  def text(self) -> str:
    return "".join(s.text for s in self.segments)

  @property
  def num_images(self) -> int:
    return sum(s.kind == "image" for s in self.segments)

  def __add__(self, other: "Rendered | Sequence[Segment]") -> "Rendered":
    extra = other.segments if isinstance(other, Rendered) else tuple(other)
    return dataclasses.replace(self, segments=_merge(self.segments + tuple(extra)))


def _merge(segments: Iterable[Segment]) -> tuple[Segment, ...]:
  """Joins neighbours of the same text kind and drops empty text segments (images never merge)."""
  out: list[Segment] = []
  for s in segments:
    if not s.text:
      continue
    if out and s.kind == out[-1].kind and s.kind != "image":
      out[-1] = Segment(out[-1].text + s.text, s.kind)
    else:
      out.append(s)
  return tuple(out)


def crop_request_token(protocol: str, version: str | None) -> str | None:
  """The token with which the model itself asks for the crop, where the version trains one: `released-toy-v1`
  makes the crop image's `<|vision_start|>` a target (SFT) and a stage-1 stop (rollout); None otherwise."""
  return VISION_START if protocol == "released" and resolve_version(protocol, version) == TOY_VERSION else None


def resolve_version(protocol: str, version: str | None) -> str:
  """The template version `version` names for `protocol` (None: the protocol's default); ProtocolError
  for an unknown protocol or version."""
  if protocol not in VERSIONS:
    raise ProtocolError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
  version = version or VERSIONS[protocol][0]
  if version not in VERSIONS[protocol]:
    raise ProtocolError(f"unknown {protocol} protocol version {version!r}; known: {VERSIONS[protocol]}")
  return version


def _text(x: Any, what: str) -> str:
  if not isinstance(x, str):
    raise ProtocolError(f"{what} must be a string, got {type(x).__name__}")
  return x


def _split_image(text: str, kind: str) -> list[Segment]:
  """Splits a template string at each IMAGE_PLACEHOLDER into text / image segments."""
  parts = text.split(IMAGE_PLACEHOLDER)
  out: list[Segment] = []
  for i, p in enumerate(parts):
    if i:
      out.append(Segment(IMAGE_PLACEHOLDER, "image"))
    out.append(Segment(p, kind))
  return out


def system_text(protocol: str, *, tools: Sequence[Mapping[str, Any]] | None = None) -> str:
  """The system message body of `protocol` (multiturn: with Qwen's tool block)."""
  if protocol == "released":
    return RELEASED_SYSTEM
  tools = [CROP_AND_ZOOM_SCHEMA] if tools is None else list(tools)
  if not tools:
    return MULTITURN_SYSTEM
  body = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
  return MULTITURN_SYSTEM + _TOOLS_BLOCK.format(tools=body)


def render_prompt(question: str, protocol: str = "released", *,
                  tools: Sequence[Mapping[str, Any]] | None = None, max_turns: int | None = None,
                  version: str | None = None) -> Rendered:
  """The prompt up to and including `<|im_start|>assistant\\n` (one image: the global view).

  Args:
    question: the user's question (inserted verbatim).
    protocol: "released" or "multiturn".
    tools: multiturn only: tool schemas for the system turn (default: `crop_and_zoom` only).
    max_turns: multiturn only: the zoom budget stated in the instruction (default `DEFAULT_MAX_TURNS`).
    version: template version (default: the protocol's first, `released-v1` / `multiturn-v1`).
  """
  version = resolve_version(protocol, version)
  question = _text(question, "question")
  if IMAGE_PLACEHOLDER in question:
    raise ProtocolError("the question must not contain an image placeholder")
  if protocol == "released":
    text = _RELEASED_PROMPTS[version].replace("{question}", question, 1)
  else:
    n = DEFAULT_MAX_TURNS if max_turns is None else int(max_turns)
    text = (IM_START + "system\n" + system_text(protocol, tools=tools) + IM_END + "\n"
            + IM_START + "user\n" + IMAGE_PLACEHOLDER + question + MULTITURN_INSTRUCTION.format(max_turns=n)
            + IM_END + "\n" + IM_START + "assistant\n")
  return Rendered(_merge(_split_image(text, "prompt")), protocol, version)


def _fmt_num(v: Any) -> str:
  f = float(v)
  if not math.isfinite(f):
    raise ProtocolError(f"box coordinates must be finite, got {v!r}")
  return str(int(f)) if f == int(f) else repr(round(f, 2))


def _json_num(v: Any) -> int | float:
  f = float(_fmt_num(v))
  return int(f) if f.is_integer() else f


def released_bbox_json(box: Sequence[float], label: str = "target", *, fenced: bool = True,
                       version: str | None = None) -> str:
  """The released stage-1 box block: ```` ```json\\n[\\n    {"bbox_2d": [x1, y1, x2, y2], "label": "…"}\\n]\\n```\\n ````.

  `box` is in global-view pixels; integral values print as integers. `fenced=False` gives the bare
  one-line list `[{"bbox_2d": [...], "label": "..."}]` of the instruction text. Version `released-toy-v1`
  writes the label first (`{"label": "…", "bbox_2d": [...]}`, the same JSON to the parser): the words
  that say where the referent is then sit right before the numbers that locate it.
  """
  if len(box) != 4:
    raise ProtocolError(f"a box has 4 numbers, got {list(box)!r}")
  nums = ", ".join(_fmt_num(v) for v in box)
  lab = json.dumps(str(label), ensure_ascii=False)
  if version == TOY_VERSION:
    item = '{"label": ' + lab + ', "bbox_2d": [' + nums + ']}'
  else:
    item = '{"bbox_2d": [' + nums + '], "label": ' + lab + "}"
  if not fenced:
    return "[" + item + "]"
  return "```json\n[\n    " + item + "\n]\n```\n"


def tool_call_text(name: str, arguments: Mapping[str, Any]) -> str:
  """`<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>` (Qwen2.5's tool-call format)."""
  args = {k: ([_json_num(v) for v in val] if k == "bbox_2d" else val) for k, val in arguments.items()}
  return (TOOL_CALL_START + "\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
          + "\n" + TOOL_CALL_END)


def released_crop_segments() -> tuple[Segment, ...]:
  """What the released protocol appends after the stage-1 text when it zooms: the crop image."""
  return (Segment(IMAGE_PLACEHOLDER, "image"),)


IMAGE = object()
"""Sentinel for an image part in `tool_response_segments` / `render_multiturn_trajectory`."""


def tool_response_segments(parts: Sequence[Any] = (IMAGE,)) -> tuple[Segment, ...]:
  """The user turn carrying one tool result, from the end of the assistant's `<|im_end|>` to the next
  `<|im_start|>assistant\\n`: `\\n<|im_start|>user\\n<tool_response>\\n{parts}\\n</tool_response><|im_end|>\\n…`.

  Args:
    parts: the tool result, a sequence of strings and `IMAGE` sentinels (one image placeholder each).
  """
  segs = [Segment("\n" + IM_START + "user\n" + TOOL_RESPONSE_START + "\n", "tool")]
  for p in parts:
    if p is IMAGE:
      segs.append(Segment(IMAGE_PLACEHOLDER, "image"))
    else:
      p = _text(p, "a tool response part")
      if IMAGE_PLACEHOLDER in p:
        raise ProtocolError("pass images as the IMAGE sentinel, not as placeholder text")
      segs.append(Segment(p, "tool"))
  segs.append(Segment("\n" + TOOL_RESPONSE_END + IM_END + "\n" + IM_START + "assistant\n", "tool"))
  return _merge(segs)


def render_released_trajectory(question: str, stage1: str, stage2: str | None = None, answer: str = "", *,
                               crop: bool | None = None, version: str | None = None) -> Rendered:
  """A whole released-protocol SFT example: prompt + assistant turn.

  Args:
    question: the question.
    stage1: the first `<think>` body (scene description + intent + for a crop the box block from
      `released_bbox_json`), without the tags.
    stage2: the second reasoning (crop: the second `<think>` body; no crop: appended to the first think
      after a space, as the released SFT data does); None or "" for none.
    answer: the final answer text (the `<answer>` body).
    crop: whether the trajectory zooms (default: `stage2` is given and the stage-1 text holds a box).
  """
  stage1 = _text(stage1, "stage1")
  stage2 = _text(stage2 or "", "stage2")
  answer = _text(answer, "answer")
  if crop is None:
    crop = bool(stage2) and '"bbox_2d"' in stage1
  p = render_prompt(question, "released", version=version)
  if crop:
    segs = (Segment(THINK_START + stage1 + THINK_END + "\n", "generated"),
            *released_crop_segments(),
            Segment("\n" + THINK_START + stage2 + THINK_END + "\n" + ANSWER_START + answer + ANSWER_END + IM_END,
                    "generated"))
  else:
    body = stage1 + (" " + stage2 if stage2 else "")
    segs = (Segment(THINK_START + body + THINK_END + "\n" + ANSWER_START + answer + ANSWER_END + IM_END,
                    "generated"),)
  return p + segs


def render_multiturn_trajectory(question: str, assistant_turns: Sequence[str],
                                tool_responses: Sequence[Sequence[Any]] | None = None, *,
                                tools: Sequence[Mapping[str, Any]] | None = None, max_turns: int | None = None,
                                version: str | None = None) -> Rendered:
  """A whole multiturn example: prompt, then assistant turns interleaved with tool responses.

  Args:
    question: the question.
    assistant_turns: each assistant turn's text without `<|im_end|>` (which is appended); every turn but
      the last normally ends with a `tool_call_text(...)`, the last holds `<answer>`.
    tool_responses: one per assistant turn but the last: a sequence of strings / `IMAGE` sentinels
      (default: a single image each).
  """
  turns = [_text(t, "an assistant turn") for t in assistant_turns]
  if not turns:
    raise ProtocolError("a trajectory needs at least one assistant turn")
  if tool_responses is None:
    tool_responses = [(IMAGE,)] * (len(turns) - 1)
  if len(tool_responses) != len(turns) - 1:
    raise ProtocolError(f"{len(turns)} assistant turns need {len(turns) - 1} tool responses, "
                        f"got {len(tool_responses)}")
  r = render_prompt(question, "multiturn", tools=tools, max_turns=max_turns, version=version)
  segs: list[Segment] = []
  for i, t in enumerate(turns):
    segs.append(Segment(t + IM_END, "generated"))
    if i < len(turns) - 1:
      segs.extend(tool_response_segments(tool_responses[i]))
  return r + segs


# ---------------------------------------------------------------------------------------------------------
# Token ids.

def encode_segments(segments: Sequence[Segment] | Rendered, encode: Callable[[str], Sequence[int]],
                    image_token_counts: Sequence[int], image_pad_id: int) -> tuple[list[int], list[int]]:
  """Token ids and loss mask of a rendering, with each image's `<|image_pad|>` repeated to its count.

  Args:
    segments: a `Rendered` or its segments.
    encode: text -> ids without added special tokens (e.g. `lambda s: tok.encode(s, add_special_tokens=False)`,
      or a `tokenizers.Tokenizer`'s `lambda s: tok.encode(s, add_special_tokens=False).ids`).
    image_token_counts: merged tokens per image, in order (`t*h*w // 4` of its `image_grid_thw`).
    image_pad_id: id of `<|image_pad|>`.

  Returns:
    (ids, loss_mask): lists of equal length; loss_mask[t] = 1 iff ids[t] is model-generated.
  """
  segs = segments.segments if isinstance(segments, Rendered) else tuple(segments)
  n_img = sum(s.kind == "image" for s in segs)
  if n_img != len(image_token_counts):
    raise ProtocolError(f"{n_img} images in the text but {len(image_token_counts)} token counts given")
  ids: list[int] = []
  mask: list[int] = []
  k = 0
  for s in segs:
    if s.kind == "image":
      n = int(image_token_counts[k])
      k += 1
      if n <= 0:
        raise ProtocolError(f"image {k - 1} has token count {n}")
      seg_ids = list(encode(VISION_START)) + [image_pad_id] * n + list(encode(VISION_END))
    else:
      seg_ids = list(encode(s.text))
    ids.extend(seg_ids)
    mask.extend([int(s.trainable)] * len(seg_ids))
  return ids, mask
