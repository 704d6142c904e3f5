"""Markdown rendering of a score report, laid out like the paper's LRS-GRO table.

    | Model | Global | Region | Object | Avg | APO IoU |

in percent with two decimals. "Avg" is the accuracy over all questions (question-weighted), which is
how the paper's Avg column relates to the three levels (ZoomEarth-3B: 63.09 / 46.11 / 51.80 -> 53.76,
not their plain mean 53.67). Other benchmarks get `| Model | Accuracy | n |`. The model's cell says how
many of the annotated questions the numbers cover ("run (700/6622 questions)"), and a partial result
gets a warning line above the table. Per-category and per-higher-level accuracies, stage-1 accuracy,
crop statistics and skipped-row counts follow.
"""

from __future__ import annotations

import os

PAPER_ZOOMEARTH_3B = {"global": 63.09, "region": 46.11, "object": 51.80, "avg": 53.76, "apo": 34.39}


def _pct(x) -> str:
  return "–" if x is None else f"{100.0 * x:.2f}"


def _num(x, digits=2) -> str:
  return "–" if x is None else f"{x:.{digits}f}"


def markdown(report: dict, name: str | None = None) -> str:
  settings = report.get("settings", {})
  name = name or os.path.splitext(os.path.basename(settings.get("predictions", "model")))[0]
  bench = report.get("benchmark", "lrs_gro")
  ov = report["overall"]
  lines = [f"# {bench} — {name}", ""]
  cov = report.get("coverage")
  if cov is not None:
    rows = report.get("rows", {})
    if cov["scored"] < cov["annotated"]:
      lines += [f"**Partial result: {cov['scored']} of {cov['annotated']} annotated questions scored** "
                f"({rows.get('missing', 0)} without a prediction, {rows.get('errors', 0)} failed, "
                f"{rows.get('annotations_skipped', 0)} annotation rows rejected); not comparable with a "
                "full run.", ""]
    name = f"{name} ({cov['scored']}/{cov['annotated']} questions)"
  if bench == "lrs_gro":
    t = report.get("by_type", {})
    acc = lambda k: t.get(k, {}).get("accuracy")
    lines += ["| Model | Global | Region | Object | Avg | APO IoU |",
              "|---|---:|---:|---:|---:|---:|",
              f"| {name} | {_pct(acc('global'))} | {_pct(acc('region'))} | {_pct(acc('object'))} "
              f"| {_pct(ov.get('accuracy'))} | {_pct(ov.get('apo_iou'))} |"]
    p = PAPER_ZOOMEARTH_3B
    lines += [f"| ZoomEarth-3B (paper, test split) | {p['global']:.2f} | {p['region']:.2f} "
              f"| {p['object']:.2f} | {p['avg']:.2f} | {p['apo']:.2f} |"]
  else:
    lines += ["| Model | Accuracy | n |", "|---|---:|---:|",
              f"| {name} | {_pct(ov.get('accuracy'))} | {ov.get('n', 0)} |"]
    if ov.get("apo_iou") is not None:
      lines += ["", f"APO IoU: {_pct(ov['apo_iou'])} over {ov.get('n_with_gt_box', 0)} boxed questions."]
  lines += ["", f"Accuracy in %, n = {ov.get('n', 0)} questions; APO IoU over "
            f"{ov.get('n_with_gt_box', 0)} questions with a ground-truth box "
            f"({settings.get('apo', 'plain')} IoU, 1024 frame); judge rule "
            f"`{settings.get('judge_rule', 'extended')}`, threshold {settings.get('threshold', 0.8)}."]
  for title, key in (("Per category", "by_category"), ("Per higher level", "by_higher_level")):
    groups = report.get(key) or {}
    if groups:
      lines += ["", f"## {title}", "", "| | Accuracy | n |", "|---|---:|---:|"]
      lines += [f"| {k} | {_pct(v['accuracy'])} | {v['n']} |" for k, v in groups.items()]
  s1, crop = report.get("stage1") or {}, report.get("crop") or {}
  lines += ["", "## Perception", "", "| | value |", "|---|---:|",
            f"| stage-1 accuracy (n={s1.get('n', 0)}) | {_pct(s1.get('accuracy'))} |",
            f"| final accuracy, same questions | {_pct(s1.get('final_accuracy_same_questions'))} |",
            f"| crop rate | {_pct(crop.get('rate'))} |",
            f"| crop precision (GT has a box) | {_pct(crop.get('precision'))} |",
            f"| crop recall | {_pct(crop.get('recall'))} |",
            f"| mean turns | {_num(report.get('mean_turns'))} |",
            f"| mean visual tokens | {_num(report.get('mean_visual_tokens'), 1)} |"]
  rows = report.get("rows", {})
  lines += ["", f"Rows: {rows.get('predictions', 0)} prediction lines, {rows.get('scored', 0)} scored, "
            f"{rows.get('skipped', 0)} skipped as malformed, {rows.get('missing', 0)} questions without "
            f"a prediction, {rows.get('errors', 0)} failed, {rows.get('annotations_skipped', 0)} "
            "annotation rows skipped.", ""]
  return "\n".join(lines)
