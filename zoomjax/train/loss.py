"""Next-token cross-entropy on assistant tokens, returned as (sum, count) so accumulation stays exact.

Convention (the data contract): `loss_mask[b, t] = 1` where `input_ids[b, t]` is a target, predicted by
the logits at position `t - 1`. Padding, prompt, tool and image tokens carry 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_targets(input_ids: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Targets and weights aligned with the logits that predict them.

  Args:
    input_ids: int32[B, T]. loss_mask: int[B, T] (1 = `input_ids[b, t]` is a target).
  Returns:
    targets int32[B, T] (`input_ids` shifted left by one; last column 0) and weights float32[B, T]
    (`loss_mask` shifted the same way; last column 0), so `logits[b, t]` is scored against
    `targets[b, t]` with weight `weights[b, t]`.
  """
  targets = jnp.concatenate([input_ids[:, 1:], jnp.zeros_like(input_ids[:, :1])], axis=1)
  weights = jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1)
  return targets.astype(jnp.int32), weights.astype(jnp.float32)


def masked_xent(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> dict[str, jax.Array]:
  """Summed cross-entropy over target tokens.

  Args:
    logits: float[B, T, V] (any float dtype; the softmax runs in float32).
    input_ids: int32[B, T]; loss_mask: int[B, T] (see module docstring).
  Returns:
    `loss_sum` float32[] (sum of -log p(target)), `count` float32[] (number of targets) and
    `correct` float32[] (targets that are the argmax) — all sums, never means.
  """
  targets, weights = next_token_targets(input_ids, loss_mask)
  logits = logits.astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = logz - target_logit
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll * weights), "count": jnp.sum(weights), "correct": jnp.sum(correct * weights)}
