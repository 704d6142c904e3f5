"""Ahead-of-time compile of the Qwen2.5-VL-3B SFT or GRPO step for a TPU topology, on a CPU-only machine.

    python benchmarks/aot_compile_3b.py [--topology v5e:4x4] [--config lrs_gro_3b_v5e16] [key=value ...]
    python benchmarks/aot_compile_3b.py --config grpo_3b_released_v5e16     # GRPO: update + reference forward

For a GRPO config (`algo: grpo`) the compiled step is the policy update (the GRPO objective over pieces
that also carry `logp_old`, `logp_ref`, `advantage`), and the reference policy's log-prob forward over the
same batch is compiled too; both memory figures are reported (they run one after the other).

libtpu's topology API (`jax.experimental.topologies.get_topology_desc`) describes the TPU slice without
any TPU attached; the real train step of `zoomjax.train` (same config, mesh, shardings, donation) is
lowered on abstract arguments carrying shardings over those devices and compiled by the TPU compiler.
`compiled.memory_analysis()` then gives what one chip needs: arguments (the sharded train state and
batch), outputs, temporaries; donated state is aliased to the output and counted once.

libtpu is not a runtime dependency. The script looks for an importable `libtpu`, then for the cached
`~/.cache/zoomjax/libtpu-<version>`, and otherwise installs the version jax pins for its `tpu` extra
(`pip install --target`) into that cache, so the CPU environment itself is untouched. The compile runs
in a child process whose JAX runtime platform stays CPU.

Prints a table and, with `--json PATH`, writes the numbers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HBM_GIB = {"v5e": 16, "v5litepod": 16, "v4": 32, "v5p": 95, "v6e": 32}


def libtpu_requirement() -> str:
  """The libtpu version spec jax pins for its `tpu` extra (e.g. `libtpu==0.0.42.*`)."""
  for req in importlib.metadata.requires("jax") or []:
    m = re.match(r"\s*libtpu\s*(==\s*[\w.*]+)\s*;.*extra\s*==\s*['\"]tpu['\"]", req)
    if m:
      return "libtpu" + m.group(1).replace(" ", "")
  raise RuntimeError("jax's metadata names no libtpu for the 'tpu' extra")


def ensure_libtpu(cache_dir: str | None = None) -> str | None:
  """A directory to put on sys.path for `import libtpu` (None if it is importable already)."""
  import importlib.util
  if importlib.util.find_spec("libtpu") is not None:
    return None
  req = libtpu_requirement()
  cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "zoomjax",
                                        "libtpu-" + req.split("==")[1].replace("*", "x"))
  if not os.path.isfile(os.path.join(cache_dir, "libtpu", "libtpu.so")):
    print(f"installing {req} into {cache_dir} (once) ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", cache_dir, req], check=True)
  return cache_dir


def _piece_shapes(model_cfg, seq_len: int, max_patches: int, max_images: int, image_side: int,
                  extra: bool = False):
  """The device piece of one realistic sequence (its images of `image_side` px, text filling T)."""
  import numpy as np
  from zoomjax.train import batching
  from zoomjax.train.pieces import GrpoPiece, Piece
  g = image_side // model_cfg.vision.patch_size
  grid = np.zeros((max_images, 3), np.int32)
  grid[:] = (1, g, g)
  n_img_tok = int(grid.prod(-1).sum()) // model_cfg.vision.spatial_merge_size ** 2
  ids = np.full((1, seq_len), 1, np.int32)
  ids[0, 16:16 + n_img_tok] = model_cfg.image_token_id
  piece = {"input_ids": ids, "attention_mask": np.ones((1, seq_len), np.int32),
           "loss_mask": np.ones((1, seq_len), np.int32),
           "pixel_values": np.zeros((int(grid.prod(-1).sum()), model_cfg.vision.patch_dim), np.float32),
           "image_grid_thw": grid}
  if extra:  # GRPO pieces: the sampler's and the reference's log-probs, the advantage
    piece.update(logp_old=np.zeros((1, seq_len), np.float32), logp_ref=np.zeros((1, seq_len), np.float32),
                 advantage=np.zeros((1,), np.float32))
  return batching.make_piece(model_cfg, piece, max_patches, GrpoPiece if extra else Piece)


def _memory(compiled) -> dict:
  ma = compiled.memory_analysis()
  out = {k: int(getattr(ma, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                                          "temp_size_in_bytes", "generated_code_size_in_bytes")}
  out["per_chip_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                           - out["alias_size_in_bytes"] + out["temp_size_in_bytes"]
                           + out["generated_code_size_in_bytes"])
  return out


def compile_step(topology: str, config: str, overrides: list[str], image_side: int) -> dict:
  """Lowers and compiles the configured SFT step for `topology`; returns the memory numbers (bytes)."""
  import jax
  from jax.experimental import topologies
  from jax.sharding import NamedSharding

  from zoomjax.model.logprobs import token_logprobs
  from zoomjax.train import batching, grpo, harness as trainer, mesh as mesh_lib, sft
  from zoomjax.train.config import load_config

  cfg = load_config(config, ["model.hf_dir=null", *overrides])
  topo = topologies.get_topology_desc(topology, "tpu")
  devices = list(topo.devices)
  mesh = mesh_lib.make_mesh(cfg.mesh, devices)
  model_cfg = trainer.build_model_config(cfg)
  t0 = time.perf_counter()
  is_grpo = cfg.algo == "grpo"
  objective = grpo.make_objective(cfg.grpo) if is_grpo else sft.OBJECTIVE
  setup = trainer.build(cfg, model_cfg, objective, mesh=mesh)
  s = batching.num_shards(mesh)
  b = cfg.data.batch_size // (cfg.optim.grad_accum * s)
  piece = _piece_shapes(model_cfg, cfg.data.seq_len, cfg.data.max_patches, cfg.data.max_images, image_side,
                        extra=is_grpo)
  sharding = batching.batch_sharding(mesh)
  batch = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct((cfg.optim.grad_accum, s, b) + x.shape, x.dtype, sharding=sharding), piece)
  with trainer.mesh_ctx(setup):
    lowered = setup.train_step.lower(setup.abstract_state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    ref = None
    if is_grpo:  # the frozen reference's log-probs over the same batch (a forward, no gradient)
      ref_fn = setup.piece_fn(lambda logits, pc: token_logprobs(logits, pc.input_ids, cfg.grpo.temperature))
      ref = _memory(ref_fn.lower(setup.abstract_state.params, batch).compile())
  t2 = time.perf_counter()
  n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(setup.abstract_state.params))
  out = _memory(compiled)
  if ref is not None:
    out["reference_forward"] = ref
  out.update(algo=cfg.algo, topology=topology, device_kind=devices[0].device_kind, chips=len(devices), config=config,
             overrides=overrides, mesh=dict(mesh.shape), params=n_params, global_batch=cfg.data.batch_size,
             grad_accum=cfg.optim.grad_accum, seq_len=cfg.data.seq_len, patches_per_seq=cfg.data.max_patches,
             image_side=image_side, dtype=cfg.model.dtype, param_dtype=cfg.model.param_dtype,
             remat=cfg.model.remat_policy, lower_s=round(t1 - t0, 1), compile_s=round(t2 - t1, 1),
             state_sharding_example=str(jax.tree_util.tree_leaves(setup.shardings.params)[0].spec),
             jax=jax.__version__)
  assert isinstance(jax.tree_util.tree_leaves(setup.shardings.params)[0], NamedSharding)
  return out


def _child(args) -> int:
  sys.path.insert(0, ROOT)
  res = compile_step(args.topology, args.config, args.overrides, args.image_side)
  print("AOT_RESULT " + json.dumps(res), flush=True)
  return 0


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--topology", default="v5e:4x4", help="libtpu topology name (v5e:4x4 = v5e-16)")
  p.add_argument("--config", default="lrs_gro_3b_v5e16")
  p.add_argument("--image-side", type=int, default=504, help="side of each image (px) in the realistic batch")
  p.add_argument("--json", default=None, help="also write the numbers here")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("overrides", nargs="*", help="config overrides key=value")
  args = p.parse_args(argv)
  if args.child:
    return _child(args)
  path = ensure_libtpu()
  env = dict(os.environ, JAX_PLATFORMS="cpu", TPU_SKIP_MDS_QUERY="1", TPU_WORKER_ID="0",
             TPU_WORKER_HOSTNAMES="localhost", TPU_ACCELERATOR_TYPE="v5litepod-16",
             PYTHONPATH=os.pathsep.join(x for x in (path, ROOT, os.environ.get("PYTHONPATH")) if x))
  env.pop("XLA_FLAGS", None)
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--topology", args.topology, "--config", args.config,
         "--image-side", str(args.image_side), *args.overrides]
  r = subprocess.run(cmd, env=env, capture_output=True, text=True)
  line = next((x for x in r.stdout.splitlines() if x.startswith("AOT_RESULT ")), None)
  if r.returncode != 0 or line is None:
    sys.stderr.write(r.stdout[-4000:] + r.stderr[-8000:])
    return 1
  res = json.loads(line[len("AOT_RESULT "):])
  gib = 1024 ** 3
  hbm = HBM_GIB.get(args.topology.split(":")[0])
  res["hbm_gib"] = hbm
  rows = [("topology", f"{res['topology']} ({res['chips']} x {res['device_kind']})"),
          ("config", f"{res['config']} {' '.join(res['overrides'])}"),
          ("mesh", res["mesh"]), ("params", f"{res['params'] / 1e9:.2f} B"),
          ("batch", f"{res['global_batch']} seq x {res['seq_len']} tokens, {res['patches_per_seq']} patches/seq, "
                    f"grad_accum {res['grad_accum']}"),
          ("precision", f"compute {res['dtype']}, master weights {res['param_dtype']}, remat {res['remat']}"),
          ("arguments / chip", f"{res['argument_size_in_bytes'] / gib:.2f} GiB"),
          ("outputs / chip", f"{res['output_size_in_bytes'] / gib:.2f} GiB (aliased {res['alias_size_in_bytes'] / gib:.2f})"),
          ("temporaries / chip", f"{res['temp_size_in_bytes'] / gib:.2f} GiB"),
          ("total / chip", f"{res['per_chip_bytes'] / gib:.2f} GiB" + (f" of {hbm} GiB HBM" if hbm else "")),
          ("lower / compile", f"{res['lower_s']} s / {res['compile_s']} s")]
  if res.get("reference_forward"):
    rows.insert(-1, ("reference fwd / chip", f"{res['reference_forward']['per_chip_bytes'] / gib:.2f} GiB "
                                             f"(GRPO's logp_ref pass, run before the update)"))
  w = max(len(k) for k, _ in rows)
  print("\n".join(f"{k:<{w}}  {v}" for k, v in rows))
  if args.json:
    with open(args.json, "w") as fh:
      json.dump(res, fh, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
