"""grain pipelines: SFT batches and RL prompt batches, shuffled, sharded, bucketed, exactly resumable.

Both pipelines are grain `MapDataset`s (random access), so an iterator's state is one integer and a
restored iterator yields exactly the batches the uninterrupted one would have:

    ds = sft_batches(examples, batch_size=8, seed=0, pad_id=ids["pad_token_id"])
    it = iter(to_iter(ds))
    batch = next(it); state = it.get_state()     # {"next_index": k}, JSON-serialisable
    it2 = iter(to_iter(ds)); it2.set_state(state)  # continues with batch k

Order: the source (`len`, `[i]`) is shuffled with a per-epoch permutation (`seed + epoch`), repeated
`num_epochs` times (None = forever), then element `p + n*j` goes to process `p` of `n`
(`jax.process_index()` / `jax.process_count()` unless given). Each process batches `batch_size / n`
consecutive elements of its stride, so global batch `g` is always examples `[g*B, (g+1)*B)` of the
shuffled stream, whatever the number of processes.

Static shapes: the sequence length T, pixel rows P and image slots I of a batch are rounded up to
buckets (`Buckets`; `zoomjax.model.buckets.ladder`, the generator's rounding rule), so a jitted step
compiles once per bucket combination. Padding: token rows with
`pad_id` and zero masks; pixel rows of zeros; image rows `(0, 0, 0)` (what `zoomjax.model` treats as
padding). A short final batch is padded to `batch_size` with invalid rows (`valid = 0`).

Bad examples never crash the pipeline by default (`on_error="skip"`): an example whose image is missing
or corrupt, or that is longer than the largest bucket, becomes an invalid row (all masks 0), is counted
in `batch["num_skipped"]` and logged with its question id. `on_error="raise"` raises instead.

SFT batch (numpy):  input_ids int32[B, T], attention_mask int32[B, T], loss_mask int32[B, T] (1 where
  input_ids[b, t] is a target predicted from position t-1), pixel_values float32[P, 1176],
  image_grid_thw int32[I, 3], valid int32[B], example_index int32[B] (-1 = padding), num_skipped int32[].
RL batch: input_ids / attention_mask int32[B, T] (the prompt, right-padded), prompt_length int32[B],
  pixel_values, image_grid_thw (the global views), gt_box float32[B, 4] (original px; zeros without a box),
  gt_box_1024 float32[B, 4], has_box int32[B], image_size int32[B, 2] (W, H), global_scale float32[B]
  (global-view px -> original px), valid, example_index, num_skipped, and `meta`: a list of B dicts
  (question_id, image_name, answer, type, category, higher_level; None for padding rows) kept on the host
  for the answer judge.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import numpy as np

from zoomjax.data import images as I
from zoomjax.model.buckets import ladder

log = logging.getLogger(__name__)

PATCH_DIM = 1176


class ExampleTooLongError(ValueError):
  """An example does not fit the largest bucket."""


@dataclasses.dataclass(frozen=True)
class Buckets:
  """Allowed static sizes: sequence length, pixel rows per batch, image slots per batch.

  A single entry makes that dimension fixed. The defaults cover the embedded default and LRS-GRO at the
  released pixel budgets; pass your own for other settings.
  """

  seq_len: tuple[int, ...] = ladder(128, 8192)
  pixel_rows: tuple[int, ...] = ladder(256, 1 << 20, 2, 64)
  images: tuple[int, ...] = ladder(1, 256, 1, 1)

  @staticmethod
  def pick(n: int, sizes: Sequence[int], what: str) -> int:
    for s in sizes:
      if n <= s:
        return int(s)
    raise ExampleTooLongError(f"{what} = {n} exceeds the largest bucket {max(sizes)}")

  @classmethod
  def fixed(cls, seq_len: int, pixel_rows: int, images: int) -> "Buckets":
    return cls((seq_len,), (pixel_rows,), (images,))


def _process_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
  return int(shard_index), int(shard_count)


class _Indexed:
  """Source wrapper: `[i]` -> (i, source[i] or the exception it raised)."""

  def __init__(self, source, errors: tuple[type[BaseException], ...]):
    self.source, self.errors = source, errors

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int):
    try:
      return int(i), self.source[i]
    except self.errors as e:  # turned into an invalid row by the collate function
      return int(i), e


# Failures an example may have that must not stop training (bad files / rows); programming errors
# (TypeError, KeyError, ...) still propagate.
EXAMPLE_ERRORS = (I.ImageError, OSError, ValueError)


def example_order(source, *, seed: int, shuffle: bool, num_epochs: int | None, shard_index: int | None,
                  shard_count: int | None, on_error: str):
  """This process's examples in training order, as `(index, example or the exception it raised)` pairs (a
  grain MapDataset): the source shuffled per epoch (`seed + epoch`), repeated `num_epochs` times (None =
  forever), element `p + n*j` to process `p` of `n`. With `on_error="raise"` example errors propagate."""
  import grain
  if on_error not in ("skip", "raise"):
    raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
  if len(source) == 0:
    raise ValueError("the dataset is empty")
  p, n = _process_shard(shard_index, shard_count)
  ds = grain.MapDataset.source(_Indexed(source, EXAMPLE_ERRORS if on_error == "skip" else ()))
  if shuffle:
    ds = ds.shuffle(seed=int(seed) % 2**32)
  ds = ds.repeat(num_epochs)
  return ds[p::n] if n > 1 else ds


def _stream(source, batch_size: int, *, seed: int, shuffle: bool, num_epochs: int | None,
            shard_index: int | None, shard_count: int | None, collate: Callable, drop_remainder: bool,
            on_error: str):
  _, n = _process_shard(shard_index, shard_count)
  if batch_size % n:
    raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes {n}")
  ds = example_order(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs, shard_index=shard_index,
                     shard_count=shard_count, on_error=on_error)
  local = batch_size // n
  return ds.batch(local, drop_remainder=drop_remainder, batch_fn=lambda items: collate(items, local))


def to_iter(ds, num_threads: int = 4, prefetch: int = 4):
  """`ds.to_iter_dataset`: up to `num_threads` batches are built in parallel threads (each batch's examples
  in one thread), `prefetch` (raised to at least `num_threads`) batches ahead. `iter()` of the result has
  `get_state()` / `set_state()`. An `IterDataset` (e.g. `packing.packed_sft_pieces`, which reads ahead
  itself) is returned as it is."""
  import grain
  if isinstance(ds, grain.IterDataset):
    return ds
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=max(prefetch, num_threads)))


def _split(items, what: str, max_tokens: int | None = None):
  """(index, example) pairs -> valid ones, logging and counting the failed."""
  ok, skipped = [], 0
  for i, ex in items:
    if isinstance(ex, BaseException):
      skipped += 1
      log.warning("%s example %d skipped: %s: %s", what, i, type(ex).__name__, ex)
    elif max_tokens is not None and len(ex["input_ids"]) > max_tokens:
      skipped += 1
      log.warning("%s example %d (%s) skipped: %d tokens exceed the largest bucket %d", what, i,
                  ex.get("question_id", "?"), len(ex["input_ids"]), max_tokens)
    else:
      ok.append((i, ex))
  return ok, skipped


def collate_sft(items, batch_size: int, pad_id: int, buckets: Buckets = Buckets(),
                on_error: str = "skip") -> dict[str, np.ndarray]:
  """(index, example) pairs -> a static-shape SFT batch (module docstring). Examples: `input_ids`,
  `loss_mask` int[n], `pixel_values` float32[p, 1176], `image_grid_thw` int[k, 3]."""
  if on_error == "raise":
    for i, ex in items:
      if isinstance(ex, BaseException):
        raise ex
      if len(ex["input_ids"]) > max(buckets.seq_len):
        raise ExampleTooLongError(f"example {i} ({ex.get('question_id', '?')}) has {len(ex['input_ids'])} "
                                  f"tokens, above the largest bucket {max(buckets.seq_len)}")
  ok, skipped = _split(items, "SFT", max(buckets.seq_len))
  n_tok = max([len(ex["input_ids"]) for _, ex in ok], default=1)
  pv = [np.asarray(ex["pixel_values"], np.float32).reshape(-1, PATCH_DIM) for _, ex in ok]
  gr = [np.asarray(ex["image_grid_thw"], np.int32).reshape(-1, 3) for _, ex in ok]
  T = Buckets.pick(n_tok, buckets.seq_len, "tokens")
  P = Buckets.pick(max(sum(len(x) for x in pv), 1), buckets.pixel_rows, "pixel rows")
  nI = Buckets.pick(max(sum(len(g) for g in gr), 1), buckets.images, "images")
  out = {"input_ids": np.full((batch_size, T), pad_id, np.int32),
         "attention_mask": np.zeros((batch_size, T), np.int32),
         "loss_mask": np.zeros((batch_size, T), np.int32),
         "pixel_values": np.zeros((P, PATCH_DIM), np.float32),
         "image_grid_thw": np.zeros((nI, 3), np.int32),
         "valid": np.zeros((batch_size,), np.int32),
         "example_index": np.full((batch_size,), -1, np.int32),
         "num_skipped": np.asarray(skipped, np.int32)}
  prow = irow = 0
  for r, ((i, ex), x, g) in enumerate(zip(ok, pv, gr)):
    n = len(ex["input_ids"])
    out["input_ids"][r, :n] = ex["input_ids"]
    out["attention_mask"][r, :n] = 1
    out["loss_mask"][r, :n] = ex["loss_mask"]
    out["pixel_values"][prow:prow + len(x)] = x
    out["image_grid_thw"][irow:irow + len(g)] = g
    prow += len(x)
    irow += len(g)
    out["valid"][r] = 1
    out["example_index"][r] = i
  return out


def sft_batches(examples, batch_size: int, *, pad_id: int, seed: int = 0, shuffle: bool = True,
                num_epochs: int | None = None, shard_index: int | None = None, shard_count: int | None = None,
                buckets: Buckets = Buckets(), drop_remainder: bool = True, on_error: str = "skip"):
  """SFT batches (a grain MapDataset) from a map-style dataset of examples, e.g. `trajectories.SftDataset`.

  Args:
    examples: `len()` and `[i]` -> example dict (see `collate_sft`).
    batch_size: global batch B (each of the n processes builds B / n rows).
    pad_id: token id for padding (`tokenizer.special_ids(tok)["pad_token_id"]`).
    seed / shuffle / num_epochs: order (per-epoch reshuffle; None = repeat forever).
    shard_index / shard_count: this process and the number of processes (default: from JAX).
    buckets: static shape buckets. drop_remainder: drop a short last batch (else pad it with invalid rows).
    on_error: "skip" (invalid rows, counted and logged) or "raise".
  """
  return _stream(examples, batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                 shard_index=shard_index, shard_count=shard_count,
                 collate=lambda items, b: collate_sft(items, b, pad_id, buckets, on_error),
                 drop_remainder=drop_remainder, on_error=on_error)


# ----------------------------------------------------------------------------------------------------------
# RL prompts.

class RlPromptDataset:
  """Map-style RL prompts from LRS-GRO rows: `[i]` -> the prompt (question + global view) and what the
  reward needs.

  Args:
    source: an `LrsGroSource` (rows + image store).
    tokenizer: transformers tokenizer or `tokenizers.Tokenizer`.
    protocol: "released" or "multiturn" (prompt template).
    budget: `trajectories.ImageBudget` for the global view.
  """

  def __init__(self, source, tokenizer, protocol: str = "released", budget=None, store=None, max_turns=None):
    from zoomjax.data import tokenizer as T
    from zoomjax.data import trajectories as TR
    from zoomjax.protocol import templates as P
    self.rows = list(source)
    self.store = store if store is not None else source.store
    self.protocol = protocol
    self.budget = budget or TR.ImageBudget()
    self.max_turns = max_turns
    self.encode = T.encoder(tokenizer)
    self.image_pad_id = T.token_id(tokenizer, P.IMAGE_PAD)
    if protocol not in P.PROTOCOLS:
      raise ValueError(f"protocol must be one of {P.PROTOCOLS}, got {protocol!r}")

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> dict[str, Any]:
    from zoomjax.data import boxes as B
    from zoomjax.data import trajectories as TR
    from zoomjax.protocol import templates as P
    row = self.rows[i]
    w, h = self.store.size(row.image_name)
    view, scale = self.store.global_view(row.image_name)
    kw = {"max_turns": self.max_turns} if self.protocol == "multiturn" else {}
    ex = TR.encode_example(P.render_prompt(row.question, self.protocol, **kw), [view], self.encode,
                           self.image_pad_id, self.budget)
    box = row.box_original(w, h)
    ex.update(gt_box=np.asarray(box if box is not None else [0.0] * 4, np.float32),
              gt_box_1024=np.asarray(row.bbox if row.has_box else [0.0] * 4, np.float32),
              has_box=np.int32(row.has_box), image_size=np.asarray([w, h], np.int32),
              global_scale=np.float32(B.global_scale(w, h)),
              meta={"question_id": row.question_id, "image_name": row.image_name, "answer": row.ground_truth,
                    "type": row.type, "category": row.category, "higher_level": row.higher_level})
    return ex


def collate_rl(items, batch_size: int, pad_id: int, buckets: Buckets = Buckets(),
               on_error: str = "skip") -> dict[str, Any]:
  """(index, prompt example) pairs -> a static-shape RL prompt batch (module docstring)."""
  b = collate_sft(items, batch_size, pad_id, buckets, on_error)
  del b["loss_mask"]
  b["prompt_length"] = b["attention_mask"].sum(1).astype(np.int32)
  by_index = {i: ex for i, ex in items if not isinstance(ex, BaseException)}
  b["gt_box"] = np.zeros((batch_size, 4), np.float32)
  b["gt_box_1024"] = np.zeros((batch_size, 4), np.float32)
  b["has_box"] = np.zeros((batch_size,), np.int32)
  b["image_size"] = np.zeros((batch_size, 2), np.int32)
  b["global_scale"] = np.zeros((batch_size,), np.float32)
  meta: list[dict | None] = [None] * batch_size
  for r, i in enumerate(b["example_index"]):
    if i < 0:
      continue
    ex = by_index[int(i)]
    for k in ("gt_box", "gt_box_1024", "has_box", "image_size", "global_scale"):
      b[k][r] = ex[k]
    meta[r] = ex["meta"]
  b["meta"] = meta
  return b


def rl_batches(prompts, batch_size: int, *, pad_id: int, seed: int = 0, shuffle: bool = True,
               num_epochs: int | None = None, shard_index: int | None = None, shard_count: int | None = None,
               buckets: Buckets = Buckets(), drop_remainder: bool = True, on_error: str = "skip"):
  """RL prompt batches (a grain MapDataset) from `RlPromptDataset` (arguments as `sft_batches`)."""
  return _stream(prompts, batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                 shard_index=shard_index, shard_count=shard_count,
                 collate=lambda items, b: collate_rl(items, b, pad_id, buckets, on_error),
                 drop_remainder=drop_remainder, on_error=on_error)
