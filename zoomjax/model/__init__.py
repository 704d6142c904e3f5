"""Qwen2.5-VL in Flax Linen: config, vision tower, language model, M-RoPE, KV cache, sharding axes.

Importing this package is cheap: the names below load their modules on first use.

Shape letters (one alphabet for every einsum, docstring and shape comment in zoomjax.model)
-------------------------------------------------------------------------------------------
    B  batch rows                       T  new (query) tokens of a row     S  key slots: T without a
    L  layers (LM) / blocks (ViT)       D  hidden width (of the LM; of        cache, the cache size
    N  query heads                         the ViT in vision.py)              with one
    K  key/value heads (GQA; ViT K = N) G  query heads per KV head, N = K * G
    H  head_dim                         F  MLP intermediate width          V  vocabulary
    J  positions picked for the head    C  flattened patch (patch_dim, 1176)
    P  image patches (all images)       U  patches per merged token (m^2)  M  merged image tokens, P / U
    O  merger output width (= LM D)     I  images

Full forward (SPEC §8)
----------------------
    forward(cfg, params, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None)
        -> float32[B, T, V]                      host prep + one cached jit
    prepare_inputs(cfg, input_ids, attention_mask=None, image_grid_thw=None, pad_patches_to=None)
        -> dict of numpy arrays                   (zoomjax.model.inputs; host only)
    apply(cfg, params, inputs, pixel_values=None) -> float32[B, T, V]   pure, jittable, cfg static
    init_params(cfg, rng) / abstract_params(cfg) / leaf_table(cfg)

Params: `{"visual": …, "language": …}` (see `language.py` / `vision.py` for the leaves and their
logical axes). `cfg.scan_layers` stacks per-layer leaves on a leading `layers` axis.

KV cache (zoomjax.model.cache; the generator's API)
---------------------------------------------------
    cache = init_cache(cfg, batch, max_len, dtype=None)
        {"k", "v": [L, B, K, S, H], "length": int32[B], "rope_deltas": int32[B]}; rows packed from slot 0.
    inputs = prepare_extend(cfg, histories, cached_lengths, image_grids=None, pad_to=None,
                            pad_patches_to=None)           (host)
        per row: full token history, how much of it is cached, grids of all its images; returns the new
        tokens (int32[B, Tn], `num_new`), their 3-D M-RoPE ids computed from the full history, the new
        `rope_deltas`, the image gather index and the vision metadata of the new images
        (`inputs["image_grid_thw"]` says which images' pixel_values to pass, in order).
    logits, cache = extend_jit(cfg, params, cache, inputs, pixel_values=None)     float32[B, Tn, V]
        prefill, or a continuation with text and new images; cache donated. `last_only=True`: only each
        row's last new token, float32[B, V] (what generation needs; the head runs on B positions).
    logits, cache = decode_jit(cfg, params, cache, tokens, active=None)           float32[B, V]
        one text token per row at M-RoPE position length[b] + rope_deltas[b]; cache donated and updated
        in place (B slots written per layer; attention reads only the cache blocks up to the longest row).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ModelConfig": "zoomjax.model.config", "TextConfig": "zoomjax.model.config",
    "VisionConfig": "zoomjax.model.config", "ConfigError": "zoomjax.model.config",
    "forward": "zoomjax.model.qwen2_5_vl", "apply": "zoomjax.model.qwen2_5_vl",
    "init_params": "zoomjax.model.qwen2_5_vl", "abstract_params": "zoomjax.model.qwen2_5_vl",
    "leaf_table": "zoomjax.model.qwen2_5_vl", "Qwen2_5_VL": "zoomjax.model.qwen2_5_vl",
    "prepare_inputs": "zoomjax.model.inputs", "prepare_extend": "zoomjax.model.inputs",
    "init_cache": "zoomjax.model.cache", "extend": "zoomjax.model.cache", "decode": "zoomjax.model.cache",
    "extend_jit": "zoomjax.model.cache", "decode_jit": "zoomjax.model.cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'zoomjax.model' has no attribute {name!r}")


def __dir__():
  return __all__
