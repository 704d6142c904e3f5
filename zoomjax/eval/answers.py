"""Answer accuracy of a model on LRS-GRO-format questions, through the perception loop.

    loop_answer_fn(generator, tokenizer, image_dir, loop_cfg, model_cfg) -> answer_fn
    report = answer_eval(generator, tokenizer, rows, image_dir, loop_cfg, out_dir)
    panels = zoom_panels(generator, tokenizer, annotations_path, image_dir, loop_cfg)  # -> figures.zoom_sheet

`loop_answer_fn` is the `answer_fn` of `zoomjax.eval.run.run`: greedy rollouts of a batch of questions,
one predictions row each (`prediction_row`: answer, box in the 1024 frame, turns, visual tokens).
`answer_eval` is what training runs call on held-out questions: it writes
`OUT_DIR/{annotations,predictions}.jsonl` and `OUT_DIR/report.json` (the `zoomjax.eval score` report) and
returns a digest `{"accuracy", "apo_iou", "crop_rate", "n", "by_type", "path"}`. `zoom_panels` answers a
few of those questions again and keeps what a picture of the zoom needs (view, boxes, crops, truth).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from zoomjax.eval import loaders, run as eval_run, score as eval_score
from zoomjax.eval.loaders import GT_FRAME, Question
from zoomjax.rollout.loop import LoopConfig, Request, rollout
from zoomjax.rollout.tools import SceneImage


def question_image(image_dir: str, q: Question) -> str:
  """The image path of a question (its first image when it names several)."""
  image = q.image[0] if isinstance(q.image, list) else q.image
  if not image:
    raise ValueError(f"question {q.question_id} names no image")
  return os.path.join(image_dir, image)


def loop_answer_fn(generator, tokenizer, image_dir: str, loop_cfg: LoopConfig, model_cfg, seed: int = 0):
  """An `answer_fn(questions) -> rows` running `generator` through the perception loop (greedy)."""

  def answer_fn(questions: Sequence[Question]) -> list[dict]:
    reqs = [Request(question_image(image_dir, q), loaders.prompt_text(q)) for q in questions]
    trajs = rollout(generator, tokenizer, reqs, loop_cfg, seed=seed)
    return [eval_run.prediction_row(q, t, model_cfg) for q, t in zip(questions, trajs)]

  return answer_fn


def digest(report: dict, path: str) -> dict:
  """The headline numbers of a `zoomjax.eval score` report (what summaries and logs keep)."""
  o = report["overall"]
  return {"accuracy": o.get("accuracy"), "apo_iou": o.get("apo_iou"),
          "crop_rate": report.get("crop", {}).get("rate"), "n": o.get("n"), "by_type": {k: v.get("accuracy") for k, v in report.get("by_type", {}).items()},
          "path": path}


def flat(d: dict) -> dict:
  """A digest as flat scalars (what a metrics row holds): accuracy, apo_iou, crop_rate, n, accuracy_<type>."""
  out = {k: d[k] for k in ("accuracy", "apo_iou", "crop_rate", "n") if d.get(k) is not None}
  out.update({f"accuracy_{k}": v for k, v in (d.get("by_type") or {}).items() if v is not None})
  return out


def answer_eval(generator, tokenizer, rows: Sequence[dict], image_dir: str, loop_cfg: LoopConfig, out_dir: str,
                *, model_cfg, batch_size: int = 16, progress: bool = False) -> dict:
  """Answers `rows` (LRS-GRO annotation dicts) and scores them; returns `digest(report)` ({} if no rows).

  Predictions are written afresh (an earlier file in `out_dir` is replaced)."""
  if not rows:
    return {}
  os.makedirs(out_dir, exist_ok=True)
  ann = os.path.join(out_dir, "annotations.jsonl")
  with open(ann, "w") as fh:
    fh.writelines(json.dumps(r) + "\n" for r in rows)
  questions, _ = loaders.load(ann, "lrs_gro")
  preds = os.path.join(out_dir, "predictions.jsonl")
  if os.path.exists(preds):
    os.remove(preds)
  answer_fn = loop_answer_fn(generator, tokenizer, image_dir, loop_cfg, model_cfg)
  eval_run.run(questions, answer_fn, preds, batch_size=batch_size, progress=progress)
  report = eval_score.score_files(preds, ann, "lrs_gro")
  path = os.path.join(out_dir, "report.json")
  eval_score.write_report(report, path)
  return digest(report, path)


ZOOM_PANELS = 4    # questions in a zoom picture (`zoom.png`, the GRPO TensorBoard image)


def zoom_panels(generator, tokenizer, annotations: str, image_dir: str, loop_cfg: LoopConfig,
                n: int = ZOOM_PANELS) -> list[dict]:
  """Up to `n` questions of an LRS-GRO annotation file answered by the loop, as `figures.zoom_sheet`
  panels: region and object questions (they have a GT box) alternately first, then any others."""
  questions, _ = loaders.load(annotations, "lrs_gro")
  boxed = [[q for q in questions if q.bbox and q.type == t] for t in ("region", "object")]
  picked = [q for pair in zip(*boxed) for q in pair]
  picked = (picked + [q for q in questions if q not in picked])[:max(int(n), 0)]
  if not picked:
    return []
  paths = [question_image(image_dir, q) for q in picked]
  trajs = rollout(generator, tokenizer, [Request(p, loaders.prompt_text(q)) for p, q in zip(paths, picked)],
                  loop_cfg)
  panels = []
  for q, t, path in zip(picked, trajs, paths):
    s = max(t.info["view_size"]) / GT_FRAME
    panels.append({"view": SceneImage.open(path, long_side=loop_cfg.long_side).view,
                   "boxes_global": [b for b in t.boxes_global if b is not None], "crops": t.crops,
                   "answer": t.answer, "question": q.question, "truth": q.ground_truth,
                   "gt_box_global": [v * s for v in q.bbox] if q.bbox else None})
  return panels
