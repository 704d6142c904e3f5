"""Qwen2.5-VL language model (Qwen2 decoder with M-RoPE) in Flax Linen, and its HF leaf table.

Notation: B batch, T new tokens, S key length (= T without a cache, the cache size with one), D hidden,
N query heads, K key/value heads (GQA: N = K * G), H head_dim, F intermediate size, V vocab, L layers.

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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from zoomjax.model import rope as rope_lib
from zoomjax.model.config import ModelConfig
from zoomjax.model.layers import (Projection, RMSNorm, SwiGLU, as_dtype, constrain, dot_attention, maybe_remat,
                                  param_with_axes)
from zoomjax.model.leaves import LeafSource, LeafTable

KVCache = Any  # tuple (k, v) of [B, S, K, H] per layer, or None
BTD = ("activation_batch", "activation_length", "activation_embed")


class Attention(nn.Module):
  """GQA self-attention with q/k/v bias, M-RoPE and an optional per-row KV cache."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, kv_cache: KVCache = None, write_pos=None):
    """x: [B, T, D]; cos/sin: [B, T, H]; mask: bool[B, T, S].

    kv_cache: None (keys are the T new tokens) or `(k, v)` each [B, S, K, H]; the new keys/values are
    written at slots `write_pos` int32[B, T] (out-of-range slots are dropped) before attending.
    Returns (y [B, T, D], updated (k, v) or None).
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
      ck = ck.at[rows, write_pos].set(k.astype(ck.dtype), mode="drop")
      cv = cv.at[rows, write_pos].set(v.astype(cv.dtype), mode="drop")
      new_cache = (ck, cv)
      k, v = ck.astype(dt), cv.astype(dt)
    out = dot_attention(q, k, v, mask, dt)
    out = checkpoint_name(out, "attn_out")
    y = Projection((d,), ("q_heads", "head_dim", "embed"), in_dims=2, dtype=dt, param_dtype=pdt, name="o_proj")(out)
    return y, new_cache


class DecoderLayer(nn.Module):
  """Pre-norm decoder block. Signature fits `nn.scan`: (carry x, *broadcast/scanned args) -> (x, cache)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, kv_cache: KVCache = None, write_pos=None):
    t = self.cfg.text
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    x = constrain(x, BTD)
    h = RMSNorm(t.rms_norm_eps, dt, pdt, name="input_layernorm")(x)
    h, new_cache = Attention(self.cfg, name="self_attn")(h, cos, sin, mask, kv_cache, write_pos)
    x = x + h
    h = RMSNorm(t.rms_norm_eps, dt, pdt, name="post_attention_layernorm")(x)
    x = x + SwiGLU(t.hidden_size, t.intermediate_size, "embed", "mlp",
                   ("activation_batch", "activation_length", "activation_mlp"), dtype=dt, param_dtype=pdt,
                   name="mlp")(h)
    return constrain(x, BTD), new_cache


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

  def __call__(self, x, position_ids, mask, kv_cache=None, write_pos=None):
    """Decoder stack and head.

    Args:
      x: [B, T, D] input embeddings (image features already merged).
      position_ids: int32[3, B, T] M-RoPE ids.
      mask: bool[B, T, S].
      kv_cache: None or `(k, v)` each [L, B, S, K, H]; write_pos: int32[B, T] cache slots of the new tokens.
    Returns:
      (logits float32[B, T, V], updated cache `(k, v)` or None).
    """
    t = self.cfg.text
    cos, sin = rope_lib.mrope_cos_sin(position_ids, t.head_dim, t.rope_theta, t.mrope_section)
    if self.cfg.scan_layers:
      x, new_cache = self.layers(x, cos, sin, mask, kv_cache, write_pos)
    else:
      caches = []
      for i, layer in enumerate(self.layer_list):
        layer_cache = None if kv_cache is None else (kv_cache[0][i], kv_cache[1][i])
        x, c = layer(x, cos, sin, mask, layer_cache, write_pos)
        caches.append(c)
      new_cache = None if kv_cache is None else (jnp.stack([c[0] for c in caches]),
                                                 jnp.stack([c[1] for c in caches]))
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
