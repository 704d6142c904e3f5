"""GRPO reward kernels (SPEC §4): box IoU, Region-Guided distance reward and the total, on device.

Boxes are `float32[B, 4]` rows `[x1, y1, x2, y2]`, prediction and ground truth in the **same frame**
(original pixels for training rewards: map the model's global-view box with `scale = max(W, H) / 512`
and the LRS-GRO 1024-frame box with `max(W, H) / 1024` first; `zoomjax.data.boxes` has both).
Every function is jit-compiled, works row-wise (no Python loop over B, so it also `vmap`s over rows of
shape `[4]`), runs in float32 and never yields NaN: a zero-area or inverted box has area 0, a union of 0
gives IoU 0, and rows that are masked out (no predicted box, empty ground truth, non-finite numbers)
get 0 for every box term.

Two variants, selected by `RewardConfig.variant` (SPEC §4 table):

| term | `paper` | `released` |
|---|---|---|
| r_IoU | plain IoU | IoU of the two boxes' crop windows (below), image size needed |
| r_RG  | `sigmoid(alpha / (d + eps))`, alpha = k·resolution or a constant | `tanh(scale / (d + 1e-6))`, scale = 200 |
| exact match | — | identical boxes give r_IoU + r_RG = 2 |
| total | `r_IoU + r_RG + r_answer + beta·r_format`, beta = 0.05 | unweighted sum |

`d` is the distance between box centres. The crop window is the crop rule of SPEC §3 (as
`zoomjax.data.boxes.crop_window`): truncate to ints, order the corners, clamp to the image; if the box is
narrower or lower than `min_window` (512) take a `min_window` square centred on the integer centre
`(x1 + x2) // 2`, shifted to stay inside the image (the whole side when the image is smaller);
otherwise the box itself. (The released reward's `get_crop_area` instead clamps the window at 0 without
shifting it and ignores the right/bottom edges; zoomjax scores the window that is actually cropped.
Its exact-match test also compares the raw global-view box with the raw 1024-frame ground truth, two
different frames; zoomjax compares the two boxes in the common frame they are given in — identical
boxes then score IoU 1 and tanh(200 / 1e-6) = 1 anyway, the override only guards degenerate windows.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp

VARIANTS = ("paper", "released")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """Reward constants (static under jit). Paper symbols: alpha (α), eps (ε), format_weight (β).

  variant: "paper" | "released".
  alpha: paper Region-Guided scale α when `alpha_k` is None.
  alpha_k: paper α = alpha_k · resolution, resolution = the image's long side in pixels (needs
    `image_wh`); None uses the constant `alpha`. (The paper gives α = k·resolution without k; with
    alpha_k = 0.04 a typical 5000-px LRS-GRO image gets the α = 200 of the paper's example plot.)
  eps: paper ε in `sigmoid(α / (d + ε))`.
  released_scale, released_eps: released `tanh(released_scale / (d + released_eps))`.
  min_window: released IoU crop-window side (pixels of the boxes' frame).
  format_weight: β on the format reward; None = the variant's (0.05 paper, 1.0 released).
  """
  variant: str = "paper"
  alpha: float = 200.0
  alpha_k: Optional[float] = None
  eps: float = 0.2
  released_scale: float = 200.0
  released_eps: float = 1e-6
  min_window: float = 512.0
  format_weight: Optional[float] = None

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
    for name in ("eps", "released_eps", "min_window"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

  @property
  def beta(self) -> float:
    if self.format_weight is not None:
      return float(self.format_weight)
    return 0.05 if self.variant == "paper" else 1.0

  @classmethod
  def paper(cls, **kw) -> "RewardConfig":
    return cls(variant="paper", **kw)

  @classmethod
  def released(cls, **kw) -> "RewardConfig":
    return cls(variant="released", **kw)


def _f32(x) -> jax.Array:
  return jnp.asarray(x, dtype=jnp.float32)


def _area(b: jax.Array) -> jax.Array:
  return jnp.maximum(b[..., 2] - b[..., 0], 0.0) * jnp.maximum(b[..., 3] - b[..., 1], 0.0)


def _iou(a: jax.Array, b: jax.Array) -> jax.Array:
  iw = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
  ih = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0.0)
  inter = iw * ih
  union = _area(a) + _area(b) - inter
  ok = union > 0.0
  return jnp.where(ok, inter / jnp.where(ok, union, 1.0), 0.0)


def _valid(box: jax.Array, mask) -> jax.Array:
  ok = jnp.all(jnp.isfinite(box), axis=-1)
  return ok if mask is None else ok & jnp.asarray(mask, dtype=bool)


def _clean(box: jax.Array, ok: jax.Array) -> jax.Array:
  return jnp.where(ok[..., None], box, 0.0)


def _centre_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  dx = 0.5 * (a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2])
  dy = 0.5 * (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3])
  return jnp.sqrt(dx * dx + dy * dy)


@jax.jit
def iou(pred, gt, pred_valid=None, gt_valid=None) -> jax.Array:
  """Plain IoU of `float32[..., 4]` boxes -> `float32[...]`; 0 for masked-out or non-finite rows.

  An inverted box (x2 < x1 or y2 < y1) is empty, not re-ordered.
  """
  pred, gt = _f32(pred), _f32(gt)
  ok = _valid(pred, pred_valid) & _valid(gt, gt_valid)
  return jnp.where(ok, _iou(_clean(pred, ok), _clean(gt, ok)), 0.0)


@functools.partial(jax.jit, static_argnames=("min_size",))
def crop_windows(boxes, image_wh, min_size: float = 512.0) -> jax.Array:
  """The crop rule of SPEC §3 on `float32[..., 4]` boxes in an image of size `image_wh float32[..., 2]`.

  Equal to `zoomjax.data.boxes.crop_window` row by row (integer-valued float32 windows).
  """
  b = jnp.trunc(_f32(boxes))
  wh = _f32(image_wh)
  w, h = wh[..., 0], wh[..., 1]
  x1 = jnp.clip(jnp.minimum(b[..., 0], b[..., 2]), 0.0, w)
  x2 = jnp.clip(jnp.maximum(b[..., 0], b[..., 2]), 0.0, w)
  y1 = jnp.clip(jnp.minimum(b[..., 1], b[..., 3]), 0.0, h)
  y2 = jnp.clip(jnp.maximum(b[..., 1], b[..., 3]), 0.0, h)
  half = float(int(min_size) // 2)

  def window(lo, hi, limit):
    a = jnp.floor((lo + hi) / 2.0) - half
    a = jnp.clip(a, 0.0, jnp.maximum(limit - min_size, 0.0))
    return a, jnp.minimum(a + min_size, limit)

  small = (x2 - x1 < min_size) | (y2 - y1 < min_size)
  wx1, wx2 = window(x1, x2, w)
  wy1, wy2 = window(y1, y2, h)
  return jnp.stack([jnp.where(small, wx1, x1), jnp.where(small, wy1, y1),
                    jnp.where(small, wx2, x2), jnp.where(small, wy2, y2)], axis=-1)


@functools.partial(jax.jit, static_argnames=("min_size",))
def window_iou(pred, gt, image_wh, pred_valid=None, gt_valid=None, min_size: float = 512.0):
  """Released r_IoU: IoU of the two boxes' crop windows; identical boxes score 1 -> `float32[...]`."""
  pred, gt = _f32(pred), _f32(gt)
  ok = _valid(pred, pred_valid) & _valid(gt, gt_valid)
  pred, gt = _clean(pred, ok), _clean(gt, ok)
  v = _iou(crop_windows(pred, image_wh, min_size), crop_windows(gt, image_wh, min_size))
  v = jnp.where(jnp.all(pred == gt, axis=-1), 1.0, v)
  return jnp.where(ok, v, 0.0)


@functools.partial(jax.jit, static_argnames=("variant",))
def region_guided(pred, gt, variant: str = "paper", alpha=200.0, eps=None, pred_valid=None,
                  gt_valid=None) -> jax.Array:
  """Region-Guided reward of `float32[..., 4]` boxes -> `float32[...]`; 0 for masked-out rows.

  paper: `sigmoid(alpha / (d + eps))`, `eps` default 0.2, `alpha` a scalar or `float32[B]`
  (α = k·resolution per image); in (0.5, 1], 1 at d = 0.
  released: `tanh(alpha / (d + eps))` with the released alpha = 200, eps default 1e-6; in [0, 1].
  `d` is the distance between the box centres, in the boxes' frame.
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  pred, gt = _f32(pred), _f32(gt)
  ok = _valid(pred, pred_valid) & _valid(gt, gt_valid)
  d = _centre_distance(_clean(pred, ok), _clean(gt, ok))
  alpha = _f32(alpha)
  if variant == "paper":
    r = jax.nn.sigmoid(alpha / (d + (0.2 if eps is None else _f32(eps))))
  else:
    r = jnp.tanh(alpha / (d + (1e-6 if eps is None else _f32(eps))))
  return jnp.where(ok, r, 0.0)


@functools.partial(jax.jit, static_argnames=("cfg",))
def total_reward(cfg: RewardConfig, pred, gt, answer, fmt, pred_valid=None, gt_valid=None,
                 image_wh=None) -> dict[str, jax.Array]:
  """Every reward component and their total, `float32[B]` each (log them all).

  Args:
    cfg: `RewardConfig` (static).
    pred: `float32[B, 4]` predicted boxes; gt: `float32[B, 4]` ground-truth boxes, same frame.
    answer: `float32[B]` answer reward from the host judge (`zoomjax.rl.judge.answer_scores`).
    fmt: `float32[B]` format reward (`zoomjax.rl.format.format_rewards`).
    pred_valid: `bool[B]` a box was predicted (no crop request -> False); gt_valid: `bool[B]` the
      ground truth has a box (global questions -> False). Missing masks mean all valid.
    image_wh: `float32[B, 2]` (width, height) of the images, in the boxes' frame; required by the
      released IoU windows and by the paper's α = k·resolution.

  Returns:
    `{"iou", "region_guided", "box" (= iou + region_guided), "answer", "format", "total"}`.
  """
  pred, gt = _f32(pred), _f32(gt)
  ok = _valid(pred, pred_valid) & _valid(gt, gt_valid)
  if cfg.variant == "released":
    if image_wh is None:
      raise ValueError("the released IoU needs image_wh (its crop windows stay inside the image)")
    r_iou = window_iou(pred, gt, image_wh, ok, None, min_size=cfg.min_window)
    r_rg = region_guided(pred, gt, "released", cfg.released_scale, cfg.released_eps, ok)
  else:
    if cfg.alpha_k is not None:
      if image_wh is None:
        raise ValueError("alpha_k (alpha = k * resolution) needs image_wh")
      alpha = cfg.alpha_k * jnp.max(_f32(image_wh), axis=-1)
    else:
      alpha = cfg.alpha
    r_iou = iou(pred, gt, ok)
    r_rg = region_guided(pred, gt, "paper", alpha, cfg.eps, ok)
  answer, fmt = _f32(answer), _f32(fmt)
  total = r_iou + r_rg + answer + cfg.beta * fmt
  return {"iou": r_iou, "region_guided": r_rg, "box": r_iou + r_rg, "answer": answer,
          "format": fmt, "total": total}
