"""Scenes read by window (`zoomjax.data.scene`, `SceneImage.open`): GeoTIFFs built here with rasterio.

Parity with the Pillow path on the same pixels: exact whenever the whole window is read at full resolution
(every scene up to 4 x 512 px a side for the view; every crop window at full resolution); within a few
grey levels when the view is a decimated read (`Resampling.average` to <= 4 x the view, from overviews
when the file has them, then the same bicubic). Both are low-pass filters of the same pixels, so they
differ only in the passband edge: measured on noisy, edged content (the worst case for a filter change)
the difference stays <= 3 grey levels per pixel and <= 0.5 on average; the bounds below are those.
"""
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import rasterio
from PIL import Image, JpegImagePlugin
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin

from zoomjax.data import images as I
from zoomjax.data import scene as S
from zoomjax.infer import main as infer_main
from zoomjax.rollout.loop import LoopConfig, Request, _scene
from zoomjax.rollout.tools import CropAndZoom, SceneImage, Tool, ToolRegistry, default_registry
from test_infer import model_dir  # noqa: F401  (the tiny HF model fixture, shared)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSFORM = from_origin(500000.0, 4100000.0, 0.5, 0.25)   # UTM 33N, 0.5 m x 0.25 m pixels
VIEW_MAX_DIFF, VIEW_MEAN_DIFF = 3, 0.5


def scene_pixels(h, w, bands=3, seed=0):
  """uint8[bands, h, w]: smooth fields, noise and hard-edged rectangles (roofs, roads)."""
  rng = np.random.default_rng(seed)
  y, x = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
  out = []
  for b in range(bands):
    a = 128 + 60 * np.sin(x / (31.0 + 7 * b)) * np.cos(y / 53.0) + 12 * rng.standard_normal((h, w), np.float32)
    for _ in range(40):
      x0, y0 = rng.integers(0, w), rng.integers(0, h)
      a[y0:y0 + rng.integers(8, 120), x0:x0 + rng.integers(8, 120)] = rng.integers(0, 256)
    out.append(a)
  return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def write_geotiff(path, a, *, overviews=False, georef=True, tiled=True, compress="deflate", interp=None,
                  tags=None, **kw):
  """a: [bands, h, w] -> a (tiled, 256-px blocks) GeoTIFF; overviews 2..16 by averaging."""
  kw.update(driver="GTiff", width=a.shape[2], height=a.shape[1], count=a.shape[0], dtype=a.dtype.name)
  if tiled:
    kw.update(tiled=True, blockxsize=256, blockysize=256)
  if compress:
    kw.update(compress=compress)
  if georef:
    kw.update(crs="EPSG:32633", transform=TRANSFORM)
  with rasterio.open(path, "w", **kw) as ds:
    ds.write(a)
    if interp:
      ds.colorinterp = interp
    for b, t in (tags or {}).items():
      ds.update_tags(b, **t)
    if overviews:
      ds.build_overviews([2, 4, 8, 16], Resampling.average)
  return str(path)


def pillow_scene(a):
  return SceneImage.from_original(Image.fromarray(np.ascontiguousarray(np.moveaxis(a, 0, -1))))


def arr(img):
  return np.asarray(img, dtype=np.int16)


def test_small_scene_is_identical_to_the_pillow_path(tmp_path):
  a = scene_pixels(900, 1500)
  path = write_geotiff(tmp_path / "s.tif", a)
  scene, ref = SceneImage.open(path), pillow_scene(a)
  assert isinstance(scene.source, S.RasterSource) and scene.original is None
  assert scene.original_size == (1500, 900) and scene.view_size == ref.view_size == (512, 307)
  assert (arr(scene.view) == arr(ref.view)).all()
  win = (1100, 300, 1500, 812)        # touches the right border
  assert (arr(scene.read_original(win)) == a[:, 300:812, 1100:1500].transpose(1, 2, 0)).all()
  tool = CropAndZoom()
  for box in ([10, 20, 60, 90], [0, 0, 512, 307], [400, 100, 500, 300]):
    got, want = tool.apply(scene, {"bbox_2d": box}), tool.apply(ref, {"bbox_2d": box})
    assert got.info == want.info and (arr(got.image) == arr(want.image)).all()
    assert (arr(I.crop_and_zoom(scene, got.info["box_original"])) == arr(got.image)).all()


@pytest.mark.parametrize("overviews", [True, False])
def test_large_scene_view_within_tolerance_crop_exact(tmp_path, overviews):
  a = scene_pixels(2200, 2600, seed=1)
  path = write_geotiff(tmp_path / "l.tif", a, overviews=overviews, compress=None)
  scene, ref = SceneImage.open(path), pillow_scene(a)
  assert (len(scene.source.overviews) > 0) == overviews
  d = np.abs(arr(scene.view) - arr(ref.view))
  assert scene.view_size == ref.view_size == (512, 433)
  assert d.max() <= VIEW_MAX_DIFF and d.mean() <= VIEW_MEAN_DIFF, (d.max(), d.mean())
  tool = CropAndZoom()
  small = tool.apply(scene, {"bbox_2d": [100, 100, 130, 140]})     # a 512-px window at full resolution
  want = tool.apply(ref, {"bbox_2d": [100, 100, 130, 140]})
  assert small.info["window"] == want.info["window"] and (arr(small.image) == arr(want.image)).all()
  x0, y0, x1, y1 = small.info["window"]
  assert (arr(scene.read_original((x0, y0, x1, y1))) == a[:, y0:y1, x0:x1].transpose(1, 2, 0)).all()
  big = tool.apply(scene, {"bbox_2d": [0, 0, 500, 430]})           # ~2500 px window: read decimated
  d = np.abs(arr(big.image) - arr(tool.apply(ref, {"bbox_2d": [0, 0, 500, 430]}).image))
  assert d.max() <= VIEW_MAX_DIFF and d.mean() <= VIEW_MEAN_DIFF, (d.max(), d.mean())


def test_map_coordinates_follow_the_affine_transform(tmp_path):
  a = scene_pixels(600, 800, seed=2)
  scene = SceneImage.open(write_geotiff(tmp_path / "g.tif", a))
  coords, crs = scene.box_to_map([100, 40, 356, 552])
  assert crs == scene.crs == "EPSG:32633"
  # from_origin(x0, y0, dx, dy): x = x0 + col * dx, y = y0 - row * dy (north up)
  assert coords == pytest.approx([500000.0 + 100 * 0.5, 4100000.0 - 552 * 0.25,
                                  500000.0 + 356 * 0.5, 4100000.0 - 40 * 0.25])
  plain = SceneImage.open(write_geotiff(tmp_path / "p.tif", a, georef=False))
  assert plain.crs is None and plain.box_to_map([0, 0, 10, 10]) is None
  assert pillow_scene(a).box_to_map([0, 0, 10, 10]) is None and pillow_scene(a).crs is None


def test_band_selection(tmp_path):
  a = scene_pixels(300, 400, bands=4, seed=3)        # R, G, B, NIR (GDAL's default for 4 x uint8 is RGBA)
  path = write_geotiff(tmp_path / "rgbn.tif", a, photometric="minisblack")
  hwc = a.transpose(1, 2, 0)
  assert (arr(SceneImage.open(path).read_original((0, 0, 400, 300))) == hwc[..., :3]).all()
  false_colour = SceneImage.open(path, bands=[4, 3, 2]).read_original((50, 60, 250, 160))
  assert (arr(false_colour) == hwc[60:160, 50:250][..., [3, 2, 1]]).all()
  grey = arr(SceneImage.open(path, bands=[4]).read_original((0, 0, 400, 300)))
  assert (grey == hwc[..., 3:4]).all() and (grey[..., 0] == grey[..., 2]).all()
  one = SceneImage.open(write_geotiff(tmp_path / "one.tif", a[:1]))
  assert (arr(one.view) == arr(pillow_scene(np.repeat(a[:1], 3, axis=0)).view)).all()
  for bad in ([5], [1, 2], [0, 1, 2], ["x"]):
    with pytest.raises(ValueError, match="band"):
      SceneImage.open(path, bands=bad)
  with pytest.raises(ValueError, match="rasterio"):
    SceneImage.open(_png(tmp_path, hwc[..., :3]), bands=[3, 2, 1])
  # An alpha band is composited over white, as the Pillow path does for RGBA.
  alpha = write_geotiff(tmp_path / "rgba.tif", a, interp=[ColorInterp.red, ColorInterp.green,
                                                          ColorInterp.blue, ColorInterp.alpha])
  want = I.to_rgb(Image.fromarray(np.ascontiguousarray(hwc), "RGBA"))
  assert np.abs(arr(SceneImage.open(alpha).read_original((0, 0, 400, 300))) - arr(want)).max() <= 1


def test_uint16_stretch_matches_the_raw_tiff_rule(tmp_path):
  rng = np.random.default_rng(4)
  a = rng.integers(200, 3900, (3, 300, 500)).astype(np.uint16)     # 12-bit data in 16-bit samples
  tiled = SceneImage.open(write_geotiff(tmp_path / "t16.tif", a))
  # The same samples as an uncompressed, stripped, pixel-interleaved TIFF: images.load_image's raw reader.
  strip = write_geotiff(tmp_path / "s16.tif", a, tiled=False, compress=None, georef=False)
  want = arr(I.load_image(strip))
  assert (arr(tiled.read_original((0, 0, 500, 300))) == want).all()
  assert (arr(tiled.read_original((100, 50, 300, 250))) == want[50:250, 100:300]).all()  # one stretch
  assert (arr(tiled.view) == arr(SceneImage.from_original(Image.fromarray(want.astype(np.uint8))).view)).all()
  # Stored statistics (as `gdalinfo -stats` writes them) set the range without a pass over the pixels.
  tags = {b: {"STATISTICS_MINIMUM": 0, "STATISTICS_MAXIMUM": 4095} for b in (1, 2, 3)}
  stats = SceneImage.open(write_geotiff(tmp_path / "st.tif", a, tags=tags))
  assert stats.source.value_range == (0.0, 4095.0)
  expect = I.stretch_to_uint8(a.transpose(1, 2, 0), (0, 4095))
  assert (arr(stats.read_original((0, 0, 500, 300))) == expect).all()
  f = a.astype(np.float32)
  f[0, :10, :10] = np.nan
  fs = SceneImage.open(write_geotiff(tmp_path / "f.tif", f))
  assert fs.source.value_range == I.finite_range(f)
  assert (arr(fs.read_original((0, 0, 10, 10)))[..., 0] == 0).all()   # NaN -> min -> 0


def _png(tmp_path, hwc, name="s.png"):
  p = tmp_path / name
  Image.fromarray(hwc).save(p)
  return str(p)


def test_pillow_formats_state_the_bound_and_refuse_beyond(tmp_path):
  hwc = scene_pixels(400, 600, seed=5).transpose(1, 2, 0).copy()
  png = _png(tmp_path, hwc)
  scene = SceneImage.open(png)
  assert isinstance(scene.source, S.PillowFileSource)
  assert (arr(scene.view) == arr(pillow_scene(hwc.transpose(2, 0, 1)).view)).all()
  assert I.decoded_bytes(29000, 29000) == 29000 * 29000 * 4
  with pytest.raises(I.ImageTooLargeError) as e:
    SceneImage.open(png, max_pixels=100_000)
  msg = str(e.value)
  assert "max_pixels=100000" in msg and "tiled GeoTIFF" in msg and "GiB" in msg and "zoomjax.data.scene" in msg
  # A windowed scene may be larger than max_pixels: only full-resolution windows are bounded by it.
  tif = SceneImage.open(write_geotiff(tmp_path / "w.tif", hwc.transpose(2, 0, 1)), max_pixels=100_000)
  assert tif.original_size == (600, 400)
  with pytest.raises(I.ImageTooLargeError, match="window"):
    tif.read_original((0, 0, 600, 400))
  res = default_registry().call("crop_and_zoom", tif, {"bbox_2d": [0, 0, 512, 341]})  # all of it, zoomed out
  x0, y0, x1, y1 = res.info["window"]
  assert res.ok and (x1 - x0) * (y1 - y0) > 100_000 and res.image.size == (x1 - x0, y1 - y0)
  # A tool asking for too large a full-resolution window gets an error result, not an exception.
  class Whole(Tool):
    name = "whole"

    def apply(self, image, arguments):
      return image.read_original((0, 0, *image.original_size))
  res = ToolRegistry([Whole()]).call("whole", tif, {})
  assert not res.ok and "max_pixels=100000" in res.error


def test_large_jpeg_view_is_decoded_with_draft(tmp_path, monkeypatch):
  hwc = scene_pixels(2080, 4160, seed=6).transpose(1, 2, 0).copy()   # >= 8x the view: draft at 1/2
  jpg = tmp_path / "s.jpg"
  Image.fromarray(hwc).save(jpg, quality=95)
  full = SceneImage.from_original(I.load_image(jpg))
  monkeypatch.setattr(S, "KEEP_DECODED_PIXELS", 1 << 20)     # "too large to keep": read by draft
  drafts = []
  real = JpegImagePlugin.JpegImageFile.draft
  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                      lambda self, *a: drafts.append(a) or real(self, *a))
  scene = SceneImage.open(jpg)
  assert drafts and scene.source._kept is None
  d = np.abs(arr(scene.view) - arr(full.view))
  assert d.max() <= 2 * VIEW_MAX_DIFF and d.mean() <= VIEW_MEAN_DIFF, (d.max(), d.mean())
  win = (1000, 1000, 1512, 1512)
  assert (arr(scene.read_original(win)) == arr(full.read_original(win))).all()   # crops: full decode


def test_convert_to_geotiff_and_the_loop_opens_paths_by_window(tmp_path):
  hwc = scene_pixels(500, 700, seed=7).transpose(1, 2, 0).copy()
  png = _png(tmp_path, hwc)
  tif = str(tmp_path / "c.tif")
  assert S.main([png, tif]) == 0
  with rasterio.open(tif) as ds:
    assert ds.profile["tiled"] and ds.overviews(1) == [2]
  scene = _scene(Request(tif, "q"), LoopConfig())
  assert isinstance(scene.source, S.RasterSource)
  assert (arr(scene.read_original((0, 0, 700, 500))) == hwc).all()
  assert (arr(scene.view) == arr(SceneImage.open(png).view)).all()
  assert S.main([str(tmp_path / "missing.png"), tif]) == 2


_CHILD = textwrap.dedent("""
    import json, sys
    from zoomjax.rollout.tools import CropAndZoom, SceneImage, Tool, ToolRegistry, default_registry
    def rss():   # peak RSS of this process since exec (ru_maxrss would start at the parent's, inherited)
      with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    base = rss()
    if sys.argv[2] == "scene":
      scene = SceneImage.open(sys.argv[1])
      crop = CropAndZoom().apply(scene, {"bbox_2d": [200, 200, 230, 230]})
      big = CropAndZoom().apply(scene, {"bbox_2d": [0, 0, 400, 400]})
      size = scene.view.size
    else:
      from zoomjax.data.images import load_image
      size = load_image(sys.argv[1], max_pixels=None).size
    print(json.dumps({"base": base, "peak": rss(), "size": size}))
""")


def _child_peak(path, mode):
  env = dict(os.environ, PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _CHILD, path, mode], capture_output=True, text=True, env=env,
                       check=True, timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_by_view_and_window(tmp_path):
  """An 8192 px square tiled GeoTIFF with overviews: one question (view, a 512 px crop, a 4000 px zoomed
  crop) adds far less than the full decode (8192^2 * 3 = 192 MiB as numpy, 256 MiB in Pillow)."""
  n, block = 8192, 1024
  path = str(tmp_path / "big.tif")
  tile = scene_pixels(block, block, seed=8)
  with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", tiled=True,
                     blockxsize=512, blockysize=512, crs="EPSG:32633", transform=TRANSFORM) as ds:
    for y in range(0, n, block):
      for x in range(0, n, block):
        ds.write(tile, window=rasterio.windows.Window(x, y, block, block))
    ds.build_overviews([2, 4, 8, 16], Resampling.average)
  full = n * n * 3
  tracemalloc.start()
  scene = SceneImage.open(path)
  CropAndZoom().apply(scene, {"bbox_2d": [200, 200, 230, 230]})
  CropAndZoom().apply(scene, {"bbox_2d": [0, 0, 250, 250]})
  _, traced = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert traced < full / 8, traced                     # numpy / Python allocations: view and windows only
  got = _child_peak(path, "scene")                     # RSS, GDAL's C allocations included
  assert got["size"] == [512, 512]
  # measured: +44 MiB (GDAL's capped block cache, the 4x-oversampled view); a full decode adds 258 MiB
  assert got["peak"] - got["base"] < full / 3, got




def test_infer_json_reports_map_coordinates(model_dir, tmp_path, capsys):
  a = scene_pixels(700, 1200, seed=9)
  path = write_geotiff(tmp_path / "g.tif", a, overviews=True)
  rc = infer_main(["--model", model_dir, "--image", path, "--question", "What is it?", "--protocol", "multiturn",
                   "--max-new-tokens", "8", "--max-pixels", str(56 * 56 * 4), "--json", "--bands", "3,2,1"])
  assert rc == 0
  res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert res["image_size"] == [1200, 700] and res["crs"] == "EPSG:32633"
  scene = SceneImage.open(path)
  assert res["boxes_map"] == [scene.box_to_map(b)[0] for b in res.get("boxes_original", [])]
  assert infer_main(["--model", model_dir, "--image", path, "--question", "q", "--bands", "9"]) == 2
  assert "--bands" in capsys.readouterr().err
