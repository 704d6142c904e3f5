"""AOT compile of the real 3B SFT step for a TPU v5e-16 slice on this CPU machine (libtpu's topology API):
it compiles, and `memory_analysis()` says it fits a 16 GiB v5e chip at a realistic batch.

The batch: 32 sequences of 2048 tokens, each with a global view and a crop of 504x504 px (2592 patches),
gradient accumulation 2 (one sequence per chip per microbatch), bf16 compute, fp32 master weights and
Adam state, FSDP over the 16 chips (`configs/lrs_gro_3b_v5e16.yaml`)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_3b_step_compiles_for_v5e16_and_fits_16_gib(tmp_path):
  out = tmp_path / "aot.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "aot_compile_3b.py"), "--json", str(out)],
                     capture_output=True, text=True, timeout=1500, env=env, cwd=ROOT)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
  res = json.loads(out.read_text())
  assert res["chips"] == 16 and "v5" in res["device_kind"].lower()
  assert 3.7e9 < res["params"] < 3.8e9                      # the real Qwen2.5-VL-3B, vision tower included
  assert res["mesh"] == {"data": 1, "fsdp": 16, "tensor": 1}
  assert res["global_batch"] == 32 and res["seq_len"] == 2048 and res["patches_per_seq"] == 2592
  gib = 1024 ** 3
  # the fp32 master weights + 2 Adam moments alone are 12 bytes/param over 16 chips
  assert res["argument_size_in_bytes"] > 12 * res["params"] / 16
  assert res["per_chip_bytes"] < 16 * gib, f"{res['per_chip_bytes'] / gib:.2f} GiB per chip"
