"""SFT trajectories: an LRS-GRO row -> chat text (via `zoomjax.protocol.templates`) -> token ids, loss mask, images.

Two protocols (SPEC §3):

* `released`: from the SFT fields, as ZoomEarth's SFT script builds them:
  `<think>{global} {stage_1_reasoning}</think>` with the stage-1 box block rewritten into the **global
  view frame** (the files hold it in the 1024 frame; the released script halved it, which is the same
  thing for images over 512 px), then for `cut` rows the crop image inside the same assistant turn,
  `<think>{stage_2_reasoning}</think>`, `<answer>{ground_truth}</answer><|im_end|>`; rows without a cut
  put both reasoning parts in one think. Text fields are stripped of surrounding whitespace.
* `multiturn`: from any row. With a GT box: turn 1 thinks (the SFT stage-1 text without its box block,
  or a one-line template) and calls `crop_and_zoom` with the global-frame box; the crop returns as a
  `<tool_response>` user turn; turn 2 thinks (stage 2, when given) and answers. Without a box: one turn.

Images: the global view (long side 512) and, when the trajectory zooms, `crop_and_zoom` of the GT box in
original pixels (the released ≥512 window rule), each preprocessed with `processing.preprocess_image`
at the example's pixel budget; every `<|image_pad|>` placeholder is expanded to the image's
`t*h*w/4` tokens.

Loss mask: 1 exactly on assistant-generated tokens (`Segment.kind == "generated"`), including the
`<|im_end|>` that closes each assistant turn (the model must learn to stop, so the end-of-turn token
after the answer is a target); 0 on the prompt, on tool-response scaffolding and on every image token
(`<|vision_start|>`, the pads, `<|vision_end|>`). With `box_weight` k > 1 the tokens that localise in the
text the model writes (a box's numbers and the position words, `split_grounding`) carry k instead of 1
(the loss reads the mask as per-token weights), so they are not drowned by the templated text around them.

Template versions: `render(..., version=)` picks the protocol's prompt template (`released-toy-v1`: the
released protocol with a one-line instruction, for models trained from scratch on Toy Earth).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import numpy as np

from zoomjax.data import boxes as B
from zoomjax.data import images as I
from zoomjax.data.lrs_gro import Row
from zoomjax.protocol import templates as P

_JSON_BLOCK = re.compile(r"```json.*?```[ \t]*\n?", re.S)
# The box block with the LRS-GRO lead-in before it (dropped in multiturn, where the tool call carries the box).
_BOX_LEAD_IN = re.compile(r"(Reasoning Result:\s*)?(I need to pay attention to the reference object at\s*)?"
                          r"```json.*?```[ \t]*\n?", re.S)
_LABEL = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')
# What localises in the text the model writes: a box's numbers (released JSON block or a multiturn tool
# call) and the words that name where the referent is (Toy Earth's cells, LRS-GRO's "in the top left").
_GROUNDING = re.compile(r'"bbox_2d"\s*:\s*\[([^\]]*)\]'
                        r'|( (?:top|bottom|upper|lower)[- ](?:left|right)| top| bottom| left| right| central| center'
                        r'| upper| lower| middle)\b')


class TrajectoryError(ValueError):
  """A row cannot become a trajectory under the requested protocol."""


@dataclasses.dataclass(frozen=True)
class ImageBudget:
  """Pixel budget of every image an example holds (passed to `preprocess_image`)."""

  min_pixels: int = 3136
  max_pixels: int = 12845056


def global_box(row: Row, width: int, height: int, long_side: int = B.GLOBAL_LONG_SIDE) -> list[int]:
  """The row's GT box in global-view pixels, rounded and clamped to the view: what the model should ask."""
  gw, gh = B.resized_size(width, height, long_side)
  box = B.original_to_global(B.gt1024_to_original(row.bbox, width, height), width, height, long_side)
  x1, y1, x2, y2 = (int(round(v)) for v in box)
  return [min(max(x1, 0), gw), min(max(y1, 0), gh), min(max(x2, 0), gw), min(max(y2, 0), gh)]


def row_label(row: Row) -> str:
  """The referent label: the row's `label`, else the one in its stage-1 box block, else "target"."""
  if row.label.strip():
    return row.label.strip()
  m = _LABEL.search(row.stage_1_reasoning or "")
  return m.group(1) if m else "target"


def _stage1_with_box(stage1: str, box: Sequence[int], label: str, version: str | None = None) -> str:
  block = P.released_bbox_json(box, label, version=version)
  if _JSON_BLOCK.search(stage1):
    return _JSON_BLOCK.sub(lambda _: block, stage1, count=1).strip()
  return (stage1.strip() + "\n" + block).strip()


def _think(*parts: str | None) -> str:
  return " ".join(p.strip() for p in parts if p and p.strip())


def zooms(row: Row, protocol: str) -> bool:
  """Whether the trajectory of `row` crops: released -> the SFT `cut` flag (else: has a box); multiturn ->
  has a box."""
  if protocol == "released" and row.cut is not None:
    return bool(row.cut)
  return row.has_box


def render(row: Row, width: int, height: int, protocol: str = "released", version: str | None = None) -> P.Rendered:
  """The whole chat (prompt + assistant answer) of an SFT example under `protocol` (template `version`,
  default the protocol's first: `released-v1` / `multiturn-v1`)."""
  label = row_label(row)
  crop = zooms(row, protocol)
  box = global_box(row, width, height) if row.has_box else None
  answer = row.ground_truth.strip()
  if protocol == "released":
    if row.is_sft:
      stage1 = row.stage_1_reasoning or ""
      stage1 = _stage1_with_box(stage1, box, label, version) if crop else _JSON_BLOCK.sub("", stage1).strip()
      stage1 = _think(row.global_text, stage1)
      stage2 = (row.stage_2_reasoning or "").strip()
    elif crop:
      stage1 = _stage1_with_box(f"This question is asking about the {label}, therefore I need to crop the "
                                "image to examine the surroundings of the mentioned target.", box, label,
                                version)
      stage2 = f"In the cropped region I can see the {label}."
    else:
      stage1 = "This question is about the whole scene, therefore I need to analyze the entire image without cropping."
      stage2 = ""
    return P.render_released_trajectory(row.question, stage1, stage2, answer, crop=crop, version=version)
  if protocol == "multiturn":
    if row.is_sft:
      think1 = _think(row.global_text, _BOX_LEAD_IN.sub("", row.stage_1_reasoning or ""))
      think2 = (row.stage_2_reasoning or "").strip()
    else:
      think1 = (f"The question refers to the {label}; I will zoom into it." if crop
                else "The question is about the whole scene; the global view is enough.")
      think2 = ""
    if not crop:
      body = _think(think1, think2)
      return P.render_multiturn_trajectory(row.question, [
          (f"{P.THINK_START}{body}{P.THINK_END}\n" if body else "") + f"{P.ANSWER_START}{answer}{P.ANSWER_END}"],
          version=version)
    turn1 = (f"{P.THINK_START}{think1}{P.THINK_END}\n" if think1 else "") + P.tool_call_text(
        "crop_and_zoom", {"bbox_2d": box})
    turn2 = (f"{P.THINK_START}{think2}{P.THINK_END}\n" if think2 else "") + f"{P.ANSWER_START}{answer}{P.ANSWER_END}"
    return P.render_multiturn_trajectory(row.question, [turn1, turn2], version=version)
  raise TrajectoryError(f"protocol must be one of {P.PROTOCOLS}, got {protocol!r}")


def trajectory_images(row: Row, original, protocol: str = "released", view=None) -> list:
  """The PIL images of the trajectory, in text order: the global view (computed unless given), then the
  crop when it zooms."""
  out = [view if view is not None else I.global_view(original)[0]]
  if zooms(row, protocol):
    out.append(I.crop_and_zoom(original, row.box_original(original.width, original.height)))
  return out


def split_grounding(rendered: P.Rendered) -> tuple[list[P.Segment], list[bool]]:
  """The rendering's segments with the grounding text of every generated segment (a box's numbers
  `"bbox_2d": [<numbers>]`, and position words such as ` top-left`, with their leading space) cut out
  into their own segments, and a flag per segment: True on those. The cuts fall where the pre-tokeniser
  splits anyway (before a digit or a space-led word, after a digit or a word), so tokenising the pieces
  gives the same ids as tokenising the segment whole."""
  segs: list[P.Segment] = []
  flags: list[bool] = []
  for s in rendered.segments:
    if s.kind != "generated":
      segs.append(s)
      flags.append(False)
      continue
    pos = 0
    for m in _GROUNDING.finditer(s.text):
      a, b = m.span(1) if m.group(1) is not None else m.span(2)
      for piece, flag in ((s.text[pos:a], False), (s.text[a:b], True)):
        if piece:
          segs.append(P.Segment(piece, "generated"))
          flags.append(flag)
      pos = b
    if s.text[pos:]:
      segs.append(P.Segment(s.text[pos:], "generated"))
      flags.append(False)
  return segs, flags


def encode_example(rendered: P.Rendered, images: Sequence, encode: Callable[[str], Sequence[int]],
                   image_pad_id: int, budget: ImageBudget = ImageBudget(), box_weight: int = 1,
                   request_token_id: int | None = None) -> dict[str, np.ndarray]:
  """Preprocesses the images and tokenizes the rendering.

  Returns:
    `input_ids int32[T]`, `loss_mask int32[T]` (1 on generated tokens; `box_weight` on the grounding
    tokens of the generated text, see `split_grounding`), `pixel_values float32[P, 1176]`, `image_grid_thw int32[I, 3]`.
  """
  from zoomjax.processing import num_image_tokens, preprocess_image  # light, but keep import local
  if len(images) != rendered.num_images:
    raise TrajectoryError(f"the text has {rendered.num_images} image placeholders but {len(images)} images")
  pvs, grids = [], []
  for im in images:
    pv, g = preprocess_image(im, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels)
    pvs.append(pv)
    grids.append(np.asarray(g, np.int32))
  counts = [num_image_tokens(g) for g in grids]
  if box_weight == 1:
    ids, mask = P.encode_segments(rendered, encode, counts, image_pad_id)
  else:
    segs, flags = split_grounding(rendered)
    ids, mask = [], []
    k = 0
    for s, flag in zip(segs, flags):
      n_img = int(s.kind == "image")
      i, m = P.encode_segments([s], encode, counts[k:k + n_img], image_pad_id)
      k += n_img
      ids.extend(i)
      mask.extend([v * box_weight for v in m] if flag else m)
  if request_token_id is not None:  # the model asks for the crop by writing its <|vision_start|>
    for t in range(1, len(ids)):
      if ids[t] == request_token_id and mask[t - 1] > 0:
        mask[t] = 1
  return {"input_ids": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, np.int32),
          "pixel_values": (np.concatenate(pvs) if pvs else np.zeros((0, 1176), np.float32)).astype(np.float32),
          "image_grid_thw": np.stack(grids) if grids else np.zeros((0, 3), np.int32)}


class SftDataset:
  """Map-style SFT examples from LRS-GRO rows: `[i]` -> dict (see `encode_example`) + `question_id`.

  Args:
    source: an `LrsGroSource` (rows and the image store) or a sequence of Rows with `store` given.
    tokenizer: a transformers tokenizer or a `tokenizers.Tokenizer` (special ids are looked up in it).
    protocol: "released" or "multiturn".
    budget: image pixel budget (the embedded default uses `toy_earth.TOY_VIEW_PIXELS`).
    version: the protocol's template version (None: its default).
  """

  def __init__(self, source, tokenizer, protocol: str = "released", budget: ImageBudget = ImageBudget(),
               store: I.ImageStore | None = None, version: str | None = None, box_weight: int = 1):
    from zoomjax.data import tokenizer as T
    if protocol not in P.PROTOCOLS:
      raise TrajectoryError(f"protocol must be one of {P.PROTOCOLS}, got {protocol!r}")
    self.rows = list(source)
    self.store = store if store is not None else source.store
    self.protocol = protocol
    self.version = version
    self.box_weight = box_weight
    request = P.crop_request_token(protocol, version)
    self.request_id = T.token_id(tokenizer, request) if request is not None else None
    self.budget = budget
    self.encode = T.encoder(tokenizer)
    self.image_pad_id = T.token_id(tokenizer, P.IMAGE_PAD)

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> dict[str, Any]:
    row = self.rows[i]
    img = self.store.get(row.image_name)
    view, _ = self.store.global_view(row.image_name)
    ex = encode_example(render(row, img.width, img.height, self.protocol, self.version),
                        trajectory_images(row, img, self.protocol, view), self.encode, self.image_pad_id,
                        self.budget, self.box_weight, self.request_id)
    ex["question_id"] = row.question_id
    return ex
