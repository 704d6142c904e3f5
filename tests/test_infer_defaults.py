"""A training run's export carries its inference defaults (`zoomjax_infer.json`, SPEC §8): `--model` takes
the HF dir or the RUN_DIR, and flags left unset take the export's values, else the CLI's fallbacks."""

import argparse
import json

import pytest

from zoomjax import hf


def _run_dir(tmp_path, defaults):
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "config.json").write_text("{}")
  if defaults is not None:
    (tmp_path / "hf" / hf.INFER_DEFAULTS_FILE).write_text(json.dumps(defaults))
  return tmp_path


def test_run_dir_resolves_to_its_export_and_fills_unset_flags(tmp_path):
  run = _run_dir(tmp_path, {"protocol": "multiturn", "max_turns": 2, "max_new_tokens": 160,
                            "max_total_tokens": 1024, "max_pixels": 50176, "sampling": {"temperature": 0.0}})
  args = argparse.Namespace(model=str(run), protocol=None, max_new_tokens=64, max_total_tokens=None, max_pixels=None)
  found = hf.fill_inference_defaults(args, {"protocol": "released", "max_new_tokens": 1024,
                                            "max_total_tokens": 8192, "max_pixels": 12845056})
  assert args.model == str(run / "hf")
  assert args.protocol == "multiturn" and args.max_total_tokens == 1024 and args.max_pixels == 50176
  assert args.max_new_tokens == 64                      # a flag the user gave wins over the export
  assert found["max_turns"] == 2 and "sampling" not in found


def test_plain_hf_dir_uses_the_fallbacks(tmp_path):
  d = _run_dir(tmp_path, None) / "hf"
  args = argparse.Namespace(model=str(d), protocol=None, max_pixels=None)
  assert hf.fill_inference_defaults(args, {"protocol": "released", "max_pixels": 12845056}) == {}
  assert args.model == str(d) and args.protocol == "released" and args.max_pixels == 12845056


def test_a_broken_defaults_file_is_a_checkpoint_error(tmp_path):
  d = _run_dir(tmp_path, None) / "hf"
  (d / hf.INFER_DEFAULTS_FILE).write_text("{not json")
  with pytest.raises(hf.CheckpointError, match=hf.INFER_DEFAULTS_FILE):
    hf.inference_defaults(d)
