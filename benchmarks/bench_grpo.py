"""GRPO rollouts: zoomjax's perception loop vs the released trainer's way, on the same weights; and where a
GRPO step's time goes.

    python benchmarks/bench_grpo.py [--run runs/embedded] [--prompts 4] [--group 4] [--new-tokens 160]

Model: the export of a training run (`RUN_DIR/hf`, default: the embedded default's, so the policy really
asks for crops), its tokenizer and `zoomjax_infer.json` protocol; prompts: `--prompts` questions drawn from
the run's Toy Earth `rl.jsonl` (seeded, `--prompt-seed`), each sampled `--group` times at temperature 1.

* **zoomjax**: `rollout(..., group_size=G)` — the batch decoded together with a KV cache, the group's
  prompt prefilled once, stage 1 cut on the host, the crop appended to the cache, stage 2 continued.
* **released way** (ZoomEarth's trainer): transformers `generate` on the same weights (PyTorch, fp32):
  stage 1 for the G samples of a prompt in one call (`num_return_sequences=G`), then stage 2 one sample at
  a time, each a fresh `generate` over prompt + stage 1 + the crop (no cache carried over).
Both sides sample at temperature 1 with the same budgets and stop tokens; both use every core (torch
threads = os.cpu_count(), as XLA's CPU client does). tokens/s = sampled tokens / wall time of the whole
rollout (image preprocessing, prefill, decode, host work); medians over `--rounds` after `--warmup`
rounds (zoomjax compiles one decode program per length bucket; a round that meets a new bucket pays a
compilation, which a training run pays once).

The step split (rollout share, update tokens/s) is read from the run's own GRPO metrics (`metrics.jsonl`
rows of stage `grpo`: `time_rollout_s`, `step_time_s`, `tokens`), i.e. measured in the real run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _released_rollout(model, tok, requests, group: int, cfg, max_new: int):
  """The released trainer's rollout with transformers `generate`; returns (sampled tokens, zooms)."""
  import numpy as np
  import torch

  from zoomjax.processing import num_image_tokens, preprocess_image
  from zoomjax.protocol import parse, templates as P
  from zoomjax.rollout.tools import SceneImage, default_registry

  enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
  tools = default_registry()
  pad_id = tok.convert_tokens_to_ids(P.IMAGE_PAD)
  stops = [tok.convert_tokens_to_ids(t) for t in P.END_OF_TURN_TOKENS]
  request = P.crop_request_token(cfg.protocol, cfg.version)
  if request is not None:
    stops.append(tok.convert_tokens_to_ids(request))

  def image_in(pil):
    pv, g = preprocess_image(pil, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    return np.asarray(pv, np.float32), np.asarray(g, np.int64)

  def generate(ids, images, n):
    pv = torch.from_numpy(np.concatenate([p for p, _ in images]))
    grid = torch.from_numpy(np.stack([g for _, g in images]))
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():  # mm_token_type_ids: without it transformers gives image tokens 1-D positions
      out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=pv, image_grid_thw=grid,
                           mm_token_type_ids=(x == pad_id).to(torch.int32),
                           max_new_tokens=max_new, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                           num_return_sequences=n, eos_token_id=stops, pad_token_id=stops[0])
    rows = []
    for r in out[:, len(ids):].tolist():
      cut = next((i + 1 for i, t in enumerate(r) if t in stops), len(r))
      rows.append(r[:cut])
    return rows

  sampled = zooms = 0
  for req in requests:
    scene = SceneImage.open(req.image, long_side=cfg.long_side)
    view = image_in(scene.view)
    prompt = P.render_prompt(req.question, cfg.protocol, version=cfg.version)
    ids, _ = P.encode_segments(prompt.segments, enc, [num_image_tokens(view[1])], pad_id)
    for s1 in generate(ids, [view], group):          # stage 1: the group in one call
      sampled += len(s1)
      text = tok.decode(s1, skip_special_tokens=False)
      box = parse.parse_crop_request(parse.released_stage1(text), "released", scene.view_size)
      if box is None:
        continue
      crop = image_in(tools.call("crop_and_zoom", scene, {"bbox_2d": box}).image)
      body = s1[:-1] if s1 and s1[-1] in stops else s1
      crop_ids, _ = P.encode_segments(P.released_crop_segments(), enc, [num_image_tokens(crop[1])], pad_id)
      (s2,) = generate(ids + body + crop_ids, [view, crop], 1)   # stage 2: one sample at a time
      sampled += len(s2)
      zooms += 1
  return sampled, zooms


def _step_split(run_dir: str) -> dict:
  from zoomjax.train.logger import read_jsonl
  rows = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
          if r.get("stage") == "grpo" and "split" not in r and r.get("step_time_s")]
  rows = rows[1:] or rows     # the first logged interval holds the compilation
  if not rows:
    return {}
  step = statistics.mean(r["step_time_s"] for r in rows)
  roll = statistics.mean(r["time_rollout_s"] for r in rows)
  toks = statistics.mean(r["tokens"] for r in rows)
  return {"steps": len(rows), "step_s": step, "rollout_s": roll, "rollout_share": roll / step,
          "update_tokens_per_s": toks / max(step - roll, 1e-9)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--run", default="runs/embedded")
  p.add_argument("--prompts", type=int, default=4)
  p.add_argument("--prompt-seed", type=int, default=0, help="which RL prompts (a seeded sample of rl.jsonl)")
  p.add_argument("--group", type=int, default=4)
  p.add_argument("--new-tokens", type=int, default=160)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--warmup", type=int, default=3,
                 help="warm-up rounds per side (zoomjax compiles one decode program per length bucket it meets)")
  args = p.parse_args(argv)

  import torch
  from transformers import Qwen2_5_VLForConditionalGeneration

  from zoomjax import hf
  from zoomjax.data.lrs_gro import LrsGroSource
  from zoomjax.rollout.generate import Generator, Sampling
  from zoomjax.rollout.loop import LoopConfig, Request, rollout

  torch.set_num_threads(os.cpu_count() or 1)
  model_dir = hf.model_dir(args.run)
  with open(os.path.join(args.run, "summary.json")) as fh:
    root = json.load(fh).get("data_root") or os.path.join(args.run, "data")
  rows = list(LrsGroSource(os.path.join(root, "rl.jsonl"), os.path.join(root, "images")))
  # a seeded sample, as a GRPO batch draws from the shuffled split (the file lists each image's global
  # questions first: its first rows would be prompts that never zoom)
  rows = random.Random(args.prompt_seed).sample(rows, min(args.prompts, len(rows)))
  requests = [Request(os.path.join(root, "images", r.image_name), r.question) for r in rows]
  d = hf.inference_defaults(model_dir)
  cfg = LoopConfig(protocol=d.get("protocol", "released"), version=d.get("version"),
                   max_new_tokens=args.new_tokens, max_pixels=d.get("max_pixels", LoopConfig().max_pixels),
                   sampling=Sampling(temperature=1.0), batch_size=args.prompts * args.group)
  model_cfg, params = hf.load(model_dir)
  tok = hf.load_tokenizer(model_dir)
  gen = Generator(model_cfg, params)
  grouped = [r for r in requests for _ in range(args.group)]
  ref = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()

  def ours(seed):
    trajs = rollout(gen, tok, grouped, cfg, seed=seed, group_size=args.group)
    return sum(t.num_generated for t in trajs), sum(bool(t.crops) for t in trajs)

  def theirs(seed):
    torch.manual_seed(seed)
    return _released_rollout(ref, tok, requests, args.group, cfg, args.new_tokens)

  for i in range(args.warmup):   # warm-up: compiles zoomjax's bucketed shapes, warms torch
    ours(100 + i), theirs(100 + i)
  res = {"zoomjax": [], "released": []}
  for i in range(args.rounds):
    for name, fn in (("zoomjax", ours), ("released", theirs)):
      t = time.perf_counter()
      n, z = fn(i + 1)
      res[name].append((n, time.perf_counter() - t, z))
  tps = {k: statistics.median(n / s for n, s, _ in v) for k, v in res.items()}
  total = args.prompts * args.group
  print(f"model {model_dir} ({model_cfg.text.num_hidden_layers} x {model_cfg.text.hidden_size}); "
        f"{args.prompts} prompts x G={args.group}, <= {args.new_tokens} new tokens per stage, T=1; "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
  print("| rollout | sampled tokens (median) | trajectories that zoomed (all rounds) | wall s (median) | tokens/s "
        "| speed-up |")
  print("|---|---|---|---|---|---|")
  for k in ("released", "zoomjax"):
    n = statistics.median(x for x, _, _ in res[k])
    s = statistics.median(y for _, y, _ in res[k])
    z = sum(c for _, _, c in res[k])
    print(f"| {k} | {n:.0f} | {z} / {total * args.rounds} | {s:.2f} | {tps[k]:.1f} | {tps[k] / tps['released']:.2f}x |")
  split = _step_split(args.run)
  if split:
    print(f"\nGRPO step ({args.run}, {split['steps']} logged intervals): {split['step_s']:.2f} s/step, rollout "
          f"{split['rollout_s']:.2f} s ({100 * split['rollout_share']:.0f} %), update "
          f"{split['update_tokens_per_s']:.0f} trained tokens/s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
