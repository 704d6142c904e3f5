"""Tests where the model's constants are visible: RMSNorm eps and the M-RoPE sections.

The parity tests (test_model_parity, test_vision) feed random inputs whose mean square (~1e-1) dwarfs
eps = 1e-6, and the rope theta of 1e4-1e6 leaves the last (width) section's frequencies nearly still at
small positions, so a wrong eps or a swapped section changes the logits by less than the tolerance.
Here:

* RMSNorm (language and vision modules) is checked against its formula on inputs of scale 1e-3,
  mean square ~1e-6 = eps: eps 10x larger moves the output by a factor ~2 (asserted as a margin);
* one multimodal parity run against transformers with text embeddings and pixels scaled down to that
  regime (text eps set to 1e-5 in the config, so it must be read from config.json; the vision eps is
  the reference's hard-coded 1e-6), rope theta 20 (every frequency pair turns by radians over a few
  positions) and elongated images (the height and width positions cover different ranges).
"""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

from zoomjax import hf
from zoomjax.model import forward, vision
from zoomjax.model import reference as ref_lib
from zoomjax.model.config import ModelConfig, TextConfig
from zoomjax.model.layers import RMSNorm

TOL = 1e-4


def rms_ref(x, scale, eps):
  """float64 numpy: scale * x / sqrt(mean(x^2) + eps) over the last axis."""
  x = np.asarray(x, np.float64)
  return np.asarray(scale, np.float64) * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def low_variance(shape, seed=0):
  return (1e-3 * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def apply_norm(module, x, scale):
  return np.asarray(module.apply({"params": {"scale": jnp.asarray(scale)}}, jnp.asarray(x)))


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_language_rmsnorm_matches_formula_where_eps_matters(eps):
  x = low_variance((3, 7, 64))
  scale = 1.0 + 0.1 * np.random.default_rng(1).normal(size=64).astype(np.float32)
  out = apply_norm(RMSNorm(eps=eps), x, scale)
  np.testing.assert_allclose(out, rms_ref(x, scale, eps), rtol=1e-5, atol=1e-6)
  # the inputs make eps visible: 10x eps moves every output by far more than the tolerance
  moved = np.abs(rms_ref(x, scale, 10 * eps) - out).max() / np.abs(out).max()
  assert moved > 0.3, moved


def test_rmsnorm_default_eps_is_1e_6():
  x = low_variance((4, 32), seed=2)
  out = apply_norm(RMSNorm(), x, np.ones(32, np.float32))
  np.testing.assert_allclose(out, rms_ref(x, 1.0, 1e-6), rtol=1e-5, atol=1e-6)


def test_vision_rmsnorm_is_the_references_1e_6():
  """The vision tower's norms (blocks and merger) use eps 1e-6, as transformers' vision norms."""
  x = low_variance((9, 32), seed=3)
  scale = 1.0 + 0.1 * np.random.default_rng(4).normal(size=32).astype(np.float32)
  ref = Qwen2_5_VLRMSNorm(32, eps=1e-6)
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(scale))
    want = ref(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(rms_ref(x, scale, 1e-6), want, rtol=1e-5, atol=1e-6)   # the formula is the reference
  ours = apply_norm(RMSNorm(vision.NORM_EPS, axis_name="vision_embed"), x, scale)
  np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ parity
def _config() -> ModelConfig:
  base = ModelConfig.tiny()
  text = TextConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, mrope_section=(2, 3, 3),
                    rope_theta=20.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
  return dataclasses.replace(base, text=text)


def _image_tokens(cfg, grid):
  return [cfg.vision_start_token_id] + [cfg.image_token_id] * int(np.prod(grid) // 4) + [cfg.vision_end_token_id]


@pytest.fixture(scope="module")
def low_variance_model(tmp_path_factory):
  cfg = _config()
  model = ref_lib.build_reference(cfg, seed=5)
  with torch.no_grad():   # text embeddings ~1e-3 (mean square ~1e-6): the first norms run where eps matters
    emb = model.get_input_embeddings().weight
    emb.mul_(3e-3 / emb.std())
  d = tmp_path_factory.mktemp("lowvar")
  model.save_pretrained(str(d))
  got_cfg, params = hf.load(d)
  return cfg, got_cfg, params, model


def test_low_variance_multimodal_parity(low_variance_model):
  cfg, got_cfg, params, model = low_variance_model
  assert got_cfg.text.rms_norm_eps == 1e-5 and got_cfg.text.mrope_section == (2, 3, 3)
  rs = np.random.RandomState(0)
  txt = lambda n: list(rs.randint(0, cfg.text.vocab_size - 16, n))  # noqa: E731
  grids = np.array([[1, 4, 24], [1, 20, 4]])          # 2 x 12 and 10 x 2 merged tokens
  rows = [txt(3) + _image_tokens(cfg, grids[0]) + txt(4) + _image_tokens(cfg, grids[1]) + txt(5),
          txt(11)]
  t = max(map(len, rows))
  ids = np.full((2, t), cfg.pad_token_id, np.int64)
  mask = np.zeros((2, t), np.int64)
  for i, r in enumerate(rows):
    ids[i, :len(r)], mask[i, :len(r)] = r, 1
  pixels = (1e-3 * rs.randn(int(grids.prod(-1).sum()), cfg.vision.patch_dim)).astype(np.float32)
  ours = np.asarray(forward(got_cfg, params, ids, pixels, grids, mask))
  theirs = ref_lib.reference_logits(model, cfg, ids, mask, pixels, grids)
  assert np.abs(theirs).max() > 1.0
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
