"""Benchmark loaders: LRS-GRO, LRS-VQA, MME-RealWorld (remote sensing), XLRS-Bench, GeoLLaVA-8K.

Every loader returns `(questions, problems)`: a list of `Question` and a list of `Problem` (line or
item number + message) for rows it had to skip; it never stops at a bad row. Formats: SPEC §6 and
`../shared/data/formats/`.

`Question.bbox` is the ground-truth box in the **1024-long-side frame** (the frame of LRS-GRO and of
the predictions `zoomjax.eval score` reads), or None when the question has none. `Question.kind` is
"open" (scored by the WordNet judge) or "choice" (letters, exact set match).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Callable, Iterable, Iterator

from zoomjax.eval.choices import normalize_letters, option_letter

LRS_GRO_TYPES = ("global", "region", "object")
GT_FRAME = 1024.0
BENCHMARKS = ("lrs_gro", "lrs_vqa", "mme_rs", "xlrs", "geollava")
# Fields only some LRS-GRO splits carry (SPEC §6): kept in `Question.extra`.
LRS_GRO_SPLIT_FIELDS = ("split", "cut", "global", "stage_1_reasoning", "stage_2_reasoning", "scale",
                        "label")


@dataclasses.dataclass
class Question:
  """One benchmark question, whatever its source format."""
  question_id: str
  question: str
  ground_truth: str                 # open answer, or the correct letters ("B", "AC") for choices
  image: str | None                 # image path relative to the benchmark's image dir
  benchmark: str
  kind: str = "open"                # "open" | "choice"
  type: str | None = None           # LRS-GRO level: global | region | object
  category: str | None = None
  higher_level: str | None = None
  bbox: list[float] | None = None   # ground-truth box in the 1024 frame, None when there is none
  options: list[str] | None = None  # ["(A) ...", ...] for choice questions
  letters: str = ""                 # the option letters, "ABCD"
  multi_select: bool = False
  image_size: tuple[int, int] | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Problem:
  """A row that was skipped: `line` is the 1-based line (JSONL) or item (JSON list) number."""
  line: int
  message: str

  def __str__(self) -> str:
    return f"line {self.line}: {self.message}"


class RowError(ValueError):
  """A malformed row (its message is what gets reported)."""


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any, str | None]]:
  """(line number, parsed object or None, error or None) for each non-blank line."""
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield n, json.loads(line), None
      except json.JSONDecodeError as e:
        yield n, None, f"bad JSON ({e.msg} at column {e.colno})"


def _iter_json_list(path) -> Iterator[tuple[int, Any, str | None]]:
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  if isinstance(data, dict):   # {"data": [...]} / {"questions": [...]} wrappers
    data = next((v for v in data.values() if isinstance(v, list)), [data])
  for n, item in enumerate(data, 1):
    yield n, item, None


def _rows(path) -> Iterator[tuple[int, Any, str | None]]:
  """JSONL or a JSON list, decided by the first non-blank character."""
  with open(path, encoding="utf-8") as f:
    head = f.read(4096).lstrip()
  if head.startswith("["):
    return _iter_json_list(path)
  return iter_jsonl(path)


def _load(path, parse: Callable[[dict], Question | None]) -> tuple[list[Question], list[Problem]]:
  out, problems, seen = [], [], set()
  for n, obj, err in _rows(path):
    if err is None and not isinstance(obj, dict):
      err = f"expected a JSON object, got {type(obj).__name__}"
    if err is None:
      try:
        q = parse(obj)
      except RowError as e:
        err = str(e)
      else:
        if q is None:
          continue
        if q.question_id in seen:
          err = f"duplicate question_id {q.question_id!r}"
        else:
          seen.add(q.question_id)
          out.append(q)
          continue
    problems.append(Problem(n, err))
  return out, problems


def _need(row: dict, *keys: str) -> None:
  missing = [k for k in keys if k not in row or row[k] is None]
  if missing:
    raise RowError(f"missing field(s) {', '.join(missing)}")


def _str(row: dict, key: str) -> str:
  v = row[key]
  if isinstance(v, bool) or not isinstance(v, (str, int, float)):
    raise RowError(f"field {key!r} must be a string, got {type(v).__name__}")
  return str(v)


def parse_box(value: Any, field: str = "bbox") -> list[float] | None:
  """`[]`/None -> None; 4 finite numbers with x1 < x2, y1 < y2 -> floats; anything else -> RowError."""
  if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
    return None
  if (not isinstance(value, (list, tuple)) or len(value) != 4
      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
    raise RowError(f"bad box in {field!r}: {value!r} (want [x1, y1, x2, y2] or [] / null)")
  box = [float(v) for v in value]
  if not all(math.isfinite(v) for v in box) or box[0] >= box[2] or box[1] >= box[3]:
    raise RowError(f"bad box in {field!r}: {value!r} (need finite x1 < x2 and y1 < y2)")
  return box


# ---------------------------------------------------------------- LRS-GRO
def parse_lrs_gro(row: dict) -> Question:
  _need(row, "question_id", "question", "ground_truth", "type")
  qtype = _str(row, "type").strip().lower()
  if qtype not in LRS_GRO_TYPES:
    raise RowError(f"unknown type {row['type']!r} (want one of {', '.join(LRS_GRO_TYPES)})")
  bbox = parse_box(row.get("bbox"))
  return Question(
      question_id=_str(row, "question_id"), question=_str(row, "question"),
      ground_truth=_str(row, "ground_truth"), image=row.get("image_name") or row.get("image"),
      benchmark="lrs_gro", type=qtype, category=row.get("category"),
      higher_level=row.get("higher_level"), bbox=bbox,
      extra={k: row[k] for k in LRS_GRO_SPLIT_FIELDS if k in row})


def load_lrs_gro(path) -> tuple[list[Question], list[Problem]]:
  """LRS-GRO JSONL (any split; SFT/test-only fields land in `Question.extra`)."""
  return _load(path, parse_lrs_gro)


# ---------------------------------------------------------------- LRS-VQA
def parse_lrs_vqa(row: dict) -> Question:
  _need(row, "question_id", "text", "ground_truth")
  size = row.get("image_size")
  bbox = None
  hbox = parse_box(row.get("hbox"), "hbox")
  if hbox is not None:
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and min(size) > 0):
      raise RowError(f"hbox without a usable image_size: {size!r}")
    s = GT_FRAME / max(size)
    bbox = [v * s for v in hbox]
  return Question(
      question_id=_str(row, "question_id"), question=_str(row, "text"),
      ground_truth=_str(row, "ground_truth"), image=row.get("image"), benchmark="lrs_vqa",
      category=row.get("category"), bbox=bbox,
      image_size=tuple(int(v) for v in size) if isinstance(size, (list, tuple)) and len(size) == 2
      else None,
      extra={k: row[k] for k in ("hbox", "rbox", "abs_size", "size_bin") if k in row})


def load_lrs_vqa(path) -> tuple[list[Question], list[Problem]]:
  """LRS-VQA JSONL; open answers scored like LRS-GRO; `hbox` (original pixels) -> 1024 frame."""
  return _load(path, parse_lrs_vqa)


# ---------------------------------------------------------------- MME-RealWorld
def _is_remote_sensing(row: dict) -> bool:
  text = " ".join(str(row.get(k, "")) for k in ("Subtask", "Question_id", "Image"))
  return re.search(r"remote[\s_-]*sensing", text, re.I) is not None


def _options(raw: Any, field: str) -> tuple[list[str], str]:
  if not isinstance(raw, list) or not raw or not all(isinstance(o, str) for o in raw):
    raise RowError(f"field {field!r} must be a non-empty list of strings")
  letters = "".join(option_letter(o, i) for i, o in enumerate(raw))
  return list(raw), letters


def parse_mme_realworld(row: dict, rs_only: bool = True) -> Question | None:
  _need(row, "Question_id", "Text", "Answer choices", "Ground truth")
  if rs_only and not _is_remote_sensing(row):
    return None
  options, letters = _options(row["Answer choices"], "Answer choices")
  gt = normalize_letters(_str(row, "Ground truth"))
  if gt is None or len(gt) != 1 or gt not in letters:
    raise RowError(f"ground truth {row['Ground truth']!r} is not one of the options {letters}")
  return Question(
      question_id=_str(row, "Question_id"), question=_str(row, "Text"), ground_truth=gt,
      image=row.get("Image"), benchmark="mme_rs", kind="choice", category=row.get("Category"),
      higher_level=row.get("Task"), options=options, letters=letters,
      extra={k: row[k] for k in ("Subtask", "Question Type", "Question type", "Dataset") if k in row})


def load_mme_realworld(path, rs_only: bool = True) -> tuple[list[Question], list[Problem]]:
  """MME-RealWorld JSON list; by default only the remote-sensing subtask (choices A–E)."""
  return _load(path, lambda r: parse_mme_realworld(r, rs_only))


# ---------------------------------------------------------------- XLRS-Bench
def parse_xlrs(row: dict) -> Question:
  _need(row, "index", "question", "multi-choice options", "answer")
  options, letters = _options(row["multi-choice options"], "multi-choice options")
  gt = normalize_letters(_str(row, "answer"))
  if gt is None or not set(gt) <= set(letters):
    raise RowError(f"answer {row['answer']!r} is not a set of the options {letters}")
  image = row.get("image")
  if isinstance(image, list):
    image = image[0] if len(image) == 1 else image
  category = row.get("category")
  return Question(
      question_id=_str(row, "index"), question=_str(row, "question"), ground_truth=gt,
      image=image, benchmark="xlrs", kind="choice", category=category,
      higher_level=row.get("l2-category"), options=options, letters=letters,
      multi_select=len(gt) > 1,
      extra={"task": category.split("/")[0]} if isinstance(category, str) else {})


def load_xlrs_bench(path) -> tuple[list[Question], list[Problem]]:
  """XLRS-Bench(-lite) JSONL or JSON list; letters A–D, multi-select answers ("AC"), exact set match."""
  return _load(path, parse_xlrs)


# ---------------------------------------------------------------- GeoLLaVA-8K
def parse_geollava(row: dict) -> list[Question]:
  _need(row, "conversations")
  conv = row["conversations"]
  if not isinstance(conv, list) or not all(isinstance(t, dict) for t in conv):
    raise RowError("conversations must be a list of {from, value} objects")
  base = str(row.get("id", row.get("question_id", "")))
  out = []
  turns = [(t.get("from"), t.get("value")) for t in conv]
  pairs = [(turns[i][1], turns[i + 1][1]) for i in range(len(turns) - 1)
           if turns[i][0] == "human" and turns[i + 1][0] == "gpt"]
  if not pairs or not base:
    raise RowError("need an id and at least one human -> gpt turn pair")
  for k, (q, a) in enumerate(pairs):
    if not isinstance(q, str) or not isinstance(a, str):
      raise RowError("conversation values must be strings")
    q = re.sub(r"^\s*<image>\s*", "", q).replace("<image>", "").strip()
    letters = normalize_letters(a) if re.fullmatch(r"\s*\(?[A-Ea-e]\)?\.?\s*", a) else None
    opts = re.findall(r"(?m)^\s*\(?([A-E])[).]\s+\S", q)
    choice = letters is not None and len(opts) >= 2
    out.append(Question(
        question_id=base if len(pairs) == 1 else f"{base}#{k}", question=q,
        ground_truth=letters if choice else a.strip(), image=row.get("image"), benchmark="geollava",
        kind="choice" if choice else "open", letters="".join(opts) if choice else "",
        category=row.get("category")))
  return out


def load_geollava(path) -> tuple[list[Question], list[Problem]]:
  """GeoLLaVA-8K LLaVA-style JSON list (or JSONL); one question per human -> gpt pair. A reply that
  is a single letter to a question listing lettered options is scored as a choice, else as an open
  answer with the judge."""
  out, problems, seen = [], [], set()
  for n, obj, err in _rows(path):
    if err is None:
      try:
        if not isinstance(obj, dict):
          raise RowError(f"expected a JSON object, got {type(obj).__name__}")
        for q in parse_geollava(obj):
          if q.question_id in seen:
            raise RowError(f"duplicate question_id {q.question_id!r}")
          seen.add(q.question_id)
          out.append(q)
        continue
      except RowError as e:
        err = str(e)
    problems.append(Problem(n, err))
  return out, problems


LOADERS: dict[str, Callable[[Any], tuple[list[Question], list[Problem]]]] = {
    "lrs_gro": load_lrs_gro, "lrs_vqa": load_lrs_vqa, "mme_rs": load_mme_realworld,
    "xlrs": load_xlrs_bench, "geollava": load_geollava,
}


def load(path, benchmark: str = "lrs_gro") -> tuple[list[Question], list[Problem]]:
  """Loads `path` with the named benchmark's loader (one of `BENCHMARKS`)."""
  if benchmark not in LOADERS:
    raise ValueError(f"unknown benchmark {benchmark!r} (want one of {', '.join(BENCHMARKS)})")
  return LOADERS[benchmark](path)


CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MULTI_INSTRUCTION = ("Answer with the letters of all correct options from the given choices directly "
                     "(e.g. AC).")


def prompt_text(q: Question) -> str:
  """The question as the model is asked it: open questions as written; choice questions followed by
  their options, one per line, and an instruction to answer with the letter(s)."""
  if q.kind != "choice" or not q.options:
    return q.question
  instruction = MULTI_INSTRUCTION if q.benchmark == "xlrs" else CHOICE_INSTRUCTION
  return "\n".join([q.question, *q.options, instruction])


def iter_questions(items: Iterable[Question], ids: set[str] | None = None) -> Iterator[Question]:
  """Questions whose id is not in `ids` (resumable runs)."""
  for q in items:
    if ids is None or q.question_id not in ids:
      yield q
