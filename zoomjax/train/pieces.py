"""Typed pieces: the device inputs of one training sequence, as `flax.struct` pytrees.

A *piece* is one sequence of a global batch (see `zoomjax.train.batching`): `batching.make_piece` builds
it on the host from the sequence's host dict, `batching.assemble` stacks the pieces of a step into one
piece whose every leaf has leading axes `[A, S, b]`, and `batching.to_global` places it on the mesh.
The step scans over `A` and vmaps over `S` and `b`, so an objective's `fn(logits, piece)` sees the
fields of one sequence again. Pieces are pytrees like dicts (`jax.tree_util.tree_map`, `jit`, `vmap`,
`scan`, `eval_shape`, shardings); a field that is None is an empty node.

Fields of one sequence (shape letters of `zoomjax.model`: T tokens, P the static per-sequence patch
budget `data.max_patches`, C the flattened patch, 1176):

    Piece
      input_ids       int32[1, T]       right-padded tokens
      attention_mask  int32[1, T]       0 padding, else the example id (1; packed: 1, 2, ..)
      position_ids    int32[3, 1, T]    M-RoPE (t, h, w) ids
      image_index     int32[1, T]       row of the vision output a token takes, -1 for text
      loss_mask       int32[1, T]       weight of each target token (0: not trained on)
      vision          dict | None       `zoomjax.model.vision.vision_metadata` of the sequence's images
                                        (None when text only: P = 0)
      pixel_values    float32[P, C] | None   zero rows pad the real patches to P
    GrpoPiece(Piece) adds
      logp_old        float32[1, T]     log-probs of the policy that sampled the tokens
      logp_ref        float32[1, T]     the frozen reference's (zeros at beta = 0)
      advantage       float32[1]        the sequence's advantage
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import struct

Array = Any  # numpy on the host, jax.Array on device


@struct.dataclass
class Piece:
  """One sequence's model inputs and loss mask (the SFT piece; module docstring for the shapes)."""

  input_ids: Array
  attention_mask: Array
  position_ids: Array
  image_index: Array
  loss_mask: Array
  vision: dict | None
  pixel_values: Array | None

  def model_inputs(self) -> dict[str, Any]:
    """The `inputs` of `zoomjax.model.apply(cfg, params, inputs, pixel_values)`."""
    out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
           "position_ids": self.position_ids, "image_index": self.image_index}
    if self.vision is not None:
      out["vision"] = self.vision
    return out

  @classmethod
  def extra_fields(cls) -> tuple[str, ...]:
    """The fields `cls` adds to `Piece`: what the batch source supplies per sequence, taken as it is."""
    base = {f.name for f in dataclasses.fields(Piece)}
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in base)


@struct.dataclass
class GrpoPiece(Piece):
  """A GRPO trajectory: a `Piece` plus the policy-gradient inputs of `zoomjax.rl.grpo.policy_loss`."""

  logp_old: Array
  logp_ref: Array
  advantage: Array
