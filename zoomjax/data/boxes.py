"""Box geometry of the ZoomEarth protocol (SPEC §3): frames and the crop-window rule.

Three frames are in play, all `[x1, y1, x2, y2]` in pixels:

* **original**: pixels of the full-resolution image (`width x height`).
* **global**: pixels of the global view the model sees, the original down-scaled so its long side is
  `long_side` (512); the model's crop requests are in this frame. `scale = max(W, H) / long_side`
  maps global -> original (1.0 when the image is already small enough: the view is only ever a
  down-scale).
* **gt1024**: LRS-GRO ground-truth boxes, in a 1024-long-side frame: `original = gt * max(W, H) / 1024`.

Conversions accept any 4-sequence (list, tuple, numpy) and return a list of 4 floats; numpy arrays of
shape `[..., 4]` come back as float64 arrays of the same shape.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

GT_FRAME = 1024          # LRS-GRO annotations: long side of the ground-truth frame
GLOBAL_LONG_SIDE = 512   # long side of the global view the model sees
MIN_CROP = 512           # crop windows are at least this wide and high (original pixels)
MIN_SHORT_SIDE = 30      # a resized view keeps its short side at least this long


def _scaled(box, s: float):
  arr = np.asarray(box, dtype=np.float64)
  if arr.shape[-1:] != (4,):
    raise ValueError(f"a box must have 4 numbers [x1, y1, x2, y2], got shape {arr.shape}")
  out = arr * s
  return out if isinstance(box, np.ndarray) and arr.ndim > 1 else out.tolist()


def resized_size(width: int, height: int, long_side: int = GLOBAL_LONG_SIDE,
                 min_short_side: int = MIN_SHORT_SIDE) -> tuple[int, int]:
  """Size `(w, h)` of a view whose long side is at most `long_side` (only down-scales).

  As the released `resize_image`: `scale = long_side / max(w, h)`, new sides truncated with `int()`,
  applied only when `scale < 1`. The short side is then raised to `min_short_side` (never above the
  original short side) so that very elongated images still yield at least one 28-px patch row.
  """
  if width <= 0 or height <= 0:
    raise ValueError(f"image size must be positive, got {width}x{height}")
  s = long_side / max(width, height)
  if s >= 1.0:
    return int(width), int(height)
  w, h = int(width * s), int(height * s)
  if width >= height:
    h = max(h, min(height, min_short_side))
  else:
    w = max(w, min(width, min_short_side))
  return w, h


def global_scale(width: int, height: int, long_side: int = GLOBAL_LONG_SIDE) -> float:
  """Global -> original factor, `max(W, H) / long_side`, or 1.0 when the view is not down-scaled.

  (The released code returns `max(W, H) / 512` even for images smaller than 512, whose view it does not
  resize; that maps boxes wrongly, so zoomjax uses 1.0 there. LRS-GRO images are all larger.)
  """
  return max(1.0, max(width, height) / long_side)


def gt1024_to_original(box, width: int, height: int):
  """LRS-GRO 1024-frame box -> original pixels: `gt * max(W, H) / 1024`."""
  return _scaled(box, max(width, height) / GT_FRAME)


def original_to_gt1024(box, width: int, height: int):
  """Original pixels -> LRS-GRO 1024 frame (inverse of `gt1024_to_original`)."""
  return _scaled(box, GT_FRAME / max(width, height))


def global_to_original(box, width: int, height: int, long_side: int = GLOBAL_LONG_SIDE):
  """Global-view box (the model's crop request) -> original pixels: `box * global_scale(W, H)`."""
  return _scaled(box, global_scale(width, height, long_side))


def original_to_global(box, width: int, height: int, long_side: int = GLOBAL_LONG_SIDE):
  """Original pixels -> global-view box: `box / global_scale(W, H)`."""
  return _scaled(box, 1.0 / global_scale(width, height, long_side))


def clamp_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
  """Truncate to ints (as the released `map(int, bbox)`), order the corners and clamp to the image."""
  x1, y1, x2, y2 = (int(v) for v in box)
  x1, x2 = sorted((x1, x2))
  y1, y2 = sorted((y1, y2))
  x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
  y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
  return x1, y1, x2, y2


def _window_1d(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
  """A `size`-long interval centred on [lo, hi], shifted to lie inside [0, limit] (clipped if larger)."""
  a = (lo + hi) // 2 - size // 2
  a = min(max(a, 0), max(limit - size, 0))
  return a, min(a + size, limit)


def crop_window(box_orig: Sequence[float], width: int, height: int,
                min_size: int = MIN_CROP) -> tuple[int, int, int, int]:
  """The released crop rule (SPEC §3) in original pixels -> `(x0, y0, x1, y1)` ints inside the image.

  If the box is narrower or lower than `min_size`, a `min_size x min_size` window centred on the box
  (integer centre `(x1 + x2) // 2` as released), shifted to stay inside the image; otherwise the exact
  box. An image smaller than `min_size` on a side gives its whole extent on that side.

  The box is first truncated to ints, its corners ordered and clamped to the image; for boxes inside the
  image this is exactly the released `cut_image` (which pads outside boxes with black instead). A box
  that is empty after clamping (entirely outside) still yields a valid window at the nearest border.
  """
  if width <= 0 or height <= 0:
    raise ValueError(f"image size must be positive, got {width}x{height}")
  x1, y1, x2, y2 = clamp_box(box_orig, width, height)
  if x2 - x1 < min_size or y2 - y1 < min_size:
    x1, x2 = _window_1d(x1, x2, min_size, width)
    y1, y2 = _window_1d(y1, y2, min_size, height)
  return x1, y1, x2, y2
