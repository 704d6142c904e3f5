"""Supervised fine-tuning on the harness: the objective and the driver.

    summary = run(cfg)     # data, model config, harness, loop, held-out eval, exports, answer accuracy

The objective is masked next-token cross-entropy (`zoomjax.train.loss.masked_xent`, as sums); the batch
source is the grain stream of `zoomjax.train.sft_data`. Everything else is `zoomjax.train.harness`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from zoomjax.data import trajectories
from zoomjax.data.lrs_gro import row_to_dict
from zoomjax.eval.answers import answer_eval
from zoomjax.rollout.generate import Generator
from zoomjax.rollout.loop import LoopConfig
from zoomjax.train import driver, flops, harness, sft_data
from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.loss import masked_xent

OBJECTIVE = harness.Objective(lambda logits, piece: masked_xent(logits, piece.input_ids, piece.loss_mask))

PREFLIGHT_EXAMPLES = 64   # examples whose length is checked against data.seq_len before step 1
MAX_TOO_LONG = 0.5        # a larger share of too-long examples fails the run before it starts


def check_lengths(cfg: TrainConfig, dataset: Any) -> None:
  """Fails before step 1 when most examples cannot fit `data.seq_len` (they would all be skipped)."""
  n = min(len(dataset), PREFLIGHT_EXAMPLES)
  if n == 0:
    raise ConfigError("data: no training examples")
  lengths = []
  for i in range(n):
    try:
      lengths.append(len(dataset[i]["input_ids"]))
    except trajectories.TrajectoryError:
      continue
  if not lengths:
    raise ConfigError(f"data: none of the first {n} training examples could be built")
  too_long = sum(t > cfg.data.seq_len for t in lengths)
  if too_long > MAX_TOO_LONG * len(lengths):
    raise ConfigError(f"data.seq_len: {too_long} of the first {len(lengths)} examples are longer than "
                      f"data.seq_len={cfg.data.seq_len} and would be skipped (the longest needs {max(lengths)} "
                      f"tokens); raise data.seq_len to at least {max(lengths)}")


def held_out_rows(cfg: TrainConfig, data: sft_data.Data) -> list[dict]:
  """The questions of the answer evaluation: the first `eval.answers` rows of `test.jsonl` in the data
  root (Toy Earth's held-out test images), else of the held-out SFT rows."""
  test = os.path.join(data.info["root"], "test.jsonl")
  if os.path.isfile(test):
    with open(test) as fh:
      return [json.loads(line) for line in fh if line.strip()][:cfg.eval.answers]
  return [row_to_dict(r) for r in data.eval.dataset.rows][:cfg.eval.answers] if data.eval else []


def loop_config(cfg: TrainConfig, data: sft_data.Data) -> LoopConfig:
  """The perception-loop settings the model was trained for (also written to the HF export)."""
  max_pixels = data.info.get("image_max_pixels") or LoopConfig().max_pixels
  return LoopConfig(protocol=cfg.data.protocol, version=cfg.data.protocol_version or None,
                    max_new_tokens=cfg.eval.max_new_tokens,
                    max_total_tokens=cfg.data.seq_len + 2 * cfg.eval.max_new_tokens, max_pixels=max_pixels)


def answers(cfg: TrainConfig, data: sft_data.Data, model_cfg, params, out_dir: str) -> dict:
  """Answer accuracy / APO IoU of `params` on held-out questions (process 0; {} when there are none)."""
  if jax.process_index() != 0 or cfg.data.kind not in ("toy_earth", "lrs_gro") or not cfg.eval.answers:
    return {}
  rows = held_out_rows(cfg, data)
  image_dir = os.path.join(data.info["root"], cfg.data.image_dir or "images")
  return answer_eval(Generator(model_cfg, params), data.tokenizer, rows, image_dir, loop_config(cfg, data), out_dir,
                     model_cfg=model_cfg, batch_size=cfg.eval.answer_batch, progress=cfg.log.progress)


def run(cfg: TrainConfig, data: sft_data.Data | None = None) -> dict:
  """Runs SFT as configured. `data` overrides the configured data (a `sft_data.Data`)."""
  run_dir = driver.open_run(cfg)
  data = data or sft_data.build_data(cfg, lambda: harness.build_model_config(cfg))
  model_cfg = harness.build_model_config(cfg, vocab_size=data.vocab_size, special_ids=data.special_ids)
  check_lengths(cfg, data.train)
  setup = harness.build(cfg, model_cfg, OBJECTIVE)
  source = harness.StreamSource(sft_data.train_stream(cfg, data, model_cfg, setup.mesh))

  def step_flops(host_batch):
    seq_len = host_batch.input_ids.shape[-1]
    patches = (int(np.prod(host_batch.pixel_values.shape[:-1])) * jax.process_count()
               if host_batch.pixel_values is not None else 0)
    return flops.step_flops(model_cfg, cfg.data.batch_size, seq_len, patches, data.patches_per_image,
                            cfg.model.freeze_vision)

  eval_fn = sft_data.make_eval_fn(cfg, data, model_cfg, setup) if cfg.eval.batches else None

  def finish(state, info) -> dict:
    out: dict[str, Any] = {}
    if eval_fn is not None:
      out["eval"] = eval_fn(state.params, info["final_step"])
    out["answers"] = answers(cfg, data, model_cfg, state.params, os.path.join(run_dir, "answers"))
    if data.info.get("root"):
      out["data_root"] = data.info["root"]
    return out

  return driver.drive(cfg, setup, source, stage="sft", params_fn=harness.hf_params_fn(setup, cfg.model.hf_dir),
                      eval_fn=eval_fn, flops_fn=step_flops, finish=finish, tokenizer=data.tokenizer,
                      loop_cfg=loop_config(cfg, data) if data.tokenizer is not None else None)
