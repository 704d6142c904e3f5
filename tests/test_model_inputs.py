"""Host-side inputs: M-RoPE ids and rope deltas equal the reference's get_rope_index; image gather index."""
import numpy as np
import pytest

from zoomjax.model import reference as ref_lib
from zoomjax.model.config import ModelConfig
from zoomjax.model.inputs import prepare_extend, prepare_inputs

CFG = ModelConfig.tiny()


def _img(grid):
  return [CFG.vision_start_token_id] + [CFG.image_token_id] * int(np.prod(grid) // 4) + [CFG.vision_end_token_id]


def _random_batch(rs, rows=3):
  seqs, grids = [], []
  for _ in range(rows):
    seq = list(rs.randint(0, 400, rs.randint(0, 5)))
    for _ in range(rs.randint(0, 3)):
      g = [1, 2 * rs.randint(1, 6), 2 * rs.randint(1, 6)]
      grids.append(g)
      seq += _img(g) + list(rs.randint(0, 400, rs.randint(0, 4)))
    seqs.append(seq or [1])
  t = max(map(len, seqs)) + rs.randint(0, 3)
  ids = np.full((rows, t), CFG.pad_token_id)
  mask = np.zeros((rows, t), np.int64)
  for i, s in enumerate(seqs):
    ids[i, :len(s)] = s
    mask[i, :len(s)] = 1
  return ids, mask, np.array(grids, np.int64).reshape(-1, 3)


@pytest.mark.parametrize("seed", range(12))
def test_rope_index_matches_reference(seed):
  rs = np.random.RandomState(seed)
  ids, mask, grids = _random_batch(rs)
  if not len(grids):
    grids = np.zeros((0, 3), np.int64)
  ref_pos, ref_delta = ref_lib.reference_rope_index(CFG, ids, mask, grids if len(grids) else None)
  got = prepare_inputs(CFG, ids, mask, grids)
  np.testing.assert_array_equal(got["position_ids"], ref_pos)
  np.testing.assert_array_equal(got["rope_deltas"], ref_delta)
  assert got["position_ids"].dtype == np.int32 and got["position_ids"].shape == (3,) + ids.shape


def test_text_only_positions_are_arange():
  ids = np.arange(12).reshape(2, 6)
  mask = np.array([[1] * 6, [1] * 3 + [0] * 3])
  got = prepare_inputs(CFG, ids, mask)
  np.testing.assert_array_equal(got["position_ids"], np.broadcast_to(np.arange(6), (3, 2, 6)))
  np.testing.assert_array_equal(got["rope_deltas"], [0, 0])
  assert (got["image_index"] == -1).all() and "vision" not in got


def test_image_index_orders_images_and_skips_padding_images():
  g1, g2 = [1, 4, 4], [1, 2, 6]
  ids = np.array([[5] + _img(g1) + [6] + _img(g2)])
  # a padding (all-zero) grid row between the two real images takes no tokens and no vision rows
  grid = np.array([g1, [0, 0, 0], g2])
  got = prepare_inputs(CFG, ids, None, grid)
  idx = got["image_index"][0]
  img = ids[0] == CFG.image_token_id
  np.testing.assert_array_equal(idx[img], np.arange(4 + 3))
  assert (idx[~img] == -1).all()
  # the image starts after `<|vision_start|>` at position 2 and spans 2x2 merged tokens
  np.testing.assert_array_equal(got["position_ids"][:, 0, 2:6], [[2, 2, 2, 2], [2, 2, 3, 3], [2, 3, 2, 3]])


def test_mismatched_tokens_and_grids_raise():
  ids = np.array([[5] + _img([1, 4, 4])])
  with pytest.raises(ValueError, match="image"):
    prepare_inputs(CFG, ids, None, np.array([[1, 4, 6]]))
  with pytest.raises(ValueError, match="image"):
    prepare_inputs(CFG, ids, None, np.array([[1, 4, 4], [1, 2, 2]]))


def test_prepare_extend_matches_full_history():
  rs = np.random.RandomState(7)
  ids, mask, grids = _random_batch(rs, rows=2)
  while not len(grids):
    ids, mask, grids = _random_batch(rs, rows=2)
  full = prepare_inputs(CFG, ids, mask, grids)
  hist = [ids[r, :mask[r].sum()] for r in range(2)]
  # split the grids per row
  per_row, k = [], 0
  for r in range(2):
    n_img = int(np.sum(hist[r] == CFG.vision_start_token_id))
    per_row.append(grids[k:k + n_img])
    k += n_img
  cached = [0, 0]
  ext = prepare_extend(CFG, hist, cached, per_row)
  for r in range(2):
    n = len(hist[r])
    np.testing.assert_array_equal(ext["position_ids"][:, r, :n], full["position_ids"][:, r, :n])
  np.testing.assert_array_equal(ext["rope_deltas"], full["rope_deltas"])
  np.testing.assert_array_equal(ext["image_grid_thw"], grids)
