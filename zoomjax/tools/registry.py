"""`downstream_registry()`: crop_and_zoom plus the downstream tools, plug-ins from the `zoomjax.tools`
entry-point group, and `run_on_box` (what `python -m zoomjax.infer --tools` runs)."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any, Iterable, Mapping, Sequence

from PIL import Image

from zoomjax.data import images as zimages
from zoomjax.rollout.tools import CropAndZoom, SceneImage, Tool, ToolError, ToolRegistry
from zoomjax.tools.base import box_window
from zoomjax.tools.downstream import CloudRemoval, Denoising, ImageEditing, Segmentation

ENTRY_POINT_GROUP = "zoomjax.tools"
DOWNSTREAM_TOOLS = ("cloud_removal", "denoising", "segmentation", "image_editing")
DEFAULT_ARGUMENTS: Mapping[str, Mapping[str, Any]] = {"image_editing": {"operation": "remove"}}


class PluginError(ToolError):
  """An entry point of the `zoomjax.tools` group cannot be loaded or does not give tools."""


def _as_tools(obj: Any, where: str) -> list[Tool]:
  """A Tool, a Tool subclass (instantiated without arguments), or a factory returning Tool(s) -> tools."""
  if isinstance(obj, type) and issubclass(obj, Tool):
    obj = obj()
  elif not isinstance(obj, Tool) and callable(obj):
    obj = obj()
  items = [obj] if isinstance(obj, Tool) else (list(obj) if isinstance(obj, (list, tuple)) else None)
  if not items or not all(isinstance(t, Tool) for t in items):
    raise PluginError(f"{where} must give a Tool, a Tool subclass, or a callable returning Tool(s); got "
                      f"{type(obj).__name__}")
  return items


def entry_point_tools(group: str = ENTRY_POINT_GROUP) -> list[Tool]:
  """The tools that installed packages register under the entry-point group `group`.

  Raises:
    PluginError: an entry point fails to import or gives something that is not a tool.
  """
  tools: list[Tool] = []
  for ep in importlib.metadata.entry_points(group=group):
    where = f"entry point {ep.name!r} ({ep.value}) of group {group!r}"
    try:
      obj = ep.load()
    except (ImportError, AttributeError) as e:
      raise PluginError(f"cannot load {where}: {e}") from e
    tools.extend(_as_tools(obj, where))
  return tools


def downstream_registry(load_entry_points: bool = False, *, tools: Iterable[Tool] = (),
                        full_copy: bool = True) -> ToolRegistry:
  """A fresh registry: `crop_and_zoom`, `cloud_removal`, `denoising`, `segmentation`, `image_editing`,
  then `tools`, then (with `load_entry_points`) the tools of the `zoomjax.tools` entry-point group.

  Args:
    load_entry_points: also register the plug-ins installed packages declare (`entry_point_tools`).
    tools: extra tools (e.g. `FunctionTool`s wrapping your own models).
    full_copy: whether pixel-changing tools return `info["edited"]` (a full-resolution copy of the scene;
      pass False in rollouts, where every call's result stays in the trajectory).
  Raises:
    PluginError: a plug-in cannot be loaded; ValueError: two tools share a name.
  """
  reg = ToolRegistry([CropAndZoom(), CloudRemoval(full_copy=full_copy), Denoising(full_copy=full_copy),
                      Segmentation(), ImageEditing(full_copy=full_copy)])
  for t in tools:
    reg.register(t)
  if load_entry_points:
    for t in entry_point_tools():
      reg.register(t)
  return reg


def select_tools(spec: str, *, load_entry_points: bool = True) -> tuple[ToolRegistry, list[str]]:
  """`"denoising,segmentation"` (the `--tools` flag) -> (the registry, with plug-ins, and the names in order).

  Raises:
    ValueError: an empty list or an unknown name (the message lists the registered tools);
    PluginError: a plug-in cannot be loaded.
  """
  reg = downstream_registry(load_entry_points=load_entry_points)
  names = [n.strip() for n in str(spec).split(",") if n.strip()]
  if not names:
    raise ValueError(f"name at least one tool; registered: {', '.join(reg.names())}")
  unknown = [n for n in names if n not in reg]
  if unknown:
    raise ValueError(f"unknown tool(s) {', '.join(unknown)}; registered: {', '.join(reg.names())}")
  return reg, list(dict.fromkeys(names))


def region_view(scene: SceneImage, box_global: Sequence[float], long_side: int = zimages.GLOBAL_LONG_SIDE):
  """The requested box of the original (no expansion), down-scaled to `long_side`: the 'before' picture."""
  return zimages.resize_long_side(scene.read_original(box_window(scene, box_global)).convert("RGB"),
                                  long_side)[0]


def run_on_box(registry: ToolRegistry, names: Sequence[str], scene: SceneImage, box_global: Sequence[float],
               out_dir: str | os.PathLike, stem: str = "",
               arguments: Mapping[str, Mapping[str, Any]] = DEFAULT_ARGUMENTS) -> list[dict]:
  """Runs each tool in `names` on the box; writes `{stem}{name}_before.png` and `_after.png` to `out_dir`.

  `arguments[name]` adds arguments besides `bbox_2d` (default: image_editing's operation "remove").

  Returns one dict per tool: `name, ok, text, error, before, after` (paths; `after` is None when the
  tool failed or returned no image).
  """
  os.makedirs(out_dir, exist_ok=True)
  before_img: Image.Image | None = None
  rows = []
  for name in names:
    res = registry.call(name, scene, {**arguments.get(name, {}), "bbox_2d": list(box_global)})
    row = {"name": name, "ok": res.ok, "text": res.text, "error": res.error, "before": None, "after": None}
    if res.ok:
      if before_img is None:
        before_img = region_view(scene, box_global)
      row["before"] = os.path.join(os.fspath(out_dir), f"{stem}{name}_before.png")
      before_img.save(row["before"], format="PNG")
      if res.image is not None:
        row["after"] = os.path.join(os.fspath(out_dir), f"{stem}{name}_after.png")
        res.image.save(row["after"], format="PNG")
    rows.append(row)
  return rows
