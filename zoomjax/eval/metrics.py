"""The paper's metrics (SPEC §7) over scored questions: accuracy, APO IoU, stage-1 accuracy, crops.

* **accuracy**: fraction of questions judged correct (similarity >= 0.8, or the right letters), overall
  and per `type` / `category` / `higher_level`.
* **APO IoU**: mean IoU between the predicted and ground-truth box (same 1024 frame) over the questions
  whose ground truth has a box; a question without a valid predicted box scores 0 there. `apo="plain"`
  (default) is the plain IoU; `apo="window"` is the released `bbox_iou.py` variant — both boxes replaced
  by their `get_crop_area` windows (a 512 square centred on the box when a side is below 512, its
  corner clamped at 0, not shifted), then IoU.
* **stage-1 accuracy**: over the questions whose prediction carries `stage1_answer` (the answer given
  before zooming; equal to the final answer when no crop was made).
* **crops**: rate = fraction of questions with a predicted box; precision = fraction of those whose
  ground truth has a box; recall = fraction of ground-truth-box questions that got a predicted box.
* **mean turns / visual tokens** per question, over the predictions that report them.

Accuracies and IoUs are fractions in [0, 1]; a metric with nothing to average over is None.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Sequence

APO_MODES = ("plain", "window")


@dataclasses.dataclass
class Scored:
  """One question after judging."""
  question_id: str
  correct: bool
  score: float                           # judge similarity (open) or 1/0 (choice)
  type: str | None = None
  category: str | None = None
  higher_level: str | None = None
  gt_box: Sequence[float] | None = None    # 1024 frame
  pred_box: Sequence[float] | None = None  # 1024 frame; None: no crop requested
  stage1_correct: bool | None = None
  turns: float | None = None
  visual_tokens: float | None = None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """Plain IoU of two [x1, y1, x2, y2] boxes (empty or inverted boxes have area 0)."""
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])
  union = area(a) + area(b) - inter
  return inter / union if union > 0 else 0.0


def released_window(box: Sequence[float], min_size: int = 512) -> list[float]:
  """The released eval's `get_crop_area`: int-truncate; if a side < min_size, a min_size square centred
  on `(x1 + x2) // 2`, its top-left corner clamped at 0 (the far corner stays, so the square can shrink)."""
  x1, y1, x2, y2 = (int(v) for v in box)
  if x2 - x1 < min_size or y2 - y1 < min_size:
    nx1 = (x1 + x2) // 2 - min_size // 2
    ny1 = (y1 + y2) // 2 - min_size // 2
    nx2, ny2 = nx1 + min_size, ny1 + min_size
    return [float(max(0, nx1)), float(max(0, ny1)), float(nx2), float(ny2)]
  return [float(v) for v in box]


def question_iou(gt: Sequence[float], pred: Sequence[float] | None, apo: str = "plain") -> float:
  if pred is None:
    return 0.0
  if apo == "window":
    return box_iou(released_window(pred), released_window(gt))
  return box_iou(pred, gt)


def _mean(xs: list[float]) -> float | None:
  return sum(xs) / len(xs) if xs else None


def _group(records: Sequence[Scored], apo: str, with_iou: bool) -> dict:
  n = len(records)
  ious = [question_iou(r.gt_box, r.pred_box, apo) for r in records if r.gt_box is not None]
  out = {"accuracy": _mean([float(r.correct) for r in records]), "n": n,
         "n_correct": sum(r.correct for r in records)}
  if with_iou:
    out["apo_iou"] = _mean(ious)
    out["n_with_gt_box"] = len(ious)
  return out


def _by(records: Sequence[Scored], key: str, apo: str, with_iou: bool = False) -> dict:
  groups: dict[str, list[Scored]] = collections.defaultdict(list)
  for r in records:
    v = getattr(r, key)
    if v is not None:
      groups[str(v)].append(r)
  return {k: _group(groups[k], apo, with_iou) for k in sorted(groups)}


def compute(records: Iterable[Scored], apo: str = "plain") -> dict:
  """Every metric of the module docstring -> a JSON-ready dict (see `zoomjax.eval.score`)."""
  if apo not in APO_MODES:
    raise ValueError(f"apo must be one of {APO_MODES}, got {apo!r}")
  records = list(records)
  overall = _group(records, apo, with_iou=True)
  stage1 = [r for r in records if r.stage1_correct is not None]
  cropped = [r for r in records if r.pred_box is not None]
  with_gt = [r for r in records if r.gt_box is not None]
  crop = {
      "rate": _mean([float(r.pred_box is not None) for r in records]),
      "precision": _mean([float(r.gt_box is not None) for r in cropped]),
      "recall": _mean([float(r.pred_box is not None) for r in with_gt]),
      "n_cropped": len(cropped), "n_gt_box": len(with_gt),
  }
  return {
      "overall": overall,
      "by_type": _by(records, "type", apo, with_iou=True),
      "by_category": _by(records, "category", apo),
      "by_higher_level": _by(records, "higher_level", apo),
      "stage1": {"accuracy": _mean([float(r.stage1_correct) for r in stage1]), "n": len(stage1),
                 "final_accuracy_same_questions": _mean([float(r.correct) for r in stage1])},
      "crop": crop,
      "mean_turns": _mean([float(r.turns) for r in records if r.turns is not None]),
      "mean_visual_tokens": _mean([float(r.visual_tokens) for r in records
                                   if r.visual_tokens is not None]),
  }
