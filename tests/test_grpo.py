"""GRPO: the pure pieces against hand-computed values, and the update on real trajectories of the loop.

- `group_advantages` / `term_advantages` / `flat_groups` (both modes, masks, exact zeros for a flat group);
- `policy_loss` on ratios below, inside and above the clip range, both signs of A, clip-higher, the k3 KL,
  both aggregations, masked tokens with exactly zero gradient;
- on a forced multiturn trajectory (prompt, two zoomed images, tool responses): a learner forward over its
  tokens reproduces the sampler's log-probs within 1e-4 and the objective's gradient reaches no prompt,
  image or tool token;
- one GRPO step on 1 device and on the 8-device simulated mesh: same loss and params.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_rollout_loop as RL
from zoomjax.model.logprobs import token_logprobs
from zoomjax.protocol import templates as P
from zoomjax.rl import grpo
from zoomjax.rollout.loop import LoopConfig, Request, rollout
from zoomjax.train import batching, harness, mesh as mesh_lib
from zoomjax.train import grpo as train_grpo
from zoomjax.train.config import load_config
from zoomjax.train.pieces import GrpoPiece


# ------------------------------------------------------------------------------------------ advantages
def test_group_advantages_std_and_mean_by_hand():
  r = np.array([1.0, 2.0, 3.0, 7.0], np.float32)
  std = np.asarray(grpo.group_advantages(r, 2, mode="std", eps=1e-6))
  np.testing.assert_allclose(std, [-0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6), -2 / (2 + 1e-6), 2 / (2 + 1e-6)],
                             rtol=1e-6)
  mean = np.asarray(grpo.group_advantages(r, 2, mode="mean"))
  np.testing.assert_allclose(mean, [-0.5, 0.5, -2.0, 2.0], rtol=1e-6)
  four = np.asarray(grpo.group_advantages(r, 4, mode="std", eps=0.0))
  m, s = 13 / 4, math.sqrt(((1 - 3.25) ** 2 + (2 - 3.25) ** 2 + (3 - 3.25) ** 2 + (7 - 3.25) ** 2) / 4)  # ddof 0
  np.testing.assert_allclose(four, (r - m) / s, rtol=1e-5)


def test_group_advantages_valid_mask_and_zero_variance():
  r = np.array([1.0, 5.0, 3.0, 100.0, 0.7, 0.7, 0.7, 0.7], np.float32)
  valid = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)
  adv = np.asarray(grpo.group_advantages(r, 4, mode="std", eps=1e-6, valid=valid))
  s = math.sqrt(8 / 3)  # mean 3 over the valid rows; the invalid 100 is out of the statistics
  np.testing.assert_allclose(adv[:3], [-2 / (s + 1e-6), 2 / (s + 1e-6), 0.0], rtol=1e-5, atol=1e-7)
  assert adv[3] == 0.0
  assert np.all(adv[4:] == 0.0)  # a flat group: exact zeros
  flat = np.asarray(grpo.flat_groups(r, 4, valid))
  assert flat.tolist() == [False] * 4 + [True] * 4
  # a group with a single valid row carries no signal either
  one = np.asarray(grpo.group_advantages(np.array([2.0, 9.0], np.float32), 2, valid=np.array([1, 0], bool)))
  assert one.tolist() == [0.0, 0.0]


def test_zero_variance_group_with_float_noise_is_exactly_zero():
  x = np.float32(0.9)
  r = np.concatenate([np.full(3, x, np.float32), np.array([1.0, 2.0, 3.0], np.float32)])
  noisy = jnp.asarray(r[:3]) - jnp.sum(jnp.asarray(r[:3])) / 3       # the group mean is not exactly 0.9
  assert float(jnp.max(jnp.abs(noisy))) > 0 and float(jnp.max(jnp.abs(noisy))) / 1e-6 > 0.01
  adv = np.asarray(grpo.group_advantages(r, 3, mode="std", eps=1e-6))
  np.testing.assert_allclose(adv[3:], [-math.sqrt(1.5), 0.0, math.sqrt(1.5)], rtol=1e-5, atol=1e-7)
  assert np.all(adv[:3] == 0.0)  # not the +-0.06 that (r - mean) / (0 + 1e-6) would give


def test_term_advantages_normalise_each_term():
  iou = np.array([0.0, 1.0, 0.5, 0.5], np.float32)          # second group flat in IoU
  ans = np.array([10.0, 30.0, 0.0, 1.0], np.float32)
  adv = np.asarray(grpo.term_advantages(np.stack([iou, ans]), 2, [1.0, 0.5], eps=0.0))
  # group 1: iou -> [-1, 1], answer -> [-1, 1] (scale-free): 1*[-1, 1] + 0.5*[-1, 1]
  np.testing.assert_allclose(adv, [-1.5, 1.5, -0.5, 0.5], rtol=1e-6)


# ------------------------------------------------------------------------------------------ policy loss
def _rows():
  mask = np.array([[0, 1, 1, 1], [0, 0, 1, 0]], np.float32)
  ratio = np.array([[1.0, 0.5, 1.1, 1.5], [1.0, 1.0, 0.7, 1.0]], np.float32)
  logp_old = np.full((2, 4), -1.0, np.float32)
  logp = logp_old + np.log(ratio)
  return logp, logp_old, mask


@pytest.mark.parametrize("adv, want", [
    (1.0, [[-0.5, -1.1, -1.2], [-0.7]]),    # A > 0: min(r, clip(r)) -> 0.5 kept, 1.5 capped at 1.2
    (-1.0, [[0.8, 1.1, 1.5], [0.8]]),       # A < 0: -min(-r, -clip(r)) -> 0.5 raised to 0.8, 1.5 kept
])
def test_policy_loss_clipping_both_signs_and_aggregations(adv, want):
  logp, old, mask = _rows()
  a = np.array([adv, adv], np.float32)
  s, d, m = grpo.policy_loss(logp, old, None, a, mask, eps_low=0.2, beta=0.0, aggregation="seq-mean-token-mean")
  row_means = [np.mean(want[0]), np.mean(want[1])]
  np.testing.assert_allclose(float(s), sum(row_means), rtol=1e-6)
  assert float(d) == 2.0
  s, d, _ = grpo.policy_loss(logp, old, None, a, mask, eps_low=0.2, beta=0.0, aggregation="token-mean")
  np.testing.assert_allclose(float(s), sum(want[0]) + sum(want[1]), rtol=1e-6)
  assert float(d) == 4.0
  # clipped tokens: A>0 -> ratio 1.5 (1 of 4); A<0 -> ratios 0.5 and 0.7 (2 of 4)
  assert float(m["clip_fraction"]) == pytest.approx(0.25 if adv > 0 else 0.5)
  assert float(m["tokens"]) == 4.0


def test_policy_loss_clip_higher_and_k3_kl():
  logp, old, mask = _rows()
  a = np.array([1.0, 1.0], np.float32)
  s, _, _ = grpo.policy_loss(logp, old, None, a, mask, eps_low=0.2, eps_high=0.28, beta=0.0, aggregation="token-mean")
  np.testing.assert_allclose(float(s), -(0.5 + 1.1 + 1.28 + 0.7), rtol=1e-6)
  ref = np.zeros_like(logp)                 # k3 per token: exp(ref - logp) - (ref - logp) - 1
  d = ref - logp
  k3 = np.exp(d) - d - 1
  s_kl, _, m = grpo.policy_loss(logp, old, ref, a, mask, eps_low=0.2, beta=0.04, aggregation="token-mean")
  np.testing.assert_allclose(float(s_kl) - float(grpo.policy_loss(logp, old, None, a, mask, beta=0.0,
                                                                  aggregation="token-mean")[0]),
                             0.04 * float((k3 * mask).sum()), rtol=1e-5)
  np.testing.assert_allclose(float(m["kl"]), float((k3 * mask).sum() / 4), rtol=1e-5)
  with pytest.raises(ValueError, match="logp_ref"):
    grpo.policy_loss(logp, old, None, a, mask, beta=0.04)


def test_masked_tokens_get_exactly_zero_gradient():
  logp, old, mask = _rows()
  logp = logp.copy()
  logp[0, 0] = -1e30                         # junk where the mask is 0 must not leak (no inf, no NaN)
  logp[1, 3] = np.nan
  a = np.array([0.7, -1.3], np.float32)
  ref = np.full_like(logp, -2.0)
  for agg in grpo.AGGREGATIONS:
    g = jax.grad(lambda lp: grpo.policy_loss(lp, old, ref, a, mask, beta=0.1, aggregation=agg)[0])(jnp.asarray(logp))
    g = np.asarray(g)
    assert np.all(g[mask == 0] == 0.0) and np.all(np.isfinite(g))
    assert np.all(g[mask == 1] != 0.0)
    assert np.isfinite(float(grpo.policy_loss(logp, old, ref, a, mask, beta=0.1, aggregation=agg)[0]))


def test_seq_mean_counts_only_rows_with_a_generated_token():
  logp, old, mask = _rows()
  logp3, old3 = np.concatenate([logp, logp[:1]]), np.concatenate([old, old[:1]])
  mask3 = np.concatenate([mask, np.zeros((1, 4), np.float32)])       # a row that generated nothing
  a = np.array([1.0, 1.0, 5.0], np.float32)
  s2, d2, _ = grpo.policy_loss(logp, old, None, a[:2], mask, beta=0.0)
  s3, d3, _ = grpo.policy_loss(logp3, old3, None, a, mask3, beta=0.0)
  assert float(d2) == float(d3) == 2.0 and float(s3) == pytest.approx(float(s2))


# ------------------------------------------------------------------------------------------ real trajectories
@pytest.fixture(scope="module")
def trajectories(world):
  tok, cfg, gen = world
  orig = RL.coord_image(2048, 1024)
  view = orig.resize((512, 256))
  box2 = [400, 200, 512, 256]
  call = lambda box: "<think>zoom</think>\n" + P.tool_call_text("crop_and_zoom", {"bbox_2d": box})  # noqa: E731
  final = "<think>ok</think>\n<answer>yes</answer>"
  two = P.render_multiturn_trajectory("Where?", [call(RL.BOX), call(box2), final], max_turns=2)
  none = P.render_multiturn_trajectory("Where?", [final], max_turns=2)
  expected = [RL._expected(world, two, [view, orig.crop((164, 0, 676, 512)), orig.crop((1536, 512, 2048, 1024))]),
              RL._expected(world, none, [view])]
  out = rollout(gen, tok, [Request(orig, "Where?")] * 2,
                LoopConfig(protocol="multiturn", max_turns=2, max_new_tokens=64, max_total_tokens=1024, **RL.SMALL),
                logits_processor=RL._forcing(world, expected, 2))
  assert out[0].num_zooms == 2 and out[0].answer == "yes"
  return out


world = RL.world


SEQ = 768


def _patches(trajs):
  return max(-(-t.vision_inputs()[0].shape[0] // 4) * 4 for t in trajs)


def _pieces(trajs, cfg, seq_len, n):
  out = []
  for i in range(n):
    t = trajs[i % len(trajs)]
    pc = train_grpo.trajectory_piece(t, seq_len, cfg.pad_token_id)
    pc["advantage"] = np.asarray([(-1.0) ** i * (0.5 + 0.25 * i)], np.float32)
    pc["logp_ref"] = pc["logp_old"] - 0.05 * (i + 1) * pc["loss_mask"]
    pc["image_grid_thw"] = train_grpo.pad_grid(pc["image_grid_thw"], 3)
    out.append(pc)
  return out


def test_learner_reproduces_sampler_logprobs_and_masks_the_gradient(world, trajectories):
  tok, cfg, gen = world
  t = trajectories[0]
  pieces = _pieces([t], cfg, SEQ, 1)
  inputs = batching.make_piece(cfg, pieces[0], _patches([t]), GrpoPiece)
  step = jax.tree_util.tree_map(lambda x: jnp.asarray(x), inputs)
  fn = harness.piece_map(cfg, lambda logits, piece: logits)
  logits = fn(gen.params, jax.tree_util.tree_map(lambda x: x[None, None], step))[0, 0]
  lp = np.asarray(token_logprobs(logits, step.input_ids))[0, :len(t.token_ids)]
  m = t.loss_mask == 1
  assert m.sum() > 10 and (t.loss_mask == 0).sum() > 100      # prompt, 3 images and 2 tool responses masked
  np.testing.assert_allclose(lp[m], t.logprobs[m], atol=1e-4)
  # the GRPO objective's gradient w.r.t. the logits reaches only the positions that predict generated tokens
  gc = load_config(None, ["algo=grpo"]).grpo
  obj = train_grpo.make_objective(gc)
  g = jax.grad(lambda lg: obj.fn(lg, step)["loss_sum"])(logits)
  touched = np.asarray(jnp.any(g != 0, axis=-1))[0]
  predicts_generated = np.zeros(g.shape[1], bool)
  predicts_generated[np.nonzero(np.pad(t.loss_mask, (0, g.shape[1] - len(t.loss_mask))))[0] - 1] = True
  assert np.array_equal(touched, predicts_generated)


def _one_step(cfg, model_cfg, params, pieces, mesh, max_patches):
  setup = harness.build(cfg, model_cfg, train_grpo.make_objective(cfg.grpo), mesh=mesh)
  s = batching.num_shards(mesh)
  layout = (1, s, len(pieces) // s)
  host = batching.assemble(pieces, layout, lambda pc: batching.make_piece(model_cfg, pc, max_patches, GrpoPiece))
  state = harness.init_train_state(setup, lambda: jax.device_put(params, setup.shardings.params))
  with harness.mesh_ctx(setup):
    state, metrics = setup.train_step(state, batching.to_global(host, mesh))
  return jax.device_get(state.params), jax.device_get(metrics)


def test_grpo_step_same_on_one_device_and_an_8_device_mesh(world, trajectories):
  tok, model_cfg, gen = world
  # optim.eps=1: the first Adam update is ~ lr * g / (|g| + 1), linear in the gradient, so the comparison
  # sees the gradient itself (with eps 1e-8 it would be ~ lr * sign(g), undefined where g ~ 0)
  cfg = load_config(None, ["algo=grpo", "data.batch_size=8", "grpo.group_size=2", "optim.lr=1.0", "optim.eps=1.0",
                           "optim.warmup_steps=0", "optim.schedule=constant"])
  pieces = _pieces(trajectories, model_cfg, SEQ, 8)
  patches = _patches(trajectories)
  host_params = jax.device_get(gen.params)   # numpy: each step donates its own device copy
  one_cfg = dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, data=1, devices=1))
  p1, m1 = _one_step(one_cfg, model_cfg, host_params, pieces, mesh_lib.make_mesh(one_cfg.mesh), patches)
  cfg8 = dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, data=4, fsdp=2))
  p8, m8 = _one_step(cfg8, model_cfg, host_params, pieces, mesh_lib.make_mesh(cfg8.mesh), patches)
  assert jax.device_count() == 8
  assert m1["tokens"] == m8["tokens"] > 0 and abs(m1["loss"]) > 0
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-4)
  np.testing.assert_allclose(m8["kl"], m1["kl"], rtol=1e-5)
  moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), p1, host_params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4       # the step changed the params
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p8, p1)
