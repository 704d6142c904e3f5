"""Small Linen building blocks shared by the language model: RMSNorm, projections, attention, remat.

Every parameter is created through `nn.with_logical_partitioning`, so `nn.get_partition_spec` over the
abstract parameter tree yields logical axis names that `zoomjax.model.sharding` maps to mesh axes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype
_MASK_VALUE = float(jnp.finfo(jnp.float32).min)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: str | Dtype) -> Dtype:
  """'bfloat16' -> jnp.bfloat16 (dtypes pass through)."""
  return _DTYPES[name] if isinstance(name, str) else name


def param_with_axes(module: nn.Module, name: str, init: Callable, shape: Sequence[int], dtype: Dtype,
                    axes: Sequence[str | None]) -> jax.Array:
  """Creates a parameter annotated with logical axis names (one per dimension)."""
  if len(axes) != len(shape):
    raise ValueError(f"param {name!r}: {len(axes)} axis names {tuple(axes)} for shape {tuple(shape)}")
  return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """`nn.with_logical_constraint` (a no-op outside a mesh / rules context)."""
  return nn.with_logical_constraint(x, tuple(axes))


class RMSNorm(nn.Module):
  """y = scale * x / sqrt(mean(x^2) + eps), statistics in float32 (as the reference)."""

  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: str = "embed"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = param_with_axes(self, "scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype,
                            (self.axis_name,))
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
    return scale.astype(self.dtype) * y


class Projection(nn.Module):
  """A linear map `x[..., in] -> y[..., *out]` with named kernel axes and an optional bias.

  Attributes:
    features: output shape (e.g. `(num_heads, head_dim)`).
    kernel_axes: logical names for the kernel, `len(in_dims) + len(features)` entries.
    in_dims: how many trailing input dims are contracted (1 for `[..., D]`, 2 for `[..., N, H]`).
    use_bias / bias_axes: bias of shape `features`.
  """

  features: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  in_dims: int = 1
  use_bias: bool = False
  bias_axes: tuple[str | None, ...] = ()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_shape = x.shape[x.ndim - self.in_dims:]
    kernel = param_with_axes(self, "kernel", self.kernel_init, (*in_shape, *self.features), self.param_dtype,
                             self.kernel_axes)
    contract = (tuple(range(x.ndim - self.in_dims, x.ndim)), tuple(range(self.in_dims)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
    if self.use_bias:
      bias = param_with_axes(self, "bias", nn.initializers.zeros, self.features, self.param_dtype,
                             self.bias_axes)
      y = y + bias.astype(self.dtype)
    return y


class SwiGLU(nn.Module):
  """`down(silu(gate(x)) * up(x))`: the MLP of both the language model (no biases) and the ViT (biased).

  Attributes:
    hidden_size / intermediate_size: widths of `x` and of the gated hidden layer.
    embed_axis / mlp_axis: logical names of the two widths (kernels `[embed, mlp]` and `[mlp, embed]`).
    hidden_activation_axes: logical names of the gated hidden activation `[..., intermediate]`.
    use_bias: biased projections (ViT) or not (LM).
  """

  hidden_size: int
  intermediate_size: int
  embed_axis: str
  mlp_axis: str
  hidden_activation_axes: tuple[str | None, ...]
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def proj(feats, axes, name):
      return Projection((feats,), axes, use_bias=self.use_bias, bias_axes=axes[-1:] if self.use_bias else (),
                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    up_axes = (self.embed_axis, self.mlp_axis)
    gate = proj(self.intermediate_size, up_axes, "gate_proj")(x)
    up = proj(self.intermediate_size, up_axes, "up_proj")(x)
    h = constrain(nn.silu(gate) * up, self.hidden_activation_axes)
    return proj(self.hidden_size, (self.mlp_axis, self.embed_axis), "down_proj")(h)


def dot_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, dtype: Dtype, *,
                  kv_heads_first: bool = False) -> jax.Array:
  """Grouped-query softmax attention.

  Args:
    q: [B, T, N, H] queries (N = K * G query heads); k, v: [B, S, K, H], or [B, K, S, H] (the KV cache's
      layout) with `kv_heads_first`.
    mask: bool[B, T, S], True where query t may attend to key s.
    dtype: compute dtype of the output (softmax always in float32, as the reference's eager path).
  Returns:
    [B, T, N, H].
  """
  b, t, n, h = q.shape
  kv = k.shape[1 if kv_heads_first else 2]
  g = n // kv
  q = q.reshape(b, t, kv, g, h)
  keys = "bksh" if kv_heads_first else "bskh"
  scores = jnp.einsum(f"btkgh,{keys}->bkgts", q, k, preferred_element_type=jnp.float32) * (h ** -0.5)
  scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  out = jnp.einsum(f"bkgts,{keys}->btkgh", probs, v.astype(dtype))
  return out.reshape(b, t, n, h)


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_attn_out": jax.checkpoint_policies.save_only_these_names("attn_out"),
}


def maybe_remat(module_cls: type[nn.Module], policy: str, *, scanned: bool,
                static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
  """Wraps a layer class in `nn.remat` with the named policy ('none' leaves it as is).

  `prevent_cse` is only needed outside `scan` (scan already blocks the common-subexpression merge).
  """
  if policy == "none":
    return module_cls
  return nn.remat(module_cls, policy=REMAT_POLICIES[policy], prevent_cse=not scanned,
                  static_argnums=static_argnums)
