"""GRPO-style rollouts: G samples per prompt with the prompt's prefill shared, vs computing every row.

    python benchmarks/bench_rollout.py [--prompts 8] [--group 4] [--new-tokens 64] [--rounds 3]

`zoomjax.rollout.loop.rollout(gen, tok, requests, config, group_size=G, share_prefix=True|False)` on
`--prompts` distinct (image, question) requests, each repeated G times (one batch of prompts * G rows),
released protocol, temperature-1 sampling, same seed on both sides. The model is random: the LM of
`bench_decode.py`'s small config (4 x 512, 8 / 2 heads, MLP 1376) and its 2-block ViT, with the vocabulary
of a byte-level BPE trained on the protocol's templates; every image is a 1024 x 768 RGB picture whose
512-px global view is 252 image tokens (1008 ViT patches); a row's prompt is 662 tokens (the small BPE
spends ~410 on the template). With sharing the
image is decoded and preprocessed, the ViT run and the prompt prefilled once per group (8 rows instead of
32), and the KV rows copied into the group's rows; the decode is the same. tokens/s = sampled tokens /
wall time of the whole `rollout` call (prefill + decode + host work); medians of `--rounds` interleaved
rounds after a warm-up round that compiles both paths. The two paths' trajectories are compared token
for token.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--prompts", type=int, default=8)
  p.add_argument("--group", type=int, default=4)
  p.add_argument("--new-tokens", type=int, default=64)
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args(argv)

  import jax
  import numpy as np
  from PIL import Image

  from bench_decode import _config
  from zoomjax.data.tokenizer import padded_vocab_size, special_ids, train_tokenizer
  from zoomjax.model import ModelConfig, init_params
  from zoomjax.protocol import templates as P
  from zoomjax.rollout.generate import Generator, Sampling
  from zoomjax.rollout.loop import LoopConfig, Request, rollout

  questions = [f"Is there a {w} in the scene?" for w in ("road", "river", "roof", "field", "car", "tree", "ship",
                                                         "bridge", "pool", "tower", "track", "farm")]
  corpus = [P.render_prompt(q, "released").text for q in questions]
  corpus += [P.render_released_trajectory(q, "A grid. " + P.released_bbox_json([10, 20, 30, 40], "x"), "Seen.", "yes").text
             for q in questions]
  tok = train_tokenizer(corpus * 4, vocab_size=2000)
  small = _config("small", 32000)
  v = padded_vocab_size(tok)
  cfg = ModelConfig(text=dataclasses.replace(small.text, vocab_size=v), vision=small.vision, **special_ids(tok))
  gen = Generator(cfg, init_params(cfg, jax.random.key(0)))
  rs = np.random.RandomState(0)
  reqs = []
  for i in range(args.prompts):
    img = Image.fromarray(rs.randint(0, 256, (768, 1024, 3)).astype(np.uint8))
    reqs += [Request(img, questions[i % len(questions)])] * args.group
  conf = LoopConfig(protocol="released", max_new_tokens=args.new_tokens, max_total_tokens=4096,
                    sampling=Sampling(1.0), batch_size=len(reqs))

  def run(share):
    t0 = time.perf_counter()
    out = rollout(gen, tok, reqs, conf, group_size=args.group, seed=1, share_prefix=share)
    return time.perf_counter() - t0, out

  run(True)
  run(False)
  times = {True: [], False: []}
  same = True
  for _ in range(args.rounds):
    outs = {}
    for share in (True, False):
      dt, outs[share] = run(share)
      times[share].append(dt)
    same &= all(np.array_equal(a.token_ids, b.token_ids) for a, b in zip(outs[True], outs[False]))
  n_tok = sum(t.num_generated for t in outs[True])
  prompt = outs[True][0].prompt_len
  print(f"# rollout: {args.prompts} prompts x G={args.group}, released protocol, temperature 1, <= {args.new_tokens} "
        f"new tokens, LM {cfg.text.num_hidden_layers}x{cfg.text.hidden_size} (vocab {v}), {prompt} prompt tokens/row")
  print(f"# {os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}); medians of {args.rounds} "
        "interleaved rounds (min-max)")
  print("| prefix | s per rollout | sampled tokens | tokens/s | speed-up | identical trajectories |")
  print("|---|---:|---:|---:|---:|---|")
  med = {k: statistics.median(v) for k, v in times.items()}
  for share in (False, True):
    t = times[share]
    print(f"| {'shared (group_size=G)' if share else 'every row computed'} | {med[share]:.2f} "
          f"({min(t):.2f}-{max(t):.2f}) | {n_tok} | {n_tok / med[share]:.0f} | "
          f"{med[False] / med[share]:.2f}x | {'yes' if same else 'NO'} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
