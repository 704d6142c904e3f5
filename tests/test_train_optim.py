"""The optimizer and the step, asserted on the quantities themselves (not through Adam's smoothing):

* clipping: the gradient that reaches Adam (its first moment after one step, `mu = (1 - b1) * g`) has
  global norm exactly `clip_norm`, along the raw gradient's direction; below the bound it is untouched;
* accumulation: summed over A microbatches, the gradient of `loss_sum` equals the big batch's and a
  float64 numpy gradient written out by hand; the step's `grad_norm` and its SGD update (which is the
  gradient) equal the big batch's mean gradient, whatever the split;
* the learning-rate schedule's values at hand-picked steps.

The model is linear, `pred = x @ w + b`, with a squared-error loss summed over masked rows, so every
expected value has a closed form. Only `make_optimizer`, `accumulate`, `make_train_step` and
`init_state` are used.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoomjax.train.config import OptimSection
from zoomjax.train.optim import learning_rate_schedule, make_optimizer
from zoomjax.train.state import init_state
from zoomjax.train.step import accumulate, make_train_step

D, K, N = 5, 3, 16   # features, outputs, examples


def params0():
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(D, K)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(K,)), jnp.float32)}


def data():
  """16 examples; the mask keeps 11 of them, unevenly over the microbatches of any split."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(N, D)).astype(np.float32)
  y = rng.normal(size=(N, K)).astype(np.float32)
  m = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1], np.float32)
  return x, y, m


def split(x, y, m, num_micro):
  """[N, ...] -> a batch with a leading microbatch axis `[A, N / A, ...]`."""
  r = lambda a: a.reshape((num_micro, N // num_micro) + a.shape[1:])  # noqa: E731
  return {"x": r(x), "y": r(y), "mask": r(m)}


def loss_fn(params, mb, rng):
  """Sums over the microbatch: squared error of kept rows, kept rows, kept rows with every |err| < 1."""
  del rng
  err = mb["x"] @ params["w"] + params["b"] - mb["y"]                      # [b, K]
  m = mb["mask"]
  return {"loss_sum": jnp.sum(m[:, None] * err ** 2), "count": jnp.sum(m),
          "correct": jnp.sum(m * jnp.all(jnp.abs(err) < 1.0, axis=-1))}


def numpy_sums(p, x, y, m):
  """float64 by hand: loss_sum, count, and d loss_sum / d (w, b) = 2 X^T (m * err), 2 sum(m * err)."""
  w, b = np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)
  err = x.astype(np.float64) @ w + b - y
  me = m[:, None] * err
  return float((me * err).sum()), float(m.sum()), {"w": 2 * x.T.astype(np.float64) @ me, "b": 2 * me.sum(0)}


def global_norm(tree):
  return math.sqrt(sum(float(np.sum(np.square(v))) for v in jax.tree_util.tree_leaves(tree)))


def optim(**kw):
  base = dict(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.0, clip_norm=1.0)
  return OptimSection(**{**base, **kw})


# ------------------------------------------------------------------------------------------ clipping
def adam_first_moment(opt_state):
  """Adam's `mu` after the first update, divided by (1 - b1): the gradient Adam was given."""
  mu = optax.tree_utils.tree_get(opt_state, "mu")
  assert mu is not None, "no Adam first moment found in the optimizer state"
  return mu


@pytest.mark.parametrize("clip", [1.0, 0.25])
def test_clipped_gradient_has_norm_clip_norm(clip):
  oc = optim(clip_norm=clip)
  p = params0()
  tx, _ = make_optimizer(oc, 10, p)
  g = {"w": jnp.full((D, K), 3.0), "b": jnp.asarray([4.0, -2.0, 1.0])}          # norm sqrt(15*9 + 21) = 12.49
  raw = global_norm(g)
  assert raw == pytest.approx(math.sqrt(156.0))
  _, st = tx.update(g, tx.init(p), p)
  seen = jax.tree_util.tree_map(lambda v: np.asarray(v) / (1 - oc.b1), adam_first_moment(st))
  assert global_norm(seen) == pytest.approx(clip, rel=1e-5)
  for k in g:   # same direction: g * clip / |g|
    np.testing.assert_allclose(seen[k], np.asarray(g[k]) * clip / raw, rtol=1e-5)


def test_gradient_below_the_bound_is_not_clipped():
  oc = optim(clip_norm=100.0)
  p = params0()
  tx, _ = make_optimizer(oc, 10, p)
  g = {"w": jnp.full((D, K), 0.5), "b": jnp.asarray([1.0, -1.0, 2.0])}           # norm 3.20 < 100
  _, st = tx.update(g, tx.init(p), p)
  seen = adam_first_moment(st)
  for k in g:
    np.testing.assert_allclose(np.asarray(seen[k]) / (1 - oc.b1), g[k], rtol=1e-6)


def test_train_step_reports_the_raw_norm_and_clips_the_update():
  """Through `make_train_step`: grad_norm is the unclipped mean gradient's norm; Adam sees norm clip_norm."""
  x, y, m = data()
  oc = optim(clip_norm=0.5)
  p = params0()
  tx, schedule = make_optimizer(oc, 10, p)
  step = jax.jit(make_train_step(loss_fn, tx, schedule))
  state, metrics = step(init_state(p, tx, seed=0), split(x * 10, y, m, 2))   # big gradient: norm >> 0.5
  _, count, g = numpy_sums(p, x * 10, y, m)
  raw = global_norm({k: v / count for k, v in g.items()})
  assert raw > 50
  assert float(metrics["grad_norm"]) == pytest.approx(raw, rel=1e-5)
  seen = jax.tree_util.tree_map(lambda v: np.asarray(v) / (1 - oc.b1), adam_first_moment(state.opt_state))
  assert global_norm(seen) == pytest.approx(0.5, rel=1e-5)


# ------------------------------------------------------------------------------------------ accumulation
@pytest.mark.parametrize("num_micro", [1, 2, 4])
def test_accumulated_sums_and_gradient_equal_the_hand_computed_big_batch(num_micro):
  x, y, m = data()
  p = params0()
  stats, grads = jax.jit(lambda b: accumulate(loss_fn, p, b, jax.random.PRNGKey(0)))(split(x, y, m, num_micro))
  loss_sum, count, g = numpy_sums(p, x, y, m)
  assert float(stats["count"]) == count == 11
  assert float(stats["loss_sum"]) == pytest.approx(loss_sum, rel=1e-5)
  for k in g:
    np.testing.assert_allclose(np.asarray(grads[k]), g[k], rtol=1e-5, atol=1e-5)


def test_accumulation_equals_big_batch_in_gradient_and_grad_norm():
  """SGD with lr 1 makes the update the gradient itself: p - p_new = sum_grad / count (one division)."""
  x, y, m = data()
  p = params0()
  _, count, g = numpy_sums(p, x, y, m)
  mean_g = {k: v / count for k, v in g.items()}
  tx = optax.sgd(1.0)
  step = jax.jit(make_train_step(loss_fn, tx))
  seen = {}
  for num_micro in (1, 4, 8):
    state, metrics = step(init_state(p, tx, seed=0), split(x, y, m, num_micro))
    assert float(metrics["tokens"]) == 11
    assert float(metrics["grad_norm"]) == pytest.approx(global_norm(mean_g), rel=1e-5)
    update = {k: np.asarray(p[k]) - np.asarray(state.params[k]) for k in p}
    for k in p:
      np.testing.assert_allclose(update[k], mean_g[k], rtol=1e-5, atol=1e-6)
    seen[num_micro] = (float(metrics["loss"]), float(metrics["grad_norm"]), float(metrics["accuracy"]))
  assert seen[4] == pytest.approx(seen[1], rel=1e-6) and seen[8] == pytest.approx(seen[1], rel=1e-6)


# ------------------------------------------------------------------------------------------ schedule
def test_warmup_then_cosine_values():
  oc = OptimSection(lr=1e-3, warmup_steps=10, end_lr_ratio=0.1, schedule="cosine")
  s = learning_rate_schedule(oc, 110)      # cosine over 100 steps after the warmup
  want = {0: 0.0, 5: 5e-4, 10: 1e-3, 60: 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)),
          85: 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.75)), 110: 1e-4}
  for t, v in want.items():
    assert float(s(t)) == pytest.approx(v, rel=1e-5, abs=1e-12), t
  const = learning_rate_schedule(OptimSection(lr=2e-4, warmup_steps=4, schedule="constant"), 50)
  assert [float(const(t)) for t in (0, 2, 4, 49)] == pytest.approx([0.0, 1e-4, 2e-4, 2e-4])


# ------------------------------------------------------------------------------------------ vision lr
def test_vision_lr_scale_scales_only_the_towers_steps():
  """Adam's first step moves every leaf by lr * g / (|g| + eps) ~ lr: the tower's leaves (under `visual`,
  not the merger) by `vision_lr_scale` times that, the merger and the language model by the full lr;
  the gradient is clipped by one global norm over all of them."""
  oc = optim(clip_norm=1.0, vision_lr_scale=0.1, weight_decay=0.0, warmup_steps=0, schedule="constant")
  p = {"visual": {"blocks": jnp.ones((2, 3)), "merger": jnp.ones((3,))}, "language": {"w": jnp.ones((4,))}}
  g = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 2.0), p)        # raw norm sqrt(13 * 4) > 1: clipped
  tx, _ = make_optimizer(oc, 10, p)
  upd, st = tx.update(g, tx.init(p), p)
  step = {k: np.abs(np.asarray(v)) for k, v in
          {"blocks": upd["visual"]["blocks"], "merger": upd["visual"]["merger"], "lm": upd["language"]["w"]}.items()}
  np.testing.assert_allclose(step["lm"], oc.lr, rtol=1e-4)
  np.testing.assert_allclose(step["merger"], oc.lr, rtol=1e-4)
  np.testing.assert_allclose(step["blocks"], 0.1 * oc.lr, rtol=1e-4)
  mus = [np.asarray(v) / (1 - oc.b1) for _, m in optax.tree_utils.tree_get_all_with_path(st, "mu")
         for v in jax.tree_util.tree_leaves(m)]                            # both groups' first moments
  assert sum(v.size for v in mus) == 13
  assert math.sqrt(sum(float(np.sum(v ** 2)) for v in mus)) == pytest.approx(1.0, rel=1e-5)  # one clip
  same, _ = make_optimizer(optim(clip_norm=1.0, vision_lr_scale=0.1, weight_decay=0.0, warmup_steps=0,
                                 schedule="constant"), 10, p, freeze_vision=True)
  frozen, _ = same.update(g, same.init(p), p)                            # frozen wins over the scale
  assert not np.any(np.asarray(frozen["visual"]["blocks"]))
