"""Per-token log-probs and entropies of a sequence under the model, aligned with the token ids.

The convention of SFT batches and rollout trajectories: position `t` holds what the model said about
`input_ids[b, t]`, computed from the logits at position `t - 1`; position 0 has no prediction (0).

    lp = token_logprobs(logits, input_ids, temperature)   # float32[B, T]
    h = token_entropy(logits, temperature)                 # float32[B, T]

`temperature` divides the logits first: the policy of a sampler that draws at temperature T is
`softmax(logits / T)`, and GRPO scores its trajectories under that same policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _shifted_log_softmax(logits: jax.Array, temperature: float) -> jax.Array:
  """float32[B, T, V]: `log_softmax(logits[:, t - 1] / T)` at position t (position 0: the logits at 0,
  unused)."""
  x = logits.astype(jnp.float32) / temperature
  x = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
  return jax.nn.log_softmax(x, axis=-1)


def token_logprobs(logits: jax.Array, input_ids: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Args: logits float[B, T, V] (any float dtype; computed in float32), input_ids int32[B, T].
  Returns float32[B, T]: `log p(input_ids[b, t] | prefix)`; 0 at t = 0."""
  logp = _shifted_log_softmax(logits, temperature)
  lp = jnp.take_along_axis(logp, input_ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return lp.at[:, 0].set(0.0)


def token_entropy(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """float32[B, T]: entropy of the model's distribution over `input_ids[b, t]`; 0 at t = 0."""
  logp = _shifted_log_softmax(logits, temperature)
  h = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  return h.at[:, 0].set(0.0)


def predicted_ids(logits: jax.Array) -> jax.Array:
  """int32[B, T]: the argmax token the model predicts for position t (from the logits at t - 1); -1 at 0."""
  top = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jnp.concatenate([jnp.full_like(top[:, :1], -1), top[:, :-1]], axis=1)
