"""The sharded training harness, written once for every objective (SFT, GRPO).

    setup = build(cfg, model_cfg, objective)         # mesh, rules, shardings, optimizer, jitted step
    state, start = restore_or_init(setup, ckpt, source, params_fn)
    state, info = run_loop(setup, state, source, ckpt, logger, eval_fn, start)

An **objective** (`Objective`) says what one sequence contributes to the loss:
`objective.fn(logits, piece) -> {"loss_sum", "count", ...}`, float32 scalar *sums* for one sequence
(`count` is the loss's denominator: target tokens for a token mean, 1 for a sequence mean); `piece` is
the sequence's typed `zoomjax.train.pieces.Piece` (GRPO: a `GrpoPiece`), read by field
(`piece.loss_mask`, `piece.advantage`). The harness runs the model on every piece of a microbatch, sums
the dicts over pieces and microbatches (exact accumulation: zeros shaped by `jax.eval_shape`, every key
carried), divides the gradient of `loss_sum` by the total `count`, and turns the sums into metrics with
`objective.report`.

A **batch source** (`BatchSource`) is asked for the next host batch (a `Piece` of `[A, S_local, b, ...]`
numpy leaves) *given the current state* (`next(state)`): SFT reads its grain stream and ignores the
state; GRPO generates rollouts with the current params. `get_state` / `set_state` make the position
resumable; it is saved in every checkpoint.

What the harness owns: `jax.distributed` start-up, the run's model config, the logical-axis rules, the
state's shardings (Adam moments follow their params), state init or restore, the jitted step (state
donated, in/out shardings), SIGTERM / SIGINT handling (save, then exit 143 / 130), periodic checkpoints
(every N steps and every M minutes), logging, and FLOPs / MFU bookkeeping.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from zoomjax import hf
from zoomjax.model import apply, init_params
from zoomjax.model import sharding as model_sharding
from zoomjax.model.config import ConfigError as ModelConfigError, ModelConfig
from zoomjax.model.qwen2_5_vl import abstract_params as model_abstract_params, boxed_abstract_params
from zoomjax.train import batching, checkpoint, flops, mesh as mesh_lib
from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.logger import MetricsLogger
from zoomjax.train.optim import make_optimizer, trainable_labels
from zoomjax.train.pieces import Piece
from zoomjax.train.state import TrainState, init_state
from zoomjax.train.step import LossFn, make_eval_step, make_train_step, sum_report

PREEMPTED_EXIT_CODE = 143    # SIGTERM: what schedulers restart on
INTERRUPTED_EXIT_CODE = 130  # SIGINT (Ctrl-C)


# ------------------------------------------------------------------------------------------ objective
@dataclasses.dataclass(frozen=True)
class Objective:
  """Attributes:
    fn: `(logits float32[1, T, V], piece) -> {"loss_sum", "count", ...}` float32[] sums of one sequence.
      `piece` is the sequence's `Piece`: its model inputs and `loss_mask`, plus the fields of the batch
      source's subclass (GRPO's `GrpoPiece`: `piece.logp_old`, `piece.advantage`, ...).
    report: `sums over the step -> metrics` (jittable); default `sum_report`.
  """

  fn: Callable[[jax.Array, Piece], dict]
  report: Callable[[dict], dict] = sum_report


def piece_map(model_cfg: ModelConfig, fn: Callable[[jax.Array, Piece], Any]) -> Callable[[Any, Piece], Any]:
  """`(params, microbatch) -> fn(logits, piece)` for every piece of a `[S, b, ...]` microbatch.

  The model runs on each sequence alone (vmapped over `b`, and over `S` with the batch mesh axes as
  `spmd_axis_name`); outputs have leading axes `[S, b]`."""

  def one(params, piece: Piece):
    return fn(apply(model_cfg, params, piece.model_inputs(), piece.pixel_values), piece)

  def over_pieces(params, mb):
    return jax.vmap(jax.vmap(lambda pc: one(params, pc)), spmd_axis_name=mesh_lib.BATCH_AXES)(mb)

  return over_pieces


def objective_loss(model_cfg: ModelConfig, objective: Objective) -> LossFn:
  """The step's `loss_fn(params, microbatch, rng)`: the objective's sums over all pieces."""
  per_piece = piece_map(model_cfg, objective.fn)

  def loss_fn(params, mb, rng):
    del rng  # no dropout in Qwen2.5-VL
    return {k: jnp.sum(v) for k, v in per_piece(params, mb).items()}

  return loss_fn


# ------------------------------------------------------------------------------------------ batch source
class BatchSource(Protocol):
  """Where training batches come from. `next(state)` -> (host batch: a `Piece` of `[A, S_local, b, ...]`
  numpy leaves, host metrics to log); raises StopIteration when exhausted. `skipped`: examples it could
  not use."""

  skipped: int

  def next(self, state: TrainState) -> tuple[Piece, dict]: ...

  def get_state(self) -> Any: ...

  def set_state(self, state: Any) -> None: ...

  def close(self) -> None: ...


class StreamSource:
  """A `BatchSource` over an iterator of host batches with `get_state` / `set_state` (a `StepStream`)."""

  def __init__(self, stream):
    self.stream = stream

  @property
  def skipped(self) -> int:
    return getattr(self.stream, "skipped", 0)

  def next(self, state: TrainState) -> tuple[Piece, dict]:
    del state
    return next(self.stream), {}

  def get_state(self) -> Any:
    return self.stream.get_state()

  def set_state(self, state: Any) -> None:
    self.stream.set_state(state)

  def close(self) -> None:
    self.stream.close()


# ------------------------------------------------------------------------------------------ run set-up
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


def build_model_config(cfg: TrainConfig, vocab_size: int | None = None, special_ids: dict | None = None,
                       hf_dir: str | None = None) -> ModelConfig:
  """The `ModelConfig` of the run: a preset with `model.text` / `model.vision` overrides, or an HF dir
  (`hf_dir`, default `model.hf_dir`). `vocab_size` / `special_ids` (from a trained tokenizer) size the
  tiny preset's vocabulary."""
  ms = cfg.model
  runtime = dict(scan_layers=ms.scan_layers, remat_policy=ms.remat_policy, dtype=ms.dtype,
                 param_dtype=ms.param_dtype)
  hf_dir = hf_dir or ms.hf_dir
  try:
    if hf_dir:
      return ModelConfig.from_hf_dir(hf_dir, **runtime)
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

  def piece_fn(self, fn: Callable[[jax.Array, Piece], Any]) -> Callable[[Any, Piece], Any]:
    """Jitted `(params, batch) -> fn(logits, piece)` per piece, leaves `[A, S, b, ...]`, no gradient
    (GRPO's old-policy and reference log-probs)."""
    per_mb = piece_map(self.model_cfg, fn)
    mapped = lambda params, batch: jax.lax.map(lambda mb: per_mb(params, mb), batch)  # noqa: E731
    return jax.jit(mapped, in_shardings=(self.shardings.params, batching.batch_sharding(self.mesh)),
                   out_shardings=batching.batch_sharding(self.mesh))


def build(cfg: TrainConfig, model_cfg, objective: Objective | None = None, mesh=None,
          loss_fn: LossFn | None = None, abstract_params: Any = None, logical_specs: Any = None,
          report: Callable[[dict], dict] | None = None) -> Setup:
  """Mesh, shardings, optimizer and jitted step for `model_cfg` and `objective` (or, for tests, a raw
  `loss_fn(params, microbatch, rng)` over a custom params tree with its logical specs)."""
  mesh = mesh or mesh_lib.make_mesh(cfg.mesh)
  rules = run_rules(cfg)
  if abstract_params is None:
    abstract_params = model_abstract_params(model_cfg)
    logical_specs = nn.get_partition_spec(boxed_abstract_params(model_cfg))
  param_sh = model_sharding.logical_to_shardings(logical_specs, abstract_params, mesh, rules)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps, abstract_params, cfg.model.freeze_vision)
  frozen = None
  if cfg.model.freeze_vision:
    frozen = jax.tree_util.tree_map(lambda l: l == "frozen", trainable_labels(abstract_params, True))
  abstract_state = jax.eval_shape(lambda p: init_state(p, tx, cfg.seed), abstract_params)
  shardings = state_shardings(abstract_state, param_sh, mesh)
  if loss_fn is None:
    if objective is None:
      raise ValueError("build: give an objective (or a loss_fn)")
    loss_fn = objective_loss(model_cfg, objective)
  report = report or (objective.report if objective is not None else sum_report)
  batch_sh = batching.batch_sharding(mesh)
  repl = mesh_lib.replicated(mesh)
  train_step = jax.jit(make_train_step(loss_fn, tx, schedule, frozen, report),
                       in_shardings=(shardings, batch_sh), out_shardings=(shardings, repl), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(loss_fn), in_shardings=(param_sh, batch_sh), out_shardings=repl)
  return Setup(cfg, mesh, rules, model_cfg, tx, schedule, with_shardings(abstract_state, shardings), shardings,
               train_step, eval_step, frozen)


def init_train_state(setup: Setup, params_fn: Callable[[], Any] | None = None) -> TrainState:
  """A fresh state directly on its shardings. `params_fn()` gives initial params (default: random init).
  Call it outside `mesh_ctx`."""
  cfg = setup.cfg
  if params_fn is None:
    init = jax.jit(lambda key: init_params(setup.model_cfg, key), out_shardings=setup.shardings.params)
    with mesh_ctx(setup):
      params = init(jax.random.PRNGKey(cfg.seed))
  else:  # outside the activation-rules context: the loader builds its own abstract tree and shardings
    params = params_fn()
  make = jax.jit(lambda p: init_state(p, setup.tx, cfg.seed), out_shardings=setup.shardings, donate_argnums=0)
  return make(params)


def hf_params_fn(setup: Setup, hf_dir: str | None) -> Callable[[], Any] | None:
  """Initial params streamed from an HF directory onto the state's shardings (None: random init)."""
  if not hf_dir:
    return None
  return lambda: hf.load(hf_dir, dtype=jnp.dtype(setup.cfg.model.param_dtype), shardings=setup.shardings.params)[1]


def restore_or_init(setup: Setup, ckpt: checkpoint.Checkpointer, source: BatchSource,
                    params_fn: Callable[[], Any] | None = None) -> tuple[TrainState, int]:
  """The newest good checkpoint (state and source position) when `checkpoint.resume`, else a fresh state.

  Returns (state, start step)."""
  if setup.cfg.checkpoint.resume:
    found = ckpt.restore_latest(setup.abstract_state)
    if found is not None:
      step, state, source_state, _ = found
      source.set_state(source_state)
      logging.info("resumed from %s step %d", ckpt.directory, step)
      return state, int(step)
  return init_train_state(setup, params_fn), 0


def mesh_ctx(setup: Setup):
  """The activation sharding rules of the run (a context manager)."""
  return model_sharding.activation_rules(setup.mesh, setup.rules)


# ------------------------------------------------------------------------------------------ signals
class _Stop:
  """SIGTERM / SIGINT -> finish the current step, save, stop. Multi-process: JAX's preemption sync point."""

  def __init__(self):
    self.signum: int | None = None
    self._prev: dict[int, Any] = {}
    if jax.process_count() == 1:
      for sig in (signal.SIGTERM, signal.SIGINT):
        try:
          self._prev[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
          pass

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # noqa: PLC0415 (multi-process only)
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signum = self.signum or signal.SIGTERM
          return True
      except RuntimeError:
        pass
      return False
    return self.signum is not None

  @property
  def exit_code(self) -> int:
    return INTERRUPTED_EXIT_CODE if self.signum == signal.SIGINT else PREEMPTED_EXIT_CODE

  def restore(self):
    for sig, prev in self._prev.items():
      signal.signal(sig, prev)


# ------------------------------------------------------------------------------------------ loop
def run_loop(setup: Setup, state: TrainState, source: BatchSource, ckpt: checkpoint.Checkpointer | None,
             logger: MetricsLogger, eval_fn: Callable[[Any, int], dict] | None = None,
             start_step: int = 0, flops_fn: Callable[[Piece], float] | None = None,
             tokens_fn: Callable[[Piece], float] | None = None) -> tuple[TrainState, dict]:
  """Trains from `start_step` to `cfg.steps`. Returns (state, info) with the last metrics.

  `flops_fn(host_batch)` gives the FLOPs of one step (for MFU); `tokens_fn(host_batch)` the tokens it
  processes on this process (default: its real tokens, attention mask > 0)."""
  cfg = setup.cfg
  stop = _Stop()
  peak, peak_src = (cfg.log.peak_flops, "config") if cfg.log.peak_flops else flops.device_peak_flops()
  devices = setup.mesh.devices.size
  total_peak = peak if jax.devices()[0].platform == "cpu" else peak * devices
  info: dict[str, Any] = {"peak_flops": total_peak, "peak_source": peak_src, "preempted": False}
  tokens_fn = tokens_fn or (lambda b: float((b.attention_mask > 0).sum()))  # ids > 1: packed
  step = start_step
  last_saved = start_step if ckpt is not None and ckpt.latest_step() == start_step else None
  saved_at = time.monotonic()
  t_last, steps_since, tokens_since = None, 0, 0.0
  step_flops = None
  compile_s = None
  skipped_seen = 0

  def save(meta: dict | None = None):
    nonlocal last_saved, saved_at
    ckpt.save(step, state, source.get_state(), {"time": time.time(), **(meta or {})})
    last_saved, saved_at = step, time.monotonic()

  try:
    while step < cfg.steps:
      try:
        host_batch, host_metrics = source.next(state)
      except StopIteration:
        break
      if step_flops is None and flops_fn is not None:
        step_flops = info["step_flops"] = flops_fn(host_batch)
      valid_tokens = tokens_fn(host_batch) * jax.process_count()
      batch = batching.to_global(host_batch, setup.mesh)
      t0 = time.perf_counter()
      state, metrics = setup.train_step(state, batch)
      step += 1
      if compile_s is None:
        jax.block_until_ready(metrics)
        compile_s = info["first_step_s"] = time.perf_counter() - t0
        t_last, steps_since, tokens_since = time.perf_counter(), 0, 0.0
      else:
        steps_since += 1
        tokens_since += valid_tokens
      if step % cfg.log.every == 0 or step == cfg.steps:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        m.update({k: float(v) for k, v in host_metrics.items()})
        now = time.perf_counter()
        if steps_since:
          dt = (now - t_last) / steps_since
          m.update(step_time_s=dt, tokens_per_s=tokens_since / (now - t_last))
          if total_peak and step_flops:
            m.update(mfu=step_flops / dt / total_peak, tflops_per_s=step_flops / dt / 1e12)
          t_last, steps_since, tokens_since = now, 0, 0.0
        if source.skipped:
          m["examples_skipped"] = source.skipped
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
      if ckpt is not None and step != last_saved and (
          (cfg.checkpoint.every and step % cfg.checkpoint.every == 0)
          or (cfg.checkpoint.every_minutes and time.monotonic() - saved_at >= 60 * cfg.checkpoint.every_minutes)):
        save()
      if stop.reached(step):
        name = "SIGINT" if stop.exit_code == INTERRUPTED_EXIT_CODE else "SIGTERM"
        logger.write(f"{name}: saving step {step} and stopping")
        if ckpt is not None and last_saved != step:
          save({"preempted": True})
        info.update(preempted=True, exit_code=stop.exit_code, signal=name)
        break
    if ckpt is not None and last_saved != step and step > start_step:
      save()
    if ckpt is not None:
      ckpt.wait()
  finally:
    stop.restore()
  info["final_step"] = step
  return state, info
