"""Toy Earth: a procedural ultra-high-resolution benchmark in LRS-GRO's format, for active perception on a CPU.

    python -m zoomjax.data.toy_earth --out DIR [--seed S] [--num-images N] [--size 2048]

writes `DIR/images/toy_XXXXX.png` and `DIR/{sft,rl,test}.jsonl` (split by image: held-out test images)
plus `DIR/meta.json` (answer vocabularies, counts, generator version, and the accuracy an image-blind
model gets on the test split by answering each question template with its most frequent SFT answer —
the bar "above chance" has to clear, ~0.44 overall for 64 images). Rows carry the LRS-GRO fields of
their split (`question_id, image_name, category, question, higher_level, ground_truth, bbox, type,
split`, + `label`; SFT also `cut, global, stage_1_reasoning, stage_2_reasoning, scale`), boxes in the
1024-long-side frame, so every LRS-GRO reader, trajectory builder and scorer runs on it unchanged.

Each image is a 3 x 3 grid of cells. The background says the scene type (residential / industrial:
urban; farmland / forest: rural) and the season (vegetation colour); 1-3 water bodies are visible.
Cells hold the entities questions refer to, named by their cell ("the paved area in the top-left part of
the image"): paved areas (parking: cars or trucks; storage: tanks; airfield: planes or helicopters;
or empty), large buildings (roof colour markings, a roof symbol, a roof material, maybe a vehicle
parked next to it) and ships in basins (tanker or container ship, moving with a wake or stationary).
Global questions are answerable from the global view; region and object questions need the crop (see
`toy_earth_render` for the sizes that make this so). Layouts and their drawing live in `toy_earth_scene`;
this module asks the questions, writes the files and holds the CLI. Answers come from small closed vocabularies
(`VOCAB`), so a tiny model can learn them. 15 of LRS-GRO's categories are covered.

Everything is a function of (seed, image index, size): the same arguments give byte-identical files,
whatever the number of worker processes.

Resolution: the contract "unreadable in the global view, clear in the crop" is designed for the toy
pixel budget (`TOY_VIEW_PIXELS`, both views resized to ~224 x 224) at the default 2048 px. At the released
512-px global view, a 2048-px image is only 4x down-scaled, so small objects stay faintly visible there;
use `--size 4096` or more for experiments at the released resolution.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from zoomjax import cli
from zoomjax.data.toy_earth_scene import NOUN, PLURAL, URBAN, VOCAB, Entity, Layout, make_layout, render

GENERATOR_VERSION = "toy-earth-v1"
MIN_SIZE, MAX_SIZE = 1536, 8192
# The image budget (pixels) the embedded default preprocesses every image to (global view and crops):
# Toy Earth's object sizes are designed so the asked details are legible in a crop at this budget and
# not in the global view.
TOY_VIEW_PIXELS = 224 * 224

HIGHER_LEVEL = {  # LRS-GRO's majority higher_level per category
    "Scene Type": "reasoning", "Urban-Rural": "reasoning", "Season": "reasoning", "Counting": "perception",
    "Region function": "function", "Region status": "reasoning", "Object category": "attribute",
    "Object existence": "perception", "Other visual features": "attribute",
    "Object color / pattern": "perception", "Object shape / structure": "perception",
    "Object material / surface": "attribute", "Object relative position / context": "localization",
    "Object state / motion / activity": "reasoning", "Object category refinement": "attribute",
}
CROP_INTRO = ", therefore I need to crop the image to examine the surroundings of the mentioned target."
GLOBAL_INTRO = ", therefore I need to analyze the entire image without cropping."


# ----------------------------------------------------------------------------------------------------------
# Questions.

def _q(category: str, qtype: str, question: str, answer: str, ent: Entity | None, intent: str,
       observation: str, label: str = "") -> dict[str, Any]:
  return {"category": category, "type": qtype, "question": question, "ground_truth": answer,
          "entity": ent, "intent": intent, "observation": observation, "label": label}


def questions(lay: Layout) -> list[dict[str, Any]]:
  """The questions of one image (answers, referents and templated reasoning parts)."""
  qs = [
      _q("Scene Type", "global", "What is the main type of area shown in this image?", lay.scene, None,
         "the main type of area", f"the area looks like {lay.scene}"),
      _q("Urban-Rural", "global", "Does this image mainly depict an urban or rural area?", URBAN[lay.scene],
         None, "whether the area is urban or rural", f"the area is {URBAN[lay.scene]}"),
      _q("Season", "global", "What season does the scene appear to be?", lay.season, None,
         "the season", f"the vegetation indicates {lay.season}"),
      _q("Counting", "global", "How many water bodies are visible in the image?", str(lay.num_water), None,
         "the number of water bodies", f"I count {lay.num_water} water bodies"),
  ]
  for e in lay.entities:
    if e.kind == "area":
      ref = f"the paved area {e.where}"
      label = f"paved area {e.where.replace(' of the image', '')}"
      a = e.attrs
      occupied = a["area"] != "empty"
      qs.append(_q("Region status", "region", f"Is {ref} occupied or empty?",
                   "occupied" if occupied else "empty", e, "the occupancy of " + ref,
                   f"the paved area is {'occupied' if occupied else 'empty'}", label))
      noun = ("vehicles", "aircraft")[sum(e.cell) % 2]  # which existence question: by cell parity
      present = (a["area"], noun) in (("parking", "vehicles"), ("airfield", "aircraft"))
      qs.append(_q("Object existence", "region", f"Are there any {noun} in {ref}?",
                   "yes" if present else "no", e, f"the presence of {noun} in " + ref,
                   f"there are {'' if present else 'no '}{noun} in the paved area", label))
      if occupied:
        plural = PLURAL[a["object"]]
        qs.append(_q("Region function", "region", f"What is {ref} used for?", a["area"], e,
                     "the function of " + ref, f"the paved area holds {plural}, so it is used for {a['area']}",
                     label))
        qs.append(_q("Counting", "region", f"How many {NOUN[a['area']]} are in {ref}?", str(a["count"]), e,
                     f"the number of {NOUN[a['area']]} in " + ref,
                     f"I count {a['count']} {NOUN[a['area']]} in the paved area", label))
        qs.append(_q("Object category", "region", f"What type of objects are in {ref}?", plural, e,
                     "the type of objects in " + ref, f"the objects in the paved area are {plural}", label))
        if a["count"] >= 3:
          qs.append(_q("Other visual features", "region",
                       f"Are the objects in {ref} arranged in a row or scattered?", a["arrangement"], e,
                       "the arrangement of objects in " + ref,
                       "the objects are " + ("arranged in a row" if a["arrangement"] == "row" else "scattered"),
                       label))
    elif e.kind == "building":
      ref = f"the large building {e.where}"
      label = f"large building {e.where.replace(' of the image', '')}"
      a = e.attrs
      qs.append(_q("Object color / pattern", "object", f"What color are the markings on the roof of {ref}?",
                   a["color"], e, "the color of the roof markings of " + ref,
                   f"the roof markings of the building are {a['color']}", label))
      qs.append(_q("Object shape / structure", "object", f"What shape is the symbol on the roof of {ref}?",
                   a["symbol"], e, "the shape of the roof symbol of " + ref,
                   f"the symbol on the roof is a {a['symbol']}", label))
      qs.append(_q("Object material / surface", "object",
                   f"Is the roof of {ref} made of metal, concrete or tiles?", a["material"], e,
                   "the roof material of " + ref, f"the roof is made of {a['material']}", label))
      n = a["neighbour"]
      qs.append(_q("Object relative position / context", "object",
                   f"What is parked on the right side of {ref}?", n, e, "what is next to " + ref,
                   "nothing is parked next to the building" if n == "nothing"
                   else f"a {n} is parked next to the building", label))
    elif e.kind == "ship":
      ref = f"the ship {e.where}"
      label = f"ship {e.where.replace(' of the image', '')}"
      a = e.attrs
      state = "moving" if a["moving"] else "stationary"
      qs.append(_q("Object state / motion / activity", "object", f"Is {ref} moving or stationary?", state, e,
                   "the motion state of " + ref,
                   "the ship leaves a wake, so it is moving" if a["moving"]
                   else "the ship has no wake, so it is stationary", label))
      qs.append(_q("Object category refinement", "object", f"Is {ref} a tanker or a container ship?",
                   a["ship"], e, "the type of " + ref,
                   "the deck carries containers, so it is a container ship" if a["ship"] == "container ship"
                   else "the deck has a pipe and round hatches, so it is a tanker", label))
  return qs


def _box1024(box, size: int) -> list[int]:
  s = 1024.0 / size
  return [int(min(1024, max(0, round(v * s)))) for v in box]


def scene_description(lay: Layout) -> str:
  u = URBAN[lay.scene]
  art = "an" if u[0] in "aeiou" else "a"
  return (f"The image shows {art} {u} {lay.scene} area in {lay.season} with {lay.num_water} water "
          f"bod{'y' if lay.num_water == 1 else 'ies'}.")


def stage_1_reasoning(q: dict[str, Any], box1024: list[int]) -> str:
  """Released-style stage-1 text; for a crop, the box block in the 1024 frame (as LRS-GRO's SFT split)."""
  if q["type"] == "global":
    return f"This question is asking about {q['intent']} of the whole scene{GLOBAL_INTRO}"
  box = ", ".join(str(v) for v in box1024)
  return (f"This question is asking about {q['intent']}{CROP_INTRO}\nReasoning Result:\n"
          f"I need to pay attention to the reference object at\n```json\n[\n"
          f"    {{\"bbox_2d\": [{box}], \"label\": \"{q['label']}\"}}\n]\n```\n")


def stage_2_reasoning(q: dict[str, Any]) -> str:
  where = "From the whole image" if q["type"] == "global" else "In the cropped region"
  return f"{where}, {q['observation']}."


# ----------------------------------------------------------------------------------------------------------
# Generation.

def split_of(index: int, num_images: int) -> str:
  """Images are split by index: the last ~15% test, the ~15% before them rl, the rest sft."""
  n_test = 0 if num_images < 3 else max(1, round(0.15 * num_images))
  n_rl = 0 if num_images < 3 else max(1, round(0.15 * num_images))
  if index >= num_images - n_test:
    return "test"
  if index >= num_images - n_test - n_rl:
    return "rl"
  return "sft"


def _image_seed(seed: int, index: int) -> list[int]:
  return [int(seed) & 0xFFFFFFFF, int(index), 0x70E]


def text_rows(seed: int, index: int, size: int = 2048, split: str = "sft") -> list[dict[str, Any]]:
  """The LRS-GRO rows image `index` gets (as in `generate`, with `first_id` 0), from its layout alone:
  no pixels are rendered (what a tokenizer trains on)."""
  lay = make_layout(np.random.default_rng(_image_seed(seed, index)), size)
  return _rows(f"toy_{index:05d}.png", lay, questions(lay), split, 0)


def generate_image(seed: int, index: int, size: int, out_dir: str, image_format: str = "png"):
  """Renders and writes one image; returns (image_name, layout, questions)."""
  rng = np.random.default_rng(_image_seed(seed, index))
  lay = make_layout(rng, size)
  img = render(rng, lay)
  name = f"toy_{index:05d}.{image_format}"
  path = os.path.join(out_dir, "images", name)
  tmp = path + ".tmp"
  fmt = {"png": "PNG", "tif": "TIFF"}[image_format]
  Image.fromarray(img).save(tmp, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
  os.replace(tmp, path)
  return name, lay, questions(lay)


def _rows(name: str, lay: Layout, qs: list[dict[str, Any]], split: str, first_id: int) -> list[dict[str, Any]]:
  rows = []
  desc = scene_description(lay)
  for k, q in enumerate(qs):
    e = q["entity"]
    box = _box1024(e.box, lay.size) if e is not None else []
    row = {"question_id": f"ToyEarth-{first_id + k}", "image_name": name, "category": q["category"],
           "question": q["question"], "higher_level": HIGHER_LEVEL[q["category"]],
           "ground_truth": q["ground_truth"], "bbox": box, "type": q["type"], "split": split,
           "label": q["label"]}
    if split == "sft":
      row.update(cut=q["type"] != "global", **{"global": desc},
                 stage_1_reasoning=stage_1_reasoning(q, box), stage_2_reasoning=stage_2_reasoning(q),
                 scale=lay.size / 1024.0)
    rows.append(row)
  return rows


def generate(out: str, seed: int = 0, num_images: int = 24, size: int = 2048, workers: int | None = None,
             image_format: str = "png") -> dict[str, Any]:
  """Writes a Toy Earth dataset to `out` (see module docstring); returns the meta dict (also meta.json)."""
  if not MIN_SIZE <= size <= MAX_SIZE:
    raise ValueError(f"--size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
  if num_images < 1:
    raise ValueError(f"--num-images must be >= 1, got {num_images}")
  os.makedirs(os.path.join(out, "images"), exist_ok=True)
  if workers is None:
    workers = min(os.cpu_count() or 1, 8, max(1, num_images // 4))
  args = [(seed, i, size, out, image_format) for i in range(num_images)]
  if workers > 1:
    import multiprocessing as mp
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
      results = list(ex.map(_generate_star, args))
  else:
    results = [generate_image(*a) for a in args]
  by_split: dict[str, list[dict[str, Any]]] = {"sft": [], "rl": [], "test": []}
  next_id = 0
  for i, (name, lay, qs) in enumerate(results):
    split = split_of(i, num_images)
    by_split[split].extend(_rows(name, lay, qs, split, next_id))
    next_id += len(qs)
  for split, rows in by_split.items():
    tmp = os.path.join(out, f"{split}.jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, os.path.join(out, f"{split}.jsonl"))
  meta = {"generator": GENERATOR_VERSION, "seed": seed, "num_images": num_images, "size": size,
          "image_root": "images", "view_pixels": TOY_VIEW_PIXELS,
          "splits": {s: {"rows": len(r), "images": len({x["image_name"] for x in r})} for s, r in by_split.items()},
          "vocab": {k: list(v) for k, v in VOCAB.items()},
          "test_majority_baseline": majority_baseline(by_split["sft"], by_split["test"])}
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


def read_meta(root: str) -> dict[str, Any] | None:
  """`root/meta.json` as a dict, None when absent; a `cli.UserError` naming the file when it is corrupt."""
  path = os.path.join(root, "meta.json")
  if not os.path.isfile(path):
    return None
  hint = f"delete {root} (or just its meta.json) to regenerate Toy Earth there"
  try:
    with open(path, encoding="utf-8") as f:
      meta = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise cli.UserError(f"{path} is corrupt ({e}); {hint}") from None
  except OSError as e:
    raise cli.UserError(f"{path} cannot be read ({e.strerror or e}); {hint}") from None
  if not isinstance(meta, dict):
    raise cli.UserError(f"{path} is corrupt (a JSON {type(meta).__name__}, not an object); {hint}")
  return meta


def majority_baseline(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, Any]:
  """Accuracy on `test` of answering each question template with its most frequent `train` answer (the
  question text with the referent's position removed): what a model that ignores the image gets."""
  import collections
  import re

  def template(r):
    return re.sub(r"in the [a-z-]+ part of the image", "in X", r["question"])
  counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for r in train:
    counts[template(r)][r["ground_truth"]] += 1
  hits: dict[str, list[int]] = collections.defaultdict(list)
  for r in test:
    c = counts.get(template(r))
    ok = int(bool(c) and c.most_common(1)[0][0] == r["ground_truth"])
    hits["overall"].append(ok)
    hits[r["type"]].append(ok)
  return {k: {"accuracy": round(sum(v) / len(v), 4), "n": len(v)} for k, v in sorted(hits.items())}


def _generate_star(a):
  return generate_image(*a)


@cli.main
def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m zoomjax.data.toy_earth", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="output directory (images/ and *.jsonl are written there)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--num-images", type=int, default=24)
  p.add_argument("--size", type=int, default=2048, help=f"image side in pixels, {MIN_SIZE}..{MAX_SIZE}")
  p.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")
  p.add_argument("--format", choices=("png", "tif"), default="png")
  cli.add_debug(p)
  a = p.parse_args(argv)
  if not MIN_SIZE <= a.size <= MAX_SIZE:
    p.error(f"--size must be in [{MIN_SIZE}, {MAX_SIZE}], got {a.size}")
  if a.num_images < 1:
    p.error(f"--num-images must be >= 1, got {a.num_images}")
  cli.writable_dir(a.out, "--out")
  cli.writable_dir(os.path.join(a.out, "images"), "--out")
  t0 = time.time()
  meta = generate(a.out, a.seed, a.num_images, a.size, a.workers, a.format)
  sp = meta["splits"]
  print(f"Toy Earth ({GENERATOR_VERSION}): {a.num_images} images of {a.size}px in {time.time() - t0:.1f}s -> "
        f"{a.out}  sft {sp['sft']['rows']} / rl {sp['rl']['rows']} / test {sp['test']['rows']} questions")
  return 0


if __name__ == "__main__":
  sys.exit(main())
