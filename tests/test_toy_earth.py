"""Toy Earth: determinism, LRS-GRO format and categories, and the crop/global-view legibility contract."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from _data import rl_jsonl
from zoomjax.data import images as I
from zoomjax.data import lrs_gro as L
from zoomjax.data import toy_earth as TE
from zoomjax.data import toy_earth_render as R
from zoomjax.processing import smart_resize

RL_JSONL = rl_jsonl()
SEED = 3


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  out = tmp_path_factory.mktemp("toy")
  meta = TE.generate(str(out), seed=SEED, num_images=4, size=2048, workers=1)
  rows = [json.loads(ln) for split in ("sft", "rl", "test") for ln in open(out / f"{split}.jsonl")]
  return out, meta, rows


def test_format_splits_and_categories(toy):
  out, meta, rows = toy
  assert meta["splits"]["sft"]["images"] == 2 and meta["splits"]["rl"]["images"] == 1
  assert meta["splits"]["test"]["images"] == 1
  base = meta["test_majority_baseline"]
  assert base["overall"]["n"] == meta["splits"]["test"]["rows"] and 0 <= base["overall"]["accuracy"] <= 1
  by_split = {s: L.LrsGroSource(out / f"{s}.jsonl") for s in ("sft", "rl", "test")}
  for s, src in by_split.items():
    assert src.problems == [] and len(src) == meta["splits"][s]["rows"] > 0
    assert all(r.split == s for r in src)
  assert all(r.is_sft for r in by_split["sft"]) and not any(r.is_sft for r in by_split["rl"])
  assert {r["type"] for r in rows} == {"global", "region", "object"}
  cats = {r["category"] for r in rows}
  assert len(cats) >= 10
  real = {json.loads(ln)["category"] for ln in open(RL_JSONL)}   # the real split's categories
  assert cats <= real
  for r in rows:
    key = f"Counting/{r['type']}" if r["category"] == "Counting" else r["category"]
    assert r["ground_truth"] in TE.VOCAB[key], r
    assert r["higher_level"] == TE.HIGHER_LEVEL[r["category"]]
    if r["type"] == "global":
      assert r["bbox"] == []
    else:
      x1, y1, x2, y2 = r["bbox"]
      assert 0 <= x1 < x2 <= 1024 and 0 <= y1 < y2 <= 1024
  sft = [r for r in rows if r["split"] == "sft"]
  assert all(r["scale"] == 2.0 and r["cut"] == (r["type"] != "global") for r in sft)
  for r in sft:   # the stage-1 box block holds the row's box, in the 1024 frame, as LRS-GRO's SFT split
    if r["cut"]:
      assert f'"bbox_2d": [{", ".join(map(str, r["bbox"]))}]' in r["stage_1_reasoning"]
      if r["ground_truth"] not in ("yes", "no"):    # the observation names the answer
        assert r["ground_truth"] in r["stage_2_reasoning"]


def test_deterministic(toy, tmp_path):
  out, _, rows = toy
  (tmp_path / "images").mkdir()
  name, lay, qs = TE.generate_image(SEED, 0, 2048, str(tmp_path))
  a = hashlib.sha256((out / "images" / name).read_bytes()).hexdigest()
  b = hashlib.sha256((tmp_path / "images" / name).read_bytes()).hexdigest()
  assert a == b
  first = [r for r in rows if r["image_name"] == name]
  assert [q["question"] for q in qs] == [r["question"] for r in first]
  assert [q["ground_truth"] for q in qs] == [r["ground_truth"] for r in first]


def toy_view(im: Image.Image) -> Image.Image:
  """What the embedded default's model sees: the image resized to the toy pixel budget."""
  h, w = smart_resize(im.height, im.width, max_pixels=TE.TOY_VIEW_PIXELS)
  return im.resize((w, h), Image.BICUBIC)


def count_color(im: Image.Image, rgb, tol: int = 40) -> int:
  a = np.asarray(im).astype(np.int32)
  return int((np.abs(a - np.asarray(rgb)).max(-1) <= tol).sum())


def test_crop_shows_the_colour_the_global_view_hides(toy):
  out, _, rows = toy
  color_rows = [r for r in rows if r["category"] == "Object color / pattern"]
  assert color_rows, "the fixture seed must produce colour questions"
  for r in color_rows:
    img = I.load_image(out / "images" / r["image_name"])
    rgb = R.COLORS[r["ground_truth"]]
    box = I.gt1024_to_original(r["bbox"], *img.size)
    crop = I.crop_and_zoom(img, box)
    view, scale = I.global_view(img)
    # The model's inputs at the toy budget: same pixel budget for both, count where the object is.
    vb = [int(v) for v in I.original_to_global(box, *img.size)]
    gv = toy_view(view)
    f = gv.width / view.width
    view_obj = gv.crop((int(vb[0] * f) - 2, int(vb[1] * f) - 2, int(vb[2] * f) + 3, int(vb[3] * f) + 3))
    in_crop, in_view = count_color(toy_view(crop), rgb), count_color(view_obj, rgb)
    assert in_crop >= 20 and in_view <= 0.1 * in_crop, (r["question_id"], in_crop, in_view)
    # Also at the released resolution (512-px view vs the full-resolution crop window).
    native_view = view.crop((vb[0] - 4, vb[1] - 4, vb[2] + 5, vb[3] + 5))
    in_crop, in_view = count_color(crop, rgb), count_color(native_view, rgb)
    assert in_crop >= 200 and in_view <= 0.1 * in_crop, (r["question_id"], in_crop, in_view)
    # On the roof, the other palette colours are absent: the asked colour is the only one shown.
    wx0, wy0, wx1, wy1 = I.crop_window(box, *img.size)
    s = crop.width / (wx1 - wx0)
    roof = crop.crop((int((box[0] - wx0) * s), int((box[1] - wy0) * s), int((box[2] - wx0) * s) + 1,
                      int((box[3] - wy0) * s) + 1))
    assert count_color(roof, rgb) >= 0.9 * in_crop
    for other in R.COLORS:
      if other != r["ground_truth"]:
        assert count_color(roof, R.COLORS[other], 25) == 0, (r["question_id"], other)


def test_cli(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  r = subprocess.run([sys.executable, "-m", "zoomjax.data.toy_earth", "--help"], capture_output=True, text=True,
                     env=env, timeout=120)
  assert r.returncode == 0 and "--num-images" in r.stdout
  r = subprocess.run([sys.executable, "-m", "zoomjax.data.toy_earth", "--out", str(tmp_path), "--size", "100"],
                     capture_output=True, text=True, env=env, timeout=120)
  assert r.returncode == 2 and "--size must be in" in r.stderr
  r = subprocess.run([sys.executable, "-m", "zoomjax.data.toy_earth", "--out", str(tmp_path / "d"),
                      "--num-images", "1", "--size", "1536", "--seed", "5"],
                     capture_output=True, text=True, env=env, timeout=300)
  assert r.returncode == 0, r.stderr
  assert (tmp_path / "d" / "images" / "toy_00000.png").exists()
  assert Image.open(tmp_path / "d" / "images" / "toy_00000.png").size == (1536, 1536)
  assert len((tmp_path / "d" / "sft.jsonl").read_text().splitlines()) > 10


@pytest.mark.parametrize("kind", ["car", "truck", "tank", "plane", "helicopter"])
def test_small_objects_vanish_in_the_view_not_in_the_crop(kind):
  """Objects are mean-matched to the ground: strong contrast at crop scale, none once averaged away."""
  rng = np.random.default_rng(0)
  for ground in (R.ASPHALT, R.WINTER_APRON, R.SEASON_VEG["summer"], R.SEASON_VEG["autumn"]):
    img = np.ones((256, 256, 3), np.float32) * np.asarray(ground, np.float32)
    for cx, cy in ((60, 60), (180, 70), (70, 190), (190, 190)):
      x0, y0, x1, y1 = R.draw_object(img, kind, cx, cy)
      patch = img[y0:y1, x0:x1]
      assert np.abs(patch.mean((0, 1)) - np.asarray(ground)).max() < 2.0
    u8 = Image.fromarray(np.clip(img + rng.normal(0, 1, img.shape), 0, 255).astype(np.uint8))
    dev = lambda s: np.abs(np.asarray(u8.resize((int(256 * s),) * 2, Image.BICUBIC), np.float32)  # noqa: E731
                           - np.asarray(ground, np.float32)).max()
    crop, view = dev(224 / 512), dev(224 / 2048)
    assert crop > 35                     # crop scale at the toy budget: clearly visible
    assert view < 0.25 * crop            # global view of a 2048-px image at the toy budget: (nearly) gone
