"""Packed SFT (`data.pack`) against one padded example per sequence: useful tokens/s on Toy Earth SFT.

    python benchmarks/bench_pack.py [--scenario embedded|lrs-gro|lrs-gro-short|all] [--steps 6] [--rounds 2]

Both sides run the trainer's own jitted SFT step (`zoomjax.train.harness.build` + `sft.OBJECTIVE`) on the
same model, the same Toy Earth examples and the same device, in one process, interleaved in rounds
(padded, packed, padded, packed, ...) so that machine noise hits both alike. Reported per side: the
median step time, *useful* tokens per step (real tokens: attention mask > 0) and examples per step, and
their ratio. Before timing, the loss check: the initial parameters' summed loss and target count over
the same examples, padded and packed (`eval_step`), must agree (same examples, same per-token loss).

Scenarios (the model is the embedded default's tiny Qwen2.5-VL in all):
  embedded       the default's data: toy protocol, 224-px views and crops, 8 x 352 tokens padded (its
                 examples fill ~0.88 of 352) against 4 x 704 packed (`data.pack=2`);
  lrs-gro        the same Toy Earth questions in the released protocol (`released-v1`, the exact
                 released prompt) at `configs/lrs_gro_3b.yaml`'s per-sequence budgets: views and crops up
                 to 504 px, 2048 tokens and 2592 patch rows padded (4 rows), against 2 x 4096 packed;
  lrs-gro-short  the same budgets with the toy protocol's one-line prompt, whose examples take under half
                 of 2048 tokens: 4 x 2048 padded against 2 x 2048 packed (two examples a row).
The attention is dense (XLA on CPU has no segment-skipping kernel), so a packed row of length T pays
T^2 attention whoever its examples are: packing pays where it removes padding without lengthening rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

LRS_GRO = ["data.image_max_pixels=254016", "data.max_patches=2592"]  # configs/lrs_gro_3b.yaml's budgets
SCENARIOS = {
    # name: (overrides, padded (seq_len, batch), packed (seq_len, batch, overrides))
    "embedded": ([], (352, 8), (704, 4, ["data.pack=2"])),
    "lrs-gro": (["data.protocol_version=released-v1"] + LRS_GRO, (2048, 4),
                (4096, 2, ["data.pack=2", "data.max_patches=5184", "data.max_images=4"])),
    "lrs-gro-short": (LRS_GRO, (2048, 4), (2048, 2, ["data.pack=2", "data.max_patches=5184", "data.max_images=4"])),
}


def run_scenario(name: str, args) -> dict:
  import jax
  import numpy as np
  from zoomjax.model.inputs import segments
  from zoomjax.train import batching, harness, sft, sft_data
  from zoomjax.train.config import load_config

  extra, (seq_len, batch), (p_len, p_batch, p_extra) = SCENARIOS[name]
  base = [f"data.root={args.data_root}", f"data.num_images={args.num_images}", "mesh.data=1",
          "optim.warmup_steps=0", "optim.schedule=constant", "checkpoint.every=0"] + extra
  cfg_pad = load_config("embedded", base + [f"data.seq_len={seq_len}", f"data.batch_size={batch}"])
  cfg_pack = load_config("embedded", base + [f"data.seq_len={p_len}", f"data.batch_size={p_batch}",
                                             f"data.pack_bins={args.bins}"] + p_extra)
  data = sft_data.build_data(cfg_pad)
  model_cfg = harness.build_model_config(cfg_pad, vocab_size=data.vocab_size, special_ids=data.special_ids)
  pack = sft_data.packing_of(cfg_pack, data)

  # ---------------------------------------------------------------- the loss check: same examples, both ways
  class Subset:
    def __init__(self, ds, n):
      self.ds, self.n = ds, n

    def __len__(self):
      return self.n

    def __getitem__(self, i):
      return self.ds[i]

  sub = Subset(data.train, args.check_examples)
  setups = {"padded": harness.build(cfg_pad, model_cfg, sft.OBJECTIVE),
            "packed": harness.build(cfg_pack, model_cfg, sft.OBJECTIVE)}
  with harness.mesh_ctx(setups["padded"]):
    params = harness.init_train_state(setups["padded"]).params
  sums = {}
  for side, cfg in (("padded", cfg_pad), ("packed", cfg_pack)):
    st = sft_data.make_stream(data, sub, model_cfg, setups[side].mesh, cfg.data.batch_size, 1, cfg.data.seq_len,
                              0, False, 1, prefetch=0, eval_mode=True,
                              packing=pack if side == "packed" else None)
    tot = np.zeros(2)
    for host in st:
      out = jax.device_get(setups[side].eval_step(params, batching.to_global(host, setups[side].mesh)))
      tot += [float(out["loss_sum"]), float(out["count"])]
    st.close()
    sums[side] = tot
  if sums["padded"][1] != sums["packed"][1]:
    raise SystemExit(f"loss check: {sums['padded'][1]} targets padded vs {sums['packed'][1]} packed")
  loss_gap = abs(sums["padded"][0] - sums["packed"][0]) / sums["padded"][0]

  # ---------------------------------------------------------------- timing, interleaved rounds
  hosts = {}
  for side, cfg in (("padded", cfg_pad), ("packed", cfg_pack)):
    st = sft_data.train_stream(cfg, data, model_cfg, setups[side].mesh) if side == "padded" else \
        sft_data.make_stream(data, data.train, model_cfg, setups[side].mesh, cfg.data.batch_size, 1,
                             cfg.data.seq_len, 0, True, 0, packing=pack)
    hosts[side] = [next(st) for _ in range(args.steps * args.rounds + 1)]
    st.close()
  stats = {}
  states = {}
  for side in hosts:
    with harness.mesh_ctx(setups[side]):
      states[side] = harness.init_train_state(setups[side])
      states[side], m = setups[side].train_step(states[side], batching.to_global(hosts[side][0], setups[side].mesh))
      jax.block_until_ready(m)  # compile
  times = {s: [] for s in hosts}
  for r in range(args.rounds):
    for side in hosts:
      with harness.mesh_ctx(setups[side]):
        for h in hosts[side][1 + r * args.steps:1 + (r + 1) * args.steps]:
          dev = batching.to_global(h, setups[side].mesh)
          t0 = time.perf_counter()
          states[side], m = setups[side].train_step(states[side], dev)
          jax.block_until_ready(m)
          times[side].append(time.perf_counter() - t0)
  for side, hs in hosts.items():
    masks = [np.asarray(h.attention_mask).reshape(-1, h.attention_mask.shape[-1]) for h in hs[1:]]
    useful = statistics.mean(float((m > 0).sum()) for m in masks)
    examples = statistics.mean(sum(len(segments(row)) for row in m) for m in masks)
    t = statistics.median(times[side])
    shape = hs[0].input_ids.shape
    stats[side] = {"rows": int(np.prod(shape[:-2])) * shape[-2], "seq_len": shape[-1], "step_s": t,
                   "useful_tokens": useful, "fill": useful / (int(np.prod(shape[:-1])) * shape[-1]),
                   "examples": examples, "tokens_per_s": useful / t, "examples_per_s": examples / t}
  return {"scenario": name, "loss_rel_gap": loss_gap, "targets": sums["padded"][1], **{
      f"{side}_{k}": v for side, s in stats.items() for k, v in s.items()},
      "speedup_tokens": stats["packed"]["tokens_per_s"] / stats["padded"]["tokens_per_s"],
      "speedup_examples": stats["packed"]["examples_per_s"] / stats["padded"]["examples_per_s"]}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--scenario", default="all", choices=sorted(SCENARIOS) + ["all"])
  p.add_argument("--steps", type=int, default=6, help="timed steps per side per round")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--bins", type=int, default=8, help="data.pack_bins")
  p.add_argument("--check-examples", type=int, default=24, help="examples in the loss check")
  p.add_argument("--data-root", default="runs/bench_pack/data")
  p.add_argument("--num-images", type=int, default=96)
  args = p.parse_args(argv)
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
  rows = [run_scenario(n, args) for n in names]
  print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"steps {args.steps} x rounds {args.rounds}, bins {args.bins}")
  head = ("| scenario | side | rows x seq_len | fill | examples/step | step (s) | useful tok/s | examples/s |")
  print(head)
  print("|" + "---|" * 8)
  for r in rows:
    for side in ("padded", "packed"):
      g = lambda k: r[f"{side}_{k}"]  # noqa: E731
      print(f"| {r['scenario']} | {side} | {g('rows')} x {g('seq_len')} | {g('fill'):.3f} | {g('examples'):.2f} | "
            f"{g('step_s'):.3f} | {g('tokens_per_s'):.0f} | {g('examples_per_s'):.2f} |")
  for r in rows:
    print(f"{r['scenario']}: packed / padded useful tokens/s {r['speedup_tokens']:.2f}x, examples/s "
          f"{r['speedup_examples']:.2f}x; loss check over {int(r['targets'])} targets: relative gap "
          f"{r['loss_rel_gap']:.1e}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
