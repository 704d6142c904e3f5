"""Host-side batch assembly: a global batch as `[A, S]` pieces with their own images, placed on the mesh.

A global batch of `B` sequences is cut into `A x S` *pieces* of `b = B / (A * S)` consecutive sequences:
`A` = gradient-accumulation microbatches, `S` = batch shards of the mesh (`data * fsdp`). Each piece
carries its own images, so every index in it (image-token gather rows, vision window order, attention
segments) is local to the piece. On device every leaf has shape `[A, S, ...]` with axis 1 sharded over
`("data", "fsdp")`: a device only ever holds (and runs the vision tower on) its own sequences' images.
The step scans over `A` and vmaps the model over `S`.

With several processes, process `p` builds only pieces `s` in `[p * S / n, (p + 1) * S / n)` of every
microbatch, and `jax.make_array_from_process_local_data` assembles the global arrays. Which sequences
form the global batch does not depend on the mesh or the process count, so the loss curve does not either.

Piece format (numpy, what the data pipeline's collate returns for `b` sequences):
  input_ids int32[b, T], attention_mask int32[b, T], loss_mask int32[b, T],
  pixel_values float32[P, 1176] (may have 0 rows), image_grid_thw int32[I, 3] (zero rows = padding).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoomjax.train.mesh import BATCH_AXES

TEXT_KEYS = ("input_ids", "attention_mask", "loss_mask")


def pad_rows(x: np.ndarray, rows: int, what: str) -> np.ndarray:
  """Pads axis 0 of `x` with zeros to `rows` (error if it already has more)."""
  if x.shape[0] > rows:
    raise ValueError(f"{what}: {x.shape[0]} rows exceed the static budget of {rows}; raise the data "
                     f"bucket (data.max_patches / data.max_images)")
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


def model_inputs(model_cfg, piece: dict, num_patches: int) -> dict[str, Any]:
  """Device inputs of one piece: `prepare_inputs` output (minus rope deltas), loss mask, pixel values.

  `num_patches` is the piece's static patch budget (0 = text only: no pixel values, no vision keys).
  """
  from zoomjax.model.inputs import prepare_inputs
  grid = piece.get("image_grid_thw")
  has_vision = num_patches > 0
  if has_vision:
    pv = pad_rows(np.asarray(piece["pixel_values"], np.float32), num_patches, "pixel_values")
    grid = np.zeros((1, 3), np.int32) if grid is None or len(grid) == 0 else np.asarray(grid, np.int32)
  inputs = prepare_inputs(model_cfg, piece["input_ids"], piece["attention_mask"],
                          grid if has_vision else None, pad_patches_to=num_patches if has_vision else None)
  out = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids", "image_index")}
  out["loss_mask"] = np.asarray(piece["loss_mask"], np.int32)
  if has_vision:
    if "vision" not in inputs:  # a piece with no real image: metadata of an all-padding patch block
      from zoomjax.model.vision import vision_metadata
      inputs["vision"] = vision_metadata(model_cfg.vision, np.zeros((1, 3), np.int32), pad_patches_to=num_patches)
    out["vision"] = inputs["vision"]
    out["pixel_values"] = pv
  return out


def stack(trees: Sequence[Any]) -> Any:
  """Stacks equally-structured numpy trees along a new leading axis."""
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)


def assemble(pieces: Sequence[dict], num_micro: int, to_device_inputs) -> dict:
  """`A * S_local` host pieces (microbatch-major) -> one tree with leaves `[A, S_local, ...]`."""
  if len(pieces) % num_micro:
    raise ValueError(f"{len(pieces)} pieces do not split into {num_micro} microbatches")
  per = len(pieces) // num_micro
  rows = [stack([to_device_inputs(p) for p in pieces[a * per:(a + 1) * per]]) for a in range(num_micro)]
  return stack(rows)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """`[A, S, ...]` leaves: axis 1 over the batch mesh axes, the rest replicated."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def num_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def to_global(local: dict, mesh: Mesh) -> dict:
  """Process-local `[A, S_local, ...]` numpy tree -> global `[A, S, ...]` jax arrays on `mesh`."""
  sharding = batch_sharding(mesh)
  s = num_shards(mesh)

  def one(x):
    shape = (x.shape[0], s) + x.shape[2:]
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x, shape)
  return jax.tree_util.tree_map(one, local)


def local_shard_range(mesh: Mesh) -> tuple[int, int]:
  """The `[start, stop)` pieces (along S) held by this process's devices (must be contiguous)."""
  s = num_shards(mesh)
  idx = batch_sharding(mesh).addressable_devices_indices_map((1, s))
  starts = {sl[1].start or 0 for sl in idx.values()}
  stops = {s if sl[1].stop is None else sl[1].stop for sl in idx.values()}
  lo, hi = min(starts), max(stops)
  covered = set()
  for sl in idx.values():
    covered.update(range(sl[1].start or 0, s if sl[1].stop is None else sl[1].stop))
  if covered != set(range(lo, hi)):
    raise ValueError(f"process {jax.process_index()} holds non-contiguous batch shards {sorted(covered)}")
  return lo, hi
