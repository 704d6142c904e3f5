"""GRPO end to end on Toy Earth through `zoomjax.train.train`: rollouts, rewards, update, evaluation,
export, summary; and a stopped run that is restarted repeats the uninterrupted run's metrics exactly."""

import json
import os

import pytest

from zoomjax.train.config import load_config
from zoomjax.train.logger import read_jsonl
from zoomjax.train.trainer import train

TIMING = ("time_rollout_s", "time_logprob_s", "step_time_s", "tokens_per_s", "mfu", "tflops_per_s")


def _cfg(tmp_path, run, steps, **extra):
  over = ["then=null", f"run_dir={tmp_path / run}", f"data.root={tmp_path / 'data'}", "data.num_images=4", "data.seq_len=1024",
          "algo=grpo", f"steps={steps}", "data.batch_size=8", "grpo.group_size=4", "grpo.max_new_tokens=24",
          "grpo.beta=0.04", "optim.schedule=constant", "optim.warmup_steps=0", "log.every=1", "log.progress=false",
          "checkpoint.every=1", "checkpoint.async_save=false", "eval.every=0", "eval.answers=2",
          "eval.max_new_tokens=16", "eval.batches=0"]
  return load_config("embedded", over + [f"{k}={v}" for k, v in extra.items()])


def _rows(path):
  rows = [r for r in read_jsonl(str(path / "metrics.jsonl")) if r.get("split") != "eval"]
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.slow
def test_grpo_runs_exports_and_resumes_exactly(tmp_path):
  full = train(_cfg(tmp_path, "full", 3))
  assert full["final_step"] == 3 and not full["preempted"]
  rows = _rows(tmp_path / "full")
  assert [r["step"] for r in rows] == [1, 2, 3]
  for key in ("reward_total", "reward_iou", "reward_region_guided", "reward_answer", "reward_format", "accuracy",
              "crop_rate", "apo_iou", "kl", "clip_fraction", "entropy", "response_tokens", "zero_variance_fraction",
              "overlong_fraction", "loss", "grad_norm"):
    assert key in rows[0], key
  assert all(r["response_tokens"] > 0 for r in rows)
  summary = json.loads((tmp_path / "full" / "summary.json").read_text())
  assert "grpo" in summary["stages"] and summary["stages"]["grpo"]["final_step"] == 3
  assert summary["stages"]["grpo"]["answers"]["n"] == 2
  hf_dir = tmp_path / "full" / "hf"
  assert (hf_dir / "config.json").is_file() and (hf_dir / "tokenizer.json").is_file()
  assert json.loads((hf_dir / "zoomjax_infer.json").read_text())["protocol"] == "released"
  # stop after 2 steps, restart to 3: the same rollouts (prompt order, sampling seeds) and the same update
  part = train(_cfg(tmp_path, "part", 2))
  assert part["final_step"] == 2
  resumed = train(_cfg(tmp_path, "part", 3))
  assert resumed["final_step"] == 3
  assert _rows(tmp_path / "part") == rows
