"""`zoomjax.eval run`: answer every question of a benchmark with a model, resumably.

The driver is model-agnostic: it calls `answer_fn(questions) -> list[dict]`, one prediction dict per
question in order, each with at least `question_id` and `answer` (and `bbox` in the 1024 frame or None,
optionally `stage1_answer`, `turns`, `visual_tokens`: the row format `zoomjax.eval score` reads). Rows
are appended to the predictions JSONL and flushed after every batch, so an interrupted run loses at most
one batch; rerunning skips the question ids already in the file (a half-written last line from a crash
is cut off first).

`model_answer_fn(...)` builds an `answer_fn` from a model directory on top of the rollout helper's
perception loop (`zoomjax.rollout.loop`); until that module exists it raises `NotAvailable`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Iterable, Sequence

from zoomjax.eval.loaders import Question

AnswerFn = Callable[[Sequence[Question]], list[dict]]


class NotAvailable(RuntimeError):
  """A part `run` needs is not built yet."""


def _repair_tail(path: str) -> None:
  """Cuts a trailing partial line (no final newline) left by a crash mid-write."""
  with open(path, "rb+") as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
      return
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return
    f.seek(0)
    data = f.read()
    f.seek(data.rfind(b"\n") + 1)
    f.truncate()


def done_ids(path: str | os.PathLike) -> set[str]:
  """Question ids already answered in a predictions JSONL (unreadable lines are ignored)."""
  ids: set[str] = set()
  if not os.path.exists(path):
    return ids
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and "question_id" in row:
        ids.add(str(row["question_id"]))
  return ids


def _progress(total: int, enabled: bool):
  try:
    from tqdm import tqdm
  except ImportError:      # tqdm is a pinned dependency; degrade to no bar rather than fail
    return None
  return tqdm(total=total, disable=not enabled, unit="q", dynamic_ncols=True, file=sys.stderr)


def run(questions: Iterable[Question], answer_fn: AnswerFn, predictions_path: str | os.PathLike,
        batch_size: int = 8, limit: int | None = None, progress: bool = True) -> int:
  """Answers the questions not yet in `predictions_path`, `batch_size` at a time; returns how many.

  Raises ValueError if `answer_fn` returns the wrong number of rows or rows for other questions.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  path = os.fspath(predictions_path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if os.path.exists(path):
    _repair_tail(path)
  done = done_ids(path)
  todo = [q for q in questions if q.question_id not in done]
  if limit is not None:
    todo = todo[:limit]
  bar = _progress(len(todo), progress)
  written = 0
  try:
    with open(path, "a", encoding="utf-8") as f:
      for i in range(0, len(todo), batch_size):
        batch = todo[i:i + batch_size]
        rows = answer_fn(batch)
        if len(rows) != len(batch):
          raise ValueError(f"answer_fn returned {len(rows)} rows for {len(batch)} questions")
        for q, row in zip(batch, rows):
          row = dict(row)
          row.setdefault("question_id", q.question_id)
          if str(row["question_id"]) != q.question_id:
            raise ValueError(f"answer_fn answered {row['question_id']!r} for {q.question_id!r}")
          f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        written += len(batch)
        if bar is not None:
          bar.update(len(batch))
  finally:
    if bar is not None:
      bar.close()
  return written


def model_answer_fn(model_dir: str, image_dir: str, protocol: str = "released",
                    **kwargs) -> AnswerFn:
  """An `answer_fn` running the model in `model_dir` through the perception loop."""
  try:
    from zoomjax.rollout import loop  # noqa: F401  (the rollout helper's perception loop)
  except ImportError as e:
    raise NotAvailable(
        "`zoomjax.eval run` needs the perception loop (zoomjax/rollout/loop.py), which is not "
        "available yet; score existing predictions with `python -m zoomjax.eval score`, or drive "
        f"`zoomjax.eval.run.run(questions, answer_fn, path)` with your own answer_fn ({e})") from e
  raise NotAvailable("zoomjax.rollout.loop exists but `run` is not wired to it yet")
