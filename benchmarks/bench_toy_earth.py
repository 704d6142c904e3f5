"""The embedded default over seeds: SFT then GRPO on Toy Earth, the issue-11 targets, wall time per stage.

    python benchmarks/bench_toy_earth.py [--seeds 0 1 2] [--out runs/bench_toy_earth] [--ablation]
                                         [--reuse] [key=value ...]

For each seed it runs the default exactly as a user does (`python -m zoomjax.train run_dir=OUT/seed{S}
seed={S} data.root=OUT/data [key=value ...]`: the embedded config's SFT stage, its `then:` GRPO stage and
the outcome step), in a subprocess, and reads back what the run wrote:
  * held-out answer accuracy (overall, global, region, object), APO IoU and crop rate after SFT and after
    GRPO (`summary.json` `stages`), the GRPO gain;
  * zoom off (`answers_zoom_off/report.json`): the drop of region + object accuracy, pooled over both
    levels' questions, against the last stage with zoom on;
  * the image-blind baseline (`toy_earth.majority_baseline` over the training rows, the same questions);
  * wall time per stage, from the files each stage writes when it starts or ends (`config.yaml`,
    `config_grpo.yaml`, `summary.json`, `results.md`): SFT (data, tokenizer, training, evaluation), GRPO
    (training, evaluations, export) and outcome (zoom off, baseline, figures).
With `--ablation`, the paper's reward ablation on the same SFT weights: each seed's final SFT checkpoint is
exported again (a run resumed at its last step trains nothing and exports `hf/`) and a GRPO stage with
the run's own `config_grpo.yaml` but `grpo.terms=[answer,format]` (no IoU, no Region-Guided term) starts
from it; its accuracy and APO IoU sit beside the full reward's.
The table (per seed, then mean ± sample standard deviation) goes to stdout and `OUT/results.md`, the
numbers to `OUT/results.json`. `--reuse` reads finished runs instead of running them again (the seeds
are deterministic on one machine: same seed, same numbers). Overrides (e.g. `data.image_max_pixels=200704
data.seq_len=736 then.data.seq_len=960`) go to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
LEVELS = ("global", "region", "object")
ABLATION_TERMS = "[answer,format]"


def train(args: list[str], log: str) -> float:
  """Runs `python -m zoomjax.train ARGS` with its output in `log`; returns its wall time (s)."""
  env = dict(os.environ, HF_HUB_OFFLINE="1")
  t0 = time.perf_counter()
  with open(log, "w") as fh:
    rc = subprocess.run([sys.executable, "-m", "zoomjax.train", *args], cwd=REPO, env=env, stdout=fh,
                        stderr=subprocess.STDOUT).returncode
  if rc:
    raise SystemExit(f"zoomjax.train exited {rc}; see {log}")
  return time.perf_counter() - t0


def _mtime(path: str) -> float | None:
  return os.path.getmtime(path) if os.path.exists(path) else None


def stage_times(run_dir: str, start: float | None, end: float | None) -> dict:
  """Seconds per stage from the files the stages write (None where a boundary is missing)."""
  t_sft = start if start is not None else _mtime(os.path.join(run_dir, "config.yaml"))
  t_grpo = _mtime(os.path.join(run_dir, "config_grpo.yaml"))
  t_summary = _mtime(os.path.join(run_dir, "summary.json"))
  t_end = end if end is not None else _mtime(os.path.join(run_dir, "results.md"))

  def span(a, b):
    return None if a is None or b is None else round(b - a, 1)
  return {"sft": span(t_sft, t_grpo), "grpo": span(t_grpo, t_summary), "outcome": span(t_summary, t_end),
          "total": span(t_sft, t_end)}


def _report(answers: dict) -> dict:
  """A stage's answer summary plus its report's per-level counts."""
  with open(answers["path"]) as fh:
    rep = json.load(fh)
  return {"accuracy": answers["accuracy"], "apo_iou": answers.get("apo_iou"),
          "crop_rate": answers.get("crop_rate"), "n": answers.get("n"), "by_type": rep["by_type"]}


def pooled(report: dict, levels=("region", "object")) -> float:
  """Accuracy over the questions of `levels` together (from a report's per-level counts)."""
  by = report["by_type"]
  n = sum(by[k]["n"] for k in levels if k in by)
  return sum(by[k]["n_correct"] for k in levels if k in by) / max(n, 1)


def _rows(path: str) -> list[dict]:
  with open(path) as fh:
    return [json.loads(line) for line in fh if line.strip()]


def collect(run_dir: str, data_root: str) -> dict:
  from zoomjax.data import toy_earth
  with open(os.path.join(run_dir, "summary.json")) as fh:
    summary = json.load(fh)
  stages = summary.get("stages") or {}
  if "sft" not in stages or "grpo" not in stages:
    raise SystemExit(f"{run_dir}: summary.json lacks stages.sft / stages.grpo (did the run finish?)")
  out = {"sft": _report(stages["sft"]["answers"]), "grpo": _report(stages["grpo"]["answers"])}
  with open(os.path.join(run_dir, "answers_zoom_off", "report.json")) as fh:
    off = json.load(fh)
  out["zoom_off"] = {"accuracy": off["overall"]["accuracy"], "by_type": off["by_type"]}
  out["zoom_drop_region_object"] = pooled(out["grpo"]) - pooled(out["zoom_off"])
  ann = os.path.join(os.path.dirname(stages["grpo"]["answers"]["path"]), "annotations.jsonl")
  out["blind"] = toy_earth.majority_baseline(_rows(os.path.join(data_root, "sft.jsonl")), _rows(ann))
  return out


def ablation(out_dir: str, seed: int, run_dir: str, reuse: bool) -> dict:
  """GRPO without the IoU and Region-Guided terms from the seed's SFT weights (see the docstring)."""
  sft_dir = os.path.join(out_dir, f"seed{seed}_sft")
  abl_dir = os.path.join(out_dir, f"seed{seed}_no_loc")
  summary = os.path.join(abl_dir, "summary.json")
  wall = None
  if not (reuse and os.path.isfile(summary)):
    if not os.path.isfile(os.path.join(sft_dir, "hf", "config.json")):
      shutil.rmtree(sft_dir, ignore_errors=True)
      shutil.copytree(os.path.join(run_dir, "checkpoints"), os.path.join(sft_dir, "checkpoints"))
      # the run's own SFT config, resumed at its last step: trains nothing, exports hf/
      train([os.path.join(run_dir, "config.yaml"), f"run_dir={sft_dir}", "then=null", "eval.answers=0",
             "eval.outcome=false", "log.progress=false"], os.path.join(out_dir, f"seed{seed}_sft.log"))
    shutil.rmtree(abl_dir, ignore_errors=True)
    wall = train([os.path.join(run_dir, "config_grpo.yaml"), f"run_dir={abl_dir}", f"grpo.init_from={sft_dir}",
                  f"grpo.terms={ABLATION_TERMS}", "eval.outcome=false", "log.progress=false"],
                 os.path.join(out_dir, f"seed{seed}_no_loc.log"))
  with open(summary) as fh:
    s = json.load(fh)
  res = _report(s["stages"]["grpo"]["answers"] if "stages" in s else s["answers"])
  res["wall_s"] = wall
  return res


def _fmt(v, digits=3):
  return "" if v is None else f"{v:.{digits}f}"


def _mean_sd(xs, digits=3):
  xs = [x for x in xs if x is not None]
  if not xs:
    return ""
  m = f"{statistics.mean(xs):.{digits}f}"
  return f"{m} ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else m


COLUMNS = [
    ("SFT acc", lambda r: r["sft"]["accuracy"]),
    ("GRPO acc", lambda r: r["grpo"]["accuracy"]),
    ("gain", lambda r: r["grpo"]["accuracy"] - r["sft"]["accuracy"]),
    ("global", lambda r: r["grpo"]["by_type"]["global"]["accuracy"]),
    ("region", lambda r: r["grpo"]["by_type"]["region"]["accuracy"]),
    ("object", lambda r: r["grpo"]["by_type"]["object"]["accuracy"]),
    ("blind", lambda r: r["blind"]["overall"]["accuracy"]),
    ("SFT APO", lambda r: r["sft"]["apo_iou"]),
    ("GRPO APO", lambda r: r["grpo"]["apo_iou"]),
    ("zoom-off drop (reg+obj)", lambda r: r["zoom_drop_region_object"]),
    ("no-loc GRPO acc", lambda r: (r.get("ablation") or {}).get("accuracy")),
    ("no-loc GRPO APO", lambda r: (r.get("ablation") or {}).get("apo_iou")),
    ("SFT s", lambda r: r["times"]["sft"]),
    ("GRPO s", lambda r: r["times"]["grpo"]),
    ("outcome s", lambda r: r["times"]["outcome"]),
    ("total s", lambda r: r["times"]["total"]),
]


def table(results: dict[int, dict]) -> str:
  cols = [(n, f) for n, f in COLUMNS if any(f(r) is not None for r in results.values())]
  lines = ["| seed | " + " | ".join(n for n, _ in cols) + " |", "|---:|" + "---:|" * len(cols)]
  for seed, r in sorted(results.items()):
    lines.append(f"| {seed} | " + " | ".join(_fmt(f(r), 1 if n.endswith(" s") else 3) for n, f in cols) + " |")
  lines.append("| mean ± sd | " + " | ".join(_mean_sd([f(r) for r in results.values()], 1 if n.endswith(" s") else 3)
                                             for n, f in cols) + " |")
  return "\n".join(lines)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--out", default="runs/bench_toy_earth")
  p.add_argument("--ablation", action="store_true", help="also GRPO without the IoU and Region-Guided terms")
  p.add_argument("--reuse", action="store_true", help="read finished runs in OUT instead of rerunning them")
  p.add_argument("overrides", nargs="*", metavar="key=value")
  args = p.parse_args()
  out_dir = os.path.abspath(args.out)
  os.makedirs(out_dir, exist_ok=True)
  data_root = os.path.join(out_dir, "data")
  overrides = [o for o in args.overrides if not o.startswith("data.root=")]
  data_root = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("data.root=")), data_root)
  results = {}
  for seed in args.seeds:
    run_dir = os.path.join(out_dir, f"seed{seed}")
    start = end = None
    if not (args.reuse and os.path.isfile(os.path.join(run_dir, "results.md"))):
      for stale in (run_dir, f"{run_dir}_sft", f"{run_dir}_no_loc"):   # an ablation belongs to its run
        shutil.rmtree(stale, ignore_errors=True)
      start = time.time()
      train([f"run_dir={run_dir}", f"seed={seed}", f"data.root={data_root}", "log.progress=false", *overrides],
            os.path.join(out_dir, f"seed{seed}.log"))
      end = time.time()
    r = collect(run_dir, data_root)
    r["times"] = stage_times(run_dir, start, end)
    if args.ablation:
      r["ablation"] = ablation(out_dir, seed, run_dir, args.reuse)
    results[seed] = r
    print(f"seed {seed}: SFT {r['sft']['accuracy']:.3f} -> GRPO {r['grpo']['accuracy']:.3f}", flush=True)
  text = (f"# Toy Earth default over seeds {args.seeds}; overrides: {' '.join(overrides) or '(none)'}\n"
          f"# {platform.machine()}, {os.cpu_count()} CPUs; accuracy on held-out questions, APO IoU on those "
          f"with a GT box; zoom-off drop: region + object accuracy, zoom on minus zoom off\n\n" + table(results))
  print(text)
  with open(os.path.join(out_dir, "results.md"), "w") as fh:
    fh.write(text + "\n")
  with open(os.path.join(out_dir, "results.json"), "w") as fh:
    json.dump({str(k): v for k, v in results.items()}, fh, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
