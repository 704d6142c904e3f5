"""Run configuration for `python -m zoomjax.train`: frozen dataclasses, YAML files, dotted overrides.

A run config is a tree of frozen dataclasses (`TrainConfig` at the root). It is read from a YAML file
(which may name a `base:` YAML it extends), then `key=value` overrides from the command line are applied
(`optim.lr=1e-4`, `mesh.fsdp=4`, `model.text.num_hidden_layers=4`); values are parsed as YAML scalars.
Every field is type-checked and range-checked; errors name the dotted key and echo the bad value:

    ConfigError: optim.lr: expected a number, got 'fast' (str)
    ConfigError: mesh.dat: unknown key (did you mean 'mesh.data'?)

`to_dict` gives the resolved config back as plain YAML-able data (saved as `config.yaml` in the run dir).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from typing import Any, Mapping, Sequence, Union

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


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
  """

  kind: str = "toy_earth"
  root: str = "{run_dir}/data"
  train_file: str | None = None
  eval_file: str | None = None
  image_dir: str | None = None
  tokenizer: str = "train"
  protocol: str = "released"
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

  def validate(self, key: str) -> None:
    _one_of(f"{key}.kind", self.kind, ("toy_earth", "lrs_gro", "synthetic"))
    _one_of(f"{key}.protocol", self.protocol, ("released", "multiturn"))
    _non_negative(f"{key}.image_max_pixels", self.image_max_pixels)
    _in_range(f"{key}.eval_fraction", self.eval_fraction, 0.0, 0.9)
    _non_negative(f"{key}.cache_mb", self.cache_mb)
    _positive(f"{key}.batch_size", self.batch_size)
    _positive(f"{key}.seq_len", self.seq_len)
    _positive(f"{key}.num_images", self.num_images)
    for f in ("max_patches", "max_images", "num_epochs"):
      _non_negative(f"{key}.{f}", getattr(self, f))


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

  def validate(self, key: str) -> None:
    _positive(f"{key}.lr", self.lr)
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
    every: save every N optimizer steps (0 = only at the end and on SIGTERM).
    keep: checkpoints kept (older ones are deleted).
    async_save: write in a background thread while training continues.
    resume: restore the latest complete checkpoint in `dir` when one exists.
    export_params: write a params-only checkpoint to `export_dir` at the end (for inference).
    export_dir: where (`gs://…` works; multi-host runs need a filesystem all hosts share).
    export_hf: also write an HF directory `<run_dir>/hf` (`zoomjax.hf.save`; process 0 gathers).
  """

  dir: str = "{run_dir}/checkpoints"
  every: int = 100
  keep: int = 3
  async_save: bool = True
  resume: bool = True
  export_params: bool = True
  export_dir: str = "{run_dir}/params"
  export_hf: bool = False

  def validate(self, key: str) -> None:
    _non_negative(f"{key}.every", self.every)
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
  """

  every: int = 0
  batches: int = 4
  answers: int = 0
  answer_batch: int = 16
  max_new_tokens: int = 256

  def validate(self, key: str) -> None:
    _non_negative(f"{key}.every", self.every)
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
class TrainConfig:
  """The whole run.

  Attributes:
    run_dir: where everything goes (config.yaml, checkpoints/, params/, metrics.jsonl, tb/).
    steps: optimizer steps to train. seed: parameter-init and dropout RNG seed.
  """

  run_dir: str = "runs/default"
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

  def validate(self, key: str = "") -> None:
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


# ------------------------------------------------------------------------------------------ building
class _Loader(yaml.SafeLoader):
  """SafeLoader that also reads `1e-4` / `3E5` as floats (YAML 1.1 wants a dot and a signed exponent)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

def _type_name(t: Any) -> str:
  return {int: "an integer", float: "a number", str: "a string", bool: "a boolean", dict: "a mapping",
          list: "a list"}.get(t, getattr(t, "__name__", str(t)))


def _coerce(key: str, value: Any, tp: Any) -> Any:
  """Checks `value` against the annotation `tp` (int, float, str, bool, dict, Optional[...])."""
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    inner = [a for a in args if a is not type(None)]
    for i, a in enumerate(inner):
      try:
        return _coerce(key, value, a)
      except ConfigError:
        if i == len(inner) - 1:
          raise
    raise AssertionError("unreachable")
  if dataclasses.is_dataclass(tp):
    return _build(tp, value, key)
  bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
  if tp is bool:
    if not isinstance(value, bool):
      raise bad
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      if isinstance(value, float) and value.is_integer():
        return int(value)
      raise bad
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise bad
    return value
  if tp is dict:
    if not isinstance(value, Mapping):
      raise bad
    return dict(value)
  return value


def _build(cls: type, data: Any, prefix: str = "") -> Any:
  if data is None:
    data = {}
  if not isinstance(data, Mapping):
    raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r} ({type(data).__name__})")
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  kw = {}
  for k, v in data.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if k not in names:
      close = difflib.get_close_matches(str(k), names, n=1)
      hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
      raise ConfigError(f"{key}: unknown key{hint}; known keys: {names}")
    kw[k] = _coerce(key, v, hints[k])
  return cls(**kw)


def to_dict(cfg: Any) -> dict:
  """The config as plain data (what `config.yaml` in the run dir holds)."""
  return dataclasses.asdict(cfg)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
  parts = dotted.split(".")
  node = tree
  for p in parts[:-1]:
    nxt = node.get(p)
    if nxt is None:
      nxt = node[p] = {}
    elif not isinstance(nxt, dict):
      raise ConfigError(f"{dotted}: '{p}' is a value, not a section (got {nxt!r})")
    node = nxt
  node[parts[-1]] = value


def parse_override(arg: str) -> tuple[str, Any]:
  """`'optim.lr=1e-4'` -> `('optim.lr', 1e-4)`; the value is read as a YAML scalar/flow value."""
  if "=" not in arg:
    raise ConfigError(f"{arg}: overrides are key=value (e.g. optim.lr=1e-4), got {arg!r}")
  key, raw = arg.split("=", 1)
  key = key.strip()
  if not key or any(not p for p in key.split(".")):
    raise ConfigError(f"{arg}: malformed key {key!r}")
  try:
    value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
  except yaml.YAMLError as e:
    raise ConfigError(f"{key}: cannot parse value {raw!r}: {e}") from None
  return key, value


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict:
  path = os.path.abspath(path)
  if path in seen:
    raise ConfigError(f"base: cycle of config files {list(seen) + [path]}")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  with open(path) as fh:
    try:
      data = yaml.load(fh, Loader=_Loader) or {}
    except yaml.YAMLError as e:
      raise ConfigError(f"{path}: not valid YAML: {e}") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
  base = data.pop("base", None)
  if base is None:
    return data
  base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
  merged = _read_yaml(base_path, seen + (path,))
  _deep_update(merged, data)
  return merged


def _deep_update(dst: dict, src: Mapping) -> None:
  for k, v in src.items():
    if isinstance(v, Mapping) and isinstance(dst.get(k), dict) and k not in ("text", "vision", "rules"):
      _deep_update(dst[k], v)
    elif isinstance(v, Mapping) and isinstance(dst.get(k), dict):
      dst[k] = {**dst[k], **v}
    else:
      dst[k] = v


def resolve_config_path(name: str) -> str:
  """A path, or the name of a file in `configs/` (with or without `.yaml`)."""
  if os.path.isfile(name):
    return name
  for cand in (os.path.join(CONFIG_DIR, name), os.path.join(CONFIG_DIR, name + ".yaml")):
    if os.path.isfile(cand):
      return cand
  raise ConfigError(f"config file {name!r} not found (looked in the working directory and {CONFIG_DIR})")


def load_config(path: str | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> TrainConfig:
  """Reads a YAML config (or starts from `base`/defaults), applies `key=value` overrides, validates."""
  data: dict = {}
  if base:
    _deep_update(data, base)
  if path is not None:
    _deep_update(data, _read_yaml(resolve_config_path(path)))
  for arg in overrides:
    key, value = parse_override(arg)
    _set_dotted(data, key, value)
  cfg = _build(TrainConfig, data)
  cfg.validate()
  return cfg


def save_config(cfg: TrainConfig, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
  os.replace(tmp, path)
