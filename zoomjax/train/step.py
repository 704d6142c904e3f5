"""One optimizer step for any objective: gradient accumulation over microbatches, clipping, AdamW,
non-finite skip.

The step is a pure function `(state, batch) -> (state, metrics)`. `batch` is a pytree of arrays (in
training a `zoomjax.train.pieces.Piece`) that all carry a leading microbatch axis `A`
(= `optim.grad_accum`): the host stacks `A` equally-shaped microbatches (`input_ids int32[A, S, b, 1, T]`,
`pixel_values float32[A, S, b, P, 1176]`, ...). The step scans over them, summing the loss function's
stats (every key it returns) and the gradient of `loss_sum`, then divides the gradient by the total
`count` (the loss's denominator), so the update equals the one from a single batch of `A * b` sequences.

A non-finite loss or gradient norm leaves params and optimizer state unchanged; `state.skipped` counts
such steps and the metrics report `skipped=1` for the step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from zoomjax.train.state import TrainState

# loss_fn(params, microbatch, rng) -> {"loss_sum", "count", ...} (float32 scalars, sums; `count` is the
# loss's denominator, the other keys are metrics summed alike).
LossFn = Callable[[Any, Any, jax.Array], dict]


def _tree_where(pred: jax.Array, a: Any, b: Any) -> Any:
  return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def zero_stats(loss_fn: LossFn, params: Any, batch: Any) -> dict:
  """float32 zeros for every key `loss_fn` returns on one microbatch of `batch` (from `jax.eval_shape`)."""
  mb = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batch)
  shapes = jax.eval_shape(loss_fn, params, mb, jax.random.PRNGKey(0))
  return {k: jnp.zeros(v.shape, jnp.float32) for k, v in shapes.items()}


def accumulate(loss_fn: LossFn, params: Any, batch: Any, rng: jax.Array,
               frozen: Any = None) -> tuple[dict, Any]:
  """Scans `loss_fn` over the leading microbatch axis; returns (summed stats, summed gradient of loss_sum).

  `frozen` (a bool tree like params, or None) marks leaves whose gradient is not needed: they enter the
  loss through `stop_gradient`, so their backward pass is never computed.
  """
  num_micro = jax.tree_util.tree_leaves(batch)[0].shape[0]
  if frozen is not None:
    def fn(p, mb, r):
      p = jax.tree_util.tree_map(lambda x, f: jax.lax.stop_gradient(x) if f else x, p, frozen)
      return loss_fn(p, mb, r)
  else:
    fn = loss_fn

  def grad_of(p, mb, r):
    def scalar(p_):
      stats = fn(p_, mb, r)
      return stats["loss_sum"], stats
    (_, stats), g = jax.value_and_grad(scalar, has_aux=True)(p)
    return stats, g

  rngs = jax.random.split(rng, num_micro)
  zeros_g = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
  zeros_s = zero_stats(loss_fn, params, batch)

  def body(carry, xs):
    acc_s, acc_g = carry
    mb, r = xs
    stats, g = grad_of(params, mb, r)
    acc_s = {k: acc_s[k] + stats[k].astype(jnp.float32) for k in acc_s}
    acc_g = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), acc_g, g)
    return (acc_s, acc_g), None

  if num_micro == 1:
    stats, g = grad_of(params, jax.tree_util.tree_map(lambda x: x[0], batch), rngs[0])
    stats = {k: stats[k].astype(jnp.float32) for k in zeros_s}
    return stats, jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), g)
  (stats, grads), _ = jax.lax.scan(body, (zeros_s, zeros_g), (batch, rngs))
  return stats, grads


def sum_report(stats: dict) -> dict:
  """Metrics from summed stats: loss = loss_sum / count, tokens = count, any other key k -> k / count
  (`correct` is reported as `accuracy`)."""
  denom = jnp.maximum(stats["count"], 1.0)
  out = {"loss": stats["loss_sum"] / denom, "tokens": stats["count"]}
  for k, v in stats.items():
    if k not in ("loss_sum", "count"):
      out["accuracy" if k == "correct" else k] = v / denom
  return out


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, frozen: Any = None,
                    report: Callable[[dict], dict] = sum_report
                    ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """Builds the (unjitted) step. Metrics: `report(stats)` (default: loss per unit of `count`, tokens,
  every other stat per unit of `count`), grad_norm, lr, skipped (this step), skipped_total."""

  def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
    rng, step_rng = jax.random.split(state.rng)
    stats, grads = accumulate(loss_fn, state.params, batch, step_rng, frozen)
    denom = jnp.maximum(stats["count"], 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    loss = stats["loss_sum"] / denom
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # Zero non-finite gradients before the update so no NaN reaches the optimizer's arithmetic.
    safe_grads = jax.tree_util.tree_map(lambda g: jnp.where(ok, g, 0.0), grads)
    safe_grads = jax.tree_util.tree_map(lambda g, p: g.astype(p.dtype), safe_grads, state.params)
    updates, new_opt = tx.update(safe_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=_tree_where(ok, new_params, state.params),
        opt_state=_tree_where(ok, new_opt, state.opt_state),
        rng=rng,
        skipped=state.skipped + (~ok).astype(jnp.int32))
    metrics = {**report(stats), "loss": loss, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.int32),
               "skipped_total": new_state.skipped}
    if schedule is not None:
      # optax counts applied updates only: skipped steps do not advance the schedule.
      metrics["lr"] = jnp.asarray(schedule(state.step - state.skipped), jnp.float32)
    return new_state, metrics

  return train_step


def make_eval_step(loss_fn: LossFn) -> Callable[[Any, Any], dict]:
  """`(params, batch) -> summed stats` over the microbatch axis (no gradient)."""

  def eval_step(params: Any, batch: Any) -> dict:
    def body(acc, mb):
      s = loss_fn(params, mb, jax.random.PRNGKey(0))
      return {k: acc[k] + s[k].astype(jnp.float32) for k in acc}, None
    out, _ = jax.lax.scan(body, zero_stats(loss_fn, params, batch), batch)
    return out

  return eval_step
