"""Logical axes on every param, sharded forward == unsharded, remat policies, bf16 compute, jit caching."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoomjax.model import forward, init_params, prepare_inputs
from zoomjax.model import qwen2_5_vl as top
from zoomjax.model import sharding
from zoomjax.model.config import ModelConfig

CFG = ModelConfig.tiny()


@pytest.fixture(scope="module")
def params():
  return jax.tree.map(lambda p: p * 3.0 if p.ndim >= 2 else p, init_params(CFG, jax.random.key(1)))


def _batch(cfg):
  rs = np.random.RandomState(0)
  grid = np.array([[1, 4, 8], [1, 6, 4]])
  img = lambda g: [cfg.vision_start_token_id] + [cfg.image_token_id] * (np.prod(g) // 4) + [cfg.vision_end_token_id]
  rows = [list(rs.randint(0, 400, 3)) + img(grid[0]) + [7, 8], list(rs.randint(0, 400, 2)) + img(grid[1])]
  t = max(map(len, rows)) + 1
  ids = np.full((4, t), cfg.pad_token_id)
  mask = np.zeros((4, t), np.int32)
  for i, r in enumerate(rows + [[1, 2, 3], [4, 5]]):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  pixels = rs.randn(int(grid.prod(-1).sum()), cfg.vision.patch_dim).astype(np.float32)
  return ids, mask, pixels, grid


def test_every_param_has_logical_axes():
  specs = sharding.logical_partition_specs(CFG)
  shapes = top.abstract_params(CFG)
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  flat_shapes = jax.tree.leaves(shapes)
  assert len(flat_specs) == len(flat_shapes)
  rule_names = {name for name, _ in sharding.DEFAULT_RULES}
  for spec, leaf in zip(flat_specs, flat_shapes):
    assert len(spec) == leaf.ndim
    assert all(a is None or a in rule_names for a in spec), spec
  lang = specs["language"]
  assert lang["layers"]["self_attn"]["q_proj"]["kernel"] == jax.sharding.PartitionSpec(
      "layers", "embed", "q_heads", "head_dim")
  assert lang["embed_tokens"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")


def test_sharded_forward_equals_single_device(params):
  ids, mask, pixels, grid = _batch(CFG)
  want = np.asarray(forward(CFG, params, ids, pixels, grid, mask))
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  shardings = sharding.param_shardings(CFG, mesh)
  placed = jax.device_put(params, shardings)
  inputs = prepare_inputs(CFG, ids, mask, grid)
  with sharding.activation_rules(mesh):
    fn = jax.jit(top.apply, static_argnums=0)
    text = fn.lower(CFG, placed, inputs, pixels).as_text()
    got = np.asarray(fn(CFG, placed, inputs, pixels))
  assert "sharding_constraint" in text or "Sharding" in text  # activation constraints were applied
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_uneven_dims_are_replicated():
  mesh = sharding.make_mesh(data=1, fsdp=1, tensor=8)
  shard = sharding.param_shardings(CFG, mesh)
  k = shard["language"]["layers"]["self_attn"]["k_proj"]["kernel"]  # 2 KV heads on tensor=8
  assert k.spec[2] is None


def test_remat_policies_keep_values_and_grads(params):
  ids, mask, _, _ = _batch(CFG)
  inputs = prepare_inputs(CFG, ids, mask)  # text only: keeps the compiles small

  def loss(p, cfg):
    return jnp.mean(top.apply(cfg, p, inputs) ** 2)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g0 = grad(params, CFG)
  for policy in ("full", "save_attn_out"):
    g1 = grad(params, CFG.replace(remat_policy=policy))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), g0, g1)


def test_bf16_compute_with_fp32_params(params):
  ids, mask, pixels, grid = _batch(CFG)
  want = np.asarray(forward(CFG, params, ids, pixels, grid, mask))
  got = forward(CFG.replace(dtype="bfloat16"), params, ids, pixels, grid, mask)
  assert got.dtype == jnp.float32
  err = np.abs(np.asarray(got) - want)[mask > 0].max()
  assert err < 0.1 * np.abs(want).max(), err


def test_forward_does_not_recompile_for_same_shapes(params):
  ids, mask, pixels, grid = _batch(CFG)
  forward(CFG, params, ids, pixels, grid, mask)
  before = top._apply_jit._cache_size()
  ids2 = ids.copy()
  ids2[:, 0] = 11
  forward(CFG, params, ids2, pixels * 2, grid, mask)
  assert top._apply_jit._cache_size() == before
