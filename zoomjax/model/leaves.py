"""The HF-checkpoint <-> zoomjax parameter mapping convention, shared by every model part.

Each part (language model, vision tower) describes its parameters as a flat table
`{param_path: LeafSource}`, where `param_path` is the tuple of keys into the Flax `params` dict.
`zoomjax.hf` streams tensors through these tables: one leaf at a time is read from safetensors,
transformed and placed on its target sharding, so a checkpoint is never held twice in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

ParamPath = tuple[str, ...]


def _identity(x: np.ndarray) -> np.ndarray:
  return x


@dataclasses.dataclass(frozen=True)
class LeafSource:
  """Where one zoomjax parameter comes from in an HF checkpoint.

  Attributes:
    hf_keys: one HF tensor name, or one per layer for a leaf stacked over layers (axis 0, scan layout).
    to_param: maps one HF tensor (torch layout) to the zoomjax layout of one layer's slice.
    to_hf: the inverse of `to_param` (used by `hf.save`).
    stacked: whether the leaf stacks `hf_keys` along a new leading `layers` axis.
  """

  hf_keys: tuple[str, ...]
  to_param: Callable[[np.ndarray], np.ndarray] = _identity
  to_hf: Callable[[np.ndarray], np.ndarray] = _identity
  stacked: bool = False

  def __post_init__(self):
    if not self.hf_keys:
      raise ValueError("LeafSource needs at least one hf key")
    if not self.stacked and len(self.hf_keys) != 1:
      raise ValueError(f"an unstacked LeafSource takes exactly one hf key, got {self.hf_keys}")


LeafTable = dict[ParamPath, LeafSource]
