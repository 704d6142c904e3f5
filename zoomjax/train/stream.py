"""The training stream: global batches as `[A, S]` pieces, from the data pipeline, exactly resumable.

The examples come through `zoomjax.data.pipeline.sft_batches` (grain: per-epoch shuffle, process
sharding, bad examples skipped and counted). Its batch size is set to one *piece* per process (`b`
sequences here, `b * n` globally), with fixed buckets `(seq_len, b * max_patches, b * max_images)` so
every piece has the same static shapes. `StepStream` takes `A * S_local` consecutive pieces per optimizer
step; over all processes that is exactly examples `[g * B, (g + 1) * B)` of the shuffled stream, so the
examples of a step do not depend on the mesh or the process count.

A background thread runs the host-side preparation (`prepare`: M-RoPE ids, vision metadata, stacking)
while the device computes. The state saved in checkpoints is the pipeline's iterator state after the
last step handed out (`{"next_index": k}`), so a restored run continues with the very next batch.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import numpy as np


class StepStream:
  """Args:
    pieces: a grain `MapDataset` of pieces (e.g. `sft_batches(...)`); iterated with `to_iter`.
    pieces_per_step: `A * S_local`. prepare: `list of pieces -> device-ready tree` (in the thread).
    prefetch: steps prepared ahead (0 = synchronous). num_threads: grain example-building threads.
    pad_last: when the pipeline ends inside a step, fill the step with blank (all-masked) pieces instead
      of dropping it (evaluation: every example counts once).
  """

  def __init__(self, pieces: Any, pieces_per_step: int, prepare: Callable[[list], Any] | None = None,
               prefetch: int = 2, num_threads: int = 2, pad_last: bool = False):
    from zoomjax.data.pipeline import to_iter
    self._it = iter(to_iter(pieces, num_threads=num_threads, prefetch=max(2 * pieces_per_step, 4)))
    self.pieces_per_step = pieces_per_step
    self.pad_last = pad_last
    self.prepare = prepare
    self._state = self._it.get_state()
    self._prefetch = prefetch
    self._queue: queue.Queue | None = None
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()
    self.skipped = 0  # examples the pipeline could not build (bad image, too long), over handed-out steps

  def _make(self) -> tuple[Any, Any, int]:
    pieces = []
    for _ in range(self.pieces_per_step):
      try:
        pieces.append(next(self._it))
      except StopIteration:
        if not (self.pad_last and pieces):
          raise
        pieces.append(blank_piece(pieces[0]))
    skipped = int(sum(int(p.get("num_skipped", 0)) for p in pieces))
    out = self.prepare(pieces) if self.prepare else pieces
    return out, self._it.get_state(), skipped

  def _worker(self) -> None:
    while not self._stop.is_set():
      try:
        item = (*self._make(), None)
      except StopIteration:
        item = (None, None, 0, StopIteration())
      except Exception as e:  # noqa: BLE001  (re-raised in the consumer thread)
        item = (None, None, 0, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[3] is not None:
        return

  def __iter__(self):
    return self

  def __next__(self) -> Any:
    if self._prefetch <= 0:
      out, state, skipped = self._make()
    else:
      if self._thread is None:
        self._queue = queue.Queue(maxsize=self._prefetch)
        self._stop.clear()
        self._thread = threading.Thread(target=self._worker, daemon=True, name="zoomjax-data")
        self._thread.start()
      out, state, skipped, err = self._queue.get()
      if err is not None:
        raise err
    self._state = state
    self.skipped += skipped
    return out

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=30)
    self._thread = self._queue = None

  def get_state(self) -> dict:
    """Pipeline position after the last step handed out (JSON-able)."""
    return {"pipeline": self._state, "skipped": self.skipped}

  def set_state(self, state: dict | None) -> None:
    """Continue after the step at which `state` was taken (call before iterating)."""
    if not state:
      return
    if self._thread is not None:
      raise RuntimeError("set_state after iteration started")
    self._it.set_state(state["pipeline"])
    self._state = state["pipeline"]
    self.skipped = int(state.get("skipped", 0))


def blank_piece(like: dict) -> dict:
  """A piece shaped like `like` that holds no sequence and no image (every mask 0)."""
  out = {k: np.zeros_like(v) for k, v in like.items() if isinstance(v, np.ndarray)}
  if "example_index" in out:
    out["example_index"][:] = -1
  return out


# ------------------------------------------------------------------------------------ synthetic data
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
