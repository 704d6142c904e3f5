"""A map-style dataset memoised in memory up to a byte budget (building an example decodes images)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class Memo:
  """`[i]` memoised up to `max_bytes` of arrays (thread-safe: the pipeline reads from several threads).
  Errors are not memoised; past the budget, examples are rebuilt on every use."""

  def __init__(self, dataset: Any, max_bytes: int):
    self.dataset = dataset
    self.max_bytes = max_bytes
    self.bytes = 0
    self._cache: dict[int, Any] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.dataset)

  def __getitem__(self, i: int) -> Any:
    i = int(i)
    with self._lock:
      hit = self._cache.get(i)
    if hit is None:
      hit = self.dataset[i]
      size = sum(v.nbytes for v in hit.values() if isinstance(v, np.ndarray))
      with self._lock:
        if self.bytes + size <= self.max_bytes:
          self._cache[i] = hit
          self.bytes += size
    return hit
