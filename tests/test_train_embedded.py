"""The embedded default's path end to end at a toy scale: Toy Earth generated and the tokenizer trained on
first use, the tiny Qwen2.5-VL trained, held-out loss, answers through the perception loop, exports."""

import glob
import json
import os

import numpy as np
import pytest

from zoomjax.train import checkpoint
from zoomjax.train.config import load_config
from zoomjax.train.logger import read_jsonl


@pytest.mark.slow
def test_embedded_pipeline_small(tmp_path):
  from zoomjax.train.trainer import train
  run = tmp_path / "emb"
  cfg = load_config("embedded", [f"run_dir={run}", f"data.root={tmp_path / 'data'}", "data.num_images=4",
                                 "steps=4", "log.every=1", "log.progress=false", "eval.every=2", "eval.batches=1",
                                 "eval.answers=2", "eval.max_new_tokens=16", "checkpoint.every=2"])
  summary = train(cfg)
  # data and tokenizer were made on first use
  assert os.path.isfile(tmp_path / "data" / "meta.json") and os.path.isfile(tmp_path / "data" / "tokenizer" / "tokenizer.json")
  rows = read_jsonl(str(run / "metrics.jsonl"))
  train_rows = [r for r in rows if "split" not in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss"]) and r["tokens"] > 0 for r in train_rows)
  evals = [r for r in rows if r.get("split") == "eval"]
  assert [r["step"] for r in evals] == [2, 4] and all(np.isfinite(r["loss"]) for r in evals)
  assert summary["eval"]["tokens"] > 0 and 0 <= summary["eval"]["token_accuracy"] <= 1
  # answers: the loop ran on 2 held-out test questions and was scored
  assert summary["answers"]["n"] == 2
  report = json.loads(open(summary["answers"]["path"]).read())
  assert report["rows"]["scored"] == 2
  # exports and run records
  params = checkpoint.load_params(summary["params"])
  assert set(params) == {"visual", "language"}
  info = json.loads(open(os.path.join(summary["params"], "info.json")).read())
  assert info["step"] == 4 and info["model_config"]["model_type"] == "qwen2_5_vl"
  assert load_config(str(run / "config.yaml")) == cfg
  assert glob.glob(str(run / "tb" / "events.out.tfevents.*"))
  assert sorted(int(n) for n in os.listdir(run / "checkpoints") if n.isdigit()) == [2, 4]
