"""The fault matrix (SPEC §9) of `python -m zoomjax.train`, each case through the real CLI as a subprocess
on a tiny synthetic run: exit codes, one `error:` line naming the key, no traceback, nothing lost
(interrupted work saved, a torn checkpoint skipped but kept, nothing exported from a failed run)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import _cli
from zoomjax.train.logger import read_jsonl

TINY = ["synthetic_tiny", "log.every=1", "data.batch_size=2", "data.seq_len=32", "data.num_images=8",
        "optim.warmup_steps=0", "log.progress=false", "log.tensorboard=false", "eval.batches=0",
        "checkpoint.export_params=false", "checkpoint.export_hf=false", "model.text.num_hidden_layers=1",
        "model.vision.depth=2", "mesh.devices=1"]


def train(run_dir, *overrides, timeout=900):
  return _cli.run("zoomjax.train", *TINY, f"run_dir={run_dir}", *overrides, timeout=timeout)


def train_steps(run_dir):
  return [r["step"] for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("split") is None]


def ckpt_steps(run_dir):
  d = os.path.join(run_dir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """Two steps, a checkpoint after each: the run the checkpoint cases start from (copied, never edited)."""
  run_dir = tmp_path_factory.mktemp("train") / "base"
  r = train(run_dir, "steps=2", "checkpoint.every=1")
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
  assert ckpt_steps(run_dir) == [1, 2]
  return run_dir


def _copy(base_run, tmp_path):
  run_dir = tmp_path / "run"
  shutil.copytree(base_run, run_dir)
  return run_dir


# ------------------------------------------------------------------------------------- config and paths
def test_unwritable_run_dir(tmp_path):
  (tmp_path / "afile").write_text("")
  _cli.error_line(train(tmp_path / "afile" / "run"), 2, "run_dir", str(tmp_path / "afile" / "run"))


def test_corrupt_toy_earth_meta_json_is_named(tmp_path):
  root = tmp_path / "toy"
  root.mkdir()
  (root / "meta.json").write_text('{"seed": 0, "num_im')
  r = _cli.run("zoomjax.train", "embedded", f"run_dir={tmp_path / 'run'}", f"data.root={root}", "steps=1")
  _cli.error_line(r, 2, str(root / "meta.json"))


@pytest.mark.parametrize("value", ["inf", ".inf", "nan", "-inf"])
def test_non_finite_config_values_are_refused(tmp_path, value):
  """Finding 6: `optim.lr=.inf` was accepted and turned the params into NaN."""
  _cli.error_line(train(tmp_path / "run", f"optim.lr={value}"), 2, "optim.lr", "finite")
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_periodic_checkpoints_are_on_by_default_by_time():
  """Finding 5: with the default config an interrupted run loses minutes, not the run."""
  r = _cli.run("zoomjax.train", "--print-config")
  assert r.returncode == 0, r.stderr
  import yaml
  ck = yaml.safe_load(r.stdout)["checkpoint"]
  timed = {k: v for k, v in ck.items() if "minute" in k or k.endswith(("_s", "seconds"))}
  assert timed and all(0 < float(v) <= 30 for v in timed.values()), ck


# ------------------------------------------------------------------------------------------ no silent zero
def test_training_on_zero_tokens_fails_before_step_1(tmp_path):
  """Finding 2: with data.seq_len below every example's length all examples were skipped and the run
  'trained' loss 0.0000 -> 0.0000, exit 0, exporting the untrained params."""
  run_dir = tmp_path / "run"
  r = train(run_dir, "steps=3", "data.seq_len=8", "checkpoint.export_params=true")
  line = _cli.error_line(r, 2, "data.seq_len")
  assert any(ch.isdigit() for ch in line)              # says how many tokens the examples need
  assert not train_steps(run_dir) if os.path.exists(run_dir / "metrics.jsonl") else True
  assert not os.path.exists(run_dir / "params") and not os.path.exists(run_dir / "hf")


def test_non_finite_params_are_not_exported(tmp_path):
  """Finding 6: a learning rate that blows the params up must not export NaN/inf params as a model."""
  run_dir = tmp_path / "run"
  r = train(run_dir, "steps=3", "optim.lr=1e30", "optim.clip_norm=0", "checkpoint.export_hf=true")
  if r.returncode == 0:       # the non-finite updates were skipped: whatever was exported is finite
    import numpy as np
    from safetensors.numpy import load_file
    tensors = load_file(str(run_dir / "hf" / "model.safetensors"))
    assert all(np.isfinite(t).all() for t in tensors.values())
  else:
    _cli.error_line(r, 1, "finite")
    assert not os.path.exists(run_dir / "hf")


# ------------------------------------------------------------------------------------------ interruption
def test_sigint_saves_and_exits_130_then_resumes(tmp_path):
  """Finding 5: Ctrl-C printed a traceback and saved nothing."""
  run_dir = tmp_path / "run"
  cmd = [sys.executable, "-m", "zoomjax.train", *TINY, f"run_dir={run_dir}", "steps=500", "checkpoint.every=0"]
  p = subprocess.Popen(cmd, env=_cli.env(), cwd=_cli.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
  try:
    t0 = time.time()
    while time.time() - t0 < 600 and p.poll() is None:
      if os.path.exists(run_dir / "metrics.jsonl") and len(train_steps(run_dir)) >= 2:
        break
      time.sleep(0.2)
    assert p.poll() is None, p.communicate()[1][-3000:]
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
  finally:
    if p.poll() is None:
      p.kill()
  assert p.returncode == 130, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  saved = ckpt_steps(run_dir)
  assert saved and saved[-1] == train_steps(run_dir)[-1], (saved, train_steps(run_dir))
  last = saved[-1]
  r = train(run_dir, f"steps={last + 1}", "checkpoint.every=0")
  assert r.returncode == 0, r.stderr[-3000:]
  assert train_steps(run_dir)[-1] == last + 1 and train_steps(run_dir).count(last + 1) == 1


# ------------------------------------------------------------------------------------------- checkpoints
def test_torn_newest_checkpoint_is_reported_kept_and_skipped(base_run, tmp_path):
  """Finding 3: a torn newest checkpoint made every restart crash with a 155-line orbax traceback."""
  run_dir = _copy(base_run, tmp_path)
  for root, _, files in os.walk(run_dir / "checkpoints" / "2" / "state"):
    for f in files:
      with open(os.path.join(root, f), "r+b") as fh:
        fh.truncate(0)
  r = train(run_dir, "steps=3", "checkpoint.every=1")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Traceback" not in r.stderr
  warned = [l for l in (r.stdout + r.stderr).splitlines() if "checkpoint step 2" in l and "unreadable" in l]
  assert warned, r.stdout[-2000:] + r.stderr[-2000:]
  aside = run_dir / "checkpoints.corrupt" / "2"
  assert aside.is_dir() and (aside / "state").is_dir()           # moved aside, not deleted
  assert train_steps(run_dir)[-2:] == [2, 3]                      # resumed from step 1: step 2 redone
  assert ckpt_steps(run_dir)[-1] == 3


def test_checkpoint_of_another_model_is_one_line(base_run, tmp_path):
  """Finding 7: a run_dir holding another model shape's checkpoint gave 171 lines of traceback."""
  run_dir = _copy(base_run, tmp_path)
  r = train(run_dir, "steps=3", "model.text.num_hidden_layers=2")
  _cli.error_line(r, 2, "checkpoint step 2", "run_dir")
  assert ckpt_steps(run_dir) == [1, 2]                            # nothing moved or deleted
  assert not os.path.exists(run_dir / "checkpoints.corrupt")
