"""Reward kernels (SPEC §4) against hand-computed values, both variants; format reward."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoomjax import rewards
from zoomjax.rl.format import format_reward, format_rewards, has_box
from zoomjax.rl.rewards import RewardConfig, crop_windows, window_iou


def sig(x):
  return 1.0 / (1.0 + math.exp(-x))


# pred, gt, plain IoU, centre distance — all by hand.
CASES = [
    ("no overlap", [0, 0, 10, 10], [20, 20, 30, 30], 0.0, math.sqrt(800.0)),
    ("containment", [0, 0, 10, 10], [2, 2, 4, 4], 4.0 / 100.0, math.sqrt(8.0)),
    ("identical", [0, 0, 10, 10], [0, 0, 10, 10], 1.0, 0.0),
    ("half shift", [0, 0, 10, 10], [5, 0, 15, 10], 50.0 / 150.0, 5.0),
    ("zero-width pred", [5, 5, 5, 20], [0, 0, 10, 10], 0.0, math.hypot(0.0, 7.5)),
    ("inverted pred", [10, 10, 0, 0], [0, 0, 10, 10], 0.0, 0.0),
]
P = np.array([c[1] for c in CASES], np.float32)
G = np.array([c[2] for c in CASES], np.float32)
IOU = np.array([c[3] for c in CASES], np.float32)
D = np.array([c[4] for c in CASES], np.float64)


def test_iou_hand_values():
  got = np.asarray(rewards.iou(P, G))
  assert got.dtype == np.float32 and got.shape == (len(CASES),)
  np.testing.assert_allclose(got, IOU, rtol=1e-6, atol=1e-7)


def test_region_guided_paper_and_released():
  paper = np.asarray(rewards.region_guided(P, G, variant="paper", alpha=200.0, eps=0.2))
  np.testing.assert_allclose(paper, [sig(200.0 / (d + 0.2)) for d in D], rtol=1e-6)
  released = np.asarray(rewards.region_guided(P, G, variant="released"))
  np.testing.assert_allclose(released, [math.tanh(200.0 / (d + 1e-6)) for d in D], rtol=1e-6)
  # far away: paper tends to sigmoid(0) = 0.5, released to tanh(0) = 0
  far = np.array([[1e6, 1e6, 1e6 + 1, 1e6 + 1]], np.float32)
  z = np.zeros((1, 4), np.float32)
  assert abs(float(rewards.region_guided(far, z)[0]) - sig(200.0 / (math.sqrt(2) * (1e6 + 0.5)))) < 1e-6
  assert float(rewards.region_guided(far, z, variant="released")[0]) < 2e-4


def test_alpha_per_row_array():
  alpha = jnp.array([0.0, 1.0, 50.0, 200.0, 400.0, 10.0], jnp.float32)
  got = np.asarray(rewards.region_guided(P, G, alpha=alpha))
  want = [sig(a / (d + 0.2)) for a, d in zip(np.asarray(alpha), D)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[0] == pytest.approx(0.5)      # alpha = 0 -> sigmoid(0)


def test_masks_and_non_finite_give_zero_box_terms():
  p = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [np.nan, 0, 1, 1], [0, 0, np.inf, 1]], np.float32)
  g = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
  pv = np.array([False, True, True, True])
  gv = np.array([True, False, True, True])
  for fn in (lambda: rewards.iou(p, g, pv, gv),
             lambda: rewards.region_guided(p, g, "paper", 200.0, 0.2, pv, gv),
             lambda: rewards.region_guided(p, g, "released", pred_valid=pv, gt_valid=gv),
             lambda: window_iou(p, g, np.full((4, 2), 100.0), pv, gv)):
    out = np.asarray(fn())
    assert np.all(out == 0.0) and not np.any(np.isnan(out))


def test_degenerate_boxes_never_nan():
  rng = np.random.default_rng(0)
  p = rng.uniform(-5, 5, (512, 4)).astype(np.float32)
  p[::3, 2] = p[::3, 0]              # zero width
  p[1::3] = p[1::3, ::-1]            # inverted
  g = np.where(rng.random((512, 1)) < 0.5, p, rng.uniform(-5, 5, (512, 4))).astype(np.float32)
  wh = np.zeros((512, 2), np.float32)   # even a zero-size image
  for variant in ("paper", "released"):
    out = rewards.total(RewardConfig(variant=variant), p, g, np.zeros(512), np.zeros(512),
                        image_wh=wh)
    for k, v in out.items():
      assert not np.any(np.isnan(np.asarray(v))), (variant, k)


def test_crop_windows_hand_values():
  boxes = np.array([
      [100, 100, 110, 110],      # small, near the top-left corner: shifted right/down to 0
      [950, 700, 990, 790],      # small, near the bottom-right: shifted left/up inside
      [100, 50, 800, 700],       # >= 512 on both sides: the box itself
      [100, 50, 800, 300],       # one side < 512: a 512 square
      [10.9, 10.9, 20.9, 20.9],  # truncated to ints first: centre (10 + 20) // 2 = 15
  ], np.float32)
  wh = np.array([[4000, 4000], [1000, 800], [4000, 4000], [4000, 4000], [300, 4000]], np.float32)
  got = np.asarray(crop_windows(boxes, wh))
  want = [[0, 0, 512, 512], [488, 288, 1000, 800], [100, 50, 800, 700], [194, 0, 706, 512],
          [0, 0, 300, 512]]
  np.testing.assert_array_equal(got, np.array(want, np.float32))


def test_crop_windows_match_the_data_crop_rule():
  from zoomjax.data import boxes as boxes_mod
  rng = np.random.default_rng(1)
  for _ in range(300):
    w, h = (int(v) for v in rng.integers(200, 9000, 2))
    b = rng.uniform(-100, max(w, h) + 100, 4).astype(np.float32)
    if rng.random() < 0.5:
      b[2:] = b[:2] + rng.uniform(0, 800, 2).astype(np.float32)
    want = boxes_mod.crop_window(b.astype(np.float64), w, h)
    got = np.asarray(crop_windows(b, np.array([w, h], np.float32)))
    np.testing.assert_array_equal(got, np.array(want, np.float32))


def test_released_window_iou_and_exact_match():
  wh = np.full((3, 2), 4000.0, np.float32)
  p = np.array([[100, 100, 110, 110], [0, 0, 10, 10], [10, 10, 10, 10]], np.float32)
  g = np.array([[600, 100, 700, 200], [0, 0, 10, 10], [10, 10, 10, 10]], np.float32)
  # windows [0,0,512,512] and [394,0,906,512]: overlap 118 x 512
  got = np.asarray(window_iou(p, g, wh))
  np.testing.assert_allclose(got, [118.0 / (1024.0 - 118.0), 1.0, 1.0], rtol=1e-6)
  out = rewards.total(RewardConfig.released(), p, g, np.zeros(3), np.zeros(3), image_wh=wh)
  box = np.asarray(out["box"])
  assert box[1] == 2.0 and box[2] == 2.0        # exact match -> IoU + RG = 2 (even a point box)
  d0 = math.hypot(650 - 105, 150 - 105)
  assert box[0] == pytest.approx(118.0 / 906.0 + math.tanh(200.0 / (d0 + 1e-6)), rel=1e-6)


def test_total_paper_and_released():
  ans = np.linspace(0.0, 1.0, len(CASES)).astype(np.float32)
  fmt = np.array([1, 0, 1, 1, 0, 1], np.float32)
  out = rewards.total(RewardConfig.paper(), P, G, ans, fmt)
  rg = np.array([sig(200.0 / (d + 0.2)) for d in D])
  np.testing.assert_allclose(np.asarray(out["iou"]), IOU, atol=1e-7)
  np.testing.assert_allclose(np.asarray(out["region_guided"]), rg, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out["total"]), IOU + rg + ans + 0.05 * fmt, rtol=1e-6)
  assert set(out) == {"iou", "region_guided", "box", "answer", "format", "total"}

  wh = np.full((len(CASES), 2), 4000.0, np.float32)
  out = rewards.total(RewardConfig.released(), P, G, ans, fmt, image_wh=wh)
  parts = sum(np.asarray(out[k]) for k in ("iou", "region_guided", "answer", "format"))
  np.testing.assert_allclose(np.asarray(out["total"]), parts, rtol=1e-6)   # unweighted sum
  # no predicted box / global question: box terms vanish, answer and format stay
  out = rewards.total(RewardConfig.released(), P, G, ans, fmt, pred_valid=np.zeros(6, bool),
                      image_wh=wh)
  np.testing.assert_allclose(np.asarray(out["total"]), ans + fmt, rtol=1e-6)
  out = rewards.total(RewardConfig.paper(), P, G, ans, fmt, gt_valid=np.zeros(6, bool))
  np.testing.assert_allclose(np.asarray(out["total"]), ans + 0.05 * fmt, rtol=1e-6)


def test_alpha_k_resolution():
  wh = np.array([[5000, 3000]] * len(CASES), np.float32)
  out = rewards.total(RewardConfig(alpha_k=0.04), P, G, np.zeros(6), np.zeros(6), image_wh=wh)
  np.testing.assert_allclose(np.asarray(out["region_guided"]),
                             [sig(200.0 / (d + 0.2)) for d in D], rtol=1e-6)
  with pytest.raises(ValueError):
    rewards.total(RewardConfig(alpha_k=0.04), P, G, np.zeros(6), np.zeros(6))
  with pytest.raises(ValueError):
    RewardConfig(variant="nope")


def test_jit_and_vmap():
  np.testing.assert_allclose(np.asarray(jax.vmap(rewards.iou)(P, G)), IOU, atol=1e-7)
  alpha = jnp.arange(6, dtype=jnp.float32) * 40.0
  v = jax.vmap(lambda p, g, a: rewards.region_guided(p, g, alpha=a))(P, G, alpha)
  np.testing.assert_allclose(np.asarray(v), np.asarray(rewards.region_guided(P, G, alpha=alpha)),
                             rtol=1e-6)
  # a group axis on top: [G, B, 4]
  cfg = RewardConfig.released()
  wh = jnp.full((2, 6, 2), 4000.0)
  f = jax.jit(jax.vmap(lambda p, g, w: rewards.total(cfg, p, g, jnp.zeros(6), jnp.ones(6),
                                                     image_wh=w)["total"]))
  out = np.asarray(f(jnp.stack([P, P]), jnp.stack([G, G]), wh))
  assert out.shape == (2, 6) and out.dtype == np.float32
  np.testing.assert_allclose(out[0], out[1])


# ---------------------------------------------------------------- format reward
BOX = '[{"bbox_2d": [10, 20, 110, 220], "label": "ship"}]'


@pytest.mark.parametrize("stages,protocol,want", [
    (["<think>look</think><answer>port</answer>"], "released", 1.0),
    (["<think>look</think><answer>port</answer>", ""], "released", 1.0),   # "" = no 2nd stage
    (["<think>look</think>"], "released", 0.0),
    (["<answer>port</answer>"], "released", 0.0),
    (["<think> </think><answer>port</answer>"], "released", 0.0),          # empty think
    ([f"<think>zoom {BOX}</think>", "<think>ok</think><answer>ship</answer>"], "released", 1.0),
    (["<think>zoom</think>", "<think>ok</think><answer>ship</answer>"], "released", 0.0),  # no box
    ([f"<think>zoom {BOX}</think>", "<answer>ship</answer>"], "released", 0.0),
    ([f'<think>z</think>{BOX.replace("110, 220", "110")}', "<think>o</think><answer>s</answer>"],
     "released", 0.0),                                                     # 3 numbers
    ([f"<think>zoom {BOX}</think>", f"<think>again {BOX}</think>", "<think>ok</think><answer>s</answer>"],
     "released", 0.0),                                                     # released has two stages at most
    (["<think>a</think><tool_call>{\"name\": \"crop_and_zoom\", \"arguments\": "
      "{\"bbox_2d\": [1, 2, 3, 4]}}</tool_call>", "<think>b</think><answer>c</answer>"],
     "multiturn", 1.0),
    (["<think>a</think><tool_call>{\"name\": \"crop_and_zoom\"}</tool_call>",
      "<think>b</think><answer>c</answer>"], "multiturn", 0.0),
    ("<think>a</think><answer>b</answer>", "multiturn", 1.0),
    ([None, 3], "released", 0.0),
])
def test_format_reward(stages, protocol, want):
  assert format_reward(stages, protocol) == want


def test_format_rewards_batch_and_box():
  out = format_rewards(["<think>a</think><answer>b</answer>", "nothing"])
  assert out.dtype == np.float32 and out.tolist() == [1.0, 0.0]
  assert has_box('"bbox_2d": [1.5, 2, 3e2, 4]') and not has_box('"bbox_2d": [1, 2, x, 4]')
