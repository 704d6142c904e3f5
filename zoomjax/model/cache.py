"""Per-row KV cache for batched generation (prefill / extend with images / one-token decode).

Layout (a plain dict, a pytree; donate it to the jitted functions):

    cache = {
      "k": [L, B, K, S, H],        keys after M-RoPE, slot s of row b = the row's s-th token
      "v": [L, B, K, S, H],
      "length": int32[B],          tokens of each row already in the cache (rows differ)
      "rope_deltas": int32[B],     M-RoPE offset of each row (see zoomjax.model.inputs)
    }

Rows are packed from slot 0 (no left padding): row b's tokens occupy slots `[0, length[b])`.

* `extend(cfg, params, cache, inputs, pixel_values=None, *, last_only=False, kv_len=None) -> (logits
  float32[B, Tn, V], cache)` appends up
  to Tn new tokens per row (prompt prefill, tool text, or a continuation with new images). `inputs` comes
  from `zoomjax.model.inputs.prepare_extend` (host), which computes the new tokens' 3-D positions from
  each row's full token history, exactly as the reference does when new vision tokens arrive; row b
  writes its `num_new[b]` tokens at slots `length[b] …` and its length advances by `num_new[b]`. Padding
  tokens of shorter rows are written beyond the row's new length and overwritten later; they never
  influence valid tokens. `logits[b, num_new[b] - 1]` predicts the row's next token; `last_only=True`
  returns just those, float32[B, V] (the head runs on B positions, not B * Tn). A static `kv_len >=
  max(length) + Tn` makes attention read only the first `kv_len` slots (the later ones are past every
  row's length, masked anyway).
* `decode(cfg, params, cache, tokens int32[B], active=None) -> (logits float32[B, V], cache)` appends one
  text token per row at position `length[b] + rope_deltas[b]` on all three M-RoPE axes (the reference's
  rule for generated tokens); rows with `active[b] == False` do not advance.

* `take_rows(cache, index int32[B']) -> cache` of B' rows (row i = row index[i]); `put_rows(cache, rows,
  src, src_index)` overwrites rows `rows[i]` (int32[R]; out-of-range entries skipped) with rows
  `src_index[i]` of `src`, in place when the cache is donated. The generator prefills the prompt of a
  GRPO group once and copies its rows into the group's G rows with these.

Slots past the cache size S are dropped silently: size the cache for the longest row (`max_len`).
The jitted versions `extend_jit` / `decode_jit` donate the cache. The [L, B, K, S, H] stacks are carried
whole through the layer loop (`nn.scan` carry) and each layer scatters only its new B * Tn slots, so with
the cache donated an update is in place: a decode step writes B slots per layer and reads the cache once
for attention, instead of rewriting the whole cache.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from zoomjax.model.config import ModelConfig
from zoomjax.model.layers import as_dtype

Cache = dict[str, jax.Array]

CACHE_LOGICAL_AXES = {
    "k": ("layers", "activation_batch", "activation_kv_heads", None, None),
    "v": ("layers", "activation_batch", "activation_kv_heads", None, None),
    "length": ("activation_batch",),
    "rope_deltas": ("activation_batch",),
}
"""Logical axis names of each cache entry (map them with `zoomjax.model.sharding`)."""


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> Cache:
  """An empty cache for `batch` rows of at most `max_len` tokens (dtype defaults to cfg.dtype)."""
  t = cfg.text
  dt = as_dtype(dtype or cfg.dtype)
  shape = (t.num_hidden_layers, batch, t.num_key_value_heads, max_len, t.head_dim)
  return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt),
          "length": jnp.zeros((batch,), jnp.int32), "rope_deltas": jnp.zeros((batch,), jnp.int32)}


def _run(cfg, params, cache, input_ids, position_ids, write_pos, image_index=None, pixel_values=None,
         vision_meta=None, logits_index=None, kv_len=None):
  """The model over the new tokens with the cache; with `kv_len` < S only the first `kv_len` slots of every
  row take part (they are sliced out, used and written back), so attention costs follow the rows' lengths."""
  from zoomjax.model.qwen2_5_vl import Qwen2_5_VL
  s = cache["k"].shape[3]
  n = s if kv_len is None else max(1, min(int(kv_len), s))
  ck, cv = cache["k"], cache["v"]
  if n < s:
    ck, cv = ck[:, :, :, :n], cv[:, :, :, :n]
  mask = jnp.arange(n)[None, None, :] <= write_pos[:, :, None]        # [B, Tn, n]
  logits, (k, v) = Qwen2_5_VL(cfg).apply(
      {"params": params}, input_ids, position_ids, mask, image_index, pixel_values, vision_meta,
      kv_cache=(ck, cv), write_pos=write_pos, logits_index=logits_index)
  if n < s:
    k = jax.lax.dynamic_update_slice(cache["k"], k, (0, 0, 0, 0, 0))
    v = jax.lax.dynamic_update_slice(cache["v"], v, (0, 0, 0, 0, 0))
  return logits, k, v


def extend(cfg: ModelConfig, params: Any, cache: Cache, inputs: dict[str, Any], pixel_values=None, *,
           last_only: bool = False, kv_len: int | None = None) -> tuple[jax.Array, Cache]:
  """Appends `inputs["input_ids"]` (int32[B, Tn], `num_new[b]` valid per row) to the cache.

  Returns float32[B, Tn, V] logits, or with `last_only` float32[B, V]: those of each row's last new token
  (slot `num_new[b] - 1`; a row with no new tokens gets its slot 0's, meaningless), the only ones
  generation needs: the final norm and the head then run on B positions instead of B * Tn.

  `kv_len` (static; None: the whole cache): a bound on every row's new length, `max(length) + Tn <=
  kv_len`; attention then reads only the first `kv_len` slots of the cache instead of all S (a prompt
  prefill into a cache sized for the whole trajectory reads its own tokens only). New tokens beyond
  `kv_len` are dropped, so a smaller bound than the rows need loses them.
  """
  ids = inputs["input_ids"]
  tn = ids.shape[1]
  write_pos = cache["length"][:, None] + jnp.arange(tn, dtype=jnp.int32)[None, :]
  num_new = inputs["num_new"].astype(jnp.int32)
  index = jnp.maximum(num_new - 1, 0)[:, None] if last_only else None
  logits, k, v = _run(cfg, params, cache, ids, inputs["position_ids"], write_pos, inputs.get("image_index"),
                      pixel_values, inputs.get("vision"), index, kv_len)
  new = {"k": k, "v": v, "length": cache["length"] + num_new,
         "rope_deltas": inputs["rope_deltas"].astype(jnp.int32)}
  return (logits[:, 0] if last_only else logits), new


def decode(cfg: ModelConfig, params: Any, cache: Cache, tokens: jax.Array, active=None
           ) -> tuple[jax.Array, Cache]:
  """Appends one text token per row; returns float32[B, V] next-token logits."""
  length = cache["length"]
  b = tokens.shape[0]
  pos = jnp.broadcast_to((length + cache["rope_deltas"])[None, :, None], (3, b, 1)).astype(jnp.int32)
  logits, k, v = _run(cfg, params, cache, tokens.reshape(b, 1).astype(jnp.int32), pos, length[:, None])
  step = jnp.ones((b,), jnp.int32) if active is None else active.astype(jnp.int32)
  # An inactive row's write lands at slot length[b], outside its valid prefix: harmless, later overwritten.
  return logits[:, 0], {"k": k, "v": v, "length": length + step, "rope_deltas": cache["rope_deltas"]}


def _row_axis(name: str) -> int:
  return 1 if name in ("k", "v") else 0


def take_rows(cache: Cache, index: jax.Array) -> Cache:
  """The cache of rows `index` (int32[B']), in that order: k/v [L, B', K, S, H], length/rope_deltas [B']."""
  return {name: jnp.take(a, index, axis=_row_axis(name)) for name, a in cache.items()}


def put_rows(cache: Cache, rows: jax.Array, src: Cache, src_index: jax.Array) -> Cache:
  """`cache` with row `rows[i]` replaced by row `src_index[i]` of `src` (rows, src_index int32[R]; rows
  outside [0, B) are skipped). Both caches must have the same L, K, S, H."""
  out = {}
  for name, a in cache.items():
    new = jnp.take(src[name], src_index, axis=_row_axis(name))
    out[name] = (a.at[:, rows].set(new, mode="drop") if _row_axis(name) else a.at[rows].set(new, mode="drop"))
  return out


extend_jit = jax.jit(extend, static_argnums=0, static_argnames=("last_only", "kv_len"), donate_argnums=2)
decode_jit = jax.jit(decode, static_argnums=0, donate_argnums=2)
