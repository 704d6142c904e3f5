"""`python -m zoomjax.convert`: HF -> orbax -> HF keeps every tensor; --help works."""
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

from zoomjax import convert
from zoomjax.model import reference as ref_lib
from zoomjax.model.config import ModelConfig


def test_help():
  r = subprocess.run([sys.executable, "-m", "zoomjax.convert", "--help"], capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0 and "to-orbax" in r.stdout and "to-hf" in r.stdout


def test_hf_orbax_hf_roundtrip(tmp_path):
  cfg = ModelConfig.tiny()
  src = tmp_path / "hf"
  ref_lib.build_reference(cfg, seed=5, save_dir=src)
  for unrolled in (False, True):
    ck, out = tmp_path / f"ckpt{unrolled}", tmp_path / f"hf_out{unrolled}"
    argv = ["to-orbax", "--hf-dir", str(src), "--out", str(ck)] + (["--unrolled"] if unrolled else [])
    assert convert.main(argv) == 0
    assert (ck / "info.json").exists()
    assert convert.main(["to-hf", "--orbax-dir", str(ck), "--out", str(out)]) == 0
    a = load_file(os.path.join(src, "model.safetensors"))
    b = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_missing_weights_is_a_clear_error(tmp_path, capsys):
  (tmp_path / "config.json").write_text("{}")
  assert convert.main(["to-orbax", "--hf-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
  assert "error:" in capsys.readouterr().err
