"""What every training stage does around the loop: the run dir, checkpoints, logging, exports, summary.

    run_dir = open_run(cfg)
    summary = drive(cfg, setup, source, stage="sft", params_fn=..., finish=...)

`drive` restores or initializes the state (`harness.restore_or_init`), runs `harness.run_loop`, refuses
to call a run that trained on nothing a success (`TrainingFailed`), exports the params (orbax
params-only, and `RUN_DIR/hf`: an HF directory with the tokenizer and `zoomjax_infer.json`, the
inference defaults the model was trained for), refusing non-finite params, runs the stage's `finish`
(held-out evaluation), and writes `RUN_DIR/summary.json` with `"stages": {stage: digest}`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from zoomjax import hf
from zoomjax.data import tokenizer as T
from zoomjax.eval import answers
from zoomjax.train import checkpoint, harness
from zoomjax.train.config import ConfigError, TrainConfig, save_config
from zoomjax.train.logger import MetricsLogger
from zoomjax.train.pieces import Piece

INFER_DEFAULTS_FILE = hf.INFER_DEFAULTS_FILE


class TrainingFailed(RuntimeError):
  """The run finished without doing its work (nothing trained, non-finite params): exit 1."""


def open_run(cfg: TrainConfig) -> str:
  """Starts `jax.distributed` when asked, creates the run dir and saves the resolved config in it:
  `config.yaml`, or `config_<algo>.yaml` when `config.yaml` holds an earlier stage of a chain (another
  `algo`), so the first stage's config (with its `then:`) is what reruns the whole chain."""
  harness.maybe_initialize_distributed(cfg.distributed)
  run_dir = os.path.abspath(cfg.run_dir)
  try:
    os.makedirs(run_dir, exist_ok=True)
    if jax.process_index() == 0:
      path = os.path.join(run_dir, "config.yaml")
      if _saved_algo(path) not in (None, cfg.algo):
        path = os.path.join(run_dir, f"config_{cfg.algo}.yaml")
      save_config(cfg, path)
  except OSError as e:
    raise ConfigError(f"run_dir: cannot write to {run_dir!r} ({e.strerror or e}); choose a writable "
                      f"run_dir=...") from None
  return run_dir


def _saved_algo(path: str) -> str | None:
  try:
    with open(path) as fh:
      return (yaml.safe_load(fh) or {}).get("algo")
  except (OSError, yaml.YAMLError, AttributeError):
    return None


def all_finite(params: Any) -> bool:
  return bool(jax.device_get(jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(params)]))))


def export(cfg: TrainConfig, model_cfg, params: Any, step: int, tokenizer=None, loop_cfg=None) -> dict:
  """The params-only orbax export and `RUN_DIR/hf`; refuses non-finite params."""
  if not all_finite(params):
    raise TrainingFailed(f"the params at step {step} are not finite (NaN/inf); nothing was exported. Lower "
                         f"optim.lr or resume from an earlier checkpoint in {cfg.path(cfg.checkpoint.dir)}")
  out: dict[str, Any] = {}
  if cfg.checkpoint.export_params:
    out["params"] = checkpoint.export_params(
        cfg.path(cfg.checkpoint.export_dir), params,
        {"model_config": model_cfg.to_hf_dict(), "scan_layers": model_cfg.scan_layers,
         "param_dtype": model_cfg.param_dtype, "step": step})
  if cfg.checkpoint.export_hf:
    hf_out = os.path.join(os.path.abspath(cfg.run_dir), "hf")
    hf.save(hf_out, model_cfg, params)
    if jax.process_index() == 0:
      if tokenizer is not None:  # a transformers tokenizer (loaded) or a raw `tokenizers.Tokenizer`
        tokenizer.save_pretrained(hf_out) if hasattr(tokenizer, "save_pretrained") else T.save_tokenizer(tokenizer, hf_out)
      if loop_cfg is not None:
        with open(os.path.join(hf_out, INFER_DEFAULTS_FILE), "w") as fh:
          json.dump({"step": step, **dataclasses.asdict(loop_cfg)}, fh, indent=1, default=str)
    out["hf"] = hf_out
  return out


def _write_summary(run_dir: str, summary: dict, stage: str) -> None:
  """`summary.json`: this stage's summary at the top level and its digest under `stages` (earlier stages'
  digests are kept)."""
  path = os.path.join(run_dir, "summary.json")
  stages = {}
  if os.path.isfile(path):
    try:
      with open(path) as fh:
        stages = json.load(fh).get("stages", {}) or {}
    except (OSError, ValueError):
      stages = {}
  keep = ("final_step", "first_loss", "last", "eval", "answers", "preempted")
  stages[stage] = {k: summary[k] for k in keep if k in summary}
  summary["stages"] = stages
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    json.dump(summary, fh, indent=1, default=str)
  os.replace(tmp, path)


def drive(cfg: TrainConfig, setup: harness.Setup, source: harness.BatchSource, *, stage: str,
          params_fn: Callable[[], Any] | None = None, eval_fn: Callable[[Any, int], dict] | None = None,
          flops_fn: Callable[[Piece], float] | None = None, tokens_fn: Callable[[Piece], float] | None = None,
          finish: Callable[[Any, dict], dict] | None = None, tokenizer=None, loop_cfg=None,
          eval_at_start: bool = False, require_tokens: bool = True,
          images_fn: Callable[[Any, int], dict] | None = None) -> dict:
  """Restore or init, train, check, export, evaluate (`finish(state, info) -> dict`), summarize.

  `eval_at_start`: a fresh run logs `eval_fn` at step 0 too (the starting point of an RL stage).
  `require_tokens`: a last logged step with no target token fails the run (SFT; in GRPO a batch whose
  groups all had zero variance legitimately trains on nothing).
  `images_fn(params, step) -> {tag: uint8[H, W, 3]}`: pictures logged with the final answers (the
  intermediate evaluations carry theirs in `eval_fn`'s `images`)."""
  run_dir = os.path.abspath(cfg.run_dir)
  ckpt = checkpoint.Checkpointer(cfg.path(cfg.checkpoint.dir), keep=cfg.checkpoint.keep,
                                 async_save=cfg.checkpoint.async_save)
  try:
    state, start = harness.restore_or_init(setup, ckpt, source, params_fn)
    with harness.mesh_ctx(setup):
      logger = MetricsLogger(run_dir, cfg.steps, start, progress=cfg.log.progress,
                             tensorboard=cfg.log.tensorboard, jsonl=cfg.log.jsonl, stage=stage)
      try:
        if start:
          logger.write(f"resumed from step {start} ({ckpt.directory})")
        elif eval_at_start and eval_fn is not None:
          logger.log(0, eval_fn(state.params, 0), split="eval")
        state, info = harness.run_loop(setup, state, source, ckpt, logger, eval_fn, start, flops_fn, tokens_fn)
        summary: dict[str, Any] = {"run_dir": run_dir, "stage": stage, "checkpoints": ckpt.directory, **info,
                                   "metrics": logger.jsonl_path, "tensorboard": logger.tb_dir}
        if not info["preempted"]:
          _check_trained(cfg, info, start, source, require_tokens)
          summary.update(export(cfg, setup.model_cfg, state.params, info["final_step"], tokenizer, loop_cfg))
          if finish is not None:
            summary.update(finish(state, info))
            if summary.get("eval"):
              logger.log(info["final_step"], summary["eval"], split="eval")
            if summary.get("answers"):
              images = images_fn(state.params, info["final_step"]) if images_fn is not None else {}
              logger.log(info["final_step"], {**answers.flat(summary["answers"]), "images": images},
                         split="eval")
      finally:
        logger.close()
  finally:
    source.close()
    ckpt.close()
  if jax.process_index() == 0:
    _write_summary(run_dir, summary, stage)
  return summary


def _check_trained(cfg: TrainConfig, info: dict, start: int, source, require_tokens: bool) -> None:
  """A run that took no step, or whose steps saw no target token, is a failure, not a success."""
  if info["final_step"] <= start and start < cfg.steps:
    raise TrainingFailed(f"no training step was taken (the data ended at once; {source.skipped} examples "
                         f"skipped); check the data and data.seq_len")
  last = info.get("last") or {}
  tokens = last.get("tokens", 1.0)
  if require_tokens and (not np.isfinite(tokens) or tokens <= 0):
    raise TrainingFailed(f"the last logged step trained on 0 target tokens ({source.skipped} examples "
                         f"skipped); check data.seq_len and the data")
