"""`zoomjax.eval run`: answer every question of a benchmark with a model, resumably.

The driver is model-agnostic: it calls `answer_fn(questions) -> list[dict]`, one prediction dict per
question in order, each with at least `question_id` and `answer` (and `bbox` in the 1024 frame or None,
optionally `stage1_answer`, `turns`, `visual_tokens`: the row format `zoomjax.eval score` reads). Rows
are appended to the predictions JSONL and flushed after every batch, so an interrupted run loses at most
one batch; rerunning skips the question ids already answered in the file (a half-written last line from
a crash is cut off first).

A question that fails (its image cannot be read, say) is recorded as failed — `{"question_id", "answer":
null, "bbox": null, "error": "..."}` — never as an empty answer: `run` counts it, `zoomjax.eval score`
reports it under `errors`, and the next run retries it (its answer row then supersedes the failure).

`model_answer_fn(...)` builds an `answer_fn` from a model directory on top of the perception loop
(`zoomjax.rollout.loop.rollout`): greedy, batched, boxes mapped to the 1024 frame.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable, Iterable, Sequence

from zoomjax.eval.loaders import GT_FRAME, Question

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


def failed_row(question_id: str, error: str) -> dict:
  """The predictions row of a question that could not be answered."""
  return {"question_id": question_id, "answer": None, "bbox": None, "error": error}


def done_ids(path: str | os.PathLike) -> set[str]:
  """Question ids already answered in a predictions JSONL (failed rows and unreadable lines are not)."""
  ids: set[str] = set()
  if not os.path.exists(path):
    return ids
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and "question_id" in row and row.get("error") is None:
        ids.add(str(row["question_id"]))
  return ids


@dataclasses.dataclass
class RunResult:
  """What one `run` did: rows written, how many of them record a failed question, the first errors."""
  written: int = 0
  failed: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)   # up to 5 "question_id: error"


def _progress(total: int, enabled: bool):
  try:
    from tqdm import tqdm
  except ImportError:      # tqdm is a pinned dependency; degrade to no bar rather than fail
    return None
  return tqdm(total=total, disable=not enabled, unit="q", dynamic_ncols=True, file=sys.stderr)


def run(questions: Iterable[Question], answer_fn: AnswerFn, predictions_path: str | os.PathLike,
        batch_size: int = 8, limit: int | None = None, progress: bool = True) -> RunResult:
  """Answers the questions not yet answered in `predictions_path`, `batch_size` at a time.

  Rows with an `error` record failed questions (counted in the result; retried by the next run).

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
  result = RunResult()
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
          if row.get("error") is not None:
            result.failed += 1
            if len(result.errors) < 5:
              result.errors.append(f"{q.question_id}: {row['error']}")
          f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        result.written += len(batch)
        if bar is not None:
          bar.update(len(batch))
  finally:
    if bar is not None:
      bar.close()
  return result


def _image_path(image_dir: str, q: Question) -> str:
  image = q.image[0] if isinstance(q.image, list) else q.image
  if not image:
    raise ValueError(f"question {q.question_id} names no image")
  return os.path.join(image_dir, image)


def prediction_row(q: Question, traj, cfg) -> dict:
  """A `Trajectory` of the perception loop -> a predictions row (`bbox` in the 1024 frame).

  `turns` counts the model's decoding steps (a released crop: 2), `visual_tokens` the image tokens of
  the global view and every crop. No `stage1_answer`: the loop stops stage 1 at `<answer>` once a crop
  is requested (as the release does), so a pre-zoom answer does not exist for cropped questions.
  """
  box = traj.box_original
  bbox = None
  if box is not None:
    w, h = traj.info["original_size"]
    s = GT_FRAME / max(w, h)
    bbox = [round(float(v) * s, 3) for v in box]
    if not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
      bbox = None
  return {"question_id": q.question_id, "answer": traj.answer or "", "bbox": bbox,
          "turns": len(traj.steps), "visual_tokens": sum(im.num_tokens(cfg) for im in traj.images),
          "generated_tokens": traj.num_generated, "stop_reason": traj.stop_reason,
          "text": traj.generated_text}


def model_answer_fn(model_dir: str, image_dir: str, protocol: str = "released", *, version: str | None = None,
                    zoom: bool = True, max_turns: int = 1,
                    max_new_tokens: int = 1024, max_total_tokens: int = 8192, dtype: str = "float32",
                    seed: int = 0, max_pixels: int = 12845056) -> AnswerFn:
  """An `answer_fn` that runs the model in `model_dir` (HF layout: config, safetensors, tokenizer)
  through the perception loop (`zoomjax.rollout.loop.rollout`), greedy. A question whose image cannot be
  read gets a `failed_row` instead of stopping the run."""
  try:
    from zoomjax.rollout.generate import Generator
    from zoomjax.rollout.loop import LoopConfig, Request, rollout
  except ImportError as e:
    raise NotAvailable(
        "`zoomjax.eval run` needs the perception loop (zoomjax/rollout/loop.py), which is not "
        "available; score existing predictions with `python -m zoomjax.eval score`, or drive "
        f"`zoomjax.eval.run.run(questions, answer_fn, path)` with your own answer_fn ({e})") from e
  import jax.numpy as jnp
  from zoomjax import hf
  from zoomjax.data.images import ImageError
  from zoomjax.eval.loaders import prompt_text

  cfg, params = hf.load(model_dir, dtype=jnp.dtype(dtype))
  tokenizer = hf.load_tokenizer(model_dir)
  gen = Generator(cfg, params)
  loop_cfg = LoopConfig(protocol=protocol, version=version, zoom=zoom, max_turns=max_turns,
                        max_new_tokens=max_new_tokens, max_total_tokens=max_total_tokens, max_pixels=max_pixels)

  def one_by_one(questions):
    rows = []
    for q in questions:
      try:
        t = rollout(gen, tokenizer, [Request(_image_path(image_dir, q), prompt_text(q))], loop_cfg,
                    seed=seed)[0]
        rows.append(prediction_row(q, t, cfg))
      except (ImageError, OSError, ValueError) as e:
        rows.append(failed_row(q.question_id, f"{type(e).__name__}: {e}"))
    return rows

  def answer_fn(questions: Sequence[Question]) -> list[dict]:
    try:
      reqs = [Request(_image_path(image_dir, q), prompt_text(q)) for q in questions]
      trajs = rollout(gen, tokenizer, reqs, loop_cfg, seed=seed)
    except (ImageError, OSError, ValueError):
      return one_by_one(questions)      # find which question's image is bad; answer the others
    return [prediction_row(q, t, cfg) for q, t in zip(questions, trajs)]

  return answer_fn
