"""`Trajectory`: one rollout of the perception loop, as the learner and the evaluator read it.

Token-level arrays cover the whole sequence (prompt, generated text, appended images and tool text):

    token_ids  int32[T]     every token, image pads expanded (what a forward pass over the row sees)
    loss_mask  int32[T]     1 where the token was sampled from the model; 0 on prompt, image and tool tokens
    logprobs   float32[T]   raw-model log-prob of each sampled token (0 where loss_mask is 0)

`logprobs[t]` is `log_softmax(logits[t - 1])[token_ids[t]]` of the sampling policy (no temperature / top-k /
top-p applied), the same convention as the SFT batches' `loss_mask` (target t predicted from position
t - 1): a learner's forward over `token_ids` gives `logp_θ` aligned with it (GRPO's `logp_old`).

`images` are the model inputs of every image in text order (global view first, then each crop), so
`pixel_values = concat(im.pixel_values)` and `image_grid_thw = stack(im.grid_thw)` rebuild the row's
vision inputs. Boxes: `boxes_global[i]` is the i-th crop request in global-view pixels (the model's
frame), `boxes_original[i]` the same box in original pixels, `windows[i]` the crop window actually cut
(the >= 512 px rule) and `crops[i]` the zoomed PIL image the model was shown.

`stop_reason`:
  "answer"     the model closed an `<answer>` and ended its turn (or the budget ended right after it)
  "no_answer"  it ended its turn with neither an answer nor a usable crop request / tool call
  "budget"     a token budget ran out (per step or total), or the next image did not fit (never cut)
  "max_turns"  multiturn: it asked for another zoom after `max_turns` zooms
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

STOP_REASONS = ("answer", "no_answer", "budget", "max_turns")


@dataclasses.dataclass
class Trajectory:
  """One rollout (module docstring for the fields)."""

  protocol: str
  question: str
  token_ids: np.ndarray
  loss_mask: np.ndarray
  logprobs: np.ndarray
  prompt_len: int
  images: list = dataclasses.field(default_factory=list)
  boxes_global: list = dataclasses.field(default_factory=list)
  boxes_original: list = dataclasses.field(default_factory=list)
  windows: list = dataclasses.field(default_factory=list)
  crops: list = dataclasses.field(default_factory=list)
  steps: list = dataclasses.field(default_factory=list)
  answer: str | None = None
  stop_reason: str = "no_answer"
  tool_results: list = dataclasses.field(default_factory=list)
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def generated_text(self) -> str:
    """The model's text of every step, concatenated (appended images / tool text not included)."""
    return "".join(self.steps)

  @property
  def num_generated(self) -> int:
    return int(self.loss_mask.sum())

  @property
  def num_zooms(self) -> int:
    return len(self.crops)

  @property
  def box_global(self) -> list[float] | None:
    """The first crop request (the released protocol's only one), global-view pixels."""
    return self.boxes_global[0] if self.boxes_global else None

  @property
  def box_original(self) -> list[float] | None:
    return self.boxes_original[0] if self.boxes_original else None

  def vision_inputs(self) -> tuple[np.ndarray, np.ndarray]:
    """(pixel_values float32[P, patch_dim], image_grid_thw int32[I, 3]) of all images, in text order."""
    if not self.images:
      return np.zeros((0, 1176), np.float32), np.zeros((0, 3), np.int32)
    return (np.concatenate([im.pixel_values for im in self.images]).astype(np.float32),
            np.stack([np.asarray(im.grid_thw, np.int32) for im in self.images]))

  def summary(self) -> dict[str, Any]:
    """JSON-friendly digest (no arrays or images)."""
    return {"protocol": self.protocol, "question": self.question, "answer": self.answer,
            "stop_reason": self.stop_reason, "boxes_global": self.boxes_global,
            "boxes_original": self.boxes_original, "windows": self.windows, "num_tokens": int(len(self.token_ids)),
            "num_generated": self.num_generated, "num_zooms": self.num_zooms, "steps": self.steps}
