"""`python -m zoomjax.eval {score,run} ...` — see `--help` of each subcommand."""

from __future__ import annotations

import argparse
import json
import sys

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
  r.add_argument("--model", required=True, help="model directory (Hugging Face layout)")
  r.add_argument("--images", required=True, help="image directory")
  r.add_argument("--predictions", required=True, help="predictions JSONL to append to")
  r.add_argument("--batch-size", type=int, default=8)
  r.add_argument("--limit", type=int, default=None, help="answer at most this many new questions")
  r.add_argument("--protocol", default="released", choices=("released", "multiturn"))
  r.add_argument("--max-turns", type=int, default=1, help="multiturn: zooms allowed (default: %(default)s)")
  r.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per decoding step")
  r.add_argument("--max-total-tokens", type=int, default=8192, help="whole-sequence budget (cache size)")
  r.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="parameter dtype")
  r.add_argument("--seed", type=int, default=0)
  r.add_argument("--no-progress", action="store_true")
  _common(r)
  return parser


def _score(args) -> int:
  from zoomjax.eval.score import print_problems, score_files, write_report
  report = score_files(args.predictions, args.annotations, args.benchmark, args.judge, args.apo,
                       args.strict)
  json_path, md_path = write_report(report, args.out, args.name)
  print_problems(report)
  ov, rows = report["overall"], report["rows"]
  summary = {"accuracy": ov["accuracy"], "apo_iou": ov["apo_iou"], "n": ov["n"],
             "skipped": rows["skipped"], "missing": rows["missing"],
             "by_type": {k: v["accuracy"] for k, v in report["by_type"].items()}}
  print(json.dumps(summary))
  print(f"wrote {json_path} and {md_path}", file=sys.stderr)
  return 0


def _run(args) -> int:
  from zoomjax.eval import loaders, run as run_mod
  questions, problems = loaders.load(args.annotations, args.benchmark)
  for p in problems[:20]:
    print(f"skipped annotations {p}", file=sys.stderr)
  try:
    answer_fn = run_mod.model_answer_fn(
        args.model, args.images, protocol=args.protocol, max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens, max_total_tokens=args.max_total_tokens, dtype=args.dtype,
        seed=args.seed)
  except run_mod.NotAvailable as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = run_mod.run(questions, answer_fn, args.predictions, batch_size=args.batch_size,
                  limit=args.limit, progress=not args.no_progress)
  print(f"answered {n} new questions -> {args.predictions}", file=sys.stderr)
  return _score(args)


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return _score(args) if args.command == "score" else _run(args)


if __name__ == "__main__":
  sys.exit(main())
