"""The train state: everything a step reads and writes, as one pytree (checkpointed whole)."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Attributes:
    step: int32[] optimizer steps taken (skipped non-finite steps count as steps).
    params: the model params (master weights, `model.param_dtype`).
    opt_state: the optax state.
    rng: uint32[2] raw PRNG key, split once per step (dropout-free models ignore it).
    skipped: int32[] steps whose loss or gradient was non-finite (update not applied).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  skipped: jax.Array


def init_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed), skipped=jnp.zeros((), jnp.int32))
