"""The optimizer: AdamW, linear warmup then cosine decay, global-norm clipping, optional frozen vision.

Weight decay applies to matrices and embeddings only (leaf names other than `bias`/`scale` and not
inside a norm). With `freeze_vision`, every leaf under `params["visual"]` except the patch merger gets
`optax.set_to_zero()` (and no optimizer state), so the vision blocks stay bit-for-bit unchanged. With
`optim.vision_lr_scale` != 1 (and the tower not frozen), the same leaves get their own AdamW whose
learning rate is the schedule times that scale (the gradient is still clipped by one global norm).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from zoomjax.train.config import OptimSection


def learning_rate_schedule(oc: OptimSection, total_steps: int) -> optax.Schedule:
  """Linear warmup 0 -> lr over `warmup_steps`, then cosine lr -> lr * end_lr_ratio (or constant)."""
  warmup = oc.warmup_steps
  if oc.schedule == "constant":
    after = optax.constant_schedule(oc.lr)
  else:
    decay = oc.decay_steps or max(total_steps - warmup, 1)
    after = optax.cosine_decay_schedule(oc.lr, decay_steps=decay, alpha=oc.end_lr_ratio)
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, oc.lr, warmup), after], boundaries=[warmup])


def _path_names(path) -> list[str]:
  out = []
  for p in path:
    out.append(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))))
  return out


def decay_mask(params: Any) -> Any:
  """True for leaves that get weight decay (kernels, embeddings), False for biases and norm scales."""
  def is_decayed(path, _):
    names = _path_names(path)
    return not (names[-1] in ("bias", "scale") or any("norm" in n.lower() for n in names))
  return jax.tree_util.tree_map_with_path(is_decayed, params)


def tower_labels(params: Any, tower: str, rest: str = "train") -> Any:
  """`tower` for the vision tower's own leaves (under `visual`, not in the patch merger), `rest` elsewhere."""
  def label(path, _):
    names = _path_names(path)
    return tower if "visual" in names and not any("merger" in n for n in names) else rest
  return jax.tree_util.tree_map_with_path(label, params)


def trainable_labels(params: Any, freeze_vision: bool) -> Any:
  """`"train"` or `"frozen"` per leaf: frozen = the tower's own leaves (when requested)."""
  return tower_labels(params, "frozen" if freeze_vision else "train")


def _adamw(oc: OptimSection, lr) -> optax.GradientTransformation:
  return optax.adamw(lr, b1=oc.b1, b2=oc.b2, eps=oc.eps, weight_decay=oc.weight_decay, mask=decay_mask)


def make_optimizer(oc: OptimSection, total_steps: int, params: Any, freeze_vision: bool = False
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optax chain for `params` (a tree, abstract or concrete). Returns (tx, lr schedule)."""
  schedule = learning_rate_schedule(oc, total_steps)
  parts = []
  if oc.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(oc.clip_norm))
  if oc.vision_lr_scale != 1.0 and not freeze_vision:
    scale = oc.vision_lr_scale
    parts.append(optax.multi_transform(
        {"train": _adamw(oc, schedule), "vision": _adamw(oc, lambda count: schedule(count) * scale)},
        tower_labels(params, "vision")))
  else:
    parts.append(_adamw(oc, schedule))
  tx = optax.chain(*parts)
  if freeze_vision:
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               trainable_labels(params, freeze_vision))
  return tx, schedule
