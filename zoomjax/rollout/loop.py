"""The crop-and-zoom perception loop: global view -> generate -> crop request -> crop -> continue -> answer.

    trajs = rollout(Generator(cfg, params), tokenizer, [Request(original_pil, question), ...],
                    LoopConfig(protocol="released"), seed=0)

Per request (rows run batched, in lock step, in one `Session`):

1. The original image (full resolution, RGB) gives the global view (long side 512, `data.images`); the
   prompt of the protocol (`protocol.render_prompt`) is encoded with the view's image tokens and
   prefilled.
2. `released` (SPEC §3; one zoom, one assistant turn):
   stage 1 decodes until an end-of-turn token. As soon as the text holds `<answer>` after a parseable
   `"bbox_2d"` box, decoding of that row stops and the row is cut to the tokens before `<answer>` (what
   the release keeps: `output.split("<answer>")[0]`); a trailing end-of-turn token after a box is dropped
   too. With a box: the `crop_and_zoom` tool maps it to original pixels, cuts the >= 512 px window and
   zooms it to <= 512 px; the crop is appended in the same turn as
   `<|vision_start|><|image_pad|>…<|vision_end|>`; stage 2 decodes until end of turn. Without a box the
   stage-1 text is the whole answer.
3. `multiturn` (Qwen tool calls): each assistant turn decodes until end of turn. An `<answer>` ends the
   trajectory; otherwise the first `<tool_call>` runs through the tool registry (any registered tool; a
   malformed call gets an `Error: …` text response) and the result comes back as a
   `<tool_response>` user turn (an image, or text); at most `max_turns` tool calls.
4. Budgets: `max_new_tokens` per decoding step and `max_total_tokens` for the whole sequence. An image
   (or tool turn) that would not fit whole is not appended: the trajectory stops with "budget". The KV
   cache is sized for the longest sequence the budgets allow (prompt + every step's `max_new_tokens` +
   one `long_side`-square image and 256 tool-text tokens per zoom), capped at `max_total_tokens`, so
   decoding does not attend over slots no trajectory can reach. (A downstream tool returning an image
   larger than `long_side` may therefore stop a trajectory early with "budget".)
   The model never samples `<|image_pad|>` or `<|vision_end|>` (their logits are masked): image tokens
   come only with images, so a sampled trajectory always matches its images (its log-probs stay the model's).
5. Requests run in batches of `batch_size` rows (one session each; batch i samples with seed `seed + i`).
   `rollout(..., group_size=G)` (GRPO): requests hold each prompt G times in a row; batches hold whole
   groups, and each group's image, prompt encoding, vision tower and prefill are computed once and its KV
   rows copied into the G rows (`Session.append(..., group_size=G)`), which diverge from the first sampled
   token; the same seed gives the same trajectories as computing every row (`share_prefix=False`).
6. Host work runs in threads (`HOST_THREADS`): decoding a batch's scenes, and cutting and preprocessing
   a released step's crops (the rows' boxes are found first, then every zooming row's crop at once).
   Results keep row order, so the trajectories do not depend on the threads.

Masks: sampled tokens 1; prompt, appended images, tool-response text 0 (`Trajectory`). With a
`logits_processor` (see `generate.Sampling`) the decode can be biased, e.g. to force a known sequence.

`Request.image` may be a path (`SceneImage.open`: a TIFF / GeoTIFF is read by window, so memory is bounded by
the view and the crops; other formats are decoded with the pixel limit and the RGB rule of
`data.images.load_image`), a PIL image or a `SceneImage`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from zoomjax.data import images as zimages
from zoomjax.processing import preprocess_image, smart_resize
from zoomjax.protocol import parse
from zoomjax.protocol import templates as P
from zoomjax.rollout.generate import GREEDY, ImageInput, Sampling
from zoomjax.rollout.tools import SceneImage, ToolRegistry, ToolResult, default_registry
from zoomjax.rollout.trajectory import Trajectory


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Perception-loop settings.

  Attributes:
    protocol: "released" or "multiturn".
    version: the protocol's template version (None: its default; `protocol.templates.VERSIONS`). With
      `released-toy-v1`, stage 1 may also end by writing `<|vision_start|>` (the model asks for the crop).
    zoom: False is the zoom-off ablation (SPEC §8): every crop request is answered with the global view
      again, at the same image budget, so only the zoomed pixels differ.
    max_turns: multiturn: tool calls allowed (the released protocol zooms at most once).
    max_new_tokens: tokens one decoding step (stage / turn) may generate.
    max_total_tokens: whole-sequence budget (prompt, images, tool text and generation): the cache size.
    sampling: decoding rule (greedy by default).
    min_pixels / max_pixels: `preprocess_image` budget of every image (Qwen2.5-VL defaults).
    long_side: global-view long side; min_crop: the crop window's minimum side (original pixels).
    max_image_pixels: decompression-bomb limit when `Request.image` is a path.
    cut_chunk: decode chunk between host checks of the released stage-1 text.
    batch_size: rows decoded together (requests beyond it run in further batches).
  """

  protocol: str = "released"
  version: str | None = None
  zoom: bool = True
  max_turns: int = 1
  max_new_tokens: int = 1024
  max_total_tokens: int = 8192
  sampling: Sampling = GREEDY
  min_pixels: int = 3136
  max_pixels: int = 12845056
  long_side: int = zimages.GLOBAL_LONG_SIDE
  min_crop: int = zimages.MIN_CROP
  max_image_pixels: int | None = zimages.DEFAULT_MAX_PIXELS
  cut_chunk: int = 32
  batch_size: int = 16

  def __post_init__(self):
    if self.protocol not in P.PROTOCOLS:
      raise ValueError(f"protocol must be one of {P.PROTOCOLS}, got {self.protocol!r}")
    P.resolve_version(self.protocol, self.version)
    if self.max_turns < 0 or self.max_new_tokens <= 0 or self.max_total_tokens <= 0 or self.batch_size <= 0:
      raise ValueError(f"max_turns >= 0, max_new_tokens > 0, max_total_tokens > 0 and batch_size > 0 required, "
                       f"got {self.max_turns}, {self.max_new_tokens}, {self.max_total_tokens}, {self.batch_size}")


@dataclasses.dataclass
class Request:
  """One question about one image (a path, a PIL image in any mode, converted to RGB, or a SceneImage)."""

  image: Any
  question: str


class TextCodec:
  """encode / decode / token ids for a transformers tokenizer or a `tokenizers.Tokenizer`."""

  def __init__(self, tokenizer):
    from zoomjax.data.tokenizer import encoder, token_id
    self.tok = tokenizer
    self.encode: Callable[[str], list[int]] = encoder(tokenizer)
    self._token_id = lambda s: token_id(tokenizer, s)

  def decode(self, ids: Sequence[int]) -> str:
    return self.tok.decode(list(map(int, ids)), skip_special_tokens=False)

  def token_id(self, token: str) -> int:
    return self._token_id(token)


def _scene(req: Request, cfg: LoopConfig) -> SceneImage:
  img = req.image
  if isinstance(img, SceneImage):
    return img
  if isinstance(img, (str, os.PathLike)):   # TIFF: read by window; other formats: decoded by Pillow
    return SceneImage.open(img, long_side=cfg.long_side, max_pixels=cfg.max_image_pixels)
  if isinstance(img, Image.Image):
    img = zimages.to_rgb(img) if img.mode != "RGB" else img
  else:
    raise TypeError(f"Request.image must be a path, a PIL image or a SceneImage, got {type(img).__name__}")
  return SceneImage.from_original(img, cfg.long_side)


HOST_THREADS = 4
"""Host jobs a batch runs at once: decoding scenes, cutting and preprocessing crops (Pillow and NumPy
release the GIL while they decode, resize and normalise)."""


def _in_threads(fn: Callable, items: Sequence) -> list:
  """`[fn(x) for x in items]` in up to `HOST_THREADS` threads; the first failure (in item order) is raised."""
  workers = min(len(items), HOST_THREADS, os.cpu_count() or 1)
  if workers <= 1:
    return [fn(x) for x in items]
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoomjax-host") as pool:
    futures = [pool.submit(fn, x) for x in items]
    return [f.result() for f in futures]


def _open_scenes(requests: Sequence[Request], cfg: LoopConfig) -> list[SceneImage]:
  """`_scene` of each request, in threads."""
  return _in_threads(lambda r: _scene(r, cfg), requests)


def _model_image(pil: Image.Image, cfg: LoopConfig) -> ImageInput:
  pv, grid = preprocess_image(pil, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
  return ImageInput(np.asarray(pv, np.float32), np.asarray(grid, np.int64))


class _Row:
  """Host state of one trajectory while it runs."""

  def __init__(self, req: Request, scene: SceneImage):
    self.req, self.scene = req, scene
    self.ids: list[int] = []
    self.mask: list[int] = []
    self.logprobs: list[float] = []
    self.images: list[ImageInput] = []
    self.boxes_g: list = []
    self.boxes_o: list = []
    self.windows: list = []
    self.crops: list = []
    self.steps: list[str] = []
    self.tool_results: list[ToolResult] = []
    self.calls = 0
    self.stage = 1
    self.done = False
    self.stop = "no_answer"
    self.answer: str | None = None

  def add(self, ids: Sequence[int], mask: Sequence[int], lps: Sequence[float] | None = None):
    self.ids.extend(int(i) for i in ids)
    self.mask.extend(int(m) for m in mask)
    self.logprobs.extend([0.0] * len(ids) if lps is None else [float(v) for v in lps])

  def drop_last(self, n: int):
    if n > 0:
      del self.ids[-n:], self.mask[-n:], self.logprobs[-n:]

  def finish(self, reason: str):
    self.done, self.stop = True, reason


def _cut_before(codec: TextCodec, toks: Sequence[int], char_index: int) -> int:
  """Largest k with len(decode(toks[:k])) <= char_index (binary search; prefixes decode to prefixes)."""
  lo, hi = 0, len(toks)
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if len(codec.decode(toks[:mid])) <= char_index:
      lo = mid
    else:
      hi = mid - 1
  return lo


def rollout(generator, tokenizer, requests: Sequence[Request], config: LoopConfig = LoopConfig(), *,
            registry: ToolRegistry | None = None, seed: int = 0,
            logits_processor: Callable | None = None, group_size: int = 1,
            share_prefix: bool = True) -> list[Trajectory]:
  """Runs the perception loop for a batch of requests (module docstring); one `Trajectory` each.

  Args:
    generator: a `generate.Generator` (or anything with the same `session(...)` API).
    tokenizer: the model's tokenizer (transformers or `tokenizers.Tokenizer`).
    requests: images and questions.
    config: `LoopConfig`.
    registry: tools (default: `crop_and_zoom` only). The released protocol always uses `crop_and_zoom`.
    seed: sampling seed of the session.
    logits_processor: optional `(logits, lengths) -> logits` applied before sampling.
    group_size: G, the samples per prompt of a GRPO group: `requests` holds each prompt G times in a row
      (the same image object or path, and question). A batch then holds whole groups
      (`max(G, batch_size // G * G)` rows) and, with `share_prefix`, each group's image is decoded and
      preprocessed once and its prompt (vision tower + prefill) computed once and copied into its G rows
      (`Session.append(..., group_size=G)`); the rows diverge from the first sampled token on.
      `share_prefix=False` computes every row (same batches, same seeds: the same trajectories).
  Raises:
    zoomjax.data.images.ImageError: an image cannot be used (missing, corrupt, above the pixel limit).
    ValueError: `len(requests)` is not a multiple of `group_size`, or a group's requests differ.
  """
  g = int(group_size)
  if g < 1 or len(requests) % g:
    raise ValueError(f"group_size must be >= 1 and divide the {len(requests)} requests, got {group_size}")
  for i in range(0, len(requests), g):
    lead = requests[i]
    for k in range(i + 1, i + g):
      r = requests[k]
      if r.question != lead.question or not (r.image is lead.image or (
          isinstance(r.image, (str, os.PathLike)) and isinstance(lead.image, (str, os.PathLike))
          and os.fspath(r.image) == os.fspath(lead.image))):
        raise ValueError(f"group_size {g}: request {k} differs from request {i}, the first of its group")
  per_batch = max(g, config.batch_size // g * g)
  out: list[Trajectory] = []
  for i in range(0, len(requests), per_batch):
    out.extend(_rollout_batch(generator, tokenizer, requests[i:i + per_batch], config,
                              registry or default_registry(), seed + i // per_batch, logits_processor,
                              g if share_prefix else 1))
  return out


def _rollout_batch(generator, tokenizer, requests, config, registry, seed, logits_processor, group=1):
  """One session over `requests`; with `group` > 1 each run of `group` rows shares its prompt's prefill."""
  cfg = config
  codec = TextCodec(tokenizer)
  pad_id = codec.token_id(P.IMAGE_PAD)
  stop_ids = tuple(codec.token_id(t) for t in P.END_OF_TURN_TOKENS)
  request = P.crop_request_token(cfg.protocol, cfg.version)
  if request is not None:   # stage 1 may end by asking for the crop
    stop_ids += (codec.token_id(request),)
  im_end = codec.token_id(P.IM_END)
  banned = (pad_id, codec.token_id(P.VISION_END))  # image tokens the model may not write: only images do
  scenes = _open_scenes(requests[::group], cfg)   # a group's rows share one scene (decoded once)
  rows = [_Row(r, scenes[i // group]) for i, r in enumerate(requests)]

  def encode(segments: Sequence[P.Segment], images: Sequence[ImageInput]):
    counts = [im.num_tokens(generator.cfg) for im in images]
    return P.encode_segments(segments, codec.encode, counts, pad_id)

  # ---- prompt
  new_tok, new_img = [], []
  for i, r in enumerate(rows):
    if i % group:                    # the group's prompt, encoded once
      r.add(new_tok[-1], rows[i - 1].mask)
      r.images.append(new_img[-1][0])
      new_tok.append(new_tok[-1])
      new_img.append(new_img[-1])
      continue
    view = _model_image(r.scene.view, cfg)
    tools = registry.schemas() if cfg.protocol == "multiturn" else None
    prompt = P.render_prompt(r.req.question, cfg.protocol, tools=tools, max_turns=cfg.max_turns,
                             version=cfg.version)
    ids, mask = encode(prompt.segments, [view])
    if len(ids) + 1 > cfg.max_total_tokens:
      raise ValueError(f"the prompt takes {len(ids)} tokens, more than max_total_tokens={cfg.max_total_tokens}")
    r.add(ids, mask)
    r.images.append(view)
    new_tok.append(ids)
    new_img.append([view])
  prompt_lens = [len(r.ids) for r in rows]
  steps = 2 if cfg.protocol == "released" else cfg.max_turns + 1
  side = cfg.long_side
  img_bound = int(np.prod(smart_resize(side, side, 28, cfg.min_pixels, cfg.max_pixels))) // (28 * 28)
  need = max(prompt_lens) + steps * cfg.max_new_tokens + (steps - 1) * (img_bound + 256)
  sess = generator.session(len(rows), min(cfg.max_total_tokens, need), seed=seed)
  sess.append(new_tok, new_img, group_size=group)

  def stage1_cut(b: int, toks: list[int]) -> int | None:
    """Released stage 1: stop at `<answer>` once a box precedes it; keep the tokens before it."""
    text = codec.decode(toks)
    i = text.find(P.ANSWER_START)
    if i < 0 or parse.parse_crop_request(text[:i], "released", rows[b].scene.view_size) is None:
      return None
    return _cut_before(codec, toks, i)

  while True:
    live = [b for b, r in enumerate(rows) if not r.done]
    if not live:
      break
    stop_fn = None
    if cfg.protocol == "released" and any(rows[b].stage == 1 for b in live):
      stop_fn = lambda b, toks: stage1_cut(b, toks) if rows[b].stage == 1 else None  # noqa: E731
    budgets = [cfg.max_new_tokens] * len(rows)
    gens = sess.generate(budgets, cfg.sampling, stop_token_ids=stop_ids, rows=live, stop_fn=stop_fn,
                         chunk=cfg.cut_chunk, logits_processor=logits_processor, banned_token_ids=banned)
    new_tok = [[] for _ in rows]
    new_img = [[] for _ in rows]
    texts = {b: codec.decode(gens[b].tokens) for b in live}
    if cfg.protocol == "released":   # the crops of this step's zooms, cut and preprocessed in threads
      boxes = {b: _stage1_box(rows[b], gens[b], texts[b]) for b in live}
      asked = [b for b in live if boxes[b] is not None]
      zooms = dict(zip(asked, _in_threads(lambda b: _zoom(rows[b].scene, boxes[b], cfg, registry), asked)))
    for b in live:
      r, g = rows[b], gens[b]
      r.add(g.tokens, [1] * len(g.tokens), g.logprobs)
      text = texts[b]
      if cfg.protocol == "released":
        step = _released_step(r, g, text, boxes[b], zooms.get(b), sess, b, stop_ids, encode)
      else:
        step = _multiturn_step(r, g, text, cfg, registry, sess, b, im_end, encode)
      r.steps.append(text)
      if step is not None:
        new_tok[b], new_img[b] = step
    if any(new_tok):
      sess.append(new_tok, new_img)

  out = []
  for r, plen in zip(rows, prompt_lens):
    out.append(Trajectory(
        protocol=cfg.protocol, question=r.req.question, token_ids=np.asarray(r.ids, np.int32),
        loss_mask=np.asarray(r.mask, np.int32), logprobs=np.asarray(r.logprobs, np.float32), prompt_len=plen,
        images=r.images, boxes_global=r.boxes_g, boxes_original=r.boxes_o, windows=r.windows, crops=r.crops,
        steps=r.steps, answer=r.answer, stop_reason=r.stop, tool_results=r.tool_results,
        info={"original_size": r.scene.original_size, "view_size": r.scene.view_size}))
  return out


def _fits(sess, b: int, ids: Sequence[int]) -> bool:
  return sess.room(b) >= len(ids) + 1


def _stage1_box(r: _Row, g, text: str):
  """The global-view box a released stage 1 asks to zoom into (a parseable box before `<answer>` or the
  end of the turn), or None: stage 2, a budget stop, or no box (the stage-1 text is the whole answer)."""
  if r.stage == 2 or g.finish not in ("cut", "stop"):
    return None
  return parse.parse_crop_request(parse.released_stage1(text), "released", r.scene.view_size)


def _zoom(scene: SceneImage, box, cfg: LoopConfig, registry: ToolRegistry) -> tuple[ToolResult, ImageInput | None]:
  """`crop_and_zoom` of a global-view box, and the model input the row then sees: the crop, or the global
  view again with `zoom` off (None when the tool failed). Runs in a host thread (`_in_threads`)."""
  res = registry.call("crop_and_zoom", scene, {"bbox_2d": box})
  if not res.ok or res.image is None:
    return res, None
  return res, _model_image(res.image if cfg.zoom else scene.view, cfg)


def _released_step(r: _Row, g, text: str, box, zoom, sess, b: int, stop_ids, encode):
  """After a released-protocol decoding step: finish the row, or return (tokens, images) to append.
  `box`: `_stage1_box(r, g, text)`; `zoom`: `_zoom` of it (None without a box)."""
  if r.stage == 2 or g.finish not in ("cut", "stop"):
    r.answer = parse.extract_answer(text)
    r.finish("answer" if r.answer is not None else ("budget" if g.finish == "length" else "no_answer"))
    return None
  if box is None:  # stage 1 ended its turn without a crop request: that was the whole answer
    r.answer = parse.extract_answer(text)
    r.finish("answer" if r.answer is not None else "no_answer")
    return None
  if g.finish == "stop":  # a box, then end of turn without <answer>: drop the end token, zoom anyway
    n = 1 if g.tokens and g.tokens[-1] in stop_ids else 0
    sess.rollback(b, sess.length(b) - n)
    r.drop_last(n)
  res, crop_in = zoom
  if crop_in is None:
    r.finish("no_answer")
    return None
  ids, mask = encode(P.released_crop_segments(), [crop_in])
  if not _fits(sess, b, ids):
    r.finish("budget")
    return None
  _record_crop(r, res)
  r.add(ids, mask)
  r.images.append(crop_in)
  r.stage = 2
  return ids, [crop_in]


def _record_crop(r: _Row, res: ToolResult):
  r.boxes_g.append(res.info.get("box_global"))
  r.boxes_o.append(res.info.get("box_original"))
  r.windows.append(res.info.get("window"))
  r.crops.append(res.image)


def _multiturn_step(r: _Row, g, text: str, cfg: LoopConfig, registry: ToolRegistry, sess, b: int, im_end: int,
                    encode):
  """After a multiturn assistant turn: finish the row, or return the tool-response turn to append."""
  answer = parse.extract_answer(text)
  if answer is not None:
    r.answer = answer
    r.finish("answer")
    return None
  if g.finish == "length":
    r.finish("budget")
    return None
  calls = parse.parse_tool_calls(text)
  call = calls[0] if calls else None
  if call is None:
    box = parse.parse_crop_request(text, "multiturn")
    if box is not None:
      call = parse.ToolCall(parse.CROP_TOOL, {"bbox_2d": box})
  if call is None and P.TOOL_CALL_START not in text:
    r.finish("no_answer")
    return None
  if r.calls >= cfg.max_turns:
    r.finish("max_turns")
    return None
  r.calls += 1
  if call is None:
    res = ToolResult(text="Error: the tool call is not valid JSON of the form "
                          '{"name": ..., "arguments": {...}}', error="unparseable tool call")
  else:
    res = registry.call(call.name, r.scene, call.arguments)
  r.tool_results.append(res)
  parts: list = []
  images: list[ImageInput] = []
  if res.image is not None:
    ablated = call is not None and call.name == parse.CROP_TOOL and not cfg.zoom
    img_in = _model_image(r.scene.view if ablated else res.image, cfg)
    parts.append(P.IMAGE)
    images.append(img_in)
  if res.text:
    parts.append(res.text)
  segs = list(P.tool_response_segments(parts))
  if not g.tokens or g.tokens[-1] != im_end:  # the turn ended on another end token: close it properly
    segs.insert(0, P.Segment(P.IM_END, "tool"))
  ids, mask = encode(segs, images)
  if not _fits(sess, b, ids):
    r.finish("budget")
    return None
  if call is not None and call.name == parse.CROP_TOOL and res.ok:
    _record_crop(r, res)
  r.add(ids, mask)
  r.images.extend(images)
  return ids, images
