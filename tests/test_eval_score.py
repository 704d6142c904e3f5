"""`python -m zoomjax.eval score` on the real LRS-GRO RL split with a seeded synthetic predictions file,
checked against an independent computation of accuracy, APO IoU and the crop statistics."""
import json
import random
import subprocess
import sys

import pytest

from zoomjax.eval import score as score_mod

from _data import REPO, rl_jsonl


def ref_iou(a, b):
  """Independent plain IoU (written out longhand)."""
  ax1, ay1, ax2, ay2 = a
  bx1, by1, bx2, by2 = b
  w = min(ax2, bx2) - max(ax1, bx1)
  h = min(ay2, by2) - max(ay1, by1)
  inter = w * h if w > 0 and h > 0 else 0.0
  union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
  return inter / union


def make_predictions(rows, path, seed=0, n=700):
  """Writes a predictions file; returns what an independent scorer must conclude."""
  rng = random.Random(seed)
  sample = rng.sample(rows, n)
  lines, truth = [], {}
  for i, r in enumerate(sample):
    right = rng.random() < 0.55
    gt = r["ground_truth"]
    if right:
      answer = rng.choice([gt, gt.upper(), gt + ".", f"  {gt} "])
    else:
      answer = f"qzxv{i}"                      # not a word: similarity 0
    u = rng.random()
    if r["bbox"]:
      x1, y1, x2, y2 = r["bbox"]
      if u < 0.4:
        box = [x1, y1, x2, y2]
      elif u < 0.7:
        dx, dy = rng.uniform(-60, 60), rng.uniform(-60, 60)
        box = [x1 + dx, y1 + dy, x2 + dx, y2 + dy]
      else:
        box = None
    else:
      box = [100.0, 100.0, 300.0, 260.0] if u < 0.2 else None
    row = {"question_id": r["question_id"], "answer": answer}
    if box is not None or rng.random() < 0.5:    # absent and null both mean "no crop"
      row["bbox"] = box
    s1 = None
    if i % 5 == 0:
      s1 = rng.random() < 0.3
      row["stage1_answer"] = gt if s1 else "qzxv"
      row["turns"] = 2
      row["visual_tokens"] = 400
    lines.append(json.dumps(row))
    truth[r["question_id"]] = dict(type=r["type"], correct=right, gt_box=r["bbox"] or None,
                                   box=box, s1=s1)
  first = sample[0]["question_id"]
  bad = [
      "{not json",                                                         # bad JSON
      json.dumps({"question_id": sample[1]["question_id"]}),              # missing answer
      json.dumps({"question_id": "x", "answer": "a", "bbox": [1, 2, 3]}),  # 3 numbers
      json.dumps({"question_id": "y", "answer": "a", "bbox": [5, 5, 1, 1]}),  # inverted
      json.dumps({"question_id": "z", "answer": "a", "bbox": ["1", 2, 3, 4]}),
      json.dumps({"question_id": "LRS-GRO-NOPE", "answer": "port"}),      # unknown id
      json.dumps({"question_id": first, "answer": "qzxv-dup"}),           # duplicate: first wins
      json.dumps(["question_id", "answer"]),                              # not an object
      json.dumps({"question_id": "w", "answer": None}),                   # answer not a string
  ]
  # the bad rows are spread through the file; remember their line numbers
  out, bad_lines = [], []
  stride = len(lines) // len(bad)
  for k, line in enumerate(lines):
    out.append(line)
    if k % stride == 0 and len(bad_lines) < len(bad):
      out.append(bad[len(bad_lines)])
      bad_lines.append(len(out))
  path.write_text("\n".join(out) + "\n")
  return truth, bad_lines


def expected(truth, n_annotations):
  ids = list(truth)
  acc = lambda xs: sum(truth[i]["correct"] for i in xs) / len(xs)
  boxed = [i for i in ids if truth[i]["gt_box"]]
  apo = sum(ref_iou(truth[i]["box"], truth[i]["gt_box"]) if truth[i]["box"] else 0.0
            for i in boxed) / len(boxed)
  cropped = [i for i in ids if truth[i]["box"]]
  s1 = [i for i in ids if truth[i]["s1"] is not None]
  return {
      "accuracy": acc(ids), "apo_iou": apo, "n": len(ids),
      "by_type": {t: acc([i for i in ids if truth[i]["type"] == t]) for t in ("global", "region", "object")},
      "crop_rate": len(cropped) / len(ids),
      "crop_precision": sum(bool(truth[i]["gt_box"]) for i in cropped) / len(cropped),
      "crop_recall": sum(bool(truth[i]["box"]) for i in boxed) / len(boxed),
      "stage1": sum(truth[i]["s1"] for i in s1) / len(s1), "n_stage1": len(s1),
      "missing": n_annotations - len(ids),
  }


def test_score_cli_on_real_rl_split(tmp_path):
  rl = rl_jsonl()
  rows = [json.loads(l) for l in rl.read_text().splitlines() if l.strip()]
  assert len(rows) == 6622
  pred = tmp_path / "P.jsonl"
  truth, bad_lines = make_predictions(rows, pred)
  want = expected(truth, len(rows))
  out = tmp_path / "out" / "REPORT.json"
  r = subprocess.run([sys.executable, "-m", "zoomjax.eval", "score", "--predictions", str(pred),
                      "--annotations", str(rl), "--out", str(out)],
                     capture_output=True, text=True, timeout=300, cwd=REPO)
  assert r.returncode == 1, r.stderr[-3000:]       # 9 malformed rows skipped: a partial result (SPEC §9)
  assert "9 prediction rows skipped" in r.stderr.splitlines()[-1] and "Traceback" not in r.stderr
  rep = json.loads(out.read_text())
  ov = rep["overall"]
  assert ov["n"] == want["n"] == 700
  assert ov["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
  assert ov["apo_iou"] == pytest.approx(want["apo_iou"], abs=1e-9)
  for t in ("global", "region", "object"):
    assert rep["by_type"][t]["accuracy"] == pytest.approx(want["by_type"][t], abs=1e-12)
    assert 0.0 <= rep["by_type"][t]["accuracy"] <= 1.0
  assert rep["crop"]["rate"] == pytest.approx(want["crop_rate"])
  assert rep["crop"]["precision"] == pytest.approx(want["crop_precision"])
  assert rep["crop"]["recall"] == pytest.approx(want["crop_recall"])
  assert rep["stage1"]["accuracy"] == pytest.approx(want["stage1"])
  assert rep["stage1"]["n"] == want["n_stage1"]
  assert rep["mean_turns"] == 2 and rep["mean_visual_tokens"] == 400
  assert rep["rows"]["skipped"] == 9 and rep["rows"]["missing"] == want["missing"]
  assert [p["line"] for p in rep["problems"]] == bad_lines
  assert all(p["file"] == "predictions" for p in rep["problems"])
  assert sum(g["n"] for g in rep["by_category"].values()) == 700
  assert sum(g["n"] for g in rep["by_higher_level"].values()) == 700
  md = out.with_suffix(".md").read_text()
  assert "| Model | Global | Region | Object | Avg | APO IoU |" in md
  assert f"{100 * want['accuracy']:.2f}" in md and "9 skipped" in md
  assert "(700/6622 questions)" in md and "Partial result: 700 of 6622" in md
  assert rep["coverage"] == {"scored": 700, "annotated": 6622, "fraction": 700 / 6622}
  assert f"line {bad_lines[0]}: bad JSON" in r.stderr


def test_strict_counts_missing_and_bad_annotations(tmp_path):
  rl = rl_jsonl()
  rows = [json.loads(l) for l in rl.read_text().splitlines()[:40]]
  rows[3]["type"] = "planet"                       # unknown type -> annotation line 4 skipped
  rows[7]["bbox"] = [10, 10, 5]                    # bad box -> annotation line 8 skipped
  ann = tmp_path / "A.jsonl"
  ann.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  pred = tmp_path / "P.jsonl"
  pred.write_text("".join(json.dumps({"question_id": r["question_id"], "answer": r["ground_truth"],
                                      "bbox": r["bbox"] or None}) + "\n" for r in rows[:20]))
  rep = score_mod.score_files(pred, ann, strict=True)
  assert rep["rows"]["annotations_skipped"] == 2
  # rows 3 and 7 are gone from the annotations, so their predictions are unknown ids
  assert [(p["file"], p["line"]) for p in rep["problems"]] == [
      ("predictions", 4), ("predictions", 8), ("annotations", 4), ("annotations", 8)]
  assert "unknown type 'planet'" in rep["problems"][2]["message"]
  assert rep["rows"]["skipped"] == 2
  assert rep["overall"]["n"] == 38
  assert rep["overall"]["accuracy"] == pytest.approx(18 / 38)
  lax = score_mod.score_files(pred, ann)
  assert lax["overall"]["n"] == 18 and lax["overall"]["accuracy"] == 1.0
  assert lax["overall"]["apo_iou"] == 1.0
  win = score_mod.score_files(pred, ann, apo="window")
  assert win["overall"]["apo_iou"] == 1.0 and win["settings"]["apo"] == "window"
