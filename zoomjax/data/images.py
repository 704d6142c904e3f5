"""Image loading and the views the model sees: the global view and crops (SPEC §3).

Loading (`load_image`) reads the header first (Pillow opens lazily), refuses images above a configurable
pixel budget with `ImageTooLargeError` before decoding anything, and converts every mode to 8-bit RGB by
this rule:

* 8-bit RGB: unchanged. Greyscale, palette, bilevel, CMYK, YCbCr, LAB, HSV: Pillow's `convert("RGB")`
  (grey replicated to the three channels).
* With an alpha channel (RGBA, LA, PA, palette with transparency): composited over white, as
  `transformers`' `convert_to_rgb` does (so the processor and zoomjax see the same pixels).
* High bit depth, single band (`I;16*`, `I`, `F`): linear stretch of the image's [min, max] to [0, 255]
  (NaN/inf -> min; a constant image -> 0), replicated to RGB.
* TIFF with several bands (e.g. RGB + NIR): the first three bands are R, G, B (one or two bands: the
  first band as grey). 8-bit: as read (zoomjax reads >4-band files itself). 16/32-bit, uncompressed
  strips: zoomjax reads the raw samples and stretches them like the single-band case (one [min, max]
  over the three bands, so colour balance is kept). 16-bit compressed or tiled: Pillow's reading where
  it can (each sample's high byte), with a warning; otherwise `ImageDecodeError`.

Anything Pillow cannot identify or decode raises `ImageDecodeError`; a missing file raises
`ImageNotFoundError` (also a `FileNotFoundError`). Both derive from `ImageError`.

Memory: Pillow decodes PNG, JPEG, ... whole, as `W * H * 4` bytes (`decoded_bytes`; a 29,000 px square
scene: 3.1 GiB), so `max_pixels` (default 900 Mpx, 3.4 GiB) is also the memory bound of one such image and
`ImageTooLargeError` says how to go beyond it: convert the scene to a tiled GeoTIFF, which
`zoomjax.data.scene` reads by window (memory bounded by the view and the crop, not the scene).

Geometry (frames, crop rule) lives in `boxes` and is re-exported here.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import OrderedDict
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoomjax.data.boxes import (GLOBAL_LONG_SIDE, MIN_CROP, MIN_SHORT_SIDE, clamp_box, crop_window,
                                global_scale, global_to_original, gt1024_to_original, original_to_global,
                                original_to_gt1024, resized_size)

__all__ = [
    "ImageError", "ImageDecodeError", "ImageNotFoundError", "ImageTooLargeError", "DEFAULT_MAX_PIXELS",
    "image_size", "load_image", "to_rgb", "decoded_bytes", "finite_range", "stretch_to_uint8",
    "resize_long_side", "global_view", "crop_and_zoom",
    "crop_window", "clamp_box", "global_scale", "resized_size", "gt1024_to_original",
    "original_to_gt1024", "global_to_original", "original_to_global", "ImageStore", "PathEscapeError",
    "resolve_under",
]

log = logging.getLogger(__name__)

# 900 Mpx: a 30000 x 30000 image (2.7 GB as RGB). LRS-GRO's largest are ~27000 px a side.
DEFAULT_MAX_PIXELS = 30000 * 30000

# Pillow's own decompression-bomb guard uses a module global; zoomjax applies its own limit (from the
# header, before decoding) and switches Pillow's off while opening, under this lock.
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(Exception):
  """An image could not be used."""


class ImageNotFoundError(ImageError, FileNotFoundError):
  """The image file does not exist."""


class ImageDecodeError(ImageError):
  """The file is not an image Pillow can decode (corrupt, truncated, unsupported)."""


class ImageTooLargeError(ImageError):
  """The image has more pixels than the configured limit (decompression-bomb guard)."""


def _open(path: str | os.PathLike) -> Image.Image:
  """Open lazily (header only), mapping failures to ImageError subclasses."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageNotFoundError(f"image not found: {path}")
  with _PIL_LIMIT_LOCK:
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
      return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
      raise ImageDecodeError(f"cannot read image {path}: {e}") from e
    finally:
      Image.MAX_IMAGE_PIXELS = saved


# Pillow holds an RGB image at 4 bytes a pixel: decoding a W x H file whole takes W * H * 4 bytes.
PIL_RGB_BYTES_PER_PIXEL = 4

TILED_GEOTIFF_HINT = ("convert it to a tiled GeoTIFF with overviews, which zoomjax reads by window "
                      "(`python -m zoomjax.data.scene IN OUT.tif`, or `gdal_translate -co TILED=YES "
                      "-co COMPRESS=DEFLATE IN OUT.tif && gdaladdo OUT.tif`)")


def decoded_bytes(width: int, height: int) -> int:
  """RAM that decoding a `width x height` image whole to RGB takes in Pillow (`W * H * 4` bytes)."""
  return int(width) * int(height) * PIL_RGB_BYTES_PER_PIXEL


def _check_size(size: tuple[int, int], max_pixels: int | None, path) -> None:
  """Refuses an image decoded whole (PNG, JPEG, ... through Pillow) above `max_pixels`, before decoding."""
  w, h = size
  if w <= 0 or h <= 0:
    raise ImageDecodeError(f"image {path} has an empty size {w}x{h}")
  if max_pixels is not None and w * h > max_pixels:
    raise ImageTooLargeError(
        f"image {path} is {w}x{h} = {w * h} pixels, above the limit max_pixels={max_pixels}; this format "
        f"is decoded whole (about {decoded_bytes(w, h) / 2**30:.1f} GiB of RAM): {TILED_GEOTIFF_HINT}, "
        f"or raise the limit (max_pixels / --max-image-pixels; None = no limit) if the file is trusted "
        f"and the memory is there")


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """`(width, height)` read from the header only; nothing is decoded."""
  with _open(path) as im:
    return im.size


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
  """Decode an image file to an 8-bit RGB `PIL.Image` (conversion rule in the module docstring).

  Raises:
    ImageNotFoundError: no such file.
    ImageTooLargeError: width * height > max_pixels (checked from the header, before decoding).
    ImageDecodeError: the file is corrupt, truncated or not an image.
  """
  try:
    im = _open(path)
  except ImageDecodeError:
    # Pillow cannot open some valid TIFFs (e.g. 16-bit with 2 or 5+ bands): read those ourselves.
    raw = _raw_tiff(path, max_pixels)
    if raw is None:
      raise
    return Image.fromarray(raw)
  try:
    _check_size(im.size, max_pixels, path)
    if im.format == "TIFF":
      raw = _raw_tiff(path, max_pixels)
      if raw is not None:
        return Image.fromarray(raw)
    im.load()
    if im.mode == "RGB" and getattr(im, "fp", None) is None:
      # Decoded and its file already closed (single-frame formats): hand it over instead of copying,
      # so the peak is one decoded image, not two.
      out, im = im, None
      return out
    return to_rgb(im)
  except ImageError:
    raise
  except (OSError, ValueError, SyntaxError, EOFError) as e:
    raise ImageDecodeError(f"cannot decode image {path}: {e}") from e
  finally:
    if im is not None:
      im.close()


def finite_range(a: np.ndarray) -> tuple[float, float] | None:
  """`(min, max)` of the finite values of `a`, or None when it has none (the stretch's range)."""
  a = np.asarray(a)
  if a.dtype.kind in "ui":
    return (float(a.min()), float(a.max())) if a.size else None
  finite = np.isfinite(a)
  if not finite.any():
    return None
  return float(a[finite].min()), float(a[finite].max())


def stretch_to_uint8(a: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
  """Linear `value_range` = (lo, hi) -> [0, 255] (NaN/inf -> lo; None or lo == hi -> 0; clipped)."""
  if value_range is None:
    return np.zeros(np.shape(a), np.uint8)
  lo, hi = value_range
  a = np.asarray(a, dtype=np.float64)
  a = np.where(np.isfinite(a), a, lo)
  if hi <= lo:
    return np.zeros(a.shape, np.uint8)
  return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _stretch_to_uint8(a: np.ndarray) -> np.ndarray:
  """Linear [min, max] -> [0, 255] over the whole array (NaN/inf -> min; constant -> 0)."""
  return stretch_to_uint8(a, finite_range(a))


def to_rgb(im: Image.Image) -> Image.Image:
  """Any Pillow mode -> 8-bit RGB by the module's documented rule (the image must be loaded)."""
  mode = im.mode
  if mode == "RGB":
    return im.copy()
  if mode in ("I", "F") or mode.startswith("I;16"):
    g = _stretch_to_uint8(np.asarray(im))
    return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2))
  if mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
    mode = "RGBA"
  if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")
  return im.convert("RGB")


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}   # BYTE, SHORT, LONG, LONG8 (unsigned ints only)


def _tiff_tags(f) -> tuple[dict[int, tuple[int, ...]], str] | None:
  """The first IFD of a (classic) TIFF as {tag: values} and its byte order; None if not a TIFF."""
  import struct
  head = f.read(8)
  if len(head) < 8 or head[:4] not in (b"II*\0", b"MM\0*"):
    return None
  e = "<" if head[:2] == b"II" else ">"
  f.seek(struct.unpack(e + "I", head[4:])[0])
  n = struct.unpack(e + "H", f.read(2))[0]
  raw = f.read(12 * n)
  if len(raw) < 12 * n:
    raise ImageDecodeError("truncated TIFF directory")
  tags = {}
  for k in range(n):
    tag, typ, count, value = struct.unpack(e + "HHI4s", raw[12 * k:12 * k + 12])
    code = _TIFF_TYPES.get(typ)
    if code is None or count > 1 << 20:
      continue
    size = struct.calcsize(code) * count
    if size <= 4:
      data = value[:size]
    else:
      here = f.tell()
      f.seek(struct.unpack(e + "I", value)[0])
      data = f.read(size)
      f.seek(here)
      if len(data) < size:
        raise ImageDecodeError("truncated TIFF tag data")
    tags[tag] = struct.unpack(e + code * count, data)
  return tags, e


def _raw_tiff(path, max_pixels: int | None) -> np.ndarray | None:
  """uint8[H, W, 3] of an uncompressed, chunky, stripped TIFF with >8-bit samples or bands Pillow cannot
  read, by the module's rule; None when Pillow's reading applies (8-bit up to 4 bands, or not a TIFF)."""
  with open(path, "rb") as f:
    parsed = _tiff_tags(f)
    if parsed is None:
      return None
    tags, e = parsed
    w, h = tags.get(256, (0,))[0], tags.get(257, (0,))[0]
    spp = tags.get(277, (1,))[0]
    bits = tags.get(258, (1,))
    if len(set(bits)) != 1 or (bits[0] == 8 and spp <= 4) or bits[0] not in (8, 16, 32):
      return None
    compression, planar = tags.get(259, (1,))[0], tags.get(284, (1,))[0]
    offsets, counts = tags.get(273), tags.get(279)
    if compression != 1 or planar != 1 or offsets is None or counts is None or 322 in tags:
      if bits[0] > 8:
        warnings.warn(f"{path}: compressed/tiled {bits[0]}-bit {spp}-band TIFF; using Pillow's reading "
                      "(the high byte of each sample) where it can", stacklevel=3)
      return None
    _check_size((w, h), max_pixels, path)
    kind = {1: "u", 2: "i", 3: "f"}.get(tags.get(339, (1,))[0], "u")
    dtype = np.dtype(f"{e}{kind}{bits[0] // 8}")
    need = w * h * spp * dtype.itemsize
    chunks = []
    for off, cnt in zip(offsets, counts):
      f.seek(off)
      chunks.append(f.read(cnt))
    buf = b"".join(chunks)
    if len(buf) < need:
      raise ImageDecodeError(f"{path}: TIFF strips hold {len(buf)} bytes, {w}x{h}x{spp} samples need {need}")
  a = np.frombuffer(buf[:need], dtype=dtype).reshape(h, w, spp)
  if bits[0] == 8:
    return np.ascontiguousarray(a[:, :, :3] if spp >= 3 else np.repeat(a[:, :, :1], 3, axis=2))
  rgb = a[:, :, :3] if spp >= 3 else np.repeat(a[:, :, :1], 3, axis=2)
  return _stretch_to_uint8(rgb)


def resize_long_side(img: Image.Image, long_side: int = GLOBAL_LONG_SIDE,
                     min_short_side: int = MIN_SHORT_SIDE) -> tuple[Image.Image, float]:
  """Bicubic down-scale so the long side is at most `long_side` -> (image, original/view scale).

  Sizes from `boxes.resized_size` (released `resize_image`: int-truncated sides, only down-scaling).
  The returned scale is `max(W, H) / long_side` when resized, else 1.0.
  """
  w, h = img.size
  size = resized_size(w, h, long_side, min_short_side)
  if size == (w, h):
    return img, 1.0
  return img.resize(size, Image.BICUBIC), global_scale(w, h, long_side)


def global_view(img: Image.Image, long_side: int = GLOBAL_LONG_SIDE) -> tuple[Image.Image, float]:
  """The model's global view: long side `long_side` (only down-scales) -> (view, scale).

  `scale` maps view pixels to original pixels (`boxes.global_to_original`).
  """
  return resize_long_side(img, long_side)


def crop_and_zoom(img, box_orig: Sequence[float], min_size: int = MIN_CROP,
                  max_long_side: int = GLOBAL_LONG_SIDE) -> Image.Image:
  """Crop `crop_window(box_orig)` from the original and down-scale so its long side <= `max_long_side`.

  `img` is the original as a PIL image, or a scene (`SceneImage`: anything with `original_size` and
  `read_original(window, max_long_side=...)`), which reads only that window (a windowed GeoTIFF never
  decodes more than the window, and a window larger than the zoom is read decimated).
  """
  if isinstance(img, Image.Image):
    window = crop_window(box_orig, img.width, img.height, min_size)
    return resize_long_side(img.crop(window), max_long_side)[0]
  w, h = img.original_size
  return img.read_original(crop_window(box_orig, w, h, min_size), max_long_side=max_long_side)


class ImageStore:
  """Decoded originals by name under a root, with an LRU cache sized in bytes. Thread-safe.

  Args:
    root: directory the names are resolved under (names may not escape it).
    cache_bytes: budget for decoded RGB originals (`w * h * 3` bytes each); 0 disables the cache. An
      image larger than the budget is decoded but not kept.
    max_pixels: decompression-bomb limit passed to `load_image`.

  Global views (small) are memoised too, up to `MAX_VIEWS` of them, when the cache is enabled.
  """

  MAX_VIEWS = 1024

  def __init__(self, root: str | os.PathLike, cache_bytes: int = 2 << 30,
               max_pixels: int | None = DEFAULT_MAX_PIXELS):
    self.root = os.path.realpath(os.fspath(root))
    self.cache_bytes = int(cache_bytes)
    self.max_pixels = max_pixels
    self._cache: OrderedDict[str, Image.Image] = OrderedDict()
    self._views: OrderedDict[tuple[str, int], tuple[Image.Image, float]] = OrderedDict()
    self._sizes: dict[str, tuple[int, int]] = {}
    self._used = 0
    self._lock = threading.Lock()
    self._loading: dict[str, threading.Lock] = {}   # one decoder per name at a time
    self.hits = 0
    self.misses = 0

  def path(self, name: str) -> str:
    """Resolve `name` under the root; raises `PathEscapeError` for absolute or escaping names."""
    return resolve_under(self.root, name)

  def size(self, name: str) -> tuple[int, int]:
    """`(width, height)` from the header (memoised; no decoding)."""
    with self._lock:
      if name in self._sizes:
        return self._sizes[name]
    wh = image_size(self.path(name))
    with self._lock:
      self._sizes[name] = wh
    return wh

  def _cached(self, name: str) -> Image.Image | None:
    """The cached original (counted as a hit, marked most recent), or None."""
    with self._lock:
      img = self._cache.get(name)
      if img is not None:
        self._cache.move_to_end(name)
        self.hits += 1
      return img

  def get(self, name: str) -> Image.Image:
    """The decoded RGB original (shared: do not modify it in place).

    Concurrent callers asking for the same uncached image wait for one decode instead of repeating it.
    """
    img = self._cached(name)
    if img is not None:
      return img
    with self._lock:
      gate = self._loading.setdefault(name, threading.Lock())
    with gate:
      img = self._cached(name)
      if img is not None:
        return img
      with self._lock:
        self.misses += 1
      try:
        img = load_image(self.path(name), max_pixels=self.max_pixels)
      finally:
        with self._lock:
          self._loading.pop(name, None)
      nbytes = img.width * img.height * 3
      with self._lock:
        self._sizes[name] = img.size
        if 0 < nbytes <= self.cache_bytes and name not in self._cache:
          self._cache[name] = img
          self._used += nbytes
          while self._used > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._used -= old.width * old.height * 3
    return img

  def global_view(self, name: str, long_side: int = GLOBAL_LONG_SIDE) -> tuple[Image.Image, float]:
    """`global_view(self.get(name))`, memoised per (name, long_side) while the cache is enabled."""
    key = (name, long_side)
    with self._lock:
      hit = self._views.get(key)
      if hit is not None:
        self._views.move_to_end(key)
        return hit
    view = global_view(self.get(name), long_side)
    if self.cache_bytes > 0:
      with self._lock:
        self._views[key] = view
        while len(self._views) > self.MAX_VIEWS:
          self._views.popitem(last=False)
    return view

  def crop(self, name: str, box_orig: Sequence[float], min_size: int = MIN_CROP,
           max_long_side: int = GLOBAL_LONG_SIDE) -> Image.Image:
    return crop_and_zoom(self.get(name), box_orig, min_size, max_long_side)

  @property
  def cached_bytes(self) -> int:
    return self._used

  def clear(self) -> None:
    with self._lock:
      self._cache.clear()
      self._views.clear()
      self._used = 0


class PathEscapeError(ImageError, ValueError):
  """An image name resolves outside its root (absolute path, `..`, or a symlink leading out)."""


def resolve_under(root: str | os.PathLike, name: str) -> str:
  """`root/name`, refusing absolute names and any that resolve (symlinks included) outside `root`."""
  if not isinstance(name, str) or not name or "\x00" in name:
    raise PathEscapeError(f"invalid image name {name!r}")
  if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
    raise PathEscapeError(f"image name {name!r} is absolute; names must be relative to the image root")
  root = os.path.realpath(os.fspath(root))
  full = os.path.realpath(os.path.join(root, name))
  if os.path.commonpath([root, full]) != root:
    raise PathEscapeError(f"image name {name!r} resolves outside the image root {root}")
  return full
