"""Training data for the trainer: which examples (per `data.kind`) and how they become device batches.

`build_data(cfg)` returns a `Data`: map-style train / eval example sets plus the per-sequence padding
budgets. `train_stream` wraps the train set in a `BatchStream` whose prefetch thread collates pieces and
runs the host-side model preparation; `make_eval_fn` scores held-out batches (loss, token accuracy).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax

from zoomjax.train import batching
from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.data import BatchStream, SyntheticCopyDataset, collate_examples


@dataclasses.dataclass
class Data:
  """Attributes:
    train / eval: map-style example sets (`len`, `[i]` -> example dict; see `collate_examples`).
    vocab_size: tokenizer vocabulary (sizes the tiny model) or None to keep the preset's.
    pad_id: padding token id. max_patches / max_images: per-sequence vision budgets (0 = text only).
    patches_per_image: typical image size in patches (FLOPs estimate only).
    collate: `(examples, seq_len, num_patches, num_images) -> piece` (default `collate_examples`).
    tokenizer: the tokenizer object when there is one (for answer evaluation).
    info: free-form facts to report (paths, sizes).
  """

  train: Any
  eval: Any = None
  vocab_size: int | None = None
  pad_id: int = 0
  max_patches: int = 0
  max_images: int = 0
  patches_per_image: float = 0.0
  collate: Callable | None = None
  tokenizer: Any = None
  info: dict = dataclasses.field(default_factory=dict)


def build_data(cfg: TrainConfig, model_cfg=None) -> Data:
  """The configured data; generated / tokenized on first use where the kind says so."""
  kind = cfg.data.kind
  if kind == "synthetic":
    from zoomjax.train.trainer import build_model_config
    mc = model_cfg or build_model_config(cfg)
    train = SyntheticCopyDataset(mc, num_examples=max(cfg.data.num_images, cfg.data.batch_size), seed=cfg.data.toy_seed)
    ev = SyntheticCopyDataset(mc, num_examples=max(cfg.data.batch_size, 16), seed=cfg.data.toy_seed + 10_000)
    per_image = int(train.grid.prod())
    return Data(train=train, eval=ev, vocab_size=None, pad_id=mc.pad_token_id,
                max_patches=cfg.data.max_patches or per_image, max_images=cfg.data.max_images or 1,
                patches_per_image=per_image)
  if kind in ("toy_earth", "lrs_gro"):
    from zoomjax.train import sft_data
    return sft_data.build(cfg)
  raise ConfigError(f"data.kind: unsupported {kind!r}")


def _collate(data: Data, seq_len: int, num_patches: int, num_images: int, patch_dim: int) -> Callable:
  if data.collate is not None:
    return functools.partial(data.collate, seq_len=seq_len, num_patches=num_patches, num_images=num_images)
  return functools.partial(collate_examples, seq_len=seq_len, pad_id=data.pad_id, num_patches=num_patches,
                           num_images=num_images, patch_dim=patch_dim)


def make_stream(data: Data, dataset: Any, model_cfg, mesh, batch_size: int, num_micro: int, seq_len: int,
                seed: int, shuffle: bool, num_epochs: int, prefetch: int = 2) -> BatchStream:
  """A `BatchStream` over `dataset` producing `[A, S_local, ...]` device-ready numpy trees."""
  s = batching.num_shards(mesh)
  n_pieces = num_micro * s
  if batch_size % n_pieces:
    raise ConfigError(f"data.batch_size: {batch_size} must be divisible by grad_accum ({num_micro}) x the "
                      f"mesh's batch shards data*fsdp ({s}) = {n_pieces}")
  b = batch_size // n_pieces
  patches, images = b * data.max_patches, b * data.max_images
  collate = _collate(data, seq_len, patches, images, model_cfg.vision.patch_dim)
  prepare = lambda pieces: batching.assemble(  # noqa: E731
      pieces, num_micro, lambda pc: batching.model_inputs(model_cfg, pc, patches))
  return BatchStream(dataset, collate, batch_size, num_micro, s, batching.local_shard_range(mesh), seed=seed,
                     shuffle=shuffle, num_epochs=num_epochs, prepare=prepare, prefetch=prefetch)


def train_stream(cfg: TrainConfig, data: Data, model_cfg, mesh) -> BatchStream:
  return make_stream(data, data.train, model_cfg, mesh, cfg.data.batch_size, cfg.optim.grad_accum,
                     cfg.data.seq_len, cfg.data.shuffle_seed, True, cfg.data.num_epochs)


def make_eval_fn(cfg: TrainConfig, data: Data, model_cfg, setup) -> Callable[[Any, int], dict] | None:
  """`(params, step) -> {"loss", "token_accuracy", "tokens", "batches"}` over up to `eval.batches`
  held-out batches (the same batches every time), or None when there is no eval set."""
  if data.eval is None or not cfg.eval.batches:
    return None
  s = batching.num_shards(setup.mesh)
  n = len(data.eval)
  batch = min(cfg.data.batch_size, (n // s) * s)
  if batch == 0:
    return None
  num = min(cfg.eval.batches, n // batch)

  def evaluate(params, step):
    del step
    stream = make_stream(data, data.eval, model_cfg, setup.mesh, batch, 1, cfg.data.seq_len, 0, False, 1,
                         prefetch=0)
    tot = {"loss_sum": 0.0, "count": 0.0, "correct": 0.0}
    for i, host in zip(range(num), stream):
      out = jax.device_get(setup.eval_step(params, batching.to_global(host, setup.mesh)))
      for k in tot:
        tot[k] += float(out[k])
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
