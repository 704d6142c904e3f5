"""The embedded default's path end to end at a toy scale (what `python -m zoomjax.train` runs, few steps):
Toy Earth generated and the tokenizer trained on first use, SFT (held-out loss, answers through the
perception loop), then GRPO from the SFT export (`then:`), exports, the zoom-off ablation, the image-blind
baseline, results.md and the figures. It checks the wiring, not the accuracy (BENCHMARKS.md has that)."""

import glob
import json
import os

import _tb
import jax
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
                                 "eval.answers=2", "eval.max_new_tokens=16", "checkpoint.every=2",
                                 "then.steps=2", "then.data.batch_size=8", "then.grpo.max_new_tokens=16",
                                 "then.eval.every=0", "then.log.every=1", "then.checkpoint.every=1"])
  summary = train(cfg)
  # the chain: GRPO ran second, from the SFT export, with its own checkpoints; everything under `stages`
  stages = json.loads((run / "summary.json").read_text())["stages"]
  assert list(stages) == ["sft", "grpo"] and stages["sft"]["final_step"] == 4 and stages["grpo"]["final_step"] == 2
  assert summary["stage"] == "grpo" and stages["grpo"]["answers"]["n"] == 2
  assert sorted(int(n) for n in os.listdir(run / "checkpoints_grpo") if n.isdigit()) == [1, 2]
  grpo_rows = [r for r in read_jsonl(str(run / "metrics.jsonl")) if r.get("stage") == "grpo" and "split" not in r]
  assert [r["step"] for r in grpo_rows] == [1, 2] and all("reward_total" in r for r in grpo_rows)
  infer = json.loads((run / "hf" / "zoomjax_infer.json").read_text())
  assert infer["version"] == "released-toy-v1" and infer["protocol"] == "released"
  # the outcome: zoom off on the same 2 questions, the blind baseline, the table and the figures
  assert summary["zoom_off"]["n"] == 2 and summary["blind"]["overall"]["n"] == 2
  table = (run / "results.md").read_text()
  assert "after sft (step 4)" in table and "after grpo (step 2)" in table and "zoom off" in table
  for png in ("curves.png", "zoom.png"):
    with open(run / png, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n", png
  summary = stages["sft"]
  # data and tokenizer were made on first use
  assert os.path.isfile(tmp_path / "data" / "meta.json") and os.path.isfile(tmp_path / "data" / "tokenizer" / "tokenizer.json")
  rows = [r for r in read_jsonl(str(run / "metrics.jsonl")) if r.get("stage") == "sft"]
  train_rows = [r for r in rows if "split" not in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss"]) and r["tokens"] > 0 for r in train_rows)
  evals = [r for r in rows if r.get("split") == "eval" and "loss" in r]
  assert [r["step"] for r in evals] == [2, 4] and all(np.isfinite(r["loss"]) for r in evals)
  assert summary["eval"]["tokens"] > 0 and 0 <= summary["eval"]["token_accuracy"] <= 1
  # answers: the loop ran on 2 held-out test questions and was scored
  assert summary["answers"]["n"] == 2
  report = json.loads(open(summary["answers"]["path"]).read())
  assert report["rows"]["scored"] == 2
  # exports and run records
  params = checkpoint.load_params(str(run / "params"))   # the last stage's (GRPO's) export
  assert set(params) == {"visual", "language"}
  info = json.loads(open(os.path.join(run / "params", "info.json")).read())
  assert info["step"] == 2 and info["model_config"]["model_type"] == "qwen2_5_vl"
  assert load_config(str(run / "config.yaml")) == cfg and load_config(str(run / "config_grpo.yaml")).algo == "grpo"
  assert glob.glob(str(run / "tb" / "sft" / "events.out.tfevents.*"))
  assert glob.glob(str(run / "tb" / "grpo" / "events.out.tfevents.*"))
  # GRPO's final held-out evaluation (then.eval.every=0: the only one) drew its 2 questions into TensorBoard
  pics = _tb.images(str(run / "tb" / "grpo"))
  assert sorted(pics) == [("eval/zoom", 2)]
  assert all(p.ndim == 3 and p.shape[0] > 2 * 200 and p.shape[2] == 3 for p in pics.values())
  assert sorted(int(n) for n in os.listdir(run / "checkpoints") if n.isdigit()) == [2, 4]
  _export_matches_transformers(run, tmp_path / "data")


def _export_matches_transformers(run, data):
  """The run's `hf/` export (the last stage's weights, the trained tokenizer) loads in transformers, whose
  logits on a real held-out Toy Earth prompt (toy protocol, the view's image tokens) equal zoomjax's."""
  import transformers
  from PIL import Image

  from zoomjax import hf
  from zoomjax.model import forward, reference as ref_lib
  from zoomjax.processing import num_image_tokens, preprocess_image
  from zoomjax.protocol import templates as P
  from zoomjax.train import checkpoint

  cfg, params = hf.load(run / "hf")
  orbax = checkpoint.load_params(str(run / "params"))
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()),
                                                       params, orbax))
  tok = transformers.AutoTokenizer.from_pretrained(run / "hf", local_files_only=True)
  q = json.loads((data / "test.jsonl").read_text().splitlines()[5])
  view = Image.open(data / "images" / q["image_name"]).convert("RGB").resize((512, 512))
  pixels, grid = preprocess_image(view, max_pixels=224 * 224)
  prompt = P.render_prompt(q["question"], "released", version=P.TOY_VERSION)
  ids, _ = P.encode_segments(prompt, lambda s: tok.encode(s, add_special_tokens=False),
                             [num_image_tokens(grid)], tok.convert_tokens_to_ids(P.IMAGE_PAD))
  ids, grid = np.asarray([ids]), np.asarray([grid])
  model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(run / "hf", attn_implementation="eager")
  ref = ref_lib.reference_logits(model.eval(), cfg, ids, None, pixels, grid)
  ours = np.asarray(forward(cfg, params, ids, np.asarray(pixels), grid))
  assert ref.shape == ours.shape and ids.shape[1] > 100
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
