"""`python -m zoomjax.infer`: ask one question about one (ultra-high-resolution) image with active perception.

    python -m zoomjax.infer --model DIR --image PATH --question "What color is the roof?" \\
        [--protocol released|multiturn] [--max-turns N] [--temperature T] [--top-k K] [--top-p P] \\
        [--seed S] [--out PNG] [--json]

DIR is a Hugging Face directory (config.json, safetensors, tokenizer files), e.g. `HappyBug/ZoomEarth-3B`
downloaded locally, or one written by `zoomjax.hf.save` / `python -m zoomjax.train`. The image is read
lazily: a TIFF / GeoTIFF is read by window (the global view from its overviews, the crop at full resolution;
`--bands` picks the bands), other formats have their size checked against `--max-image-pixels` before any
decoding (decompression bombs are refused), and any mode (RGBA, greyscale, 16-bit, multi-band TIFF) is
converted to RGB by the rule of `zoomjax.data.images`.

Prints the answer, every requested box (global-view and original pixels, and map coordinates with the CRS
when the image is a georeferenced GeoTIFF: `--json` adds `crs` and `boxes_map`) and why decoding stopped; with
`--out` writes a PNG: the global view with the requested box(es) drawn, and the crop(s) beside it.
With `--tools NAME[,NAME]` the downstream tools (`zoomjax.tools`) run on the model's requested box and write
`NAME_before.png` / `NAME_after.png` to `--tools-out`.
Exit status: 0 done, 1 `--tools` could not run (no box requested, or a tool failed), 2 unusable image / model
/ arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from zoomjax import cli
from zoomjax.eval.figures import render_result

INFER_FALLBACKS = {"protocol": "released", "version": None, "max_new_tokens": 1024, "max_total_tokens": 8192,
                   "max_pixels": 12845056}


def build_parser() -> argparse.ArgumentParser:
  from zoomjax.data.images import DEFAULT_MAX_PIXELS
  p = argparse.ArgumentParser(
      prog="python -m zoomjax.infer",
      description="Answer a question about a large image: global view -> crop request -> zoom -> answer.")
  p.add_argument("--model", required=True,
                 help="HF model directory (config.json, *.safetensors, tokenizer) or a training RUN_DIR (its hf/); "
                      "its zoomjax_infer.json gives the defaults of --protocol, --max-turns, the token budgets "
                      "and --max-pixels")
  p.add_argument("--image", required=True, help="image file (any size; .tif/.png/.jpg …)")
  p.add_argument("--question", required=True, help="the question")
  p.add_argument("--protocol", default=None, choices=("released", "multiturn"),
                 help="released: ZoomEarth's one-zoom prompt; multiturn: crop_and_zoom tool calls "
                      "(default: the export's, else released)")
  p.add_argument("--protocol-version", dest="version", default=None,
                 help="the protocol's template version, e.g. released-toy-v1 (default: the export's, else the "
                      "protocol's first)")
  p.add_argument("--max-turns", type=int, default=None,
                 help="multiturn: most zooms (default 3; the released protocol zooms at most once)")
  p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
  p.add_argument("--top-k", type=int, default=0, help="top-k sampling, 0 = off (default: %(default)s)")
  p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling, 1 = off (default: %(default)s)")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
  p.add_argument("--max-new-tokens", type=int, default=None,
                 help=f"per decoding step (default: the export's, else {INFER_FALLBACKS['max_new_tokens']})")
  p.add_argument("--max-total-tokens", type=int, default=None,
                 help=f"whole sequence incl. images (default: the export's, else {INFER_FALLBACKS['max_total_tokens']})")
  p.add_argument("--max-pixels", type=int, default=None,
                 help=f"processor pixel budget of each model image (default: the export's, else "
                      f"{INFER_FALLBACKS['max_pixels']})")
  p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                 help="refuse input images with more pixels, 0 = no limit (decompression-bomb guard; default: %(default)s); "
                      "a TIFF is read by window, so this bounds each window read instead")
  p.add_argument("--bands", default=None,
                 help="TIFF: 1-based bands to show, one (grey) or three as R,G,B, e.g. 4,3,2 "
                      "(default: 1,2,3, or 1 for a one- or two-band file)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="parameter / compute dtype (default: %(default)s)")
  p.add_argument("--out", default=None, help="write a PNG: global view with the box, crop(s) beside it")
  p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  p.add_argument("--tools", default=None, metavar="NAME[,NAME]",
                 help="run downstream tools (cloud_removal, denoising, segmentation, image_editing, plug-ins of "
                      "the zoomjax.tools entry-point group) on the model's requested box; writes "
                      "NAME_before.png and NAME_after.png to --tools-out")
  p.add_argument("--tools-out", default=".", help="folder for the --tools PNGs (default: %(default)s)")
  cli.add_debug(p)
  return p


def _check_args(args) -> None:
  """Refuses arguments that cannot work before anything is loaded (`cli.UserError`, exit 2)."""
  if not args.question.strip():
    raise cli.UserError("--question is empty; ask a question about the image")
  if args.max_image_pixels < 0:
    raise cli.UserError(f"--max-image-pixels must be >= 0 (0 = no limit), got {args.max_image_pixels}")
  if args.max_image_pixels == 0:
    args.max_image_pixels = None
  if os.path.isdir(args.image):
    raise cli.UserError(f"--image {args.image} is a directory; pass an image file")
  if args.out:
    cli.writable_file(args.out, "--out")


@cli.main
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  _check_args(args)

  from zoomjax.data import images as zimages
  if args.max_turns is not None and args.max_turns < 0:
    print("error: --max-turns must be >= 0", file=sys.stderr)
    return 2
  try:
    from zoomjax.rollout.generate import Sampling
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  # The image first: a bad image fails fast, before the model is loaded. A TIFF is read by window.
  from zoomjax.rollout.tools import SceneImage
  try:
    bands = None if args.bands is None else [int(b) for b in args.bands.split(",")]
    scene = SceneImage.open(args.image, max_pixels=args.max_image_pixels, bands=bands)
  except zimages.ImageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"error: --bands {args.bands}: {e}", file=sys.stderr)
    return 2

  if args.tools:   # before the model loads: an unknown tool fails fast
    from zoomjax import tools as ztools
    try:
      tool_registry, tool_names = ztools.select_tools(args.tools)
    except (ValueError, ztools.PluginError) as e:
      print(f"error: --tools {args.tools}: {e}", file=sys.stderr)
      return 2

  import jax.numpy as jnp

  from zoomjax import hf
  from zoomjax.rollout.generate import Generator
  from zoomjax.rollout.loop import LoopConfig, Request, rollout
  cli.existing_dir(args.model, "--model", "a model directory (config.json, *.safetensors, tokenizer)")
  with cli.about(f"--model {args.model}: cannot load the model"):
    found = hf.fill_inference_defaults(args, INFER_FALLBACKS)
    if args.max_turns is None and "max_turns" in found:
      args.max_turns = found["max_turns"]
    tokenizer = hf.load_tokenizer(args.model)      # first: it is cheap, the weights are not
    cfg, params = hf.load(args.model, dtype=jnp.dtype(args.dtype))

  max_turns = args.max_turns if args.max_turns is not None else (1 if args.protocol == "released" else 3)
  try:
    loop_cfg = LoopConfig(protocol=args.protocol, version=args.version, max_turns=max_turns,
                          max_new_tokens=args.max_new_tokens, max_total_tokens=args.max_total_tokens,
                          sampling=sampling, max_pixels=args.max_pixels, max_image_pixels=args.max_image_pixels)
    (traj,) = rollout(Generator(cfg, params), tokenizer, [Request(scene, args.question)], loop_cfg,
                      seed=args.seed)
  except ValueError as e:  # e.g. the prompt alone exceeds --max-total-tokens
    print(f"error: {e}", file=sys.stderr)
    return 2

  view_size = traj.info["view_size"]
  tool_rows = None
  if args.tools:   # the downstream tools on the model's (first) requested box, before/after PNGs
    tool_rows = (ztools.run_on_box(tool_registry, tool_names, scene, traj.boxes_global[0], args.tools_out)
                 if traj.boxes_global else [])
  if args.out:
    render_result(scene.view, traj.boxes_global, traj.crops, traj.answer).save(args.out, format="PNG")
  if args.json:
    out = traj.summary()
    out.update(image_size=list(traj.info["original_size"]), view_size=list(view_size), out=args.out)
    if scene.crs is not None:   # georeferenced: each box also in map coordinates
      out.update(crs=scene.crs, boxes_map=[None if b is None else scene.box_to_map(b)[0]
                                           for b in traj.boxes_original])
    if tool_rows is not None:
      out["tools"] = tool_rows
    print(json.dumps(out, ensure_ascii=False))
  else:
    print(f"answer: {traj.answer if traj.answer is not None else '(none)'}")
    if not traj.boxes_global:
      print("box: none (answered from the global view)")
    for i, (bg, bo) in enumerate(zip(traj.boxes_global, traj.boxes_original)):
      tag = "box" if len(traj.boxes_global) == 1 else f"box {i + 1}"
      print(f"{tag} (global view {view_size[0]}x{view_size[1]}): {[round(v, 1) for v in bg]}")
      w, h = traj.info["original_size"]
      print(f"{tag} (original {w}x{h}): {[round(v, 1) for v in bo]}")
      if scene.crs is not None and bo is not None:
        print(f"{tag} (map, {scene.crs}): {[round(v, 3) for v in scene.box_to_map(bo)[0]]}")
    print(f"stop: {traj.stop_reason}")
    if args.out:
      print(f"wrote {args.out}")
    for r in tool_rows or ():
      print(f"tool {r['name']}: {r['text']}" + (f" (wrote {r['before']}, {r['after']})" if r["after"] else ""))
  if tool_rows is not None and (not traj.boxes_global or not all(r["ok"] for r in tool_rows)):
    failed = [r["name"] for r in tool_rows if not r["ok"]]
    print("error: --tools: " + (f"{len(failed)} of {len(tool_rows)} tool(s) failed: {', '.join(failed)}" if failed
                                else "the model requested no box, so no tool ran"), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
