"""`python -m zoomjax.eval {score,run} ...` — see `--help` of each subcommand.

Exit status (SPEC §9): 0 a complete result; 1 the report was written but is not complete (nothing
scored, failed questions, skipped rows: the reason is printed); 2 bad input (a missing / unreadable
file, an unwritable --out, a --model that is not a model directory).
"""

from __future__ import annotations

import argparse
import json
import sys

from zoomjax import cli
from zoomjax.eval.loaders import BENCHMARKS


def _common(p: argparse.ArgumentParser) -> None:
  p.add_argument("--annotations", required=True, help="annotation file (LRS-GRO JSONL, or --benchmark's format)")
  p.add_argument("--out", required=True, help="REPORT.json path; the markdown table goes beside it (.md)")
  p.add_argument("--benchmark", default="lrs_gro", choices=BENCHMARKS,
                 help="annotation format and scoring (default: %(default)s)")
  p.add_argument("--judge", default="extended", choices=("extended", "released"),
                 help="answer judge rule; 'released' reproduces ZoomEarth's scripts exactly "
                      "(multi-word answers then only match when identical) (default: %(default)s)")
  p.add_argument("--apo", default="plain", choices=("plain", "window"),
                 help="APO IoU: plain IoU, or the released scripts' >=512 crop-window IoU (default: %(default)s)")
  p.add_argument("--strict", action="store_true",
                 help="score questions without a prediction as wrong (default: leave them out, count them)")
  p.add_argument("--name", default=None, help="model name in the markdown table (default: predictions file stem)")
  cli.add_debug(p)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m zoomjax.eval",
      description="Evaluate ZoomEarth-style predictions the way the paper does (accuracy per level, "
                  "APO IoU, crop statistics).")
  sub = parser.add_subparsers(dest="command", required=True)
  s = sub.add_parser("score", help="score an existing predictions JSONL against annotations",
                     description="Score P.jsonl (rows: question_id, answer, optional bbox in the 1024 "
                                 "frame or null) against annotations; writes REPORT.json and REPORT.md.")
  s.add_argument("--predictions", required=True, help="predictions JSONL")
  _common(s)
  r = sub.add_parser("run", help="run a model over a benchmark (resumable), then score it",
                     description="Answer every question with a model (batched, progress bar; rerunning "
                                 "skips question ids already in --predictions), then score.")
  r.add_argument("--model", required=True, help="model directory (Hugging Face layout, or a training RUN_DIR)")
  r.add_argument("--images", required=True, help="image directory")
  r.add_argument("--predictions", required=True, help="predictions JSONL to append to")
  r.add_argument("--batch-size", type=int, default=8)
  r.add_argument("--limit", type=int, default=None, help="answer at most this many new questions")
  r.add_argument("--protocol", default=None, choices=("released", "multiturn"),
                 help="default: the export's zoomjax_infer.json, else released")
  r.add_argument("--protocol-version", dest="version", default=None,
                 help="the protocol's template version, e.g. released-toy-v1 (default: the export's, else the "
                      "protocol's first)")
  r.add_argument("--zoom", default="on", choices=("on", "off"),
                 help="off: the ablation; every crop request is answered with the global view again")
  r.add_argument("--max-turns", type=int, default=None, help="multiturn: zooms allowed (default: the export's, else 1)")
  r.add_argument("--max-new-tokens", type=int, default=None,
                 help="tokens per decoding step (default: the export's, else 1024)")
  r.add_argument("--max-total-tokens", type=int, default=None,
                 help="whole-sequence budget, the cache size (default: the export's, else 8192)")
  r.add_argument("--max-pixels", type=int, default=None,
                 help="processor pixel budget of each model image (default: the export's, else 12845056)")
  r.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="parameter dtype")
  r.add_argument("--seed", type=int, default=0)
  r.add_argument("--no-progress", action="store_true")
  _common(r)
  return parser


def _load_annotations(args):
  from zoomjax.eval import loaders
  with cli.reading(args.annotations, "--annotations", "annotation file"):
    return loaders.load(args.annotations, args.benchmark)


def _score(args) -> int:
  from zoomjax.eval.score import incomplete, print_problems, score_files, write_report
  cli.writable_file(args.out, "--out")
  annotations = _load_annotations(args)
  with cli.reading(args.predictions, "--predictions", "predictions file"):
    report = score_files(args.predictions, args.annotations, args.benchmark, args.judge, args.apo,
                         args.strict, annotations=annotations)
  with cli.about("--out"):
    json_path, md_path = write_report(report, args.out, args.name)
  print_problems(report)
  ov, rows, cov = report["overall"], report["rows"], report["coverage"]
  summary = {"accuracy": ov["accuracy"], "apo_iou": ov["apo_iou"], "n": ov["n"],
             "annotated": cov["annotated"], "skipped": rows["skipped"], "missing": rows["missing"],
             "errors": rows["errors"], "by_type": {k: v["accuracy"] for k, v in report["by_type"].items()}}
  print(json.dumps(summary))
  print(f"scored {cov['scored']} of {cov['annotated']} annotated questions; wrote {json_path} and {md_path}",
        file=sys.stderr)
  why = incomplete(report)
  if why is not None:
    raise cli.PartialFailure(why)
  return 0


RUN_FALLBACKS = {"protocol": "released", "version": None, "max_turns": 1, "max_new_tokens": 1024,
                 "max_total_tokens": 8192, "max_pixels": 12845056}


def _run(args) -> int:
  from zoomjax import hf
  from zoomjax.eval import run as run_mod
  cli.existing_dir(args.model, "--model", "a model directory (config.json, *.safetensors, tokenizer)")
  cli.existing_dir(args.images, "--images", "the directory the annotations' image names are relative to")
  cli.writable_file(args.predictions, "--predictions")
  cli.writable_file(args.out, "--out")
  questions, problems = _load_annotations(args)
  for p in problems[:20]:
    print(f"skipped annotations {p}", file=sys.stderr)
  with cli.about(f"--model {args.model}"):
    hf.fill_inference_defaults(args, RUN_FALLBACKS)
    answer_fn = run_mod.model_answer_fn(
        args.model, args.images, protocol=args.protocol, version=args.version, zoom=args.zoom == "on",
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens, max_total_tokens=args.max_total_tokens, dtype=args.dtype,
        seed=args.seed, max_pixels=args.max_pixels)
  res = run_mod.run(questions, answer_fn, args.predictions, batch_size=args.batch_size,
                    limit=args.limit, progress=not args.no_progress)
  print(f"answered {res.written - res.failed} new questions, {res.failed} failed -> {args.predictions}",
        file=sys.stderr)
  for e in res.errors:
    print(f"failed {e}", file=sys.stderr)
  try:
    _score(args)
  except cli.PartialFailure as e:
    if not res.failed:
      raise
    raise cli.PartialFailure(f"{res.failed} of {res.written} questions failed this run (recorded as failed "
                             f"in {args.predictions}; the next run retries them); {e}") from None
  return 0


@cli.main
def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return _score(args) if args.command == "score" else _run(args)


if __name__ == "__main__":
  sys.exit(main())
