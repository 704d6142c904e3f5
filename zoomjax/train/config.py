"""Run configuration for `python -m zoomjax.train`: the schema (frozen dataclasses) and its loading.

A run config is a tree of frozen dataclasses (`TrainConfig` at the root). Loading is OmegaConf's
(structured configs): the schema is the typed base, a YAML file (which may name a `base:` YAML it
extends) is merged on top, then `key=value` overrides from the command line
(`optim.lr=1e-4`, `mesh.fsdp=4`, `model.text.num_hidden_layers=4`, OmegaConf's dotlist grammar). OmegaConf
checks keys and types; each section's `validate` checks ranges and choices. Errors name the dotted key
and echo the bad value:

    ConfigError: optim.lr: Value 'fast' of type 'str' could not be converted to Float
    ConfigError: mesh.dat: unknown key (did you mean 'mesh.data'?); known keys: [...]
    ConfigError: optim.lr: must be a finite number, got inf

`to_dict` gives the resolved config back as plain YAML-able data (saved as `config.yaml` in the run dir).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from typing import Any, Mapping, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from zoomjax.train.schema import (CheckpointSection, ConfigError, DataSection, DistributedSection, EvalSection,
                                  GrpoSection, LogSection, MeshSection, ModelSection, OptimSection, TrainConfig)

__all__ = ["load_config", "save_config", "to_dict", "parse_override", "resolve_config_path", "ConfigError",
           "TrainConfig", "ModelSection", "DataSection", "OptimSection", "MeshSection", "CheckpointSection",
           "LogSection", "EvalSection", "DistributedSection", "GrpoSection", "CONFIG_DIR"]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


# ------------------------------------------------------------------------------------------ loading
def _check_finite(tree: Any, prefix: str = "") -> None:
  """Refuses NaN / inf anywhere in the config (a `.inf` learning rate turns every param into NaN)."""
  if dataclasses.is_dataclass(tree):
    tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      _check_finite(v, f"{prefix}.{k}" if prefix else str(k))
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      _check_finite(v, f"{prefix}[{i}]")
  elif isinstance(tree, float) and not math.isfinite(tree):
    raise ConfigError(f"{prefix}: must be a finite number, got {tree!r}")


_NODE_TYPES = {"IntegerNode": "an integer", "FloatNode": "a number", "StringNode": "a string",
               "BooleanNode": "a boolean"}


def _config_error(e: OmegaConfBaseException) -> ConfigError:
  """OmegaConf's error -> one `ConfigError` line naming the dotted key (and echoing the bad value)."""
  key = getattr(e, "full_key", "") or "config"
  msg = str(e).splitlines()[0] if str(e) else type(e).__name__
  if isinstance(e, ValidationError):
    value = getattr(e, "value", None)
    if isinstance(value, (DictConfig, ListConfig)):
      value = OmegaConf.to_container(value)
    expected = _NODE_TYPES.get(type(getattr(e, "child_node", None)).__name__)
    if expected is None and isinstance(getattr(e, "child_node", None), DictConfig):
      expected = "a mapping"
    if expected is not None:
      return ConfigError(f"{key}: expected {expected}, got {value!r} ({type(value).__name__})")
  if isinstance(e, ConfigKeyError):
    node = getattr(e, "object_type", None)
    names = [f.name for f in dataclasses.fields(node)] if node is not None and dataclasses.is_dataclass(node) else []
    leaf = key.rsplit(".", 1)[-1]
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f" (did you mean '{parent}{close[0]}'?)" if close else ""
    known = f"; known keys: {names}" if names else ""
    return ConfigError(f"{key}: unknown key{hint}{known}")
  return ConfigError(f"{key}: {msg}")


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> DictConfig:
  """A YAML file, merged onto its `base:` chain (paths relative to the file)."""
  path = os.path.abspath(path)
  if path in seen:
    raise ConfigError(f"base: cycle of config files {list(seen) + [path]}")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  try:
    data = OmegaConf.load(path)
  except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: not a valid YAML config: {str(e).splitlines()[0]}") from None
  if not isinstance(data, DictConfig):
    raise ConfigError(f"{path}: the top level must be a mapping, got a list")
  base = data.pop("base", None)
  if base is None:
    return data
  base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
  return OmegaConf.merge(_read_yaml(base_path, seen + (path,)), data)


def to_dict(cfg: Any) -> dict:
  """The config as plain data (what `config.yaml` in the run dir holds)."""
  return dataclasses.asdict(cfg)


def parse_override(arg: str) -> tuple[str, Any]:
  """`'optim.lr=1e-4'` -> `('optim.lr', 1e-4)` (OmegaConf's dotlist value grammar)."""
  if "=" not in arg:
    raise ConfigError(f"{arg}: overrides are key=value (e.g. optim.lr=1e-4), got {arg!r}")
  key = arg.split("=", 1)[0].strip()
  if not key or any(not p for p in key.split(".")):
    raise ConfigError(f"{arg}: malformed key {key!r}")
  try:
    tree = OmegaConf.to_container(OmegaConf.from_dotlist([arg]))
  except (OmegaConfBaseException, yaml.YAMLError) as e:
    raise ConfigError(f"{key}: cannot parse value in {arg!r}: {str(e).splitlines()[0]}") from None
  for part in key.split("."):
    tree = tree[part]
  return key, tree


def resolve_config_path(name: str) -> str:
  """A path, or the name of a file in `configs/` (with or without `.yaml`)."""
  if os.path.isfile(name):
    return name
  for cand in (os.path.join(CONFIG_DIR, name), os.path.join(CONFIG_DIR, name + ".yaml")):
    if os.path.isfile(cand):
      return cand
  raise ConfigError(f"config file {name!r} not found (looked in the working directory and {CONFIG_DIR})")


def _sections() -> list[str]:
  """The names of `TrainConfig`'s sections (the fields that are dataclasses)."""
  hints = typing.get_type_hints(TrainConfig)
  return [f.name for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(hints[f.name])]


def load_config(path: str | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None) -> TrainConfig:
  """Reads a YAML config (or starts from `base`/defaults), applies `key=value` overrides, validates."""
  schema = OmegaConf.structured(TrainConfig)
  OmegaConf.set_readonly(schema, False)  # the dataclasses are frozen; the merge still writes the nodes
  layers: list[Any] = [schema]
  if base:
    layers.append(OmegaConf.create(dict(base)))
  if path is not None:
    layers.append(_read_yaml(resolve_config_path(path)))
  for arg in overrides:
    parse_override(arg)  # clear errors for malformed overrides before OmegaConf sees them
  for layer in layers[1:]:
    for name in _sections():
      v = layer.get(name)
      if v is not None and not isinstance(v, DictConfig):
        v = OmegaConf.to_container(v) if isinstance(v, ListConfig) else v
        raise ConfigError(f"{name}: expected a mapping, got {v!r} ({type(v).__name__})")
  try:
    if overrides:
      layers.append(OmegaConf.from_dotlist(list(overrides)))
    cfg = OmegaConf.to_object(OmegaConf.merge(*layers))
  except OmegaConfBaseException as e:
    raise _config_error(e) from None
  _check_finite(cfg)
  cfg.validate()
  next_stage(cfg)  # a bad key in `then` fails now, not after the first stage has trained
  return cfg


def next_stage(cfg: TrainConfig) -> TrainConfig | None:
  """The stage `cfg.then` describes (see `TrainConfig.then`), validated; None when there is none."""
  if not cfg.then:
    return None
  over = OmegaConf.create(dict(cfg.then))
  algo = over.get("algo", cfg.algo)
  defaults = {"checkpoint": {"dir": f"{{run_dir}}/checkpoints_{algo}"}}
  if algo == "grpo":
    defaults["grpo"] = {"init_from": cfg.run_dir}
  here = {k: v for k, v in to_dict(cfg).items() if k != "then"}
  try:
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(here), defaults, over))
    return load_config(None, (), base=merged)
  except ConfigError as e:
    raise ConfigError(f"then.{e}") from None


def save_config(cfg: TrainConfig, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:
    yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
  os.replace(tmp, path)
