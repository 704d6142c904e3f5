"""Qwen2.5-VL language model (Qwen2 decoder with M-RoPE) in Flax Linen, and its HF leaf table.

Shape letters: those of `zoomjax.model` (package docstring): B batch, T new tokens, S key slots, D hidden,
N query heads, K key/value heads, G = N / K, H head_dim, F intermediate size, V vocab, L layers, J picked
positions.

Parameters (relative to the `language` subtree; per-layer leaves carry a leading `layers` axis of size L
when `cfg.scan_layers`, else they live under `layers_0` ... `layers_{L-1}`):

    embed_tokens/embedding                [V, D]     (vocab, embed)
    layers/input_layernorm/scale          [D]        (embed,)
    layers/self_attn/q_proj/kernel        [D, N, H]  (embed, q_heads, head_dim);  bias [N, H]
    layers/self_attn/{k,v}_proj/kernel    [D, K, H]  (embed, kv_heads, head_dim); bias [K, H]
    layers/self_attn/o_proj/kernel        [N, H, D]  (q_heads, head_dim, embed);  no bias
    layers/post_attention_layernorm/scale [D]        (embed,)
    layers/mlp/{gate,up}_proj/kernel      [D, F]     (embed, mlp)
    layers/mlp/down_proj/kernel           [F, D]     (mlp, embed)
    norm/scale                            [D]        (embed,)
    lm_head/kernel                        [D, V]     (embed, vocab)   only when not tie_word_embeddings
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from zoomjax.model import rope as rope_lib
from zoomjax.model.config import ModelConfig
from zoomjax.model.layers import (_MASK_VALUE, Projection, RMSNorm, SwiGLU, as_dtype, constrain, dot_attention,
                                  maybe_remat, param_with_axes)
from zoomjax.model.leaves import LeafSource, LeafTable

KVCache = Any  # tuple (k, v), each the whole [L, B, K, S, H] stack, or None
BTD = ("activation_batch", "activation_length", "activation_embed")


class Attention(nn.Module):
  """GQA self-attention with q/k/v bias, M-RoPE and an optional per-row KV cache."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, kv_cache: KVCache = None, write_pos=None, layer=None):
    """x: [B, T, D]; cos/sin: [B, T, H]; mask: bool[B, T, S].

    kv_cache: None (keys are the T new tokens) or the whole stack `(k, v)`, each [L, B, K, S, H], of which
    this layer owns entry `layer` (an int, or a traced int32 scalar under `nn.scan`). The new keys/values
    are written in place at `[layer, b, :, write_pos[b, t]]` (write_pos int32[B, T]; out-of-range slots are
    dropped) and the layer then attends over its [B, K, S, H] slice. Only B*T slots are written, so with
    the cache donated a decode step costs O(B*S) reads, not a rewrite of the [L, B, K, S, H] arrays.
    Returns (y [B, T, D], updated (k, v) stack or None).
    """
    t = self.cfg.text
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    n, kvh, h, d = t.num_attention_heads, t.num_key_value_heads, t.head_dim, t.hidden_size

    def proj(heads, axis, name):
      return Projection((heads, h), ("embed", axis, "head_dim"), use_bias=True, bias_axes=(axis, "head_dim"),
                        dtype=dt, param_dtype=pdt, name=name)(x)

    q = constrain(proj(n, "q_heads", "q_proj"), ("activation_batch", "activation_length", "activation_heads", None))
    k = constrain(proj(kvh, "kv_heads", "k_proj"),
                  ("activation_batch", "activation_length", "activation_kv_heads", None))
    v = constrain(proj(kvh, "kv_heads", "v_proj"),
                  ("activation_batch", "activation_length", "activation_kv_heads", None))
    q = rope_lib.apply_rope(q, cos, sin)
    k = rope_lib.apply_rope(k, cos, sin)
    new_cache = None
    if kv_cache is not None:
      ck, cv = kv_cache
      rows = jnp.arange(x.shape[0])[:, None]
      # advanced indices split by the K slice: the indexed block is laid out [B, T, K, H], as k and v are
      ck = ck.at[layer, rows, :, write_pos].set(k.astype(ck.dtype), mode="drop")
      cv = cv.at[layer, rows, :, write_pos].set(v.astype(cv.dtype), mode="drop")
      new_cache = (ck, cv)
    if kv_cache is not None and x.shape[1] == 1:
      # decode step: only the blocks of the cache that hold some row's tokens are read
      used = jnp.clip(jnp.max(write_pos) + 1, 1, ck.shape[3])
      out = decode_attention(q, ck, cv, layer, mask, used, dt)
    else:
      if kv_cache is not None:
        out = dot_attention(q, ck[layer].astype(dt), cv[layer].astype(dt), mask, dt, kv_heads_first=True)
      else:
        out = dot_attention(q, k, v, mask, dt)
    out = checkpoint_name(out, "attn_out")
    y = Projection((d,), ("q_heads", "head_dim", "embed"), in_dims=2, dtype=dt, param_dtype=pdt, name="o_proj")(out)
    return y, new_cache


DECODE_BLOCK = 256
"""Cache slots per block of `decode_attention` (caches of at most this many slots are read in one go)."""


def decode_attention(q, ck, cv, layer, mask, used, dtype, block: int = DECODE_BLOCK):
  """`dot_attention` of one query per row over layer `layer` of a KV-cache stack, skipping unused slots.

  Args:
    q: [B, 1, N, H]; ck, cv: the cache stacks [L, B, K, S, H]; layer: int or int32 scalar.
    mask: bool[B, 1, S]; used: int32 scalar, slots `>= used` are masked for every row (max length).
    dtype: compute dtype (scores and softmax statistics in float32, as `dot_attention`).
  Returns:
    [B, 1, N, H].

  The cache is read in blocks of `gcd(S, block)` slots, in a loop over only the `ceil(used / block)`
  blocks that hold tokens, with the running-max (online) softmax, so a step's cost follows the longest
  row, not the cache size S. Each (row, KV head) pair is one contiguous [S, H] panel, so both contractions
  are B * K small matrix products that stream their panel in order (a slot-major [B, S, K, H] cache made
  the same attention 1.3-1.5x slower on XLA CPU: `benchmarks/results/rollout.md`).
  """
  b, _, n, h = q.shape
  _, _, kv, s, _ = ck.shape
  g = n // kv
  qg = q.reshape(b, kv, g, h)
  scale = h ** -0.5
  c = math.gcd(s, block)
  if c >= s or c < 32:      # one block: plain softmax over the whole cache
    k, v = ck[layer].astype(dtype), cv[layer].astype(dtype)
    scores = jnp.einsum("bkgh,bksh->bkgs", qg, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(mask[:, 0, None, None, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("bkgs,bksh->bkgh", probs, v).reshape(b, 1, n, h)

  def body(i, carry):
    m, l, acc = carry
    start = i * c
    k = jax.lax.dynamic_slice(ck, (layer, 0, 0, start, 0), (1, b, kv, c, h))[0].astype(dtype)
    v = jax.lax.dynamic_slice(cv, (layer, 0, 0, start, 0), (1, b, kv, c, h))[0].astype(dtype)
    valid = jax.lax.dynamic_slice_in_dim(mask[:, 0], start, c, axis=1)                  # [B, C]
    sc = jnp.einsum("bkgh,bksh->bkgs", qg, k, preferred_element_type=jnp.float32) * scale
    sc = jnp.where(valid[:, None, None, :], sc, _MASK_VALUE)
    m_new = jnp.maximum(m, jnp.max(sc, axis=-1))                                         # [B, K, G]
    p = jnp.exp(sc - m_new[..., None])
    corr = jnp.exp(m - m_new)
    acc = acc * corr[..., None] + jnp.einsum("bkgs,bksh->bkgh", p.astype(dtype), v,
                                             preferred_element_type=jnp.float32)
    return m_new, l * corr + jnp.sum(p, axis=-1), acc

  init = (jnp.full((b, kv, g), _MASK_VALUE, jnp.float32), jnp.zeros((b, kv, g), jnp.float32),
          jnp.zeros((b, kv, g, h), jnp.float32))
  _, l, acc = jax.lax.fori_loop(0, (used + c - 1) // c, body, init)
  return (acc / l[..., None]).astype(dtype).reshape(b, 1, n, h)


class DecoderLayer(nn.Module):
  """Pre-norm decoder block. Signature fits `nn.scan`: (carry, *broadcast/scanned args) -> (carry, None).

  The carry is `x` [B, T, D] without a cache, or `(x, (k, v))` with the whole [L, B, K, S, H] cache stack,
  so that under `nn.scan` the cache is one loop-carried buffer updated in place (as scanned xs/ys it
  would be sliced and re-stacked, i.e. rewritten, at every call); `layer` is this block's index.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, carry, cos, sin, mask, layer=None, write_pos=None):
    t = self.cfg.text
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    x, kv_cache = carry if isinstance(carry, tuple) else (carry, None)
    x = constrain(x, BTD)
    h = RMSNorm(t.rms_norm_eps, dt, pdt, name="input_layernorm")(x)
    h, new_cache = Attention(self.cfg, name="self_attn")(h, cos, sin, mask, kv_cache, write_pos, layer)
    x = x + h
    h = RMSNorm(t.rms_norm_eps, dt, pdt, name="post_attention_layernorm")(x)
    x = x + SwiGLU(t.hidden_size, t.intermediate_size, "embed", "mlp",
                   ("activation_batch", "activation_length", "activation_mlp"), dtype=dt, param_dtype=pdt,
                   name="mlp")(h)
    x = constrain(x, BTD)
    return ((x, new_cache) if kv_cache is not None else x), None


class LanguageModel(nn.Module):
  """Embeddings, L decoder layers (scanned or unrolled), final norm, tied or untied head."""

  cfg: ModelConfig

  def setup(self):
    t = self.cfg.text
    pdt = as_dtype(self.cfg.param_dtype)
    self.embed_tokens = Embed(t.vocab_size, t.hidden_size, dtype=as_dtype(self.cfg.dtype), param_dtype=pdt)
    self.norm = RMSNorm(t.rms_norm_eps, as_dtype(self.cfg.dtype), pdt)
    if not t.tie_word_embeddings:
      self.lm_head = Projection((t.vocab_size,), ("embed", "vocab"), dtype=as_dtype(self.cfg.dtype),
                                param_dtype=pdt)
    layer_cls = maybe_remat(DecoderLayer, self.cfg.remat_policy, scanned=self.cfg.scan_layers)
    if self.cfg.scan_layers:
      self.layers = nn.scan(
          layer_cls, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
          length=t.num_hidden_layers, metadata_params={nn.PARTITION_NAME: "layers"})(self.cfg)
    else:
      self.layer_list = [layer_cls(self.cfg, name=f"layers_{i}") for i in range(t.num_hidden_layers)]

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """int32[B, T] -> [B, T, D] (compute dtype)."""
    return constrain(self.embed_tokens(input_ids), BTD)

  def __call__(self, x, position_ids, mask, kv_cache=None, write_pos=None, logits_index=None):
    """Decoder stack and head.

    Args:
      x: [B, T, D] input embeddings (image features already merged).
      position_ids: int32[3, B, T] M-RoPE ids.
      mask: bool[B, T, S].
      kv_cache: None or `(k, v)` each [L, B, K, S, H]; write_pos: int32[B, T] cache slots of the new tokens.
      logits_index: None (logits at every position) or int32[B, J]: only positions `logits_index[b, j]` of
        each row go through the final norm and the head (e.g. the last new token: J = 1).
    Returns:
      (logits float32[B, T, V] (or [B, J, V] with logits_index), updated cache `(k, v)` or None).
    """
    t = self.cfg.text
    cos, sin = rope_lib.mrope_cos_sin(position_ids, t.head_dim, t.rope_theta, t.mrope_section)
    carry = x if kv_cache is None else (x, tuple(kv_cache))
    if self.cfg.scan_layers:
      layer_ids = jnp.arange(t.num_hidden_layers, dtype=jnp.int32)
      carry, _ = self.layers(carry, cos, sin, mask, layer_ids, write_pos)
    else:
      for i, layer in enumerate(self.layer_list):
        carry, _ = layer(carry, cos, sin, mask, i, write_pos)
    x, new_cache = (carry, None) if kv_cache is None else carry
    if logits_index is not None:
      x = jnp.take_along_axis(x, logits_index[:, :, None].astype(jnp.int32), axis=1)
    x = self.norm(x)
    if t.tie_word_embeddings:
      logits = self.embed_tokens.attend(x)
    else:
      logits = self.lm_head(x)
    logits = constrain(logits.astype(jnp.float32), ("activation_batch", "activation_length", "activation_vocab"))
    return logits, new_cache


class Embed(nn.Module):
  """Token embedding table [V, D] (vocab, embed); `attend` is the tied output head."""

  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    self.embedding = param_with_axes(self, "embedding", nn.initializers.normal(0.02),
                                     (self.num_embeddings, self.features), self.param_dtype, ("vocab", "embed"))

  def __call__(self, ids):
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x):
    return jnp.einsum("btd,vd->btv", x.astype(self.dtype), self.embedding.astype(self.dtype),
                      preferred_element_type=jnp.float32)


# ------------------------------------------------------------------------------------------- leaf table
def language_leaf_table(cfg: ModelConfig) -> LeafTable:
  """{param path relative to `language`: LeafSource} with hub key names (`model.layers.N.…`)."""
  t = cfg.text
  n, kvh, h, d = t.num_attention_heads, t.num_key_value_heads, t.head_dim, t.hidden_size

  def heads_in(nh):   # torch [nh*h, d] -> [d, nh, h]
    return (lambda w: np.ascontiguousarray(w.T.reshape(d, nh, h)),
            lambda p: np.ascontiguousarray(p.reshape(d, nh * h).T))

  def bias(nh):       # [nh*h] <-> [nh, h]
    return (lambda b: b.reshape(nh, h), lambda p: p.reshape(nh * h))

  o_proj = (lambda w: np.ascontiguousarray(w.T.reshape(n, h, d)),   # torch [d, n*h] -> [n, h, d]
            lambda p: np.ascontiguousarray(p.reshape(n * h, d).T))
  linear = (lambda w: np.ascontiguousarray(w.T), lambda p: np.ascontiguousarray(p.T))
  ident = (lambda x: x, lambda x: x)

  per_layer = {
      ("input_layernorm", "scale"): ("input_layernorm.weight", ident),
      ("post_attention_layernorm", "scale"): ("post_attention_layernorm.weight", ident),
      ("self_attn", "q_proj", "kernel"): ("self_attn.q_proj.weight", heads_in(n)),
      ("self_attn", "q_proj", "bias"): ("self_attn.q_proj.bias", bias(n)),
      ("self_attn", "k_proj", "kernel"): ("self_attn.k_proj.weight", heads_in(kvh)),
      ("self_attn", "k_proj", "bias"): ("self_attn.k_proj.bias", bias(kvh)),
      ("self_attn", "v_proj", "kernel"): ("self_attn.v_proj.weight", heads_in(kvh)),
      ("self_attn", "v_proj", "bias"): ("self_attn.v_proj.bias", bias(kvh)),
      ("self_attn", "o_proj", "kernel"): ("self_attn.o_proj.weight", o_proj),
      ("mlp", "gate_proj", "kernel"): ("mlp.gate_proj.weight", linear),
      ("mlp", "up_proj", "kernel"): ("mlp.up_proj.weight", linear),
      ("mlp", "down_proj", "kernel"): ("mlp.down_proj.weight", linear),
  }
  table: LeafTable = {
      ("embed_tokens", "embedding"): LeafSource(("model.embed_tokens.weight",)),
      ("norm", "scale"): LeafSource(("model.norm.weight",)),
  }
  if not t.tie_word_embeddings:
    table[("lm_head", "kernel")] = LeafSource(("lm_head.weight",), *linear)
  L = t.num_hidden_layers
  for path, (suffix, (to_param, to_hf)) in per_layer.items():
    keys = tuple(f"model.layers.{i}.{suffix}" for i in range(L))
    if cfg.scan_layers:
      table[("layers", *path)] = LeafSource(keys, to_param, to_hf, stacked=True)
    else:
      for i in range(L):
        table[(f"layers_{i}", *path)] = LeafSource((keys[i],), to_param, to_hf)
  return table
