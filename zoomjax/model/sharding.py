"""Logical axis names -> mesh axes (`data`, `fsdp`, `tensor`): the default rules table and helpers.

Every parameter carries logical names (via `nn.with_logical_partitioning`) and the main activations are
constrained with `nn.with_logical_constraint`; changing the parallelism is editing `DEFAULT_RULES`.

    specs = logical_partition_specs(cfg)                 # PartitionSpec tree of logical names
    shard = param_shardings(cfg, mesh)                   # NamedSharding tree (abstract shapes checked)
    with activation_rules(mesh):                          # activation constraints active inside jit
      step = jax.jit(...)                                 # trace inside the context

Dimensions that a mesh axis does not divide are replicated instead (e.g. 2 KV heads on tensor=4), so a
rules table never makes a model unplaceable. Note that `jax.jit` caches by shapes only: trace a function
inside `activation_rules` for its constraints to apply.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoomjax.model.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")

Rules = Sequence[tuple[str, Any]]

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("activation_vision_patches", ("data", "fsdp")),
    ("activation_vision_embed", None),
    ("activation_vision_heads", "tensor"),
    ("activation_vision_mlp", "tensor"),
    # language-model params
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    # vision-tower params
    ("vision_patch", None),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_head_dim", None),
    ("vision_mlp", "tensor"),
    ("vision_merge", "fsdp"),
)
"""Default logical -> mesh-axis rules (MaxText style): batch over data x fsdp, weights' model dim over
fsdp (ZeRO-3 style), heads / mlp / vocab over tensor."""


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> Mesh:
  """A `(data, fsdp, tensor)` mesh; one size may be -1 (all remaining devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh size may be -1, got {sizes}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_partition_specs(cfg: ModelConfig) -> Any:
  """PartitionSpec tree (logical axis names) matching the params tree."""
  from zoomjax.model.qwen2_5_vl import boxed_abstract_params
  return nn.get_partition_spec(boxed_abstract_params(cfg))


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes that do not divide their dimension (replicates that dimension)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    size = math.prod(mesh.shape[a] for a in names)
    out.append(axes if names and dim % size == 0 else None)
  return PartitionSpec(*out)


def logical_to_shardings(logical: Any, abstract: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """Maps a tree of logical PartitionSpecs (or tuples of names) to NamedShardings for `abstract`."""
  def one(spec, leaf):
    names = tuple(spec) if spec is not None else ()
    mesh_spec = nn.logical_to_mesh_axes(names, rules) if names else PartitionSpec()
    mesh_spec = PartitionSpec(*[a if a is not None and _in_mesh(a, mesh) else None for a in mesh_spec])
    return NamedSharding(mesh, _fit(mesh_spec, leaf.shape, mesh))

  is_spec = lambda x: isinstance(x, PartitionSpec) or (isinstance(x, tuple) and all(
      e is None or isinstance(e, str) for e in x))
  return jax.tree.map(one, logical, abstract, is_leaf=is_spec)


def _in_mesh(a, mesh: Mesh) -> bool:
  """Whether every mesh axis named by a rule target (a name or a tuple of names) exists in `mesh`."""
  names = (a,) if isinstance(a, str) else tuple(a)
  return all(n in mesh.shape for n in names)


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """NamedSharding tree for the params of `cfg` on `mesh`."""
  from zoomjax.model.qwen2_5_vl import abstract_params
  return logical_to_shardings(logical_partition_specs(cfg), abstract_params(cfg), mesh, rules)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
  """Activates the rules (and the mesh) so `nn.with_logical_constraint` applies inside traced code."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
    yield
