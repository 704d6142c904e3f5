"""Forward latency: zoomjax (jit, warm) vs transformers (eager, fp32) on the same small Qwen2.5-VL.

    python benchmarks/bench_forward.py [--iters 10] [--vit-width 512] [--vocab 32000] [--markdown]

Default config (issue 2): language model 4 layers x 512 hidden (8 heads / 2 KV heads, head_dim 64),
vision tower 4 blocks (one full-attention block, 112-px windows), one 448x448 image (32x32 patches ->
256 image tokens) plus 128 text tokens, batch 1, fp32. Both models hold the same random weights
(`save_pretrained` -> `zoomjax.hf.load`); the table reports median / min latency and the speed-up, and
the max |Δlogits| between the two as a sanity check.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(args):
  from zoomjax.model.config import ModelConfig, TextConfig, VisionConfig
  v = args.vocab
  text = TextConfig(vocab_size=v, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=64, mrope_section=(8, 12, 12),
                    rope_theta=1e6, tie_word_embeddings=True)
  w = args.vit_width
  vision = VisionConfig(depth=4, hidden_size=w, intermediate_size=(w * 8) // 3 // 8 * 8, num_heads=w // 64,
                        out_hidden_size=512, fullatt_block_indexes=(3,), window_size=112)
  return ModelConfig(text=text, vision=vision, bos_token_id=v - 8, pad_token_id=v - 8, eos_token_id=v - 6,
                     vision_start_token_id=v - 5, vision_end_token_id=v - 4, image_token_id=v - 3,
                     video_token_id=v - 2)


def _time(fn, iters: int) -> list[float]:
  out = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--iters", type=int, default=10)
  p.add_argument("--vit-width", type=int, default=512)
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--text-tokens", type=int, default=128)
  p.add_argument("--image-size", type=int, default=448)
  args = p.parse_args(argv)

  import jax
  import numpy as np
  import torch
  torch.set_num_threads(os.cpu_count() or 1)   # the threads XLA's CPU client uses: the same on both sides

  from zoomjax import hf
  from zoomjax.model import reference as ref_lib
  from zoomjax.model.inputs import prepare_inputs
  from zoomjax.model.qwen2_5_vl import apply

  cfg = _config(args)
  side = args.image_size // 14
  grid = np.array([[1, side, side]])
  n_img = side * side // 4
  rs = np.random.RandomState(0)
  text = rs.randint(0, cfg.text.vocab_size - 16, args.text_tokens)
  ids = np.concatenate([text[:16], [cfg.vision_start_token_id], np.full(n_img, cfg.image_token_id),
                        [cfg.vision_end_token_id], text[16:]])[None]
  pixels = rs.randn(side * side, cfg.vision.patch_dim).astype(np.float32)

  with tempfile.TemporaryDirectory() as d:
    model = ref_lib.build_reference(cfg, seed=0, save_dir=d)
    cfg, params = hf.load(d)

  # zoomjax: host prep once (it is part of the public forward, timed separately), device part jitted.
  t0 = time.perf_counter()
  inputs = prepare_inputs(cfg, ids, None, grid)
  prep_s = time.perf_counter() - t0
  fwd = jax.jit(apply, static_argnums=0)
  dev_inputs = jax.device_put(inputs)
  dev_pixels = jax.device_put(pixels)
  t0 = time.perf_counter()
  ours = np.asarray(fwd(cfg, params, dev_inputs, dev_pixels))
  compile_s = time.perf_counter() - t0
  theirs = ref_lib.reference_logits(model, cfg, ids, None, pixels, grid)  # warm-up
  jax_times, torch_times = [], []
  for _ in range(args.iters):  # interleaved, so load from other processes hits both alike
    jax_times += _time(lambda: fwd(cfg, params, dev_inputs, dev_pixels).block_until_ready(), 1)
    torch_times += _time(lambda: ref_lib.reference_logits(model, cfg, ids, None, pixels, grid), 1)
  diff = float(np.abs(ours - theirs).max())

  jm, tm = statistics.median(jax_times), statistics.median(torch_times)
  rows = [("zoomjax (jit, warm)", jm, min(jax_times)), ("transformers (eager)", tm, min(torch_times))]
  print(f"# forward latency: LM 4x512, ViT 4x{args.vit_width}, one {args.image_size}x{args.image_size} image "
        f"({n_img} tokens) + {args.text_tokens} text tokens, vocab {cfg.text.vocab_size}, fp32, batch 1")
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads)")
  print("| implementation | median ms | min ms |")
  print("|---|---:|---:|")
  for name, med, mn in rows:
    print(f"| {name} | {med * 1e3:.1f} | {mn * 1e3:.1f} |")
  print(f"\nspeed-up (transformers / zoomjax, median): {tm / jm:.2f}x")
  print(f"zoomjax compile: {compile_s:.1f} s; host prep (M-RoPE ids, vision metadata): {prep_s * 1e3:.1f} ms")
  print(f"max |logits diff|: {diff:.2e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
