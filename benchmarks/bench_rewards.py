"""Reward throughput: the jitted box kernels vs a plain Python loop, and the answer judge with/without cache.

    python3 benchmarks/bench_rewards.py [--batch 4096] [--repeats 50] [--out benchmarks/results/rewards.md]

Box kernels: boxes/s for `total_reward` (IoU + Region-Guided + sums) at batch 4096, both variants, jit
warm, timed to `block_until_ready`. The Python loop does the same per-row arithmetic in plain Python
floats (the way the released reward computes it). Judge: pairs/s on LRS-GRO-like answer pairs (ground
truths of the RL split against perturbed predictions), cold (`cache_clear()` before every pair, so each
pays its WordNet lookups) and warm (every pair already in the cache).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import random
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from zoomjax.rl import judge  # noqa: E402
from zoomjax.rl.rewards import RewardConfig, total_reward  # noqa: E402


def make_boxes(batch: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  wh = np.floor(rng.uniform(2000, 8000, (batch, 2))).astype(np.float32)   # integer image sizes
  xy = rng.uniform(0, 1, (batch, 2)) * wh * 0.8
  size = rng.uniform(10, 900, (batch, 2))
  gt = np.concatenate([xy, xy + size], -1).astype(np.float32)
  pred = (gt + rng.normal(0, 150, (batch, 4))).astype(np.float32)
  pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
  valid = rng.random(batch) < 0.9
  return pred, gt, wh, valid


def _iou(a, b):
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _window(b, w, h, m=512):
  x1, y1, x2, y2 = (int(v) for v in b)
  x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
  y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
  if x2 - x1 < m or y2 - y1 < m:
    ax = min(max((x1 + x2) // 2 - m // 2, 0), max(w - m, 0))
    ay = min(max((y1 + y2) // 2 - m // 2, 0), max(h - m, 0))
    return [ax, ay, min(ax + m, w), min(ay + m, h)]
  return [x1, y1, x2, y2]


def python_loop(pred, gt, wh, valid, answer, fmt, variant):
  out = []
  for p, g, (w, h), v, a, f in zip(pred.tolist(), gt.tolist(), wh.tolist(), valid.tolist(),
                                   answer.tolist(), fmt.tolist()):
    box = 0.0
    if v:
      d = math.hypot((p[0] + p[2] - g[0] - g[2]) / 2, (p[1] + p[3] - g[1] - g[3]) / 2)
      if variant == "paper":
        box = _iou(p, g) + 1.0 / (1.0 + math.exp(-200.0 / (d + 0.2)))
      else:
        box = _iou(_window(p, int(w), int(h)), _window(g, int(w), int(h))) + math.tanh(200.0 / (d + 1e-6))
    out.append(box + a + (0.05 if variant == "paper" else 1.0) * f)
  return out


def bench_kernels(batch: int, repeats: int) -> list[dict]:
  pred, gt, wh, valid = make_boxes(batch)
  answer = np.random.default_rng(1).random(batch).astype(np.float32)
  fmt = np.ones(batch, np.float32)
  rows = []
  for variant in ("paper", "released"):
    cfg = RewardConfig(variant=variant)
    dev = [jax.device_put(x) for x in (pred, gt, answer, fmt, valid, wh)]
    fn = lambda: total_reward(cfg, dev[0], dev[1], dev[2], dev[3], pred_valid=dev[4],
                              image_wh=dev[5])["total"]
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - t0)
    jit_s = float(np.median(times))
    t0 = time.perf_counter()
    ref = python_loop(pred, gt, wh, valid, answer, fmt, variant)
    loop_s = time.perf_counter() - t0
    err = float(np.max(np.abs(np.asarray(fn()) - np.asarray(ref, np.float32))))
    rows.append({"variant": variant, "batch": batch, "jit_ms": 1e3 * jit_s,
                 "jit_boxes_per_s": batch / jit_s, "loop_ms": 1e3 * loop_s,
                 "loop_boxes_per_s": batch / loop_s, "speedup": loop_s / jit_s,
                 "first_call_s": compile_s, "max_abs_diff": err})
  return rows


def judge_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
  rl = REPO.parent / "shared/data/lrs_gro/rl.jsonl"
  if rl.exists():
    gts = [json.loads(l)["ground_truth"] for l in rl.read_text().splitlines() if l.strip()]
  else:
    gts = ["port", "yes", "light grey", "container ship", "3", "residential", "concrete"]
  rng = random.Random(seed)
  vocab = sorted(set(gts))
  pairs = []
  for _ in range(n):
    gt = rng.choice(gts)
    pred = rng.choice([gt, gt.upper() + ".", rng.choice(vocab), rng.choice(vocab)])
    pairs.append((pred, gt))
  return pairs


def bench_judge(n: int) -> dict:
  pairs = judge_pairs(n)
  judge.answer_score("warm", "up")       # loads WordNet (timed separately below)
  t0 = time.perf_counter()
  for p, g in pairs:
    judge.cache_clear()
    judge.answer_score(p, g)
  cold = time.perf_counter() - t0
  judge.cache_clear()
  for p, g in pairs:
    judge.answer_score(p, g)
  t0 = time.perf_counter()
  for p, g in pairs:
    judge.answer_score(p, g)
  warm = time.perf_counter() - t0
  return {"pairs": n, "distinct_pairs": len(set(pairs)), "cold_pairs_per_s": n / cold,
          "warm_pairs_per_s": n / warm, "cached_speedup": cold / warm}


def wordnet_load_s() -> float:
  import subprocess
  code = ("import time; t=time.perf_counter(); from zoomjax.rl import judge; "
          "judge.answer_score('cat', 'dog'); print(time.perf_counter()-t)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
  return float(r.stdout.strip()) if r.returncode == 0 else float("nan")


def to_markdown(kernels, jd, load_s) -> str:
  dev = jax.devices()[0]
  lines = [
      "# Reward throughput", "",
      f"Machine: {platform.machine()} / {os.cpu_count()} CPUs, JAX {jax.__version__} on "
      f"{dev.platform} ({dev.device_kind}); 1-min load average {os.getloadavg()[0]:.1f} when measured "
      "(other jobs share the CPUs: absolute numbers are pessimistic, ratios less so); "
      "`python3 benchmarks/bench_rewards.py`.", "",
      "## Box rewards (`total_reward`: IoU + Region-Guided + answer + format), batch "
      f"{kernels[0]['batch']}", "",
      "| variant | jit warm (ms) | boxes/s (jit) | Python loop (ms) | boxes/s (loop) | speed-up | first call (s) | max abs diff |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in kernels:
    lines.append(f"| {r['variant']} | {r['jit_ms']:.3f} | {r['jit_boxes_per_s']:.3g} | "
                 f"{r['loop_ms']:.1f} | {r['loop_boxes_per_s']:.3g} | {r['speedup']:.0f}x | "
                 f"{r['first_call_s']:.2f} | {r['max_abs_diff']:.1e} |")
  lines += [
      "", "## Answer judge (host, LRS-GRO-like pairs)", "",
      f"{jd['pairs']} pairs ({jd['distinct_pairs']} distinct): cold = every pair pays its WordNet "
      "lookups (`judge.cache_clear()` before each), warm = the pair cache answers.", "",
      "| | pairs/s |", "|---|---:|",
      f"| cold (no cache) | {jd['cold_pairs_per_s']:.0f} |",
      f"| warm (cached) | {jd['warm_pairs_per_s']:.0f} |",
      f"| speed-up | {jd['cached_speedup']:.0f}x |",
      "", f"One-off cost per process: import NLTK + load WordNet + first score = {load_s:.1f} s.", ""]
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=4096)
  ap.add_argument("--repeats", type=int, default=50)
  ap.add_argument("--judge-pairs", type=int, default=2000)
  ap.add_argument("--out", default=None, help="write the markdown table here")
  args = ap.parse_args(argv)
  kernels = bench_kernels(args.batch, args.repeats)
  jd = bench_judge(args.judge_pairs)
  md = to_markdown(kernels, jd, wordnet_load_s())
  print(md)
  if args.out:
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(md)


if __name__ == "__main__":
  main()
