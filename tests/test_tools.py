"""Downstream tools (SPEC §8): each changes only the requested box, does what its name says on synthetic
scenes with known noise / haze / objects (PSNR, contrast, dark channel, mask IoU), never raises, and
plug-ins (a callable, an entry point) register."""

import importlib.metadata
import json
import math
import sys

import numpy as np
import pytest
from PIL import Image

import jax
import jax.numpy as jnp

from zoomjax import hf
from zoomjax.data.tokenizer import padded_vocab_size, save_tokenizer, special_ids, train_tokenizer
from zoomjax.infer import main as infer_main
from zoomjax.model import ModelConfig, init_params
from zoomjax.processing import preprocess_image
from zoomjax.protocol import templates as P
from zoomjax.model.buckets import round_up
from zoomjax.rollout.generate import Generator
from zoomjax.rollout.loop import LoopConfig, Request, rollout
from zoomjax.tools import (DOWNSTREAM_TOOLS, FunctionTool, PluginError, SceneImage, ToolResult, box_window,
                           downstream_registry, run_on_box)
from zoomjax.tools import methods as M

H, W = 600, 800                # original; global view 512x384, scale 1.5625 (not an integer)
BOX = [96.3, 80.0, 224.0, 199.5]  # global-view box -> original ~[150, 125, 350, 312]
PIXEL_TOOLS = {"cloud_removal": {}, "denoising": {}, "image_editing": {"operation": "remove"}}


def psnr(a, b) -> float:
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return 10 * math.log10(255.0 ** 2 / np.mean(d ** 2))


def u8(x):
  return np.clip(np.rint(np.asarray(x) * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clean():
  """A mosaic of saturated fields with fine texture, so each 15-px patch has a dark channel near 0 (the prior
  the dehaze relies on; bright grey surfaces break it): float[H, W, 3]."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:H, 0:W]
  palette = np.array([[0.15, 0.45, 0.1], [0.55, 0.35, 0.15], [0.1, 0.25, 0.5], [0.55, 0.6, 0.12],
                      [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
  cells = rng.integers(0, len(palette), size=(H // 48 + 1, W // 48 + 1))
  img = palette[cells[yy // 48, xx // 48]] * (0.85 + 0.15 * np.sin(xx / 3.0) * np.cos(yy / 5.0))[..., None]
  return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def objects():
  """(image uint8[H, W, 3], bool[H, W] objects): red discs and a bar on a noisy grey-green ground."""
  rng = np.random.default_rng(1)
  yy, xx = np.mgrid[0:H, 0:W]
  obj = np.zeros((H, W), bool)
  for cx, cy, r in [(200, 170, 22), (300, 250, 30), (250, 290, 14), (420, 420, 25)]:
    obj |= (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
  obj[200:222, 170:240] = True
  img = np.array([0.45, 0.5, 0.4]) + rng.normal(0, 0.02, (H, W, 3))
  img[obj] = [0.8, 0.15, 0.1]
  return u8(img), obj


def scene_of(a) -> SceneImage:
  return SceneImage.from_original(Image.fromarray(np.asarray(a, np.uint8), "RGB"))


def outside_identical(before: np.ndarray, after: np.ndarray, window) -> bool:
  l, t, r, b = window
  keep = np.ones(before.shape[:2], bool)
  keep[t:b, l:r] = False
  return after.shape == before.shape and np.array_equal(before[keep], after[keep])


def test_registry_holds_the_tools_and_the_prompt_lists_them():
  reg = downstream_registry()
  assert reg.names() == ["crop_and_zoom", *DOWNSTREAM_TOOLS]
  prompt = P.render_prompt("How many ships?", "multiturn", tools=reg.schemas()).text
  for s in reg.schemas():
    f = s["function"]
    assert f["parameters"]["properties"]["bbox_2d"] == P.BBOX_2D_PARAM and "bbox_2d" in f["parameters"]["required"]
    assert json.dumps(s, ensure_ascii=False) in prompt          # Qwen's `# Tools` block, one schema a line
  assert reg.get("image_editing").schema()["function"]["parameters"]["required"] == ["bbox_2d", "operation"]


def test_box_window_maps_without_expansion():
  sc = scene_of(np.zeros((H, W, 3), np.uint8))
  assert box_window(sc, BOX) == (150, 125, 350, 312)    # 96.3*1.5625=150.5 -> 150; 199.5*1.5625=311.7 -> 312
  assert box_window(sc, [10, 10, 11, 11]) == (15, 15, 18, 18)   # a tiny box stays tiny (no 512-px window)


@pytest.mark.parametrize("name", [*PIXEL_TOOLS, "segmentation"])
def test_only_the_box_changes(name, objects):
  img, _ = objects
  sc = scene_of(img)
  res = downstream_registry().call(name, sc, {"bbox_2d": BOX, **PIXEL_TOOLS.get(name, {})})
  assert res.ok, res.error
  l, t, r, b = res.info["window"]
  assert (l, t, r, b) == (150, 125, 350, 312)
  assert max(res.image.size) <= 512 and res.image.size == (r - l, b - t)
  assert isinstance(res.text, str) and res.text.startswith(name) and "\n" not in res.text
  if name == "segmentation":
    mask = res.info["mask"]
    assert mask.shape == (H, W) and mask.dtype == bool and mask[t:b, l:r].any()
    assert outside_identical(np.zeros((H, W), bool), mask, (l, t, r, b))
  else:
    edited = np.asarray(res.info["edited"])
    assert outside_identical(img, edited, (l, t, r, b))            # bit-exact outside the box
    assert not np.array_equal(edited[t:b, l:r], img[t:b, l:r])     # and the box did change
    assert np.array_equal(np.asarray(res.info["region"]), edited[t:b, l:r])
  assert np.array_equal(np.asarray(sc.read_original((0, 0, W, H))), img)   # the scene itself is untouched


def test_large_boxes_are_shown_at_most_512():
  sc = SceneImage.from_original(Image.new("RGB", (1600, 800), (90, 120, 80)))
  res = downstream_registry().call("image_editing", sc, {"bbox_2d": [0, 0, 400, 256], "operation": "blur"})
  assert res.ok and res.info["window"] == [0, 0, 1250, 800] and res.image.size == (512, 327)


@pytest.mark.parametrize("method,gain", [("nl_means", 8.0), ("tv", 8.0)])
def test_denoising_raises_psnr(method, gain, clean):
  rng = np.random.default_rng(2)
  clean8 = u8(clean)
  noisy = np.clip(clean8 + rng.normal(0, 20, clean8.shape), 0, 255).astype(np.uint8)
  res = downstream_registry().call("denoising", scene_of(noisy), {"bbox_2d": BOX, "method": method})
  assert res.ok, res.error
  l, t, r, b = res.info["window"]
  before = psnr(noisy[t:b, l:r], clean8[t:b, l:r])
  after = psnr(np.asarray(res.info["edited"])[t:b, l:r], clean8[t:b, l:r])
  assert after > before + gain, (method, before, after)
  assert 17 < res.info["sigma"] < 23      # Immerkær's estimate of the true std 20


def test_noise_sigma_estimate():
  rng = np.random.default_rng(3)
  flat = np.full((200, 200, 3), 0.5)
  for s in (0.02, 0.05, 0.1):
    assert M.noise_sigma(flat + rng.normal(0, s, flat.shape)) == pytest.approx(s, rel=0.05)
  assert M.noise_sigma(flat) == 0.0


def test_cloud_removal_restores_a_hazy_scene(clean):
  """Haze by the atmospheric scattering model I = J t + A (1 - t): thin cloud over the box (t >= 0.35) and an
  almost opaque cloud elsewhere in the scene (t = 0.03), where the tool finds A in the global view."""
  yy, xx = np.mgrid[0:H, 0:W]
  t = 1 - 0.65 * np.exp(-(((xx - 250) / 260.0) ** 2 + ((yy - 220) / 200.0) ** 2))
  t = np.minimum(t, 1 - 0.97 * np.exp(-(((xx - 650) / 70.0) ** 2 + ((yy - 470) / 60.0) ** 2)))
  a = np.array([0.92, 0.93, 0.95])
  hazy = u8(clean * t[..., None] + a * (1 - t[..., None]))
  clean8 = u8(clean)
  res = downstream_registry().call("cloud_removal", scene_of(hazy), {"bbox_2d": BOX})
  assert res.ok, res.error
  l, t0, r, b = res.info["window"]
  out = np.asarray(res.info["edited"])[t0:b, l:r]
  box_h, box_c = hazy[t0:b, l:r], clean8[t0:b, l:r]
  assert psnr(box_h, box_c) < 9 and psnr(out, box_c) > 28   # measured 8.0 dB -> 31.7 dB
  assert out.std() > 2 * box_h.std()                        # RMS contrast restored (18.6 -> 40.8; clean 39.8)
  assert abs(out.std() - box_c.std()) < 0.1 * box_c.std()
  dc_h, dc_o = M.dark_channel(box_h / 255.0).mean(), M.dark_channel(out / 255.0).mean()
  assert dc_o < dc_h - 0.4 and dc_o < 0.12                  # the dark channel of a haze-free scene is ~0
  assert res.info["dark_channel_after"] == pytest.approx(dc_o)
  assert np.allclose(res.info["airlight"], a, atol=0.03)    # the atmospheric light, from the opaque cloud


@pytest.mark.parametrize("method", ["otsu", "felzenszwalb"])
def test_segmentation_finds_the_objects(method, objects):
  img, obj = objects
  res = downstream_registry().call("segmentation", scene_of(img), {"bbox_2d": BOX, "method": method})
  assert res.ok, res.error
  l, t, r, b = res.info["window"]
  gt = np.zeros_like(obj)
  gt[t:b, l:r] = obj[t:b, l:r]
  mask = res.info["mask"]
  iou = (mask & gt).sum() / (mask | gt).sum()
  assert iou >= 0.9, iou
  assert len(res.info["objects"]) == 4 and "4 object(s)" in res.text     # 3 discs + the bar inside the box
  assert [179, 149, 222, 192] in res.info["objects"]                     # the disc at (200, 170), r 22


def test_segmentation_of_plain_ground_is_empty(objects):
  img, _ = objects
  res = downstream_registry().call("segmentation", scene_of(img), {"bbox_2d": [300, 20, 400, 80]})
  assert res.ok and not res.info["mask"].any() and res.info["objects"] == [] and "0 object(s)" in res.text


def test_remove_fills_the_box_from_the_background(objects):
  img, obj = objects
  ground = img[~obj].astype(np.float64).mean(axis=0)
  box = [230, 240, 310, 300]      # around the disc at (420, 420), r 25 -> original [359, 375, 485, 469]
  res = downstream_registry().call("image_editing", scene_of(img), {"bbox_2d": box, "operation": "remove"})
  assert res.ok, res.error
  l, t, r, b = res.info["window"]
  assert obj[t:b, l:r].sum() > 1500                                       # the object was in the box
  out = np.asarray(res.info["edited"]).astype(np.float64)[t:b, l:r]
  red = (out[..., 0] > 150) & (out[..., 1] < 90)
  assert red.sum() == 0                                                   # ... and is gone
  assert np.abs(out.reshape(-1, 3).mean(axis=0) - ground).max() < 3.0    # the box matches the ground
  assert np.abs(out - ground).max() < 15.0
  seg = downstream_registry().call("segmentation", SceneImage.from_original(res.info["edited"]), {"bbox_2d": box})
  assert seg.ok and seg.info["objects"] == []


def test_blur_lowers_high_frequencies(objects):
  img, _ = objects
  res = downstream_registry().call("image_editing", scene_of(img), {"bbox_2d": BOX, "operation": "blur"})
  l, t, r, b = res.info["window"]
  lap = lambda a: np.abs(np.diff(a.astype(np.float64), 2, axis=0)).mean()  # noqa: E731
  assert res.ok and lap(np.asarray(res.info["edited"])[t:b, l:r]) < 0.3 * lap(img[t:b, l:r])


BAD_ARGUMENTS = [
    ("missing bbox", {}),
    ("3 numbers", {"bbox_2d": [1, 2, 3]}),
    ("NaN", {"bbox_2d": [float("nan"), 2, 30, 40]}),
    ("inf", {"bbox_2d": [0, 2, float("inf"), 40]}),
    ("outside", {"bbox_2d": [600, 400, 700, 500]}),
    ("empty", {"bbox_2d": [10, 10, 10, 50]}),
    ("words", {"bbox_2d": ["a", "b", "c", "d"]}),
    ("bools", {"bbox_2d": [True, 0, 1, 1]}),
    ("nested", {"bbox_2d": [[1, 2], [3, 4]]}),
    ("not an object", [1, 2, 3, 4]),
    ("a string", "bbox_2d"),
    ("None", None),
]


@pytest.mark.parametrize("name", DOWNSTREAM_TOOLS)
@pytest.mark.parametrize("why,args", BAD_ARGUMENTS, ids=[w for w, _ in BAD_ARGUMENTS])
def test_bad_arguments_give_an_error_result(name, why, args):
  sc = scene_of(np.full((60, 80, 3), 128, np.uint8))
  if isinstance(args, dict) and name == "image_editing":
    args = {**args, "operation": "remove"}
  res = downstream_registry().call(name, sc, args)
  assert not res.ok and res.error and res.text.startswith("Error:") and res.image is None, (why, res)


@pytest.mark.parametrize("name,args", [
    ("denoising", {"method": "median"}), ("denoising", {"sigma": -3}), ("denoising", {"sigma": "high"}),
    ("segmentation", {"method": 7}), ("cloud_removal", {"omega": 3.0}), ("cloud_removal", {"omega": float("nan")}),
    ("image_editing", {"operation": "recolour"}), ("image_editing", {}), ("image_editing", {"operation": None}),
    ("no_such_tool", {}),
])
def test_unknown_options_give_an_error_result(name, args):
  res = downstream_registry().call(name, scene_of(np.full((60, 80, 3), 128, np.uint8)), {"bbox_2d": [5, 5, 40, 40],
                                                                                         **args})
  assert not res.ok and res.error


def test_degenerate_boxes_give_an_error_result():
  sc = scene_of(np.full((60, 80, 3), 128, np.uint8))
  reg = downstream_registry()
  for name in ("denoising", "segmentation", "cloud_removal"):
    res = reg.call(name, sc, {"bbox_2d": [5, 5, 6, 6]})              # a 1x1 px box
    assert not res.ok and "px" in res.error
  res = reg.call("image_editing", sc, {"bbox_2d": [0, 0, 80, 60], "operation": "remove"})
  assert not res.ok and "surrounding" in res.error                   # nothing around the box to fill from
  small = downstream_registry(tools=[])
  small.get("denoising").max_region_pixels = 100
  res = small.call("denoising", sc, {"bbox_2d": [0, 0, 40, 40]})
  assert not res.ok and "smaller box" in res.error


def test_function_tool_plugin(objects):
  img, obj = objects
  invert = FunctionTool("invert", lambda region, args: Image.fromarray(255 - np.asarray(region)),
                        description="Invert the colours of a region.")
  redness = FunctionTool("red_mask", lambda region, args: np.asarray(region)[..., 0] > 150)
  count = FunctionTool("count", lambda region, args: f"{region.width}x{region.height}")
  def boom(region, args):
    raise RuntimeError("model crashed")
  reg = downstream_registry(tools=[invert, redness, count, FunctionTool("boom", boom),
                                   FunctionTool("bad", lambda region, args: 42)])
  assert {"invert", "red_mask", "count", "boom", "bad"} <= set(reg.names())
  assert reg.get("invert").schema()["function"]["description"] == "Invert the colours of a region."
  sc = scene_of(img)
  res = reg.call("invert", sc, {"bbox_2d": BOX})
  l, t, r, b = res.info["window"]
  edited = np.asarray(res.info["edited"])
  assert res.ok and outside_identical(img, edited, (l, t, r, b)) and np.array_equal(edited[t:b, l:r], 255 - img[t:b, l:r])
  res = reg.call("red_mask", sc, {"bbox_2d": BOX})
  assert res.ok and np.array_equal(res.info["mask"][t:b, l:r], obj[t:b, l:r]) and not res.info["mask"][:t].any()
  assert reg.call("count", sc, {"bbox_2d": BOX}).text == f"{r - l}x{b - t}"
  for name in ("boom", "bad"):
    res = reg.call(name, sc, {"bbox_2d": BOX})
    assert not res.ok and ("model crashed" in res.error if name == "boom" else "expected" in res.error)
  res = reg.call("count", sc, {"bbox_2d": [1, 2, 3]})
  assert not res.ok


PLUGIN_MODULE = '''
import numpy as np
from PIL import Image
from zoomjax.tools import FunctionTool

def make_tools():
  return [FunctionTool("brighten", lambda region, args: Image.fromarray(np.minimum(np.asarray(region).astype(int) + 10, 255).astype(np.uint8)),
                       description="Brighten a region.")]

NOT_A_TOOL = 3
'''


def _fake_dist(root, entry_points: str):
  (root / "zj_plugin_under_test.py").write_text(PLUGIN_MODULE)
  info = root / "zj_plugin_under_test-0.1.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zj-plugin-under-test\nVersion: 0.1\n")
  (info / "entry_points.txt").write_text(entry_points)


def test_entry_point_plugin_loads(tmp_path, monkeypatch):
  _fake_dist(tmp_path, "[zoomjax.tools]\nbrighten = zj_plugin_under_test:make_tools\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, "zj_plugin_under_test", raising=False)
  assert [ep.name for ep in importlib.metadata.entry_points(group="zoomjax.tools")] == ["brighten"]
  assert "brighten" not in downstream_registry().names()
  reg = downstream_registry(load_entry_points=True)
  assert reg.names()[-1] == "brighten" and "Brighten a region." in json.dumps(reg.schemas())
  img = np.full((60, 80, 3), 100, np.uint8)
  res = reg.call("brighten", scene_of(img), {"bbox_2d": [0, 0, 40, 30]})
  assert res.ok and np.asarray(res.info["edited"])[10, 10, 0] == 110 and np.asarray(res.info["edited"])[50, 70, 0] == 100


@pytest.mark.parametrize("target,msg", [("zj_plugin_under_test:NOT_A_TOOL", "must give a Tool"),
                                        ("zj_plugin_missing_module:x", "cannot load")])
def test_broken_entry_point_is_reported(tmp_path, monkeypatch, target, msg):
  _fake_dist(tmp_path, f"[zoomjax.tools]\nbroken = {target}\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, "zj_plugin_under_test", raising=False)
  with pytest.raises(PluginError, match=msg):
    downstream_registry(load_entry_points=True)


def test_run_on_box_writes_before_and_after(objects, tmp_path):
  img, _ = objects
  rows = run_on_box(downstream_registry(), ["denoising", "segmentation", "image_editing", "nope"], scene_of(img),
                    BOX, tmp_path, stem="q1_")
  assert [r["ok"] for r in rows] == [True, True, True, False] and "nope" in rows[3]["error"]
  for r in rows[:3]:
    assert r["before"].endswith(f"q1_{r['name']}_before.png") and r["after"].endswith(f"q1_{r['name']}_after.png")
    with Image.open(r["before"]) as b, Image.open(r["after"]) as a:
      assert b.size == a.size == (200, 187)
  with Image.open(rows[0]["before"]) as b:
    assert np.array_equal(np.asarray(b), img[125:312, 150:350])


def test_result_types():
  res = downstream_registry().call("segmentation", scene_of(np.full((60, 80, 3), 128, np.uint8)),
                                   {"bbox_2d": [5, 5, 40, 40], "label": "ships"})   # extra keys are ignored
  assert isinstance(res, ToolResult) and res.ok and res.info["box_global"] == [5.0, 5.0, 40.0, 40.0]


@pytest.mark.slow
def test_multiturn_rollout_lists_and_runs_the_downstream_tools(objects):
  """A tiny model forced (logit bias) to call `segmentation` then answer: the prompt holds every registered
  schema, the loop runs the tool, and its image and summary come back as the `<tool_response>`."""
  img, _ = objects
  reg = downstream_registry(full_copy=False)
  args = {"bbox_2d": [96, 80, 224, 200]}
  res = reg.call("segmentation", scene_of(img), args)
  call = "<think>segment</think>\n" + P.tool_call_text("segmentation", args)
  final = "<think>ok</think>\n<answer>4</answer>"
  rendered = P.render_multiturn_trajectory("How many?", [call, final], [[P.IMAGE, res.text]],
                                           tools=reg.schemas(), max_turns=1)
  tok = train_tokenizer([rendered.text] * 4, vocab_size=600)
  cfg = ModelConfig.tiny(vocab_size=padded_vocab_size(tok), **special_ids(tok))
  small = dict(min_pixels=28 * 28, max_pixels=56 * 56 * 4)
  counts = [int(np.prod(preprocess_image(im, **small)[1])) // 4 for im in (scene_of(img).view, res.image)]
  ids, mask = P.encode_segments(rendered, lambda s: tok.encode(s, add_special_tokens=False).ids, counts,
                                tok.token_to_id(P.IMAGE_PAD))
  im_end = tok.token_to_id(P.IM_END)
  table = jnp.asarray(np.where(np.asarray(mask) == 1, ids, im_end)[None].repeat(round_up(1, 1), 0))
  force = lambda logits, n: jnp.where(  # noqa: E731
      jnp.arange(logits.shape[-1])[None] == table[jnp.arange(logits.shape[0]), jnp.clip(n, 0, len(ids) - 1)][:, None],
      1e4, -1e4)
  (traj,) = rollout(Generator(cfg, init_params(cfg, jax.random.key(0))), tok, [Request(Image.fromarray(img), "How many?")],
                    LoopConfig(protocol="multiturn", max_turns=1, max_new_tokens=64, max_total_tokens=4096, **small),
                    registry=reg, logits_processor=force)
  np.testing.assert_array_equal(traj.token_ids, ids)
  np.testing.assert_array_equal(traj.loss_mask, mask)
  assert traj.answer == "4" and traj.stop_reason == "answer" and traj.num_zooms == 0
  (got,) = traj.tool_results
  assert got.ok and got.text == res.text and np.array_equal(got.info["mask"], res.info["mask"])
  assert all(json.dumps(s, ensure_ascii=False) in tok.decode(traj.token_ids[:traj.prompt_len].tolist())
             for s in reg.schemas())


def test_infer_tools_flag_checks_names_before_loading(tmp_path, capsys):
  img = tmp_path / "scene.png"
  Image.new("RGB", (64, 48), (10, 20, 30)).save(img)
  rc = infer_main(["--model", str(tmp_path / "no_model"), "--image", str(img), "--question", "q",
                   "--tools", "denoising,sharpening"])
  err = capsys.readouterr().err
  assert rc == 2 and err.startswith("error: --tools") and "sharpening" in err and "segmentation" in err


@pytest.mark.slow
def test_infer_tools_without_a_box_exits_1(tmp_path, capsys):
  tok = train_tokenizer([P.render_prompt("What is it?", "released").text] * 4, vocab_size=600)
  save_tokenizer(tok, tmp_path / "m")
  cfg = ModelConfig.tiny(vocab_size=padded_vocab_size(tok), **special_ids(tok))
  hf.save(tmp_path / "m", cfg, init_params(cfg, jax.random.key(0)))
  img = tmp_path / "scene.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(img)
  rc = infer_main(["--model", str(tmp_path / "m"), "--image", str(img), "--question", "What is it?", "--json",
                   "--max-new-tokens", "4", "--max-pixels", str(56 * 56 * 4), "--tools", "denoising",
                   "--tools-out", str(tmp_path / "png")])
  out, err = capsys.readouterr()
  res = json.loads(out.strip().splitlines()[-1])
  assert rc == 1 and res["tools"] == [] and res["boxes_global"] == [] and "requested no box" in err
