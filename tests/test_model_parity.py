"""Logit parity with transformers' Qwen2_5_VLForConditionalGeneration (fp32, eager, random weights).

Each config: build the reference, `save_pretrained` to a tmp dir, `zoomjax.hf.load`, compare logits of
the same batch. max |Δlogits| <= 1e-4 on every slot (padding included).
"""
import dataclasses

import numpy as np
import pytest

from zoomjax import hf
from zoomjax.model import forward
from zoomjax.model import reference as ref_lib
from zoomjax.model.config import ModelConfig, TextConfig, VisionConfig

TOL = 1e-4


def _configs() -> dict[str, ModelConfig]:
  base = ModelConfig.tiny()
  # GQA ratio 1, untied head, 3 layers, 112-px windows; unrolled layers.
  mha = dataclasses.replace(
      base, scan_layers=False,
      text=TextConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=16, mrope_section=(4, 2, 2),
                      rope_theta=1e6, tie_word_embeddings=False),
      vision=VisionConfig(depth=3, hidden_size=48, intermediate_size=64, num_heads=3, out_hidden_size=64,
                          fullatt_block_indexes=(0,), window_size=112))
  # GQA ratio 4, head_dim 8.
  gqa4 = dataclasses.replace(
      base, text=TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=8, num_key_value_heads=2, head_dim=8, mrope_section=(2, 1, 1),
                            rope_theta=10000.0, tie_word_embeddings=True))
  return {"tiny_gqa2": base, "mha_untied": mha, "gqa4": gqa4}


CONFIGS = _configs()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def loaded(request, tmp_path_factory):
  cfg = CONFIGS[request.param]
  d = tmp_path_factory.mktemp(request.param)
  model = ref_lib.build_reference(cfg, seed=len(request.param), save_dir=d)
  got_cfg, params = hf.load(d, scan_layers=cfg.scan_layers)
  return cfg, got_cfg, params, model, d


def _image_tokens(cfg, grid):
  return [cfg.vision_start_token_id] + [cfg.image_token_id] * int(np.prod(grid) // 4) + [cfg.vision_end_token_id]


def _batch(cfg: ModelConfig, seed: int = 0):
  """Row 0: text, image A (several windows), text, image B (other size), text.  Row 1: text, image C,
  text, right padding.  Row 2: text only, padded."""
  rs = np.random.RandomState(seed)
  txt = lambda n: list(rs.randint(0, cfg.text.vocab_size - 16, n))
  grids = np.array([[1, 12, 16], [1, 4, 6], [1, 6, 10]])
  rows = [txt(4) + _image_tokens(cfg, grids[0]) + txt(3) + _image_tokens(cfg, grids[1]) + txt(5),
          txt(2) + _image_tokens(cfg, grids[2]) + txt(7),
          txt(9)]
  t = max(map(len, rows))
  ids = np.full((len(rows), t), cfg.pad_token_id, np.int64)
  mask = np.zeros((len(rows), t), np.int64)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  pixels = rs.randn(int(grids.prod(-1).sum()), cfg.vision.patch_dim).astype(np.float32)
  return ids, mask, pixels, grids


def test_config_roundtrip(loaded):
  cfg, got_cfg, *_ = loaded
  assert got_cfg.text == cfg.text and got_cfg.vision == cfg.vision
  assert got_cfg.image_token_id == cfg.image_token_id and got_cfg.pad_token_id == cfg.pad_token_id


def test_text_only_parity(loaded):
  cfg, got_cfg, params, model, _ = loaded
  rs = np.random.RandomState(1)
  ids = rs.randint(0, cfg.text.vocab_size, (3, 13))
  mask = np.ones_like(ids)
  mask[1, 9:] = 0
  mask[2, 4:] = 0
  for m in (None, mask):
    ours = np.asarray(forward(got_cfg, params, ids, attention_mask=m))
    theirs = ref_lib.reference_logits(model, cfg, ids, m)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def test_multimodal_parity(loaded):
  cfg, got_cfg, params, model, _ = loaded
  ids, mask, pixels, grids = _batch(cfg)
  ours = np.asarray(forward(got_cfg, params, ids, pixels, grids, mask))
  theirs = ref_lib.reference_logits(model, cfg, ids, mask, pixels, grids)
  assert np.abs(theirs).max() > 1.0  # non-degenerate random weights
  np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)


def test_scanned_equals_unrolled(loaded):
  cfg, got_cfg, params, model, d = loaded
  other_cfg, other = hf.load(d, scan_layers=not cfg.scan_layers)
  assert other_cfg.scan_layers != got_cfg.scan_layers
  ids, mask, pixels, grids = _batch(cfg, seed=3)
  a = np.asarray(forward(got_cfg, params, ids, pixels, grids, mask))
  b = np.asarray(forward(other_cfg, other, ids, pixels, grids, mask))
  # scanned and unrolled stacks are different XLA programs (fusion, op order): float32 rounding, which is
  # relative to the logits, up to ~1e-5 of their magnitude
  np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
