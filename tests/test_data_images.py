"""Image loading (mode rule, limits, errors), global view, the released crop rule, frames, ImageStore."""

import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from zoomjax.data import boxes as B
from zoomjax.data import images as I


def write_tiff(path, arr):
  """Minimal baseline TIFF (little-endian, one uncompressed strip, chunky): uint8/uint16 [H, W, C]."""
  arr = np.ascontiguousarray(arr)
  h, w, c = arr.shape
  bits = arr.dtype.itemsize * 8
  data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
  photometric = 2 if c >= 3 else 1
  n_extra = c - (3 if photometric == 2 else 1)
  tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, None), (259, 3, 1, 1), (262, 3, 1, photometric),
          (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1),
          (339, 3, 1, 1)] + ([(338, 3, n_extra, None)] if n_extra else [])
  tags.sort()
  ifd_len = 2 + 12 * len(tags) + 4
  bits_blob = struct.pack(f"<{c}H", *([bits] * c))
  extra_blob = struct.pack(f"<{n_extra}H", *([0] * n_extra))
  off_bits = 8 + ifd_len
  off_extra = off_bits + len(bits_blob)
  off_data = off_extra + len(extra_blob)

  def inline_or(blob, off):
    return struct.unpack("<I", blob.ljust(4, b"\0"))[0] if len(blob) <= 4 else off

  out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(tags))
  for tag, typ, count, value in tags:
    if tag == 258:
      value = inline_or(bits_blob, off_bits)
    elif tag == 338:
      value = inline_or(extra_blob, off_extra)
    elif tag == 273:
      value = off_data
    out += struct.pack("<HHII", tag, typ, count, value)
  out += struct.pack("<I", 0) + bits_blob + extra_blob + data
  with open(path, "wb") as f:
    f.write(out)


def stretched(a):
  a = a.astype(np.float64)
  return np.rint((a - a.min()) * 255.0 / (a.max() - a.min()))


def test_modes_to_rgb(tmp_path):
  rgba = np.zeros((4, 5, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[0, 0, 3] = 255  # one opaque red pixel, the rest transparent
  Image.fromarray(rgba).save(tmp_path / "a.png")
  x = np.asarray(I.load_image(tmp_path / "a.png"))
  assert x.shape == (4, 5, 3) and x.dtype == np.uint8
  assert tuple(x[0, 0]) == (200, 0, 0) and tuple(x[1, 1]) == (255, 255, 255)  # composited over white

  Image.fromarray(np.full((3, 3), 77, np.uint8)).save(tmp_path / "l.png")
  assert (np.asarray(I.load_image(tmp_path / "l.png")) == 77).all()

  g16 = (np.arange(48).reshape(6, 8) * 1000 + 500).astype(np.uint16)
  Image.fromarray(g16).save(tmp_path / "g16.tif")
  x = np.asarray(I.load_image(tmp_path / "g16.tif")).astype(np.float64)
  assert np.abs(x[..., 0] - stretched(g16)).max() <= 0.5 and (x[..., 0] == x[..., 2]).all()


@pytest.mark.parametrize("bands", [3, 4, 5])
def test_multiband_16bit_tiff(tmp_path, bands):
  rng = np.random.default_rng(bands)
  a = rng.integers(100, 4096, (7, 9, bands)).astype(np.uint16)   # 12-bit data in 16-bit samples
  write_tiff(tmp_path / "m.tif", a)
  x = np.asarray(I.load_image(tmp_path / "m.tif")).astype(np.float64)
  assert x.shape == (7, 9, 3)
  assert np.abs(x - stretched(a[..., :3])).max() <= 0.5  # first three bands, joint min-max stretch


def test_multiband_8bit_tiff_first_three_bands(tmp_path):
  a = np.random.default_rng(0).integers(0, 255, (5, 6, 5)).astype(np.uint8)
  write_tiff(tmp_path / "m8.tif", a)
  assert (np.asarray(I.load_image(tmp_path / "m8.tif")) == a[..., :3]).all()


def test_errors(tmp_path):
  with pytest.raises(I.ImageNotFoundError):
    I.load_image(tmp_path / "missing.png")
  (tmp_path / "junk.png").write_bytes(b"not an image" * 10)
  with pytest.raises(I.ImageDecodeError):
    I.load_image(tmp_path / "junk.png")
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
  data = (tmp_path / "ok.png").read_bytes()
  (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
  with pytest.raises(I.ImageDecodeError):
    I.load_image(tmp_path / "trunc.png")
  with pytest.raises(I.ImageTooLargeError, match="max_pixels=80000"):
    I.load_image(tmp_path / "ok.png", max_pixels=80_000)
  assert I.load_image(tmp_path / "ok.png", max_pixels=None).size == (300, 300)
  # Pillow's own guard (89 Mpx) is not what decides: zoomjax's limit does, from the header.
  assert I.image_size(tmp_path / "ok.png") == (300, 300)


def test_global_view_sizes():
  v, s = I.global_view(Image.new("RGB", (4000, 3000)))
  assert v.size == (512, 384) and s == pytest.approx(4000 / 512)
  v, s = I.global_view(Image.new("RGB", (300, 200)))
  assert v.size == (300, 200) and s == 1.0                     # never up-scaled
  v, _ = I.global_view(Image.new("RGB", (10000, 100)))
  assert v.size == (512, 30)                                    # short side kept >= 30
  v, _ = I.global_view(Image.new("RGB", (100, 5000)))
  assert v.size == (30, 512)
  v, _ = I.global_view(Image.new("RGB", (3000, 20)))
  assert v.size == (512, 20)                                    # ... but never above the original


def released_cut_window(bbox, width, height, min_size=512):
  """ZoomEarth's `cut_image` window (infer.py), written out for boxes inside the image."""
  x1, y1, x2, y2 = map(int, bbox)
  if x2 - x1 < min_size or y2 - y1 < min_size:
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    nx1, ny1 = cx - min_size // 2, cy - min_size // 2
    nx2, ny2 = nx1 + min_size, ny1 + min_size
    if nx1 < 0:
      nx2 += -nx1
      nx1 = 0
    if ny1 < 0:
      ny2 += -ny1
      ny1 = 0
    if nx2 > width:
      nx1 -= nx2 - width
      nx2 = width
    if ny2 > height:
      ny1 -= ny2 - height
      ny2 = height
    nx1, ny1 = max(0, nx1), max(0, ny1)
    return nx1, ny1, min(width, nx1 + min_size), min(height, ny1 + min_size)
  return x1, y1, x2, y2


@settings(max_examples=300, deadline=None)
@given(st.integers(100, 6000), st.integers(100, 6000), st.data())
def test_crop_window_matches_released(w, h, data):
  x1 = data.draw(st.floats(0, w - 1))
  y1 = data.draw(st.floats(0, h - 1))
  x2 = data.draw(st.floats(x1 + 1, w))
  y2 = data.draw(st.floats(y1 + 1, h))
  assert B.crop_window([x1, y1, x2, y2], w, h) == released_cut_window([x1, y1, x2, y2], w, h)


def test_crop_window_cases():
  assert B.crop_window([10, 10, 20, 20], 4000, 3000) == (0, 0, 512, 512)             # shifted inside
  assert B.crop_window([3990, 2990, 3999, 2999], 4000, 3000) == (3488, 2488, 4000, 3000)
  assert B.crop_window([1000, 1000, 1100, 1100], 4000, 3000) == (794, 794, 1306, 1306)  # centred
  assert B.crop_window([100, 100, 1700, 900], 4000, 3000) == (100, 100, 1700, 900)   # exact
  assert B.crop_window([100, 100, 1700, 300], 4000, 3000) == (644, 0, 1156, 512)     # thin -> window
  assert B.crop_window([10, 10, 20, 20], 300, 200) == (0, 0, 300, 200)              # small image
  assert B.crop_window([5000, 5000, 6000, 6000], 4000, 3000) == (3488, 2488, 4000, 3000)  # outside
  assert B.crop_window([900, 900, 100, 100], 4000, 3000) == (100, 100, 900, 900)     # corners ordered
  c = I.crop_and_zoom(Image.new("RGB", (4000, 3000)), [100, 100, 1700, 900])
  assert c.size == (512, 256)


def test_frames():
  assert B.gt1024_to_original([512, 256, 1024, 1024], 4000, 3000) == [2000.0, 1000.0, 4000.0, 4000.0]
  assert B.global_to_original([256, 0, 512, 10], 4000, 3000) == pytest.approx([2000, 0, 4000, 78.125])
  box = np.array([[10.0, 20.0, 30.0, 40.0], [1, 2, 3, 4]])
  back = B.original_to_global(B.global_to_original(box, 5000, 2000), 5000, 2000)
  assert isinstance(back, np.ndarray) and np.allclose(back, box)
  assert B.original_to_gt1024(B.gt1024_to_original([1, 2, 3, 4], 777, 999), 777, 999) == pytest.approx([1, 2, 3, 4])
  assert B.global_to_original([1, 2, 3, 4], 300, 200) == [1.0, 2.0, 3.0, 4.0]   # small image: scale 1
  with pytest.raises(ValueError):
    B.gt1024_to_original([1, 2, 3], 100, 100)


def test_store_cache_and_escape(tmp_path):
  root = tmp_path / "imgs"
  root.mkdir()
  for k in range(3):
    Image.new("RGB", (100, 100), (k, k, k)).save(root / f"{k}.png")
  store = I.ImageStore(root, cache_bytes=2 * 100 * 100 * 3)
  a = store.get("0.png")
  assert store.get("0.png") is a and store.hits == 1 and store.misses == 1
  store.get("1.png")
  store.get("2.png")                         # evicts 0 (least recently used)
  assert store.cached_bytes == 2 * 30000
  store.get("0.png")
  assert store.misses == 4
  assert store.size("1.png") == (100, 100)
  nocache = I.ImageStore(root, cache_bytes=0)
  assert nocache.get("1.png") is not nocache.get("1.png")
  for bad in ("../x.png", "/etc/passwd", "a/../../x.png", ""):
    with pytest.raises(I.PathEscapeError):
      store.path(bad)
  (tmp_path / "outside").mkdir()
  os.symlink(tmp_path / "outside", root / "link")
  with pytest.raises(I.PathEscapeError):
    store.path("link/x.png")                  # a symlink leading out of the root
  assert store.path("sub/../0.png") == os.path.realpath(root / "0.png")
