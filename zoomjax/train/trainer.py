"""The SFT training loop: build mesh, model, state and data from a `TrainConfig`, then train.

    summary = train(cfg)         # returns {"run_dir", "final_step", "train_loss", "eval", ...}

What happens, in order: `jax.distributed.initialize` when several processes are launched; the mesh;
the model config and its params' shardings (logical rules); the optimizer; the train state, either
restored from the latest finalized checkpoint (exact resume: state, RNG and data position) or
initialized directly onto its shardings; the jitted step (in/out shardings, the state donated); the
loop with logging, periodic async checkpoints and SIGTERM handling; the final checkpoint, a params-only
export, and a held-out evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from zoomjax import hf
from zoomjax.train import batching, checkpoint, flops, mesh as mesh_lib
from zoomjax.train.config import ConfigError, TrainConfig, save_config
from zoomjax.train.logger import MetricsLogger
from zoomjax.train.loss import masked_xent
from zoomjax.train.optim import make_optimizer, trainable_labels
from zoomjax.train.state import TrainState, init_state
from zoomjax.train.step import make_eval_step, make_train_step

PREEMPTED_EXIT_CODE = 143  # what a SIGTERM-killed process reports; schedulers restart on it


# ------------------------------------------------------------------------------------------ distributed
def maybe_initialize_distributed(dc) -> None:
  """Calls `jax.distributed.initialize` when the config or the environment asks for several processes."""
  env = os.environ
  coordinator = dc.coordinator or env.get("ZOOMJAX_COORDINATOR") or env.get("JAX_COORDINATOR_ADDRESS")
  num = dc.num_processes if dc.num_processes >= 0 else int(env.get("ZOOMJAX_NUM_PROCESSES", "-1"))
  pid = dc.process_id if dc.process_id >= 0 else int(env.get("ZOOMJAX_PROCESS_ID", "-1"))
  if dc.enabled is False:
    return
  if dc.enabled == "auto" and not coordinator and "TPU_WORKER_HOSTNAMES" not in env and "SLURM_JOB_ID" not in env:
    return
  if jax.distributed.is_initialized():
    return
  kw: dict[str, Any] = {"initialization_timeout": dc.timeout_s}
  if coordinator:
    kw["coordinator_address"] = coordinator
  if num >= 0:
    kw["num_processes"] = num
  if pid >= 0:
    kw["process_id"] = pid
  logging.info("jax.distributed.initialize(%s)", kw)
  jax.distributed.initialize(**kw)


# ------------------------------------------------------------------------------------------ model
def build_model_config(cfg: TrainConfig, vocab_size: int | None = None, special_ids: dict | None = None):
  """The `ModelConfig` of the run: a preset with `model.text` / `model.vision` overrides, or `hf_dir`.

  `vocab_size` / `special_ids` (from a trained tokenizer) size the tiny preset's vocabulary."""
  from zoomjax.model.config import ConfigError as ModelConfigError, ModelConfig
  ms = cfg.model
  runtime = dict(scan_layers=ms.scan_layers, remat_policy=ms.remat_policy, dtype=ms.dtype,
                 param_dtype=ms.param_dtype)
  try:
    if ms.hf_dir:
      return ModelConfig.from_hf_dir(ms.hf_dir, **runtime)
    if ms.preset == "tiny":
      base = ModelConfig.tiny(vocab_size=vocab_size or 512, **(special_ids or {}))
    else:
      base = getattr(ModelConfig, ms.preset)()
    text = dataclasses.replace(base.text, **ms.text) if ms.text else base.text
    vision = dict(ms.vision)
    vision.setdefault("out_hidden_size", text.hidden_size)
    vision = dataclasses.replace(base.vision, **vision)
    return dataclasses.replace(base, text=text, vision=vision, **runtime)
  except TypeError as e:  # unknown field in model.text / model.vision
    raise ConfigError(f"model.text/model.vision: {e}") from None
  except ModelConfigError as e:
    raise ConfigError(f"model: {e}") from None


def run_rules(cfg: TrainConfig) -> tuple:
  """The logical-axis rules of the run: the model's table, config overrides, and the batch layout.

  The batch is split over `("data", "fsdp")` by the S axis of the pieces (a vmap with `spmd_axis_name`),
  so the per-sequence activation batch / patch axes are left unsharded.
  """
  rules = dict(mesh_lib.logical_rules(cfg.mesh.rules))
  for name in ("activation_batch", "activation_vision_patches", "activation_patches"):
    rules[name] = None
  return tuple(rules.items())


def make_model_loss(model_cfg) -> Callable:
  """`loss_fn(params, microbatch, rng)` for `[S, b, ...]` microbatches: the model runs on each sequence
  (vmapped over `b`, and over `S` with the batch mesh axes as `spmd_axis_name`)."""
  from zoomjax.model import apply

  def one(params, piece):
    inputs = {k: piece[k] for k in ("input_ids", "attention_mask", "position_ids", "image_index")}
    if "vision" in piece:
      inputs["vision"] = piece["vision"]
    logits = apply(model_cfg, params, inputs, piece.get("pixel_values"))
    return masked_xent(logits, piece["input_ids"], piece["loss_mask"])

  def loss_fn(params, mb, rng):
    del rng  # no dropout in Qwen2.5-VL
    per_shard = jax.vmap(lambda pc: one(params, pc))
    stats = jax.vmap(per_shard, spmd_axis_name=mesh_lib.BATCH_AXES)(mb)
    return {k: jnp.sum(v) for k, v in stats.items()}

  return loss_fn


# ------------------------------------------------------------------------------------------ state
def _path_key(path) -> tuple[str, ...]:
  return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def state_shardings(abstract_state: TrainState, param_sh: Any, mesh) -> TrainState:
  """Shardings for the whole state: params from the rules; optimizer leaves that mirror a parameter
  (Adam moments: same path suffix and shape) take its sharding; everything else is replicated."""
  flat_p = {_path_key(p): (s, leaf.shape) for (p, s), leaf in zip(
      jax.tree_util.tree_flatten_with_path(param_sh)[0], jax.tree_util.tree_leaves(abstract_state.params))}
  repl = mesh_lib.replicated(mesh)

  def opt_leaf(path, leaf):
    key = _path_key(path)
    for i in range(len(key)):
      hit = flat_p.get(key[i:])
      if hit is not None and tuple(hit[1]) == tuple(leaf.shape):
        return hit[0]
    return repl

  return TrainState(step=repl, params=param_sh,
                    opt_state=jax.tree_util.tree_map_with_path(opt_leaf, abstract_state.opt_state),
                    rng=repl, skipped=repl)


def with_shardings(abstract: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


@dataclasses.dataclass
class Setup:
  """Everything built from the config before the loop (also what the AOT compile and tests use)."""
  cfg: TrainConfig
  mesh: Any
  rules: tuple
  model_cfg: Any
  tx: Any
  schedule: Any
  abstract_state: TrainState        # ShapeDtypeStructs carrying shardings
  shardings: TrainState
  train_step: Callable              # jitted: (state, batch) -> (state, metrics)
  eval_step: Callable               # jitted: (params, batch) -> summed stats
  frozen: Any


def build(cfg: TrainConfig, model_cfg, mesh=None, loss_fn: Callable | None = None,
          abstract_params: Any = None, logical_specs: Any = None) -> Setup:
  """Mesh, shardings, optimizer and jitted step for `model_cfg` (or a custom `loss_fn` + params tree)."""
  from zoomjax.model import sharding as model_sharding
  mesh = mesh or mesh_lib.make_mesh(cfg.mesh)
  rules = run_rules(cfg)
  if abstract_params is None:
    from zoomjax.model.qwen2_5_vl import abstract_params as model_abstract, boxed_abstract_params
    import flax.linen as nn
    abstract_params = model_abstract(model_cfg)
    logical_specs = nn.get_partition_spec(boxed_abstract_params(model_cfg))
  param_sh = model_sharding.logical_to_shardings(logical_specs, abstract_params, mesh, rules)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps, abstract_params, cfg.model.freeze_vision)
  frozen = None
  if cfg.model.freeze_vision:
    frozen = jax.tree_util.tree_map(lambda l: l == "frozen", trainable_labels(abstract_params, True))
  abstract_state = jax.eval_shape(lambda p: init_state(p, tx, cfg.seed), abstract_params)
  shardings = state_shardings(abstract_state, param_sh, mesh)
  loss_fn = loss_fn or make_model_loss(model_cfg)
  batch_sh = batching.batch_sharding(mesh)
  repl = mesh_lib.replicated(mesh)
  train_step = jax.jit(make_train_step(loss_fn, tx, schedule, frozen), in_shardings=(shardings, batch_sh),
                       out_shardings=(shardings, repl), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(loss_fn), in_shardings=(param_sh, batch_sh), out_shardings=repl)
  return Setup(cfg, mesh, rules, model_cfg, tx, schedule, with_shardings(abstract_state, shardings), shardings,
               train_step, eval_step, frozen)


def init_train_state(setup: Setup, params_fn: Callable[[], Any] | None = None) -> TrainState:
  """A fresh state directly on its shardings. `params_fn()` gives initial params (default: random init)."""
  cfg = setup.cfg
  if params_fn is None:
    from zoomjax.model import init_params
    init = jax.jit(lambda key: init_params(setup.model_cfg, key), out_shardings=setup.shardings.params)
    params = init(jax.random.PRNGKey(cfg.seed))
  else:
    params = params_fn()
  make = jax.jit(lambda p: init_state(p, setup.tx, cfg.seed), out_shardings=setup.shardings, donate_argnums=0)
  return make(params)


# ------------------------------------------------------------------------------------------ signals
class _Preemption:
  """SIGTERM -> finish the current step, save, exit. Multi-process: JAX's preemption sync point."""

  def __init__(self):
    self.flag = False
    self._prev = None
    if jax.process_count() == 1:
      try:
        self._prev = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread
        self._prev = None

  def _handle(self, signum, frame):
    del signum, frame
    self.flag = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:
        return False
    return self.flag

  def restore(self):
    if self._prev is not None:
      signal.signal(signal.SIGTERM, self._prev)


# ------------------------------------------------------------------------------------------ loop
def run_loop(setup: Setup, state: TrainState, stream, ckpt: checkpoint.Checkpointer | None,
             logger: MetricsLogger, eval_fn: Callable[[Any, int], dict] | None = None,
             start_step: int = 0, patches_per_image: float = 0.0) -> tuple[TrainState, dict]:
  """Trains from `start_step` to `cfg.steps`. Returns (state, info) with the last metrics.

  `patches_per_image` (typical real image size) only feeds the FLOPs count of full-attention blocks."""
  cfg = setup.cfg
  preempt = _Preemption()
  peak, peak_src = (cfg.log.peak_flops, "config") if cfg.log.peak_flops else flops.device_peak_flops()
  devices = setup.mesh.devices.size
  total_peak = peak if jax.devices()[0].platform == "cpu" else peak * devices
  info: dict[str, Any] = {"peak_flops": total_peak, "peak_source": peak_src, "preempted": False}
  step = start_step
  last_saved = start_step if ckpt is not None and ckpt.latest_step() == start_step else None
  t_last, steps_since, tokens_since = None, 0, 0.0
  step_flops = None
  compile_s = None
  skipped_seen = 0
  try:
    for host_batch in stream:
      if step >= cfg.steps:
        break
      if step_flops is None:
        seq_len = host_batch["input_ids"].shape[-1]
        patches = (int(np.prod(host_batch["pixel_values"].shape[:-1])) * jax.process_count()
                   if "pixel_values" in host_batch else 0)
        step_flops = flops.step_flops(setup.model_cfg, cfg.data.batch_size, seq_len, patches,
                                      patches_per_image, cfg.model.freeze_vision)
        info["step_flops"] = step_flops
      valid_tokens = float(np.sum(host_batch["attention_mask"])) * jax.process_count()
      batch = batching.to_global(host_batch, setup.mesh)
      t0 = time.perf_counter()
      state, metrics = setup.train_step(state, batch)
      step += 1
      if compile_s is None:
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        info["first_step_s"] = compile_s
        t_last, steps_since, tokens_since = time.perf_counter(), 0, 0.0
      else:
        steps_since += 1
        tokens_since += valid_tokens
      if step % cfg.log.every == 0 or step == cfg.steps:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        if steps_since:
          dt = (now - t_last) / steps_since
          m.update(step_time_s=dt, tokens_per_s=tokens_since / (now - t_last))
          if total_peak and step_flops:
            m.update(mfu=step_flops / dt / total_peak, tflops_per_s=step_flops / dt / 1e12)
          t_last, steps_since, tokens_since = now, 0, 0.0
        if getattr(stream, "skipped", 0):
          m["examples_skipped"] = stream.skipped
        if m["skipped_total"] > skipped_seen:
          logger.write(f"step {step}: {int(m['skipped_total']) - skipped_seen} step(s) since the last log had a "
                       f"non-finite loss or gradient and were not applied ({int(m['skipped_total'])} in total; "
                       f"this step: loss={m['loss']}, grad_norm={m['grad_norm']})")
          skipped_seen = int(m["skipped_total"])
        logger.log(step, m)
        info["last"] = m
        info.setdefault("first_loss", m["loss"])
        info.setdefault("first_loss_step", step)
      logger.advance()
      if eval_fn is not None and cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.steps:
        logger.log(step, eval_fn(state.params, step), split="eval")
      if ckpt is not None and cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
        ckpt.save(step, state, stream.get_state(), {"time": time.time()})
        last_saved = step
      if preempt.reached(step):
        logger.write(f"SIGTERM: saving step {step} and stopping")
        if ckpt is not None and last_saved != step:
          ckpt.save(step, state, stream.get_state(), {"time": time.time(), "preempted": True})
          last_saved = step
        info["preempted"] = True
        break
    if ckpt is not None and last_saved != step and step > start_step:
      ckpt.save(step, state, stream.get_state(), {"time": time.time()})
    if ckpt is not None:
      ckpt.wait()
  finally:
    preempt.restore()
  info["final_step"] = step
  return state, info


# ------------------------------------------------------------------------------------------ entry
def train(cfg: TrainConfig, data=None) -> dict:
  """Runs the configured training. `data` overrides the configured data (a `zoomjax.train.sources.Data`)."""
  from zoomjax.train import sources
  maybe_initialize_distributed(cfg.distributed)
  run_dir = os.path.abspath(cfg.run_dir)
  os.makedirs(run_dir, exist_ok=True)
  if jax.process_index() == 0:
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
  mesh = mesh_lib.make_mesh(cfg.mesh)
  data = data or sources.build_data(cfg)
  model_cfg = build_model_config(cfg, vocab_size=data.vocab_size, special_ids=data.special_ids)
  setup = build(cfg, model_cfg, mesh)
  ckpt = checkpoint.Checkpointer(cfg.path(cfg.checkpoint.dir), keep=cfg.checkpoint.keep,
                                 async_save=cfg.checkpoint.async_save)
  stream = sources.train_stream(cfg, data, model_cfg, mesh)
  try:
    summary = _train(cfg, setup, model_cfg, data, ckpt, stream, run_dir)
  finally:
    stream.close()
    ckpt.close()
  if jax.process_index() == 0:
    with open(os.path.join(run_dir, "summary.json"), "w") as fh:
      json.dump(summary, fh, indent=1, default=str)
  return summary


def _train(cfg, setup, model_cfg, data, ckpt, stream, run_dir) -> dict:
  """Restore or initialize, train, evaluate, export (the body of `train`)."""
  from zoomjax.train import sources
  start = 0
  with mesh_ctx(setup):
    latest = ckpt.latest_step() if cfg.checkpoint.resume else None
    if latest is not None:
      state, data_state, _ = ckpt.restore(setup.abstract_state, latest)
      stream.set_state(data_state)
      start = int(latest)
      logging.info("resumed from %s step %d", ckpt.directory, start)
    else:
      params_fn = None
      if cfg.model.hf_dir:
        params_fn = lambda: hf.load(cfg.model.hf_dir, dtype=jnp.dtype(cfg.model.param_dtype),  # noqa: E731
                                    shardings=setup.shardings.params)[1]
      state = init_train_state(setup, params_fn)
    logger = MetricsLogger(run_dir, cfg.steps, start, progress=cfg.log.progress,
                           tensorboard=cfg.log.tensorboard, jsonl=cfg.log.jsonl)
    try:
      if start:
        logger.write(f"resumed from step {start} ({ckpt.directory})")
      eval_fn = sources.make_eval_fn(cfg, data, model_cfg, setup) if cfg.eval.batches else None
      state, info = run_loop(setup, state, stream, ckpt, logger, eval_fn, start, data.patches_per_image)
      summary: dict[str, Any] = {"run_dir": run_dir, "checkpoints": ckpt.directory, **info,
                                 "metrics": logger.jsonl_path, "tensorboard": logger.tb_dir}
      if not info["preempted"]:
        if eval_fn is not None:
          summary["eval"] = eval_fn(state.params, info["final_step"])
          logger.log(info["final_step"], summary["eval"], split="eval")
        if cfg.checkpoint.export_params:
          summary["params"] = checkpoint.export_params(
              cfg.path(cfg.checkpoint.export_dir), state.params,
              {"model_config": model_cfg.to_hf_dict(), "scan_layers": model_cfg.scan_layers,
               "param_dtype": model_cfg.param_dtype, "step": info["final_step"]})
        if cfg.checkpoint.export_hf:
          hf_out = os.path.join(run_dir, "hf")
          hf.save(hf_out, model_cfg, state.params)
          summary["hf"] = hf_out
        summary.update(sources.finish(cfg, data, model_cfg, state.params, run_dir))
    finally:
      logger.close()
  return summary


def mesh_ctx(setup: Setup):
  from zoomjax.model import sharding as model_sharding
  return model_sharding.activation_rules(setup.mesh, setup.rules)
