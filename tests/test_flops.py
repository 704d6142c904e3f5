"""The MFU numerator: zoomjax.train.flops against XLA's own count of the compiled programs."""

import dataclasses

import jax
import jax.numpy as jnp

from zoomjax.model import ModelConfig
from zoomjax.model import qwen2_5_vl as Q
from zoomjax.train import flops


def _cost(fn, *args) -> float:
  c = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((c[0] if isinstance(c, list) else c)["flops"])


def test_lm_flops_match_xla_cost_analysis():
  """XLA counts the masked half of causal attention too, so compare with keys over the whole row
  (`lm_flops_per_token(cfg, 2 T)`: T keys per query). The rest XLA adds (norms, softmax, RoPE, SiLU) is
  elementwise: under 2 % at this size. Training (forward + backward) is 3x the forward."""
  base = ModelConfig.tiny(vocab_size=4096)
  cfg = dataclasses.replace(
      base, scan_layers=False,
      text=dataclasses.replace(base.text, hidden_size=256, intermediate_size=768, head_dim=64,
                               mrope_section=(8, 12, 12)),
      vision=dataclasses.replace(base.vision, out_hidden_size=256))
  params = Q.init_params(cfg, jax.random.PRNGKey(0))
  B, T = 2, 128
  inputs = {"input_ids": jnp.zeros((B, T), jnp.int32), "attention_mask": jnp.ones((B, T), jnp.int32),
            "position_ids": jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (3, B, T))}
  ours = flops.lm_flops_per_token(cfg, 2 * T) * B * T
  forward = _cost(lambda p, x: Q.apply(cfg, p, x), params, inputs)
  assert 1.0 <= forward / ours < 1.02, forward / ours
  loss = lambda p, x: jnp.mean(jax.nn.log_softmax(Q.apply(cfg, p, x))[..., 0])  # noqa: E731
  train = _cost(jax.grad(loss), params, inputs)
  assert abs(train / (3 * ours) - 1) < 0.03, train / (3 * ours)
  assert flops.step_flops(cfg, B, T) == 3 * flops.lm_flops_per_token(cfg, T) * B * T   # causal: T/2 keys
