"""Multimodal rotary position embedding (M-RoPE) of the Qwen2.5-VL language model.

Each token has three position ids (temporal, height, width), `int32[3, B, T]`. The `head_dim / 2`
rotary frequency pairs are split into three contiguous chunks of sizes `mrope_section = (s_t, s_h, s_w)`
(16, 24, 24 for the 3B model); chunk i takes its angle from position axis i. The chunked frequencies are
then duplicated (`cat(f, f)`) and applied with `rotate_half`, exactly the reference's
`Qwen2_5_VLRotaryEmbedding.recomposition_frequencies` + `apply_rotary_pos_emb`. Text tokens have equal
ids on all three axes, so for text M-RoPE reduces to ordinary 1-D RoPE.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


def inv_frequencies(head_dim: int, theta: float) -> np.ndarray:
  """float32[head_dim / 2]: `1 / theta^(2i / head_dim)`, computed in float32 like the reference."""
  exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  return (np.float32(1.0) / np.power(np.float32(theta), exponent, dtype=np.float32)).astype(np.float32)


def section_axis(mrope_section: tuple[int, ...]) -> np.ndarray:
  """int32[head_dim / 2]: which position axis (0 = t, 1 = h, 2 = w) drives each frequency pair."""
  return np.concatenate([np.full(s, i % 3, np.int32) for i, s in enumerate(mrope_section)])


def mrope_cos_sin(position_ids: jax.Array, head_dim: int, theta: float,
                  mrope_section: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Rotary tables for M-RoPE.

  Args:
    position_ids: int32[3, B, T].
  Returns:
    (cos, sin), each float32[B, T, H].
  """
  inv = jnp.asarray(inv_frequencies(head_dim, theta))                  # [H/2]
  freqs = position_ids.astype(jnp.float32)[..., None] * inv            # [3, B, T, H/2]
  axis = jnp.asarray(section_axis(mrope_section))                      # [H/2]
  onehot = jax.nn.one_hot(axis, 3, dtype=jnp.float32).T                 # [3, H/2]
  freqs = jnp.sum(freqs * onehot[:, None, None, :], axis=0)            # [B, T, H/2] (exact: one term)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x: [B, T, N, H]; cos/sin: [B, T, H] (float32). Rotation in float32, result in x.dtype."""
  x32 = x.astype(jnp.float32)
  out = x32 * cos[:, :, None, :] + rotate_half(x32) * sin[:, :, None, :]
  return out.astype(x.dtype)
