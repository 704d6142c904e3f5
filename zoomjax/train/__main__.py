"""`python -m zoomjax.train [CONFIG.yaml] [key=value ...]` — supervised fine-tuning.

With no config file, `configs/embedded.yaml` is the base (overrides still apply): with no arguments at
all, the embedded default runs: Toy Earth is generated and the
in-process tokenizer trained on first use, a tiny Qwen2.5-VL trains on a CPU, is evaluated on held-out
data, and the run directory is printed. CONFIG is a path or a name in `configs/` (`toy_earth_sft`,
`lrs_gro_3b_v5e16`, ...); overrides use dotted keys (`optim.lr=1e-4 mesh.fsdp=4 steps=50`).

Exit status (SPEC §9): 0 done; 2 a bad config key or value, an unwritable run_dir, unusable data or a
run_dir holding another model's checkpoint (one `error:` line; `--debug` shows the traceback); 130 / 143
stopped by SIGINT / SIGTERM after saving a checkpoint (rerun to resume); 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys

from zoomjax import cli
from zoomjax.train.config import load_config, to_dict

DEFAULT_CONFIG = "embedded"


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m zoomjax.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value",
                 help="an optional config file (first), then dotted overrides")
  p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
  cli.add_debug(p)
  return p.parse_args(argv)


def resolve(argv: list[str]):
  ns = parse_args(argv)
  path, overrides = DEFAULT_CONFIG, list(ns.args)
  if overrides and "=" not in overrides[0]:
    path = overrides.pop(0)
  return load_config(path, overrides), ns


def _set_cpu_devices(n: int) -> None:
  """Simulated CPU devices (multi-process tests / laptops): must precede JAX's backend start-up."""
  flags = os.environ.get("XLA_FLAGS", "")
  if n and "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def preflight(cfg) -> None:
  """Refuses, before anything is built, what would fail late: an unwritable run_dir, a corrupt Toy Earth
  meta.json in data.root (`cli.UserError`, exit 2)."""
  cli.writable_dir(cfg.run_dir, "run_dir")
  if cfg.data.kind == "toy_earth":
    from zoomjax.data import toy_earth
    toy_earth.read_meta(os.path.abspath(cfg.path(cfg.data.root)))


def _exit(code: int) -> None:
  """Leaves at once: background threads (data prefetch, async checkpoint writers) must not keep a failed
  run alive."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


@cli.main(exit_fn=_exit)  # a failure exits at once, even if a data / checkpoint thread is still alive
def main(argv: list[str] | None = None) -> int:
  cfg, ns = resolve(argv)
  if ns.print_config:
    import yaml
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0
  preflight(cfg)
  _set_cpu_devices(cfg.distributed.local_device_count)
  from zoomjax.train.trainer import PREEMPTED_EXIT_CODE, train
  summary = train(cfg)
  import jax
  if jax.process_index() == 0:
    report(summary)
  if not summary.get("preempted"):
    return 0
  if summary.get("exit_code"):
    return int(summary["exit_code"])
  return cli.EXIT_INTERRUPTED if summary.get("signal") == "SIGINT" else PREEMPTED_EXIT_CODE


def report(summary: dict) -> None:
  last = summary.get("last") or {}
  lines = ["", f"run directory:   {summary['run_dir']}"]
  if summary.get("preempted"):
    lines.append(f"stopped by {summary.get('signal', 'SIGTERM')} at step {summary['final_step']}; checkpoint "
                 "saved, rerun to resume")
  if "first_loss" in summary and last:
    lines.append(f"train loss:      {summary['first_loss']:.4f} (step {summary['first_loss_step']}) -> "
                 f"{last.get('loss', float('nan')):.4f} "
                 f"(step {summary['final_step']})")
  elif last:
    lines.append(f"train loss:      {last.get('loss', float('nan')):.4f} at step {summary['final_step']}")
  ev = summary.get("eval")
  if ev:
    lines.append(f"held-out:        loss {ev['loss']:.4f}, token accuracy {ev['token_accuracy']:.3f} "
                 f"({int(ev['tokens'])} target tokens)")
  if summary.get("answers"):
    a = summary["answers"]
    lines.append(f"answers:         accuracy {a.get('accuracy', float('nan')):.3f} on {a.get('n')} questions "
                 f"({a.get('path', '')})")
  for key, label in (("checkpoints", "checkpoints:"), ("params", "params export:"), ("hf", "HF export:"),
                     ("metrics", "metrics (JSONL):"), ("tensorboard", "TensorBoard:")):
    if summary.get(key):
      lines.append(f"{label:<17}{summary[key]}")
  if summary.get("hf"):
    root = summary.get("data_root") or "DATA_ROOT"
    lines.append("use the export:  python3 -m zoomjax.infer --model " + summary["hf"]
                 + " --image IMAGE --question 'QUESTION' --out zoom.png")
    lines.append("                 python3 -m zoomjax.eval run --model " + summary["hf"]
                 + f" --annotations {root}/test.jsonl --images {root}/images --predictions preds.jsonl"
                 + " --out report.json")
  if last.get("tokens_per_s"):
    lines.append(f"throughput:      {last['tokens_per_s']:.0f} tokens/s, step {last['step_time_s'] * 1e3:.0f} ms"
                 + (f", MFU {last['mfu'] * 100:.1f}% of {summary['peak_flops'] / 1e9:.0f} GFLOP/s "
                    f"({summary['peak_source']})" if last.get("mfu") else ""))
  lines.append(f"summary:         {os.path.join(summary['run_dir'], 'summary.json')}")
  print("\n".join(lines), flush=True)


if __name__ == "__main__":
  sys.exit(main())
