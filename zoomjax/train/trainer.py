"""`train(cfg)`: runs the configured stage (`algo: sft` or `grpo`) on the shared harness.

    summary = train(cfg)    # {"run_dir", "final_step", "last", "eval", "answers", "stages", ...}

The machinery (mesh, shardings, jitted step, checkpoints, signals, loop) is `zoomjax.train.harness`;
around-the-loop work (exports, summary) is `zoomjax.train.driver`; the stages are `zoomjax.train.sft`
and `zoomjax.train.grpo`.
"""

from __future__ import annotations

from zoomjax.train import grpo, sft
from zoomjax.train.config import TrainConfig
from zoomjax.train.driver import TrainingFailed
from zoomjax.train.harness import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, build, build_model_config, init_train_state

__all__ = ["train", "TrainingFailed", "PREEMPTED_EXIT_CODE", "INTERRUPTED_EXIT_CODE", "build", "build_model_config",
           "init_train_state"]


def train(cfg: TrainConfig, data=None) -> dict:
  """Runs the configured training stage. `data` overrides the configured SFT data (a `sft_data.Data`)."""
  if cfg.algo == "grpo":
    return grpo.run(cfg)
  return sft.run(cfg, data)
