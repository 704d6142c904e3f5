"""GRPO on the harness: rollouts of the crop-and-zoom loop with the current params, rewards, group
advantages, and the clipped policy update (SPEC §5).

    summary = run(cfg)            # cfg.algo == "grpo"

One optimizer step (μ = `grpo.inner_steps` steps per rollout batch):

1. **Rollout** (`GrpoSource.next(state)`): `data.batch_size / G` prompts of the RL split, each repeated
   G times, through `zoomjax.rollout.loop.rollout` with a `Generator` over `state.params` (no copy of the
   weights), sampling at `grpo.temperature`; each group's image, vision tower and prompt prefill run once
   and the KV prefix is copied into its G rows (`group_size=G`). The *model* decides whether and where to
   crop. Trajectories are token-exact: the sampled ids, the loss mask (prompt, image and tool-response
   tokens 0), the sampler's log-probs, the images with their grids.
2. **Reward** (host + jit kernels, `zoomjax.rl`): IoU, Region-Guided, answer (WordNet judge), format and
   the total per trajectory, boxes in original pixels; the paper's or the released variant.
3. **Advantages** (`zoomjax.rl.grpo.group_advantages`): per group of G; budget-stopped (over-long)
   trajectories are invalid — out of their group's statistics and out of the loss; zero-variance groups
   are masked (static shapes, no recompilation) and their share is logged.
4. **Log-probs**: `logp_old` is the sampler's when μ = 1 and T = 1, else a forward pass with the params of
   the rollout (its gap to the sampler's is logged); `logp_ref` a forward pass with the frozen initial
   params (skipped at β = 0).
5. **Update**: `zoomjax.rl.grpo.policy_loss` as the harness objective: the same mesh, rules, donation and
   accumulation as SFT.

Convention for temperatures: one temperature T for sampling and for the learner's log-probs,
`log_softmax(logits / T)`; at T = 1 the sampler's raw log-probs are that policy's (top-p, when on, is
treated as part of the environment, as in verl / tunix).

Resume: the source's position (prompt order, rollout count) is saved in every checkpoint and the
sampling seed is derived from the rollout count, so a restarted run repeats the uninterrupted run's
rollouts exactly (μ = 1; with μ > 1 a restart inside a rollout batch regenerates it from the restored
params).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from zoomjax import hf
from zoomjax.data import tokenizer as T
from zoomjax.data.lrs_gro import LrsGroSource, Row, row_to_dict
from zoomjax.eval import answers, figures
from zoomjax.model.logprobs import token_entropy, token_logprobs
from zoomjax.rl import grpo as G
from zoomjax.rl.format import format_reward
from zoomjax.rl.judge import THRESHOLD, answer_scores
from zoomjax.rl.rewards import RewardConfig, total_reward
from zoomjax.rollout.generate import Generator, Sampling
from zoomjax.rollout.loop import LoopConfig, Request, rollout
from zoomjax.train import batching, driver, harness, sft_data
from zoomjax.train.config import ConfigError, TrainConfig
from zoomjax.train.mesh import BATCH_AXES
from zoomjax.train.pieces import GrpoPiece
from zoomjax.train.sft_data import PATCH_PIXELS, VIEW_SIDE

SUM_KEYS = ("tokens", "clipped_tokens", "kl_sum", "ratio_sum", "entropy_sum")


# ------------------------------------------------------------------------------------------ objective
def make_objective(gc) -> harness.Objective:
  """The GRPO objective for one sequence: `policy_loss` on its tokens, as sums for exact accumulation."""

  def fn(logits, piece: GrpoPiece):
    logp = token_logprobs(logits, piece.input_ids, gc.temperature)
    ent = token_entropy(logits, gc.temperature)
    loss_sum, denom, m = G.policy_loss(
        logp, piece.logp_old, piece.logp_ref if gc.beta else None, piece.advantage, piece.loss_mask,
        eps_low=gc.eps_low, eps_high=gc.eps_high or None, beta=gc.beta, aggregation=gc.aggregation, entropy=ent)
    return {"loss_sum": loss_sum, "count": denom, **{k: m[k] for k in SUM_KEYS}}

  def report(sums):
    n = jnp.maximum(sums["tokens"], 1.0)
    return {"loss": sums["loss_sum"] / jnp.maximum(sums["count"], 1.0), "tokens": sums["tokens"],
            "clip_fraction": sums["clipped_tokens"] / n, "kl": sums["kl_sum"] / n,
            "ratio_mean": sums["ratio_sum"] / n, "entropy": sums["entropy_sum"] / n}

  return harness.Objective(fn, report)


# ------------------------------------------------------------------------------------------ rewards
def reward_config(gc) -> RewardConfig:
  if gc.reward == "released":
    return RewardConfig(variant="released")
  return RewardConfig(variant="paper", alpha_k=gc.alpha_k, format_weight=gc.format_weight)


def score(trajs: list, rows: list[Row], sizes: list[tuple[int, int]], gc, protocol: str) -> dict[str, np.ndarray]:
  """Every reward term per trajectory (float32[N] each) and the total over `grpo.terms`."""
  n = len(trajs)
  pred = np.zeros((n, 4), np.float32)
  gt = np.zeros((n, 4), np.float32)
  pred_ok = np.zeros(n, bool)
  gt_ok = np.zeros(n, bool)
  for i, (t, row, (w, h)) in enumerate(zip(trajs, rows, sizes)):
    if t.box_original is not None:
      pred[i], pred_ok[i] = t.box_original, True
    box = row.box_original(w, h)
    if box is not None:
      gt[i], gt_ok[i] = box, True
  ans = answer_scores([t.answer for t in trajs], [r.ground_truth for r in rows])
  fmt = np.asarray([format_reward(t.steps, protocol) for t in trajs], np.float32)
  rc = reward_config(gc)
  out = {k: np.asarray(v) for k, v in total_reward(rc, pred, gt, ans, fmt, pred_ok, gt_ok,
                                                   np.asarray(sizes, np.float32)).items()}
  weights = {"iou": 1.0, "region_guided": 1.0, "answer": 1.0, "format": rc.beta}
  out["total"] = sum(weights[k] * out[k] for k in gc.terms).astype(np.float32)
  out["pred_ok"], out["gt_ok"] = pred_ok, gt_ok
  return out


# ------------------------------------------------------------------------------------------ batches
def trajectory_piece(t, seq_len: int, pad_id: int) -> dict:
  """A trajectory as an SFT-style piece (one sequence, padded to `seq_len`) plus its sampler log-probs."""
  n = len(t.token_ids)
  if n > seq_len:
    raise ValueError(f"a trajectory of {n} tokens exceeds data.seq_len={seq_len}")
  pad = seq_len - n
  pv, grid = t.vision_inputs()
  return {"input_ids": np.pad(t.token_ids.astype(np.int32), (0, pad), constant_values=pad_id)[None],
          "attention_mask": np.pad(np.ones(n, np.int32), (0, pad))[None],
          "loss_mask": np.pad(t.loss_mask.astype(np.int32), (0, pad))[None],
          "logp_old": np.pad(t.logprobs.astype(np.float32), (0, pad))[None],
          "pixel_values": pv, "image_grid_thw": grid}


def pad_grid(grid: np.ndarray, rows: int) -> np.ndarray:
  """int32[I, 3] -> int32[rows, 3] with zero rows (padding images) appended."""
  return batching.pad_rows(np.asarray(grid, np.int32).reshape(-1, 3), rows, "image_grid_thw")


class GrpoSource:
  """The GRPO batch source: `next(state)` rolls out with `state.params` and returns a scored batch.

  Attributes:
    position: JSON-able resume state (prompt epoch / offset, rollout batches made, inner step).
  """

  def __init__(self, cfg: TrainConfig, setup: harness.Setup, tokenizer, rows: list[Row], source: LrsGroSource,
               image_dir: str, loop_cfg: LoopConfig, ref_params: Any, max_patches: int):
    self.cfg, self.gc, self.setup = cfg, cfg.grpo, setup
    self.tokenizer, self.rows, self.source, self.image_dir = tokenizer, rows, source, image_dir
    self.loop_cfg, self.ref_params, self.max_patches = loop_cfg, ref_params, max_patches
    self.pad_id = setup.model_cfg.pad_token_id
    self.prompts = cfg.data.batch_size // self.gc.group_size
    self.position = {"epoch": 0, "offset": 0, "rollouts": 0, "inner": 0}
    self.skipped = 0
    self._cached: tuple[GrpoPiece, dict] | None = None
    lp = lambda logits, piece: token_logprobs(logits, piece.input_ids, self.gc.temperature)  # noqa: E731
    self._logprobs = setup.piece_fn(lp)
    s = batching.num_shards(setup.mesh)
    lo, hi = batching.local_shard_range(setup.mesh)
    a = cfg.optim.grad_accum
    if cfg.data.batch_size % (a * s):
      raise ConfigError(f"data.batch_size: {cfg.data.batch_size} trajectories must be divisible by grad_accum ({a}) "
                        f"x the mesh's batch shards data*fsdp ({s}) = {a * s}")
    self.layout = (a, s, cfg.data.batch_size // (a * s))
    self.local = (lo, hi)

  # -- prompts
  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.cfg.data.shuffle_seed, epoch]).permutation(len(self.rows))

  def _next_prompts(self) -> list[Row]:
    out = []
    while len(out) < self.prompts:
      order = self._order(self.position["epoch"])
      take = order[self.position["offset"]:self.position["offset"] + self.prompts - len(out)]
      out.extend(self.rows[i] for i in take)
      self.position["offset"] += len(take)
      if self.position["offset"] >= len(order):
        self.position.update(epoch=self.position["epoch"] + 1, offset=0)
    return out

  # -- the batch
  def next(self, state) -> tuple[GrpoPiece, dict]:
    if self._cached is not None and self.position["inner"] % self.gc.inner_steps:
      self.position["inner"] += 1
      return self._cached
    self._cached = self._rollout_batch(state)
    self.position["rollouts"] += 1
    self.position["inner"] = 1
    return self._cached

  def _rollout_batch(self, state) -> tuple[GrpoPiece, dict]:
    gc, cfg = self.gc, self.cfg
    t0 = time.perf_counter()
    prompts = self._next_prompts()
    rows = [r for r in prompts for _ in range(gc.group_size)]
    reqs = [Request(os.path.join(self.image_dir, r.image_name), r.question) for r in rows]
    gen = Generator(self.setup.model_cfg, state.params)
    seed = int(np.random.default_rng([cfg.seed, self.position["rollouts"]]).integers(2 ** 31))
    trajs = rollout(gen, self.tokenizer, reqs, self.loop_cfg, seed=seed, group_size=gc.group_size)
    t_roll = time.perf_counter() - t0
    sizes = [self.source.store.size(r.image_name) for r in rows]
    terms = score(trajs, rows, sizes, gc, cfg.data.protocol)
    valid = np.asarray([t.stop_reason != "budget" for t in trajs])
    flat = np.asarray(G.flat_groups(terms["total"], gc.group_size, valid))
    if gc.per_term_norm:
      weights = [reward_config(gc).beta if k == "format" else 1.0 for k in gc.terms]
      adv = G.term_advantages(np.stack([terms[k] for k in gc.terms]), gc.group_size, weights, mode=gc.advantage,
                              valid=valid)
    else:
      adv = G.group_advantages(terms["total"], gc.group_size, mode=gc.advantage, valid=valid)
    adv = np.asarray(adv, np.float32)
    use = valid & ~flat if gc.filter_zero_variance else valid
    pieces = []
    for t, a, u in zip(trajs, adv, use):
      pc = trajectory_piece(t, cfg.data.seq_len, self.pad_id)
      pc["loss_mask"] = pc["loss_mask"] * int(u)
      pc["advantage"] = np.asarray([a], np.float32)
      pc["logp_ref"] = np.zeros_like(pc["logp_old"])
      pc["image_grid_thw"] = pad_grid(pc["image_grid_thw"], gc.max_turns + 1)
      pieces.append(pc)
    lo, hi = self.local
    a_, _, b_ = self.layout
    mine = [pieces[(i * self.layout[1] + s) * b_ + j] for i in range(a_) for s in range(lo, hi) for j in range(b_)]
    host = batching.assemble(mine, (a_, hi - lo, b_),
                             lambda pc: batching.make_piece(self.setup.model_cfg, pc, self.max_patches, GrpoPiece))
    t1 = time.perf_counter()
    metrics: dict[str, float] = {}
    if gc.beta or gc.inner_steps > 1 or gc.temperature != 1.0:
      batch = batching.to_global(host, self.setup.mesh)
      if gc.inner_steps > 1 or gc.temperature != 1.0:
        recomputed = self._local(self._logprobs(state.params, batch))[..., 0, :]
        m = host.loss_mask > 0
        if gc.temperature == 1.0 and m.any():
          metrics["logp_old_gap"] = float(np.max(np.abs(recomputed - host.logp_old)[m]))
        host = host.replace(logp_old=recomputed.astype(np.float32))
      if gc.beta:
        ref = self._local(self._logprobs(self.ref_params, batch))[..., 0, :]
        host = host.replace(logp_ref=ref.astype(np.float32))
    t_lp = time.perf_counter() - t1
    metrics.update(self._batch_metrics(trajs, terms, valid, flat, use))
    metrics.update(time_rollout_s=t_roll, time_logprob_s=t_lp)
    return host, metrics

  def _local(self, x) -> np.ndarray:
    """This process's `[A, S_local, b, ...]` part of a global batch-sharded array."""
    if jax.process_count() == 1:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.global_array_to_host_local_array(x, self.setup.mesh,
                                                                        PartitionSpec(None, BATCH_AXES)))

  @staticmethod
  def _batch_metrics(trajs, terms, valid, flat, use) -> dict[str, float]:
    ious = [float(terms["iou"][i]) if terms["pred_ok"][i] else 0.0 for i in range(len(trajs)) if terms["gt_ok"][i]]
    out = {f"reward_{k}": float(np.mean(terms[k])) for k in ("iou", "region_guided", "answer", "format", "total")}
    out.update(
        accuracy=float(np.mean(terms["answer"] >= THRESHOLD)),
        crop_rate=float(np.mean(terms["pred_ok"])),
        apo_iou=float(np.mean(ious)) if ious else 0.0,
        response_tokens=float(np.mean([t.num_generated for t in trajs])),
        overlong_fraction=float(np.mean(~valid)),
        zero_variance_fraction=float(np.mean(flat)),
        trained_fraction=float(np.mean(use)))
    return out

  def get_state(self) -> dict:
    return dict(self.position)

  def set_state(self, state: dict | None) -> None:
    if state:
      self.position = {k: int(state.get(k, 0)) for k in ("epoch", "offset", "rollouts", "inner")}
      if self.position["inner"] % self.gc.inner_steps:   # restart inside a rollout batch: make it anew
        self.position["inner"] = 0
      self._cached = None

  def close(self) -> None:
    self._cached = None


# ------------------------------------------------------------------------------------------ driver
def init_dir(cfg: TrainConfig) -> str | None:
  """The HF directory GRPO starts from: `grpo.init_from` (an SFT run dir -> its `hf/`), else `model.hf_dir`."""
  src = cfg.grpo.init_from or cfg.model.hf_dir
  if not src:
    return None
  src = cfg.path(src)
  if os.path.isdir(os.path.join(src, "hf")):
    src = os.path.join(src, "hf")
  if not os.path.isfile(os.path.join(src, "config.json")):
    raise ConfigError(f"grpo.init_from: {src!r} is neither an HF model directory nor a run dir with an hf/ "
                      f"export; point it at an SFT run (run_dir) or an HF checkpoint")
  return src


def read_rows(path: str, image_root: str) -> tuple[list[Row], LrsGroSource]:
  if not os.path.isfile(path):
    raise ConfigError(f"grpo.rl_file: {path!r} does not exist")
  src = LrsGroSource(path, image_root)
  rows = list(src)
  if not rows:
    raise ConfigError(f"grpo.rl_file: no usable rows in {path!r}")
  return rows, src


def run(cfg: TrainConfig) -> dict:
  """Runs GRPO as configured (`algo: grpo`)."""
  gc = cfg.grpo
  run_dir = driver.open_run(cfg)
  root = sft_data.data_root(cfg)
  image_dir = os.path.join(root, cfg.data.image_dir or "images")
  start_dir = init_dir(cfg)
  if start_dir is not None:
    tokenizer = hf.load_tokenizer(start_dir)
    model_cfg = harness.build_model_config(cfg, hf_dir=start_dir)
  else:  # from scratch (tests, ablations): the preset, sized by the configured tokenizer
    tokenizer = sft_data.load_tokenizer(cfg, root)
    model_cfg = harness.build_model_config(cfg, vocab_size=T.padded_vocab_size(tokenizer),
                                           special_ids=T.special_ids(tokenizer))
  rows, source = read_rows(os.path.join(root, gc.rl_file), image_dir)
  setup = harness.build(cfg, model_cfg, make_objective(gc))
  params_fn = harness.hf_params_fn(setup, start_dir)
  max_pixels = cfg.data.image_max_pixels or (sft_data.toy_earth.TOY_VIEW_PIXELS if cfg.data.kind == "toy_earth"
                                             else LoopConfig().max_pixels)
  per_image = min(max_pixels, VIEW_SIDE * VIEW_SIDE) // PATCH_PIXELS
  max_patches = cfg.data.max_patches or -(-per_image * (gc.max_turns + 1) // 4) * 4
  version = cfg.data.protocol_version or None
  loop_cfg = LoopConfig(protocol=cfg.data.protocol, version=version, max_turns=gc.max_turns,
                        max_new_tokens=gc.max_new_tokens, max_total_tokens=cfg.data.seq_len, max_pixels=max_pixels,
                        sampling=Sampling(temperature=gc.temperature, top_p=gc.top_p),
                        batch_size=cfg.data.batch_size)
  ref_params = None  # the frozen initial policy (a second copy of the starting params)
  if gc.beta:
    ref_params = params_fn() if params_fn is not None else harness.init_train_state(setup).params
  src = GrpoSource(cfg, setup, tokenizer, rows, source, image_dir, loop_cfg, ref_params, max_patches)
  eval_rows = _eval_rows(cfg, root)
  eval_loop = LoopConfig(protocol=cfg.data.protocol, version=version, max_turns=gc.max_turns,
                         max_new_tokens=gc.max_new_tokens, max_total_tokens=cfg.data.seq_len, max_pixels=max_pixels,
                         batch_size=cfg.eval.answer_batch)

  done: dict[int, tuple[dict, dict]] = {}

  def held_out(params, step) -> tuple[dict, dict]:
    """(answers digest, pictures) of the held-out evaluation at `step`, computed once per step with one
    `Generator` (process 0; ({}, {}) without questions). The pictures: `eval.zoom_images` of the questions
    answered again and drawn (TensorBoard `eval/zoom`)."""
    if not eval_rows or jax.process_index() != 0:
      return {}, {}
    if step not in done:
      done.clear()
      gen = Generator(model_cfg, params)
      out_dir = os.path.join(run_dir, "answers", f"step_{step}")
      digest = answers.answer_eval(gen, tokenizer, eval_rows, image_dir, eval_loop, out_dir,
                                   model_cfg=model_cfg, batch_size=cfg.eval.answer_batch)
      panels = (answers.zoom_panels(gen, tokenizer, os.path.join(out_dir, "annotations.jsonl"), image_dir,
                                    eval_loop, cfg.eval.zoom_images) if cfg.eval.zoom_images else [])
      done[step] = digest, ({"zoom": np.asarray(figures.zoom_sheet_image(panels))} if panels else {})
    return done[step]

  def evaluate(params, step) -> dict:
    digest, images = held_out(params, step)
    return {**answers.flat(digest), "images": images}

  def finish(state, info) -> dict:
    out = {"data_root": root}
    if eval_rows:
      out["answers"] = held_out(state.params, info["final_step"])[0]
    return out

  return driver.drive(cfg, setup, src, stage="grpo", params_fn=params_fn,
                      eval_fn=evaluate if eval_rows and cfg.eval.every else None, eval_at_start=True, require_tokens=False,
                      tokens_fn=lambda b: float(b.loss_mask.sum()), finish=finish, tokenizer=tokenizer,
                      loop_cfg=eval_loop,
                      images_fn=(lambda params, step: held_out(params, step)[1]) if eval_rows else None)


def _eval_rows(cfg: TrainConfig, root: str) -> list[dict]:
  """The first `eval.answers` questions of `grpo.eval_file` (held-out images), or none."""
  path = os.path.join(root, cfg.grpo.eval_file)
  if not cfg.eval.answers or not os.path.isfile(path):
    return []
  return [row_to_dict(r) for r in LrsGroSource(path, None)][:cfg.eval.answers]
