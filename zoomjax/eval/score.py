"""`zoomjax.eval score`: a predictions JSONL against an annotation file -> REPORT.json (+ REPORT.md).

Prediction rows (one JSON object per line):

    {"question_id": "LRS-GRO-3314", "answer": "light grey", "bbox": [163, 78, 196, 601]}

* `question_id` (string or number) and `answer` (string; "" when the model gave none) are required;
* `bbox`: 4 numbers `x1 < x2, y1 < y2` in the **1024-long-side frame**, or absent / null / `[]` when no
  crop was requested;
* optional: `stage1_answer` (string or null: the answer before zooming), `turns`, `visual_tokens`
  (numbers). Other fields are ignored.

A row with a non-null `error` (and no `answer` needed) records a question that *failed* — its image could
not be read, say (`zoomjax.eval run` writes these). It is not scored (with `strict`, it scores as
wrong), it is counted in `errors`, and a later successful row for the same question replaces it (the
next `eval run` retries failed questions and appends their answers).

A malformed row — bad JSON, not an object, a missing or mistyped field, a bad box, an unknown or
duplicate `question_id` — is reported with its line number, counted and skipped; scoring continues.
Annotation rows the loader rejects (e.g. an unknown LRS-GRO `type`) are reported the same way.
Questions without a prediction are left out of the metrics (`rows.missing` counts them) unless
`strict=True`, which scores them as wrong with no box. `coverage` says how many of the annotated
questions the metrics cover (`scored` / `annotated`); the markdown table shows it beside the numbers.

REPORT.json (SPEC §8; fractions in [0, 1]):

    {"overall": {"accuracy", "apo_iou", "n", ...}, "by_type": {"global": {"accuracy", "n", ...}, ...},
     "by_category": ..., "by_higher_level": ..., "stage1": ..., "crop": ..., "mean_turns": ...,
     "mean_visual_tokens": ..., "rows": {"predictions", "scored", "skipped", "missing", "errors",
     "annotations", "annotations_skipped"}, "coverage": {"scored", "annotated", "fraction"},
     "errors": n, "problems": [{"file", "line", "message"}, ...], "settings": {...}}

`incomplete(report)` says why a report is not a full result (nothing scored, rows skipped, questions
failed), or returns None; the CLI exits 1 when it is not None.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any

from zoomjax.eval import loaders, metrics
from zoomjax.eval.choices import extract_choice
from zoomjax.eval.loaders import Problem, Question, RowError
from zoomjax.rl import judge

MAX_LISTED_PROBLEMS = 1000
_ABSENT = object()


@dataclasses.dataclass
class Prediction:
  question_id: str
  answer: str
  bbox: list[float] | None = None
  stage1_answer: Any = _ABSENT        # absent, None (no stage-1 answer) or a string
  turns: float | None = None
  visual_tokens: float | None = None
  line: int = 0
  error: str | None = None            # the question failed (no answer); see the module docstring


def _number(row: dict, key: str) -> float | None:
  v = row.get(key)
  if v is None:
    return None
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
    raise RowError(f"field {key!r} must be a number, got {v!r}")
  return float(v)


def parse_prediction(row: Any) -> Prediction:
  """One prediction row -> `Prediction`; raises `RowError` with the reason when malformed."""
  if not isinstance(row, dict):
    raise RowError(f"expected a JSON object, got {type(row).__name__}")
  failed = row.get("error") is not None
  missing = [k for k in (("question_id",) if failed else ("question_id", "answer")) if k not in row]
  if missing:
    raise RowError(f"missing field(s) {', '.join(missing)}")
  qid = row["question_id"]
  if isinstance(qid, bool) or not isinstance(qid, (str, int)):
    raise RowError(f"question_id must be a string, got {qid!r}")
  if failed:
    return Prediction(question_id=str(qid), answer="", error=str(row["error"]))
  if not isinstance(row["answer"], str):
    raise RowError(f"answer must be a string, got {type(row['answer']).__name__}")
  stage1 = row.get("stage1_answer", _ABSENT)
  if stage1 is not _ABSENT and stage1 is not None and not isinstance(stage1, str):
    raise RowError(f"stage1_answer must be a string or null, got {type(stage1).__name__}")
  return Prediction(question_id=str(qid), answer=row["answer"],
                    bbox=loaders.parse_box(row.get("bbox")), stage1_answer=stage1,
                    turns=_number(row, "turns"), visual_tokens=_number(row, "visual_tokens"))


def read_predictions(path, known: dict[str, Question] | None = None
                     ) -> tuple[dict[str, Prediction], list[Problem], int]:
  """(predictions by id, problems, number of non-blank lines). Unknown ids are problems when `known`
  is given; a repeated id keeps the first answered row (a failed row is replaced by a later answer,
  and a failure after an answer is ignored)."""
  preds: dict[str, Prediction] = {}
  problems: list[Problem] = []
  lines = 0
  for n, obj, err in loaders.iter_jsonl(path):
    lines += 1
    if err is None:
      try:
        p = parse_prediction(obj)
        if known is not None and p.question_id not in known:
          raise RowError(f"unknown question_id {p.question_id!r}")
        prev = preds.get(p.question_id)
        if prev is not None and (p.error is not None or prev.error is not None):
          if prev.error is not None:       # a retried question: the latest attempt counts
            p.line = n
            preds[p.question_id] = p
          continue
        if prev is not None:
          raise RowError(f"duplicate question_id {p.question_id!r} (first on line {prev.line})")
      except RowError as e:
        err = str(e)
      else:
        p.line = n
        preds[p.question_id] = p
        continue
    problems.append(Problem(n, err))
  return preds, problems, lines


def judge_answer(q: Question, answer: str | None, rule: str = "extended") -> tuple[bool, float]:
  """(correct, score) of one answer: WordNet judge for open questions, exact letter set for choices."""
  if q.kind == "choice":
    multi = q.multi_select or q.benchmark == "xlrs"
    got = extract_choice(answer, letters=q.letters or "ABCDE", options=q.options, multi=multi)
    ok = got is not None and got == q.ground_truth
    return ok, float(ok)
  s = judge.answer_score(answer, q.ground_truth, rule)
  return s >= judge.THRESHOLD, s


def score(questions: list[Question], preds: dict[str, Prediction], rule: str = "extended",
          strict: bool = False) -> tuple[list[metrics.Scored], int]:
  """Judges every question that has an answer (all of them with `strict`) -> (records, missing).

  `missing` counts questions without a row; failed rows (`error`) are counted by `failures`."""
  out, missing = [], 0
  for q in questions:
    p = preds.get(q.question_id)
    if p is None or p.error is not None:
      missing += p is None
      if not strict:
        continue
      p = Prediction(q.question_id, "")
    ok, s = judge_answer(q, p.answer, rule)
    s1 = None
    if p.stage1_answer is not _ABSENT:
      s1 = judge_answer(q, p.stage1_answer, rule)[0] if p.stage1_answer is not None else False
    out.append(metrics.Scored(
        question_id=q.question_id, correct=ok, score=s, type=q.type, category=q.category,
        higher_level=q.higher_level, gt_box=q.bbox, pred_box=p.bbox, stage1_correct=s1,
        turns=p.turns, visual_tokens=p.visual_tokens))
  return out, missing


def score_files(predictions_path, annotations_path, benchmark: str = "lrs_gro",
                rule: str = "extended", apo: str = "plain", strict: bool = False,
                annotations: tuple[list[Question], list[Problem]] | None = None) -> dict:
  """The whole `score` command minus the writing: returns the report dict.

  `annotations`: `loaders.load(annotations_path, benchmark)` when the caller has it already."""
  questions, ann_problems = annotations or loaders.load(annotations_path, benchmark)
  known = {q.question_id: q for q in questions}
  preds, pred_problems, lines = read_predictions(predictions_path, known)
  records, missing = score(questions, preds, rule, strict)
  failed = failures(questions, preds)
  report = metrics.compute(records, apo)
  problems = ([{"file": "predictions", "line": p.line, "message": p.message} for p in pred_problems]
              + [{"file": "annotations", "line": p.line, "message": p.message}
                 for p in ann_problems])
  report["benchmark"] = benchmark
  report["rows"] = {"predictions": lines, "scored": len(records), "skipped": len(pred_problems),
                    "missing": missing, "errors": len(failed), "annotations": len(questions),
                    "annotations_skipped": len(ann_problems)}
  annotated = len(questions) + len(ann_problems)
  report["coverage"] = {"scored": len(records), "annotated": annotated,
                        "fraction": len(records) / annotated if annotated else 0.0}
  report["errors"] = len(failed)
  report["failed"] = [{"question_id": p.question_id, "error": p.error}
                      for p in failed[:MAX_LISTED_PROBLEMS]]
  report["problems"] = problems[:MAX_LISTED_PROBLEMS]
  report["problems_truncated"] = len(problems) > MAX_LISTED_PROBLEMS
  report["settings"] = {"predictions": os.fspath(predictions_path),
                        "annotations": os.fspath(annotations_path), "judge_rule": rule, "apo": apo,
                        "strict": strict, "threshold": judge.THRESHOLD}
  return report


def failures(questions: list[Question], preds: dict[str, Prediction]) -> list[Prediction]:
  """The annotated questions whose (latest) row records a failure, in annotation order."""
  return [p for q in questions if (p := preds.get(q.question_id)) is not None and p.error is not None]


def incomplete(report: dict) -> str | None:
  """Why `report` is not a complete result, in one sentence with counts; None when it is."""
  rows, cov = report["rows"], report["coverage"]
  if rows["annotations"] == 0:
    if rows["annotations_skipped"]:
      first = next((p["message"] for p in report["problems"] if p["file"] == "annotations"), "")
      return (f"the {report['benchmark']} loader rejected all {rows['annotations_skipped']} annotation "
              f"rows (first: {first}); is --benchmark right?")
    return "the annotation file holds no questions"
  why = []
  if cov["scored"] == 0:
    why.append(f"nothing scored: none of the {rows['annotations']} annotated questions has an answer in "
               f"the predictions ({rows['predictions']} lines)")
  if rows["errors"]:
    first = report["failed"][0]["error"] if report.get("failed") else ""
    why.append(f"{rows['errors']} questions failed (first: {first})")
  if rows["skipped"]:
    why.append(f"{rows['skipped']} prediction rows skipped as malformed")
  if rows["annotations_skipped"]:
    why.append(f"{rows['annotations_skipped']} annotation rows rejected by the {report['benchmark']} loader")
  if not why:
    return None
  return (f"{'; '.join(why)} — scored {cov['scored']} of {cov['annotated']} annotated questions "
          "(problems listed in the report)")


def write_report(report: dict, out_path, name: str | None = None) -> tuple[str, str]:
  """Writes REPORT.json and the markdown table beside it (same stem, `.md`); returns both paths."""
  from zoomjax.eval.report import markdown
  out_path = os.fspath(out_path)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, sort_keys=False)
    f.write("\n")
  md_path = os.path.splitext(out_path)[0] + ".md"
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(markdown(report, name=name))
  return out_path, md_path


def print_problems(report: dict, stream=sys.stderr, limit: int = 20) -> None:
  probs = report.get("problems", [])
  for p in probs[:limit]:
    print(f"skipped {p['file']} line {p['line']}: {p['message']}", file=stream)
  if len(probs) > limit:
    print(f"... and {len(probs) - limit} more (all listed in the report)", file=stream)
