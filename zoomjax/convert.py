"""`python -m zoomjax.convert`: HF safetensors directory <-> orbax params checkpoint.

    python -m zoomjax.convert to-orbax --hf-dir HF_DIR --out CKPT [--dtype bfloat16] [--unrolled]
    python -m zoomjax.convert to-hf --orbax-dir CKPT --out HF_DIR [--config HF_DIR_OR_CONFIG_JSON]

The orbax side is the params-only layout the trainer exports (`zoomjax.params_io.export_params`):
an `orbax.checkpoint.StandardCheckpointer` tree `{"visual": …, "language": …}` with an `info.json` beside
it holding `{"model_config": <HF config dict>, "scan_layers": bool, …}`. `to-hf` reads the model config
from that `info.json` (or `--config`), detects the scanned/unrolled layout from the stored tree, and
writes a directory `transformers` loads (`zoomjax.hf.save`).

Exit status (SPEC §9): 0 done; 2 a missing / unreadable input, a broken config, an unwritable --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from zoomjax import cli

INFO = "info.json"  # = zoomjax.params_io.INFO (not imported here: the CLI fails fast without loading jax)


def hf_to_orbax(hf_dir: str, out: str, dtype: str = "float32", scan_layers: bool = True) -> str:
  """Loads an HF directory and writes an orbax params checkpoint at `out` (replaced if present)."""
  import jax.numpy as jnp
  from zoomjax import hf, params_io
  cfg, params = hf.load(hf_dir, dtype=jnp.dtype(dtype), scan_layers=scan_layers)
  info = {"model_config": cfg.to_hf_dict(), "scan_layers": cfg.scan_layers, "param_dtype": cfg.param_dtype,
          "source": os.path.abspath(hf_dir)}
  return params_io.export_params(out, params, info)


def _read_json(path: str, flag: str) -> Any:
  with cli.reading(path, flag, "JSON file"):
    with open(path, encoding="utf-8") as f:
      return json.load(f)


def _read_config(orbax_dir: str, config: str | None) -> dict[str, Any]:
  if config:
    path = os.path.join(config, "config.json") if os.path.isdir(config) else config
    d = _read_json(path, "--config")
    if not isinstance(d, dict):
      raise cli.UserError(f"--config {path} is not a config.json (a JSON object); pass an HF config")
    return d
  info = os.path.join(orbax_dir, INFO)
  if os.path.isfile(info):
    d = _read_json(info, "--orbax-dir")
    if isinstance(d, dict) and "model_config" in d:
      return d["model_config"]
  raise cli.UserError(f"no model config: {info} lacks 'model_config'; pass --config HF_DIR_OR_CONFIG_JSON")


def orbax_to_hf(orbax_dir: str, out: str, config: str | None = None,
                max_shard_bytes: int | None = None) -> str:
  """Reads an orbax params checkpoint and writes an HF directory at `out`."""
  import jax

  from zoomjax import hf, params_io
  from zoomjax.model.config import ModelConfig
  orbax_dir = os.path.abspath(orbax_dir)
  hf_cfg = _read_config(orbax_dir, config)
  try:
    params = params_io.load_params(orbax_dir)
  except (OSError, ValueError) as e:       # orbax / tensorstore: not a checkpoint, or a torn one
    raise cli.UserError(f"--orbax-dir {orbax_dir} is not a readable orbax params checkpoint "
                        f"({cli.describe(e)[1][:300]}); pass a directory written by to-orbax or the "
                        "trainer's export") from None
  scan = "layers" in params.get("language", {})
  dtype = jax.tree.leaves(params)[0].dtype.name
  cfg = ModelConfig.from_hf_dict(hf_cfg, scan_layers=scan, param_dtype=dtype, dtype=dtype)
  kw = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
  hf.save(out, cfg, params, **kw)
  return os.path.abspath(out)


@cli.main
def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m zoomjax.convert", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  sub = p.add_subparsers(dest="cmd", required=True)
  a = sub.add_parser("to-orbax", help="HF safetensors directory -> orbax params checkpoint")
  a.add_argument("--hf-dir", required=True, help="directory with config.json + *.safetensors")
  a.add_argument("--out", required=True, help="orbax checkpoint directory to write (replaced)")
  a.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="param dtype")
  a.add_argument("--unrolled", action="store_true", help="store per-layer leaves (layers_N) instead of stacked")
  b = sub.add_parser("to-hf", help="orbax params checkpoint -> HF safetensors directory")
  b.add_argument("--orbax-dir", required=True, help="checkpoint written by to-orbax or the trainer's export")
  b.add_argument("--out", required=True, help="HF directory to write")
  b.add_argument("--config", default=None, help="HF dir or config.json (default: the checkpoint's info.json)")
  b.add_argument("--max-shard-bytes", type=int, default=None, help="split safetensors above this size")
  for sp in (a, b):
    cli.add_debug(sp)
  args = p.parse_args(argv)

  if args.cmd == "to-orbax":
    cli.existing_dir(args.hf_dir, "--hf-dir", "an HF directory (config.json + *.safetensors)")
    cli.writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out (its parent)")
    with cli.about(f"--hf-dir {args.hf_dir}"):
      out = hf_to_orbax(args.hf_dir, args.out, args.dtype, scan_layers=not args.unrolled)
  else:
    cli.existing_dir(args.orbax_dir, "--orbax-dir", "an orbax params checkpoint (to-orbax's --out)")
    cli.writable_dir(args.out, "--out")
    with cli.about(f"--config {args.config}" if args.config else f"--orbax-dir {args.orbax_dir}"):
      out = orbax_to_hf(args.orbax_dir, args.out, args.config, args.max_shard_bytes)
  print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
