"""Vision tower forward latency (fp32, CPU): zoomjax (jit, warm) vs transformers, iterations interleaved.

Run from the repo root:  python3 benchmarks/bench_vision.py
"""
import dataclasses, os, statistics, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax, numpy as np, torch
jax.config.update("jax_default_matmul_precision", "highest")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "tests")]
from zoomjax.model import vision
from zoomjax.model.config import ModelConfig, VisionConfig
import test_vision as tv   # reference construction + HF state_dict -> params via vision_leaf_table

def model_cfg(v):
  base = ModelConfig.tiny()
  return dataclasses.replace(base, vision=v, text=dataclasses.replace(base.text, hidden_size=v.out_hidden_size))

def bench(label, v, grid, iters, variants):
  cfg = model_cfg(v)
  model = tv._reference(cfg)
  params = tv._params_from_state_dict(cfg, model.state_dict())
  grid = np.array(grid, np.int64)
  n = int(grid.prod(-1).sum())
  px = np.random.default_rng(0).normal(size=(n, v.patch_dim)).astype(np.float32)
  fns, outs = {}, {}
  for name, meta in variants(v, grid, n).items():
    f = jax.jit(lambda p, x, m: vision.VisionTower(cfg).apply({"params": p}, x, m))
    t0 = time.perf_counter(); outs[name] = np.asarray(f(params, px, meta)); c = time.perf_counter() - t0
    fns[name] = (lambda f=f, meta=meta: f(params, px, meta).block_until_ready())
    print(f"  {name}: first call (compile + run) {c:.1f} s", flush=True)
  for impl in ("eager", "sdpa"):
    def run(impl=impl):
      model.config._attn_implementation = impl
      with torch.no_grad():
        return model(torch.from_numpy(px), grid_thw=torch.from_numpy(grid)).pooler_output.numpy()
    ref = run()
    fns[f"transformers {impl}"] = run
  times = {k: [] for k in fns}
  for _ in range(iters):
    for k, f in fns.items():
      t0 = time.perf_counter(); f(); times[k].append(time.perf_counter() - t0)
  print(f"\n### {label}: {n} patches, depth {v.depth}, hidden {v.hidden_size}, {v.num_heads} heads\n")
  print("| implementation | median ms | min ms |\n|---|---:|---:|")
  for k, ts in times.items():
    print(f"| {k} | {statistics.median(ts)*1e3:.0f} | {min(ts)*1e3:.0f} |")
  for k, o in outs.items():
    print(f"\nmax |out - transformers| ({k}): {np.abs(o - ref).max():.1e} (max |out| {np.abs(ref).max():.1f})")
  return times

torch.set_num_threads(os.cpu_count())
print(f"jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
meta_default = lambda v, g, n: {"zoomjax": vision.vision_metadata(v, g)}
def meta_dense_too(v, g, n):
  m = vision.vision_metadata(v, g)
  return {"zoomjax (banded full attention)": m,
          "zoomjax (dense full attention)": {**m, "full_span": np.zeros(n, np.int32)}}
v3b = VisionConfig(depth=4, fullatt_block_indexes=(3,), out_hidden_size=2048)    # 3B widths, 4 blocks
bench("3B-width ViT, one 448x448 image", v3b, [[1, 32, 32]], 5, meta_default)
vsmall = VisionConfig(depth=4, hidden_size=256, intermediate_size=684, num_heads=4, fullatt_block_indexes=(3,),
                      out_hidden_size=512)
bench("small ViT, 8 images of 448x448", vsmall, [[1, 32, 32]] * 8, 5, meta_dense_too)
