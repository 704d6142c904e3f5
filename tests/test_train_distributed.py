"""The real tiny Qwen2.5-VL trained by `zoomjax.train` on the simulated 8-device CPU:

* meshes 8x1x1, 2x4x1, 1x4x2 and 1x1x1 give the same loss curve over 5 steps;
* two processes on loopback (`jax.distributed`, 4 CPU devices each) give the one-process curve;
* a run killed with SIGKILL mid-training, then restarted, and one stopped with SIGTERM, then restarted,
  end with exactly the uninterrupted run's loss trajectory (and a half-written checkpoint is skipped).

Data: the synthetic copy task (one image per sequence), so the vision tower is in every step.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from zoomjax.train.config import load_config
from zoomjax.train.logger import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 5
COMMON = ["log.every=1", "data.kind=synthetic", "data.batch_size=8", "data.seq_len=32", "data.num_images=64",
          "optim.lr=3e-3", "optim.warmup_steps=0", "log.progress=false", "log.tensorboard=false",
          "eval.batches=0", "checkpoint.export_params=false", "model.text.num_hidden_layers=2",
          "model.vision.depth=2"]

pytestmark = pytest.mark.slow


def losses(run_dir):
  rows = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("split") is None]
  return np.array([r["loss"] for r in rows]), [r["step"] for r in rows]


def train_in_process(tmp, name, *overrides):
  from zoomjax.train.trainer import train
  cfg = load_config("synthetic_tiny", COMMON + [f"run_dir={tmp / name}", f"steps={STEPS}", "checkpoint.every=0",
                                    *overrides])
  train(cfg)
  return losses(tmp / name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The 8x1x1 (pure data-parallel) run: the curve every other layout must reproduce."""
  tmp = tmp_path_factory.mktemp("ref")
  curve, steps = train_in_process(tmp, "dp8", "mesh.data=8", "mesh.fsdp=1", "mesh.tensor=1")
  assert steps == list(range(1, STEPS + 1))
  assert np.all(np.isfinite(curve)) and curve[-1] < curve[0] - 0.05  # it learns
  return curve


@pytest.mark.parametrize("data,fsdp,tensor", [(2, 4, 1), (1, 4, 2), (1, 1, 1)])
def test_meshes_give_the_same_loss_curve(tmp_path, reference, data, fsdp, tensor):
  extra = ["mesh.devices=1"] if data * fsdp * tensor == 1 else []
  curve, _ = train_in_process(tmp_path, f"m{data}{fsdp}{tensor}", f"mesh.data={data}", f"mesh.fsdp={fsdp}",
                              f"mesh.tensor={tensor}", *extra)
  np.testing.assert_allclose(curve, reference, rtol=2e-5, atol=2e-5)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return env


def _cli(run_dir, *overrides):
  return [sys.executable, "-m", "zoomjax.train", "synthetic_tiny", *COMMON, f"run_dir={run_dir}", *overrides]


def test_two_processes_match_one(tmp_path, reference):
  port = _free_port()
  run_dir = tmp_path / "mp"
  procs = []
  for pid in range(2):
    cmd = _cli(run_dir, f"steps={STEPS}", "checkpoint.every=0", "mesh.data=8", "distributed.enabled=true",
               f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2",
               f"distributed.process_id={pid}", "distributed.timeout_s=120")
    procs.append(subprocess.Popen(cmd, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  cwd=tmp_path))
  outs = []
  try:
    for p in procs:
      out, _ = p.communicate(timeout=420)
      outs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  curve, steps = losses(run_dir)
  assert steps == list(range(1, STEPS + 1))
  np.testing.assert_allclose(curve, reference, rtol=2e-5, atol=2e-5)


def _wait_for_step(run_dir, step, proc, timeout=300):
  path = os.path.join(run_dir, "metrics.jsonl")
  t0 = time.time()
  while time.time() - t0 < timeout:
    if proc.poll() is not None:
      raise AssertionError(f"training exited early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
    if any(r.get("step", 0) >= step for r in read_jsonl(path)):
      return
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout}s")


def test_kill_and_sigterm_then_resume_reproduce_the_uninterrupted_run(tmp_path):
  steps = 14
  args = [f"steps={steps}", "checkpoint.every=2", "checkpoint.keep=3", "mesh.data=8"]
  ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
  r = subprocess.run(_cli(ref_dir, *args), env=_env(8), capture_output=True, text=True, timeout=420, cwd=tmp_path)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  ref, ref_steps = losses(ref_dir)
  assert ref_steps == list(range(1, steps + 1))

  # 1) SIGKILL after step 5 has been logged (a checkpoint of step 4, maybe 6 in flight)
  p = subprocess.Popen(_cli(run_dir, *args), env=_env(8), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, cwd=tmp_path)
  try:
    _wait_for_step(run_dir, 5, p)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
  finally:
    if p.poll() is None:
      p.kill()
  assert p.returncode == -signal.SIGKILL
  ckpts = os.listdir(run_dir / "checkpoints")
  finalized = sorted(int(n) for n in ckpts if n.isdigit())
  assert finalized and max(finalized) < steps
  # a torn (half-written) checkpoint of a later step must be ignored on restart
  torn = run_dir / "checkpoints" / f"{steps - 1}.orbax-checkpoint-tmp-1234"
  torn.mkdir()
  (torn / "state").mkdir()

  # 2) restart; SIGTERM once step 8 is logged: it saves that step and exits with 143
  p = subprocess.Popen(_cli(run_dir, *args), env=_env(8), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, cwd=tmp_path)
  try:
    _wait_for_step(run_dir, 8, p)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=300)
  finally:
    if p.poll() is None:
      p.kill()
  assert p.returncode == 143, out[-3000:]
  assert "resumed from step" in out and "SIGTERM" in out
  summary = json.loads((run_dir / "summary.json").read_text())
  stopped = summary["final_step"]
  assert summary["preempted"] and 8 <= stopped < steps, summary
  assert stopped in sorted(int(n) for n in os.listdir(run_dir / "checkpoints") if n.isdigit())

  # 3) restart to the end
  r = subprocess.run(_cli(run_dir, *args), env=_env(8), capture_output=True, text=True, timeout=420, cwd=tmp_path)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert f"resumed from step {stopped}" in r.stdout + r.stderr
  curve, got_steps = losses(run_dir)
  assert got_steps == list(range(1, steps + 1))
  np.testing.assert_array_equal(curve, ref)  # bit-for-bit: same data, state, RNG and program
