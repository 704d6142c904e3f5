"""A learnable stand-in SFT set with images and no files, for tests and benchmarks (`data.kind: synthetic`)."""

from __future__ import annotations

from typing import Any

import numpy as np

class SyntheticCopyDataset:
  """A learnable stand-in SFT set: `[bos] x_1..x_k [image] [sep] x_1..x_k [eos]`; targets = the copy.

  Each example has one image of grid `(1, 2m * side, 2m * side)` with random patches (seeded per
  example); the prompt is k random tokens and the answer repeats them. For tests and benchmarks that
  need no files.
  """

  def __init__(self, model_cfg, num_examples: int = 256, prompt_len: int = 8, seed: int = 0,
               with_images: bool = True, image_side: int = 1):
    self.cfg, self.n, self.k, self.seed = model_cfg, num_examples, prompt_len, seed
    self.with_images = with_images
    m = model_cfg.vision.spatial_merge_size
    self.grid = np.array([1, 2 * m * image_side, 2 * m * image_side], np.int32)
    self.image_tokens = int(self.grid.prod() // (m * m))

  def __len__(self) -> int:
    return self.n

  @property
  def max_tokens(self) -> int:
    return 2 * self.k + 4 + (self.image_tokens + 2) * self.with_images

  def __getitem__(self, i: int) -> dict:
    cfg = self.cfg
    rng = np.random.default_rng([self.seed, int(i)])
    special = min(cfg.bos_token_id, cfg.pad_token_id, cfg.eos_token_id, cfg.vision_start_token_id,
                  cfg.vision_end_token_id, cfg.image_token_id)
    x = rng.integers(2, special, size=self.k).tolist()
    prompt = [cfg.bos_token_id, *x]
    ex: dict[str, Any] = {}
    if self.with_images:
      prompt += [cfg.vision_start_token_id] + [cfg.image_token_id] * self.image_tokens + [cfg.vision_end_token_id]
      ex["pixel_values"] = rng.standard_normal((int(self.grid.prod()), cfg.vision.patch_dim)).astype(np.float32)
      ex["image_grid_thw"] = self.grid[None]
    else:
      ex["pixel_values"] = np.zeros((0, cfg.vision.patch_dim), np.float32)
      ex["image_grid_thw"] = np.zeros((0, 3), np.int32)
    answer = [*x, cfg.eos_token_id]
    ex["input_ids"] = np.array(prompt + [1] + answer, np.int32)
    ex["loss_mask"] = np.array([0] * (len(prompt) + 1) + [1] * len(answer), np.int32)
    ex["question_id"] = f"synthetic-{i}"
    return ex
