"""Decode throughput: zoomjax's KV-cache generator vs transformers `generate`, same small Qwen2.5-VL, one process.

    python benchmarks/bench_decode.py [--new-tokens 64] [--batches 1 8 32] [--rounds 3] [--vocab 32000]
                                     [--torch-threads N] [--top-p P] [--cache-lens 256 2048]

Config `small` (default): the language model of `bench_forward.py` (4 layers x 512 hidden, 8 heads / 2 KV heads, head_dim 64,
MLP 1376, vocab 32000, tied) with a 2-block ViT; every prompt is 48 text tokens around one 224x224 image
(64 image tokens), all rows the same length (no padding on either side). fp32, greedy, no stop token, same
random weights (`save_pretrained` -> `zoomjax.hf.load`). Config `tiny`: `ModelConfig.tiny()` (LM 2 x 64,
vocab 512), where per-step overhead, not arithmetic, decides the throughput.

Decode throughput excludes the prefill on both sides: for each implementation and batch size B,
`t(N)` = time to prefill and generate N tokens, `t(1)` = prefill + 1 token, and
`tokens/s = B * (N - 1) / (t(N) - t(1))` (medians over `--rounds`, after a warm-up that compiles
zoomjax's programs). zoomjax: `Session.append` + `Session.generate` (jitted extend, decode in one
`lax.while_loop`). transformers: `model.generate(do_sample=False, eos_token_id=None)` with its default
dynamic cache. The two greedy outputs are compared token for token as a sanity check.

Fair threads: torch gets `os.cpu_count()` threads by default, as many as XLA's CPU client uses
(`--torch-threads N` to change it); both run in this one process, interleaved round by round.

Roofline, measured on the same machine in the same rounds: a decode step must at least read every
language-model weight once (the tied embedding counts once, as the output projection) plus the KV cache
up to the rows' lengths. `t_read` = the time of one jitted reduction over arrays of exactly those bytes
(the weights and a cache-sized array at the mean length, prompt + N/2 slots per row), or of jitted
matrix-vector products over the same arrays when those are faster (the bandwidth printed is the better
of the two; the reduction's alone beside it). Memory roofline =
`B / t_read` tokens/s; "% roofline" = achieved / that. A compute floor is printed beside it: FLOPs per step
(2 per multiply-add of every weight matrix, the head included, and of attention) over the peak
every MFU in zoomjax uses (`zoomjax.train.flops.measure_matmul_peak`), measured in the same rounds; at batch >= 8 in float32 it, not the bandwidth, bounds
a 2-core CPU.

`--top-p P`: sample instead (temperature 1, nucleus P, no top-k) on both sides (`do_sample=True, top_p=P,
top_k=0`); the outputs then differ by construction and are not compared.
`--cache-lens L ...`: a second table, zoomjax only: decode throughput of the same prompts with the session
(KV cache) sized for L tokens, to show that a decode step's cost follows the rows' lengths, not the cache
size.
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


def _config(name: str, vocab: int):
  from zoomjax.model.config import ModelConfig, TextConfig, VisionConfig
  if name == "tiny":
    return ModelConfig.tiny()
  v = vocab
  text = TextConfig(vocab_size=v, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=64, mrope_section=(8, 12, 12),
                    rope_theta=1e6, tie_word_embeddings=True)
  vision = VisionConfig(depth=2, hidden_size=128, intermediate_size=344, num_heads=2, out_hidden_size=512,
                        fullatt_block_indexes=(1,), window_size=112)
  return ModelConfig(text=text, vision=vision, bos_token_id=v - 8, pad_token_id=v - 8, eos_token_id=v - 6,
                     vision_start_token_id=v - 5, vision_end_token_id=v - 4, image_token_id=v - 3,
                     video_token_id=v - 2)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--new-tokens", type=int, default=64)
  p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--config", default="small", choices=("small", "tiny"),
                 help="small: LM 4x512, vocab --vocab; tiny: ModelConfig.tiny() (2x64, vocab 512)")
  p.add_argument("--vocab", type=int, default=32000)
  p.add_argument("--image-size", type=int, default=224)
  p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                 help="torch.set_num_threads (default: os.cpu_count(), the threads XLA's CPU client uses)")
  p.add_argument("--top-p", type=float, default=None, help="sample (temperature 1, nucleus P) instead of greedy")
  p.add_argument("--also-scanned", action="store_true",
                 help="also time a Generator(unstack=False) (decode under nn.scan on the stacked weights)")
  p.add_argument("--cache-lens", type=int, nargs="*", default=[],
                 help="also time zoomjax alone with the KV cache sized for these many tokens")
  args = p.parse_args(argv)

  import jax
  import numpy as np
  import torch

  from zoomjax import hf
  from zoomjax.model import reference as ref_lib
  from zoomjax.rollout.generate import GREEDY, Generator, ImageInput, Sampling
  from zoomjax.train import flops

  import jax.numpy as jnp

  torch.set_num_threads(args.torch_threads)
  cfg = _config(args.config, args.vocab)
  side = args.image_size // 14
  grid = np.array([1, side, side])
  n_img = side * side // 4
  rs = np.random.RandomState(0)
  with tempfile.TemporaryDirectory() as d:
    model = ref_lib.build_reference(cfg, seed=0, save_dir=d)
    cfg, params = hf.load(d)
  gen = Generator(cfg, params)
  n = args.new_tokens

  def prompts(b):
    rows, ims = [], []
    for _ in range(b):
      text = rs.randint(0, cfg.text.vocab_size - 16, 48)
      rows.append(list(text[:8]) + [cfg.vision_start_token_id] + [cfg.image_token_id] * n_img
                  + [cfg.vision_end_token_id] + list(text[8:]))
      ims.append([ImageInput(rs.randn(side * side, cfg.vision.patch_dim).astype(np.float32), grid)])
    return rows, ims

  sampling = GREEDY if args.top_p is None else Sampling(temperature=1.0, top_p=args.top_p)
  sample_kw = (dict(do_sample=False) if args.top_p is None
               else dict(do_sample=True, temperature=1.0, top_p=args.top_p, top_k=0))

  gen_scan = Generator(cfg, params, unstack=False)

  def run_jax(rows, ims, k, max_len=None, g=None):
    sess = (g or gen).session(len(rows), max_len or len(rows[0]) + n + 8)
    t0 = time.perf_counter()
    sess.append(rows, ims)
    outs = sess.generate(k, sampling)
    toks = [o.tokens for o in outs]
    return time.perf_counter() - t0, toks

  def run_torch(rows, ims, k):
    ids = torch.tensor(rows)
    pv = torch.tensor(np.concatenate([im[0].pixel_values for im in ims]))
    g = torch.tensor(np.stack([im[0].grid_thw for im in ims]))
    t0 = time.perf_counter()
    with torch.no_grad():
      out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pv, image_grid_thw=g,
                           mm_token_type_ids=(ids == cfg.image_token_id).to(torch.int32), max_new_tokens=k,
                           min_new_tokens=k, eos_token_id=None, pad_token_id=cfg.pad_token_id, **sample_kw)
    return time.perf_counter() - t0, out[:, ids.shape[1]:].tolist()

  t = cfg.text
  lang = [a for a in jax.tree.leaves(params["language"])]
  w_bytes = sum(a.nbytes for a in lang)
  w_flops = 2 * sum(a.size for a in lang if a.ndim >= 2)   # every weight matrix once (the tied head included)
  read = jax.jit(lambda arrs: sum(jnp.sum(a) for a in arrs))
  # the same bytes read by matrix-vector products (XLA CPU's reduction does not always reach the bandwidth
  # a GEMV does): each array as [rows, -1], multiplied by a ones row vector
  gemv = jax.jit(lambda arrs: sum(jnp.sum(jnp.ones((1, a.shape[0]), a.dtype) @ a.reshape(a.shape[0], -1))
                                  for a in arrs))

  def timed(f, *a, reps=5):
    jax.block_until_ready(f(*a))
    t0 = time.perf_counter()
    for _ in range(reps):
      out = f(*a)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps

  results, scanned = [], []
  for b in args.batches:
    rows, ims = prompts(b)
    mean_len = len(rows[0]) + n / 2
    kv = jnp.ones((2 * t.num_hidden_layers * b * int(mean_len) * t.num_key_value_heads * t.head_dim,), jnp.float32)
    kv_rows = kv.reshape(-1, t.num_key_value_heads * t.head_dim)   # the KV bytes as GEMV rows
    step_bytes = w_bytes + kv.nbytes
    step_flops = b * (w_flops + 4 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * mean_len)
    run_jax(rows, ims, n)          # warm-up: compiles extend and the decode loops
    run_jax(rows, ims, 1)
    run_torch(rows, ims, 2)
    tj = {1: [], n: []}
    tt = {1: [], n: []}
    t_read, t_gemv, peaks = [], [], []
    ts = {1: [], n: []}
    if args.also_scanned:
      run_jax(rows, ims, n, g=gen_scan)
      run_jax(rows, ims, 1, g=gen_scan)
    for _ in range(args.rounds):   # interleaved, so load from other processes hits both alike
      for k in (1, n):
        dt, jtoks = run_jax(rows, ims, k)
        tj[k].append(dt)
        if args.also_scanned:
          dt, stoks = run_jax(rows, ims, k, g=gen_scan)
          ts[k].append(dt)
          assert stoks == jtoks
        dt, ttoks = run_torch(rows, ims, k)
        tt[k].append(dt)
      t_read.append(timed(read, lang + [kv]))
      t_gemv.append(timed(gemv, [a for a in lang if a.ndim >= 2] + [kv_rows]))
      peaks.append(flops.measure_matmul_peak())
    same = sum(a == c for a, c in zip(jtoks, ttoks))
    jd = statistics.median(tj[n]) - statistics.median(tj[1])
    td = statistics.median(tt[n]) - statistics.median(tt[1])
    jtps = b * (n - 1) / jd
    bw = step_bytes / min(statistics.median(t_read), statistics.median(t_gemv))
    bw_red = step_bytes / statistics.median(t_read)
    peak = statistics.median(peaks)
    if args.also_scanned:
      sd = statistics.median(ts[n]) - statistics.median(ts[1])
      scanned.append((b, b * (n - 1) / sd, jtps))
    results.append((b, jtps, b * (n - 1) / td, statistics.median(tj[1]), statistics.median(tt[1]), same,
                    b * bw / step_bytes, bw, b * peak / step_flops, peak, step_bytes, bw_red))

  by_len = []
  for b in args.batches if args.cache_lens else ():
    rows, ims = prompts(b)
    for m in args.cache_lens:
      run_jax(rows, ims, n, m)
      run_jax(rows, ims, 1, m)
    tl = {(m, k): [] for m in args.cache_lens for k in (1, n)}
    for _ in range(args.rounds):
      for m in args.cache_lens:
        for k in (1, n):
          tl[m, k].append(run_jax(rows, ims, k, m)[0])
    for m in args.cache_lens:
      jd = statistics.median(tl[m, n]) - statistics.median(tl[m, 1])
      by_len.append((b, m, gen.session(b, m)._s, b * (n - 1) / jd, jd / (n - 1)))

  mode = "greedy" if args.top_p is None else f"sampled (temperature 1, top-p {args.top_p})"
  print(f"# decode throughput: {args.config} config, LM {t.num_hidden_layers}x{t.hidden_size} (vocab {t.vocab_size}), prompt 48 text + {n_img} image tokens, "
        f"{n} new tokens, {mode}, fp32")
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads)")
  print("| batch | zoomjax tokens/s | transformers tokens/s | speed-up | memory roofline tok/s (MB/step @ GB/s; "
        "reduction alone) "
        "| % of roofline | compute floor tok/s (@ GFLOP/s) | % of floor | prefill+1 ms (zoomjax / transformers) "
        "| identical rows |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for b, j, tr, pj, pt, same, roof, bw, floor, peak, nbytes, bw_red in results:
    ident = f"{same}/{b}" if args.top_p is None else "n/a (sampled)"
    print(f"| {b} | {j:.0f} | {tr:.0f} | {j / tr:.2f}x | {roof:.0f} ({nbytes / 1e6:.0f} MB @ {bw / 1e9:.1f}; "
          f"{bw_red / 1e9:.1f}) "
          f"| {100 * j / roof:.0f} % | {floor:.0f} (@ {peak / 1e9:.0f}) | {100 * j / floor:.0f} % "
          f"| {pj * 1e3:.0f} / {pt * 1e3:.0f} | {ident} |")
  if scanned:
    print()
    print("# zoomjax decode on the stacked weights under nn.scan (Generator(unstack=False)) vs per-layer weights")
    print("| batch | scanned tok/s | per-layer tok/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for b, sc, un in scanned:
      print(f"| {b} | {sc:.0f} | {un:.0f} | {un / sc:.2f}x |")
  if by_len:
    print()
    print(f"# zoomjax alone, KV cache sized for L tokens (rows hold {len(prompts(1)[0][0])} + up to {n})")
    print("| batch | L | cache slots | tokens/s | ms per decode step |")
    print("|---:|---:|---:|---:|---:|")
    for b, m, slots, tps, step in by_len:
      print(f"| {b} | {m} | {slots} | {tps:.0f} | {step * 1e3:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
