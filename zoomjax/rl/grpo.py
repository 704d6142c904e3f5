"""GRPO's pure pieces (SPEC §5, §8): group advantages and the clipped policy loss with a k3 KL.

    adv = group_advantages(rewards, group_size, mode="std", eps=1e-6, valid=None)      # float32[N]
    adv = term_advantages(terms, group_size, weights, ...)                              # GDPO-style
    loss_sum, denom, metrics = policy_loss(logp, logp_old, logp_ref, advantages, loss_mask, ...)

Symbols (paper -> argument): G -> `group_size`; ε -> `eps_low` / `eps_high` (clip-higher when they
differ); β -> `beta`; the loss of a batch is `loss_sum / denom`, so gradient accumulation over
microbatches stays exact (sum the sums, sum the denominators).

Everything is jittable and vmappable, float32 inside whatever the inputs are.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

ADVANTAGE_MODES = ("std", "mean")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean")
MAX_LOG_RATIO = 20.0  # log-ratios are clamped to [-20, 20] before exp (e^20 ~ 5e8: finite, never inf)


def _one_group(r: jax.Array, v: jax.Array, mode: str, eps: float) -> jax.Array:
  """Advantages of one group: r float32[G], v bool[G]."""
  vf = v.astype(jnp.float32)
  n = jnp.sum(vf)
  mean = jnp.sum(r * vf) / jnp.maximum(n, 1.0)
  centred = r - mean
  hi = jnp.max(jnp.where(v, r, -jnp.inf))
  lo = jnp.min(jnp.where(v, r, jnp.inf))
  flat = ~(hi > lo)  # all valid rewards equal (or < 2 valid rows): no signal, exactly 0
  if mode == "std":
    std = jnp.sqrt(jnp.sum(vf * centred ** 2) / jnp.maximum(n, 1.0))
    adv = centred / (std + eps)
  else:
    adv = centred
  return jnp.where(v & ~flat, adv, 0.0)


def group_advantages(rewards: jax.Array, group_size: int, *, mode: str = "std", eps: float = 1e-6,
                     valid: jax.Array | None = None) -> jax.Array:
  """Per-group advantages.

  Args:
    rewards: float32[N], N = groups * group_size, each group's rows contiguous.
    group_size: G.
    mode: "std": (r - mean_g) / (std_g + eps), population std (ddof 0); "mean": r - mean_g (released).
    eps: added to the std.
    valid: bool[N] or None (all valid). mean_g / std_g use only the group's valid rows; invalid rows get 0.
  Returns:
    float32[N]. A group whose valid rewards are all equal gets exactly 0.
  """
  if mode not in ADVANTAGE_MODES:
    raise ValueError(f"mode must be one of {ADVANTAGE_MODES}, got {mode!r}")
  r = jnp.asarray(rewards, jnp.float32)
  if r.ndim != 1 or r.shape[0] % group_size:
    raise ValueError(f"rewards must be float32[N] with N a multiple of group_size={group_size}, got {r.shape}")
  v = jnp.ones(r.shape, bool) if valid is None else jnp.asarray(valid, bool)
  g = r.shape[0] // group_size
  adv = jax.vmap(lambda rr, vv: _one_group(rr, vv, mode, eps))(r.reshape(g, group_size), v.reshape(g, group_size))
  return adv.reshape(-1)


def term_advantages(terms: jax.Array, group_size: int, weights: Sequence[float] | jax.Array | None = None, *,
                    mode: str = "std", eps: float = 1e-6, valid: jax.Array | None = None) -> jax.Array:
  """GDPO-style decoupled normalisation: each reward term normalised within its group, then summed.

  Args:
    terms: float32[K, N], one row per reward term (IoU, Region-Guided, answer, format, ...).
    weights: float32[K] (default all 1): the weight of each normalised term in the sum.
  Returns float32[N] = sum_k weights[k] * group_advantages(terms[k]); a term that is flat within a group
  contributes exactly 0 there, so a constant term never dilutes the others.
  """
  t = jnp.asarray(terms, jnp.float32)
  w = jnp.ones((t.shape[0],), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
  per = jax.vmap(lambda row: group_advantages(row, group_size, mode=mode, eps=eps, valid=valid))(t)
  return jnp.sum(w[:, None] * per, axis=0)


def flat_groups(rewards: jax.Array, group_size: int, valid: jax.Array | None = None) -> jax.Array:
  """bool[N]: True on rows whose group's valid rewards are all equal (zero-variance groups)."""
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  v = (jnp.ones(r.shape, bool) if valid is None else jnp.asarray(valid, bool).reshape(r.shape))
  hi = jnp.max(jnp.where(v, r, -jnp.inf), axis=1)
  lo = jnp.min(jnp.where(v, r, jnp.inf), axis=1)
  return jnp.repeat(~(hi > lo), group_size)


def policy_loss(logp: jax.Array, logp_old: jax.Array, logp_ref: jax.Array | None, advantages: jax.Array,
                loss_mask: jax.Array, *, eps_low: float = 0.2, eps_high: float | None = None, beta: float = 0.04,
                aggregation: str = "seq-mean-token-mean", entropy: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array, dict]:
  """The clipped surrogate with a k3 KL penalty, as (sum, denominator, metrics).

  Args:
    logp: float32[B, T] log-probs of the current policy (the differentiated argument).
    logp_old: float32[B, T] of the policy that sampled (ratio denominator).
    logp_ref: float32[B, T] of the frozen reference policy, or None when `beta == 0`.
    advantages: float32[B]. loss_mask: {0, 1}[B, T] (1 = a model-generated token).
    eps_low / eps_high: ratio clipped to [1 - eps_low, 1 + eps_high]; eps_high None = eps_low.
    beta: KL weight (0: no KL term, `logp_ref` may be None).
    aggregation: "token-mean" (sum over masked tokens / their number) or "seq-mean-token-mean" (sum over
      rows of the row's masked mean / number of rows with a masked token).
    entropy: optional float32[B, T] per-token entropies, reported as a metric.
  Per token: -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) + beta * (exp(ref - logp) - (ref - logp)
  - 1), rho = exp(logp - logp_old), both log-differences clamped to +-MAX_LOG_RATIO before exp.
  Returns:
    loss_sum float32[], denom float32[] (the loss is loss_sum / denom) and metrics: token-level sums
    `tokens`, `clipped_tokens`, `kl_sum`, `ratio_sum` (and `entropy_sum`), plus their means
    `clip_fraction`, `kl`, `ratio_mean` (and `entropy`) over the masked tokens.
  Masked tokens get exactly zero gradient (their log-probs are replaced by constants before any math).
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
  if beta and logp_ref is None:
    raise ValueError("beta > 0 needs logp_ref")
  eps_high = eps_low if eps_high is None else eps_high
  mask = jnp.asarray(loss_mask).astype(jnp.float32)
  on = mask > 0
  logp = jnp.where(on, jnp.asarray(logp, jnp.float32), 0.0)
  old = jnp.where(on, jax.lax.stop_gradient(jnp.asarray(logp_old, jnp.float32)), 0.0)
  adv = jnp.asarray(advantages, jnp.float32)[:, None]
  ratio = jnp.exp(jnp.clip(logp - old, -MAX_LOG_RATIO, MAX_LOG_RATIO))
  clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  per_token = -jnp.minimum(ratio * adv, clipped_ratio * adv)
  kl = jnp.zeros_like(per_token)
  if beta:
    ref = jnp.where(on, jax.lax.stop_gradient(jnp.asarray(logp_ref, jnp.float32)), 0.0)
    d = jnp.clip(ref - logp, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    kl = jnp.exp(d) - d - 1.0
    per_token = per_token + beta * kl
  per_token = per_token * mask
  row_tokens = jnp.sum(mask, axis=1)
  if aggregation == "token-mean":
    loss_sum, denom = jnp.sum(per_token), jnp.sum(mask)
  else:
    loss_sum = jnp.sum(jnp.sum(per_token, axis=1) / jnp.maximum(row_tokens, 1.0))
    denom = jnp.sum((row_tokens > 0).astype(jnp.float32))
  clip_active = ((adv > 0) & (ratio > 1.0 + eps_high)) | ((adv < 0) & (ratio < 1.0 - eps_low))
  tokens = jnp.sum(mask)
  n = jnp.maximum(tokens, 1.0)
  sg = jax.lax.stop_gradient
  metrics = {"tokens": tokens, "clipped_tokens": sg(jnp.sum(clip_active * mask)), "kl_sum": sg(jnp.sum(kl * mask)),
             "ratio_sum": sg(jnp.sum(ratio * mask))}
  metrics.update(clip_fraction=metrics["clipped_tokens"] / n, kl=metrics["kl_sum"] / n,
                 ratio_mean=metrics["ratio_sum"] / n)
  if entropy is not None:
    metrics["entropy_sum"] = sg(jnp.sum(jnp.asarray(entropy, jnp.float32) * mask))
    metrics["entropy"] = metrics["entropy_sum"] / n
  return loss_sum, denom, metrics
