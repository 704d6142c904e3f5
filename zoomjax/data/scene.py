"""Pixel sources of a scene: what `SceneImage` reads its global view and its crops from.

    src = open_source("scene.tif", max_pixels=DEFAULT_MAX_PIXELS, bands=None)
    src.size                              # (W, H) of the original, from the header
    src.read((x0, y0, x1, y1))            # PIL RGB, the window at full resolution
    src.read(window, max_long_side=512)   # the window down-scaled so its long side <= 512 (`resize_long_side`)

Three sources, one interface (`size`, `read`, `crs`, `transform`):

* `RasterSource` — TIFF / GeoTIFF through rasterio (GDAL), **read by window**. A full-resolution read
  decodes only the window's tiles; a down-scaled read (the global view, a crop larger than the zoom) asks
  GDAL for at most `OVERSAMPLE` times the output size per axis (`out_shape=`, `Resampling.average`, from
  the file's overviews when it has them) and Pillow's bicubic finishes it, as in the Pillow path. GDAL's
  block cache is capped at `GDAL_CACHE_MB` during reads. So memory per question is bounded by the view and
  the window, never by the scene: a window read at full resolution must hold at most `max_pixels` pixels.
  When the whole window is at most `OVERSAMPLE` x the output per axis (every scene up to 2048 px for the
  512-px view) it is read at full resolution and resized exactly as the Pillow path does, so the pixels
  are identical; above that the decimated read differs from a bicubic of the full image by a few grey
  levels (see tests/test_geotiff.py).
* `PillowFileSource` — other formats (PNG, JPEG, WebP, ...), which Pillow can only decode whole:
  `decoded_bytes(W, H)` = `W * H * 4` bytes per read. Refused above `max_pixels` with `ImageTooLargeError`
  saying how to proceed (convert to a tiled GeoTIFF: `convert_to_geotiff`, or raise the limit). The
  decoded image is kept only up to `KEEP_DECODED_PIXELS`; larger ones are decoded per read, so a batch of
  scenes holds at most one large decoded image at a time. A JPEG read down-scaled by at least `2 *
  OVERSAMPLE` is decoded with Pillow's `draft()` (libjpeg's 1/2 .. 1/8 DCT scaling), which bounds that
  read to a quarter .. a 64th of the full decode; only for JPEGs too large to keep, so smaller ones are
  decoded once, exactly.
* `PixelSource` — a PIL image already in memory (`SceneImage.from_original`).

Band rule (the RGB rule of `zoomjax.data.images`, applied to rasterio's bands): `bands` = 1-based band
indices, one (grey, replicated to RGB) or three (R, G, B); default: bands 1, 2, 3 when the file has three or
more, else band 1 as grey; an alpha band (colour interpretation `alpha`, 8-bit) is composited over white
when the default bands are used. 8-bit samples are taken as they are; other types (uint16, int16, float32,
...) are stretched linearly from one [min, max] over the selected bands to [0, 255] (NaN/inf -> min,
a constant scene -> 0) — the range is the file's stored statistics (`STATISTICS_MINIMUM/MAXIMUM`, as
`gdalinfo -stats` writes them) when every selected band has them, else computed exactly over the full
resolution in one streaming pass at open (one strip in memory at a time), so the view and every crop
share one stretch.

Georeferencing: `RasterSource.crs` (a `rasterio.crs.CRS`, or None) and `.transform` (the affine pixel ->
map transform); `map_box(box_original)` gives `[x_min, y_min, x_max, y_max]` in map units.

`convert_to_geotiff(src, dst)` (also `python -m zoomjax.data.scene SRC DST.tif`) writes any
GDAL-readable image as a tiled, deflate-compressed GeoTIFF with overviews, streaming (GDAL reads PNG and
JPEG by scanline), so a scene too large for Pillow becomes one zoomjax reads by window.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import warnings
from typing import Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from PIL import Image

from zoomjax.data import images as zimages
from zoomjax.data.boxes import MIN_SHORT_SIDE, resized_size

__all__ = ["OVERSAMPLE", "GDAL_CACHE_MB", "KEEP_DECODED_PIXELS", "RasterSource", "PillowFileSource",
           "PixelSource", "open_source", "is_tiff", "convert_to_geotiff", "resolve_bands"]

OVERSAMPLE = 4                   # a down-scaled read asks for at most 4x the output size per axis
GDAL_CACHE_MB = 32               # GDAL's block cache during reads (its default is 5% of the RAM)
KEEP_DECODED_PIXELS = 64 << 20   # a Pillow-decoded original up to this size (256 MiB) is kept between reads
STRIP_BYTES = 32 << 20           # the streaming [min, max] pass reads strips of about this many bytes

TIFF_HINT = "convert it with `python -m zoomjax.data.scene IN OUT.tif`"
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")   # classic TIFF and BigTIFF, both byte orders


def is_tiff(path: str | os.PathLike) -> bool:
  """Whether the file starts with a TIFF / BigTIFF signature (whatever its name)."""
  try:
    with open(path, "rb") as f:
      return f.read(4) in _TIFF_MAGIC
  except OSError:
    return False


def _env():
  return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def _window(window) -> tuple[int, int, int, int]:
  x0, y0, x1, y1 = (int(v) for v in window)
  if x1 <= x0 or y1 <= y0:
    raise ValueError(f"window must be (left, top, right, bottom) with right > left and bottom > top, "
                     f"got {tuple(window)}")
  return x0, y0, x1, y1


def _zoom_size(w: int, h: int, max_long_side: int | None) -> tuple[int, int]:
  return (w, h) if max_long_side is None else resized_size(w, h, max_long_side, MIN_SHORT_SIDE)


def _finish(img: Image.Image, size: tuple[int, int]) -> Image.Image:
  """The last step of every down-scaled read: Pillow's bicubic to `size` (as `resize_long_side`)."""
  return img if img.size == size else img.resize(size, Image.BICUBIC)


def resolve_bands(count: int, bands: Sequence[int] | None, path="") -> tuple[int, ...]:
  """The 1-based band indices to read: `bands` checked (one or three, each in 1..count), or the default
  (1, 2, 3 with three or more bands, else (1,)). Raises ValueError naming the bad value."""
  if bands is None:
    return (1, 2, 3) if count >= 3 else (1,)
  try:
    out = tuple(int(b) for b in bands)
  except (TypeError, ValueError):
    raise ValueError(f"bands must be a list of band numbers (1-based), got {bands!r}") from None
  if len(out) not in (1, 3):
    raise ValueError(f"bands must name one band (grey) or three (R, G, B), got {list(out)}")
  bad = [b for b in out if not 1 <= b <= count]
  if bad:
    raise ValueError(f"bands {bad} out of range: {path or 'the image'} has {count} band(s), numbered 1..{count}")
  return out


class PixelSource:
  """A PIL image in memory (converted to RGB) as a source."""

  crs = None
  transform = None
  georeferenced = False

  def __init__(self, image: Image.Image):
    self.image = image if image.mode == "RGB" else zimages.to_rgb(image)

  @property
  def size(self) -> tuple[int, int]:
    return self.image.size

  def read(self, window, max_long_side: int | None = None) -> Image.Image:
    x0, y0, x1, y1 = _window(window)
    if max_long_side is None:
      return self.image.crop((x0, y0, x1, y1))   # a copy: callers may edit it
    full = (x0, y0, x1, y1) == (0, 0, *self.image.size)
    img = self.image if full else self.image.crop((x0, y0, x1, y1))
    return _finish(img, _zoom_size(x1 - x0, y1 - y0, max_long_side))

  def map_box(self, box_original):
    return None


class PillowFileSource:
  """An image file Pillow decodes whole (PNG, JPEG, ...): decoded on demand, by the RGB rule of
  `zoomjax.data.images.load_image`; refused above `max_pixels` from its header, before decoding."""

  crs = None
  transform = None
  georeferenced = False

  def __init__(self, path: str | os.PathLike, max_pixels: int | None = zimages.DEFAULT_MAX_PIXELS):
    self.path = os.fspath(path)
    self.max_pixels = max_pixels
    with zimages._open(self.path) as im:
      self.format = im.format
      self._size = im.size
    zimages._check_size(self._size, max_pixels, self.path)
    self._kept: Image.Image | None = None
    self._lock = threading.Lock()

  @property
  def size(self) -> tuple[int, int]:
    return self._size

  def _decoded(self) -> Image.Image:
    with self._lock:
      if self._kept is not None:
        return self._kept
    img = zimages.load_image(self.path, max_pixels=self.max_pixels)
    if img.size != self._size:
      raise zimages.ImageDecodeError(f"{self.path} changed while in use ({self._size} -> {img.size})")
    if img.width * img.height <= KEEP_DECODED_PIXELS:
      with self._lock:
        self._kept = img
    return img

  def _draft_read(self, window, size) -> Image.Image | None:
    """A down-scaled JPEG read through libjpeg's DCT scaling (None when it does not apply)."""
    x0, y0, x1, y1 = window
    w, h = self._size
    reduce = min((x1 - x0) / (OVERSAMPLE * size[0]), (y1 - y0) / (OVERSAMPLE * size[1]))
    if self.format != "JPEG" or w * h <= KEEP_DECODED_PIXELS or reduce < 2:
      return None
    with zimages._open(self.path) as im:
      if im.mode not in ("RGB", "L"):
        return None
      scale = 1 << min(3, int(math.log2(reduce)))
      im.draft(im.mode, (math.ceil(w / scale), math.ceil(h / scale)))
      try:
        im.load()
      except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise zimages.ImageDecodeError(f"cannot decode image {self.path}: {e}") from e
      sx, sy = w / im.width, h / im.height
      box = (x0 / sx, y0 / sy, x1 / sx, y1 / sy)
      return im.convert("RGB").resize(size, Image.BICUBIC, box=box)

  def read(self, window, max_long_side: int | None = None) -> Image.Image:
    x0, y0, x1, y1 = _window(window)
    size = _zoom_size(x1 - x0, y1 - y0, max_long_side)
    if size != (x1 - x0, y1 - y0):
      out = self._draft_read((x0, y0, x1, y1), size)
      if out is not None:
        return out
    return PixelSource(self._decoded()).read((x0, y0, x1, y1), max_long_side)

  def map_box(self, box_original):
    return None


class RasterSource:
  """A TIFF / GeoTIFF read by window through rasterio (module docstring: bands, stretch, memory).

  Args:
    path: the file.
    bands: 1-based band indices (one or three), or None for the default rule.
    max_pixels: most pixels one full-resolution window read may hold (down-scaled reads hold at most
      `OVERSAMPLE**2` x the output); None = no limit. The scene itself may be any size.
  """

  def __init__(self, path: str | os.PathLike, bands: Sequence[int] | None = None,
               max_pixels: int | None = zimages.DEFAULT_MAX_PIXELS):
    self.path = os.fspath(path)
    self.max_pixels = max_pixels
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", NotGeoreferencedWarning)
      try:
        with _env(), rasterio.open(self.path) as ds:
          self._size = (ds.width, ds.height)
          self.count = ds.count
          self.dtype = np.dtype(ds.dtypes[0])
          self.bands = resolve_bands(ds.count, bands, self.path)
          interp = list(ds.colorinterp)
          self.alpha = None
          if bands is None and self.dtype == np.uint8 and ColorInterp.alpha in interp:
            self.alpha = interp.index(ColorInterp.alpha) + 1
          self.lut = None   # a palette band: its colour map, as Pillow's "P" -> RGB
          if self.bands == (1,) and bands is None and interp[0] == ColorInterp.palette and self.dtype == np.uint8:
            cmap = ds.colormap(1)
            self.lut = np.zeros((256, 3), np.uint8)
            for k, rgba in cmap.items():
              if 0 <= k < 256:
                self.lut[k] = rgba[:3]
          self.crs = ds.crs
          self.transform = ds.transform
          self.overviews = ds.overviews(1)
          self.block_shape = ds.block_shapes[0]
          self.value_range = None if self.dtype == np.uint8 else self._value_range(ds)
      except RasterioError as e:
        raise zimages.ImageDecodeError(f"cannot read image {self.path}: {e}") from e
    if self._size[0] <= 0 or self._size[1] <= 0:
      raise zimages.ImageDecodeError(f"image {self.path} has an empty size {self._size[0]}x{self._size[1]}")

  @property
  def size(self) -> tuple[int, int]:
    return self._size

  @property
  def georeferenced(self) -> bool:
    return self.crs is not None and not self.transform.is_identity

  def _value_range(self, ds) -> tuple[float, float] | None:
    """One [min, max] over the selected bands: stored statistics, else an exact streaming pass."""
    stored = []
    for b in self.bands:
      tags = ds.tags(b)
      if "STATISTICS_MINIMUM" not in tags or "STATISTICS_MAXIMUM" not in tags:
        break
      stored.append((float(tags["STATISTICS_MINIMUM"]), float(tags["STATISTICS_MAXIMUM"])))
    else:
      return min(lo for lo, _ in stored), max(hi for _, hi in stored)
    w, h = self._size
    block_h = max(1, self.block_shape[0])
    rows = max(block_h, STRIP_BYTES // max(1, w * len(self.bands) * self.dtype.itemsize) // block_h * block_h)
    lo = hi = None
    for y in range(0, h, rows):
      r = zimages.finite_range(ds.read(self.bands, window=Window(0, y, w, min(rows, h - y))))
      if r is not None:
        lo = r[0] if lo is None else min(lo, r[0])
        hi = r[1] if hi is None else max(hi, r[1])
    return None if lo is None else (lo, hi)

  def _to_rgb(self, a: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """[C, h, w] samples of the selected bands -> an RGB PIL image (band rule)."""
    if self.dtype != np.uint8:
      a = zimages.stretch_to_uint8(a, self.value_range)
    elif alpha is not None:   # over white, as Pillow's RGBA / LA path (images.to_rgb)
      af = alpha.astype(np.float64)[None] / 255.0
      a = np.clip(np.rint(a * af + 255.0 * (1.0 - af)), 0, 255).astype(np.uint8)
    if self.lut is not None:
      return Image.fromarray(self.lut[a[0]])
    planes = [Image.fromarray(np.ascontiguousarray(p)) for p in a]   # band-sequential: no interleaved copy
    return Image.merge("RGB", planes * 3 if len(planes) == 1 else planes)

  def _read(self, window, out_shape: tuple[int, int] | None) -> Image.Image:
    x0, y0, x1, y1 = window
    w, h = self._size
    indexes = list(self.bands) + ([self.alpha] if self.alpha else [])
    win = Window(x0, y0, x1 - x0, y1 - y0)
    boundless = x0 < 0 or y0 < 0 or x1 > w or y1 > h   # outside: black, as PIL's crop
    kw = {} if out_shape is None else {"out_shape": (len(indexes), *out_shape),
                                       "resampling": Resampling.average}
    try:
      with warnings.catch_warnings(), _env(), rasterio.open(self.path) as ds:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        a = ds.read(indexes, window=win, boundless=boundless, fill_value=0, **kw)
    except RasterioError as e:
      raise zimages.ImageDecodeError(f"cannot read window {window} of {self.path}: {e}") from e
    if self.alpha:
      return self._to_rgb(a[:-1], a[-1])
    return self._to_rgb(a, None)

  def read(self, window, max_long_side: int | None = None) -> Image.Image:
    x0, y0, x1, y1 = window = _window(window)
    w, h = x1 - x0, y1 - y0
    size = _zoom_size(w, h, max_long_side)
    out = (min(h, OVERSAMPLE * size[1]), min(w, OVERSAMPLE * size[0]))   # rows, cols read
    if out == (h, w):   # at full resolution (a zoomed read of this size holds <= OVERSAMPLE**2 x its output)
      if max_long_side is None and self.max_pixels is not None and w * h > self.max_pixels:
        raise zimages.ImageTooLargeError(
            f"window {window} of {self.path} is {w}x{h} = {w * h} pixels at full resolution, above the "
            f"limit max_pixels={self.max_pixels}; read a smaller window, or down-scaled "
            f"(read_original(window, max_long_side=...)), or raise the limit")
      return _finish(self._read(window, None), size)
    return _finish(self._read(window, out), size)

  def map_box(self, box_original) -> list[float] | None:
    """Original-pixel box -> `[x_min, y_min, x_max, y_max]` in map units (None if not georeferenced)."""
    if not self.georeferenced:
      return None
    x1, y1, x2, y2 = (float(v) for v in box_original)
    xs, ys = zip(*(self.transform @ (x, y) for x, y in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))))
    return [min(xs), min(ys), max(xs), max(ys)]


def open_source(path: str | os.PathLike, *, max_pixels: int | None = zimages.DEFAULT_MAX_PIXELS,
                bands: Sequence[int] | None = None):
  """The source for an image file: `RasterSource` for TIFFs rasterio opens, else `PillowFileSource`.

  Raises:
    ImageNotFoundError / ImageDecodeError / ImageTooLargeError (`zoomjax.data.images`).
    ValueError: bad `bands`, or `bands` given for a format that is not read through rasterio.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise zimages.ImageNotFoundError(f"image not found: {path}")
  if is_tiff(path):
    try:
      return RasterSource(path, bands=bands, max_pixels=max_pixels)
    except zimages.ImageDecodeError:
      if bands is not None:
        raise
      # GDAL refused it; Pillow's reading (and zoomjax's raw TIFF reader) may still manage.
  if bands is not None and tuple(bands) not in ((1, 2, 3),):
    raise ValueError(f"bands={list(bands)} needs a TIFF read through rasterio; {path} is not one "
                     f"({TIFF_HINT})")
  return PillowFileSource(path, max_pixels=max_pixels)



def convert_to_geotiff(src: str | os.PathLike, dst: str | os.PathLike, *,
                       overview_factors: Sequence[int] | None = None, block: int = 512) -> str:
  """Write `src` (any GDAL-readable raster) as a tiled, deflate-compressed GeoTIFF with overviews.

  GDAL copies by strips (PNG and JPEG are read by scanline), so memory stays bounded whatever the size.
  Overviews: factors 2, 4, 8, ... until the smallest level's long side is below 256 (or `overview_factors`).
  Georeferencing of `src` (a world file, GeoTIFF tags) is kept. Returns `dst`.
  """
  src, dst = os.fspath(src), os.fspath(dst)
  if not os.path.isfile(src):
    raise zimages.ImageNotFoundError(f"image not found: {src}")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    try:
      with _env():
        rasterio.shutil.copy(src, dst, driver="GTiff", tiled=True, blockxsize=block, blockysize=block,
                             compress="deflate", bigtiff="if_safer")
        with rasterio.open(dst, "r+") as ds:
          if overview_factors is None:
            overview_factors, f = [], 2
            while max(ds.width, ds.height) / f >= 256:
              overview_factors.append(f)
              f *= 2
          if overview_factors:
            ds.build_overviews(list(overview_factors), Resampling.average)
    except RasterioError as e:
      raise zimages.ImageDecodeError(f"cannot convert {src} to a GeoTIFF {dst}: {e}") from e
  return dst


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m zoomjax.data.scene",
      description="Convert an image (PNG, JPEG, TIFF, ...) to a tiled GeoTIFF with overviews, which zoomjax "
                  "reads by window (bounded memory whatever the scene's size).")
  p.add_argument("src", help="input image")
  p.add_argument("dst", help="output .tif")
  args = p.parse_args(argv)
  try:
    convert_to_geotiff(args.src, args.dst)
  except zimages.ImageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
