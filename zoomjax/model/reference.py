"""The PyTorch reference (`transformers.Qwen2_5_VLForConditionalGeneration`) for parity tests.

Test-only: imports torch and transformers lazily. `build_reference` makes a random model whose weights
have O(1) activations (the default 0.02 init makes logits nearly constant, which hides bugs) and writes
it with `save_pretrained`, the path real checkpoints take into `zoomjax.hf.load`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from zoomjax.model.config import ModelConfig


def hf_config(cfg: ModelConfig):
  import transformers
  return transformers.Qwen2_5_VLConfig(**cfg.to_hf_dict())


def build_reference(cfg: ModelConfig, seed: int = 0, save_dir: str | os.PathLike | None = None):
  """A random fp32, eager-attention reference model (optionally saved with `save_pretrained`)."""
  import torch
  import transformers
  torch.manual_seed(seed)
  model = transformers.Qwen2_5_VLForConditionalGeneration(hf_config(cfg))
  model.config._attn_implementation = "eager"
  for sub in (model.config.text_config, model.config.vision_config):
    sub._attn_implementation = "eager"
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "layernorm" in name or name.endswith(("norm1.weight", "norm2.weight",
                                                                                "ln_q.weight")):
        p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn(p.shape, generator=gen))
      elif "embed_tokens" in name:
        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
      else:
        fan_in = math.prod(p.shape[1:])
        p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
  model.eval()
  if save_dir is not None:
    model.save_pretrained(os.fspath(save_dir))
  return model


def reference_logits(model, cfg: ModelConfig, input_ids, attention_mask=None, pixel_values=None,
                     image_grid_thw=None) -> np.ndarray:
  """float32[B, T, V] logits; passes `mm_token_type_ids` so the reference uses 3-D M-RoPE ids."""
  import torch
  ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
  kw: dict[str, Any] = {"input_ids": ids}
  if attention_mask is not None:
    kw["attention_mask"] = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
  if pixel_values is not None:
    kw["pixel_values"] = torch.as_tensor(np.asarray(pixel_values), dtype=torch.float32)
    kw["image_grid_thw"] = torch.as_tensor(np.asarray(image_grid_thw), dtype=torch.long)
    kw["mm_token_type_ids"] = (ids == cfg.image_token_id).to(torch.int32)
  with torch.no_grad():
    return model(**kw).logits.float().numpy()


def reference_rope_index(cfg: ModelConfig, input_ids, attention_mask=None, image_grid_thw=None):
  """The reference's `get_rope_index` (position_ids int[3, B, T], deltas int[B]) without building a model."""
  import types
  import torch
  import transformers
  cls = transformers.Qwen2_5_VLModel
  this = types.SimpleNamespace(config=hf_config(cfg))
  this.get_vision_position_ids = types.MethodType(cls.get_vision_position_ids, this)
  ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
  mask = None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
  grid = None if image_grid_thw is None else torch.as_tensor(np.asarray(image_grid_thw), dtype=torch.long)
  pos, deltas = cls.get_rope_index(this, ids, mm_token_type_ids=(ids == cfg.image_token_id).to(torch.int32),
                                   image_grid_thw=grid, attention_mask=mask)
  return pos.numpy(), deltas.numpy().reshape(-1)
