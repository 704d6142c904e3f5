"""Qwen2.5-VL vision tower (ViT with 2-D rotary, window attention and a 2x2 patch merger) in Flax Linen.

Reference: `transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py` (`Qwen2_5_VisionTransformerPretrainedModel`)
and `transformers/vision_utils.py` (`get_vision_position_ids`, `get_vision_window_index`) in the pinned
transformers. Notation: P patches (all images concatenated, plus padding), m = spatial_merge_size (2),
U = m*m (4) patches per merged token, M = P // U merged tokens, D = hidden_size, N = num_heads,
H = head_dim, F = intermediate_size, O = out_hidden_size (language-model width); the letters of
`zoomjax.model` (package docstring), shared with the language model.

Interface
---------
`vision_metadata(vcfg, grid_thw, pad_patches_to=None) -> dict[str, np.ndarray]` (host, numpy)
  grid_thw: int[I, 3] rows (t, h, w) in patches; all-zero rows are padding images (0 patches).
  P = pad_patches_to or the real patch count R = sum(t*h*w); P must be a multiple of U and >= R.
  Keys (all static shapes, functions of P only):
    "window_index"   int32[M]    merged token n of window order = merged token window_index[n] of the
                                 original order (the reference's get_window_index; padding tokens last).
    "reverse_index"  int32[M]    argsort(window_index): original order = window order[reverse_index].
    "rope_pos"       int32[P, 2] (row, col) of each patch inside its frame, in WINDOW order (the
                                 reference's position ids, permuted like the hidden states); 0 for padding.
    "window_segments" int32[P]   attention segment of each patch in window order for window-attention
                                 blocks: one id per (image, frame, 112-px window).
    "full_segments"  int32[P]    segment of each patch in window order for full-attention blocks: one id
                                 per (image, frame).
    "full_span"      int32[S]    zeros; only its (static) length counts: S >= the longest full-attention
                                 segment, bucketed to window_patches * 2^k, so full attention costs
                                 O(P * 3S) instead of O(P^2) when a batch holds many images.
  Padding patches (rows R..P-1 of pixel_values, zeros) are grouped U at a time into segments of their own
  (ids never used by a real patch), so they never attend to or with real patches; their merged outputs
  are the last M - R//U rows of the tower output.

`VisionTower(cfg: ModelConfig)` Linen module, instantiated as `VisionTower(cfg, name="visual")`
  __call__(pixel_values: f32[P, C], meta: dict) -> f32[M, O]
  pixel_values rows in the processor's order (images concatenated); output rows in the ORIGINAL
  (non-window) order of merged tokens, images concatenated in order, padding tokens last.
  Params (relative to the `visual` subtree; `blocks` leaves carry a leading `layers` axis of size depth
  when cfg.scan_layers, else they live under `blocks_0` ... `blocks_{depth-1}`):
    patch_embed/kernel                 [C, D]              (vision_patch, vision_embed)
    blocks/norm1/scale, norm2/scale    [D]                 (vision_embed,)
    blocks/attn/qkv/kernel             [D, 3, N, H]        (vision_embed, None, vision_heads, vision_head_dim)
    blocks/attn/qkv/bias               [3, N, H]           (None, vision_heads, vision_head_dim)
    blocks/attn/proj/kernel            [N, H, D]           (vision_heads, vision_head_dim, vision_embed)
    blocks/attn/proj/bias              [D]                 (vision_embed,)
    blocks/mlp/{gate,up}_proj/kernel   [D, F]              (vision_embed, vision_mlp); bias [F]
    blocks/mlp/down_proj/kernel        [F, D]              (vision_mlp, vision_embed); bias [D]
    merger/ln_q/scale                  [D]                 (vision_embed,)
    merger/mlp_0/kernel                [U*D, U*D]          (vision_merge, vision_mlp); bias [U*D]
    merger/mlp_2/kernel                [U*D, O]            (vision_mlp, embed); bias [O]
  Activations are constrained with `activation_vision_{patches,embed,heads,mlp}` (output rows:
  `activation_vision_patches, activation_embed`).

`vision_leaf_table(cfg: ModelConfig) -> LeafTable` maps every param path above to its HF tensor(s):
  visual.patch_embed.proj.weight (Conv3d [D, C, tp, p, p]), visual.blocks.N.{norm1,norm2}.weight,
  visual.blocks.N.attn.{qkv,proj}.{weight,bias}, visual.blocks.N.mlp.{gate,up,down}_proj.{weight,bias},
  visual.merger.ln_q.weight, visual.merger.mlp.{0,2}.{weight,bias}.
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
from zoomjax.model.config import ModelConfig, VisionConfig
from zoomjax.model.layers import Projection, RMSNorm, SwiGLU, as_dtype, constrain, maybe_remat
from zoomjax.model.leaves import LeafSource, LeafTable

ROPE_THETA = 10000.0   # the reference's vision rope_parameters default (`axial`, theta 1e4); never overridden
NORM_EPS = 1e-6        # the reference hard-codes eps=1e-6 for every vision RMSNorm
_MASK_VALUE = float(np.finfo(np.float32).min)
PD = ("activation_vision_patches", "activation_vision_embed")
PNH = ("activation_vision_patches", "activation_vision_heads", None)


# ------------------------------------------------------------------------------------- host metadata
def _check_grid(grid_thw, m: int) -> np.ndarray:
  grid = np.asarray(grid_thw)
  if grid.ndim != 2 or grid.shape[1] != 3 or not np.issubdtype(grid.dtype, np.integer):
    raise ValueError(f"grid_thw must be an integer array [num_images, 3], got {grid.dtype} {grid.shape}")
  grid = grid.astype(np.int64)
  for i, (t, h, w) in enumerate(grid):
    if (t, h, w) == (0, 0, 0):
      continue
    if min(t, h, w) <= 0 or h % m or w % m:
      raise ValueError(f"grid_thw row {i} = {(int(t), int(h), int(w))}: need t, h, w > 0 with h, w multiples "
                       f"of spatial_merge_size={m} (an all-zero row marks a padding image)")
  return grid


def window_patches(vcfg: VisionConfig) -> int:
  """Patches in one complete attention window (8 x 8 = 64 for 112-px windows): the longest window segment."""
  return (vcfg.window_size // vcfg.patch_size) ** 2


def vision_metadata(vcfg: VisionConfig, grid_thw, pad_patches_to: int | None = None) -> dict[str, np.ndarray]:
  """Host-side, data-dependent inputs of `VisionTower` (see the module docstring for every key).

  Window order follows the reference's `get_vision_window_index`: per image and frame, windows of
  `window_size // (patch_size * m)` merged tokens a side in row-major order (partial windows at the right
  and bottom edges), merged tokens row-major inside a window.
  """
  m = vcfg.spatial_merge_size
  u = m * m
  ws = vcfg.window_size // (vcfg.patch_size * m)  # merged tokens per window side
  grid = _check_grid(grid_thw, m)
  order, rope, wseg, fseg = [], [], [], []
  n_tok = n_wseg = n_fseg = 0
  for t, h, w in grid:
    if t == 0:
      continue
    lh, lw = h // m, w // m
    # (row, col) of every patch, merged-block-major as the processor orders them, repeated per frame.
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    blk = lambda a: a.reshape(lh, m, lw, m).transpose(0, 2, 1, 3).reshape(-1, u)
    pos = np.tile(np.stack([blk(rows), blk(cols)], axis=-1), (t, 1, 1))         # [t*lh*lw, U, 2]
    tt, rr, cc = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
    nwh, nww = -(-lh // ws), -(-lw // ws)
    window = ((tt * nwh + rr // ws) * nww + cc // ws).reshape(-1)             # window of each merged token
    perm = np.argsort(window, kind="stable")                                   # row-major inside a window
    order.append(perm + n_tok)
    rope.append(pos[perm].reshape(-1, 2))
    wseg.append(window[perm] + n_wseg)
    fseg.append(tt.reshape(-1)[perm] + n_fseg)
    n_tok += t * lh * lw
    n_wseg += t * nwh * nww
    n_fseg += t
  real = n_tok * u
  total = real if pad_patches_to is None else int(pad_patches_to)
  if total < real or total % u:
    raise ValueError(f"pad_patches_to={pad_patches_to} must be >= the real patch count {real} and a multiple "
                     f"of spatial_merge_size**2={u}")
  n_pad = (total - real) // u
  longest = max([int(h * w) for t, h, w in grid if t > 0], default=0)
  span = window_patches(vcfg) * 2 ** max(0, math.ceil(math.log2(max(1, longest) / window_patches(vcfg))))
  pad_ids = np.arange(n_pad)  # each padding merged token is a segment of its own (U patches)
  window_index = np.concatenate(order + [n_tok + pad_ids]).astype(np.int32)
  return {
      "window_index": window_index,
      "reverse_index": np.argsort(window_index).astype(np.int32),
      "rope_pos": np.concatenate(rope + [np.zeros((n_pad * u, 2), np.int64)]).astype(np.int32),
      "window_segments": np.repeat(np.concatenate(wseg + [n_wseg + pad_ids]), u).astype(np.int32),
      "full_segments": np.repeat(np.concatenate(fseg + [n_fseg + pad_ids]), u).astype(np.int32),
      "full_span": np.zeros(span, np.int32),
  }


# ------------------------------------------------------------------------------------------ attention
def _segment_attention(q, k, v, seg_q, seg_k):
  """Softmax attention restricted to equal segment ids. q: [..., T, N, H], k/v: [..., S, N, H],
  seg_q: int32[..., T], seg_k: int32[..., S] -> [..., T, N, H]. Scores and softmax in float32."""
  scores = jnp.einsum("...tnh,...snh->...nts", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
  mask = seg_q[..., None, :, None] == seg_k[..., None, None, :]
  probs = jax.nn.softmax(jnp.where(mask, scores, _MASK_VALUE), axis=-1).astype(v.dtype)
  return jnp.einsum("...nts,...snh->...tnh", probs, v)


def full_attention(q, k, v, seg, span: int | None = None):
  """Attention within segments: q, k, v [P, N, H], seg int32[P] (contiguous segments).

  With `span` (static, >= the longest segment) and 3 * span < P it runs banded (O(P * 3 span)); otherwise
  dense over all P patches. Both are exact.
  """
  if span is not None and 3 * span < q.shape[0]:
    return banded_attention(q, k, v, seg, span)
  return _segment_attention(q, k, v, seg, seg)


def banded_attention(q, k, v, seg, block: int):
  """Segment attention when every segment is contiguous and at most `block` long (window attention).

  The sequence is cut into blocks of `block` patches; a segment that holds a query of block i lies inside
  blocks i-1, i, i+1, so each query block attends to those 3 * block keys only: O(P * block) instead of
  O(P^2). Exactly equal to `full_attention` under that condition.
  """
  p, n, h = q.shape
  nb = -(-p // block)
  pad = nb * block - p
  qs, ks, vs = (jnp.pad(a, ((0, pad), (0, 0), (0, 0))) for a in (q, k, v))
  seg = jnp.pad(seg, (0, pad), constant_values=-1)  # padding rows: a segment of their own (-1)
  qb = qs.reshape(nb, block, n, h)
  segb = seg.reshape(nb, block)

  def neighbours(a, fill):
    a = a.reshape(nb, block, *a.shape[1:])
    a = jnp.pad(a, ((1, 1),) + ((0, 0),) * (a.ndim - 1), constant_values=fill)
    return jnp.concatenate([a[:-2], a[1:-1], a[2:]], axis=1)  # [nb, 3 * block, ...]

  out = _segment_attention(qb, neighbours(ks, 0), neighbours(vs, 0), segb, neighbours(seg, -2))
  return out.reshape(nb * block, n, h)[:p]


def rotary_cos_sin(rope_pos: jax.Array, head_dim: int) -> tuple[jax.Array, jax.Array]:
  """2-D rotary tables: int32[P, 2] (row, col) -> (cos, sin) float32[P, H].

  The first H/4 frequencies turn with the row, the next H/4 with the column; the H/2 angles are duplicated
  for `rotate_half` (the reference's `Qwen2_5_VLVisionRotaryEmbedding.recomposition_frequencies`).
  """
  inv = jnp.asarray(rope_lib.inv_frequencies(head_dim // 2, ROPE_THETA))     # [H/4]
  freqs = rope_pos.astype(jnp.float32)[..., None] * inv                      # [P, 2, H/4]
  freqs = freqs.reshape(freqs.shape[0], -1)                                  # [P, H/2]: rows then cols
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


# ---------------------------------------------------------------------------------------------- modules
class VisionAttention(nn.Module):
  """Fused biased qkv, 2-D rotary, window or full segment attention, biased output projection.

  `full_span`: static bound on full-attention segment length (`vision_metadata`'s "full_span" length).
  """

  cfg: ModelConfig
  full_span: int | None = None

  @nn.compact
  def __call__(self, x, is_full, cos, sin, window_segments, full_segments):
    v = self.cfg.vision
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    qkv = Projection((3, v.num_heads, v.head_dim), ("vision_embed", None, "vision_heads", "vision_head_dim"),
                     use_bias=True, bias_axes=(None, "vision_heads", "vision_head_dim"), dtype=dt,
                     param_dtype=pdt, name="qkv")(x)                           # [P, 3, N, H]
    q, k, val = (constrain(qkv[:, i], PNH) for i in range(3))
    q = rope_lib.apply_rope(q[None], cos[None], sin[None])[0]
    k = rope_lib.apply_rope(k[None], cos[None], sin[None])[0]
    def window_attn(q, k, val):
      return banded_attention(q, k, val, window_segments, window_patches(v))

    def full_attn(q, k, val):
      return full_attention(q, k, val, full_segments, self.full_span)

    if isinstance(is_full, bool):
      out = (full_attn if is_full else window_attn)(q, k, val)
    else:  # scanned: a per-block flag
      out = jax.lax.cond(is_full, full_attn, window_attn, q, k, val)
    out = constrain(checkpoint_name(out, "attn_out"), PNH)
    return Projection((v.hidden_size,), ("vision_heads", "vision_head_dim", "vision_embed"), in_dims=2,
                      use_bias=True, bias_axes=("vision_embed",), dtype=dt, param_dtype=pdt, name="proj")(out)


class VisionBlock(nn.Module):
  """Pre-norm ViT block. Fits `nn.scan`: (carry x, is_full, *broadcast) -> (x, None).

  `full_attention` (static) selects the attention of an unrolled block; scanned blocks get `is_full` as a
  scanned bool instead (both attention kinds are compiled once, `lax.cond` runs one).
  """

  cfg: ModelConfig
  full_attention: bool | None = None
  full_span: int | None = None

  @nn.compact
  def __call__(self, x, is_full, cos, sin, window_segments, full_segments):
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    if self.full_attention is not None:
      is_full = self.full_attention
    norm = lambda name: RMSNorm(NORM_EPS, dt, pdt, axis_name="vision_embed", name=name)
    x = constrain(x, PD)
    x = x + VisionAttention(self.cfg, self.full_span, name="attn")(norm("norm1")(x), is_full, cos, sin, window_segments,
                                                    full_segments)
    v = self.cfg.vision
    x = x + SwiGLU(v.hidden_size, v.intermediate_size, "vision_embed", "vision_mlp",
                   ("activation_vision_patches", "activation_vision_mlp"), use_bias=True, dtype=dt,
                   param_dtype=pdt, name="mlp")(norm("norm2")(x))
    return constrain(x, PD), None


class PatchMerger(nn.Module):
  """RMSNorm -> concat each m x m group of patches -> Linear -> GELU (exact erf) -> Linear."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    v = self.cfg.vision
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    merged = v.hidden_size * v.spatial_merge_size ** 2
    x = RMSNorm(NORM_EPS, dt, pdt, axis_name="vision_embed", name="ln_q")(x).reshape(-1, merged)
    x = Projection((merged,), ("vision_merge", "vision_mlp"), use_bias=True, bias_axes=("vision_mlp",), dtype=dt,
                   param_dtype=pdt, name="mlp_0")(x)
    x = nn.gelu(x, approximate=False)
    return Projection((v.out_hidden_size,), ("vision_mlp", "embed"), use_bias=True, bias_axes=("embed",),
                      dtype=dt, param_dtype=pdt, name="mlp_2")(x)


class VisionTower(nn.Module):
  """The Qwen2.5-VL vision tower: f32[P, C] pixels + `vision_metadata` -> [M, O] (M = P // m^2)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, pixel_values: jax.Array, meta: dict[str, Any]) -> jax.Array:
    v = self.cfg.vision
    dt, pdt = as_dtype(self.cfg.dtype), as_dtype(self.cfg.param_dtype)
    u = v.spatial_merge_size ** 2
    win = jnp.asarray(meta["window_index"])
    patch_order = (win[:, None] * u + jnp.arange(u)).reshape(-1)         # window order, patch level
    x = jnp.take(pixel_values, patch_order, axis=0)
    x = Projection((v.hidden_size,), ("vision_patch", "vision_embed"), dtype=dt, param_dtype=pdt,
                   name="patch_embed")(x)
    cos, sin = rotary_cos_sin(jnp.asarray(meta["rope_pos"]), v.head_dim)
    segs = (jnp.asarray(meta["window_segments"]), jnp.asarray(meta["full_segments"]))
    span = meta["full_span"].shape[0]
    block_cls = maybe_remat(VisionBlock, self.cfg.remat_policy, scanned=self.cfg.scan_layers)
    if self.cfg.scan_layers:
      is_full = jnp.asarray([i in v.fullatt_block_indexes for i in range(v.depth)])
      blocks = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast), length=v.depth,
                       metadata_params={nn.PARTITION_NAME: "layers"})(self.cfg, full_span=span, name="blocks")
      x, _ = blocks(x, is_full, cos, sin, *segs)
    else:
      for i in range(v.depth):
        block = block_cls(self.cfg, full_attention=i in v.fullatt_block_indexes, full_span=span,
                          name=f"blocks_{i}")
        x, _ = block(x, None, cos, sin, *segs)
    x = PatchMerger(self.cfg, name="merger")(x)                          # [M, O], window order
    x = jnp.take(x, jnp.asarray(meta["reverse_index"]), axis=0)
    return constrain(x, ("activation_vision_patches", "activation_embed"))


# ------------------------------------------------------------------------------------------ HF mapping
def vision_leaf_table(cfg: ModelConfig) -> LeafTable:
  """{param path under `visual`: LeafSource} for every vision parameter (hub key names `visual.…`)."""
  v = cfg.vision
  d, h, kd = v.hidden_size, v.num_heads, v.head_dim
  conv_shape = (d, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
  linear = dict(to_param=lambda w: w.T, to_hf=lambda k: k.T)
  table: LeafTable = {
      ("patch_embed", "kernel"): LeafSource(("visual.patch_embed.proj.weight",),
                                            to_param=lambda w: w.reshape(d, -1).T,
                                            to_hf=lambda k: k.T.reshape(conv_shape)),
      ("merger", "ln_q", "scale"): LeafSource(("visual.merger.ln_q.weight",)),
  }
  for i in (0, 2):
    table[("merger", f"mlp_{i}", "kernel")] = LeafSource((f"visual.merger.mlp.{i}.weight",), **linear)
    table[("merger", f"mlp_{i}", "bias")] = LeafSource((f"visual.merger.mlp.{i}.bias",))
  block_leaves = {
      ("norm1", "scale"): ("norm1.weight", {}),
      ("norm2", "scale"): ("norm2.weight", {}),
      ("attn", "qkv", "kernel"): ("attn.qkv.weight", dict(to_param=lambda w: w.T.reshape(d, 3, h, kd),
                                                          to_hf=lambda k: k.reshape(d, 3 * d).T)),
      ("attn", "qkv", "bias"): ("attn.qkv.bias", dict(to_param=lambda b: b.reshape(3, h, kd),
                                                      to_hf=lambda b: b.reshape(3 * d))),
      ("attn", "proj", "kernel"): ("attn.proj.weight", dict(to_param=lambda w: w.T.reshape(h, kd, d),
                                                            to_hf=lambda k: k.reshape(d, d).T)),
      ("attn", "proj", "bias"): ("attn.proj.bias", {}),
  }
  for name in ("gate_proj", "up_proj", "down_proj"):
    block_leaves[("mlp", name, "kernel")] = (f"mlp.{name}.weight", linear)
    block_leaves[("mlp", name, "bias")] = (f"mlp.{name}.bias", {})
  for path, (suffix, fns) in block_leaves.items():
    keys = tuple(f"visual.blocks.{i}.{suffix}" for i in range(v.depth))
    if cfg.scan_layers:
      table[("blocks", *path)] = LeafSource(keys, stacked=True, **fns)
    else:
      for i, key in enumerate(keys):
        table[(f"blocks_{i}", *path)] = LeafSource((key,), **fns)
  return table
