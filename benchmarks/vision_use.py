"""Does a trained model use its image? Image dependence of a run's vision features and next-token logits.

    python benchmarks/vision_use.py RUN_DIR [--images DIR] [--num-images 8] [--markdown]

A model that reads its global view writes a different scene description for different scenes. This
script measures how much the picture can change what the model says, on the first `--num-images`
images of the run's Toy Earth data (or any folder of images):

* vision features (the merger output, the rows that replace `<|image_pad|>`): the mean per-token norm,
  set against the text embedding's mean row norm; the *image signal*, the mean distance between one
  image's mean feature and the mean over all images, as a fraction of the per-token norm; and the
  within-image spread across an image's own tokens, as the same fraction;
* logits after `<think>The image shows` for the global question "What is the main type of area shown
  in this image?" (Toy Earth's description goes on "a rural ..." or "an urban ...", so the next token
  already says which): the largest difference between any two images' logits, against the logits' own
  scale, and how many distinct next tokens the images get; on Toy Earth images, also how many of them
  are right (` a` for a rural scene, ` an` for an urban one, from the data's Urban-Rural rows).

The same numbers for a freshly initialised model of the run's config (seed 0) are printed beside them,
as the point where training started. Everything runs on the run's HF export (`RUN_DIR/hf`), with the
view made as training and the rollout make it (`data.images.global_view`, then the run's pixel budget).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoomjax import hf  # noqa: E402
from zoomjax.data import images as I, tokenizer as T  # noqa: E402
from zoomjax.data.toy_earth import TOY_VIEW_PIXELS  # noqa: E402
from zoomjax.model import forward, init_params, vision  # noqa: E402
from zoomjax.model.qwen2_5_vl import Qwen2_5_VL  # noqa: E402
from zoomjax.processing import preprocess_image  # noqa: E402
from zoomjax.protocol import templates as P  # noqa: E402

QUESTION = "What is the main type of area shown in this image?"
PREFIX = "<think>The image shows"


def _inputs(path: str, max_pixels: int):
  view, _ = I.global_view(I.load_image(path))
  pv, grid = preprocess_image(view, max_pixels=max_pixels)
  return pv, np.asarray(grid)[None]


def features(cfg, params, pv, grid) -> np.ndarray:
  """float32[M, D]: the vision tower's output rows for one image."""
  meta = vision.vision_metadata(cfg.vision, grid)
  return np.asarray(Qwen2_5_VL(cfg).apply({"params": params}, pv, meta, method=lambda m, x, md: m.visual(x, md)))


def urban_rural(data_root: str) -> dict[str, str]:
  """Toy Earth's `Urban-Rural` answer per image name, from the data root's split files (empty elsewhere)."""
  out = {}
  for split in ("sft", "rl", "test"):
    path = os.path.join(data_root, f"{split}.jsonl")
    if os.path.exists(path):
      for line in open(path):
        row = json.loads(line)
        if row.get("category") == "Urban-Rural":
          out[row["image_name"]] = row["ground_truth"]
  return out


def measure(cfg, params, encode, decode, paths: list[str], max_pixels: int, version: str, truth: dict[str, str]) -> dict:
  feats, logits, texts = [], [], []
  prompt = P.render_prompt(QUESTION, "released", version=version).text + PREFIX
  for path in paths:
    pv, grid = _inputs(path, max_pixels)
    f = features(cfg, params, pv, grid)
    feats.append(f)
    text = prompt.replace(P.IMAGE_PAD, P.IMAGE_PAD * f.shape[0])
    ids = np.asarray([encode(text)], np.int32)
    row = np.asarray(forward(cfg, params, ids, pv, grid))[0, -1]
    logits.append(row)
    texts.append(decode([int(np.argmax(row))]))
  f = np.stack(feats)                                   # [images, M, D]
  norm = float(np.linalg.norm(f, axis=-1).mean())
  means = f.mean(axis=1)                                # [images, D]
  between = float(np.linalg.norm(means - means.mean(axis=0), axis=-1).mean())
  within = float(np.linalg.norm(f - means[:, None], axis=-1).mean())
  lg = np.stack(logits)
  spread = float(np.max(np.abs(lg[:, None] - lg[None])))
  emb = np.asarray(params["language"]["embed_tokens"]["embedding"])
  article = {"rural": " a", "urban": " an"}
  known = [(t, article[truth[os.path.basename(p)]]) for t, p in zip(texts, paths) if os.path.basename(p) in truth]
  right = f"{sum(t == a for t, a in known)}/{len(known)}" if known else "-"
  return {"right": right, "feature_norm": norm, "text_embedding_norm": float(np.linalg.norm(emb, axis=-1).mean()),
          "image_signal": between / norm, "within_image": within / norm,
          "logit_spread": spread, "logit_scale": float(np.abs(lg).max()),
          "distinct_next_words": len(set(texts)), "next_words": texts}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run_dir")
  ap.add_argument("--images", help="folder of images (default: the run's Toy Earth images)")
  ap.add_argument("--num-images", type=int, default=8)
  ap.add_argument("--markdown", action="store_true")
  args = ap.parse_args(argv)
  hf_dir = os.path.join(args.run_dir, "hf")
  infer_cfg = json.load(open(os.path.join(hf_dir, "zoomjax_infer.json")))
  summary = json.load(open(os.path.join(args.run_dir, "summary.json")))
  img_dir = args.images or os.path.join(summary["data_root"], "images")
  paths = sorted(glob.glob(os.path.join(img_dir, "*.png")))[: args.num_images]
  if len(paths) < 2:
    raise SystemExit(f"vision_use: need at least 2 images in {img_dir}")
  max_pixels = int(infer_cfg.get("max_pixels") or TOY_VIEW_PIXELS)
  version = infer_cfg.get("version") or P.TOY_VERSION
  cfg, params = hf.load(hf_dir, dtype=jnp.float32)
  tok = T.load_tokenizer(hf_dir)
  truth = urban_rural(summary["data_root"]) if not args.images else {}
  encode = T.encoder(tok)
  rows = {name: measure(cfg, p, encode, tok.decode, paths, max_pixels, version, truth)
          for name, p in (("trained", params), ("fresh init", init_params(cfg, jax.random.PRNGKey(0))))}
  keys = ("feature_norm", "text_embedding_norm", "image_signal", "within_image", "logit_spread", "logit_scale",
          "distinct_next_words", "right")
  if args.markdown:
    print(f"| {args.run_dir} ({len(paths)} images) | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
  for name, r in rows.items():
    vals = [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
    print(f"| {name} | " + " | ".join(vals) + " |" if args.markdown else f"{name:11s} " +
          "  ".join(f"{k}={v}" for k, v in zip(keys, vals)) + f"  next={r['next_words']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
