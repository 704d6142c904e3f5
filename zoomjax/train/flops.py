"""Model FLOPs of one SFT step (language model + vision tower) and device peaks, for the MFU estimate.

Counts matmul FLOPs (2 per multiply-add) of the shapes the step actually runs:

* language model, per token: q/k/v/o projections, SwiGLU MLP, the LM head (`2 * d * V`), and attention
  scores + weighted values over a causal context (on average T/2 keys per query);
* vision tower, per patch: patch embedding, fused qkv / proj / SwiGLU MLP of every block, attention over
  the 8x8-patch window (window blocks) or the whole image (full-attention blocks), and the patch merger
  per merged token;
* training = forward + backward = 3 x forward; a frozen vision tower costs forward only (the merger,
  which trains, is counted at 3x).

Padding tokens and padding patches are counted (they are computed); MFU = FLOPs / (time * peak * chips).
The count is checked against XLA's own (`cost_analysis`) in tests/test_flops.py. The peak: a vendor's
dense bf16 figure per accelerator chip (`PEAK_FLOPS`), or on CPU the measured fp32 matmul rate
(`measure_matmul_peak`), the same function in training runs and in every benchmark.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from zoomjax.model.config import ModelConfig

# Dense bf16 peak FLOP/s per chip (vendor figures; `device_kind` substrings, lower case, most specific first).
PEAK_FLOPS = (
    ("tpu v6", 918e12), ("tpu v5p", 459e12), ("tpu v5 lite", 197e12), ("tpu v5e", 197e12),
    ("tpu v5", 459e12), ("tpu v4", 275e12), ("tpu v3", 123e12), ("tpu v2", 45e12),
    ("h200", 989e12), ("h100", 989e12), ("gh200", 989e12), ("b200", 2250e12), ("a100", 312e12),
    ("l40s", 362e12), ("l4", 121e12), ("a10g", 125e12), ("a10", 125e12), ("v100", 125e12),
    ("rtx 4090", 165e12), ("rtx 3090", 71e12), ("t4", 65e12),
)


def lm_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Forward matmul FLOPs per token of the language model at sequence length `seq_len`."""
  t = cfg.text
  q = t.num_attention_heads * t.head_dim
  kv = t.num_key_value_heads * t.head_dim
  proj = t.hidden_size * (q + 2 * kv) + q * t.hidden_size
  mlp = 3 * t.hidden_size * t.intermediate_size
  attn = 2 * q * (seq_len / 2)  # QK^T and PV, causal: T/2 keys on average
  per_layer = 2 * (proj + mlp) + 2 * attn
  return t.num_hidden_layers * per_layer + 2 * t.hidden_size * t.vocab_size


def vision_flops_per_patch(cfg: ModelConfig, patches_per_image: float) -> tuple[float, float]:
  """(blocks + patch embedding, merger) forward FLOPs per patch for images of `patches_per_image`."""
  v = cfg.vision
  d = v.hidden_size
  window = (v.window_size // v.patch_size) ** 2
  n_full = len(v.fullatt_block_indexes)
  per_block_dense = 2 * (d * 3 * d + d * d + 3 * d * v.intermediate_size)
  attn = lambda ctx: 2 * 2 * d * ctx  # noqa: E731  (scores + values)
  blocks = v.depth * per_block_dense + (v.depth - n_full) * attn(min(window, patches_per_image)) \
      + n_full * attn(patches_per_image)
  embed = 2 * v.patch_dim * d
  u = v.spatial_merge_size ** 2
  merger = 2 * (u * d * u * d + u * d * v.out_hidden_size) / u
  return blocks + embed, merger


def step_flops(cfg: ModelConfig, num_sequences: int, seq_len: int, num_patches: int = 0,
               patches_per_image: float = 0.0, freeze_vision: bool = False) -> float:
  """Training FLOPs of one optimizer step over `num_sequences` x `seq_len` tokens and `num_patches`."""
  lm = 3 * lm_flops_per_token(cfg, seq_len) * num_sequences * seq_len
  if not num_patches:
    return lm
  blocks, merger = vision_flops_per_patch(cfg, patches_per_image or num_patches)
  return lm + (1 if freeze_vision else 3) * blocks * num_patches + 3 * merger * num_patches


def device_peak_flops(device=None) -> tuple[float, str]:
  """(peak FLOP/s per device, how it was obtained) — from the table, or a measured matmul on CPU."""
  import jax
  device = device or jax.local_devices()[0]
  kind = str(getattr(device, "device_kind", "")).lower()
  for key, peak in PEAK_FLOPS:
    if key in kind:
      return peak, f"table ({device.device_kind})"
  if device.platform == "cpu":
    return measured_matmul_peak(), "measured float32 matmul (all CPU devices share the cores)"
  return 0.0, f"unknown device kind {device.device_kind!r}"


def measure_matmul_peak(n: int = 1024, dtype: str = "float32", repeats: int = 5) -> float:
  """The peak of every MFU in zoomjax where no vendor figure applies (CPU): the best FLOP/s, over
  `repeats` timed calls after one warm-up, of one jitted program that chains k = 8 n x n x n `dtype`
  matmuls on the default device (on CPU: every core, as XLA's client uses them). Benchmarks call this
  (uncached, in their own rounds); training runs the cached `measured_matmul_peak`."""
  import jax
  import jax.numpy as jnp
  k = 8
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype) / np.sqrt(n)

  @jax.jit
  def chain(x):
    for _ in range(k):
      x = x @ a
    return x

  chain(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    chain(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 * k / best


measured_matmul_peak = functools.lru_cache(maxsize=None)(measure_matmul_peak)
