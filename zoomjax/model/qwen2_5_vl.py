"""The full Qwen2.5-VL model (vision tower + language model) and its pure device functions.

`Qwen2_5_VL` is the Linen module; params are `{"visual": …, "language": …}`. The functions below take
the config as a static argument and the params as an ordinary argument (never closed over), so they jit
once per (config, shapes):

    init_params(cfg, rng)                     -> params (unboxed arrays)
    abstract_params(cfg)                      -> the same tree of jax.ShapeDtypeStruct (no allocation)
    apply(cfg, params, inputs, pixel_values)  -> float32[B, T, V]
    unstack_layers(cfg, params)               -> (cfg with scan_layers=False, params with per-layer leaves)

`inputs` is the dict from `zoomjax.model.inputs.prepare_inputs` (numpy on the host, arrays on device).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoomjax.model.config import ModelConfig
from zoomjax.model import vision
from zoomjax.model.language import LanguageModel, language_leaf_table
from zoomjax.model.leaves import LeafTable


class Qwen2_5_VL(nn.Module):
  """Qwen2.5-VL: vision tower (`visual`) + language model (`language`)."""

  cfg: ModelConfig

  def setup(self):
    self.language = LanguageModel(self.cfg)
    self.visual = vision.VisionTower(self.cfg)

  def __call__(self, input_ids, position_ids, mask, image_index=None, pixel_values=None, vision_meta=None,
               kv_cache=None, write_pos=None, logits_index=None):
    """Embeds tokens, scatters image features into `<|image_pad|>` slots, runs the decoder.

    Args:
      input_ids: int32[B, T]; position_ids: int32[3, B, T]; mask: bool[B, T, S].
      image_index: int32[B, T], row of the vision output for image tokens, -1 elsewhere.
      pixel_values: float32[P, C] or None; vision_meta: the vision tower's metadata.
      kv_cache / write_pos / logits_index: see `LanguageModel.__call__`.
    Returns:
      (logits float32[B, T, V] (or [B, J, V] with logits_index), updated cache or None).
    """
    x = self.language.embed(input_ids)
    if pixel_values is not None:
      feats = self.visual(pixel_values, vision_meta).astype(x.dtype)    # [M, D]
      idx = jnp.maximum(image_index, 0)
      x = jnp.where((image_index >= 0)[..., None], jnp.take(feats, idx, axis=0), x)
    return self.language(x, position_ids, mask, kv_cache, write_pos, logits_index)


def causal_mask(attention_mask: jax.Array) -> jax.Array:
  """bool[B, T, T]: key s visible to query t when s <= t, s is not padding, and s and t belong to the same
  segment.

  `attention_mask` is 0 for padding and a segment id > 0 for every real token: all ones (one sequence per
  row, the reference's mask) or 1, 1, .., 2, 2, .. for a packed row (`zoomjax.data.packing`), whose
  sequences then never see each other. A padding query sees every real key before it, as the
  reference's does (its output is never used; this keeps its softmax finite)."""
  t = attention_mask.shape[1]
  causal = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
  q, k = attention_mask[:, :, None], attention_mask[:, None, :]
  return causal[None] & (k > 0) & ((q == k) | (q == 0))


def apply(cfg: ModelConfig, params: Any, inputs: dict[str, Any], pixel_values=None) -> jax.Array:
  """Full (no-cache) forward. Jittable with `cfg` static; returns float32[B, T, V]."""
  mask = causal_mask(inputs["attention_mask"])
  logits, _ = Qwen2_5_VL(cfg).apply(
      {"params": params}, inputs["input_ids"], inputs["position_ids"], mask,
      inputs.get("image_index"), pixel_values, inputs.get("vision"))
  return logits


def _dummy_image(cfg: ModelConfig):
  """A 1-image (1, 2m, 2m) dummy input that touches every vision parameter at init."""
  m = cfg.vision.spatial_merge_size
  grid = np.array([[1, 2 * m, 2 * m]], np.int32)
  meta = vision.vision_metadata(cfg.vision, grid)
  pixels = np.zeros((4 * m * m, cfg.vision.patch_dim), np.float32)
  index = np.full((1, 4), -1, np.int32)
  index[0, :4] = np.arange(4)
  return pixels, meta, index


def _init(cfg: ModelConfig, rng: jax.Array):
  pixels, meta, index = _dummy_image(cfg)
  t = 4
  ids = np.zeros((1, t), np.int32)
  pos = np.zeros((3, 1, t), np.int32)
  mask = np.ones((1, t, t), bool)
  return Qwen2_5_VL(cfg).init(rng, ids, pos, mask, index, pixels, meta)["params"]


def init_params(cfg: ModelConfig, rng: jax.Array) -> Any:
  """Random params (unboxed: plain arrays, in cfg.param_dtype)."""
  return nn.unbox(jax.jit(_init, static_argnums=0)(cfg, rng))


def boxed_abstract_params(cfg: ModelConfig) -> Any:
  """Abstract params with their `nn.Partitioned` logical-axis boxes (for `nn.get_partition_spec`)."""
  return jax.eval_shape(functools.partial(_init, cfg), jax.random.key(0))


def abstract_params(cfg: ModelConfig) -> Any:
  """The params tree as `jax.ShapeDtypeStruct`s, nothing allocated."""
  return nn.unbox(boxed_abstract_params(cfg))


def leaf_table(cfg: ModelConfig) -> LeafTable:
  """{full param path: LeafSource} for the whole model (language and visual)."""
  table = {("language", *k): v for k, v in language_leaf_table(cfg).items()}
  table.update({("visual", *k): v for k, v in vision.vision_leaf_table(cfg).items()})
  return table


@functools.partial(jax.jit, static_argnums=0)
def _unstack(cfg: ModelConfig, params: Any) -> Any:
  def split(tree, name, n):
    tree = dict(tree)
    stacked = tree.pop(name)
    tree.update({f"{name}_{i}": jax.tree.map(lambda a: a[i], stacked) for i in range(n)})  # noqa: B023
    return tree
  return {"language": split(params["language"], "layers", cfg.text.num_hidden_layers),
          "visual": split(params["visual"], "blocks", cfg.vision.depth)}


def unstack_layers(cfg: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
  """Stacked per-layer leaves [L, …] split into per-layer arrays (a copy): the LM's `layers/…` into
  `layers_0 … layers_{L-1}`, the ViT's `blocks/…` into `blocks_0 …`.

  Returns `(cfg.replace(scan_layers=False), params)`, the layout the unrolled model reads (both towers
  follow `cfg.scan_layers`). Used by the generator on CPU: under `nn.scan` every decode step copies each
  layer's weights out of the stacks (a dynamic slice per leaf: the layer weights are read twice and
  written once per step); with per-layer arrays the step reads them once. A config that already has
  `scan_layers=False` is returned as is.
  """
  if not cfg.scan_layers:
    return cfg, params
  return cfg.replace(scan_layers=False), _unstack(cfg, params)


@jax.jit
def _untie(params: Any) -> Any:
  lang = dict(params["language"])
  lang["lm_head"] = {"kernel": jnp.transpose(lang["embed_tokens"]["embedding"])}
  return {**params, "language": lang}


def untie_head(cfg: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
  """A tied output head as its own [D, V] kernel (`language/lm_head/kernel` = the embedding transposed, a
  copy): the same logits, read as `x @ W` instead of `x @ E^T`.

  Returns `(cfg with text.tie_word_embeddings=False, params)`; an untied config is returned as is. Used by
  the generator on CPU, where XLA's small-batch dot against the transposed [V, D] embedding streams it
  at about half the bandwidth of the [D, V] layout (the head is the largest matrix of a decode step:
  benchmarks/results/rollout.md).
  """
  if not cfg.text.tie_word_embeddings:
    return cfg, params
  return cfg.replace(text=dataclasses.replace(cfg.text, tie_word_embeddings=False)), _untie(params)


_apply_jit = jax.jit(apply, static_argnums=0)


def forward(cfg: ModelConfig, params: Any, input_ids, pixel_values=None, image_grid_thw=None,
            attention_mask=None) -> jax.Array:
  """Logits of Qwen2.5-VL, as `Qwen2_5_VLForConditionalGeneration(...).logits` (SPEC §8).

  Args:
    input_ids: int[B, T], right-padded when attention_mask is given.
    pixel_values: float32[N, patch_dim] for all images of the batch in order, or None.
    image_grid_thw: int[num_images, 3], or None.
    attention_mask: int[B, T] or None.
  Returns:
    float32[B, T, vocab]. M-RoPE ids are computed on the host; the device part is one cached jit, so
    calls with the same shapes do not recompile.
  """
  if (pixel_values is None) != (image_grid_thw is None):
    raise ValueError("pixel_values and image_grid_thw must be given together")
  from zoomjax.model.inputs import prepare_inputs
  pad = None if pixel_values is None else int(np.shape(pixel_values)[0])
  inputs = prepare_inputs(cfg, input_ids, attention_mask, image_grid_thw, pad_patches_to=pad)
  # no real image (all grid rows are padding): nothing to encode
  pv = None if pixel_values is None or "vision" not in inputs else jnp.asarray(pixel_values, jnp.float32)
  return _apply_jit(cfg, params, inputs, pv)
