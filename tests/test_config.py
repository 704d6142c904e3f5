"""ModelConfig from HF config.json layouts (flat hub files, nested transformers-5 files) and validation."""
import json

import pytest

from zoomjax.model.config import ConfigError, ModelConfig, TextConfig, VisionConfig

# The hub's Qwen2.5-VL-3B-Instruct config.json (flat layout, `rope_scaling` with type "mrope").
HUB_3B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
    "video_token_id": 151656, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 128000, "max_window_layers": 70,
    "model_type": "qwen2_5_vl", "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.41.2", "use_cache": True, "use_sliding_window": False,
    "vision_config": {
        "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
        "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
        "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2, "temporal_patch_size": 2},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}


def _arch(c: ModelConfig):
  return (c.text, c.vision, c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id,
          c.eos_token_id)


def test_flat_hub_3b_config():
  assert _arch(ModelConfig.from_hf_dict(HUB_3B)) == _arch(ModelConfig.qwen2_5_vl_3b())


def test_flat_hub_7b_config():
  d = dict(HUB_3B, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
           num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)
  d["vision_config"] = dict(HUB_3B["vision_config"], out_hidden_size=3584)
  assert _arch(ModelConfig.from_hf_dict(d)) == _arch(ModelConfig.qwen2_5_vl_7b())


def test_nested_layout_from_transformers_roundtrip():
  import transformers
  hc = transformers.Qwen2_5_VLConfig(**HUB_3B)           # transformers normalises the flat hub file
  nested = hc.to_dict()
  assert "text_config" in nested and "rope_parameters" in nested["text_config"]
  assert _arch(ModelConfig.from_hf_dict(nested)) == _arch(ModelConfig.qwen2_5_vl_3b())
  # and what zoomjax writes reads back the same, through transformers too
  for cfg in (ModelConfig.tiny(), ModelConfig.qwen2_5_vl_7b()):
    d = cfg.to_hf_dict()
    assert _arch(ModelConfig.from_hf_dict(d)) == _arch(cfg)
    via_hf = transformers.Qwen2_5_VLConfig(**json.loads(json.dumps(d))).to_dict()
    assert _arch(ModelConfig.from_hf_dict(via_hf)) == _arch(cfg)


def test_rope_parameters_and_rope_scaling_are_both_read():
  base = {k: v for k, v in HUB_3B.items() if k not in ("rope_scaling", "rope_theta")}
  a = ModelConfig.from_hf_dict(dict(base, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
                                    rope_theta=5e5))
  b = ModelConfig.from_hf_dict(dict(base, rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                                           "rope_theta": 5e5}))
  assert a.text == b.text and a.text.rope_theta == 5e5 and a.text.mrope_section == (16, 24, 24)


def test_runtime_fields_and_hashable():
  cfg = ModelConfig.from_hf_dict(HUB_3B, scan_layers=False, remat_policy="dots", dtype="bfloat16")
  assert not cfg.scan_layers and cfg.remat_policy == "dots" and cfg.dtype == "bfloat16"
  assert hash(cfg) == hash(ModelConfig.from_hf_dict(HUB_3B, scan_layers=False, remat_policy="dots",
                                                    dtype="bfloat16"))


def test_from_hf_dir(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(HUB_3B))
  assert ModelConfig.from_hf_dir(tmp_path).text.num_hidden_layers == 36
  with pytest.raises(ConfigError, match="no config.json"):
    ModelConfig.from_hf_dir(tmp_path / "nope")


@pytest.mark.parametrize("bad, match", [
    (dict(model_type="llama"), "not a Qwen2.5-VL"),
    (dict(rope_scaling={"type": "mrope"}), "mrope_section"),
    (dict(rope_scaling={"type": "mrope", "mrope_section": [16, 24, 16]}), "sum to head_dim"),
    (dict(num_key_value_heads=3), "multiple of"),
])
def test_invalid_configs_raise_clear_errors(bad, match):
  with pytest.raises(ConfigError, match=match):
    ModelConfig.from_hf_dict(dict(HUB_3B, **bad))


def test_missing_field():
  d = {k: v for k, v in HUB_3B.items() if k != "hidden_size"}
  with pytest.raises(ConfigError, match="hidden_size"):
    ModelConfig.from_hf_dict(d)


def test_validation_echoes_values():
  with pytest.raises(ConfigError, match="remat_policy"):
    ModelConfig.tiny(remat_policy="sometimes")
  with pytest.raises(ConfigError, match="out_hidden_size"):
    ModelConfig(text=TextConfig(), vision=VisionConfig(out_hidden_size=7))
