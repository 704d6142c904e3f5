"""The downstream tools driven by the crop request: cloud removal, denoising, segmentation, image editing.

Each is a `RegionTool` (`zoomjax.tools.base`): it acts on the requested `bbox_2d` mapped to original
pixels (no 512-px expansion), reads only that window (plus, for `image_editing` "remove", a ring of its
surroundings), and never raises. The methods are in `zoomjax.tools.methods`.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import gaussian

from zoomjax.rollout.tools import ToolArgumentError
from zoomjax.tools import methods as M
from zoomjax.tools.base import RegionOutput, RegionTool, option, overlay, to_float, to_uint8


class CloudRemoval(RegionTool):
  """Removes haze and thin cloud from the box: the dark channel prior (He, Sun, Tang, CVPR 2009) with the
  transmission refined by the guided filter (He et al., ECCV 2010). The atmospheric light A comes from the
  box and the global view (the densest haze of the scene, often an opaque cloud outside the box); the
  transmission from the box at full resolution. Thick, opaque cloud hides the ground and cannot be
  recovered from one image; the method restores what the haze attenuated. Bright grey surfaces (no dark
  pixel in a 15-px patch) break the prior and come out over-corrected.

  Arguments: `bbox_2d`; optional `omega` in [0.5, 1] (fraction of haze removed, default 0.95).
  """

  name = "cloud_removal"
  description = ("Remove haze / thin cloud from a region of the full-resolution image (dark channel prior "
                 "dehazing). Returns the restored region.")
  options = {"omega": {"type": "number", "description": "fraction of the haze removed, 0.5-1 (default 0.95)"}}
  min_side = 2

  def process(self, scene, region, window, arguments):
    omega = option(arguments, "omega", 0.95, low=0.5, high=1.0)
    img = to_float(region)
    out, det = M.dehaze(img, airlight=M.estimate_airlight(img, to_float(scene.view)), omega=omega)
    dc_before = float(M.dark_channel(img).mean())
    pixels = to_uint8(out)
    dc_after = float(M.dark_channel(pixels / 255.0).mean())
    return RegionOutput(
        pixels=pixels,
        summary=(f"cloud_removal (dark channel prior): dehazed the {region.width}x{region.height} px box; dark "
                 f"channel mean {dc_before:.3f} -> {dc_after:.3f}, mean transmission {det['transmission_mean']:.2f}"),
        info={"method": "dark_channel_prior", "dark_channel_before": dc_before, "dark_channel_after": dc_after,
              **det})


class Denoising(RegionTool):
  """Denoises the box: scikit-image's non-local means (`restoration.denoise_nl_means`, Buades et al. 2005;
  default) or total-variation (`restoration.denoise_tv_chambolle`, Chambolle 2004), with the noise level
  estimated by Immerkær's method (1996) unless given.

  Arguments: `bbox_2d`; optional `method` ("nl_means" | "tv"), `sigma` (noise std in 0-255 grey levels).
  """

  name = "denoising"
  description = "Remove sensor noise from a region of the full-resolution image. Returns the denoised region."
  options = {"method": {"type": "string", "enum": list(M.DENOISE_METHODS),
                        "description": "nl_means (default) or tv"},
             "sigma": {"type": "number", "description": "noise std in grey levels (default: estimated)"}}
  min_side = 3

  def process(self, scene, region, window, arguments):
    method = option(arguments, "method", "nl_means", choices=M.DENOISE_METHODS)
    sigma = option(arguments, "sigma", None, low=0.0, high=255.0)
    img = to_float(region)
    out, s = M.denoise(img, method, None if sigma is None else sigma / 255.0)
    return RegionOutput(
        pixels=to_uint8(out),
        summary=(f"denoising ({method}): denoised the {region.width}x{region.height} px box; noise std "
                 f"{255 * s:.1f} -> {255 * M.noise_sigma(out):.1f} grey levels"),
        info={"method": method, "sigma": 255 * s})


class Segmentation(RegionTool):
  """Segments the foreground objects of the box (what differs from the box's background, the median colour
  of its border ring): CIELAB colour distance thresholded by Otsu's method (default), or Felzenszwalb-
  Huttenlocher graph segments (`skimage.segmentation.felzenszwalb`) whose mean colour differs.

  Arguments: `bbox_2d`; optional `method` ("otsu" | "felzenszwalb").
  `res.info["mask"]` bool[H, W]; `res.info["objects"]` one `[x1, y1, x2, y2]` per connected object in
  original pixels (`objects_global`: in the global view); `res.image` the region with the mask tinted.
  """

  name = "segmentation"
  description = ("Segment the objects in a region of the full-resolution image (what differs from the "
                 "region's background). Returns the mask over the region and the objects' boxes.")
  options = {"method": {"type": "string", "enum": list(M.SEGMENT_METHODS),
                        "description": "otsu (default) or felzenszwalb"}}
  min_side = 3
  max_listed = 8

  def process(self, scene, region, window, arguments):
    method = option(arguments, "method", "otsu", choices=M.SEGMENT_METHODS)
    mask, thr = M.segment(to_float(region), method)
    boxes = M.object_boxes(mask, window[:2])
    w, h = scene.original_size
    s = max(w, h) / scene.long_side if max(w, h) > scene.long_side else 1.0
    boxes_g = [[round(v / s, 1) for v in b] for b in boxes]
    listed = ", ".join(str([round(v) for v in b]) for b in boxes_g[:self.max_listed])
    more = f" (+{len(boxes_g) - self.max_listed} more)" if len(boxes_g) > self.max_listed else ""
    return RegionOutput(
        mask=mask, display=overlay(region, mask),
        summary=(f"segmentation ({method}): {len(boxes)} object(s) covering {100 * mask.mean():.1f}% of the "
                 f"box" + (f"; boxes in the global view: {listed}{more}" if boxes else "")),
        info={"method": method, "threshold_delta_e": thr, "objects": boxes, "objects_global": boxes_g})


class ImageEditing(RegionTool):
  """Edits the box. Operations:

  * "remove": fills the box from its surroundings by biharmonic inpainting
    (`skimage.restoration.inpaint_biharmonic`) over a context ring of a quarter of the box size, so an
    object inside disappears into the background;
  * "blur": Gaussian blur of the box (`skimage.filters.gaussian`, sigma 1% of the box's long side, 2-8 px),
    e.g. to anonymise it.

  Arguments: `bbox_2d`, `operation`.
  """

  name = "image_editing"
  description = ("Edit a region of the full-resolution image: operation \"remove\" erases what is in the box "
                 "(fills it from its surroundings), \"blur\" blurs it. Returns the edited region.")
  options = {"operation": {"type": "string", "enum": ["remove", "blur"], "description": "remove or blur"}}
  required_options = ("operation",)
  min_side = 1

  def process(self, scene, region, window, arguments):
    op = option(arguments, "operation", None, choices=("remove", "blur"))
    if op is None:
      raise ToolArgumentError('image_editing needs "operation": "remove" or "blur"')
    l, t, r, b = window
    if op == "blur":
      sigma = min(8.0, max(2.0, 0.01 * max(r - l, b - t)))
      out = gaussian(to_float(region), sigma=sigma, channel_axis=-1, mode="nearest")
      return RegionOutput(pixels=to_uint8(out),
                          summary=f"image_editing (blur): blurred the {r - l}x{b - t} px box, sigma {sigma:.1f} px",
                          info={"operation": op})
    w, h = scene.original_size
    m = max(4, round(0.25 * max(r - l, b - t)))
    cl, ct, cr, cb = max(0, l - m), max(0, t - m), min(w, r + m), min(h, b + m)
    context = to_float(scene.read_original((cl, ct, cr, cb)))
    hole = np.zeros(context.shape[:2], bool)
    hole[t - ct:b - ct, l - cl:r - cl] = True
    filled = M.inpaint_remove(context, hole)
    patch = to_uint8(filled[t - ct:b - ct, l - cl:r - cl])
    return RegionOutput(
        pixels=patch,
        summary=(f"image_editing (remove): filled the {r - l}x{b - t} px box from its surroundings "
                 "(biharmonic inpainting)"),
        info={"operation": op, "context_window": [cl, ct, cr, cb]})
