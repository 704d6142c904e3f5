"""zoomjax.hf: load/save round trips through transformers, key styles, sharded files, placement, errors."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from zoomjax import hf
from zoomjax.model import forward, reference as ref_lib
from zoomjax.model.config import ModelConfig

CFG = ModelConfig.tiny()


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("ref")
  model = ref_lib.build_reference(CFG, seed=3, save_dir=d)
  return d, model


def _batch(cfg):
  rs = np.random.RandomState(0)
  grid = np.array([[1, 4, 6]])
  img = [cfg.vision_start_token_id] + [cfg.image_token_id] * 6 + [cfg.vision_end_token_id]
  ids = np.array([list(rs.randint(0, 400, 3)) + img + list(rs.randint(0, 400, 4))])
  pixels = rs.randn(24, cfg.vision.patch_dim).astype(np.float32)
  return ids, pixels, grid


def _copy_with(src, dst, rename=None, drop=(), change=None):
  """Rewrites src's model.safetensors into dst, renaming / dropping / replacing tensors."""
  os.makedirs(dst, exist_ok=True)
  shutil.copy(os.path.join(src, "config.json"), dst)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  out = {}
  for k, v in tensors.items():
    if k in drop:
      continue
    if change and k in change:
      v = change[k]
    out[rename(k) if rename else k] = v
  save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
  return dst


def test_save_then_transformers_load_gives_identical_logits(ref_dir, tmp_path):
  import transformers
  d, model = ref_dir
  cfg, params = hf.load(d)
  out = tmp_path / "out"
  hf.save(out, cfg, params)
  reloaded = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager")
  ids, pixels, grid = _batch(cfg)
  a = ref_lib.reference_logits(model, cfg, ids, None, pixels, grid)
  b = ref_lib.reference_logits(reloaded.eval(), cfg, ids, None, pixels, grid)
  np.testing.assert_array_equal(a, b)
  # and zoomjax agrees with both
  np.testing.assert_allclose(np.asarray(forward(cfg, params, ids, pixels, grid)), a, atol=1e-4, rtol=0)
  # every tensor written equals the source tensor bit for bit
  src, dst = load_file(os.path.join(d, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
  assert sorted(src) == sorted(dst)
  for k in src:
    np.testing.assert_array_equal(src[k], dst[k])


def test_sharded_save_and_load(ref_dir, tmp_path):
  d, _ = ref_dir
  cfg, params = hf.load(d, scan_layers=False)
  hf.save(tmp_path, cfg, params, max_shard_bytes=64 * 1024)
  index = json.load(open(tmp_path / hf.SAFE_INDEX))
  assert len(set(index["weight_map"].values())) > 2
  assert not (tmp_path / hf.SAFE_SINGLE).exists()
  cfg2, params2 = hf.load(tmp_path)
  assert cfg2.scan_layers  # default; the unrolled params reload stacked
  ids, pixels, grid = _batch(cfg)
  np.testing.assert_allclose(np.asarray(forward(cfg, params, ids, pixels, grid)),
                             np.asarray(forward(cfg2, params2, ids, pixels, grid)), atol=1e-5, rtol=0)


def test_nested_key_style_loads(ref_dir, tmp_path):
  d, _ = ref_dir

  def nested(k):
    if k.startswith("visual."):
      return "model." + k
    if k.startswith("model."):
      return "model.language_model." + k[len("model."):]
    return k

  _copy_with(d, tmp_path, rename=nested)
  _, a = hf.load(d)
  _, b = hf.load(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_bf16_and_placement_on_mesh(ref_dir):
  from zoomjax.model import sharding
  d, _ = ref_dir
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  cfg, params = hf.load(d, dtype=jnp.bfloat16, mesh=mesh)
  assert cfg.param_dtype == "bfloat16" and cfg.dtype == "bfloat16"
  q = params["language"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.dtype == jnp.bfloat16
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  emb = params["language"]["embed_tokens"]["embedding"]
  assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  ids, pixels, grid = _batch(cfg)
  logits = forward(cfg, params, ids, pixels, grid)
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


# ------------------------------------------------------------------------------------------------ errors
def test_error_no_weights(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_dict()))
  with pytest.raises(hf.CheckpointError, match="no weights"):
    hf.load(tmp_path)


def test_error_pickle_only(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_dict()))
  (tmp_path / "pytorch_model.bin").write_bytes(b"not opened")
  with pytest.raises(hf.CheckpointError, match="never unpickles"):
    hf.load(tmp_path)


def test_error_no_config(tmp_path):
  with pytest.raises(hf.CheckpointError, match="config.json"):
    hf.load(tmp_path)


def test_error_missing_tensor(ref_dir, tmp_path):
  d, _ = ref_dir
  _copy_with(d, tmp_path, drop=("model.layers.1.mlp.up_proj.weight",))
  with pytest.raises(hf.CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
    hf.load(tmp_path)


def test_error_shape_mismatch(ref_dir, tmp_path):
  d, _ = ref_dir
  _copy_with(d, tmp_path, change={"model.norm.weight": np.ones((65,), np.float32)})
  with pytest.raises(hf.CheckpointError, match=r"model\.norm\.weight.*\(65,\)"):
    hf.load(tmp_path)


def test_error_config_does_not_match_weights(ref_dir, tmp_path):
  d, _ = ref_dir
  _copy_with(d, tmp_path)
  c = json.load(open(tmp_path / "config.json"))
  c["text_config"]["intermediate_size"] = 256
  (tmp_path / "config.json").write_text(json.dumps(c))
  with pytest.raises(hf.CheckpointError, match="does not match the weights"):
    hf.load(tmp_path)
  c["text_config"]["intermediate_size"] = 128
  c["text_config"]["num_hidden_layers"] = 1
  (tmp_path / "config.json").write_text(json.dumps(c))
  with pytest.raises(hf.CheckpointError, match="no place"):
    hf.load(tmp_path)


def test_load_tokenizer_errors_without_files(tmp_path):
  with pytest.raises(hf.CheckpointError, match="tokenizer"):
    hf.load_tokenizer(tmp_path)
