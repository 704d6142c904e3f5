"""Host-side batch assembly: a global batch as `[A, S, b]` single-sequence pieces, placed on the mesh.

A global batch of `B` sequences is laid out as `A x S x b`: `A` gradient-accumulation microbatches,
`S` batch shards of the mesh (`data * fsdp`), `b = B / (A * S)` sequences per shard. Every sequence is a
*piece* of its own: its tokens (`[1, T]`), its images' pixels padded to a fixed per-sequence budget
(`[max_patches, 1176]`) and the host-side model inputs computed for it alone (M-RoPE ids, image-token
gather rows, vision window order and attention segments), so every index stays local to the sequence
and the vision tower's attention never spans two sequences' patches. On device the batch is one
`zoomjax.train.pieces.Piece` whose every leaf has shape `[A, S, b, ...]` with axis 1 sharded over
`("data", "fsdp")`: a device holds, and runs the vision tower on, its own sequences' images only. The
step scans over `A` and vmaps the model over `S` and `b`.

With several processes, process `p` builds only the pieces of its devices' shards, and
`jax.make_array_from_process_local_data` assembles the global arrays.

Host piece (numpy, one sequence, as `zoomjax.data.pipeline.collate_sft` returns it for a batch of 1):
  input_ids int32[1, T], attention_mask int32[1, T], loss_mask int32[1, T],
  pixel_values float32[max_patches, 1176], image_grid_thw int32[max_images, 3] (zero rows = padding),
  plus the fields a `Piece` subclass adds (GRPO: `logp_old`, `logp_ref`, `advantage`).
`make_piece` turns it into the device piece, a typed `zoomjax.train.pieces.Piece`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoomjax.train.mesh import BATCH_AXES
from zoomjax.train.pieces import Piece


def pad_rows(x: np.ndarray, rows: int, what: str) -> np.ndarray:
  """Pads axis 0 of `x` with zeros to `rows` (error if it already has more)."""
  if x.shape[0] > rows:
    raise ValueError(f"{what}: {x.shape[0]} rows exceed the static budget of {rows}; raise the data "
                     f"bucket (data.max_patches / data.max_images)")
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


def make_piece(model_cfg, host: dict, num_patches: int, kind: type[Piece] = Piece) -> Piece:
  """The device piece of one host piece: `prepare_inputs` (minus rope deltas), the loss mask, the pixel
  values padded to `num_patches`, and the fields `kind` adds to `Piece` taken from `host` as they are
  (`GrpoPiece`: `logp_old float32[1, T]`, `logp_ref float32[1, T]`, `advantage float32[1]`).

  `num_patches` is the static per-sequence patch budget (0 = text only: no pixel values, no vision).
  """
  from zoomjax.model.inputs import prepare_inputs
  grid = host.get("image_grid_thw")
  has_vision = num_patches > 0
  pv = vision = None
  if has_vision:
    pv = pad_rows(np.asarray(host["pixel_values"], np.float32), num_patches, "pixel_values")
    grid = np.zeros((1, 3), np.int32) if grid is None or len(grid) == 0 else np.asarray(grid, np.int32)
  inputs = prepare_inputs(model_cfg, host["input_ids"], host["attention_mask"],
                          grid if has_vision else None, pad_patches_to=num_patches if has_vision else None)
  if has_vision:
    vision = inputs.get("vision")
    if vision is None:  # a piece with no real image: metadata of an all-padding patch block
      from zoomjax.model.vision import vision_metadata
      vision = vision_metadata(model_cfg.vision, np.zeros((1, 3), np.int32), pad_patches_to=num_patches)
  return kind(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
              position_ids=inputs["position_ids"], image_index=inputs["image_index"],
              loss_mask=np.asarray(host["loss_mask"], np.int32), vision=vision, pixel_values=pv,
              **{k: np.asarray(host[k]) for k in kind.extra_fields()})


def stack(trees: Sequence[Any]) -> Any:
  """Stacks equally-structured numpy trees along a new leading axis."""
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)


def _common_span(pieces: list[Piece]) -> list[Piece]:
  """The vision metadata's `full_span` (a static bound >= each piece's longest image, see
  `model.vision.vision_metadata`) differs between pieces whose images differ in size (a view and a larger
  crop, a blank padding piece): every piece gets the largest, which bounds them all."""
  spans = [p.vision["full_span"].shape[0] for p in pieces if p.vision is not None]
  if len(set(spans)) <= 1:
    return pieces
  top = max(spans)
  return [p.replace(vision={**p.vision, "full_span": np.zeros(top, np.int32)}) if p.vision is not None else p
          for p in pieces]


def assemble(pieces: Sequence[dict], shape: tuple[int, ...], to_piece) -> Piece:
  """`prod(shape)` host pieces (row-major over `shape`, e.g. `(A, S_local, b)`) -> one `Piece` (`to_piece`
  of each, e.g. `make_piece`) whose leaves are `[*shape, ...]`."""
  if len(pieces) != int(np.prod(shape)):
    raise ValueError(f"{len(pieces)} pieces do not fill the layout {shape}")
  flat = stack(_common_span([to_piece(p) for p in pieces]))
  return jax.tree_util.tree_map(lambda x: x.reshape(tuple(shape) + x.shape[1:]), flat)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """`[A, S, b, ...]` leaves: axis 1 over the batch mesh axes, the rest replicated."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def num_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def to_global(local: Piece, mesh: Mesh) -> Piece:
  """Process-local `[A, S_local, b, ...]` numpy tree (a `Piece`) -> global `[A, S, b, ...]` jax arrays on
  `mesh`."""
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
