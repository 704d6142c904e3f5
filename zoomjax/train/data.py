"""The training stream: a deterministic, exactly resumable sequence of global batches, cut into pieces.

`BatchStream` walks a map-style dataset of SFT examples in a per-epoch permutation fixed by a seed.
Global batch `g` is examples `[g * B, (g + 1) * B)` of the concatenated epoch permutations, cut into
`A * S` pieces of `b` consecutive examples (see `zoomjax.train.batching`); this process collates only
its own pieces. The stream's state is one integer — batches consumed — so a restored run sees exactly
the batches the uninterrupted run would have seen, whatever the mesh or process count.

A background thread prepares the next batches (collate, image decoding, host-side model inputs) while
the device computes; `get_state()` counts batches handed out, not prepared.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Sequence

import numpy as np


class BatchStream:
  """Args:
    dataset: `len()` and `[i]` -> one example (whatever `collate` takes).
    collate: `list of b examples -> piece` (numpy dict; see `zoomjax.train.batching`).
    batch_size: global batch B. num_micro: A. num_shards: S. shard_range: this process's `[lo, hi)` of S.
    seed: permutation seed (`shuffle=False` keeps dataset order). num_epochs: 0 = unbounded.
    prepare: optional `pieces -> device-ready tree` run in the prefetch thread.
    prefetch: batches prepared ahead (0 = synchronous).
  """

  def __init__(self, dataset: Any, collate: Callable[[list], dict], batch_size: int, num_micro: int = 1,
               num_shards: int = 1, shard_range: tuple[int, int] | None = None, seed: int = 0,
               shuffle: bool = True, num_epochs: int = 0, prepare: Callable[[list], Any] | None = None,
               prefetch: int = 2):
    n_pieces = num_micro * num_shards
    if batch_size % n_pieces:
      raise ValueError(f"data.batch_size={batch_size} must be divisible by grad_accum * batch shards = "
                       f"{num_micro} * {num_shards} = {n_pieces}")
    if len(dataset) == 0:
      raise ValueError("the training dataset is empty")
    self.dataset, self.collate, self.prepare = dataset, collate, prepare
    self.batch_size, self.num_micro, self.num_shards = batch_size, num_micro, num_shards
    self.piece_size = batch_size // n_pieces
    self.shard_range = shard_range or (0, num_shards)
    self.seed, self.shuffle, self.num_epochs = seed, shuffle, num_epochs
    self._perms: dict[int, np.ndarray] = {}
    self._consumed = 0
    self._prefetch = prefetch
    self._queue: queue.Queue | None = None
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()

  # ------------------------------------------------------------------ order
  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      n = len(self.dataset)
      self._perms = {epoch: (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                             else np.arange(n))}
    return self._perms[epoch]

  def example_indices(self, g: int) -> np.ndarray:
    """Dataset indices of global batch `g` (all B of them, in order)."""
    n = len(self.dataset)
    pos = np.arange(g * self.batch_size, (g + 1) * self.batch_size)
    return np.array([self._perm(int(p // n))[p % n] for p in pos])

  @property
  def num_batches(self) -> int | None:
    """Global batches available (None = unbounded)."""
    if not self.num_epochs:
      return None
    return self.num_epochs * len(self.dataset) // self.batch_size

  def local_pieces(self, g: int) -> list:
    """This process's pieces of batch `g`, microbatch-major: `[(a, s) for a in A for s in local S]`."""
    idx = self.example_indices(g)
    b, s_all = self.piece_size, self.num_shards
    lo, hi = self.shard_range
    out = []
    for a in range(self.num_micro):
      for s in range(lo, hi):
        k = a * s_all + s
        out.append(self.collate([self.dataset[int(i)] for i in idx[k * b:(k + 1) * b]]))
    return out

  def _make(self, g: int) -> Any:
    pieces = self.local_pieces(g)
    return self.prepare(pieces) if self.prepare else pieces

  # ------------------------------------------------------------------ iteration
  def _worker(self, start: int) -> None:
    g = start
    limit = self.num_batches
    while not self._stop.is_set() and (limit is None or g < limit):
      try:
        item = (g, self._make(g), None)
      except Exception as e:  # noqa: BLE001  (re-raised in the consumer thread)
        item = (g, None, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[2] is not None:
        return
      g += 1

  def __iter__(self):
    return self

  def __next__(self) -> Any:
    limit = self.num_batches
    if limit is not None and self._consumed >= limit:
      raise StopIteration
    if self._prefetch <= 0:
      out = self._make(self._consumed)
    else:
      if self._thread is None:
        self._queue = queue.Queue(maxsize=self._prefetch)
        self._stop.clear()
        self._thread = threading.Thread(target=self._worker, args=(self._consumed,), daemon=True)
        self._thread.start()
      g, out, err = self._queue.get()
      if err is not None:
        raise err
      assert g == self._consumed, (g, self._consumed)
    self._consumed += 1
    return out

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
    self._thread = self._queue = None

  # ------------------------------------------------------------------ checkpointing
  def get_state(self) -> dict:
    return {"batches": int(self._consumed), "seed": int(self.seed), "batch_size": int(self.batch_size),
            "num_examples": len(self.dataset)}

  def set_state(self, state: dict | None) -> None:
    if not state:
      return
    if state.get("batch_size", self.batch_size) != self.batch_size or \
        state.get("num_examples", len(self.dataset)) != len(self.dataset):
      raise ValueError(f"checkpointed data state {state} does not match this run's data "
                       f"(batch_size={self.batch_size}, {len(self.dataset)} examples)")
    self.close()
    self._consumed = int(state["batches"])


# ------------------------------------------------------------------------------------ synthetic data
class SyntheticCopyDataset:
  """A learnable stand-in SFT set: `[im_start] x_1..x_k [image] [sep] x_1..x_k [eos]`, targets = the copy.

  Each example has one image of grid `(1, 2m, 2m)` (patches drawn from a fixed seed); the prompt is k
  random tokens, the answer repeats them. Used by tests and benchmarks when no real data is wanted.
  """

  def __init__(self, model_cfg, num_examples: int = 256, prompt_len: int = 8, seed: int = 0,
               with_images: bool = True, image_side: int = 2):
    self.cfg, self.n, self.k, self.seed = model_cfg, num_examples, prompt_len, seed
    self.with_images = with_images
    m = model_cfg.vision.spatial_merge_size
    self.grid = np.array([1, image_side * m, image_side * m], np.int32)
    self.image_tokens = int(self.grid.prod() // (m * m))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict:
    cfg = self.cfg
    rng = np.random.default_rng([self.seed, int(i)])
    special = min(cfg.bos_token_id, cfg.pad_token_id, cfg.eos_token_id, cfg.vision_start_token_id,
                  cfg.vision_end_token_id, cfg.image_token_id)
    hi = min(special, cfg.text.vocab_size) - 1
    x = rng.integers(2, hi, size=self.k)
    sep = 1
    prompt = [cfg.bos_token_id, *x.tolist()]
    ex: dict[str, Any] = {}
    if self.with_images:
      prompt += [cfg.vision_start_token_id] + [cfg.image_token_id] * self.image_tokens + [cfg.vision_end_token_id]
      ex["pixel_values"] = rng.standard_normal((int(self.grid.prod()), cfg.vision.patch_dim)).astype(np.float32)
      ex["image_grid_thw"] = self.grid[None]
    answer = [*x.tolist(), cfg.eos_token_id]
    ids = prompt + [sep] + answer
    mask = [0] * (len(prompt) + 1) + [1] * len(answer)
    ex["input_ids"] = np.array(ids, np.int32)
    ex["loss_mask"] = np.array(mask, np.int32)
    return ex


def collate_examples(examples: Sequence[dict], seq_len: int, pad_id: int, num_patches: int = 0,
                     num_images: int = 0, patch_dim: int = 1176) -> dict:
  """Pads `b` examples (`input_ids int[n]`, `loss_mask int[n]`, optional `pixel_values [p, D]` and
  `image_grid_thw [k, 3]`) to a piece: `[b, seq_len]` text arrays, `[num_patches, D]` pixels and
  `[num_images, 3]` grids (zero rows = padding). Sequences longer than `seq_len` are an error."""
  b = len(examples)
  ids = np.full((b, seq_len), pad_id, np.int32)
  att = np.zeros((b, seq_len), np.int32)
  lm = np.zeros((b, seq_len), np.int32)
  pixels, grids = [], []
  for r, ex in enumerate(examples):
    n = len(ex["input_ids"])
    if n > seq_len:
      raise ValueError(f"example of {n} tokens exceeds data.seq_len={seq_len}")
    ids[r, :n] = ex["input_ids"]
    att[r, :n] = 1
    lm[r, :n] = ex["loss_mask"]
    if ex.get("pixel_values") is not None:
      pixels.append(np.asarray(ex["pixel_values"], np.float32))
      grids.append(np.asarray(ex["image_grid_thw"], np.int32).reshape(-1, 3))
  piece = {"input_ids": ids, "attention_mask": att, "loss_mask": lm}
  if num_patches:
    pv = np.concatenate(pixels) if pixels else np.zeros((0, patch_dim), np.float32)
    gr = np.concatenate(grids) if grids else np.zeros((0, 3), np.int32)
    if len(pv) > num_patches or len(gr) > num_images:
      raise ValueError(f"piece has {len(pv)} patches / {len(gr)} images, over the budget "
                       f"{num_patches} / {num_images} (data.max_patches / data.max_images)")
    piece["pixel_values"] = np.concatenate([pv, np.zeros((num_patches - len(pv), pv.shape[1]), np.float32)])
    piece["image_grid_thw"] = np.concatenate([gr, np.zeros((num_images - len(gr), 3), np.int32)])
  return piece
