"""The SFT step on a small stand-in LM: loss values, exact gradient accumulation, non-finite skip,
frozen vision, learning-rate schedule, weight-decay mask. (The real model's step: test_train_mesh.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from zoomjax.train import batching, mesh as mesh_lib
from zoomjax.train.config import load_config
from zoomjax.train.loss import masked_xent
from zoomjax.train.optim import decay_mask, learning_rate_schedule
from zoomjax.train.trainer import build

V, D, F, T = 32, 16, 8, 12


# ------------------------------------------------------------------------------------------ stand-in
def standin_params(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  n = lambda key, shape: 0.3 * jax.random.normal(key, shape)  # noqa: E731
  return {"language": {"embed": {"embedding": n(k[0], (V, D))},
                       "mlp": {"kernel": n(k[1], (D, D)), "bias": jnp.zeros((D,))},
                       "norm": {"scale": jnp.ones((D,))},
                       "head": {"kernel": n(k[2], (D, V))}},
          "visual": {"patch": {"kernel": n(k[3], (F, D))}, "merger": {"kernel": n(k[4], (D, D))}}}


SPECS = {"language": {"embed": {"embedding": P("vocab", "embed")},
                      "mlp": {"kernel": P("embed", "mlp"), "bias": P("mlp")},
                      "norm": {"scale": P("embed")},
                      "head": {"kernel": P("embed", "vocab")}},
         "visual": {"patch": {"kernel": P("vision_patch", "vision_embed")},
                    "merger": {"kernel": P("vision_embed", None)}}}


def standin_loss(params, mb, rng):
  """A 2-layer MLP LM; each sequence's mean image feature (its 4 patches) is added to its positions."""
  del rng

  def one(pc):
    lang, vis = params["language"], params["visual"]
    img = jnp.tanh(pc["pixel_values"] @ vis["patch"]["kernel"]) @ vis["merger"]["kernel"]  # [b*4, D]
    img = img.reshape(pc["input_ids"].shape[0], 4, D).mean(1)
    x = lang["embed"]["embedding"][pc["input_ids"]] + img[:, None, :]
    h = jnp.tanh(x @ lang["mlp"]["kernel"] + lang["mlp"]["bias"]) * lang["norm"]["scale"]
    return masked_xent(h @ lang["head"]["kernel"], pc["input_ids"], pc["loss_mask"])

  stats = jax.vmap(one, spmd_axis_name=mesh_lib.BATCH_AXES)(mb)
  return {k: v.sum() for k, v in stats.items()}


def host_batch(rng, n_seq, num_micro, num_shards, nan_pixel=False):
  """`n_seq` random sequences as `[A, S, b, ...]` pieces (fixed content for a given rng)."""
  ids = rng.integers(0, V, size=(n_seq, T)).astype(np.int32)
  lm = (rng.random((n_seq, T)) < 0.6).astype(np.int32)
  lm[:, 0] = 0
  px = rng.standard_normal((n_seq, 4, F)).astype(np.float32)
  if nan_pixel:
    px[0, 0, 0] = np.nan
  b = n_seq // (num_micro * num_shards)
  shape = lambda x: x.reshape((num_micro, num_shards, b) + x.shape[1:])  # noqa: E731
  return {"input_ids": shape(ids), "loss_mask": shape(lm), "attention_mask": shape(np.ones_like(ids)),
          "pixel_values": shape(px).reshape(num_micro, num_shards, b * 4, F)}


def make_setup(overrides=(), mesh_args=("mesh.data=-1",)):
  cfg = load_config(None, ["steps=10", "optim.lr=0.05", "optim.warmup_steps=0", "optim.clip_norm=0",
                           "data.batch_size=8", *mesh_args, *overrides])
  abstract = jax.eval_shape(standin_params)
  return build(cfg, None, loss_fn=standin_loss, abstract_params=abstract, logical_specs=SPECS)


def fresh_state(setup):
  from zoomjax.train.trainer import init_train_state
  return init_train_state(setup, lambda: jax.device_put(standin_params(), setup.shardings.params))


def run_step(setup, state, host):
  return setup.train_step(state, batching.to_global(host, setup.mesh))


# ------------------------------------------------------------------------------------------ tests
def test_masked_xent_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
  ids = rng.integers(0, 7, size=(2, 5)).astype(np.int32)
  mask = np.array([[0, 1, 1, 0, 1], [0, 0, 1, 1, 1]], np.int32)
  out = jax.device_get(masked_xent(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask)))
  # reference: token t (mask 1) is predicted from logits at t-1
  nll, n, correct = 0.0, 0, 0
  for b in range(2):
    for t in range(1, 5):
      if mask[b, t]:
        lp = logits[b, t - 1] - np.log(np.exp(logits[b, t - 1]).sum())
        nll -= lp[ids[b, t]]
        n += 1
        correct += int(np.argmax(logits[b, t - 1]) == ids[b, t])
  np.testing.assert_allclose(out["loss_sum"], nll, rtol=1e-5)
  assert out["count"] == n == 6 and out["correct"] == correct


def test_grad_accumulation_equals_big_batch():
  """4 microbatches of 2 sequences == 1 batch of 8: same loss, same new params (fp32 tolerance)."""
  results = []
  for accum in (1, 4):
    setup = make_setup([f"optim.grad_accum={accum}"], ("mesh.data=2", "mesh.fsdp=1", "mesh.tensor=4"))
    state = fresh_state(setup)
    host = host_batch(np.random.default_rng(1), 8, accum, 2)
    state, m = run_step(setup, state, host)
    state, m2 = run_step(setup, state, host_batch(np.random.default_rng(2), 8, accum, 2))
    results.append((jax.device_get(state.params), float(m["loss"]), float(m2["loss"]), float(m["tokens"])))
  (p1, l1, l1b, n1), (p4, l4, l4b, n4) = results
  assert n1 == n4 > 0
  np.testing.assert_allclose([l1, l1b], [l4, l4b], rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p4)
  # and the update did something
  assert not np.allclose(p1["language"]["head"]["kernel"], standin_params()["language"]["head"]["kernel"])


def test_nonfinite_loss_skips_update_and_is_counted():
  setup = make_setup()
  s = batching.num_shards(setup.mesh)
  state = fresh_state(setup)
  before = jax.device_get((state.params, state.opt_state))
  state, m = run_step(setup, state, host_batch(np.random.default_rng(0), 8, 1, s, nan_pixel=True))
  m = jax.device_get(m)
  assert not np.isfinite(m["loss"]) and m["skipped"] == 1 and m["skipped_total"] == 1
  after = jax.device_get((state.params, state.opt_state))
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)  # bit-for-bit unchanged
  assert int(state.step) == 1 and int(state.skipped) == 1
  # the next finite step trains normally, starting from the same lr as an un-skipped first step
  state, m = run_step(setup, state, host_batch(np.random.default_rng(0), 8, 1, s))
  m = jax.device_get(m)
  assert np.isfinite(m["loss"]) and m["skipped"] == 0 and m["skipped_total"] == 1
  assert not np.allclose(jax.device_get(state.params)["language"]["head"]["kernel"],
                         before[0]["language"]["head"]["kernel"])


def test_frozen_vision_keeps_tower_but_trains_merger():
  setup = make_setup(["model.freeze_vision=true"])
  s = batching.num_shards(setup.mesh)
  state = fresh_state(setup)
  p0 = jax.device_get(state.params)
  for i in range(2):
    state, _ = run_step(setup, state, host_batch(np.random.default_rng(i), 8, 1, s))
  p = jax.device_get(state.params)
  np.testing.assert_array_equal(p["visual"]["patch"]["kernel"], p0["visual"]["patch"]["kernel"])
  assert not np.allclose(p["visual"]["merger"]["kernel"], p0["visual"]["merger"]["kernel"])
  assert not np.allclose(p["language"]["mlp"]["kernel"], p0["language"]["mlp"]["kernel"])


def test_clipping_bounds_the_update():
  """With clip_norm tiny, Adam's first step is unchanged in direction but gradients are clipped: the
  reported grad_norm is the pre-clip norm, and a clipped run differs from an unclipped one."""
  outs = []
  for clip in (0, 1e-3):
    setup = make_setup([f"optim.clip_norm={clip}", "optim.weight_decay=0"])
    s = batching.num_shards(setup.mesh)
    state = fresh_state(setup)
    for i in range(2):
      state, m = run_step(setup, state, host_batch(np.random.default_rng(i), 8, 1, s))
    outs.append((jax.device_get(state.params)["language"]["head"]["kernel"], float(m["grad_norm"])))
  assert outs[0][1] > 1e-3
  assert not np.allclose(outs[0][0], outs[1][0])


def test_schedule_warmup_then_cosine():
  cfg = load_config(None, ["steps=110", "optim.lr=1e-3", "optim.warmup_steps=10", "optim.end_lr_ratio=0.1"])
  sched = learning_rate_schedule(cfg.optim, cfg.steps)
  np.testing.assert_allclose(float(sched(0)), 0.0, atol=1e-12)
  np.testing.assert_allclose(float(sched(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 1e-3, rtol=1e-6)
  mid = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + np.cos(np.pi * 0.5))
  np.testing.assert_allclose(float(sched(60)), mid, rtol=1e-5)
  np.testing.assert_allclose(float(sched(110)), 1e-4, rtol=1e-5)


def test_decay_mask_excludes_biases_and_norms():
  m = decay_mask(standin_params())
  assert m["language"]["mlp"]["kernel"] and m["language"]["embed"]["embedding"]
  assert not m["language"]["mlp"]["bias"] and not m["language"]["norm"]["scale"]


def test_batch_size_not_divisible_by_pieces_is_a_config_error():
  from zoomjax.train.config import ConfigError
  from zoomjax.train.sft_data import Data, make_stream
  from zoomjax.model.config import ModelConfig
  setup = make_setup(mesh_args=("mesh.data=8",))
  with pytest.raises(ConfigError, match="data.batch_size: 12 must be divisible"):
    make_stream(Data(train=[0] * 10), [0] * 10, ModelConfig.tiny(), setup.mesh, 12, 1, 8, 0, True, 0)


def test_flops_count_by_hand_and_peak_table():
  from types import SimpleNamespace
  from zoomjax.model.config import ModelConfig
  from zoomjax.train import flops
  cfg = ModelConfig.tiny()  # LM: d=64, ff=128, 2 layers, 4 q / 2 kv heads of 16, vocab 512
  # per token, forward: q/k/v/o 2*(64*(64+32+32) + 64*64), MLP 2*3*64*128, attention 2*2*64*(32/2), head 2*64*512
  per_layer = 2 * (64 * 128 + 64 * 64) + 2 * 3 * 64 * 128 + 2 * 2 * 64 * 16
  per_token = 2 * per_layer + 2 * 64 * 512
  assert flops.lm_flops_per_token(cfg, 32) == per_token
  assert flops.step_flops(cfg, 2, 32) == 3 * 2 * 32 * per_token
  with_vision = flops.step_flops(cfg, 2, 32, num_patches=32, patches_per_image=16)
  frozen = flops.step_flops(cfg, 2, 32, num_patches=32, patches_per_image=16, freeze_vision=True)
  assert with_vision > frozen > flops.step_flops(cfg, 2, 32)
  assert flops.device_peak_flops(SimpleNamespace(device_kind="TPU v5 lite", platform="tpu"))[0] == 197e12
  assert flops.device_peak_flops(SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3", platform="gpu"))[0] == 989e12


def test_pieces_with_different_image_sizes_assemble_into_one_batch():
  """A piece with a small image (or none: the blank padding piece of an eval pass) next to one with a large
  image: their vision `full_span` bounds differ, the batch takes the largest (the eval pass of a run
  with fewer held-out examples than `eval.batches` x batch once failed here)."""
  from zoomjax.model import ModelConfig
  from zoomjax.train import batching
  cfg = ModelConfig.tiny(vocab_size=64)
  def piece(grid):
    n = int(np.prod(grid)) if grid is not None else 0
    ids = np.full((1, 80), 1, np.int32)
    if grid is not None:
      ids[0, :n // 4] = cfg.image_token_id
    return {"input_ids": ids, "attention_mask": np.ones((1, 80), np.int32), "loss_mask": np.ones((1, 80), np.int32),
            "pixel_values": np.zeros((n, 1176), np.float32),
            "image_grid_thw": np.asarray([grid], np.int32) if grid is not None else np.zeros((0, 3), np.int32)}
  pieces = [piece((1, 16, 16)), piece((1, 4, 4)), piece(None)]
  spans = [batching.make_piece(cfg, p, 256).vision["full_span"].shape[0] for p in pieces]
  assert len(set(spans)) > 1
  out = batching.assemble(pieces, (3,), lambda p: batching.make_piece(cfg, p, 256))
  assert out.vision["full_span"].shape == (3, max(spans)) and out.input_ids.shape == (3, 1, 80)
