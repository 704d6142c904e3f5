"""LRS-GRO annotations: a validating JSONL reader (every split's fields) over an image root.

Rows (SPEC §6): `question_id, image_name, category, question, ground_truth, bbox ([] or 4 numbers in the
1024-long-side frame), type (global | region | object)` plus, when present, `higher_level, split, label`;
the SFT split adds `cut, global, stage_1_reasoning, stage_2_reasoning, scale`. Unknown extra fields are
kept in `Row.extra`.

Nothing is dropped silently: every line that cannot be used (bad JSON, a missing or mistyped field, a box
that is not 4 ordered numbers in [0, 1024], a type/box mismatch, a duplicate id, an image name that
escapes the root, and with `check_images=True` a missing or unreadable image) becomes a `Problem` with
its 1-based line number, is counted in `LrsGroSource.problems`, and is logged once in a summary.
Image sizes (needed to convert boxes) are read lazily from the file headers and memoised.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
from typing import Any, Iterable, Mapping

from zoomjax.data import boxes as B
from zoomjax.data import images as I

log = logging.getLogger(__name__)

TYPES = ("global", "region", "object")
REQUIRED = ("question_id", "image_name", "category", "question", "ground_truth", "bbox", "type")
OPTIONAL_TEXT = ("higher_level", "split", "label")
SFT_FIELDS = ("cut", "global", "stage_1_reasoning", "stage_2_reasoning")


class RowError(ValueError):
  """A row (or line) of an annotation file is malformed."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One unusable line: `line` is 1-based; `question_id` when it could be read."""

  line: int
  reason: str
  question_id: str | None = None

  def __str__(self) -> str:
    qid = f" ({self.question_id})" if self.question_id else ""
    return f"line {self.line}{qid}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Row:
  """One validated LRS-GRO question. `bbox` is () or (x1, y1, x2, y2) in the 1024 frame."""

  question_id: str
  image_name: str
  category: str
  question: str
  ground_truth: str
  bbox: tuple[float, ...]
  type: str
  higher_level: str = ""
  split: str = ""
  label: str = ""
  cut: bool | None = None              # SFT only
  global_text: str | None = None       # SFT `global` (scene description)
  stage_1_reasoning: str | None = None
  stage_2_reasoning: str | None = None
  scale: float | None = None
  line: int = 0
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

  @property
  def has_box(self) -> bool:
    return len(self.bbox) == 4

  @property
  def is_sft(self) -> bool:
    return self.stage_1_reasoning is not None

  def box_original(self, width: int, height: int) -> list[float] | None:
    """The GT box in original pixels (`gt * max(W, H) / 1024`), or None without a box."""
    return B.gt1024_to_original(self.bbox, width, height) if self.has_box else None


def _text(d: Mapping[str, Any], key: str, *, required: bool = True, allow_empty: bool = False) -> str:
  v = d.get(key)
  if v is None:
    if required:
      raise RowError(f"missing field {key!r}")
    return ""
  if isinstance(v, bool) or not isinstance(v, (str, int)):
    raise RowError(f"field {key!r} must be a string, got {type(v).__name__}")
  v = str(v)
  if required and not allow_empty and not v.strip():
    raise RowError(f"field {key!r} is empty")
  return v


def _box(v: Any) -> tuple[float, ...]:
  if not isinstance(v, list):
    raise RowError(f"bbox must be a list, got {type(v).__name__}")
  if not v:
    return ()
  if len(v) != 4 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
    raise RowError(f"bbox must be [] or 4 numbers, got {v!r}")
  if not all(math.isfinite(x) for x in v):
    raise RowError(f"bbox has a non-finite value: {v!r}")
  x1, y1, x2, y2 = v
  if not (0 <= x1 < x2 <= B.GT_FRAME and 0 <= y1 < y2 <= B.GT_FRAME):
    raise RowError(f"bbox {v!r} is not x1<x2, y1<y2 inside the 1024 frame")
  return tuple(float(x) if isinstance(x, float) and not x.is_integer() else int(x) for x in v)


def parse_row(d: Any, line: int = 0) -> Row:
  """Validates one decoded JSON object; raises RowError with the reason."""
  if not isinstance(d, dict):
    raise RowError(f"a row must be a JSON object, got {type(d).__name__}")
  qid = _text(d, "question_id")
  name = _text(d, "image_name")
  qtype = _text(d, "type")
  if qtype not in TYPES:
    raise RowError(f"type must be one of {TYPES}, got {qtype!r}")
  if "bbox" not in d:
    raise RowError("missing field 'bbox'")
  box = _box(d["bbox"])
  if qtype == "global" and box:
    raise RowError("a global question must have bbox []")
  if qtype != "global" and not box:
    raise RowError(f"a {qtype} question needs a bbox")
  kw: dict[str, Any] = {}
  if any(k in d for k in SFT_FIELDS):
    for k in SFT_FIELDS:
      if k not in d:
        raise RowError(f"SFT row is missing field {k!r}")
    if not isinstance(d["cut"], bool):
      raise RowError(f"field 'cut' must be true/false, got {d['cut']!r}")
    if d["cut"] and not box:
      raise RowError("cut is true but bbox is empty")
    scale = d.get("scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
      raise RowError(f"field 'scale' must be a positive number, got {scale!r}")
    kw = dict(cut=d["cut"], global_text=_text(d, "global", allow_empty=True),
              stage_1_reasoning=_text(d, "stage_1_reasoning", allow_empty=True),
              stage_2_reasoning=_text(d, "stage_2_reasoning", allow_empty=True),
              scale=None if scale is None else float(scale))
  known = set(REQUIRED) | set(OPTIONAL_TEXT) | set(SFT_FIELDS) | {"scale"}
  return Row(question_id=qid, image_name=name, category=_text(d, "category"),
             question=_text(d, "question"), ground_truth=_text(d, "ground_truth"), bbox=box, type=qtype,
             higher_level=_text(d, "higher_level", required=False), split=_text(d, "split", required=False),
             label=_text(d, "label", required=False), line=line,
             extra={k: v for k, v in d.items() if k not in known}, **kw)


def default_image_root(jsonl_path: str | os.PathLike) -> str:
  """`<dir of the JSONL>/images` when it exists, else the JSONL's directory."""
  d = os.path.dirname(os.path.abspath(os.fspath(jsonl_path)))
  cand = os.path.join(d, "images")
  return cand if os.path.isdir(cand) else d


class LrsGroSource:
  """Validated rows of one LRS-GRO JSONL file; map-style (`len`, `[i]` -> Row), usable as a grain source.

  Args:
    path: the JSONL file.
    image_root: directory `image_name` is resolved under (default: `default_image_root(path)`).
    check_images: also read every image's header once; missing / unreadable images become problems.
    store: an `ImageStore` to share (default: a new one over `image_root`).
  """

  def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None, *,
               check_images: bool = True, store: I.ImageStore | None = None):
    self.path = os.fspath(path)
    self.image_root = os.fspath(image_root) if image_root is not None else default_image_root(path)
    self.store = store or I.ImageStore(self.image_root)
    self.rows: list[Row] = []
    self.problems: list[Problem] = []
    self.num_lines = 0
    seen: set[str] = set()
    with open(self.path, "r", encoding="utf-8", errors="replace") as f:
      for n, text in enumerate(f, start=1):
        self.num_lines = n
        if not text.strip():
          continue  # blank lines are not rows
        qid = None
        try:
          try:
            d = json.loads(text)
          except json.JSONDecodeError as e:
            raise RowError(f"invalid JSON ({e.msg} at column {e.colno})") from None
          if isinstance(d, dict) and isinstance(d.get("question_id"), (str, int)):
            qid = str(d["question_id"])
          row = parse_row(d, n)
          if row.question_id in seen:
            raise RowError("duplicate question_id")
          self.store.path(row.image_name)   # refuses names escaping the root
        except (RowError, I.PathEscapeError) as e:
          self.problems.append(Problem(n, str(e), qid))
          continue
        seen.add(row.question_id)
        self.rows.append(row)
    if check_images:
      self._check_images()
    if self.problems:
      shown = "; ".join(str(p) for p in self.problems[:5])
      more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
      log.warning("%s: %d unusable line(s) skipped: %s%s", self.path, len(self.problems), shown, more)

  def _check_images(self) -> None:
    bad: dict[str, str] = {}
    for name in sorted({r.image_name for r in self.rows}):
      try:
        w, h = self.store.size(name)
        if self.store.max_pixels is not None and w * h > self.store.max_pixels:
          raise I.ImageTooLargeError(f"{w}x{h} is above max_pixels={self.store.max_pixels}")
      except I.ImageError as e:
        bad[name] = f"image {name!r}: {type(e).__name__}: {e}"
    if bad:
      kept = []
      for r in self.rows:
        if r.image_name in bad:
          self.problems.append(Problem(r.line, bad[r.image_name], r.question_id))
        else:
          kept.append(r)
      self.rows = kept
      self.problems.sort(key=lambda p: p.line)

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i: int) -> Row:
    return self.rows[i]

  def __iter__(self):
    return iter(self.rows)

  def image_size(self, row: Row) -> tuple[int, int]:
    """(width, height) of a row's image, from its header (memoised)."""
    return self.store.size(row.image_name)

  def box_original(self, row: Row) -> list[float] | None:
    """A row's GT box in original pixels (reads the image header for the size)."""
    return row.box_original(*self.image_size(row)) if row.has_box else None

  def counts(self) -> dict[str, collections.Counter]:
    """Valid rows per `type`, per `category`, per `higher_level` and per image."""
    return {"type": collections.Counter(r.type for r in self.rows),
            "category": collections.Counter(r.category for r in self.rows),
            "higher_level": collections.Counter(r.higher_level for r in self.rows),
            "image": collections.Counter(r.image_name for r in self.rows)}

  def report(self) -> str:
    """A short human-readable summary: lines, rows, problems (with line numbers)."""
    c = self.counts()
    lines = [f"{self.path}: {self.num_lines} lines, {len(self.rows)} rows over {len(c['image'])} images, "
             f"{len(self.problems)} problem(s)",
             "  by type: " + ", ".join(f"{k} {v}" for k, v in sorted(c["type"].items()))]
    lines += [f"  {p}" for p in self.problems]
    return "\n".join(lines)


def read_rows(path: str | os.PathLike, image_root: str | os.PathLike | None = None, **kw) -> LrsGroSource:
  """Shorthand for `LrsGroSource(path, image_root, **kw)`."""
  return LrsGroSource(path, image_root, **kw)


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
  """Writes dict rows as JSONL (UTF-8, one object per line)."""
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(dict(r), ensure_ascii=False) + "\n")


def row_to_dict(row: Row) -> dict[str, Any]:
  """A Row back to its LRS-GRO JSON object (field names as in the files)."""
  d: dict[str, Any] = {"question_id": row.question_id, "image_name": row.image_name, "category": row.category,
                       "question": row.question, "ground_truth": row.ground_truth, "bbox": list(row.bbox),
                       "type": row.type}
  for k in OPTIONAL_TEXT:
    if getattr(row, k):
      d[k] = getattr(row, k)
  if row.is_sft:
    d.update(cut=row.cut, stage_1_reasoning=row.stage_1_reasoning, stage_2_reasoning=row.stage_2_reasoning,
             **{"global": row.global_text})
    if row.scale is not None:
      d["scale"] = row.scale
  d.update(row.extra)
  return d


__all__ = ["Row", "Problem", "RowError", "LrsGroSource", "parse_row", "read_rows", "write_rows",
           "row_to_dict", "default_image_root", "split_by_image", "TYPES"]


def split_by_image(rows: list, fraction: float) -> tuple[list, list]:
  """(train rows, held-out rows): the last `ceil(fraction * images)` images, in first-seen order."""
  names = list(dict.fromkeys(r.image_name for r in rows))
  if fraction <= 0 or len(names) < 2:
    return rows, []
  k = min(max(1, math.ceil(fraction * len(names))), len(names) - 1)
  held = set(names[-k:])
  return [r for r in rows if r.image_name not in held], [r for r in rows if r.image_name in held]
