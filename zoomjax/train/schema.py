"""The run-config schema of `python -m zoomjax.train`: frozen, typed sections with range checks.

`TrainConfig` is the root; each section documents its fields (paper symbols for GRPO's) and checks
ranges and choices in `validate`, raising `ConfigError` naming the dotted key and echoing the value.
Loading (YAML files, `base:` chains, dotted overrides) is `zoomjax.train.config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from zoomjax.protocol.templates import VERSIONS


class ConfigError(ValueError):
  """A run-configuration key or value is invalid; the message names the dotted key."""


# ------------------------------------------------------------------------------------------ sections
@dataclasses.dataclass(frozen=True)
class ModelSection:
  """Which model to train and how to run it.

  Attributes:
    preset: `tiny`, `qwen2_5_vl_3b` or `qwen2_5_vl_7b` (ignored when `hf_dir` is set).
    hf_dir: a Hugging Face Qwen2.5-VL directory: config and initial weights are loaded from it.
    text / vision: overrides of `zoomjax.model.config.TextConfig` / `VisionConfig` fields (preset only).
    dtype: compute dtype of activations and matmuls (`bfloat16` for mixed precision).
    param_dtype: dtype of the master weights and optimizer state (keep `float32`).
    remat_policy: `none`, `full`, `dots`, `dots_with_no_batch_dims`, `save_attn_out`.
    scan_layers: stack layers under `nn.scan` (fast compile).
    freeze_vision: train the language model (and merger) only; the vision blocks get no update.
  """

  preset: str = "tiny"
  hf_dir: str | None = None
  text: dict = dataclasses.field(default_factory=dict)
  vision: dict = dataclasses.field(default_factory=dict)
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat_policy: str = "none"
  scan_layers: bool = True
  freeze_vision: bool = False

  def validate(self, key: str) -> None:
    _one_of(f"{key}.preset", self.preset, ("tiny", "qwen2_5_vl_3b", "qwen2_5_vl_7b"))
    _one_of(f"{key}.dtype", self.dtype, ("float32", "bfloat16"))
    _one_of(f"{key}.param_dtype", self.param_dtype, ("float32", "bfloat16"))
    _one_of(f"{key}.remat_policy", self.remat_policy,
            ("none", "full", "dots", "dots_with_no_batch_dims", "save_attn_out"))


@dataclasses.dataclass(frozen=True)
class DataSection:
  """Training data.

  Attributes:
    kind: `toy_earth` (generated on first use into `root`), `lrs_gro` (an SFT JSONL + image dir) or
      `synthetic` (a learnable copy task with one image per sequence; no files, for tests/benchmarks).
    root: data directory (Toy Earth output dir, or the LRS-GRO root). Relative paths are taken from
      the working directory; `{run_dir}` is replaced by the run directory.
    train_file / eval_file: JSONL files inside `root` (defaults depend on `kind`).
    image_dir: LRS-GRO images (defaults to `root/images`).
    tokenizer: an HF tokenizer dir, or `train` to train the in-process tokenizer on Toy Earth text
      (cached in `root/tokenizer`).
    protocol: trajectory format, `released` (ZoomEarth's) or `multiturn` (tool calls).
    protocol_version: the protocol's template version (`protocol.templates.VERSIONS`; empty = its
      default, e.g. `released-v1`, the exact released prompt). `released-toy-v1` is the short toy prompt
      with the crop request as a target; it flows to SFT, GRPO rollouts, evaluation and the export.
    box_loss_weight: SFT loss weight of the grounding tokens (box numbers and position words) against
      the other generated tokens' 1.
    image_max_pixels: pixel budget of every image (0 = the kind's default: Toy Earth's view budget, or
      the processor's default for LRS-GRO, whose views are at most 512 px a side anyway).
    cache_mb: memory for built examples (pixels included), so later epochs skip image decoding.
    eval_fraction: without `eval_file`, this fraction of the training file's images (at least one) is
      held out, with all their questions, for the held-out loss.
    num_images: Toy Earth images to generate; toy_seed: its generator seed.
    batch_size: global batch (sequences per optimizer step, before splitting into microbatches).
    seq_len: padded sequence length T.
    max_patches: vision patches budget per sequence (pieces of b sequences are padded to b * this);
      0 = the dataset's own maximum.
    max_images: image slots per sequence (likewise); 0 = the dataset's own maximum.
    shuffle_seed: data-order seed; num_epochs: passes over the data (0 = forever).
    pack: 0 = one example per training sequence, padded to `seq_len`. k >= 1 = as many whole examples per
      sequence as fit (`zoomjax.data.packing`: first fit within `seq_len` tokens, `max_patches` patch rows
      and `max_images` images; each example attends only to itself and keeps its own M-RoPE ids), so
      padding stops costing compute; `batch_size` counts sequences. `max_patches` / `max_images` left at 0
      become k x one example's maximum (room for the images of k examples). Held-out evaluation stays
      unpacked. Attention is dense, so packing pays where it removes padding without lengthening rows
      (`benchmarks/bench_pack.py`).
    pack_bins: sequences the packer fills at once (first fit); more fill better.
  """

  kind: str = "toy_earth"
  root: str = "{run_dir}/data"
  train_file: str | None = None
  eval_file: str | None = None
  image_dir: str | None = None
  tokenizer: str = "train"
  protocol: str = "released"
  protocol_version: str = ""
  box_loss_weight: int = 1
  image_max_pixels: int = 0
  eval_fraction: float = 0.125
  cache_mb: int = 2048
  num_images: int = 64
  toy_seed: int = 0
  batch_size: int = 8
  seq_len: int = 256
  max_patches: int = 0
  max_images: int = 0
  shuffle_seed: int = 0
  num_epochs: int = 0
  pack: int = 0
  pack_bins: int = 8

  def validate(self, key: str) -> None:
    _one_of(f"{key}.kind", self.kind, ("toy_earth", "lrs_gro", "synthetic"))
    _one_of(f"{key}.protocol", self.protocol, ("released", "multiturn"))
    if self.protocol_version:
      _one_of(f"{key}.protocol_version", self.protocol_version, VERSIONS[self.protocol])
    _positive(f"{key}.box_loss_weight", self.box_loss_weight)
    _non_negative(f"{key}.image_max_pixels", self.image_max_pixels)
    _in_range(f"{key}.eval_fraction", self.eval_fraction, 0.0, 0.9)
    _non_negative(f"{key}.cache_mb", self.cache_mb)
    _positive(f"{key}.batch_size", self.batch_size)
    _positive(f"{key}.seq_len", self.seq_len)
    _positive(f"{key}.num_images", self.num_images)
    for f in ("max_patches", "max_images", "num_epochs", "pack"):
      _non_negative(f"{key}.{f}", getattr(self, f))
    _positive(f"{key}.pack_bins", self.pack_bins)


@dataclasses.dataclass(frozen=True)
class OptimSection:
  """AdamW with linear warmup then cosine decay, global-norm clipping, gradient accumulation.

  Attributes:
    lr: peak learning rate (after warmup). end_lr_ratio: final lr = lr * end_lr_ratio.
    warmup_steps: linear warmup from 0. decay_steps: cosine length (0 = run.steps - warmup_steps).
    schedule: `cosine` or `constant` (after warmup).
    weight_decay: decoupled decay on matrices (not on norms and biases). b1, b2, eps: Adam moments.
    clip_norm: global gradient-norm clip (0 = off).
    grad_accum: microbatches per optimizer step; `data.batch_size` must divide by it.
    vision_lr_scale: the vision tower's learning rate (patch embedding and blocks, not the merger) as a
      multiple of `lr` (1 = the same; ignored when `model.freeze_vision`).
  """

  lr: float = 3e-5
  end_lr_ratio: float = 0.1
  warmup_steps: int = 0
  decay_steps: int = 0
  schedule: str = "cosine"
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_norm: float = 1.0
  grad_accum: int = 1
  vision_lr_scale: float = 1.0

  def validate(self, key: str) -> None:
    _positive(f"{key}.lr", self.lr)
    _positive(f"{key}.vision_lr_scale", self.vision_lr_scale)
    _in_range(f"{key}.end_lr_ratio", self.end_lr_ratio, 0.0, 1.0)
    _non_negative(f"{key}.warmup_steps", self.warmup_steps)
    _non_negative(f"{key}.decay_steps", self.decay_steps)
    _one_of(f"{key}.schedule", self.schedule, ("cosine", "constant"))
    _non_negative(f"{key}.weight_decay", self.weight_decay)
    _in_range(f"{key}.b1", self.b1, 0.0, 1.0)
    _in_range(f"{key}.b2", self.b2, 0.0, 1.0)
    _positive(f"{key}.eps", self.eps)
    _non_negative(f"{key}.clip_norm", self.clip_norm)
    _positive(f"{key}.grad_accum", self.grad_accum)


@dataclasses.dataclass(frozen=True)
class MeshSection:
  """Device mesh `(data, fsdp, tensor)` and logical-axis rules.

  Attributes:
    data / fsdp / tensor: axis sizes; one may be -1 (= the remaining devices). Their product must
      equal the device count (all processes together).
    rules: overrides of the logical-axis rules, `{logical_name: mesh_axis | [mesh_axes] | null}`,
      applied on top of `zoomjax.model.sharding`'s default table.
    devices: use only the first N devices (0 = all), e.g. a 1x1x1 mesh on an 8-device host.
  """

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  rules: dict = dataclasses.field(default_factory=dict)
  devices: int = 0

  def validate(self, key: str) -> None:
    sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
    for name, v in sizes.items():
      if v != -1 and v < 1:
        raise ConfigError(f"{key}.{name}: must be a positive size or -1 (fill), got {v!r}")
    _non_negative(f"{key}.devices", self.devices)
    if sum(v == -1 for v in sizes.values()) > 1:
      raise ConfigError(f"{key}: at most one axis may be -1 (fill), got {sizes}")
    for logical, axes in self.rules.items():
      ok = axes is None or axes in ("data", "fsdp", "tensor") or (
          isinstance(axes, (list, tuple)) and all(a in ("data", "fsdp", "tensor") for a in axes))
      if not ok:
        raise ConfigError(f"{key}.rules.{logical}: expected null, a mesh axis (data/fsdp/tensor) or a "
                          f"list of them, got {axes!r}")


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
  """Orbax checkpoints.

  Attributes:
    dir: checkpoint directory (`{run_dir}` is replaced by the run dir).
    every: save every N optimizer steps (0 = not by step count).
    every_minutes: also save when this many minutes passed since the last save (0 = not by time), so
      an interrupted run loses minutes, not the run. The end of the run, SIGTERM and SIGINT always save.
    keep: checkpoints kept (older ones are deleted).
    async_save: write in a background thread while training continues.
    resume: restore the latest complete checkpoint in `dir` when one exists.
    export_params: write a params-only checkpoint to `export_dir` at the end (for inference).
    export_dir: where (`gs://…` works; multi-host runs need a filesystem all hosts share).
    export_hf: write an HF directory `<run_dir>/hf` (`zoomjax.hf.save`; process 0 gathers) with the
      tokenizer and `zoomjax_infer.json` (the inference defaults), ready for `zoomjax.infer --model`.
  """

  dir: str = "{run_dir}/checkpoints"
  every: int = 100
  every_minutes: float = 10.0
  keep: int = 3
  async_save: bool = True
  resume: bool = True
  export_params: bool = True
  export_dir: str = "{run_dir}/params"
  export_hf: bool = True

  def validate(self, key: str) -> None:
    _non_negative(f"{key}.every", self.every)
    _non_negative(f"{key}.every_minutes", self.every_minutes)
    _positive(f"{key}.keep", self.keep)


@dataclasses.dataclass(frozen=True)
class LogSection:
  """Observability: every N steps, metrics go to the progress bar, TensorBoard and `metrics.jsonl`.

  Attributes:
    every: log interval in optimizer steps. progress: show a tqdm bar. tensorboard / jsonl: writers.
    peak_flops: device peak FLOP/s per chip for the MFU estimate (0 = from the table, or measured on CPU).
  """

  every: int = 1
  progress: bool = True
  tensorboard: bool = True
  jsonl: bool = True
  peak_flops: float = 0.0

  def validate(self, key: str) -> None:
    _positive(f"{key}.every", self.every)
    _non_negative(f"{key}.peak_flops", self.peak_flops)


@dataclasses.dataclass(frozen=True)
class EvalSection:
  """Held-out evaluation: loss and token accuracy on `eval_batches` batches every `every` steps.

  Attributes:
    every: interval in optimizer steps (0 = only at the end). batches: eval batches (0 = no eval).
    answers: also run the perception loop on this many held-out questions at the end for answer
      accuracy and APO IoU (0 = off). answer_batch: questions decoded together.
    max_new_tokens: generation budget per decoding stage.
    outcome: after the last stage (when answers were evaluated): the zoom-off ablation and the image-blind
      baseline on the same questions, `results.md`, `curves.png` and `zoom.png` (`zoomjax.train.outcome`).
    zoom_images: at each held-out answer evaluation of a GRPO stage, this many of its questions answered
      again and drawn (view, the model's boxes, crops, GT box) as the TensorBoard image `eval/zoom`
      (0 = off).
  """

  every: int = 0
  batches: int = 4
  answers: int = 0
  answer_batch: int = 16
  max_new_tokens: int = 256
  outcome: bool = True
  zoom_images: int = 4

  def validate(self, key: str) -> None:
    _non_negative(f"{key}.every", self.every)
    _non_negative(f"{key}.zoom_images", self.zoom_images)
    _non_negative(f"{key}.batches", self.batches)
    _non_negative(f"{key}.answers", self.answers)
    _positive(f"{key}.answer_batch", self.answer_batch)
    _positive(f"{key}.max_new_tokens", self.max_new_tokens)


@dataclasses.dataclass(frozen=True)
class DistributedSection:
  """Multi-process (multi-host) launch: `jax.distributed.initialize`.

  Attributes:
    enabled: `auto` (initialize when the env names a coordinator, a TPU pod or a Slurm job), true, false.
    coordinator: `host:port` of process 0 (env `ZOOMJAX_COORDINATOR` / `JAX_COORDINATOR_ADDRESS`).
    num_processes / process_id: env `ZOOMJAX_NUM_PROCESSES` / `ZOOMJAX_PROCESS_ID` when -1.
    local_device_count: CPU only: simulated devices per process (`python -m zoomjax.train` sets the
      XLA host-platform device count before JAX starts; 0 = leave XLA_FLAGS alone).
    timeout_s: initialization timeout.
  """

  enabled: bool | str = "auto"
  coordinator: str | None = None
  num_processes: int = -1
  process_id: int = -1
  local_device_count: int = 0
  timeout_s: int = 300

  def validate(self, key: str) -> None:
    _one_of(f"{key}.enabled", self.enabled, (True, False, "auto"))
    _non_negative(f"{key}.local_device_count", self.local_device_count)
    _positive(f"{key}.timeout_s", self.timeout_s)


@dataclasses.dataclass(frozen=True)
class GrpoSection:
  """GRPO (SPEC §5), used when `algo: grpo`. Paper symbols in brackets.

  Attributes:
    group_size: [G] trajectories sampled per prompt; `data.batch_size` (trajectories per rollout batch)
      must be a multiple of it.
    inner_steps: [μ] optimizer updates per rollout batch (> 1: `logp_old` is recomputed by a forward
      pass before the first update, and its gap to the sampler's log-probs is logged).
    beta: [β] weight of the k3 KL to the frozen initial policy (0 = no reference forward).
    eps_low / eps_high: [ε] clip range of the ratio, `[1 - eps_low, 1 + eps_high]` (eps_high 0 = eps_low).
    advantage: `std` ((r - mean) / (std + eps)) or `mean` (r - mean, the released trainer).
    aggregation: `seq-mean-token-mean` (SPEC §5) or `token-mean`.
    per_term_norm: normalise each reward term over its group before summing (GDPO-style).
    filter_zero_variance: groups whose rewards are all equal carry no gradient; their rows are masked
      (static shapes) and the filtered fraction is logged.
    temperature: sampling temperature; the log-probs of the loss use the same temperature (logits / T).
    top_p: nucleus sampling (1 = off).
    reward: `paper` (IoU + sigmoid Region-Guided + answer + format_weight * format) or `released`
      (512-window IoU + tanh Region-Guided + answer + format, unweighted).
    terms: reward terms used (ablations drop some): any of iou, region_guided, answer, format.
    format_weight: weight of the format term in the paper's total (0.05).
    alpha_k: [k] of the paper's Region-Guided alpha = k * resolution.
    max_new_tokens: generation budget per stage / turn; max_turns: zooms allowed (multiturn).
    rl_file: prompts (JSONL in `data.root`); eval_file: held-out questions for the answer evaluation.
    init_from: an SFT run dir (its `hf/` export) or an HF dir; empty: `model.hf_dir`, else random init.
  """

  group_size: int = 4
  inner_steps: int = 1
  beta: float = 0.04
  eps_low: float = 0.2
  eps_high: float = 0.0
  advantage: str = "std"
  aggregation: str = "seq-mean-token-mean"
  per_term_norm: bool = False
  filter_zero_variance: bool = True
  temperature: float = 1.0
  top_p: float = 1.0
  reward: str = "paper"
  terms: list = dataclasses.field(default_factory=lambda: ["iou", "region_guided", "answer", "format"])
  format_weight: float = 0.05
  alpha_k: float = 0.04
  max_new_tokens: int = 256
  max_turns: int = 1
  rl_file: str = "rl.jsonl"
  eval_file: str = "test.jsonl"
  init_from: str = ""

  def validate(self, key: str) -> None:
    _positive(f"{key}.group_size", self.group_size)
    _positive(f"{key}.inner_steps", self.inner_steps)
    _non_negative(f"{key}.beta", self.beta)
    _in_range(f"{key}.eps_low", self.eps_low, 0.0, 1.0)
    _non_negative(f"{key}.eps_high", self.eps_high)
    _one_of(f"{key}.advantage", self.advantage, ("std", "mean"))
    _one_of(f"{key}.aggregation", self.aggregation, ("seq-mean-token-mean", "token-mean"))
    _positive(f"{key}.temperature", self.temperature)
    _in_range(f"{key}.top_p", self.top_p, 0.0, 1.0)
    _one_of(f"{key}.reward", self.reward, ("paper", "released"))
    for t in self.terms:
      _one_of(f"{key}.terms", t, ("iou", "region_guided", "answer", "format"))
    _non_negative(f"{key}.format_weight", self.format_weight)
    _positive(f"{key}.alpha_k", self.alpha_k)
    _positive(f"{key}.max_new_tokens", self.max_new_tokens)
    _positive(f"{key}.max_turns", self.max_turns)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The whole run.

  Attributes:
    run_dir: where everything goes (config.yaml, checkpoints/, params/, hf/, metrics.jsonl, tb/).
    algo: `sft` (supervised fine-tuning) or `grpo` (RL from `grpo.init_from`).
    steps: optimizer steps to train. seed: parameter-init, sampling and dropout RNG seed.
    then: the next stage, run after this one in the same `run_dir`: overrides of this config (e.g.
      `{algo: grpo, steps: 60, grpo: {...}}`). Unless it sets them, its `grpo.init_from` is this
      stage's run (its `hf/` export) and its `checkpoint.dir` is `{run_dir}/checkpoints_<algo>`, so each
      stage resumes from its own checkpoints. `summary.json` keeps every stage under `stages`. `null`
      (e.g. `then=null` on the command line) runs this stage alone.
  """

  run_dir: str = "runs/default"
  algo: str = "sft"
  steps: int = 100
  seed: int = 0
  model: ModelSection = dataclasses.field(default_factory=ModelSection)
  data: DataSection = dataclasses.field(default_factory=DataSection)
  optim: OptimSection = dataclasses.field(default_factory=OptimSection)
  mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
  checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
  log: LogSection = dataclasses.field(default_factory=LogSection)
  eval: EvalSection = dataclasses.field(default_factory=EvalSection)
  distributed: DistributedSection = dataclasses.field(default_factory=DistributedSection)
  grpo: GrpoSection = dataclasses.field(default_factory=GrpoSection)
  then: dict | None = None

  def validate(self, key: str = "") -> None:
    _one_of("algo", self.algo, ("sft", "grpo"))
    _positive("steps", self.steps)
    if not self.run_dir:
      raise ConfigError("run_dir: must be a non-empty path, got ''")
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if dataclasses.is_dataclass(v):
        v.validate(f.name)
    if self.data.batch_size % self.optim.grad_accum:
      raise ConfigError(f"optim.grad_accum: data.batch_size={self.data.batch_size} is not divisible by "
                        f"grad_accum={self.optim.grad_accum}")
    if self.algo == "grpo" and self.data.batch_size % self.grpo.group_size:
      raise ConfigError(f"grpo.group_size: data.batch_size={self.data.batch_size} (trajectories per rollout "
                        f"batch) is not a multiple of group_size={self.grpo.group_size}")

  def path(self, template: str) -> str:
    """Expands `{run_dir}` in a configured path."""
    return template.replace("{run_dir}", self.run_dir)

  def replace(self, **kw) -> "TrainConfig":
    return dataclasses.replace(self, **kw)


# ------------------------------------------------------------------------------------------ checks
def _one_of(key: str, v: Any, allowed: Sequence[Any]) -> None:
  if v not in allowed:
    raise ConfigError(f"{key}: expected one of {list(allowed)}, got {v!r}")


def _positive(key: str, v: float) -> None:
  if not v > 0:
    raise ConfigError(f"{key}: must be > 0, got {v!r}")


def _non_negative(key: str, v: float) -> None:
  if not v >= 0:
    raise ConfigError(f"{key}: must be >= 0, got {v!r}")


def _in_range(key: str, v: float, lo: float, hi: float) -> None:
  if not lo <= v <= hi:
    raise ConfigError(f"{key}: must lie in [{lo}, {hi}], got {v!r}")
