"""What the end of a training run writes beside its export: the zoom-off ablation, the image-blind baseline,
a paper-style table and the figures.

    out = write_outcome(cfg, summary)   # after the last stage; {} when the run has no answer evaluation

On the held-out questions the last stage answered (`answers/.../annotations.jsonl`):
* **zoom off** (SPEC §8): the export (`RUN_DIR/hf`, its `zoomjax_infer.json` defaults) answers again with
  every crop request answered by the global view (`answers_zoom_off/`): only the zoomed pixels differ.
* **image-blind baseline**: each question template answered with its most frequent training answer
  (`toy_earth.majority_baseline`), on the same questions (needs the data root's `sft.jsonl`).
* `RUN_DIR/results.md`: one row per stage (`summary.json` `stages`), then the ablation and the baseline:
  overall / global / region / object accuracy, APO IoU and crop rate.
* `RUN_DIR/curves.png`: `metrics.jsonl` of every stage (`eval.figures.learning_curves`).
* `RUN_DIR/zoom.png`: a few held-out region / object questions answered by the export, each with the
  model's box and crop beside the ground-truth box (`eval.figures.zoom_sheet`).
Process 0 only; nothing here changes the trained model or the stages' numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from zoomjax import hf
from zoomjax.data import toy_earth
from zoomjax.eval import figures
from zoomjax.eval.answers import answer_eval, zoom_panels
from zoomjax.rollout.generate import Generator
from zoomjax.rollout.loop import LoopConfig
from zoomjax.train.config import TrainConfig
from zoomjax.train.logger import read_jsonl

LEVELS = ("global", "region", "object")


def write_outcome(cfg: TrainConfig, summary: dict) -> dict:
  """Ablation, baseline, table and figures of the run in `cfg.run_dir` (see the module docstring)."""
  run_dir = os.path.abspath(cfg.run_dir)
  answers = summary.get("answers") or {}
  if jax.process_index() != 0 or not answers.get("path") or not summary.get("hf"):
    return {}
  ann = os.path.join(os.path.dirname(answers["path"]), "annotations.jsonl")
  root = summary.get("data_root") or os.path.abspath(cfg.path(cfg.data.root))
  image_dir = os.path.join(root, cfg.data.image_dir or "images")
  with open(ann) as fh:
    rows = [json.loads(line) for line in fh if line.strip()]
  model_cfg, params = hf.load(summary["hf"])
  tokenizer = hf.load_tokenizer(summary["hf"])
  gen = Generator(model_cfg, params)
  d = hf.inference_defaults(summary["hf"])
  loop = LoopConfig(**d, batch_size=cfg.eval.answer_batch)   # d: the INFER_DEFAULT_KEYS the export gives
  out: dict[str, Any] = {}
  out["zoom_off"] = answer_eval(gen, tokenizer, rows, image_dir, dataclasses.replace(loop, zoom=False),
                                os.path.join(run_dir, "answers_zoom_off"), model_cfg=model_cfg,
                                batch_size=cfg.eval.answer_batch)
  sft_file = os.path.join(root, "sft.jsonl")
  if os.path.isfile(sft_file):
    with open(sft_file) as fh:
      train_rows = [json.loads(line) for line in fh if line.strip()]
    out["blind"] = toy_earth.majority_baseline(train_rows, rows)
  out["results"] = _table(run_dir, out)
  metrics = os.path.join(run_dir, "metrics.jsonl")
  if os.path.isfile(metrics):
    out["curves"] = figures.learning_curves(read_jsonl(metrics), os.path.join(run_dir, "curves.png"),
                                            title=os.path.basename(run_dir))
  panels = zoom_panels(gen, tokenizer, ann, image_dir, loop)
  out["zoom_png"] = figures.zoom_sheet(panels, os.path.join(run_dir, "zoom.png")) if panels else None
  return out


def _row(name: str, d: dict) -> str:
  by = d.get("by_type") or {}
  cells = [d.get("accuracy")] + [by.get(k) for k in LEVELS] + [d.get("apo_iou"), d.get("crop_rate")]
  return f"| {name} | " + " | ".join("" if v is None else f"{v:.3f}" for v in cells) + f" | {d.get('n', '')} |"


def _table(run_dir: str, out: dict) -> str:
  """`results.md`: the stages' held-out answers, then zoom off and the image-blind baseline."""
  with open(os.path.join(run_dir, "summary.json")) as fh:
    stages = json.load(fh).get("stages", {})
  lines = ["| model | overall | global | region | object | APO IoU | crop rate | n |", "|---" * 8 + "|"]
  for name, s in stages.items():
    if s.get("answers"):
      lines.append(_row(f"after {name} (step {s.get('final_step')})", s["answers"]))
  lines.append(_row("last stage, zoom off (crop = global view)", out["zoom_off"]))
  if out.get("blind"):
    b = out["blind"]
    lines.append(_row("image-blind baseline (majority answer per template)",
                      {"accuracy": b.get("overall", {}).get("accuracy"), "n": b.get("overall", {}).get("n"),
                       "by_type": {k: b[k]["accuracy"] for k in LEVELS if k in b}}))
  path = os.path.join(run_dir, "results.md")
  with open(path, "w") as fh:
    fh.write("Held-out answers (`zoomjax.eval score` metrics; APO IoU on questions with a GT box)\n\n")
    fh.write("\n".join(lines) + "\n")
  return path
