"""Perception loop, end to end on a tiny model whose decoding is forced (logit bias) to emit a known trajectory:
the rollout reproduces the protocol's SFT rendering token for token, masks exclude image and tool tokens,
and the crops are the expected pixels of a synthetic image, in both protocols; budgets and turn limits."""
import numpy as np
import pytest
from PIL import Image

import jax
import jax.numpy as jnp

from zoomjax.data.tokenizer import padded_vocab_size, special_ids, train_tokenizer
from zoomjax.model import ModelConfig, init_params
from zoomjax.processing import preprocess_image
from zoomjax.protocol import templates as P
from zoomjax.model.buckets import round_up
from zoomjax.rollout.generate import Generator, Sampling
from zoomjax.rollout.loop import LoopConfig, Request, rollout

SMALL = dict(min_pixels=28 * 28, max_pixels=56 * 56 * 4)   # tiny images keep the test fast
BOX = [100, 50, 110, 60]                                    # global-view request on a 2048 x 1024 image


def coord_image(w, h):
  x = np.arange(w)[None, :].repeat(h, 0)
  y = np.arange(h)[:, None].repeat(w, 1)
  return Image.fromarray(np.stack([x % 256, y % 256, 16 * (x // 256) + y // 256], -1).astype(np.uint8))


@pytest.fixture(scope="module")
def world():
  corpus = [P.render_prompt("Is the target visible?", p).text for p in P.PROTOCOLS]
  corpus += [P.render_released_trajectory("q", "A grid. " + P.released_bbox_json(BOX, "target"), "Visible.", "yes").text,
             P.tool_call_text("crop_and_zoom", {"bbox_2d": BOX}), "<think>ok</think>\n<answer>yes</answer>"]
  tok = train_tokenizer(corpus * 4, vocab_size=700)
  cfg = ModelConfig.tiny(vocab_size=padded_vocab_size(tok), **special_ids(tok))
  params = init_params(cfg, jax.random.key(0))
  return tok, cfg, Generator(cfg, params)


def _tokens(pil, cfg):
  return int(np.prod(preprocess_image(pil, **SMALL)[1])) // cfg.vision.spatial_merge_size ** 2


def _expected(world, rendered, images):
  tok, cfg, _ = world
  enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
  ids, mask = P.encode_segments(rendered, enc, [_tokens(im, cfg) for im in images], tok.token_to_id(P.IMAGE_PAD))
  return np.asarray(ids), np.asarray(mask)


def _forcing(world, expected, n_rows):
  """Logit processor: at history length L, row b emits expected[b][L] where that token is model-generated
  (mask 1) and `<|im_end|>` elsewhere (the loop then appends the image / tool turn there)."""
  tok, cfg, _ = world
  im_end = tok.token_to_id(P.IM_END)
  width = max(len(ids) for ids, _ in expected) + 1
  table = np.full((round_up(n_rows, 1), width), im_end, np.int32)
  for b, (ids, mask) in enumerate(expected):
    table[b, :len(ids)] = np.where(mask == 1, ids, im_end)
  table = jnp.asarray(table)

  def proc(logits, lengths):
    tgt = table[jnp.arange(logits.shape[0]), jnp.clip(lengths, 0, width - 1)]
    return jnp.where(jnp.arange(logits.shape[-1])[None] == tgt[:, None], 1e4, -1e4)
  return proc


def _check(traj, ids, mask, pad_id):
  np.testing.assert_array_equal(traj.token_ids, ids)
  np.testing.assert_array_equal(traj.loss_mask, mask)
  assert (traj.loss_mask[traj.token_ids == pad_id] == 0).all()
  assert (traj.logprobs[traj.loss_mask == 0] == 0).all() and (traj.logprobs[traj.loss_mask == 1] <= 0).all()
  pv, grid = traj.vision_inputs()
  assert int((traj.token_ids == pad_id).sum()) == int(grid.prod(-1).sum()) // 4 and pv.shape[0] == grid.prod(-1).sum()


def test_released_protocol_forced(world):
  tok, cfg, gen = world
  orig = coord_image(2048, 1024)
  view = orig.resize((512, 256), Image.BICUBIC)
  crop = orig.crop((164, 0, 676, 512))                 # box -> original [400, 200, 440, 240] -> 512 window
  stage1 = "A grid of colours. " + P.released_bbox_json(BOX, "target")
  crop_traj = P.render_released_trajectory("Is the target visible?", stage1, "Visible.", "yes")
  plain_traj = P.render_released_trajectory("How many?", "A grid.", "Counting the cells.", "3")
  expected = [_expected(world, crop_traj, [view, crop]), _expected(world, plain_traj, [view])]
  out = rollout(gen, tok, [Request(orig, "Is the target visible?"), Request(orig, "How many?")],
                LoopConfig(protocol="released", max_new_tokens=200, max_total_tokens=2048, **SMALL),
                logits_processor=_forcing(world, expected, 2))
  pad = tok.token_to_id(P.IMAGE_PAD)
  a, b = out
  _check(a, *expected[0], pad)
  _check(b, *expected[1], pad)
  assert a.stop_reason == "answer" and a.answer == "yes" and b.answer == "3" and b.stop_reason == "answer"
  assert a.boxes_global == [BOX] and a.boxes_original == [[400, 200, 440, 240]] and a.windows == [[164, 0, 676, 512]]
  np.testing.assert_array_equal(np.asarray(a.crops[0]), np.asarray(crop))
  assert b.crops == [] and b.box_global is None
  assert a.steps[0].startswith("<think>A grid of colours.") and "<answer>yes</answer>" in a.steps[1]


def test_multiturn_protocol_forced(world):
  tok, cfg, gen = world
  orig = coord_image(2048, 1024)
  view = orig.resize((512, 256), Image.BICUBIC)
  box2 = [400, 200, 512, 256]                           # original [1600, 800, 2048, 1024] -> window [1536, 512, 2048, 1024]
  call = lambda box: "<think>zoom</think>\n" + P.tool_call_text("crop_and_zoom", {"bbox_2d": box})  # noqa: E731
  final = "<think>ok</think>\n<answer>yes</answer>"
  two = P.render_multiturn_trajectory("Where?", [call(BOX), call(box2), final], max_turns=2)
  none = P.render_multiturn_trajectory("Where?", [final], max_turns=2)
  expected = [_expected(world, two, [view, orig.crop((164, 0, 676, 512)), orig.crop((1536, 512, 2048, 1024))]),
              _expected(world, none, [view])]
  out = rollout(gen, tok, [Request(orig, "Where?")] * 2,
                LoopConfig(protocol="multiturn", max_turns=2, max_new_tokens=120, max_total_tokens=2048, **SMALL),
                logits_processor=_forcing(world, expected, 2))
  pad = tok.token_to_id(P.IMAGE_PAD)
  a, b = out
  _check(a, *expected[0], pad)
  _check(b, *expected[1], pad)
  assert a.stop_reason == "answer" and a.answer == "yes" and a.num_zooms == 2
  assert a.boxes_original == [[400, 200, 440, 240], [1600, 800, 2048, 1024]]
  assert a.windows == [[164, 0, 676, 512], [1536, 512, 2048, 1024]]
  np.testing.assert_array_equal(np.asarray(a.crops[1]), np.asarray(orig.crop((1536, 512, 2048, 1024))))
  # tool scaffolding is masked: the "<tool_response>" text never carries loss
  ids = a.token_ids.tolist()
  resp = tok.encode("\n<|im_start|>user\n<tool_response>\n", add_special_tokens=False).ids
  starts = [i for i in range(len(ids)) if ids[i:i + len(resp)] == resp]
  assert len(starts) == 2 and all(a.loss_mask[s:s + len(resp)].sum() == 0 for s in starts)
  assert b.num_zooms == 0 and b.answer == "yes"


def test_turn_limit_and_budget_never_cut_an_image(world):
  tok, cfg, gen = world
  orig = coord_image(2048, 1024)
  view = orig.resize((512, 256), Image.BICUBIC)
  call = "<think>zoom</think>\n" + P.tool_call_text("crop_and_zoom", {"bbox_2d": BOX})
  traj = P.render_multiturn_trajectory("Where?", [call, call, "<answer>x</answer>"], max_turns=1)
  crop = orig.crop((164, 0, 676, 512))
  exp = _expected(world, traj, [view, crop, crop])
  pad = tok.token_to_id(P.IMAGE_PAD)
  (a,) = rollout(gen, tok, [Request(orig, "Where?")],
                 LoopConfig(protocol="multiturn", max_turns=1, max_new_tokens=120, max_total_tokens=2048, **SMALL),
                 logits_processor=_forcing(world, [exp], 1))
  assert a.stop_reason == "max_turns" and a.num_zooms == 1
  # budget: room for the prompt and the first call, not for the crop turn -> stop, no partial image
  n_prompt = len(P.encode_segments(P.render_prompt("Where?", "multiturn", max_turns=1),
                                   lambda s: tok.encode(s, add_special_tokens=False).ids, [_tokens(view, cfg)], pad)[0])
  n_call = len(tok.encode(call + P.IM_END, add_special_tokens=False).ids)
  (b,) = rollout(gen, tok, [Request(orig, "Where?")],
                 LoopConfig(protocol="multiturn", max_turns=1, max_new_tokens=120,
                            max_total_tokens=n_prompt + n_call + 5, **SMALL),
                 logits_processor=_forcing(world, [exp], 1))
  assert b.stop_reason == "budget" and b.num_zooms == 0
  assert int((b.token_ids == pad).sum()) == _tokens(view, cfg)
  assert len(b.token_ids) == n_prompt + n_call


def test_free_sampling_is_well_formed(world, tmp_path):
  """An untrained model sampling freely: whatever it writes, the loop ends with consistent arrays."""
  tok, cfg, gen = world
  path = tmp_path / "img.png"
  coord_image(1024, 700).convert("RGBA").save(path)
  for proto in P.PROTOCOLS:
    out = rollout(gen, tok, [Request(str(path), "What?"), Request(coord_image(300, 200), "Colour?")],
                  LoopConfig(protocol=proto, max_turns=2, max_new_tokens=24, max_total_tokens=1536,
                             sampling=Sampling(1.0, top_k=50), batch_size=1 if proto == "multiturn" else 16,
                             **SMALL), seed=3)
    assert [t.question for t in out] == ["What?", "Colour?"]
    for t in out:
      n = len(t.token_ids)
      assert t.loss_mask.shape == t.logprobs.shape == (n,) and t.prompt_len < n
      assert t.stop_reason in ("answer", "no_answer", "budget", "max_turns")
      assert t.loss_mask[:t.prompt_len].sum() == 0
      assert 0 < t.num_generated <= 24 * len(t.steps) and len(t.steps) <= 3
      assert (t.loss_mask[t.token_ids == tok.token_to_id(P.IMAGE_PAD)] == 0).all()
      assert len(t.images) == 1 + t.num_zooms


def test_group_rollouts_share_the_prompt_and_sample_as_without_sharing(world, tmp_path):
  """`group_size=G`: each prompt's prefill runs once and is copied into its G rows; for the same seed the
  trajectories equal those of computing every row, in batches of whole groups."""
  tok, cfg, gen = world
  path = tmp_path / "img.png"
  coord_image(900, 600).save(path)
  img = coord_image(600, 400)
  reqs = [Request(str(path), "What?")] * 2 + [Request(img, "Colour?")] * 2 + [Request(img, "Where?")] * 2
  for proto in P.PROTOCOLS:
    conf = LoopConfig(protocol=proto, max_turns=1, max_new_tokens=20, max_total_tokens=1536, batch_size=5,
                      sampling=Sampling(1.0, top_k=50), **SMALL)
    shared, plain = (rollout(gen, tok, reqs, conf, group_size=2, seed=7, share_prefix=s) for s in (True, False))
    assert [t.question for t in shared] == [r.question for r in reqs]
    for a, b in zip(shared, plain):
      np.testing.assert_array_equal(a.token_ids, b.token_ids)
      np.testing.assert_array_equal(a.loss_mask, b.loss_mask)
      np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
      assert a.stop_reason == b.stop_reason and a.prompt_len == b.prompt_len
    assert any(len(a.token_ids) != len(b.token_ids) or (a.token_ids != b.token_ids).any()
               for a, b in zip(shared[::2], shared[1::2]))   # the samples of a group diverge
  with pytest.raises(ValueError, match="divide"):
    rollout(gen, tok, reqs[:3], conf, group_size=2)
  with pytest.raises(ValueError, match="differs"):
    rollout(gen, tok, reqs[1:5], conf, group_size=2)


def _forcing_all(world, expected):
  """Like `_forcing`, but every position emits the rendered token (also the first one the loop appends):
  a model that writes `<|vision_start|>` itself where the crop image begins."""
  tok, cfg, _ = world
  width = max(len(ids) for ids, _ in expected) + 1
  table = np.full((round_up(len(expected), 1), width), tok.token_to_id(P.IM_END), np.int32)
  for b, (ids, _) in enumerate(expected):
    table[b, :len(ids)] = ids
  table = jnp.asarray(table)

  def proc(logits, lengths):
    tgt = table[jnp.arange(logits.shape[0]), jnp.clip(lengths, 0, width - 1)]
    return jnp.where(jnp.arange(logits.shape[-1])[None] == tgt[:, None], 1e4, -1e4)
  return proc


@pytest.mark.parametrize("zoom", [True, False])
def test_toy_version_stage1_ends_at_vision_start_and_zoom_off_shows_the_view(world, zoom):
  """`released-toy-v1`: stage 1 ends when the model writes `<|vision_start|>` after a box (the toy
  trajectories train that token), the token is rolled back and the crop appended, so the rollout equals the
  toy rendering; `zoom=False` answers the same request with the global view again (SPEC §8 ablation)."""
  tok, cfg, gen = world
  orig = coord_image(2048, 1024)
  view = orig.resize((512, 256), Image.BICUBIC)
  crop = orig.crop((164, 0, 676, 512))
  q = "Is the target visible?"
  stage1 = "A grid of colours. " + P.released_bbox_json(BOX, "target", version=P.TOY_VERSION)
  traj = P.render_released_trajectory(q, stage1, "Visible.", "yes", version=P.TOY_VERSION)
  expected = [_expected(world, traj, [view, crop if zoom else view])]
  cfg_loop = LoopConfig(protocol="released", version=P.TOY_VERSION, zoom=zoom, max_new_tokens=200,
                        max_total_tokens=2048, **SMALL)
  (a,) = rollout(gen, tok, [Request(orig, q)], cfg_loop, logits_processor=_forcing_all(world, expected))
  _check(a, *expected[0], tok.token_to_id(P.IMAGE_PAD))
  assert a.stop_reason == "answer" and a.answer == "yes" and a.boxes_global == [BOX]
  assert a.windows == [[164, 0, 676, 512]]
  want = preprocess_image(crop if zoom else view, **SMALL)[0]
  np.testing.assert_allclose(np.asarray(a.images[1].pixel_values), np.asarray(want), atol=1e-6)


def test_loop_config_refuses_an_unknown_version():
  with pytest.raises(ValueError, match="released-toy-v1"):
    LoopConfig(protocol="released", version="released-v9")
  with pytest.raises(ValueError, match="multiturn"):
    LoopConfig(protocol="multiturn", version=P.TOY_VERSION)


def test_sampled_text_never_holds_image_tokens(world):
  """A model that wants to write `<|image_pad|>` (forced logits) cannot: image tokens come only with
  images, so every trajectory's pads match its images (a GRPO batch once failed on 129 pads for 128)."""
  tok, cfg, gen = world
  pad, vend = tok.token_to_id(P.IMAGE_PAD), tok.token_to_id(P.VISION_END)

  def want_pads(logits, lengths):
    v = jnp.arange(logits.shape[-1])[None]
    return jnp.where((v == pad) | (v == vend), 1e4, 0.0) + logits
  out = rollout(gen, tok, [Request(coord_image(256, 128), "Is the target visible?")],
                LoopConfig(protocol="released", max_new_tokens=12, max_total_tokens=1024,
                           sampling=Sampling(temperature=1.0), **SMALL), logits_processor=want_pads)
  (t,) = out
  gen_ids = t.token_ids[t.loss_mask == 1]
  assert len(gen_ids) == 12 and not np.isin(gen_ids, [pad, vend]).any()
  pv, grid = t.vision_inputs()
  assert int((t.token_ids == pad).sum()) == int(grid.prod(-1).sum()) // 4
