"""Training data for the trainer: which examples (per `data.kind`) and how they become device batches.

`build_data(cfg)` returns a `Data`: map-style train / eval example sets (`[i]` -> `input_ids`,
`loss_mask`, `pixel_values`, `image_grid_thw`), the per-sequence vision budgets, and for the tiny model
the tokenizer's vocabulary size and special ids. `make_stream` feeds a set through the grain pipeline
(`zoomjax.data.pipeline.sft_batches`) into a `StepStream` of `[A, S_local, ...]` device-ready trees;
`make_eval_fn` scores held-out batches (loss, token accuracy).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from zoomjax.train import batching
from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.data import StepStream, SyntheticCopyDataset


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


def build_data(cfg: TrainConfig) -> Data:
  """The configured data; generated / tokenized on first use where the kind says so."""
  kind = cfg.data.kind
  if kind == "synthetic":
    from zoomjax.train.trainer import build_model_config
    mc = build_model_config(cfg)
    train = SyntheticCopyDataset(mc, num_examples=max(cfg.data.num_images, cfg.data.batch_size), seed=cfg.data.toy_seed)
    ev = SyntheticCopyDataset(mc, num_examples=max(cfg.data.batch_size, 16), seed=cfg.data.toy_seed + 10_000)
    per_image = int(train.grid.prod())
    return Data(train=train, eval=ev, pad_id=mc.pad_token_id, max_patches=cfg.data.max_patches or per_image,
                max_images=cfg.data.max_images or 1, patches_per_image=per_image,
                info={"kind": "synthetic", "train_examples": len(train), "eval_examples": len(ev)})
  if kind in ("toy_earth", "lrs_gro"):
    from zoomjax.train import sft_data
    return sft_data.build(cfg)
  raise ConfigError(f"data.kind: unsupported {kind!r}")


def make_stream(data: Data, dataset: Any, model_cfg, mesh, batch_size: int, num_micro: int, seq_len: int,
                seed: int, shuffle: bool, num_epochs: int, prefetch: int = 2, eval_mode: bool = False) -> StepStream:
  """A `StepStream` over `dataset` yielding `[A, S_local, b, ...]` device-ready numpy trees.

  Each process's grain pipeline yields one sequence at a time with fixed buckets `(seq_len,
  max_patches, max_images)`; `eval_mode` keeps the order, makes one pass and pads the last step with
  blank pieces so every example counts once.
  """
  from zoomjax.data.pipeline import Buckets, sft_batches
  s = batching.num_shards(mesh)
  n_pieces = num_micro * s
  if batch_size % n_pieces:
    raise ConfigError(f"data.batch_size: {batch_size} must be divisible by grad_accum ({num_micro}) x the "
                      f"mesh's batch shards data*fsdp ({s}) = {n_pieces}")
  if data.max_patches % 4:
    raise ConfigError(f"data.max_patches: must be a multiple of 4 (2x2 patch merge), got {data.max_patches}")
  b = batch_size // n_pieces
  lo, hi = batching.local_shard_range(mesh)
  buckets = Buckets.fixed(seq_len, max(data.max_patches, 4), max(data.max_images, 1))
  pieces = sft_batches(dataset, jax.process_count(), pad_id=data.pad_id, seed=seed, shuffle=shuffle,
                       num_epochs=(1 if eval_mode else (num_epochs or None)), buckets=buckets,
                       drop_remainder=not eval_mode)
  layout = (num_micro, hi - lo, b)
  prepare = lambda ps: batching.assemble(  # noqa: E731
      ps, layout, lambda pc: batching.model_inputs(model_cfg, pc, data.max_patches))
  return StepStream(pieces, num_micro * (hi - lo) * b, prepare, prefetch=prefetch, pad_last=eval_mode)


def train_stream(cfg: TrainConfig, data: Data, model_cfg, mesh) -> StepStream:
  return make_stream(data, data.train, model_cfg, mesh, cfg.data.batch_size, cfg.optim.grad_accum,
                     cfg.data.seq_len, cfg.data.shuffle_seed, True, cfg.data.num_epochs)


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


def finish(cfg: TrainConfig, data: Data, model_cfg, params, run_dir: str) -> dict:
  """End-of-run extras for the kind (answer accuracy through the rollout loop when available)."""
  if cfg.data.kind in ("toy_earth", "lrs_gro") and cfg.eval.answers:
    from zoomjax.train import sft_data
    return sft_data.answer_eval(cfg, data, model_cfg, params, run_dir)
  return {}
