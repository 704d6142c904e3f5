"""KV-cache generator: greedy parity with transformers' `generate` (image in the prompt), continuation with a
new image == fresh prefill, batching, sampling, stop tokens, cuts, and no recompiles across similar prompts."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from zoomjax import hf
from zoomjax.model import ModelConfig, forward
from zoomjax.model import reference as ref_lib
from zoomjax.rollout import generate as G
from zoomjax.rollout import sampling as S
from zoomjax.rollout.generate import GREEDY, Generator, ImageInput, Sampling

N_NEW = 40


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
  cfg = ModelConfig.tiny()
  d = tmp_path_factory.mktemp("tiny_gen")
  model = ref_lib.build_reference(cfg, seed=3, save_dir=d)
  cfg2, params = hf.load(d)
  return cfg2, params, model


def _image(cfg, rs, grid):
  grid = np.asarray(grid)
  pv = rs.randn(int(np.prod(grid)), cfg.vision.patch_dim).astype(np.float32)
  toks = [cfg.vision_start_token_id] + [cfg.image_token_id] * (int(np.prod(grid)) // 4) + [cfg.vision_end_token_id]
  return ImageInput(pv, grid), toks


def _text(rs, n):
  return list(rs.randint(0, 480, n))


def _check_greedy(cfg, params, prompts, images, gots, atol=1e-4):
  """Each `gots[r]` is greedy from `prompts[r]`: one teacher-forced (padded, batched) forward over
  prompt + generated gives the same argmax at every step, and the same log-probs."""
  rows = [list(p) + list(g.tokens) for p, g in zip(prompts, gots)]
  t = max(map(len, rows))
  ids = np.full((len(rows), t), cfg.pad_token_id, np.int64)
  mask = np.zeros((len(rows), t), np.int64)
  for r, row in enumerate(rows):
    ids[r, :len(row)], mask[r, :len(row)] = row, 1
  ims = [im for row in images for im in row]
  pv = np.concatenate([im.pixel_values for im in ims]) if ims else None
  grid = np.stack([im.grid_thw for im in ims]) if ims else None
  logits = np.asarray(forward(cfg, params, ids, pv, grid, mask))
  for r, (p, g) in enumerate(zip(prompts, gots)):
    lg = logits[r, len(p) - 1:len(p) - 1 + len(g.tokens)]
    assert np.argmax(lg, -1).tolist() == list(g.tokens)
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(lg), -1))[np.arange(len(g.tokens)), g.tokens]
    np.testing.assert_allclose(g.logprobs, lp, atol=atol, rtol=0)


def test_greedy_matches_transformers_generate(ref):
  import torch
  cfg, params, model = ref
  rs = np.random.RandomState(0)
  im, im_toks = _image(cfg, rs, [1, 8, 12])
  ids = _text(rs, 6) + im_toks + _text(rs, 9)
  it = torch.tensor([ids])
  with torch.no_grad():
    out = model.generate(input_ids=it, attention_mask=torch.ones_like(it), pixel_values=torch.tensor(im.pixel_values),
                         image_grid_thw=torch.tensor(im.grid_thw[None]),
                         mm_token_type_ids=(it == cfg.image_token_id).to(torch.int32), max_new_tokens=N_NEW,
                         do_sample=False, output_logits=True, return_dict_in_generate=True, eos_token_id=None,
                         pad_token_id=cfg.pad_token_id)
  want = out.sequences[0, len(ids):].tolist()
  want_lp = np.array([torch.log_softmax(lg[0].float(), -1)[t].item() for lg, t in zip(out.logits, want)])
  assert len(want) == N_NEW >= 32
  sess = Generator(cfg, params).session(1, 128)
  sess.append([ids], [[im]])
  got = sess.generate(N_NEW, GREEDY)[0]
  assert got.tokens == want
  np.testing.assert_allclose(got.logprobs, want_lp, atol=1e-4, rtol=0)
  assert got.finish == "length"


def test_batched_rows_of_different_lengths_match_single_rows(ref):
  cfg, params, _ = ref
  rs = np.random.RandomState(1)
  im_a, ta = _image(cfg, rs, [1, 8, 8])
  im_b, tb = _image(cfg, rs, [1, 4, 8])
  rows = [_text(rs, 5) + ta + _text(rs, 7), _text(rs, 2) + tb + _text(rs, 1), _text(rs, 11)]
  images = [[im_a], [im_b], []]
  outs = G.generate(cfg, params, rows, images, 12)
  assert [len(o.tokens) for o in outs] == [12, 12, 12]
  _check_greedy(cfg, params, rows, images, outs)


def test_continuation_with_new_image_equals_fresh_prefill(ref):
  cfg, params, _ = ref
  rs = np.random.RandomState(2)
  im1, t1 = _image(cfg, rs, [1, 8, 12])
  im2, t2 = _image(cfg, rs, [1, 12, 8])
  prompt = _text(rs, 4) + t1 + _text(rs, 6)
  sess = Generator(cfg, params).session(2, 256)
  sess.append([prompt, _text(rs, 9)], [[im1], []])
  first = sess.generate([7, 3], GREEDY)
  # Drop the last 2 generated tokens of row 0, then append text + a new image + text mid-sequence.
  sess.rollback(0, sess.length(0) - 2)
  extra = _text(rs, 3) + t2 + _text(rs, 5)
  row1 = (list(sess.histories[1]), np.asarray(sess._logits[1]))
  sess.append([extra, []], [[im2], []])    # row 0 alone is computed; row 1 is left as it was
  history = list(sess.histories[0])
  assert history == prompt + first[0].tokens[:5] + extra
  full = np.asarray(forward(cfg, params, np.array([history]), np.concatenate([im1.pixel_values, im2.pixel_values]),
                            np.stack([im1.grid_thw, im2.grid_thw])))[0, -1]
  np.testing.assert_allclose(np.asarray(sess._logits[0]), full, atol=1e-4, rtol=0)
  assert sess.histories[1] == row1[0]
  np.testing.assert_array_equal(np.asarray(sess._logits[1]), row1[1])
  # and every later token of both rows matches greedy over the full sequence
  cont = sess.generate([10, 4], GREEDY)
  assert len(cont[0].tokens) == 10 and len(cont[1].tokens) == 4
  _check_greedy(cfg, params, [history, row1[0]], [[im1, im2], []], cont)


def test_all_new_token_logits_of_a_continuation_equal_the_full_forward(ref):
  """Every position of the appended block (not only the last) against a fresh forward."""
  from zoomjax.model import cache as cache_lib
  from zoomjax.model.inputs import prepare_extend
  cfg, params, _ = ref
  rs = np.random.RandomState(3)
  im1, t1 = _image(cfg, rs, [1, 8, 8])
  im2, t2 = _image(cfg, rs, [1, 8, 12])
  a = _text(rs, 3) + t1 + _text(rs, 20)
  b = _text(rs, 2) + t2 + _text(rs, 4)
  cache = cache_lib.init_cache(cfg, 1, 128)
  _, cache = cache_lib.extend_jit(cfg, params, cache, prepare_extend(cfg, [a], [0], [[im1.grid_thw]]),
                                  jnp.asarray(im1.pixel_values))
  inp = prepare_extend(cfg, [a + b], [len(a)], [[im1.grid_thw, im2.grid_thw]], pad_patches_to=96)
  logits, _ = cache_lib.extend_jit(cfg, params, cache, inp, jnp.asarray(im2.pixel_values))
  full = np.asarray(forward(cfg, params, np.array([a + b]), np.concatenate([im1.pixel_values, im2.pixel_values]),
                            np.stack([im1.grid_thw, im2.grid_thw])))[0]
  np.testing.assert_allclose(np.asarray(logits)[0, :len(b)], full[len(a):], atol=1e-4, rtol=0)


def test_stop_tokens_cuts_and_budget(ref):
  cfg, params, _ = ref
  rs = np.random.RandomState(4)
  stop = 77

  def force_stop_at(n_prompt, at):
    def proc(logits, lengths):
      bias = jnp.where((lengths - n_prompt == at)[:, None] & (jnp.arange(logits.shape[-1]) == stop)[None], 1e4, 0.0)
      return logits + bias
    return proc

  p = _text(rs, 10)
  sess = Generator(cfg, params).session(2, 64)
  sess.append([p, p])
  outs = sess.generate([20, 20], GREEDY, stop_token_ids=(stop,), logits_processor=force_stop_at(10, 5))
  for o in outs:
    assert o.finish == "stop" and len(o.tokens) == 6 and o.tokens[-1] == stop
  assert sess.length(0) == 16
  # cut: keep the first 3 tokens of whatever row 1 generates next
  outs = sess.generate(20, GREEDY, rows=[1], stop_fn=lambda b, toks: 3 if len(toks) >= 4 else None, chunk=4)
  assert outs[0].finish == "idle" and outs[1].finish == "cut" and len(outs[1].tokens) == 3
  assert sess.length(1) == 19 and sess.length(0) == 16
  with pytest.raises(ValueError):
    sess.generate(5, rows=[1])  # rolled back: must append first
  sess.append([[], [5]])
  # cache capacity: the budget shrinks to the room left
  outs = sess.generate(1000, GREEDY)
  assert [len(o.tokens) for o in outs] == [64 - 16, 64 - 20] and all(o.finish == "length" for o in outs)


def test_sampling_rules_and_seeding(ref):
  cfg, params, _ = ref
  logits = jnp.asarray(np.random.RandomState(5).randn(2, 50).astype(np.float32) * 2)
  key = jax.random.key(0)
  greedy = np.asarray(jnp.argmax(logits, -1))
  assert (np.asarray(S.sample_tokens(logits, key, Sampling(1.0, top_k=1))) == greedy).all()
  assert (np.asarray(S.sample_tokens(logits, key, Sampling(1.0, top_p=1e-6))) == greedy).all()
  # frequencies follow softmax(logits / T) restricted to the top-k
  draw = jax.jit(jax.vmap(lambda k: S.sample_tokens(logits, k, Sampling(0.7, top_k=5))))
  s = np.asarray(draw(jax.random.split(key, 20000)))[:, 0]
  top5 = np.argsort(-np.asarray(logits[0]))[:5]
  assert set(np.unique(s)) <= set(top5.tolist())
  p = np.exp(np.asarray(logits[0])[top5] / 0.7)
  p /= p.sum()
  freq = np.array([(s == t).mean() for t in top5])
  assert np.abs(freq - p).max() < 0.02
  # top-p keeps the smallest prefix with mass >= p
  probs = np.asarray(jax.nn.softmax(logits[1]))
  order = np.argsort(-probs)
  n_keep = int(np.searchsorted(np.cumsum(probs[order]), 0.8) + 1)
  s = np.asarray(jax.jit(jax.vmap(lambda k: S.sample_tokens(logits, k, Sampling(1.0, top_p=0.8))))(
      jax.random.split(key, 5000)))[:, 1]
  assert set(np.unique(s)) <= set(order[:n_keep].tolist())
  # whole-generator seeding: same seed, same tokens; another seed, others
  rs = np.random.RandomState(6)
  rows = [_text(rs, 8), _text(rs, 5)]
  run = lambda seed: [o.tokens for o in G.generate(cfg, params, rows, None, 16, Sampling(1.0, top_p=0.95),
                                                   seed=seed)]
  assert run(1) == run(1) != run(2)


def test_group_prefill_is_shared_and_samples_as_without_sharing(ref):
  """`append(..., group_size=G)` prefills each group's prompt once (the vision tower and the LM on one row
  per group) and copies it into the group's rows: the same seed then samples the same tokens and
  log-probs as a plain append of the repeated prompts, and the G rows of a group diverge."""
  cfg, params, _ = ref
  rs = np.random.RandomState(12)
  gen = Generator(cfg, params)
  prompts = []
  for n in (6, 11):
    im, toks = _image(cfg, rs, [1, 8, 8])
    prompts.append((_text(rs, 3) + toks + _text(rs, n), [im]))
  rows = [p for p, _ in prompts for _ in range(3)]
  images = [i for _, i in prompts for _ in range(3)]
  runs = []
  for g in (1, 3):
    sess = gen.session(6, 96, seed=4)
    sess.append(rows, images, group_size=g)
    runs.append(sess.generate(12, Sampling(1.0)))
    assert [len(h) for h in sess.histories] == [len(r) + 12 for r in rows]
  for a, b in zip(*runs):
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
  assert len({tuple(o.tokens) for o in runs[1][:3]}) > 1
  with pytest.raises(ValueError, match="differs"):
    gen.session(6, 96).append(rows[1:] + rows[:1], images, group_size=3)


def test_shapes_are_bucketed(ref):
  cfg, params, _ = ref
  rs = np.random.RandomState(7)
  gen = Generator(cfg, params)
  sizes = []
  for n in (21, 22, 24):
    sess = gen.session(3, 96)
    sess.append([_text(rs, n), _text(rs, n - 5), _text(rs, 3)])
    sess.generate(9, GREEDY)
    sizes.append((G._extend_last._cache_size(), G._decode_loop._cache_size()))
  assert sizes[0] == sizes[-1], sizes  # the first prompt may compile; the later ones (same buckets) do not


def test_sharded_generation_matches_single_device(ref):
  """Params placed on a data x fsdp x tensor mesh, cache sharded by its logical axes: same tokens."""
  from zoomjax.model import sharding
  cfg, params, _ = ref
  if len(jax.devices()) < 8:
    pytest.skip("needs the 8 simulated CPU devices of conftest")
  rs = np.random.RandomState(8)
  im, toks = _image(cfg, rs, [1, 8, 8])
  rows = [_text(rs, 4) + toks + _text(rs, 5), _text(rs, 9)]
  images = [[im], []]
  want = G.generate(cfg, params, rows, images, 10)
  mesh = sharding.make_mesh(data=2, fsdp=-1, tensor=2)
  sp = jax.device_put(params, sharding.param_shardings(cfg, mesh))
  sess = Generator(cfg, sp, mesh=mesh).session(2, 64)
  sess.append(rows, images)
  assert len(sess._cache["k"].sharding.device_set) == 8
  got = sess.generate(10, GREEDY)
  for g, w in zip(got, want):
    assert g.tokens == w.tokens
    np.testing.assert_allclose(g.logprobs, w.logprobs, atol=1e-4)
  # an append to one row only (computed on that row, copied into the sharded cache), then both decode on
  extra = _text(rs, 3)
  one = Generator(cfg, params).session(2, 64)
  one.append(rows, images)
  one.generate(10, GREEDY)
  for s in (sess, one):
    s.append([extra, []])
  got, want = sess.generate([6, 3], GREEDY), one.generate([6, 3], GREEDY)
  for g, w in zip(got, want):
    assert len(g.tokens) > 0 and g.tokens == w.tokens
    np.testing.assert_allclose(g.logprobs, w.logprobs, atol=1e-4)


def test_long_cache_decodes_like_a_short_one_in_place(ref):
  """A session sized for 2000 tokens (its decode attention reads only the used blocks) generates what a
  64-token session does, and its compiled decode loop updates the donated cache in place (no temporary
  the size of a cache array)."""
  from zoomjax.model import cache as cache_lib
  cfg, params, _ = ref
  rs = np.random.RandomState(9)
  im, toks = _image(cfg, rs, [1, 8, 8])
  rows = [_text(rs, 4) + toks + _text(rs, 5), _text(rs, 9)]
  outs = []
  for max_len in (64, 2000):
    sess = Generator(cfg, params).session(2, max_len)
    sess.append(rows, [[im], []])
    outs.append(sess.generate(12, GREEDY))
  for a, b in zip(*outs):
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
  cache = cache_lib.init_cache(cfg, 2, 8192)   # large next to the loop's own buffers (tokens, logits)
  mem = G._decode_loop.lower(params, cache, sess._logits, jnp.full((2,), 16, jnp.int32), jax.random.key(0),
                             cfg=cfg, sampling=GREEDY, stop_ids=(), n_max=16, processor=None
                             ).compile().memory_analysis()
  assert mem.alias_size_in_bytes >= 2 * cache["k"].nbytes
  assert mem.temp_size_in_bytes < cache["k"].nbytes // 4, (mem.temp_size_in_bytes, cache["k"].nbytes)


def _nucleus_by_sorting(x, p):
  """The top-p rule by a full sort (numpy, float64 sums): keep the sorted prefix whose mass before each
  token is <= p (at least one), then every token tied with the last kept one."""
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max())
  probs = e / e.sum()
  order = np.argsort(-x, kind="stable")
  before = np.cumsum(probs[order]) - probs[order]
  n_keep = max(1, int((before <= p).sum()))
  return x >= x[order[n_keep - 1]]


def test_nucleus_mask_equals_the_sorted_rule():
  rs = np.random.RandomState(10)
  rows = [rs.randn(300) * 3, np.round(rs.randn(300) * 2) / 2, rs.randn(300) * 0.01]   # spread / ties / flat
  peaked = rs.randn(300)
  peaked[7] = 40.0
  rows.append(peaked)
  masked = rs.randn(300) * 2
  masked[rs.rand(300) < 0.9] = -np.inf                                                # after a top-k
  rows.append(masked)
  x = np.stack(rows).astype(np.float32)
  for p in (1e-6, 0.1, 0.37, 0.8, 0.9, 0.95, 0.999):
    got = np.asarray(S.nucleus_mask(jnp.asarray(x), p))
    for r in range(len(rows)):
      want = _nucleus_by_sorting(x[r], p)
      assert (got[r] == want).all(), (p, r, got[r].sum(), want.sum())


def test_top_k_argmax_and_categorical_match_their_definitions():
  rs = np.random.RandomState(11)
  x = np.stack([rs.randn(300) * 3, np.round(rs.randn(300) * 2) / 2, np.full(300, 1.5)]).astype(np.float32)
  for k in (1, 2, 5, 50, 299):
    want = x >= np.asarray(jax.lax.top_k(jnp.asarray(x), k)[0])[:, -1:]
    np.testing.assert_array_equal(np.asarray(S.top_k_mask(jnp.asarray(x), k)), want)
  np.testing.assert_array_equal(np.asarray(S.argmax_first(jnp.asarray(x))), np.argmax(x, -1))  # ties: first
  # inverse-CDF draws: frequencies follow softmax, -inf tokens are never drawn (also at the ends of the row)
  logits = np.full((2, 40), -np.inf, np.float32)
  logits[0, :7] = rs.randn(7)
  logits[1, 33:] = rs.randn(7)
  draws = np.asarray(jax.jit(jax.vmap(lambda k: S.categorical(k, jnp.asarray(logits))))(
      jax.random.split(jax.random.key(1), 40000)))
  for r, live in ((0, slice(0, 7)), (1, slice(33, 40))):
    p = np.exp(logits[r, live] - logits[r, live].max())
    p /= p.sum()
    freq = np.bincount(draws[:, r], minlength=40) / len(draws)
    assert freq[np.isinf(logits[r])].sum() == 0
    assert np.abs(freq[live] - p).max() < 0.01
