"""Public reward API (SPEC §8): box kernels on device, the answer judge and format check on the host.

    from zoomjax import rewards
    rewards.iou(pred, gt)                                  # float32[B, 4] x2 -> float32[B]
    rewards.region_guided(pred, gt, variant="paper", alpha=200.0, eps=0.2)
    rewards.answer_score(prediction, ground_truth)         # released judge (+ multi-word rule) -> float
    rewards.total(cfg, pred, gt, answer, fmt, ...)         # dict of every component, float32[B] each

Details and the two variants (`paper`, `released`): `zoomjax.rl.rewards`, `zoomjax.rl.judge`,
`zoomjax.rl.format`.
"""

from zoomjax.rl.format import format_reward, format_rewards
from zoomjax.rl.judge import THRESHOLD, answer_score, answer_scores, is_correct
from zoomjax.rl.rewards import (RewardConfig, crop_windows, iou, region_guided, total_reward,
                                window_iou)
from zoomjax.rl.wordnet import WordNetUnavailable, ensure_wordnet

total = total_reward

__all__ = [
    "RewardConfig", "THRESHOLD", "WordNetUnavailable", "answer_score", "answer_scores",
    "crop_windows", "ensure_wordnet", "format_reward", "format_rewards", "iou", "is_correct",
    "region_guided", "total", "total_reward", "window_iou",
]
