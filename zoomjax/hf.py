"""Hugging Face checkpoint directories <-> zoomjax (config, params).

    cfg, params = hf.load(hf_dir, dtype=jnp.float32)            # safetensors, single file or sharded
    cfg, params = hf.load(hf_dir, mesh=mesh)                     # each leaf placed on its sharding
    hf.save(out_dir, cfg, params)                                # a directory transformers loads
    tok = hf.load_tokenizer(hf_dir)                              # AutoTokenizer, offline

Loading streams one parameter leaf at a time: the abstract params tree comes from `jax.eval_shape` (no
allocation), each leaf's HF tensor(s) are read from safetensors (memory-mapped), transformed to the
zoomjax layout through the model's leaf table (`zoomjax.model.leaf_table`) and `jax.device_put` straight
onto the leaf's target sharding, so a large checkpoint is never held twice. Pickle files (`*.bin`,
`*.pt`) are never opened.

Key styles accepted: the hub layout that `save_pretrained` writes and real checkpoints use
(`model.layers.N.…`, `model.embed_tokens.weight`, `model.norm.weight`, `visual.…`, `lm_head.weight`)
and the nested layout (`model.language_model.…`, `model.visual.…`). With tied embeddings the file has
no `lm_head.weight` (one is ignored if present).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from zoomjax.model.config import ConfigError, ModelConfig

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 4 * 1024 ** 3


class CheckpointError(RuntimeError):
  """An HF checkpoint directory cannot be loaded (or written): missing/mismatched files or tensors."""


# --------------------------------------------------------------------------------------------- reading
_ALIASES = (
    ("model.layers.", "model.language_model.layers."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.norm.", "model.language_model.norm."),
    ("visual.", "model.visual."),
)


def _candidates(key: str) -> list[str]:
  out = [key]
  for hub, nested in _ALIASES:
    if key.startswith(hub):
      out.append(nested + key[len(hub):])
  return out


def _canonical(key: str) -> str:
  for hub, nested in _ALIASES:
    if key.startswith(nested):
      return hub + key[len(nested):]
  return key


class _Reader:
  """Lazy access to the tensors of a safetensors checkpoint (one file or an index of shards)."""

  def __init__(self, hf_dir: str):
    from safetensors import safe_open
    self._safe_open = safe_open
    self.dir = hf_dir
    index = os.path.join(hf_dir, SAFE_INDEX)
    single = os.path.join(hf_dir, SAFE_SINGLE)
    if os.path.isfile(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from None
      self.key_file = {k: os.path.join(hf_dir, v) for k, v in weight_map.items()}
    elif os.path.isfile(single):
      self.key_file = {k: single for k in self._keys(single)}
    else:
      files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
      if files:
        self.key_file = {k: os.path.join(hf_dir, f) for f in files for k in self._keys(os.path.join(hf_dir, f))}
      else:
        pickles = sorted(f for f in os.listdir(hf_dir) if f.endswith((".bin", ".pt", ".pth", ".ckpt")))
        if pickles:
          raise CheckpointError(
              f"{hf_dir!r} holds only pickle weights ({', '.join(pickles[:3])}); zoomjax never unpickles files. "
              f"Convert them to safetensors first (e.g. transformers: model.save_pretrained(dir, "
              f"safe_serialization=True)).")
        raise CheckpointError(f"no weights in {hf_dir!r}: expected {SAFE_SINGLE}, {SAFE_INDEX} or *.safetensors")
    missing_files = sorted({f for f in self.key_file.values() if not os.path.isfile(f)})
    if missing_files:
      raise CheckpointError(f"the safetensors index of {hf_dir!r} names missing files: {missing_files[:3]}")
    self.canon = {}
    for k in self.key_file:
      self.canon.setdefault(_canonical(k), k)
    self._handles: dict[str, Any] = {}

  def _keys(self, path: str) -> list[str]:
    try:
      with self._safe_open(path, framework="np") as f:
        return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for corrupt headers
      raise CheckpointError(f"cannot read {path!r} as safetensors: {e}") from None

  def find(self, key: str) -> str | None:
    for c in _candidates(key):
      if c in self.key_file:
        return c
    return None

  def _handle(self, path: str):
    if path not in self._handles:
      self._handles[path] = self._safe_open(path, framework="np")
    return self._handles[path]

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._handle(self.key_file[key]).get_slice(key).get_shape())

  def get(self, key: str) -> np.ndarray:
    return self._handle(self.key_file[key]).get_tensor(key)


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _get_path(tree: Mapping, path: tuple[str, ...]):
  for p in path:
    tree = tree[p]
  return tree


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _resolve_shardings(cfg: ModelConfig, shardings, mesh, rules):
  if shardings is not None:
    return shardings
  if mesh is not None:
    from zoomjax.model import sharding as sh
    return sh.param_shardings(cfg, mesh, sh.DEFAULT_RULES if rules is None else rules)
  return None


_LAYER_RE = re.compile(r"^(model\.layers|visual\.blocks)\.(\d+)\.")


def load(hf_dir: str | os.PathLike, dtype: Any = jnp.float32, *, shardings: Any = None, mesh=None, rules=None,
         **cfg_overrides) -> tuple[ModelConfig, Any]:
  """Loads `config.json` + safetensors weights from a local HF directory.

  Args:
    hf_dir: directory with config.json and model.safetensors or model.safetensors.index.json + shards.
    dtype: parameter dtype (cfg.param_dtype); the compute dtype cfg.dtype follows it unless overridden.
    shardings: a tree of `jax.sharding.Sharding` matching the params, or
    mesh (+ rules): build it with `zoomjax.model.sharding.param_shardings`. Neither: default device.
    cfg_overrides: zoomjax runtime fields of ModelConfig (scan_layers, remat_policy, dtype, param_dtype).
  Returns:
    (cfg, params) with params `{"visual": …, "language": …}`.
  Raises:
    CheckpointError: no weights, unreadable files, a missing tensor, a shape that does not match the
      config, or tensors the config has no place for (e.g. more layers than num_hidden_layers).
  """
  from zoomjax.model.qwen2_5_vl import abstract_params, leaf_table

  hf_dir = os.fspath(hf_dir)
  if not os.path.isdir(hf_dir):
    raise CheckpointError(f"{hf_dir!r} is not a directory")
  dtype_name = jnp.dtype(dtype).name
  overrides = dict(cfg_overrides)
  overrides.setdefault("param_dtype", dtype_name)
  overrides.setdefault("dtype", overrides["param_dtype"])
  try:
    cfg = ModelConfig.from_hf_dir(hf_dir, **overrides)
  except ConfigError as e:
    raise CheckpointError(f"{hf_dir}: {e}") from None
  reader = _Reader(hf_dir)
  abstract = abstract_params(cfg)
  flat_abstract = _flatten(abstract)
  table = leaf_table(cfg)
  shard_tree = _resolve_shardings(cfg, shardings, mesh, rules)
  flat_shard = _flatten(shard_tree) if shard_tree is not None else {}

  missing = [p for p in flat_abstract if p not in table]
  if missing:
    raise CheckpointError(f"internal: params without an HF source: {['/'.join(p) for p in missing[:5]]}")
  used: set[str] = set()
  params: dict = {}
  for path, leaf in flat_abstract.items():
    src = table[path]
    keys = []
    for k in src.hf_keys:
      found = reader.find(k)
      if found is None:
        raise CheckpointError(f"tensor {k!r} (for param {'/'.join(path)}) is missing from {hf_dir!r}")
      keys.append(found)
    slice_shape = leaf.shape[1:] if src.stacked else leaf.shape
    parts = []
    for k in keys:
      try:
        arr = src.to_param(reader.get(k))
      except ValueError as e:  # reshape of a tensor whose size does not match the config
        raise CheckpointError(
            f"tensor {k!r} has shape {reader.shape(k)}, which does not fit param {'/'.join(path)} "
            f"{tuple(slice_shape)}: config.json does not match the weights ({e})") from None
      if tuple(arr.shape) != tuple(slice_shape):
        raise CheckpointError(
            f"tensor {k!r} has shape {reader.shape(k)} -> {tuple(arr.shape)}, param {'/'.join(path)} expects "
            f"{tuple(slice_shape)}: config.json does not match the weights")
      parts.append(np.asarray(arr, dtype=leaf.dtype))
      used.add(k)
    host = np.stack(parts) if src.stacked else parts[0]
    del parts
    target = flat_shard.get(path)
    _set_path(params, path, jax.device_put(host, target) if target is not None else jnp.asarray(host))
    del host
  skip = ("lm_head.weight",) if cfg.text.tie_word_embeddings else ()
  extra = sorted(k for k in reader.key_file if k not in used and _canonical(k) not in skip)
  if extra:
    hint = ""
    layer_ids = {int(m.group(2)) for k in extra if (m := _LAYER_RE.match(_canonical(k)))}
    if layer_ids:
      hint = f" (layer indices {sorted(layer_ids)[:5]}… exceed the config's layer counts)"
    raise CheckpointError(f"{len(extra)} tensors in {hf_dir!r} have no place in the model described by "
                          f"config.json{hint}: {extra[:5]}")
  return cfg, params


# --------------------------------------------------------------------------------------------- writing
def _hf_tensors(cfg: ModelConfig, params: Any):
  """Yields (hf_key, numpy array) in a stable order, one leaf at a time (device_get per leaf)."""
  from zoomjax.model.qwen2_5_vl import leaf_table
  table = leaf_table(cfg)
  flat = _flatten(params)
  for path, src in table.items():
    if path not in flat:
      raise CheckpointError(f"params lack {'/'.join(path)} required by the config")
    host = np.asarray(jax.device_get(flat[path]))
    if src.stacked:
      for i, k in enumerate(src.hf_keys):
        yield k, np.ascontiguousarray(src.to_hf(host[i]))
    else:
      yield src.hf_keys[0], np.ascontiguousarray(src.to_hf(host))


def _sizes(cfg: ModelConfig, params: Any) -> list[tuple[str, int]]:
  from zoomjax.model.qwen2_5_vl import leaf_table
  flat = _flatten(params)
  out = []
  for path, src in leaf_table(cfg).items():
    leaf = flat[path]
    n = int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
    if src.stacked:
      out.extend((k, n // len(src.hf_keys)) for k in src.hf_keys)
    else:
      out.append((src.hf_keys[0], n))
  return out


def save(out_dir: str | os.PathLike, cfg: ModelConfig, params: Any,
         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
  """Writes config.json + safetensors (sharded with an index above `max_shard_bytes`) under hub names.

  The directory loads with `Qwen2_5_VLForConditionalGeneration.from_pretrained`. Tensors are written in
  the params' dtype.
  """
  from safetensors.numpy import save_file

  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  sizes = _sizes(cfg, params)
  shards: list[list[str]] = [[]]
  acc = 0
  for k, n in sizes:
    if shards[-1] and acc + n > max_shard_bytes:
      shards.append([])
      acc = 0
    shards[-1].append(k)
    acc += n
  names = ([SAFE_SINGLE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  shard_of = {k: i for i, ks in enumerate(shards) for k in ks}
  pending: dict[int, dict[str, np.ndarray]] = {}
  done = 0
  for k, arr in _hf_tensors(cfg, params):
    i = shard_of[k]
    pending.setdefault(i, {})[k] = arr
    if len(pending[i]) == len(shards[i]):  # leaves arrive in table order, so shards complete in turn
      save_file(pending.pop(i), os.path.join(out_dir, names[i]), metadata={"format": "pt"})
      done += 1
  if pending or done != len(shards):
    raise CheckpointError("internal: not every shard was written")
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(n for _, n in sizes)},
             "weight_map": {k: names[i] for k, i in sorted(shard_of.items())}}
    with open(os.path.join(out_dir, SAFE_INDEX), "w") as f:
      json.dump(index, f, indent=2)
  hf_cfg = cfg.to_hf_dict()
  hf_cfg["dtype"] = cfg.param_dtype
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf_cfg, f, indent=2)


# ------------------------------------------------------------------------------------------- run exports
INFER_DEFAULTS_FILE = "zoomjax_infer.json"   # what a training run's export says the model was trained for
INFER_DEFAULT_KEYS = ("protocol", "version", "max_turns", "max_new_tokens", "max_total_tokens", "max_pixels")


def model_dir(path: str | os.PathLike) -> str:
  """A model directory: `path` itself, or `path/hf` when `path` is a training RUN_DIR (SPEC §8)."""
  path = os.fspath(path)
  if not os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "hf", "config.json")):
    return os.path.join(path, "hf")
  return path


def inference_defaults(path: str | os.PathLike) -> dict:
  """The export's `zoomjax_infer.json` (protocol, token budgets, max_pixels), restricted to
  `INFER_DEFAULT_KEYS`; {} for a directory without one (a plain HF checkpoint)."""
  f = os.path.join(os.fspath(path), INFER_DEFAULTS_FILE)
  if not os.path.isfile(f):
    return {}
  try:
    with open(f, encoding="utf-8") as fh:
      d = json.load(fh)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{f}: unreadable inference defaults ({e}); delete or fix the file") from None
  return {k: d[k] for k in INFER_DEFAULT_KEYS if isinstance(d, dict) and d.get(k) is not None}


def fill_inference_defaults(args: Any, fallbacks: Mapping[str, Any]) -> dict:
  """Resolves `args.model` (a RUN_DIR -> its hf/) and fills every `fallbacks` key left None on `args`: from the
  export's `zoomjax_infer.json` first, else the fallback. Returns the defaults the export gave."""
  args.model = model_dir(args.model)
  found = inference_defaults(args.model) if os.path.isdir(args.model) else {}
  if getattr(args, "protocol", None) not in (None, found.get("protocol")):
    found.pop("version", None)   # the export's template version belongs to the export's protocol
  for k, v in fallbacks.items():
    if getattr(args, k, None) is None:
      setattr(args, k, found.get(k, v))
  return found


# ------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(hf_dir: str | os.PathLike, **kwargs):
  """The checkpoint's tokenizer through `transformers.AutoTokenizer`, from local files only."""
  from transformers import AutoTokenizer
  hf_dir = os.fspath(hf_dir)
  has = lambda f: os.path.isfile(os.path.join(hf_dir, f))  # noqa: E731
  if not (has("tokenizer.json") or (has("vocab.json") and has("merges.txt"))):
    raise CheckpointError(
        f"no tokenizer in {hf_dir!r}: it needs tokenizer.json (or vocab.json + merges.txt); copy the "
        "tokenizer files of the model it was trained from into it")
  kwargs.setdefault("local_files_only", True)
  try:
    return AutoTokenizer.from_pretrained(hf_dir, **kwargs)
  except (OSError, ValueError, TypeError, KeyError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise CheckpointError(f"cannot load the tokenizer in {hf_dir!r}: {first}") from None
