"""SFT data for the trainer: which examples (per `data.kind`) and how they become device batches.

`build_data(cfg)` returns a `Data`: map-style train / eval example sets (`[i]` -> `input_ids`,
`loss_mask`, `pixel_values`, `image_grid_thw`), the per-sequence vision budgets, and for the tiny model
the tokenizer's vocabulary size and special ids. `make_stream` feeds a set through the grain pipeline
(`zoomjax.data.pipeline.sft_batches`) into a `StepStream` of `[A, S_local, ...]` device-ready trees;
`make_eval_fn` scores held-out batches (loss, token accuracy).

For `data.kind = toy_earth` the first run writes, under `data.root`:

    meta.json, images/, sft.jsonl, rl.jsonl, test.jsonl   (`zoomjax.data.toy_earth.generate`)
    tokenizer/                                             (the Toy Earth tokenizer recipe)

and later runs reuse them. Training examples are `zoomjax.data.trajectories.SftDataset` rows of the
training file; without `data.eval_file`, the last `eval_fraction` of its images are held out (all their
questions) for the held-out loss, so evaluation never sees a training image. Built examples are
memoised in memory up to `data.cache_mb` (decoding and resizing an image costs more than a training
step of the tiny model).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
from absl import logging

from zoomjax.data import tokenizer as T
from zoomjax.data import toy_earth, toy_earth_tokenizer
from zoomjax.data.lrs_gro import LrsGroSource, split_by_image
from zoomjax.data.memo import Memo
from zoomjax.data.packing import packed_sft_pieces
from zoomjax.data.pipeline import Buckets, sft_batches
from zoomjax.data.synthetic import SyntheticCopyDataset
from zoomjax.data.trajectories import ImageBudget, SftDataset
from zoomjax.train import batching
from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.stream import StepStream

PATCH_PIXELS = 14 * 14
VIEW_SIDE = 504  # smart_resize of a <= 512 px side: the largest view / crop side the model sees


@dataclasses.dataclass
class Data:
  """Attributes:
    train / eval: map-style example sets (eval may be None).
    pad_id: padding token id. max_patches / max_images: per-sequence vision budgets (0 = text only).
    vocab_size / special_ids: for the tiny preset, the tokenizer's (None: keep the preset's).
    patches_per_image: typical image size in patches (FLOPs estimate only).
    tokenizer: the tokenizer object when there is one. info: facts to report (paths, sizes).
  """

  train: Any
  eval: Any = None
  pad_id: int = 0
  max_patches: int = 0
  max_images: int = 0
  vocab_size: int | None = None
  special_ids: dict | None = None
  patches_per_image: float = 0.0
  tokenizer: Any = None
  info: dict = dataclasses.field(default_factory=dict)


def build_data(cfg: TrainConfig, model_cfg_fn: Callable[[], Any] | None = None) -> Data:
  """The configured data; generated / tokenized on first use where the kind says so.

  `model_cfg_fn()` gives the run's model config (the synthetic task draws its tokens and patches from it).
  """
  kind = cfg.data.kind
  if kind == "synthetic":
    mc = model_cfg_fn()
    train = SyntheticCopyDataset(mc, num_examples=max(cfg.data.num_images, cfg.data.batch_size), seed=cfg.data.toy_seed)
    ev = SyntheticCopyDataset(mc, num_examples=max(cfg.data.batch_size, 16), seed=cfg.data.toy_seed + 10_000)
    per_image = int(train.grid.prod())
    return Data(train=train, eval=ev, pad_id=mc.pad_token_id, max_patches=cfg.data.max_patches or per_image,
                max_images=cfg.data.max_images or 1, patches_per_image=per_image,
                info={"kind": "synthetic", "train_examples": len(train), "eval_examples": len(ev)})
  if kind in ("toy_earth", "lrs_gro"):
    return build_files(cfg)
  raise ConfigError(f"data.kind: unsupported {kind!r}")


def _on_process0(fn, what: str):
  """Runs `fn` on process 0 only; every process returns after it finished."""
  if jax.process_index() == 0:
    fn()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415 (multi-process only)
    multihost_utils.sync_global_devices(what)


def ensure_toy_earth(cfg: TrainConfig) -> str:
  """Generates Toy Earth into `data.root` unless it is already there (same seed and size); returns root."""
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
  if cfg.data.tokenizer != "train":
    return T.load_tokenizer(cfg.path(cfg.data.tokenizer))
  if cfg.data.kind != "toy_earth":
    raise ConfigError("data.tokenizer: 'train' builds the Toy Earth tokenizer; LRS-GRO needs the model's "
                      "tokenizer directory (e.g. the HF checkpoint dir)")
  path = os.path.join(root, "tokenizer")

  def make():
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
      print(f"training the tokenizer into {path} ...", flush=True)
      toy_earth_tokenizer.build(path, seed=cfg.data.toy_seed, num_images=cfg.data.num_images)

  _on_process0(make, "zoomjax-tokenizer")
  return T.load_tokenizer(path)


def data_root(cfg: TrainConfig) -> str:
  """The data directory (Toy Earth generated into it first when needed)."""
  return ensure_toy_earth(cfg) if cfg.data.kind == "toy_earth" else os.path.abspath(cfg.path(cfg.data.root))


def build_files(cfg: TrainConfig) -> Data:
  """Toy Earth / LRS-GRO SFT examples from the training file (module docstring)."""
  dc = cfg.data
  root = data_root(cfg)
  default_pixels = toy_earth.TOY_VIEW_PIXELS if dc.kind == "toy_earth" else ImageBudget().max_pixels
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
  mk = lambda rows, share: Memo(SftDataset(rows, tok, dc.protocol, budget, store=source.store,
                                                           version=dc.protocol_version or None,
                                                           box_weight=dc.box_loss_weight),  # noqa: E731
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


@dataclasses.dataclass(frozen=True)
class Packing:
  """Budgets of one packed training sequence (`data.pack`; `zoomjax.data.packing`)."""

  max_patches: int
  max_images: int
  bins: int


def packing_of(cfg: TrainConfig, data: Data) -> Packing | None:
  """The packed sequence's budgets for `data.pack = k`: the configured `max_patches` / `max_images`, or k
  times one example's; None when unpacked."""
  dc = cfg.data
  if not dc.pack:
    return None
  if not data.max_patches:
    raise ConfigError("data.pack: packing needs examples with images (this dataset is text only)")
  return Packing(max_patches=dc.max_patches or dc.pack * data.max_patches,
                 max_images=dc.max_images or dc.pack * data.max_images, bins=dc.pack_bins)


def make_stream(data: Data, dataset: Any, model_cfg, mesh, batch_size: int, num_micro: int, seq_len: int,
                seed: int, shuffle: bool, num_epochs: int, prefetch: int = 2, eval_mode: bool = False,
                packing: Packing | None = None) -> StepStream:
  """A `StepStream` over `dataset` yielding `[A, S_local, b, ...]` device-ready numpy `Piece`s.

  Each process's grain pipeline yields one sequence at a time with fixed buckets `(seq_len,
  max_patches, max_images)`, or with `packing` as many whole examples as fit those budgets;
  `eval_mode` keeps the order, makes one pass and pads the last step with blank pieces so every
  example counts once.
  """
  s = batching.num_shards(mesh)
  n_pieces = num_micro * s
  if batch_size % n_pieces:
    raise ConfigError(f"data.batch_size: {batch_size} must be divisible by grad_accum ({num_micro}) x the "
                      f"mesh's batch shards data*fsdp ({s}) = {n_pieces}")
  max_patches = packing.max_patches if packing else data.max_patches
  if max_patches % 4:
    raise ConfigError(f"data.max_patches: must be a multiple of 4 (2x2 patch merge), got {max_patches}")
  b = batch_size // n_pieces
  lo, hi = batching.local_shard_range(mesh)
  epochs = 1 if eval_mode else (num_epochs or None)
  if packing is not None:
    pieces = packed_sft_pieces(dataset, seq_len=seq_len, max_patches=max_patches, max_images=packing.max_images,
                               pad_id=data.pad_id, seed=seed, shuffle=shuffle, num_epochs=epochs, bins=packing.bins)
  else:
    buckets = Buckets.fixed(seq_len, max(max_patches, 4), max(data.max_images, 1))
    pieces = sft_batches(dataset, jax.process_count(), pad_id=data.pad_id, seed=seed, shuffle=shuffle,
                         num_epochs=epochs, buckets=buckets, drop_remainder=not eval_mode)
  layout = (num_micro, hi - lo, b)
  prepare = lambda ps: batching.assemble(  # noqa: E731
      ps, layout, lambda pc: batching.make_piece(model_cfg, pc, max_patches))
  return StepStream(pieces, num_micro * (hi - lo) * b, prepare, prefetch=prefetch, pad_last=eval_mode)


def train_stream(cfg: TrainConfig, data: Data, model_cfg, mesh) -> StepStream:
  return make_stream(data, data.train, model_cfg, mesh, cfg.data.batch_size, cfg.optim.grad_accum,
                     cfg.data.seq_len, cfg.data.shuffle_seed, True, cfg.data.num_epochs,
                     packing=packing_of(cfg, data))


def make_eval_fn(cfg: TrainConfig, data: Data, model_cfg, setup) -> Callable[[Any, int], dict] | None:
  """`(params, step) -> {"loss", "token_accuracy", "tokens", "batches"}` over the first `eval.batches`
  held-out batches (the same ones every time), or None when there is no eval set."""
  if data.eval is None or not cfg.eval.batches or len(data.eval) == 0:
    return None
  s = batching.num_shards(setup.mesh)
  per_shard = -(-min(cfg.data.batch_size, len(data.eval)) // s)
  batch = per_shard * s

  def evaluate(params, step):
    del step
    stream = make_stream(data, data.eval, model_cfg, setup.mesh, batch, 1, cfg.data.seq_len, 0, False, 1,
                         prefetch=0, eval_mode=True)
    tot = {"loss_sum": 0.0, "count": 0.0, "correct": 0.0}
    num = 0
    try:
      for host in stream:
        out = jax.device_get(setup.eval_step(params, batching.to_global(host, setup.mesh)))
        for k in tot:
          tot[k] += float(out[k])
        num += 1
        if num >= cfg.eval.batches:
          break
    finally:
      stream.close()
    denom = max(tot["count"], 1.0)
    return {"loss": tot["loss_sum"] / denom, "token_accuracy": tot["correct"] / denom, "tokens": tot["count"],
            "batches": num}

  return evaluate
