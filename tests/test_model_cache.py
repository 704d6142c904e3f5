"""KV cache: prefill + decode (+ a continuation with a new image) equals a full no-cache forward."""
import numpy as np
import pytest

from zoomjax.model import cache as cache_lib
from zoomjax.model import forward, init_params
from zoomjax.model.config import ModelConfig
from zoomjax.model.inputs import prepare_extend

import jax

TOL = 1e-4


def _model(scan: bool):
  cfg = ModelConfig.tiny(scan_layers=scan)
  params = init_params(cfg, jax.random.key(0))
  # O(1) activations: scale the random init up so that mistakes show in the logits
  params = jax.tree.map(lambda p: p * 3.0 if p.ndim >= 2 else p, params)
  return cfg, params


@pytest.fixture(scope="module", params=["scan", "unrolled"])
def model(request):
  return _model(request.param == "scan")


@pytest.fixture(scope="module")
def scanned_model():
  return _model(True)


def _img(cfg, grid):
  return [cfg.vision_start_token_id] + [cfg.image_token_id] * int(np.prod(grid) // 4) + [cfg.vision_end_token_id]


def _full_logits(cfg, params, hist, pixels, grids):
  """float32[len(hist), V]: no-cache forward over one row's whole history."""
  ids = np.asarray(hist)[None]
  if grids:
    out = forward(cfg, params, ids, np.concatenate(pixels), np.asarray(grids))
  else:
    out = forward(cfg, params, ids)
  return np.asarray(out[0])


def _check(cfg, params, hists, pix, grids, cache, logits_by_row):
  for r in range(len(hists)):
    full = _full_logits(cfg, params, hists[r], pix[r], grids[r])
    for pos, got in logits_by_row[r]:
      np.testing.assert_allclose(got, full[pos], atol=TOL, rtol=0, err_msg=f"row {r} position {pos}")


def _greedy_text(logits, cfg):
  return np.asarray(logits)[..., : cfg.text.vocab_size - 16].argmax(-1)  # stay clear of special ids


def _decode_greedy(cfg, params, cache, hists, seen, nxt, steps):
  """Feeds `nxt` back `steps` times through `decode_jit`, recording each row's logits in `seen` and its
  tokens in `hists`. Returns (next greedy tokens, cache)."""
  for _ in range(steps):
    for r in range(len(hists)):
      hists[r].append(int(nxt[r]))
    step, cache = cache_lib.decode_jit(cfg, params, cache, np.asarray(nxt, np.int32))
    for r in range(len(hists)):
      seen[r].append((len(hists[r]) - 1, np.asarray(step[r])))
    nxt = _greedy_text(step, cfg)
  return nxt, cache


def test_prefill_decode_text_rows_of_different_lengths(model):
  cfg, params = model
  rs = np.random.RandomState(0)
  hists = [list(rs.randint(0, 400, 9)), list(rs.randint(0, 400, 4))]
  cache = cache_lib.init_cache(cfg, 2, 32)
  inputs = prepare_extend(cfg, hists, [0, 0], pad_to=12)
  logits, cache = cache_lib.extend_jit(cfg, params, cache, inputs)
  seen = [[(p, np.asarray(logits[r, p])) for p in range(len(hists[r]))] for r in range(2)]
  np.testing.assert_array_equal(np.asarray(cache["length"]), [9, 4])
  nxt = _greedy_text(logits[np.arange(2), [8, 3]], cfg)
  nxt, cache = _decode_greedy(cfg, params, cache, hists, seen, nxt, 3)
  _check(cfg, params, hists, [[], []], [[], []], cache, seen)


def test_prefill_with_image_then_continuation_with_new_image(scanned_model):
  cfg, params = scanned_model  # the unrolled layout is covered by the text test
  rs = np.random.RandomState(1)
  g0, g1 = [1, 6, 8], [1, 4, 4]
  p0 = rs.randn(int(np.prod(g0)), cfg.vision.patch_dim).astype(np.float32)
  p1 = rs.randn(int(np.prod(g1)), cfg.vision.patch_dim).astype(np.float32)
  hists = [list(rs.randint(0, 400, 3)) + _img(cfg, g0) + list(rs.randint(0, 400, 4)),
           list(rs.randint(0, 400, 6))]
  grids, pix = [[g0], []], [[p0], []]
  cache = cache_lib.init_cache(cfg, 2, 64)
  inputs = prepare_extend(cfg, hists, [0, 0], [np.array(g) for g in grids])
  np.testing.assert_array_equal(inputs["image_grid_thw"], [g0])
  logits, cache = cache_lib.extend_jit(cfg, params, cache, inputs, p0)
  seen = [[(p, np.asarray(logits[r, p])) for p in range(len(hists[r]))] for r in range(2)]
  nxt = _greedy_text(logits[np.arange(2), [len(h) - 1 for h in hists]], cfg)
  nxt, cache = _decode_greedy(cfg, params, cache, hists, seen, nxt, 2)
  # continuation: row 0 gets text + a new image + text (mid-sequence, the crop-and-zoom turn),
  # row 1 gets text + its first image.
  cached = [len(h) for h in hists]
  hists[0] += [int(nxt[0])] + list(rs.randint(0, 400, 2)) + _img(cfg, g1) + list(rs.randint(0, 400, 3))
  hists[1] += [int(nxt[1])] + _img(cfg, g0) + list(rs.randint(0, 400, 2))
  grids = [[g0, g1], [g0]]
  pix = [[p0, p1], [p0]]
  inputs = prepare_extend(cfg, hists, cached, [np.array(g) for g in grids], pad_to=32)
  np.testing.assert_array_equal(inputs["image_grid_thw"], [g1, g0])
  logits, cache = cache_lib.extend_jit(cfg, params, cache, inputs, np.concatenate([p1, p0]))
  for r in range(2):
    for i in range(len(hists[r]) - cached[r]):
      seen[r].append((cached[r] + i, np.asarray(logits[r, i])))
  np.testing.assert_array_equal(np.asarray(cache["rope_deltas"]), inputs["rope_deltas"])
  nxt = _greedy_text(logits[np.arange(2), [len(hists[r]) - cached[r] - 1 for r in range(2)]], cfg)
  nxt, cache = _decode_greedy(cfg, params, cache, hists, seen, nxt, 2)
  _check(cfg, params, hists, pix, grids, cache, seen)


def test_extend_with_kv_len_reads_only_the_filled_slots(model):
  """`kv_len` bounds the slots a prefill / continuation attends over: the same logits and cache as the
  whole cache, equal to the no-cache forward, with garbage in the slots past `kv_len` left untouched."""
  cfg, params = model
  rs = np.random.RandomState(5)
  g0 = [1, 4, 4]
  p0 = rs.randn(int(np.prod(g0)), cfg.vision.patch_dim).astype(np.float32)
  first = [list(rs.randint(0, 400, 9)), list(rs.randint(0, 400, 5))]
  more = [list(rs.randint(0, 400, 2)) + _img(cfg, g0) + list(rs.randint(0, 400, 3)), list(rs.randint(0, 400, 4))]
  runs = {}
  for kv_len in (None, 32):      # rows reach 9 + 16 (tn) <= 32 slots of the 256
    cache = cache_lib.init_cache(cfg, 2, 256)
    cache["k"], cache["v"] = cache["k"] + 50.0, cache["v"] - 50.0
    inputs = prepare_extend(cfg, first, [0, 0], pad_to=16)
    l1, cache = cache_lib.extend_jit(cfg, params, cache, inputs, kv_len=kv_len)
    hists = [a + b for a, b in zip(first, more)]
    inputs = prepare_extend(cfg, hists, [9, 5], [np.array([g0]), None], pad_to=16)
    l2, cache = cache_lib.extend_jit(cfg, params, cache, inputs, p0, kv_len=kv_len)
    runs[kv_len] = (np.asarray(l1), np.asarray(l2), np.asarray(cache["k"]), np.asarray(cache["v"]))
  for a, b in zip(runs[None][:2], runs[32][:2]):
    np.testing.assert_allclose(b, a, atol=TOL, rtol=0)
  for r, n in enumerate((9, 5)):       # the cached tokens' keys / values agree over each row's length
    for a, b in zip(runs[None][2:], runs[32][2:]):
      np.testing.assert_allclose(b[:, r, :, :n + len(more[r])], a[:, r, :, :n + len(more[r])], atol=TOL, rtol=0)
  np.testing.assert_array_equal(runs[32][2][:, :, :, 32:], 50.0)
  np.testing.assert_array_equal(runs[32][3][:, :, :, 32:], -50.0)
  full = _full_logits(cfg, params, hists[0], [p0], [g0])
  np.testing.assert_allclose(runs[32][1][0, :len(more[0])], full[9:], atol=TOL, rtol=0)


def test_inactive_rows_do_not_advance(scanned_model):
  cfg, params = scanned_model
  cache = cache_lib.init_cache(cfg, 2, 8)
  inputs = prepare_extend(cfg, [[1, 2, 3], [4, 5]], [0, 0])
  _, cache = cache_lib.extend_jit(cfg, params, cache, inputs)
  _, cache = cache_lib.decode_jit(cfg, params, cache, np.array([7, 7], np.int32), np.array([True, False]))
  np.testing.assert_array_equal(np.asarray(cache["length"]), [4, 2])


def test_extend_last_only_returns_each_rows_last_new_token(scanned_model):
  cfg, params = scanned_model
  rs = np.random.RandomState(3)
  hists = [list(rs.randint(0, 400, 7)), list(rs.randint(0, 400, 12)), []]
  full, _ = cache_lib.extend_jit(cfg, params, cache_lib.init_cache(cfg, 3, 32),
                                 prepare_extend(cfg, hists, [0, 0, 0], pad_to=16))
  last, cache = cache_lib.extend_jit(cfg, params, cache_lib.init_cache(cfg, 3, 32),
                                     prepare_extend(cfg, hists, [0, 0, 0], pad_to=16), last_only=True)
  assert last.shape == (3, cfg.text.vocab_size)
  np.testing.assert_array_equal(np.asarray(cache["length"]), [7, 12, 0])
  for r, n in ((0, 7), (1, 12)):
    np.testing.assert_allclose(np.asarray(last[r]), np.asarray(full[r, n - 1]), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(last[r]), _full_logits(cfg, params, hists[r], [], [])[n - 1],
                               atol=TOL, rtol=0)


def test_decode_across_attention_blocks_of_a_long_cache(model):
  """Cache of 4 x DECODE_BLOCK slots; rows decode across a block boundary (the blocked, length-bounded
  attention of a decode step) and equal the no-cache forward; slots past the longest row never matter."""
  from zoomjax.model.language import DECODE_BLOCK
  cfg, params = model
  rs = np.random.RandomState(4)
  hists = [list(rs.randint(0, 400, DECODE_BLOCK - 2)), list(rs.randint(0, 400, 40))]
  cache = cache_lib.init_cache(cfg, 2, 4 * DECODE_BLOCK)
  # garbage in the unused slots: must be masked out, whatever it holds
  cache["k"] = cache["k"] + 50.0
  cache["v"] = cache["v"] - 50.0
  inputs = prepare_extend(cfg, hists, [0, 0], pad_to=DECODE_BLOCK)
  logits, cache = cache_lib.extend_jit(cfg, params, cache, inputs, last_only=True)
  seen = [[(len(h) - 1, np.asarray(logits[r]))] for r, h in enumerate(hists)]
  nxt = _greedy_text(logits, cfg)
  nxt, cache = _decode_greedy(cfg, params, cache, hists, seen, nxt, 4)
  assert len(hists[0]) > DECODE_BLOCK
  _check(cfg, params, hists, [[], []], [[], []], cache, seen)


def test_decode_step_updates_the_donated_cache_in_place(model):
  """The compiled decode step aliases the cache buffers (input -> output) and needs no temporary the size
  of a cache array: it writes the new token's slots instead of rebuilding [L, B, K, S, H]."""
  cfg, params = model
  cache = cache_lib.init_cache(cfg, 4, 4096)
  mem = cache_lib.decode_jit.lower(cfg, params, cache, np.zeros((4,), np.int32)).compile().memory_analysis()
  cache_bytes = cache["k"].nbytes
  assert mem.alias_size_in_bytes >= 2 * cache_bytes
  assert mem.temp_size_in_bytes < cache_bytes // 4, (mem.temp_size_in_bytes, cache_bytes)


def test_unstacked_layers_and_row_copies(scanned_model):
  """`unstack_layers` gives the unrolled layout with the same function; `take_rows` / `put_rows` copy
  whole cache rows (what a shared group prefill does)."""
  from zoomjax.model.qwen2_5_vl import abstract_params, unstack_layers
  cfg, params = scanned_model
  ucfg, up = unstack_layers(cfg, params)
  assert not ucfg.scan_layers
  assert jax.tree.structure(abstract_params(ucfg)) == jax.tree.structure(up)
  hists = [[5, 6, 7, 8, 9], [3, 4]]
  outs = []
  for c, p in ((cfg, params), (ucfg, up)):
    cache = cache_lib.init_cache(c, 2, 16)
    inputs = prepare_extend(c, hists, np.zeros(2, np.int64), pad_to=8)
    _, cache = cache_lib.extend_jit(c, p, cache, inputs)
    logits, cache = cache_lib.decode_jit(c, p, cache, np.asarray([1, 2], np.int32))
    outs.append((np.asarray(logits), cache))
  np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-5, rtol=0)
  cache = outs[1][1]
  small = cache_lib.take_rows(cache, np.asarray([1], np.int32))
  assert small["k"].shape[1] == 1 and int(small["length"][0]) == 3
  both = cache_lib.put_rows(cache, np.asarray([0, 5], np.int32), small, np.asarray([0, 0], np.int32))  # 5: skipped
  np.testing.assert_array_equal(np.asarray(both["k"][:, 0]), np.asarray(cache["k"][:, 1]))
  np.testing.assert_array_equal(np.asarray(both["length"]), [3, 3])


def test_untied_head_gives_the_tied_logits(scanned_model):
  """`untie_head` (the generator's CPU layout of a tied head) reads a [D, V] copy of the embedding: same
  logits as the tied model on text and on an image prompt, through the cache too."""
  from zoomjax.model.qwen2_5_vl import untie_head
  cfg, params = scanned_model
  assert cfg.text.tie_word_embeddings
  ucfg, up = untie_head(cfg, params)
  assert not ucfg.text.tie_word_embeddings and untie_head(ucfg, up)[1] is up
  emb = np.asarray(params["language"]["embed_tokens"]["embedding"])
  np.testing.assert_array_equal(np.asarray(up["language"]["lm_head"]["kernel"]), emb.T)
  grid = [1, 4, 4]
  hist = [5, 6] + _img(cfg, grid) + [7, 8, 9]
  px = [np.random.RandomState(0).randn(16, cfg.vision.patch_dim).astype(np.float32)]
  np.testing.assert_allclose(_full_logits(ucfg, up, hist, px, [grid]), _full_logits(cfg, params, hist, px, [grid]),
                             atol=1e-5, rtol=0)
  cache = cache_lib.init_cache(ucfg, 1, 32)
  inputs = prepare_extend(ucfg, [[5, 6, 7, 8]], np.zeros(1, np.int64), pad_to=8)
  _, cache = cache_lib.extend_jit(ucfg, up, cache, inputs)
  logits, _ = cache_lib.decode_jit(ucfg, up, cache, np.asarray([3], np.int32))
  np.testing.assert_allclose(np.asarray(logits[0]), _full_logits(cfg, params, [5, 6, 7, 8, 3], [], [])[-1],
                             atol=TOL, rtol=0)
