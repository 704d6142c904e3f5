"""Host-side (numpy, never traced) inputs of the model: M-RoPE ids, rope deltas, image-token gather index.

The reference (`Qwen2_5_VLModel.get_rope_index` in the pinned transformers) assigns every token three
position ids (t, h, w):

* text tokens advance all three axes together (`current_pos, current_pos + 1, …`);
* an image with grid (t, h, w) patches yields `t * (h/m) * (w/m)` tokens (m = spatial_merge_size) whose
  ids are `(current_pos + i_t, current_pos + i_h, current_pos + i_w)`; afterwards
  `current_pos += max(h, w) / m`;
* padding (attention_mask 0) keeps id 0; `rope_delta = max(ids) + 1 - num_valid_tokens`, so a token
  generated later at text index n gets id `n + rope_delta` on all three axes.

Without `image_grid_thw` the reference uses plain `arange(T)` for every slot (padding included) and
delta 0; `prepare_inputs` does the same so that logits agree everywhere, not only on valid tokens.

Image features (the vision tower output: images concatenated in `image_grid_thw` order, padding tokens
last) reach the language model through `image_index int32[B, T]`: for each token the row of the vision
output it takes, or -1 for a text token. Every `<|image_pad|>` token is accounted for by exactly one
image; the helpers raise `ValueError` when token counts and grids disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from zoomjax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class _Row:
  positions: np.ndarray          # int32[3, n]
  delta: int
  images: list[tuple[int, int]]  # (start, end) token span of each image in the row, in order


def _row_rope_index(cfg: ModelConfig, ids: np.ndarray, grids: np.ndarray) -> _Row:
  """M-RoPE ids of one unpadded row; `grids` int[k, 3] are the row's images in order."""
  m = cfg.vision.spatial_merge_size
  n = len(ids)
  pos = np.zeros((3, n), np.int64)
  is_img = ids == cfg.image_token_id
  cur, i, g, spans = 0, 0, 0, []
  while i < n:
    if not is_img[i]:
      j = i
      while j < n and not is_img[j]:
        j += 1
      pos[:, i:j] = np.arange(j - i) + cur
      cur += j - i
      i = j
      continue
    if g >= len(grids):
      raise ValueError(f"found more image placeholder runs than images in image_grid_thw ({len(grids)})")
    gt, gh, gw = (int(v) for v in grids[g])
    lt, lh, lw = gt, gh // m, gw // m
    count = lt * lh * lw
    if i + count > n or not is_img[i:i + count].all():
      run = int(np.argmin(np.append(is_img[i:], False)))
      raise ValueError(f"image {g} with grid {(gt, gh, gw)} needs {count} consecutive image tokens, "
                       f"found a run of {run}")
    tt, hh, ww = np.meshgrid(np.arange(lt), np.arange(lh), np.arange(lw), indexing="ij")
    pos[0, i:i + count] = tt.reshape(-1) + cur
    pos[1, i:i + count] = hh.reshape(-1) + cur
    pos[2, i:i + count] = ww.reshape(-1) + cur
    spans.append((i, i + count))
    cur += max(gh, gw) // m
    i += count
    g += 1
  if g != len(grids):
    raise ValueError(f"{len(grids)} images given but only {g} image placeholder runs found")
  delta = int(pos.max()) + 1 - n if n else 0
  return _Row(pos.astype(np.int32), delta, spans)


def _real_grids(cfg: ModelConfig, image_grid_thw) -> np.ndarray:
  grid = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw, np.int64).reshape(-1, 3)
  m = cfg.vision.spatial_merge_size
  for row in grid:
    if row.any() and (row[1] % m or row[2] % m or row.min() <= 0):
      raise ValueError(f"image_grid_thw row {row.tolist()}: h and w must be positive multiples of {m}")
  return grid


def _tokens_per_image(cfg: ModelConfig, grid: np.ndarray) -> np.ndarray:
  return (grid.prod(-1) // cfg.vision.spatial_merge_size ** 2).astype(np.int64)


def _vision_meta(cfg: ModelConfig, grid: np.ndarray, pad_patches_to: int | None) -> dict[str, np.ndarray]:
  from zoomjax.model import vision  # lazy: the vision tower is optional for text-only use
  return vision.vision_metadata(cfg.vision, grid.astype(np.int32), pad_patches_to=pad_patches_to)


def segments(mask_row: np.ndarray) -> list[int]:
  """The sequence ids of one row of an attention mask, in order of appearance (0 = padding): `[1]` for an
  ordinary row, `[1, 2, ..]` for a packed one."""
  ids = np.asarray(mask_row)
  ids = ids[ids > 0]
  _, first = np.unique(ids, return_index=True)
  return [int(ids[i]) for i in sorted(first)]


def prepare_inputs(cfg: ModelConfig, input_ids, attention_mask=None, image_grid_thw=None,
                   pad_patches_to: int | None = None) -> dict[str, Any]:
  """Everything the device forward needs besides `pixel_values`, as static-shaped numpy arrays.

  Args:
    input_ids: int[B, T], right-padded when `attention_mask` is given.
    attention_mask: int[B, T] (1 valid, 0 padding) or None (all valid). A packed row holds several
      sequences, each marked with its own id 1, 2, ..: every sequence gets its own M-RoPE ids (from 0, as
      if it were alone) and takes its images in order (`zoomjax.data.packing`); its rope delta is the
      last sequence's.
    image_grid_thw: int[I, 3] for all images of the batch in order (row-major over the batch); all-zero
      rows are padding images. None for text-only input.
    pad_patches_to: total patch rows of `pixel_values` (>= the real count) for static vision shapes.
  Returns:
    {"input_ids": int32[B, T], "attention_mask": int32[B, T], "position_ids": int32[3, B, T],
     "rope_deltas": int32[B], "image_index": int32[B, T]} plus "vision": M2's `vision_metadata` dict
    when `image_grid_thw` holds at least one real image.
  """
  ids = np.asarray(input_ids)
  if ids.ndim != 2:
    raise ValueError(f"input_ids must be int[B, T], got shape {ids.shape}")
  b, t = ids.shape
  mask = np.ones((b, t), np.int32) if attention_mask is None else np.asarray(attention_mask).astype(np.int32)
  if mask.shape != ids.shape:
    raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
  out = {"input_ids": ids.astype(np.int32), "attention_mask": mask}
  image_index = np.full((b, t), -1, np.int32)
  if image_grid_thw is None:
    out["position_ids"] = np.broadcast_to(np.arange(t, dtype=np.int32), (3, b, t)).copy()
    for r in np.nonzero(mask.max(-1, initial=0) > 1)[0]:  # packed rows: every sequence from 0
      for seg in segments(mask[r]):
        valid = np.nonzero(mask[r] == seg)[0]
        out["position_ids"][:, r, valid] = np.arange(len(valid), dtype=np.int32)
    out["rope_deltas"] = np.zeros((b,), np.int32)
    out["image_index"] = image_index
    return out
  grid = _real_grids(cfg, image_grid_thw)
  real = grid[grid.any(-1)]
  per_image = _tokens_per_image(cfg, grid)
  offsets = np.concatenate([[0], np.cumsum(per_image)])[:-1][grid.any(-1)]  # vision-output row of each real image
  is_img = ids == cfg.image_token_id
  position_ids = np.zeros((3, b, t), np.int32)
  deltas = np.zeros((b,), np.int32)
  k = 0
  for r in range(b):
    for seg in segments(mask[r]):
      valid = np.nonzero(mask[r] == seg)[0]
      # Images of this sequence: as many real grids as it takes to cover its image tokens.
      count = int(is_img[r, valid].sum())
      need, j = count, k
      while need > 0 and j < len(real):
        need -= int(_tokens_per_image(cfg, real[j:j + 1])[0])
        j += 1
      if need != 0:
        raise ValueError(f"row {r}: {count} image tokens do not match the images of image_grid_thw "
                         f"(images {k}..{j - 1} give {count - need})")
      row = _row_rope_index(cfg, ids[r, valid], real[k:j])
      position_ids[:, r, valid] = row.positions
      deltas[r] = row.delta
      for g, (s, e) in enumerate(row.images):
        image_index[r, valid[s:e]] = offsets[k + g] + np.arange(e - s)
      k = j
  if k != len(real):
    raise ValueError(f"image_grid_thw has {len(real)} images but the batch only holds tokens for {k}")
  out.update(position_ids=position_ids, rope_deltas=deltas, image_index=image_index)
  if len(real):
    out["vision"] = _vision_meta(cfg, grid, pad_patches_to)
  return out


def prepare_extend(cfg: ModelConfig, histories: Sequence[Sequence[int]], cached_lengths: Sequence[int],
                   image_grids: Sequence[Any] | None = None, pad_to: int | None = None,
                   pad_patches_to: int | None = None) -> dict[str, Any]:
  """Inputs of `cache.extend`: the tokens of each row not yet in the KV cache, with 3-D positions.

  Positions are computed from each row's full token history, as the reference does when new vision
  tokens arrive during generation, so a continuation that appends text and a new image mid-sequence gets
  exactly the ids a full forward over the whole history would give.

  Args:
    histories: per row, every token so far (the cached prefix followed by the new tokens).
    cached_lengths: per row, how many leading tokens of the history are already in the cache.
    image_grids: per row, int[k_b, 3] grids of every image in the row's history, in order (None or an
      empty array for a row without images).
    pad_to: the new-token axis length (>= the longest new part); default the longest new part.
    pad_patches_to: static patch-row count for the new images' `pixel_values`.
  Returns:
    {"input_ids": int32[B, Tn] (padded with pad_token_id), "num_new": int32[B],
     "position_ids": int32[3, B, Tn], "rope_deltas": int32[B], "image_index": int32[B, Tn],
     "image_grid_thw": int32[I, 3] (the images whose tokens are new, in order: their pixel_values are the
     ones to pass)} plus "vision" metadata when there is at least one new image.
  """
  b = len(histories)
  if len(cached_lengths) != b:
    raise ValueError(f"{len(cached_lengths)} cached lengths for {b} rows")
  grids = [np.zeros((0, 3), np.int64) if image_grids is None or image_grids[r] is None
           else _real_grids(cfg, image_grids[r]) for r in range(b)]
  rows, news = [], []
  for r in range(b):
    ids = np.asarray(histories[r], np.int64).reshape(-1)
    c = int(cached_lengths[r])
    if not 0 <= c <= len(ids):
      raise ValueError(f"row {r}: cached length {c} outside [0, {len(ids)}]")
    if len(grids[r]) or (ids == cfg.image_token_id).any():
      rows.append(_row_rope_index(cfg, ids, grids[r]))
    else:
      rows.append(_Row(np.broadcast_to(np.arange(len(ids), dtype=np.int32), (3, len(ids))), 0, []))
    news.append(ids[c:])
  tn = max([len(x) for x in news] + [1])
  if pad_to is not None:
    if pad_to < tn:
      raise ValueError(f"pad_to={pad_to} is shorter than the longest new part ({tn})")
    tn = pad_to
  input_ids = np.full((b, tn), cfg.pad_token_id, np.int32)
  position_ids = np.zeros((3, b, tn), np.int32)
  image_index = np.full((b, tn), -1, np.int32)
  new_grids, offset = [], 0
  for r in range(b):
    c, n = int(cached_lengths[r]), len(news[r])
    input_ids[r, :n] = news[r]
    position_ids[:, r, :n] = rows[r].positions[:, c:]
    for g, (s, e) in enumerate(rows[r].images):
      if e <= c:
        continue
      if s < c:
        raise ValueError(f"row {r}: image {g} spans the cache boundary ({s} < {c} < {e})")
      image_index[r, s - c:e - c] = offset + np.arange(e - s)
      offset += e - s
      new_grids.append(grids[r][g])
  grid = np.asarray(new_grids, np.int32).reshape(-1, 3)
  out = {"input_ids": input_ids, "num_new": np.asarray([len(x) for x in news], np.int32),
         "position_ids": position_ids, "rope_deltas": np.asarray([x.delta for x in rows], np.int32),
         "image_index": image_index, "image_grid_thw": grid}
  if len(grid):
    out["vision"] = _vision_meta(cfg, grid, pad_patches_to)
  return out
