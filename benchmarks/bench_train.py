"""SFT training-step throughput: zoomjax (`zoomjax.train`'s jitted step) vs transformers + torch, same data.

    python benchmarks/bench_train.py [--steps 8] [--batch 8] [--seq-len 256] [--config embedded] [--markdown]

Model: the embedded default's tiny Qwen2.5-VL (`configs/embedded.yaml` sizes; vocab 1024), fp32. Data:
the synthetic copy task, one 56x56-px image (16 patches) per sequence, `--batch` sequences of
`--seq-len` tokens. Both frameworks hold the same weights (`zoomjax.hf.save` -> `from_pretrained`), see
the same batch, and run one AdamW step per iteration (torch: `loss.backward()` + `AdamW.step()`,
`torch.set_num_threads(os.cpu_count())`; zoomjax: the donated, jitted train step on one CPU device).
Reported: median step time, tokens/s (valid tokens), the first-step loss of each (a sanity check that
they compute the same thing), model FLOPs per step (`zoomjax.train.flops`) and achieved FLOP/s as a
fraction of the peak every zoomjax MFU uses (`flops.measure_matmul_peak`; torch's matmul rate is
printed beside).
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
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def torch_matmul_peak(n: int = 1024, k: int = 8, repeats: int = 5) -> float:
  import torch
  a = torch.randn(n, n) / n ** 0.5
  x = a.clone()
  best = float("inf")
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    y = x
    for _ in range(k):
      y = y @ a
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 * k / best


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=8)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq-len", type=int, default=256)
  p.add_argument("--config", default="embedded")
  p.add_argument("--markdown", action="store_true")
  args = p.parse_args(argv)

  import jax
  import numpy as np
  import torch
  jax.config.update("jax_default_matmul_precision", "highest")
  from zoomjax import hf
  from zoomjax.train import batching, flops, harness as trainer, sft
  from zoomjax.train.config import load_config
  from zoomjax.data.synthetic import SyntheticCopyDataset
  from zoomjax.train.sft_data import Data, make_stream

  cfg = load_config(args.config, ["data.kind=synthetic", f"data.batch_size={args.batch}",
                                  f"data.seq_len={args.seq_len}", "mesh.devices=1", "mesh.data=1",
                                  "optim.warmup_steps=0", "optim.weight_decay=0", "optim.clip_norm=0",
                                  "optim.schedule=constant", "optim.lr=1e-3", "optim.grad_accum=1"])
  model_cfg = trainer.build_model_config(cfg, vocab_size=1024)
  ds = SyntheticCopyDataset(model_cfg, num_examples=args.batch * (args.steps + 2), prompt_len=(args.seq_len - 24) // 2)
  data = Data(train=ds, pad_id=model_cfg.pad_token_id, max_patches=int(ds.grid.prod()), max_images=1,
              patches_per_image=float(ds.grid.prod()))
  setup = trainer.build(cfg, model_cfg, sft.OBJECTIVE)
  stream = make_stream(data, ds, model_cfg, setup.mesh, args.batch, 1, args.seq_len, 0, False, 0, prefetch=0)
  batches = [next(stream) for _ in range(args.steps + 1)]
  stream.close()
  step_flops = flops.step_flops(model_cfg, args.batch, args.seq_len, args.batch * int(ds.grid.prod()),
                                float(ds.grid.prod()))
  valid = [float(b.attention_mask.sum()) for b in batches]

  # ------------------------------------------------------------------ zoomjax
  with trainer.mesh_ctx(setup):
    state = trainer.init_train_state(setup)
    params0 = jax.device_get(state.params)
    dev = [batching.to_global(b, setup.mesh) for b in batches]
    t0 = time.perf_counter()
    state, m = setup.train_step(state, dev[0])
    jax.block_until_ready(m)
    jax_compile = time.perf_counter() - t0
    jax_first_loss = float(m["loss"])
    jt = []
    for b in dev[1:]:
      t0 = time.perf_counter()
      state, m = setup.train_step(state, b)
      jax.block_until_ready(m)
      jt.append(time.perf_counter() - t0)
  jax_peak = flops.measured_matmul_peak()

  # ------------------------------------------------------------------ torch
  torch.set_num_threads(os.cpu_count() or 1)
  from transformers import Qwen2_5_VLForConditionalGeneration
  with tempfile.TemporaryDirectory() as d:
    hf.save(d, model_cfg, params0)
    tm = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, torch_dtype=torch.float32,
                                                            attn_implementation="eager")
  tm.train()
  opt = torch.optim.AdamW(tm.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

  def torch_batch(i):
    exs = [ds[int(j)] for j in range(i * args.batch, (i + 1) * args.batch)]
    ids = np.full((args.batch, args.seq_len), model_cfg.pad_token_id, np.int64)
    att = np.zeros_like(ids)
    lab = np.full_like(ids, -100)
    for r, ex in enumerate(exs):
      n = len(ex["input_ids"])
      ids[r, :n], att[r, :n] = ex["input_ids"], 1
      lab[r, :n] = np.where(ex["loss_mask"] > 0, ex["input_ids"], -100)
    ids_t = torch.from_numpy(ids)
    return dict(input_ids=ids_t, attention_mask=torch.from_numpy(att), labels=torch.from_numpy(lab),
                pixel_values=torch.from_numpy(np.concatenate([ex["pixel_values"] for ex in exs])),
                image_grid_thw=torch.from_numpy(np.concatenate([ex["image_grid_thw"] for ex in exs]).astype(np.int64)),
                mm_token_type_ids=(ids_t == model_cfg.image_token_id).long())

  tbs = [torch_batch(i) for i in range(args.steps + 1)]
  tt = []
  torch_first_loss = None
  for i, b in enumerate(tbs):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out = tm(**b)
    out.loss.backward()
    opt.step()
    dt = time.perf_counter() - t0
    if i == 0:
      torch_first_loss = float(out.loss.detach())
    else:
      tt.append(dt)
  t_peak = torch_matmul_peak()
  peak = jax_peak  # the one peak of every zoomjax MFU (flops.measured_matmul_peak); torch's is shown beside

  # ------------------------------------------------------------------ report
  jm, tmed = statistics.median(jt), statistics.median(tt)
  tok = statistics.mean(valid[1:])
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as fh:
      cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  rows = [
      ("zoomjax (jit, 1 CPU device)", jm, min(jt), tok / jm, step_flops / jm, step_flops / jm / peak, jax_first_loss),
      ("transformers + torch (eager)", tmed, min(tt), tok / tmed, step_flops / tmed, step_flops / tmed / peak,
       torch_first_loss),
  ]
  hdr = ("framework", "median step s", "min step s", "tokens/s", "GFLOP/s", "of matmul peak", "first loss")
  print(f"# bench_train: {cpu}, {os.cpu_count()} cores, jax {jax.__version__}, torch {torch.__version__}")
  print(f"# batch {args.batch} x {args.seq_len} tokens ({tok:.0f} valid), 1 image of {int(ds.grid.prod())} patches "
        f"per sequence; {step_flops / 1e9:.2f} GFLOP/step (model FLOPs, vision included); "
        f"peak (flops.measured_matmul_peak, the one training runs use): {jax_peak / 1e9:.1f} GFLOP/s; "
        f"torch's matmul chain for comparison: {t_peak / 1e9:.1f} GFLOP/s; "
        f"zoomjax compile + first step {jax_compile:.1f} s")
  if args.markdown:
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
      print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.0f} | {r[4] / 1e9:.2f} | {r[5] * 100:.1f}% | {r[6]:.4f} |")
  else:
    for r in rows:
      print(f"{r[0]:<30} median {r[1]:.3f}s min {r[2]:.3f}s  {r[3]:8.0f} tok/s  {r[4] / 1e9:6.2f} GFLOP/s "
            f"({r[5] * 100:.1f}% of peak)  first loss {r[6]:.4f}")
  print(f"speed-up (median step): {tmed / jm:.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
