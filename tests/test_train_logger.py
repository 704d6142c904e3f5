"""MetricsLogger: scalars to metrics.jsonl and TensorBoard, pictures to TensorBoard only."""

import json

import _tb
import numpy as np

from zoomjax.train.logger import MetricsLogger, read_jsonl


def test_scalars_and_images(tmp_path):
  rs = np.random.RandomState(0)
  pic = rs.randint(0, 256, (20, 30, 3)).astype(np.uint8)
  log = MetricsLogger(str(tmp_path), total_steps=2, progress=False, stage="grpo")
  log.log(1, {"loss": np.float32(0.5)})
  log.log(2, {"accuracy": 0.25, "images": {"zoom": pic}}, split="eval")
  log.close()
  rows = read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert rows == [{"step": 1, "stage": "grpo", "loss": 0.5},
                  {"step": 2, "stage": "grpo", "split": "eval", "accuracy": 0.25}]
  json.dumps(rows)
  got = _tb.images(str(tmp_path / "tb" / "grpo"))
  assert list(got) == [("eval/zoom", 2)]
  np.testing.assert_array_equal(got[("eval/zoom", 2)], pic)       # PNG: lossless
  scalars = {(v.tag, e.step): v.simple_value for e in _tb.events(str(tmp_path / "tb" / "grpo"))
             for v in e.summary.value if v.HasField("simple_value")}
  assert scalars == {("train/loss", 1): 0.5, ("eval/accuracy", 2): 0.25}
