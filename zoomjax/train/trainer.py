"""`train(cfg)`: runs the configured stage (`algo: sft` or `grpo`) on the shared harness.

    summary = train(cfg)    # {"run_dir", "final_step", "last", "eval", "answers", "stages", ...}

The machinery (mesh, shardings, jitted step, checkpoints, signals, loop) is `zoomjax.train.harness`;
around-the-loop work (exports, summary) is `zoomjax.train.driver`; the stages are `zoomjax.train.sft`
and `zoomjax.train.grpo`.
"""

from __future__ import annotations

from zoomjax.train import grpo, outcome, sft
from zoomjax.train.config import TrainConfig, next_stage
from zoomjax.train.driver import TrainingFailed
from zoomjax.train.harness import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, build, build_model_config, init_train_state

__all__ = ["train", "TrainingFailed", "PREEMPTED_EXIT_CODE", "INTERRUPTED_EXIT_CODE", "build", "build_model_config",
           "init_train_state"]


def train(cfg: TrainConfig, data=None) -> dict:
  """Runs the configured training stage, then the stages its `then` chain names (in the same run_dir);
  returns the last stage's summary. `data` overrides the first stage's SFT data (a `sft_data.Data`).
  A stage stopped by a signal ends the chain (rerunning resumes it, earlier stages finish at once)."""
  stage: TrainConfig | None = cfg
  while stage is not None:
    summary = grpo.run(stage) if stage.algo == "grpo" else sft.run(stage, data)
    if summary.get("preempted"):
      break
    data, last, stage = None, stage, next_stage(stage)
  if not summary.get("preempted") and last.eval.outcome:
    summary.update(outcome.write_outcome(last, summary))
  return summary
