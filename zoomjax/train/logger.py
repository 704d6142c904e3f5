"""Training metrics: a tqdm bar, TensorBoard event files (tensorboardX) and a JSONL log.

Only process 0 writes. `metrics.jsonl` holds one JSON object per logged step (`{"step": …, "loss": …}`)
and one per evaluation (`{"step": …, "split": "eval", …}`). On resume the log is cut back to the
restored step, so a run killed and restarted leaves the same file as an uninterrupted one. Pictures
(an evaluation's `images`) go to TensorBoard only.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np


def _plain(v: Any) -> Any:
  if hasattr(v, "item"):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/Infinity
  return v


def read_jsonl(path: str) -> list[dict]:
  """Rows of a JSONL file; a torn last line (killed writer) is ignored."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path) as fh:
    for line in fh:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return rows


class MetricsLogger:
  """Writes scalars to the enabled sinks.

  Args:
    run_dir: `metrics.jsonl` and `tb/` go here.
    total_steps / initial_step: for the progress bar.
    progress / tensorboard / jsonl: enable each sink.
    stage: the training stage (`sft`, `grpo`): every JSONL row carries it, TensorBoard writes to
      `tb/<stage>`, and a resume drops only this stage's rows past `initial_step` (the stages of a chain
      share one `metrics.jsonl`, each counting steps from 0).
  """

  def __init__(self, run_dir: str, total_steps: int, initial_step: int = 0, progress: bool = True,
               tensorboard: bool = True, jsonl: bool = True, stage: str | None = None):
    self.active = jax.process_index() == 0
    self.jsonl_path = os.path.join(run_dir, "metrics.jsonl")
    self.stage = stage
    self.tb_dir = os.path.join(run_dir, "tb", stage) if stage else os.path.join(run_dir, "tb")
    self._bar = self._tb = self._fh = None
    if not self.active:
      return
    os.makedirs(run_dir, exist_ok=True)
    if jsonl:
      rows = [r for r in read_jsonl(self.jsonl_path)
              if r.get("stage") != stage or r.get("step", 0) <= initial_step]
      tmp = self.jsonl_path + ".tmp"
      with open(tmp, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
      os.replace(tmp, self.jsonl_path)
      self._fh = open(self.jsonl_path, "a", buffering=1)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(self.tb_dir, purge_step=initial_step + 1 if initial_step else None)
    if progress:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True)

  def log(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> None:
    """One row of scalars. `metrics["images"]`, if present, maps tags to uint8[H, W, 3] pictures that go
    to TensorBoard only (`{split}/{tag}`), not to the JSONL log."""
    if not self.active:
      return
    metrics = dict(metrics)
    images = metrics.pop("images", None) or {}
    row = {"step": int(step), **({"stage": self.stage} if self.stage else {}),
           **({"split": split} if split != "train" else {}),
           **{k: _plain(v) for k, v in metrics.items()}}
    if self._tb is not None:
      for tag, img in images.items():
        self._tb.add_image(f"{split}/{tag}", np.asarray(img, np.uint8), int(step), dataformats="HWC")
    if self._fh is not None:
      self._fh.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in row.items():
        if k not in ("step", "split", "stage") and isinstance(v, (int, float)):
          self._tb.add_scalar(f"{split}/{k}", v, int(step))
    if self._bar is not None and split == "train":
      self._bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "grad_norm", "lr", "tokens_per_s", "mfu")
                             if isinstance(row.get(k), (int, float))}, refresh=False)

  def advance(self, n: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def write(self, text: str) -> None:
    """Prints a line without breaking the progress bar (process 0 only)."""
    if not self.active:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._fh is not None:
      self._fh.close()
    self._bar = self._tb = self._fh = None
