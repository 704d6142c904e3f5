"""Downstream tools driven by the crop request (SPEC §8): the model's box, applied to the original.

    from zoomjax.tools import downstream_registry, SceneImage
    registry = downstream_registry()     # crop_and_zoom, cloud_removal, denoising, segmentation, image_editing
    res = registry.call("denoising", SceneImage.from_original(pil_image), {"bbox_2d": [x1, y1, x2, y2]})
    res.ok, res.error, res.text          # never raises: a bad call is res.ok False with res.error
    res.image                            # the processed region as the model sees it (long side <= 512)
    res.info["edited"]                   # cloud_removal / denoising / image_editing: full-res copy, box changed
    res.info["mask"]                     # segmentation: bool[H, W], the objects inside the box

`bbox_2d` is in global-view pixels (the model's frame) and is mapped to original pixels with
`scale = max(W, H) / 512` and NO 512-px expansion (unlike crop_and_zoom's crop window). The tools read
pixels only through `SceneImage.read_original(window)`, so a scene read by window decodes just the box.

| tool | method (library) | arguments besides bbox_2d |
|---|---|---|
| cloud_removal | dark channel prior dehaze, He, Sun, Tang CVPR 2009; guided-filter refinement, He et al. ECCV 2010 (numpy/scipy) | omega |
| denoising | non-local means (default) or TV-Chambolle (scikit-image `restoration`); noise level by Immerkær 1996 | method, sigma |
| segmentation | CIELAB distance from the box's background + Otsu (default), or Felzenszwalb graph segments (scikit-image) | method |
| image_editing | "remove": biharmonic inpainting from the surroundings (`restoration.inpaint_biharmonic`); "blur": Gaussian | operation (required) |

In the multiturn protocol the prompt lists every registered tool's schema (`registry.schemas()`, Qwen's
`# Tools` block): `rollout(generator, tok, requests, LoopConfig(protocol="multiturn"), registry=registry)`.
`python -m zoomjax.infer … --tools denoising,segmentation` runs tools on the model's requested box and
writes before/after PNGs.

Plug-ins (your own model as a tool):

1. A Python callable, wrapped by `FunctionTool`; it receives the box's full-resolution RGB pixels and the
   call's arguments, and returns an image of the same size (processed pixels), a bool[h, w] mask, a str,
   or a `ToolResult`:

       from zoomjax.tools import FunctionTool, downstream_registry
       def super_resolve(region, arguments):
         return my_model(region)                            # PIL image, same size as region
       registry = downstream_registry(tools=[FunctionTool("super_resolution", super_resolve,
                                                          description="Sharpen a region.")])

   Any `zoomjax.rollout.tools.Tool` subclass can be registered the same way (`registry.register(tool)`).
2. An entry point, so a pip package registers tools when installed. In the package's `pyproject.toml`:

       [project.entry-points."zoomjax.tools"]
       super_resolution = "my_package.tools:make_tool"

   The object may be a `Tool`, a `Tool` subclass (built without arguments) or a callable returning a
   `Tool` or a list of them. `downstream_registry(load_entry_points=True)` (and `zoomjax.infer --tools`)
   loads them; a broken plug-in raises `PluginError` naming the entry point.
"""

from zoomjax.rollout.tools import SceneImage, Tool, ToolArgumentError, ToolError, ToolRegistry, ToolResult
from zoomjax.tools.base import FunctionTool, RegionOutput, RegionTool, box_window
from zoomjax.tools.downstream import CloudRemoval, Denoising, ImageEditing, Segmentation
from zoomjax.tools.registry import (DOWNSTREAM_TOOLS, ENTRY_POINT_GROUP, PluginError, downstream_registry,
                                    entry_point_tools, region_view, run_on_box, select_tools)

__all__ = [
    "SceneImage", "Tool", "ToolArgumentError", "ToolError", "ToolRegistry", "ToolResult",
    "FunctionTool", "RegionOutput", "RegionTool", "box_window",
    "CloudRemoval", "Denoising", "ImageEditing", "Segmentation",
    "DOWNSTREAM_TOOLS", "ENTRY_POINT_GROUP", "PluginError", "downstream_registry", "entry_point_tools",
    "region_view", "run_on_box", "select_tools",
]
