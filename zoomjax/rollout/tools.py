"""Tool registry of the perception loop: a tool takes the scene image and JSON arguments, returns an image or text.

Interface (what a downstream tool implements; `zoomjax/tools/` holds those of later issues):

    class Denoise(Tool):
      name = "denoise"
      description = "Denoise a region of the full-resolution image."
      parameters = {"type": "object", "properties": {"bbox_2d": BBOX_2D_PARAM}, "required": ["bbox_2d"]}

      def apply(self, image: SceneImage, arguments: dict) -> PIL.Image.Image | str | ToolResult: ...

    registry = default_registry()          # holds crop_and_zoom
    registry.register(Denoise())
    out = registry.call("denoise", scene, {"bbox_2d": [10, 20, 200, 220]})   # -> ToolResult, never raises

`SceneImage` is what every tool sees: the full-resolution original (read by window through
`read_original`), the global view the model saw and the frame conversion between them. Boxes in arguments
are in the model's frame, i.e. global-view pixels (`SceneImage.box_to_original` maps them).
`Tool.schema()` gives the OpenAI-style function schema the multiturn prompt embeds (`registry.schemas()`).

`ToolRegistry.call` validates the arguments against the tool's `required` keys, runs `apply`, and turns a
`ToolArgumentError` (or an `ImageError`) into `ToolResult(error=…, text=…)`, so a bad call made by the
model becomes a text tool response instead of a crash.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Mapping

from PIL import Image

from zoomjax.data import images as zimages
from zoomjax.data import scene as zscene
from zoomjax.protocol.parse import box_from_arguments, sanitize_box
from zoomjax.protocol.templates import BBOX_2D_PARAM, CROP_AND_ZOOM_DESCRIPTION, CROP_TOOL



class ToolError(Exception):
  """A tool could not be run."""


class ToolArgumentError(ToolError, ValueError):
  """The arguments of a tool call are missing or invalid."""


class UnknownToolError(ToolError, KeyError):
  """No tool of that name is registered."""


@dataclasses.dataclass(frozen=True, eq=False)
class SceneImage:
  """The image a trajectory is about, in both frames, backed by a pixel source (`zoomjax.data.scene`).

      scene = SceneImage.open("scene.tif", max_pixels=..., bands=None)   # a path: read by window if a TIFF
      scene = SceneImage.from_original(pil_image)                        # an image in memory
      scene.original_size, scene.view, scene.view_size
      scene.read_original((x0, y0, x1, y1))                   # full-resolution pixels of a window
      scene.read_original(window, max_long_side=512)          # the window zoomed out (bounded read)
      scene.box_to_map(box_original)                          # ([x_min, y_min, x_max, y_max], "EPSG:…")

  Memory: a scene opened from a TIFF never decodes more than its view and the windows asked for; other
  files are decoded whole per read (`images.decoded_bytes`), refused above `max_pixels`.

  Attributes:
    original: the full-resolution RGB image when the scene was made from one in memory, else None (a
      file-backed scene): read pixels through `read_original`, never this attribute.
    view: the global view the model sees (long side `long_side`, only down-scaled); made from the source
      when not given.
    long_side: global-view long side (512).
    source: where the pixels come from (`PixelSource(original)` when not given).
  """

  original: Image.Image | None = None
  view: Image.Image | None = None
  long_side: int = zimages.GLOBAL_LONG_SIDE
  source: Any = None

  def __post_init__(self):
    if self.source is None:
      if self.original is None:
        raise ValueError("SceneImage needs an original image or a source")
      object.__setattr__(self, "source", zscene.PixelSource(self.original))
    if self.view is None:
      w, h = self.source.size
      object.__setattr__(self, "view", self.source.read((0, 0, w, h), max_long_side=self.long_side))

  @classmethod
  def from_original(cls, original: Image.Image, long_side: int = zimages.GLOBAL_LONG_SIDE) -> "SceneImage":
    return cls(original, zimages.global_view(original, long_side)[0], long_side)

  @classmethod
  def open(cls, path, *, long_side: int = zimages.GLOBAL_LONG_SIDE,
           max_pixels: int | None = zimages.DEFAULT_MAX_PIXELS, bands=None) -> "SceneImage":
    """A scene from an image file: TIFF / GeoTIFF read by window (rasterio), other formats by Pillow.

    Args:
      max_pixels: Pillow formats: the most pixels the image may have (it is decoded whole); TIFF: the
        most one full-resolution window read may hold (the scene may be larger).
      bands: TIFF: 1-based band indices, one (grey) or three (R, G, B); None = bands 1-3 (or 1).

    Raises:
      zoomjax.data.images.ImageError subclasses (missing, undecodable, too large); ValueError (bands).
    """
    return cls(None, None, long_side, zscene.open_source(path, max_pixels=max_pixels, bands=bands))

  @property
  def view_size(self) -> tuple[int, int]:
    return self.view.size

  @property
  def original_size(self) -> tuple[int, int]:
    return self.source.size

  @property
  def crs(self) -> str | None:
    """The map coordinate system (e.g. "EPSG:32633"), or None when the scene is not georeferenced."""
    return self.source.crs.to_string() if self.source.georeferenced else None

  def box_to_original(self, box_global) -> list[float]:
    """Global-view box -> original pixels (`boxes.global_to_original`)."""
    w, h = self.original_size
    return zimages.global_to_original(box_global, w, h, self.long_side)

  def box_to_map(self, box_original) -> tuple[list[float], str] | None:
    """Original-pixel box -> (`[x_min, y_min, x_max, y_max]` in map units, the CRS string) through the
    file's affine transform, or None when the scene is not georeferenced."""
    coords = self.source.map_box(box_original)
    return None if coords is None else (coords, self.source.crs.to_string())

  def read_original(self, window, max_long_side: int | None = None) -> Image.Image:
    """The pixels of `window` = (left, top, right, bottom) in original pixels (ints), as RGB.

    Full resolution by default; with `max_long_side`, down-scaled so the long side is at most that (the
    rule of `images.resize_long_side`), reading no more than needed (a decimated read of a GeoTIFF).

    Tools read the scene through this method (never `original` directly) so a scene that is read by
    window (a large GeoTIFF) only ever decodes the region asked for. A full-resolution window of a
    TIFF above `max_pixels` raises `ImageTooLargeError` (a tool call reports it as an error result)."""
    return self.source.read(window, max_long_side)


@dataclasses.dataclass
class ToolResult:
  """What a tool returned: an image (appended as a new image) or text, plus bookkeeping.

  Attributes:
    image: the returned image, or None.
    text: the returned text (or the error message), or None.
    error: why the call failed (None on success).
    info: tool-specific details for the trajectory (crop_and_zoom: `box_global`, `box_original`, `window`).
  """

  image: Image.Image | None = None
  text: str | None = None
  error: str | None = None
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def ok(self) -> bool:
    return self.error is None


class Tool(abc.ABC):
  """A tool the model can call. Subclasses set `name`, `description`, `parameters` and define `apply`."""

  name: ClassVar[str]
  description: ClassVar[str] = ""
  parameters: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {}}

  def schema(self) -> dict:
    """OpenAI-style function schema (what Qwen's `# Tools` block lists)."""
    return {"type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}}

  def validate(self, arguments: Any) -> dict:
    """Checks `arguments` is an object holding the schema's `required` keys; returns it as a dict."""
    if not isinstance(arguments, Mapping):
      raise ToolArgumentError(f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}")
    missing = [k for k in self.parameters.get("required", ()) if k not in arguments]
    if missing:
      raise ToolArgumentError(f"{self.name}: missing argument(s) {missing}")
    return dict(arguments)

  @abc.abstractmethod
  def apply(self, image: SceneImage, arguments: dict) -> "Image.Image | str | ToolResult":
    """Runs the tool on `image` with validated `arguments`."""


def bbox_argument(image: SceneImage, arguments: Mapping[str, Any]) -> list[float]:
  """The `bbox_2d` argument as a sanitized global-view box (parse rules: swap, clamp, no empty boxes)."""
  nums = box_from_arguments(dict(arguments))
  box = None if nums is None else sanitize_box(nums, image.view_size)
  if box is None:
    raise ToolArgumentError(f"bbox_2d must be 4 finite numbers [x_min, y_min, x_max, y_max] enclosing a "
                            f"non-empty part of the {image.view_size[0]}x{image.view_size[1]} view, got "
                            f"{repr(arguments.get('bbox_2d'))[:80]}")
  return box


class CropAndZoom(Tool):
  """Crops a region of the original and returns it zoomed (the released rule, SPEC §3).

  The global-view box is mapped to original pixels (`scale = max(W, H) / 512`), widened to a window of at
  least `min_size` (512) px a side shifted inside the image (`crop_window`), and the crop down-scaled so its
  long side is at most `max_long_side` (512).
  """

  name = CROP_TOOL
  description = CROP_AND_ZOOM_DESCRIPTION
  parameters = {"type": "object", "properties": {"bbox_2d": BBOX_2D_PARAM}, "required": ["bbox_2d"]}

  def __init__(self, min_size: int = zimages.MIN_CROP, max_long_side: int = zimages.GLOBAL_LONG_SIDE):
    self.min_size = int(min_size)
    self.max_long_side = int(max_long_side)

  def apply(self, image: SceneImage, arguments: dict) -> ToolResult:
    box_g = bbox_argument(image, arguments)
    box_o = image.box_to_original(box_g)
    w, h = image.original_size
    window = zimages.crop_window(box_o, w, h, self.min_size)
    crop = zimages.crop_and_zoom(image, box_o, self.min_size, self.max_long_side)
    return ToolResult(image=crop, info={"box_global": box_g, "box_original": box_o, "window": list(window)})


class ToolRegistry:
  """Tools by name. `call` never raises for a bad call by the model (unknown tool, bad arguments)."""

  def __init__(self, tools: "list[Tool] | tuple[Tool, ...]" = ()):
    self._tools: dict[str, Tool] = {}
    for t in tools:
      self.register(t)

  def register(self, tool: Tool, *, replace: bool = False) -> Tool:
    if not isinstance(tool, Tool):
      raise TypeError(f"expected a Tool, got {type(tool).__name__}")
    if tool.name in self._tools and not replace:
      raise ValueError(f"tool {tool.name!r} is already registered (pass replace=True)")
    self._tools[tool.name] = tool
    return tool

  def get(self, name: str) -> Tool:
    try:
      return self._tools[name]
    except KeyError:
      raise UnknownToolError(f"unknown tool {name!r}; registered: {sorted(self._tools)}") from None

  def __contains__(self, name: object) -> bool:
    return name in self._tools

  def names(self) -> list[str]:
    return list(self._tools)

  def schemas(self) -> list[dict]:
    return [t.schema() for t in self._tools.values()]

  def call(self, name: str, image: SceneImage, arguments: Any) -> ToolResult:
    """Runs tool `name`; model mistakes come back as `ToolResult(error=msg, text=msg)`."""
    try:
      tool = self.get(name)
      out = tool.apply(image, tool.validate(arguments))
    except (ToolError, zimages.ImageError) as e:
      msg = f"Error: {e}"
      return ToolResult(text=msg, error=str(e))
    if isinstance(out, ToolResult):
      return out
    if isinstance(out, Image.Image):
      return ToolResult(image=out)
    if isinstance(out, str):
      return ToolResult(text=out)
    raise TypeError(f"tool {name!r} returned {type(out).__name__}; expected a PIL image, str or ToolResult")


def default_registry() -> ToolRegistry:
  """A fresh registry holding `crop_and_zoom`."""
  return ToolRegistry([CropAndZoom()])
