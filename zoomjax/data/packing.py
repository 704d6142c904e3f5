"""Packed SFT pieces: several whole examples per training sequence, so padding stops costing compute.

    pieces = packed_sft_pieces(examples, seq_len=704, max_patches=1024, max_images=4, pad_id=0, seed=0)
    it = iter(pieces); piece = next(it); state = it.get_state()   # exactly resumable, like `sft_batches`

grain's first-fit packer (`grain.experimental.FirstFitPackIterDataset`) fills each sequence with whole
examples within three budgets at once: tokens (`seq_len`), patch rows (`max_patches`) and image slots
(`max_images`); an example or an image is never split. A packed piece marks its examples in
`attention_mask` with ids 1, 2, .. (0 = padding). With that mask the model's attention stays inside each
example (`zoomjax.model.qwen2_5_vl.causal_mask`), every example gets its own M-RoPE ids from 0
(`zoomjax.model.inputs.prepare_inputs`) and its own images in order, so an example's logits in a packed
piece equal its logits alone (`tests/test_packing.py`). The first token of every example gets loss
weight 0 (it is a prompt token anyway, and position 0 of an unpacked row is never a target either), so
no loss crosses a boundary; the step's loss stays the token mean over the same examples.

Order: the examples are shuffled per epoch and strided over processes exactly as `sft_batches` does;
the packer then takes them in that order, `bins` open sequences at a time (first fit: an example goes to
the first open sequence with room; when none has room, all are emitted in order and the example opens
the next ones). Larger `bins` fill better and reorder examples a little more.

Bad examples (unreadable image, too long for a sequence's budget) are logged with their index and
skipped; the count reaches the piece that was being filled (`num_skipped`), as in `collate_sft`.
`on_error="raise"` raises instead.

Host piece (numpy; what `zoomjax.train.batching.make_piece` takes): input_ids int32[1, T] (`pad_id` in
padding), attention_mask int32[1, T] (example ids), loss_mask int32[1, T], pixel_values float32[P, 1176],
image_grid_thw int32[I, 3] (zero rows = padding), valid int32[1], example_index int32[1] (-1: a piece
holds several), num_skipped int32[].
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from zoomjax.data.pipeline import PATCH_DIM, ExampleTooLongError, example_order

log = logging.getLogger(__name__)


class _Skips:
  """Drops the examples that cannot be packed (the filter runs in the consumer thread, in stream order),
  logging each and counting them until the next piece takes the count."""

  def __init__(self, seq_len: int, max_patches: int, max_images: int, on_error: str):
    self.limits = {"tokens": seq_len, "patch rows": max_patches, "images": max_images}
    self.on_error = on_error
    self.count = 0
    self._lock = threading.Lock()

  def keep(self, item) -> bool:
    i, ex = item
    if isinstance(ex, BaseException):
      why = f"{type(ex).__name__}: {ex}"
      if self.on_error == "raise":
        raise ex
    else:
      sizes = {"tokens": len(ex["input_ids"]), "patch rows": _pixels(ex).shape[0], "images": len(_grid(ex))}
      over = [f"{sizes[k]} {k} exceed the packed sequence's {v}" for k, v in self.limits.items() if sizes[k] > v]
      if not over:
        return True
      why = "; ".join(over)
      if self.on_error == "raise":
        raise ExampleTooLongError(f"example {i} ({ex.get('question_id', '?')}): {why}")
    log.warning("SFT example %d skipped: %s", i, why)
    with self._lock:
      self.count += 1
    return False

  def take(self) -> int:
    with self._lock:
      n, self.count = self.count, 0
    return n


def _pixels(ex) -> np.ndarray:
  return np.asarray(ex.get("pixel_values", np.zeros((0, PATCH_DIM))), np.float32).reshape(-1, PATCH_DIM)


def _grid(ex) -> np.ndarray:
  return np.asarray(ex.get("image_grid_thw", np.zeros((0, 3))), np.int32).reshape(-1, 3)


def _features(item) -> dict[str, np.ndarray]:
  _, ex = item
  return {"input_ids": np.asarray(ex["input_ids"], np.int32), "loss_mask": np.asarray(ex["loss_mask"], np.int32),
          "pixel_values": _pixels(ex), "image_grid_thw": _grid(ex)}


def _to_piece(packed: dict[str, np.ndarray], pad_id: int, skips: _Skips) -> dict[str, np.ndarray]:
  seg = packed["input_ids_segment_ids"].astype(np.int32)
  ids = np.where(seg > 0, packed["input_ids"], pad_id).astype(np.int32)
  first = np.concatenate([[True], seg[1:] != seg[:-1]])  # an example's first token is never a target
  return {"input_ids": ids[None], "attention_mask": seg[None],
          "loss_mask": np.where((seg > 0) & ~first, packed["loss_mask"], 0).astype(np.int32)[None],
          "pixel_values": packed["pixel_values"].astype(np.float32),
          "image_grid_thw": np.where(packed["image_grid_thw_segment_ids"][:, None] > 0,
                                     packed["image_grid_thw"], 0).astype(np.int32),
          "valid": np.ones((1,), np.int32), "example_index": np.full((1,), -1, np.int32),
          "num_skipped": np.asarray(skips.take(), np.int32)}


def packed_sft_pieces(examples, *, seq_len: int, max_patches: int, max_images: int, pad_id: int, seed: int = 0,
                      shuffle: bool = True, num_epochs: int | None = None, shard_index: int | None = None,
                      shard_count: int | None = None, bins: int = 1, on_error: str = "skip",
                      num_threads: int = 2, prefetch: int = 8):
  """Packed SFT pieces (a grain `IterDataset`; module docstring) from a map-style dataset of examples
  (`[i]` -> `input_ids`, `loss_mask`, `pixel_values`, `image_grid_thw`, as `sft_batches` takes).

  Args:
    seq_len / max_patches / max_images: the budgets of one packed sequence.
    pad_id: the padding token. seed / shuffle / num_epochs / shard_index / shard_count: as `sft_batches`.
    bins: sequences filled at once (first fit). on_error: "skip" (logged, counted) or "raise".
    num_threads / prefetch: examples built ahead in threads (image decoding).
  """
  import grain
  from grain.experimental import FirstFitPackIterDataset
  for name, v in (("seq_len", seq_len), ("max_patches", max_patches), ("max_images", max_images), ("bins", bins)):
    if v < 1:
      raise ValueError(f"{name} must be >= 1 for packing, got {v}")
  ds = example_order(examples, seed=seed, shuffle=shuffle, num_epochs=num_epochs, shard_index=shard_index,
                     shard_count=shard_count, on_error=on_error)
  skips = _Skips(seq_len, max_patches, max_images, on_error)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(prefetch, num_threads)))
  it = it.filter(skips.keep).map(_features)
  it = FirstFitPackIterDataset(it, length_struct={"input_ids": seq_len, "loss_mask": seq_len,
                                                  "pixel_values": max_patches, "image_grid_thw": max_images},
                               num_packing_bins=bins, shuffle_bins=False)
  return it.map(lambda x: _to_piece(x, pad_id, skips))

