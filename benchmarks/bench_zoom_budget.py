"""Visual-token budget of a zoom trajectory vs feeding the whole image (pure arithmetic over sizes).

    python benchmarks/bench_zoom_budget.py [--max-pixels 12845056]

For each original size W x H:

* full image: the image fed to Qwen2.5-VL directly, resized by the processor's `smart_resize` under its
  default `max_pixels` (12845056 = 128*128*28*28, also what the released ZoomEarth inference used), and,
  for reference, at native resolution (no pixel cap; sides rounded to multiples of 28);
* zoom trajectory (released protocol): the 512-px global view + one crop (the >= 512 px window, zoomed to a
  long side <= 512), each through `smart_resize` with the same `max_pixels`; the multiturn protocol adds
  one such crop per extra zoom.

Tokens are the language model's image tokens, `(h / 28) * (w / 28)` (patches / 4); the ViT sees 4x as many
patches. Crop sizes assume a small target (window 512 x 512); a large box gives a crop of at most the
same token count.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = [(2048, 2048), (4000, 3000), (5000, 5000), (8000, 6000), (10000, 10000), (27000, 27000)]


def tokens(w: int, h: int, max_pixels: int | None, min_pixels: int = 3136) -> int:
  from zoomjax.processing import smart_resize
  if max_pixels is None:
    rh, rw = max(28, round(h / 28) * 28), max(28, round(w / 28) * 28)
  else:
    rh, rw = smart_resize(h, w, 28, min_pixels, max_pixels)
  return (rh // 28) * (rw // 28)


def zoom_tokens(w: int, h: int, max_pixels: int, zooms: int = 1) -> tuple[int, int]:
  from zoomjax.data import boxes
  gw, gh = boxes.resized_size(w, h, 512)
  view = tokens(gw, gh, max_pixels)
  cw, ch = min(w, 512), min(h, 512)            # the 512 window (shifted inside), already <= 512
  cw, ch = boxes.resized_size(cw, ch, 512)
  return view, zooms * tokens(cw, ch, max_pixels)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--max-pixels", type=int, default=12845056)
  p.add_argument("--zooms", type=int, default=1, help="crops in the trajectory (released: 1)")
  args = p.parse_args(argv)
  mp = args.max_pixels
  print(f"# visual tokens: full image (smart_resize, max_pixels={mp}) vs global view + {args.zooms} crop(s)")
  print("| original | full @ max_pixels | full @ native | global view | crop(s) | zoom total "
        "| full / zoom (max_pixels) | full / zoom (native) |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for w, h in SIZES:
    full = tokens(w, h, mp)
    native = tokens(w, h, None)
    view, crops = zoom_tokens(w, h, mp, args.zooms)
    z = view + crops
    print(f"| {w}x{h} | {full:,} | {native:,} | {view} | {crops} | {z} | {full / z:.1f}x | {native / z:.0f}x |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
