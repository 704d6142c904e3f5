"""Device mesh `(data, fsdp, tensor)`, logical-axis rules, and placement of params and batches.

Parameters carry logical axis names (`nn.with_logical_partitioning`); a rules table maps each logical
name to mesh axes (`zoomjax.model.sharding`'s defaults, overridable by `mesh.rules` in the config).
Batches are split along their batch dimension over `("data", "fsdp")`: with FSDP every device computes
on a different slice of the batch while the weights are gathered layer by layer.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoomjax.train.schema import ConfigError, MeshSection

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

Rules = tuple[tuple[str, Any], ...]


def mesh_shape(mc: MeshSection, num_devices: int) -> dict[str, int]:
  """Resolves -1 (fill) and checks that the axis sizes multiply to `num_devices`."""
  sizes = {"data": mc.data, "fsdp": mc.fsdp, "tensor": mc.tensor}
  fixed = math.prod(v for v in sizes.values() if v != -1)
  fill = [k for k, v in sizes.items() if v == -1]
  if fill:
    if num_devices % fixed:
      raise ConfigError(f"mesh.{fill[0]}: -1 cannot fill {num_devices} devices when the other axes "
                        f"multiply to {fixed} ({sizes})")
    sizes[fill[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ConfigError(f"mesh: data*fsdp*tensor = {sizes['data']}*{sizes['fsdp']}*{sizes['tensor']} = "
                      f"{math.prod(sizes.values())} but there are {num_devices} devices")
  return sizes


def make_mesh(mc: MeshSection, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` over `devices` (default: all devices of all processes) with axes `(data, fsdp, tensor)`.

  Uses `mesh_utils.create_device_mesh` (ICI-topology aware on TPU); on platforms where it cannot place
  the shape it falls back to the devices in id order (process-major, so each process's devices form a
  contiguous block of the `data` axis).
  """
  devices = list(jax.devices() if devices is None else devices)
  if mc.devices:
    if mc.devices > len(devices):
      raise ConfigError(f"mesh.devices: {mc.devices} requested but only {len(devices)} devices exist")
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))[:mc.devices]
  sizes = mesh_shape(mc, len(devices))
  shape = tuple(sizes[a] for a in AXES)
  ordered = np.array(sorted(devices, key=lambda d: (d.process_index, d.id))).reshape(shape)
  if devices[0].platform == "cpu":
    arr = ordered  # no topology; process-major so each process's batch shard stays local
  else:
    from jax.experimental import mesh_utils
    try:
      arr = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
      arr = ordered
  return Mesh(arr, AXES)


def default_rules() -> Rules:
  """The model's logical-axis rules table (`zoomjax.model.sharding`)."""
  from zoomjax.model import sharding as model_sharding
  return tuple((name, axes) for name, axes in _as_pairs(model_sharding.DEFAULT_RULES))


def _as_pairs(rules: Any) -> list[tuple[str, Any]]:
  items = rules.items() if isinstance(rules, Mapping) else rules
  return [(str(k), tuple(v) if isinstance(v, list) else v) for k, v in items]


def logical_rules(overrides: Mapping[str, Any] | None = None, base: Rules | None = None) -> Rules:
  """`base` (default: the model's table) with `overrides` `{logical: axis | [axes] | None}` applied."""
  table = dict(default_rules() if base is None else base)
  for k, v in (overrides or {}).items():
    table[k] = tuple(v) if isinstance(v, (list, tuple)) else v
  return tuple(table.items())


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
