"""Next-token cross-entropy on assistant tokens, returned as (sum, count) so accumulation stays exact.

Convention (the data contract): `loss_mask[b, t] = 1` where `input_ids[b, t]` is a target, predicted by
the logits at position `t - 1`. Padding, prompt, tool and image tokens carry 0. The per-token log-probs
are `zoomjax.model.logprobs.token_logprobs`, the same function GRPO scores trajectories with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoomjax.model.logprobs import predicted_ids, token_logprobs


def masked_xent(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> dict[str, jax.Array]:
  """Summed cross-entropy over target tokens.

  Args:
    logits: float[B, T, V] (any float dtype; the softmax runs in float32).
    input_ids: int32[B, T]; loss_mask: int[B, T] (see module docstring; position 0 is never a target).
  Returns:
    `loss_sum` float32[] (sum of -log p(target)), `count` float32[] (number of targets) and
    `correct` float32[] (targets that are the argmax) — all sums, never means.
  """
  weights = loss_mask.astype(jnp.float32).at[:, 0].set(0.0)
  nll = -token_logprobs(logits, input_ids)
  correct = (predicted_ids(logits) == input_ids).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll * weights), "count": jnp.sum(weights), "correct": jnp.sum(correct * weights)}
