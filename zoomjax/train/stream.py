"""A prefetching step stream: global batches as `[A, S]` pieces, from the data pipeline, exactly resumable.

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

from zoomjax.data.pipeline import to_iter


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
