"""Vision tower parity against transformers' Qwen2_5_VisionTransformerPretrainedModel (fp32, eager, random weights)."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from zoomjax.model import sharding, vision
from zoomjax.model.config import ModelConfig, VisionConfig

TOL = 1e-4


def _cfg(name: str, scan: bool = True) -> ModelConfig:
  base = ModelConfig.tiny(scan_layers=scan)
  if name in ("tiny", "many"):  # 56-px windows (2x2 merged tokens), one full-attention block of 2
    return base
  if name == "wide":  # the real 112-px windows (4x4 merged tokens), 3 heads, full attention first and last
    v = VisionConfig(depth=4, hidden_size=48, intermediate_size=80, num_heads=3, out_hidden_size=64,
                     fullatt_block_indexes=(0, 3), window_size=112)
    return dataclasses.replace(base, vision=v)
  raise ValueError(name)


GRIDS = {
    # several windows, sides not divisible by the window, two images of different sizes
    "tiny": np.array([[1, 10, 14], [1, 6, 4]], np.int64),
    "wide": np.array([[1, 18, 22], [1, 8, 8], [1, 4, 6]], np.int64),
    # many small images: full attention runs banded (3 * full_span < P)
    "many": np.array([[1, 4, 4]] * 7 + [[1, 6, 8]] + [[1, 4, 4]] * 7 + [[1, 4, 2]], np.int64),
}


def _reference(cfg: ModelConfig, seed: int = 0):
  v = cfg.vision
  hf_cfg = Qwen2_5_VLVisionConfig(
      depth=v.depth, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_heads=v.num_heads,
      in_channels=v.in_channels, patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
      spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
      fullatt_block_indexes=list(v.fullatt_block_indexes), out_hidden_size=v.out_hidden_size)
  hf_cfg._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = Qwen2_5_VisionTransformerPretrainedModel(hf_cfg).eval().float()
  with torch.no_grad():  # every tensor random (norm scales and biases too), so each one matters
    for name, p in model.named_parameters():
      p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm1.weight") or name.endswith("norm2.weight")
              or name.endswith("ln_q.weight") else 0.08 * torch.randn_like(p))
  return model


def _params_from_state_dict(cfg: ModelConfig, state_dict) -> dict:
  sd = {f"visual.{k}": t.detach().numpy() for k, t in state_dict.items()}
  params: dict = {}
  for path, src in vision.vision_leaf_table(cfg).items():
    leaves = [src.to_param(sd[k]) for k in src.hf_keys]
    leaf = np.stack(leaves) if src.stacked else leaves[0]
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = jnp.asarray(leaf)
  return params


@functools.partial(jax.jit, static_argnums=0)
def _tower(cfg, params, pixels, meta):
  return vision.VisionTower(cfg).apply({"params": params}, pixels, meta)


def _run(cfg, params, pixels, grid, pad_to=None):
  meta = vision.vision_metadata(cfg.vision, grid, pad_patches_to=pad_to)
  if pad_to is not None:
    pixels = np.concatenate([pixels, np.zeros((pad_to - len(pixels), pixels.shape[1]), np.float32)])
  return np.asarray(_tower(cfg, params, pixels, meta))


@pytest.fixture(scope="module", params=["tiny", "wide", "many"])
def setup(request):
  name = request.param
  cfg = _cfg(name)
  model = _reference(cfg, seed=len(name))
  grid = GRIDS[name]
  n = int(grid.prod(-1).sum())
  pixels = np.random.default_rng(1).normal(size=(n, cfg.vision.patch_dim)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(pixels), grid_thw=torch.from_numpy(grid)).pooler_output.numpy()
  return name, cfg, model, grid, pixels, ref


def test_parity_with_reference(setup):
  name, cfg, model, grid, pixels, ref = setup
  meta = vision.vision_metadata(cfg.vision, grid)
  assert (3 * len(meta["full_span"]) < len(pixels)) == (name == "many")  # which full-attention path runs
  out = _run(cfg, _params_from_state_dict(cfg, model.state_dict()), pixels, grid)
  assert out.shape == ref.shape == (len(pixels) // 4, cfg.vision.out_hidden_size)
  assert np.abs(ref).max() > 0.1  # a meaningful signal
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_images_are_independent(setup):
  """Each image alone gives the same rows as inside the batch (attention never crosses images)."""
  name, cfg, model, grid, pixels, ref = setup
  params = _params_from_state_dict(cfg, model.state_dict())
  start_px = start_tok = 0
  for row in grid[:3]:
    n = int(row.prod())
    out = _run(cfg, params, pixels[start_px:start_px + n], row[None])
    np.testing.assert_allclose(out, ref[start_tok:start_tok + n // 4], atol=TOL, rtol=0)
    start_px, start_tok = start_px + n, start_tok + n // 4


def test_padding_does_not_change_real_outputs(setup):
  name, cfg, model, grid, pixels, ref = setup
  params = _params_from_state_dict(cfg, model.state_dict())
  pad_to = len(pixels) + 4 * 37
  grid_padded = np.concatenate([grid, np.zeros((2, 3), np.int64)])  # padding images too
  out = _run(cfg, params, pixels, grid_padded, pad_to=pad_to)
  assert out.shape == (pad_to // 4, cfg.vision.out_hidden_size)
  np.testing.assert_allclose(out[:len(ref)], ref, atol=TOL, rtol=0)
  assert np.isfinite(out).all()


def test_sharded_on_a_mesh_equals_reference(setup):
  """Under the default rules on a (data 2, fsdp 2, tensor 2) CPU mesh (uneven heads for `wide`)."""
  name, cfg, model, grid, pixels, ref = setup
  params = _params_from_state_dict(cfg, model.state_dict())
  with sharding.activation_rules(sharding.make_mesh(data=2, fsdp=2, tensor=2)):
    out = _run(cfg, params, pixels, grid)
  np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


def test_bfloat16_compute_stays_close():
  cfg, grid = _cfg("wide"), GRIDS["wide"]
  model = _reference(cfg, seed=4)
  pixels = np.random.default_rng(1).normal(size=(int(grid.prod(-1).sum()), cfg.vision.patch_dim)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(pixels), grid_thw=torch.from_numpy(grid)).pooler_output.numpy()
  params = _params_from_state_dict(cfg, model.state_dict())
  out = _run(cfg.replace(dtype="bfloat16"), params, pixels, grid)
  assert out.dtype == jnp.bfloat16
  rel = np.linalg.norm(out.astype(np.float32) - ref) / np.linalg.norm(ref)
  assert rel < 0.03, rel


def test_unrolled_equals_scanned(setup):
  name, cfg, model, grid, pixels, ref = setup
  sd = model.state_dict()
  cfg_u = cfg.replace(scan_layers=False)
  out_u = _run(cfg_u, _params_from_state_dict(cfg_u, sd), pixels, grid)
  out_s = _run(cfg, _params_from_state_dict(cfg, sd), pixels, grid)
  np.testing.assert_allclose(out_u, out_s, atol=1e-5, rtol=0)
  np.testing.assert_allclose(out_u, ref, atol=TOL, rtol=0)


def test_remat_gives_the_same_output_and_gradient():
  cfg = _cfg("tiny")
  grid = GRIDS["tiny"]
  n = int(grid.prod(-1).sum())
  pixels = np.random.default_rng(2).normal(size=(n, cfg.vision.patch_dim)).astype(np.float32)
  meta = vision.vision_metadata(cfg.vision, grid)
  params = nn.unbox(jax.jit(vision.VisionTower(cfg).init)(jax.random.key(0), pixels, meta))["params"]

  def loss(p, c):
    return jnp.sum(vision.VisionTower(c).apply({"params": p}, pixels, meta) ** 2)

  base = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, cfg)
  remat = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, cfg.replace(remat_policy="full"))
  np.testing.assert_allclose(base[0], remat[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(base[1]), jax.tree.leaves(remat[1])):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "wide", "many"])
def test_metadata_matches_reference_indices(name):
  cfg = _cfg(name)
  v = cfg.vision
  grid = np.concatenate([GRIDS[name], [[1, 2, 2]]])
  meta = vision.vision_metadata(v, grid)
  g = torch.from_numpy(grid)
  win_ref, cu_ref = get_vision_window_index(g, v.spatial_merge_size, v.window_size, v.patch_size)
  np.testing.assert_array_equal(meta["window_index"], win_ref.numpy())
  np.testing.assert_array_equal(meta["reverse_index"], torch.argsort(win_ref).numpy())
  pos_ref = get_vision_position_ids(g, v.spatial_merge_size).numpy()          # [P, 2], original order
  patch_order = (win_ref.numpy()[:, None] * 4 + np.arange(4)).reshape(-1)
  np.testing.assert_array_equal(meta["rope_pos"], pos_ref[patch_order])
  # window segments change exactly at the reference's cu_window_seqlens
  seg = meta["window_segments"]
  bounds = np.flatnonzero(np.diff(seg)) + 1
  np.testing.assert_array_equal(np.concatenate([[0], bounds, [len(seg)]]), cu_ref.numpy())
  full_bounds = np.flatnonzero(np.diff(meta["full_segments"])) + 1
  np.testing.assert_array_equal(full_bounds, np.cumsum(grid.prod(-1))[:-1])
  longest = int(grid[:, 1:].prod(-1).max())
  assert longest <= len(meta["full_span"]) < 2 * max(longest, vision.window_patches(v))
  for key, arr in meta.items():
    assert arr.dtype == np.int32, key


def test_metadata_padding_and_errors():
  v = _cfg("tiny").vision
  grid = np.array([[1, 4, 4], [0, 0, 0]])
  meta = vision.vision_metadata(v, grid, pad_patches_to=32)
  assert meta["window_index"].shape == (8,) and meta["rope_pos"].shape == (32, 2)
  np.testing.assert_array_equal(meta["window_index"][4:], [4, 5, 6, 7])       # padding tokens last
  pad_w, pad_f = meta["window_segments"][16:], meta["full_segments"][16:]
  assert not set(pad_w) & set(meta["window_segments"][:16])
  assert not set(pad_f) & set(meta["full_segments"][:16])
  assert len(set(pad_w)) == 4 and len(set(pad_f)) == 4                      # U patches per padding segment
  with pytest.raises(ValueError, match="pad_patches_to"):
    vision.vision_metadata(v, grid, pad_patches_to=8)
  with pytest.raises(ValueError, match="pad_patches_to"):
    vision.vision_metadata(v, grid, pad_patches_to=18)
  with pytest.raises(ValueError, match="multiples"):
    vision.vision_metadata(v, np.array([[1, 3, 4]]))
  with pytest.raises(ValueError, match="integer array"):
    vision.vision_metadata(v, np.array([1, 4, 4]))


def test_banded_attention_equals_full():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 17, size=40)
  seg = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)
  p = len(seg)
  q, k, v = (jnp.asarray(rng.normal(size=(p, 2, 8)).astype(np.float32)) for _ in range(3))
  seg = jnp.asarray(seg)
  full = jax.jit(vision.full_attention, static_argnums=4)
  ref = full(q, k, v, seg, None)
  for block in (16, 20, 64):
    out = jax.jit(vision.banded_attention, static_argnums=4)(q, k, v, seg, block)
    np.testing.assert_allclose(out, ref, atol=1e-6)
  np.testing.assert_allclose(full(q, k, v, seg, 32), ref, atol=1e-6)


@pytest.mark.parametrize("scan", [True, False])
def test_leaf_table_matches_hf_checkpoint_and_params(scan, tmp_path_factory):
  cfg = _cfg("tiny", scan)
  table = vision.vision_leaf_table(cfg)
  # every param of the module has exactly one table entry, with matching shape and logical axes
  meta = vision.vision_metadata(cfg.vision, np.array([[1, 4, 4]]))
  boxed = jax.eval_shape(lambda: vision.VisionTower(cfg).init(jax.random.key(0), jnp.zeros((16, 1176)), meta))
  flat = {tuple(k.key for k in path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]}
  assert set(flat) == set(table)
  for path, leaf in flat.items():
    assert isinstance(leaf, nn.Partitioned) and len(leaf.names) == len(leaf.value.shape), path
    assert all(n is None or n.startswith("vision_") or n in ("layers", "embed") for n in leaf.names), path
    assert (leaf.names[0] == "layers") == (scan and path[0] == "blocks"), path
  # the hf keys are exactly the `visual.*` tensors save_pretrained writes, and to_hf inverts to_param
  hf_dir = tmp_path_factory.mktemp("hf")
  hf_cfg = Qwen2_5_VLConfig(**cfg.to_hf_dict())
  Qwen2_5_VLForConditionalGeneration(hf_cfg).save_pretrained(hf_dir)
  from safetensors.numpy import load_file
  tensors = {k: v for k, v in load_file(hf_dir / "model.safetensors").items() if k.startswith("visual.")}
  assert {k for src in table.values() for k in src.hf_keys} == set(tensors)
  for path, src in table.items():
    for key in src.hf_keys:
      w = tensors[key]
      p = src.to_param(w)
      expected = flat[path].value.shape[1:] if src.stacked else flat[path].value.shape
      assert p.shape == expected, (path, p.shape, expected)
      np.testing.assert_array_equal(src.to_hf(p), w)
