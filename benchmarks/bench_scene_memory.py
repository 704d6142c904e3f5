"""Peak RAM of one question's pixels (global view + one 512-px crop + one large zoomed crop) on a huge scene.

    python benchmarks/bench_scene_memory.py [--size 29000] [--tmp DIR] [--markdown]

Writes one synthetic W x W RGB scene twice in a temporary directory (deleted afterwards): a tiled (512-px
blocks), uncompressed GeoTIFF with average overviews 2 .. 64, and the same pixels as a binary PPM (GDAL
copies it by strips; a format Pillow decodes whole, like PNG and JPEG, but quick to write at this size: a PNG
of 2.5 GB of noisy pixels takes GDAL tens of minutes on 2 cores). Each case runs in its own subprocess and reports that process's peak RSS above
its RSS after imports (`VmHWM` from /proc/self/status, reset after the imports through clear_refs;
`resource.getrusage`'s ru_maxrss is not used: on Linux a child started by exec inherits its parent's
high-water mark, so it would report the benchmark process's own size):

* before — the code before this change (`zoomjax/data/images.py` at commit cae499b: `load_image`, which
  decoded the file and copied it to RGB, then the view and the crops from the decoded image);
* after, PPM — `SceneImage.open` on the PPM (Pillow decodes it whole, once per read, no copy);
* after, GeoTIFF — `SceneImage.open` on the tiled GeoTIFF (view from overviews, crops by window).

Disk: about 3 x W^2 bytes for the GeoTIFF (+1/3 for overviews) and the PPM (3 x W^2 bytes); RAM: the "before" case
needs about 2 x 4 x W^2 bytes (6.3 GiB at 29,000 px).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_COMMIT = "cae499b"

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
case, path = sys.argv[1], sys.argv[2]
if case == "before":
  import old_images as I
else:
  from zoomjax.rollout.tools import CropAndZoom, SceneImage
def hwm():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")                                   # reset VmHWM to the current RSS
base = hwm()
t = time.time()
if case == "before":
  img = I.load_image(path, max_pixels=None)
  view, scale = I.global_view(img)
  s = img.width / 29000
  small = I.crop_and_zoom(img, [14000 * s, 14000 * s, 14100 * s, 14100 * s])
  large = I.crop_and_zoom(img, [0, 0, 12000 * s, 12000 * s])
else:
  scene = SceneImage.open(path, max_pixels=None)
  view = scene.view
  small = CropAndZoom().apply(scene, {"bbox_2d": [247, 247, 249, 249]}).image
  large = CropAndZoom().apply(scene, {"bbox_2d": [0, 0, 212, 212]}).image
print(json.dumps({"base": base, "peak": hwm(), "seconds": time.time() - t, "view": view.size, "small": small.size, "large": large.size}))
"""


def write_scene(tif: str, ppm: str, n: int) -> None:
  """A tiled GeoTIFF of n x n synthetic pixels (written by 2048-px blocks), its overviews, and a PPM copy."""
  rng = np.random.default_rng(0)
  block = 2048
  y, x = np.arange(block, dtype=np.float32)[:, None], np.arange(block, dtype=np.float32)[None, :]
  tiles = []   # a few synthetic blocks, cycled (the content does not change what is held in memory)
  for k in range(5):
    base = 128 + 60 * np.sin((x + 300 * k) / 37.0) * np.cos(y / 53.0)
    a = np.stack([base + 12 * rng.standard_normal(base.shape, np.float32) for _ in range(3)])
    tiles.append(np.clip(a, 0, 255).astype(np.uint8))
  with rasterio.open(tif, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint8", tiled=True,
                     blockxsize=512, blockysize=512, bigtiff="yes") as ds:
    for i, by in enumerate(range(0, n, block)):
      for j, bx in enumerate(range(0, n, block)):
        w, h = min(block, n - bx), min(block, n - by)
        ds.write(tiles[(i + 2 * j) % len(tiles)][:, :h, :w], window=Window(bx, by, w, h))
    ds.build_overviews([2, 4, 8, 16, 32, 64], Resampling.average)
  with rasterio.Env(GDAL_CACHEMAX=64):
    rasterio.shutil.copy(tif, ppm, driver="PNM")


def run_case(case: str, path: str, libdir: str) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _CHILD, case, path, libdir], capture_output=True, text=True,
                       env=env, timeout=1800)
  if out.returncode != 0:
    raise RuntimeError(f"case {case} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", type=int, default=29000, help="scene side in pixels (default: %(default)s)")
  p.add_argument("--tmp", default=None, help="directory for the temporary files (default: the system's)")
  p.add_argument("--markdown", action="store_true", help="print a markdown table")
  args = p.parse_args(argv)
  n = args.size
  work = tempfile.mkdtemp(prefix="zoomjax_scene_mem_", dir=args.tmp)
  try:
    old = subprocess.run(["git", "-C", REPO, "show", f"{OLD_COMMIT}:zoomjax/data/images.py"], check=True,
                         capture_output=True, text=True).stdout
    with open(os.path.join(work, "old_images.py"), "w") as f:
      f.write(old)
    tif, ppm = os.path.join(work, "scene.tif"), os.path.join(work, "scene.ppm")
    t = time.time()
    write_scene(tif, ppm, n)
    print(f"wrote {n}x{n}: GeoTIFF {os.path.getsize(tif) / 2**30:.2f} GiB, PPM {os.path.getsize(ppm) / 2**30:.2f} "
          f"GiB in {time.time() - t:.0f} s", file=sys.stderr)
    rows = []
    for case, label, path in (("before", f"before ({OLD_COMMIT}): PPM, load_image + view + crops", ppm),
                              ("after", "after: PPM, SceneImage.open (Pillow, decoded whole)", ppm),
                              ("after", "after: tiled GeoTIFF + overviews, SceneImage.open", tif)):
      r = run_case(case, path, work)
      r["label"] = label
      rows.append(r)
      print(json.dumps(r), file=sys.stderr)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  if args.markdown:
    print(f"Scene {n} x {n} RGB uint8 ({n * n * 3 / 2**30:.2f} GiB of samples; Pillow holds "
          f"{n * n * 4 / 2**30:.2f} GiB). Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, rasterio {rasterio.__version__} (GDAL {rasterio.__gdal_version__}).\n")
    print("| case | peak RSS above imports (VmHWM) | seconds | view / crops |")
    print("|---|---:|---:|---|")
    for r in rows:
      print(f"| {r['label']} | {(r['peak'] - r['base']) / 2**20:,.0f} MiB | {r['seconds']:.1f} | {r['view']} / {r['small']} / {r['large']} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
