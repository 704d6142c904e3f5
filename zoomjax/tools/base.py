"""Region tools: the requested box of the original at full resolution -> processed pixels, a mask or text.

A `RegionTool` maps the model's `bbox_2d` (global-view pixels) to original pixels with NO 512-px expansion
(`box_window`), reads exactly that window through `SceneImage.read_original`, hands the pixels to
`process`, and assembles the `ToolResult` (SPEC §8):

  res.image            the processed region as the model sees it (long side <= `display_long_side`)
  res.text             one-line summary
  res.info["edited"]   tools that change pixels: a full-resolution copy of the original, only the box changed
                       (`info["region"]`: the processed box alone; a scene too large to read whole gets
                       `info["edited_error"]` instead of `edited`)
  res.info["mask"]     tools that return a mask: bool[H, W] (original size), False outside the box
  res.info["box_global"], ["box_original"], ["window"]   the box in both frames and the integer window read

Bad arguments and numerical failures become `ToolArgumentError` / `ToolError`, which
`ToolRegistry.call` turns into `res.ok == False` with `res.error`; nothing reaches the caller as an
exception.

`FunctionTool` wraps a plain Python callable (a user's model) as a region tool.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from zoomjax.data import images as zimages
from zoomjax.protocol.templates import BBOX_2D_PARAM
from zoomjax.rollout.tools import SceneImage, Tool, ToolArgumentError, ToolError, ToolResult, bbox_argument

log = logging.getLogger(__name__)

DEFAULT_MAX_REGION_PIXELS = 4096 * 4096
"""Largest box (original pixels) a region tool processes; a larger request gets an error result asking for
a smaller box (bounds memory and time per call whatever the scene size)."""

# Errors the numerical libraries raise on degenerate input; a region tool reports them as a tool error.
NUMERIC_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError)


def box_window(scene: SceneImage, box_global: Sequence[float]) -> tuple[int, int, int, int]:
  """Global-view box -> the integer window `(left, top, right, bottom)` of original pixels it covers.

  The box is scaled by `max(W, H) / long_side` (SPEC §3), then floored / ceiled to whole pixels and clamped
  to the image; at least one pixel a side. No 512-px minimum: the tool acts on the box asked for.
  """
  w, h = scene.original_size
  x1, y1, x2, y2 = scene.box_to_original(box_global)
  l, t = max(0, min(w - 1, math.floor(x1))), max(0, min(h - 1, math.floor(y1)))
  r, b = min(w, max(l + 1, math.ceil(x2))), min(h, max(t + 1, math.ceil(y2)))
  return l, t, r, b


def to_float(region: Image.Image) -> np.ndarray:
  """RGB PIL image -> float64[h, w, 3] in [0, 1]."""
  return np.asarray(region.convert("RGB"), np.float64) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
  """float[h, w, 3] in [0, 1] (clipped) -> uint8[h, w, 3]."""
  return np.clip(np.rint(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


def option(arguments: Mapping[str, Any], key: str, default: Any, *, choices: Sequence[str] | None = None,
           low: float | None = None, high: float | None = None) -> Any:
  """An optional tool argument: one of `choices` (a string), or a finite number in [low, high]."""
  if key not in arguments or arguments[key] is None:
    return default
  v = arguments[key]
  if choices is not None:
    if not isinstance(v, str) or v.strip().lower() not in choices:
      raise ToolArgumentError(f"{key} must be one of {list(choices)}, got {repr(v)[:40]}")
    return v.strip().lower()
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
    raise ToolArgumentError(f"{key} must be a finite number, got {repr(v)[:40]}")
  v = float(v)
  if (low is not None and v < low) or (high is not None and v > high):
    raise ToolArgumentError(f"{key} must be in [{low}, {high}], got {v}")
  return v


@dataclasses.dataclass
class RegionOutput:
  """What `RegionTool.process` returns (all optional).

  Attributes:
    pixels: uint8[h, w, 3], the processed box (same size as the window): pasted into `edited`.
    mask: bool[h, w] over the window: placed into a bool[H, W] `mask`.
    display: the image to return to the model (default: `pixels`, else the region); down-scaled to
      `display_long_side`.
    summary: the one-line `res.text`.
    info: extra `res.info` entries.
  """

  pixels: np.ndarray | None = None
  mask: np.ndarray | None = None
  display: Image.Image | None = None
  summary: str = ""
  info: dict = dataclasses.field(default_factory=dict)


class RegionTool(Tool):
  """A tool that acts on the requested box at full resolution (module docstring).

  Subclasses set `name`, `description`, `options` (extra JSON-schema properties) and define `process`.

  Args:
    max_region_pixels: largest window (original pixels) processed; larger -> error result.
    display_long_side: long side bound of `res.image` (512, the crop the model sees).
    full_copy: whether pixel-changing tools return `info["edited"]` (a full-resolution copy of the scene;
      turn it off for very large scenes when only the region is wanted).
  """

  options: Mapping[str, Any] = {}
  required_options: tuple[str, ...] = ()
  min_side = 1   # smallest window side (original pixels) the method works on

  def __init__(self, max_region_pixels: int = DEFAULT_MAX_REGION_PIXELS,
               display_long_side: int = zimages.GLOBAL_LONG_SIDE, full_copy: bool = True):
    self.max_region_pixels = int(max_region_pixels)
    self.display_long_side = int(display_long_side)
    self.full_copy = bool(full_copy)

  @property
  def parameters(self) -> dict:  # type: ignore[override]
    return {"type": "object", "properties": {"bbox_2d": BBOX_2D_PARAM, **self.options},
            "required": ["bbox_2d", *self.required_options]}

  def process(self, scene: SceneImage, region: Image.Image, window: tuple[int, int, int, int],
              arguments: dict) -> RegionOutput:
    """Runs the method on `region` (the RGB pixels of `window`) -> `RegionOutput`."""
    raise NotImplementedError

  def apply(self, scene: SceneImage, arguments: dict) -> ToolResult:
    box_g = bbox_argument(scene, arguments)
    window = box_window(scene, box_g)
    l, t, r, b = window
    if (r - l) * (b - t) > self.max_region_pixels:
      raise ToolArgumentError(f"the box covers {r - l}x{b - t} original pixels, more than {self.name} "
                              f"processes ({self.max_region_pixels} px); ask for a smaller box")
    if min(r - l, b - t) < self.min_side:
      raise ToolArgumentError(f"the box covers {r - l}x{b - t} original pixels; {self.name} needs at least "
                              f"{self.min_side} px a side")
    region = scene.read_original(window).convert("RGB")
    try:
      out = self.process(scene, region, window, arguments)
    except NUMERIC_ERRORS as e:
      raise ToolError(f"{self.name} failed on the {r - l}x{b - t} px box: {e}") from e
    return self.result(scene, region, window, box_g, out)

  def result(self, scene: SceneImage, region: Image.Image, window: tuple[int, int, int, int],
             box_g: Sequence[float], out: RegionOutput) -> ToolResult:
    """Assembles the `ToolResult` of a `RegionOutput` (module docstring)."""
    l, t, r, b = window
    info = {"box_global": list(box_g), "box_original": scene.box_to_original(box_g), "window": list(window),
            **out.info}
    display = out.display
    if out.pixels is not None:
      px = np.asarray(out.pixels)
      if px.shape != (b - t, r - l, 3) or px.dtype != np.uint8:
        raise ToolError(f"{self.name} returned pixels {px.dtype}{list(px.shape)}; expected "
                        f"uint8[{b - t}, {r - l}, 3]")
      patch = Image.fromarray(px, "RGB")
      display = display or patch
      info["region"] = patch
      if self.full_copy:
        w, h = scene.original_size
        try:
          edited = scene.read_original((0, 0, w, h)).convert("RGB").copy()
        except zimages.ImageError as e:   # a scene too large to hold whole: the region is the result
          info["edited_error"] = str(e)
        else:
          edited.paste(patch, (l, t))
          info["edited"] = edited
    if out.mask is not None:
      m = np.asarray(out.mask, bool)
      if m.shape != (b - t, r - l):
        raise ToolError(f"{self.name} returned a mask of shape {list(m.shape)}; expected [{b - t}, {r - l}]")
      w, h = scene.original_size
      full = np.zeros((h, w), bool)
      full[t:b, l:r] = m
      info["mask"] = full
    display = zimages.resize_long_side((display or region).convert("RGB"), self.display_long_side)[0]
    return ToolResult(image=display, text=out.summary or f"{self.name}: done", info=info)


def overlay(region: Image.Image, mask: np.ndarray, color=(255, 0, 255), alpha: float = 0.5) -> Image.Image:
  """The region with `mask` (bool[h, w]) tinted by `color`: how a mask is shown to the model."""
  a = np.asarray(region.convert("RGB"), np.float64)
  m = np.asarray(mask, bool)[..., None]
  out = np.where(m, (1 - alpha) * a + alpha * np.asarray(color, np.float64), a)
  return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


class FunctionTool(RegionTool):
  """A Python callable as a region tool: the plug-in path for a user's own model.

      def my_model(region: PIL.Image.Image, arguments: dict):   # region = the box's full-res RGB pixels
        return edited_region                                    # or a str, or bool[h, w] mask, or ToolResult

      registry.register(FunctionTool("super_resolution", my_model, description="…"))

  What the callable returns decides the result: a PIL image (or uint8[h, w, 3]) of the region's size
  -> processed pixels (`info["edited"]`, `res.image`); a PIL image of another size -> `res.image` only;
  a bool[h, w] array -> a mask (`info["mask"]`, shown as an overlay); a str -> `res.text`; a `ToolResult`
  -> returned as it is (box info added). An exception raised by the callable is logged and becomes an
  error result, so a failing plug-in cannot end a rollout.

  Args:
    name: the tool name the model calls.
    fn: `(region, arguments) -> …` as above.
    description: what the prompt tells the model.
    options: extra JSON-schema properties of the arguments (besides `bbox_2d`).
    required: which of `options` are required.
    **kwargs: `RegionTool` settings.
  """

  def __init__(self, name: str, fn: Callable[[Image.Image, dict], Any], *, description: str = "",
               options: Mapping[str, Any] | None = None, required: Sequence[str] = (), **kwargs):
    super().__init__(**kwargs)
    if not isinstance(name, str) or not name.strip():
      raise ValueError(f"a tool name must be a non-empty string, got {name!r}")
    if not callable(fn):
      raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    self.name = name.strip()
    self.fn = fn
    self.description = description or (getattr(fn, "__doc__", None) or "").strip().split("\n")[0]
    self.options = dict(options or {})
    self.required_options = tuple(required)

  def process(self, scene, region, window, arguments):
    try:
      out = self.fn(region.copy(), dict(arguments))
    except Exception as e:  # noqa: BLE001 -- the plug-in boundary: a user's model must not end a rollout
      log.exception("tool %s raised", self.name)
      raise ToolError(f"{self.name} raised {type(e).__name__}: {e}") from e
    h, w = region.height, region.width
    if isinstance(out, ToolResult):
      return out
    if isinstance(out, str):
      return RegionOutput(summary=out)
    if isinstance(out, Image.Image):
      if out.size == (w, h):
        return RegionOutput(pixels=np.asarray(out.convert("RGB"), np.uint8), summary=f"{self.name}: done")
      return RegionOutput(display=out, summary=f"{self.name}: done")
    if isinstance(out, np.ndarray):
      if out.dtype == bool and out.shape == (h, w):
        return RegionOutput(mask=out, display=overlay(region, out),
                            summary=f"{self.name}: {int(out.sum())} of {w * h} px marked")
      if out.dtype == np.uint8 and out.shape == (h, w, 3):
        return RegionOutput(pixels=out, summary=f"{self.name}: done")
    raise ToolError(f"{self.name} returned {type(out).__name__}"
                    f"{getattr(out, 'shape', '')}; expected a PIL image, uint8[{h}, {w}, 3], bool[{h}, {w}], "
                    "a str or a ToolResult")

  def result(self, scene, region, window, box_g, out):
    if isinstance(out, ToolResult):
      out.info.setdefault("box_global", list(box_g))
      out.info.setdefault("box_original", scene.box_to_original(box_g))
      out.info.setdefault("window", list(window))
      return out
    return super().result(scene, region, window, box_g, out)
