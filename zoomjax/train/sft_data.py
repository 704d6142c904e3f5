"""SFT data from LRS-GRO-format files: Toy Earth (generated on first use) or LRS-GRO itself.

For `data.kind = toy_earth` the first run writes, under `data.root`:

    meta.json, images/, sft.jsonl, rl.jsonl, test.jsonl   (`zoomjax.data.toy_earth.generate`)
    tokenizer/                                             (`zoomjax.data.tokenizer.toy_earth_tokenizer`)

and later runs reuse them. Training examples are `zoomjax.data.trajectories.SftDataset` rows of the
training file; without `data.eval_file`, the last `eval_fraction` of its images are held out (all their
questions) for the held-out loss, so evaluation never sees a training image. Built examples are
memoised in memory up to `data.cache_mb` (decoding and resizing an image costs more than a training
step of the tiny model).
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import jax
import numpy as np
from absl import logging

from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.sources import Data

PATCH_PIXELS = 14 * 14
VIEW_SIDE = 504  # smart_resize of a <= 512 px side: the largest view / crop side the model sees


class Memo:
  """`[i]` memoised up to `max_bytes` of arrays (thread-safe: the pipeline reads from several threads).
  Errors are not memoised; past the budget, examples are rebuilt on every use."""

  def __init__(self, dataset: Any, max_bytes: int):
    self.dataset = dataset
    self.max_bytes = max_bytes
    self.bytes = 0
    self._cache: dict[int, Any] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.dataset)

  def __getitem__(self, i: int) -> Any:
    i = int(i)
    with self._lock:
      hit = self._cache.get(i)
    if hit is None:
      hit = self.dataset[i]
      size = sum(v.nbytes for v in hit.values() if isinstance(v, np.ndarray))
      with self._lock:
        if self.bytes + size <= self.max_bytes:
          self._cache[i] = hit
          self.bytes += size
    return hit


def _on_process0(fn, what: str):
  """Runs `fn` on process 0 only; every process returns after it finished."""
  if jax.process_index() == 0:
    fn()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(what)


def ensure_toy_earth(cfg: TrainConfig) -> str:
  """Generates Toy Earth into `data.root` unless it is already there (same seed and size); returns root."""
  import json
  from zoomjax.data import toy_earth
  root = os.path.abspath(cfg.path(cfg.data.root))
  meta = os.path.join(root, "meta.json")

  def have() -> bool:
    if not os.path.isfile(meta):
      return False
    with open(meta) as fh:
      m = json.load(fh)
    return m.get("seed") == cfg.data.toy_seed and m.get("num_images") == cfg.data.num_images

  def make():
    if not have():
      print(f"generating Toy Earth ({cfg.data.num_images} images, seed {cfg.data.toy_seed}) into {root} ...",
            flush=True)
      toy_earth.generate(root, seed=cfg.data.toy_seed, num_images=cfg.data.num_images)

  _on_process0(make, "zoomjax-toy-earth")
  return root


def load_tokenizer(cfg: TrainConfig, root: str):
  """The configured tokenizer; `train` trains (once) the Toy Earth BPE into `root/tokenizer`."""
  from zoomjax.data import tokenizer as T
  if cfg.data.tokenizer != "train":
    return T.load_tokenizer(cfg.path(cfg.data.tokenizer))
  if cfg.data.kind != "toy_earth":
    raise ConfigError("data.tokenizer: 'train' builds the Toy Earth tokenizer; LRS-GRO needs the model's "
                      "tokenizer directory (e.g. the HF checkpoint dir)")
  path = os.path.join(root, "tokenizer")

  def make():
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
      print(f"training the tokenizer into {path} ...", flush=True)
      T.toy_earth_tokenizer(path, seed=cfg.data.toy_seed, num_images=cfg.data.num_images)

  _on_process0(make, "zoomjax-tokenizer")
  return T.load_tokenizer(path)


def split_by_image(rows: list, fraction: float) -> tuple[list, list]:
  """(train rows, held-out rows): the last `ceil(fraction * images)` images, in first-seen order."""
  names = list(dict.fromkeys(r.image_name for r in rows))
  if fraction <= 0 or len(names) < 2:
    return rows, []
  k = min(max(1, math.ceil(fraction * len(names))), len(names) - 1)
  held = set(names[-k:])
  return [r for r in rows if r.image_name not in held], [r for r in rows if r.image_name in held]


def build(cfg: TrainConfig) -> Data:
  from zoomjax.data import tokenizer as T
  from zoomjax.data.lrs_gro import LrsGroSource
  from zoomjax.data.trajectories import ImageBudget, SftDataset
  dc = cfg.data
  if dc.kind == "toy_earth":
    from zoomjax.data.toy_earth import TOY_VIEW_PIXELS
    root = ensure_toy_earth(cfg)
    default_pixels = TOY_VIEW_PIXELS
  else:
    root = os.path.abspath(cfg.path(dc.root))
    default_pixels = ImageBudget().max_pixels
  train_file = os.path.join(root, dc.train_file or "sft.jsonl")
  if not os.path.isfile(train_file):
    raise ConfigError(f"data.train_file: {train_file!r} does not exist")
  image_root = os.path.join(root, dc.image_dir) if dc.image_dir else None
  tok = load_tokenizer(cfg, root)
  source = LrsGroSource(train_file, image_root)
  if len(source) == 0:
    raise ConfigError(f"data.train_file: no usable rows in {train_file!r}")
  if dc.eval_file:
    eval_path = os.path.join(root, dc.eval_file)
    eval_rows = list(LrsGroSource(eval_path, image_root, store=source.store))
    train_rows = list(source)
  else:
    train_rows, eval_rows = split_by_image(list(source), dc.eval_fraction)
  max_pixels = dc.image_max_pixels or default_pixels
  budget = ImageBudget(max_pixels=max_pixels)
  mk = lambda rows, share: Memo(SftDataset(rows, tok, dc.protocol, budget, store=source.store),  # noqa: E731
                                int(dc.cache_mb * share) << 20)
  per_image = min(max_pixels, VIEW_SIDE * VIEW_SIDE) // PATCH_PIXELS
  max_images = dc.max_images or 2
  max_patches = dc.max_patches or -(-per_image * max_images // 4) * 4
  ids = T.special_ids(tok)
  info = {"kind": dc.kind, "root": root, "train_file": train_file, "train_examples": len(train_rows),
          "eval_examples": len(eval_rows), "tokenizer_vocab": T.vocab_size(tok), "image_max_pixels": max_pixels}
  logging.info("SFT data: %s", info)
  return Data(train=mk(train_rows, 0.8), eval=mk(eval_rows, 0.2) if eval_rows else None, pad_id=ids["pad_token_id"],
              max_patches=max_patches, max_images=max_images,
              vocab_size=T.padded_vocab_size(tok) if cfg.model.preset == "tiny" and not cfg.model.hf_dir else None,
              special_ids=ids if cfg.model.preset == "tiny" and not cfg.model.hf_dir else None,
              patches_per_image=float(per_image), tokenizer=tok, info=info)


def answer_eval(cfg: TrainConfig, data: Data, model_cfg, params, run_dir: str) -> dict:
  """Answer accuracy and APO IoU of the trained model on held-out questions, through the perception loop.

  Questions: the first `eval.answers` rows of `test.jsonl` in `data.root` (Toy Earth's held-out test
  images), else of the held-out SFT rows. Writes `answers/{annotations,predictions}.jsonl` and
  `answers/report.json` (the `zoomjax.eval score` report) under the run dir; returns
  `{"answers": {"accuracy", "apo_iou", "n", "by_type", "path"}}`, or {} without the rollout loop.
  """
  try:
    from zoomjax.rollout.generate import Generator
    from zoomjax.rollout.loop import LoopConfig, Request, rollout
  except ImportError:
    logging.warning("no perception loop (zoomjax.rollout.loop): answer accuracy not evaluated")
    return {}
  import json
  from zoomjax.eval import loaders, run as eval_run, score as eval_score
  from zoomjax.data.lrs_gro import row_to_dict
  if jax.process_index() != 0:
    return {}
  root = data.info["root"]
  test = os.path.join(root, "test.jsonl")
  out_dir = os.path.join(run_dir, "answers")
  os.makedirs(out_dir, exist_ok=True)
  ann = os.path.join(out_dir, "annotations.jsonl")
  if os.path.isfile(test):
    with open(test) as fh:
      rows = [json.loads(line) for line in fh if line.strip()][:cfg.eval.answers]
  else:
    rows = [row_to_dict(r) for r in data.eval.dataset.rows][:cfg.eval.answers] if data.eval else []
  if not rows:
    return {}
  with open(ann, "w") as fh:
    fh.writelines(json.dumps(r) + "\n" for r in rows)
  questions, _ = loaders.load(ann, "lrs_gro")
  image_root = os.path.join(root, cfg.data.image_dir) if cfg.data.image_dir else os.path.join(root, "images")
  gen = Generator(model_cfg, params)
  max_pixels = data.info.get("image_max_pixels") or LoopConfig().max_pixels
  loop_cfg = LoopConfig(protocol=cfg.data.protocol, max_new_tokens=cfg.eval.max_new_tokens,
                        max_total_tokens=cfg.data.seq_len + 2 * cfg.eval.max_new_tokens, max_pixels=max_pixels)

  def answer_fn(qs):
    reqs = [Request(os.path.join(image_root, q.image[0] if isinstance(q.image, list) else q.image),
                    loaders.prompt_text(q)) for q in qs]
    return [eval_run.prediction_row(q, t, model_cfg) for q, t in zip(qs, rollout(gen, data.tokenizer, reqs, loop_cfg))]

  preds = os.path.join(out_dir, "predictions.jsonl")
  if os.path.exists(preds):
    os.remove(preds)
  eval_run.run(questions, answer_fn, preds, batch_size=cfg.eval.answer_batch, progress=cfg.log.progress)
  report = eval_score.score_files(preds, ann, "lrs_gro")
  eval_score.write_report(report, os.path.join(out_dir, "report.json"))
  o = report["overall"]
  return {"answers": {"accuracy": o.get("accuracy"), "apo_iou": o.get("apo_iou"), "n": o.get("n"),
                      "by_type": {k: v.get("accuracy") for k, v in report.get("by_type", {}).items()},
                      "path": os.path.join(out_dir, "report.json")}}
