"""Toy Earth drawing: terrain backgrounds and the small objects whose details the questions ask about.

All sizes are absolute pixels of the original image (a fixed ground sampling distance): a bigger image
covers more ground, it does not draw bigger objects. The sizes are chosen for the toy regime, where the
model sees every image through `TOY_VIEW_PIXELS` (224 x 224) pixels:

  * global view of a 2048-px image: ~0.11 px per original px; crop window of 512 px: ~0.44 px per px.
  * landmarks the model must localise (paved areas 200-320 px, large buildings 80 x 64, ships 120 x 30,
    water bodies 200+ px) stay visible in the global view (>= 7 px);
  * the asked-about details are 10-30 px (colour squares 14 px, roof symbols ~26 px, texture periods
    16 px, vehicles / tanks / aircraft 16-30 px, ship wakes 3 px wide): 4-13 px in the crop, 1-3 px
    (blended away) in the global view.
  * Details are *mean-matched* where possible, so once the view averages them they are gone, not just
    small: each colour block holds one square of the asked colour and three of a dull partner colour
    that brings the block's mean to the plain roof grey; every small object's silhouette is 4-px
    stripes of two values around the mean of the ground below (weighted by their areas).

Everything here is numpy/PIL on uint8/float32 arrays and is deterministic given the numpy Generator.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Answer vocabularies whose rendering lives here.
COLORS = {  # name -> RGB of the marking squares
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "white": (240, 240, 240),
}
SEASON_VEG = {"spring": (118, 168, 84), "summer": (58, 118, 48), "autumn": (172, 118, 50),
              "winter": (226, 230, 234)}
SEASON_SOIL = {"spring": (150, 132, 100), "summer": (160, 142, 104), "autumn": (138, 108, 78),
               "winter": (212, 216, 220)}
WATER = (34, 74, 106)
WINTER_APRON = (150, 150, 155)   # cleared pavement around entities in winter scenes
ASPHALT = (92, 92, 96)
ROOF = 150.0            # plain roof grey of large buildings (per channel)
ROOF_TEXTURE_AMP = 32.0  # material texture amplitude around ROOF

# Object footprints (w, h) in original pixels.
CAR = (16, 9)
TRUCK = (30, 11)
TANK_D = 24
PLANE = (30, 28)
HELI_D = 26
BUILDING = (80, 64)
SHIP = (120, 30)
SYMBOL = 26
COLOR_CELL = 14


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
  """Value noise in [0, 1], float32[h, w]: a random grid every `cell` px, bilinearly upsampled."""
  gh, gw = h // cell + 2, w // cell + 2
  g = rng.random((gh, gw), dtype=np.float32)
  im = Image.fromarray(g, mode="F").resize((gw * cell, gh * cell), Image.BILINEAR)
  return np.asarray(im, dtype=np.float32)[:h, :w]


def _fill(img: np.ndarray, box, color) -> None:
  x0, y0, x1, y1 = (int(v) for v in box)
  img[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = color


def _mask(w: int, h: int, draw_fn) -> np.ndarray:
  """A bool[h, w] mask drawn by `draw_fn(ImageDraw)` on a local canvas."""
  m = Image.new("L", (w, h), 0)
  draw_fn(ImageDraw.Draw(m))
  return np.asarray(m) > 127


def _paint(img: np.ndarray, x0: int, y0: int, mask: np.ndarray, color) -> None:
  """img[y0:, x0:][mask] = color, clipped to the image."""
  h, w = mask.shape
  H, W = img.shape[:2]
  ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
  if ax1 <= ax0 or ay1 <= ay0:
    return
  sub = mask[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
  region = img[ay0:ay1, ax0:ax1]
  region[sub] = np.asarray(color, dtype=img.dtype)


# ----------------------------------------------------------------------------------------------------------
# Terrain.

def terrain(rng: np.random.Generator, size: int, scene: str, season: str) -> np.ndarray:
  """Background float32[size, size, 3] for a scene type (residential/industrial/farmland/forest)."""
  veg = np.asarray(SEASON_VEG[season], np.float32)
  soil = np.asarray(SEASON_SOIL[season], np.float32)
  low = smooth_noise(rng, size, size, 256)[..., None]
  if scene == "forest":
    clumps = smooth_noise(rng, size, size, 24)[..., None]
    img = veg * (0.62 + 0.22 * clumps + 0.12 * low)
  elif scene == "farmland":
    img = np.empty((size, size, 3), np.float32)
    for x0, y0, x1, y1 in _split_fields(rng, 0, 0, size, size):
      t = rng.uniform(0.0, 1.0)
      c = veg * (1 - t) + soil * t
      img[y0:y1, x0:x1] = c * rng.uniform(0.9, 1.08)
      # field boundary (a thin dirt track)
      img[y0:y0 + 3, x0:x1] = soil * 0.85
      img[y0:y1, x0:x0 + 3] = soil * 0.85
    img *= (0.94 + 0.12 * low)
  elif scene == "residential":
    img = (veg * (0.9 + 0.15 * low)).astype(np.float32)
    road = (200.0, 200.0, 204.0) if season == "winter" else (118.0, 118.0, 120.0)
    roofs = [(150, 72, 60), (112, 112, 118), (172, 104, 80), (96, 80, 70)]
    if season == "winter":
      roofs = [(222, 222, 226), (200, 200, 206)]
    step = int(rng.integers(180, 241))
    for y0 in range(int(rng.integers(40, step)), size, step):
      for x0 in range(int(rng.integers(40, step)), size, step):
        # a block of houses between roads
        for hy in range(y0 + 18, min(y0 + step - 30, size - 24), 36):
          for hx in range(x0 + 18, min(x0 + step - 30, size - 24), 34):
            if rng.random() < 0.82:
              w, h = int(rng.integers(18, 26)), int(rng.integers(15, 22))
              _fill(img, (hx, hy, hx + w, hy + h), roofs[int(rng.integers(len(roofs)))])
              _fill(img, (hx + w, hy + 3, hx + w + 3, hy + h + 3), (40, 40, 40))
      _fill(img, (0, y0, size, y0 + 10), road)
    for x0 in range(int(rng.integers(40, step)), size, step):
      _fill(img, (x0, 0, x0 + 10, size), road)
  elif scene == "industrial":
    ground = np.asarray((200, 200, 204) if season == "winter" else (142, 140, 134), np.float32)
    grass = smooth_noise(rng, size, size, 96)[..., None] > 0.72
    img = np.where(grass, veg, ground) * (0.92 + 0.12 * low)
    img = np.ascontiguousarray(img, dtype=np.float32)
    n = int(size * size / 60000)
    for _ in range(n):
      w, h = int(rng.integers(60, 181)), int(rng.integers(50, 141))
      x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
      shade = float(rng.choice([118.0, 176.0, 196.0]))
      _fill(img, (x, y, x + w, y + h), (shade, shade, shade + 4))
      _fill(img, (x + w, y + 4, x + w + 5, y + h + 5), (50, 50, 52))
    road = (210.0, 210.0, 214.0) if season == "winter" else (100.0, 100.0, 104.0)
    for y0 in range(int(rng.integers(100, 400)), size, int(rng.integers(400, 700))):
      _fill(img, (0, y0, size, y0 + 14), road)
  else:
    raise ValueError(f"unknown scene {scene!r}")
  return img


def _split_fields(rng, x0, y0, x1, y1, lo=180, hi=460):
  """Recursive rectangle split into fields with sides in about [lo, hi]."""
  w, h = x1 - x0, y1 - y0
  if w <= hi and h <= hi:
    return [(x0, y0, x1, y1)]
  if w >= h:
    cut = int(rng.integers(x0 + lo, max(x0 + lo + 1, x1 - lo)))
    if x1 - cut < lo:
      cut = x1 - lo
    return _split_fields(rng, x0, y0, cut, y1, lo, hi) + _split_fields(rng, cut, y0, x1, y1, lo, hi)
  cut = int(rng.integers(y0 + lo, max(y0 + lo + 1, y1 - lo)))
  if y1 - cut < lo:
    cut = y1 - lo
  return _split_fields(rng, x0, y0, x1, cut, lo, hi) + _split_fields(rng, x0, cut, x1, y1, lo, hi)


def clearing(img: np.ndarray, box, color, margin: int = 24) -> None:
  """Plain ground around an entity so background clutter never touches it."""
  x0, y0, x1, y1 = box
  _fill(img, (x0 - margin, y0 - margin, x1 + margin, y1 + margin), color)


def water_body(img: np.ndarray, rng: np.random.Generator, box) -> None:
  """An irregular lake filling about the ellipse inscribed in `box`."""
  x0, y0, x1, y1 = (int(v) for v in box)
  w, h = x1 - x0, y1 - y0
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  r = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
  wobble = smooth_noise(rng, h, w, 48) * 0.35
  m = r < 0.8 + wobble
  col = np.asarray(WATER, np.float32) * (0.92 + 0.1 * smooth_noise(rng, h, w, 64))[..., None]
  region = img[y0:y1, x0:x1]
  region[m] = col[m]


# ----------------------------------------------------------------------------------------------------------
# Small objects (drawn on float32 images), mean-matched to the ground under them: each object's
# silhouette is filled with stripes (4 px, across x) of two values on opposite sides of the local ground
# mean, weighted by their areas so the object's mean equals the ground. The stripes are fine enough that
# any low-pass view averages them to the ground (a concentric light-body/dark-frame design would not:
# the resampling kernel's negative lobe keeps it visible), and coarse enough to stay visible in a crop.
STRIPE = 4


def _paint_matched(img, x0: int, y0: int, silhouette: np.ndarray) -> None:
  """Paints a striped `silhouette` (bool mask on a canvas at (x0, y0)) mean-matched to the pixels below."""
  H, W = img.shape[:2]
  h, w = silhouette.shape
  if x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H:
    raise ValueError("objects must lie inside the image")
  xx = np.arange(w)[None, :].repeat(h, 0)
  body = silhouette & ((xx // STRIPE) % 2 == 0)
  frame = silhouette & ~body
  nb, nf = int(body.sum()), int(frame.sum())
  region = img[y0:y0 + h, x0:x0 + w]
  bg = region[silhouette].mean(axis=0)
  if bg.mean() < 128:   # light stripes on a dark ground
    a = float(min(((235.0 - bg) / nf).min(), ((bg - 15.0) / nb).min()))
    region[body], region[frame] = bg + a * nf, bg - a * nb
  else:                 # dark stripes on a light ground
    a = float(min(((bg - 25.0) / nf).min(), ((240.0 - bg) / nb).min()))
    region[body], region[frame] = bg - a * nf, bg + a * nb


def _silhouette(kind: str) -> np.ndarray:
  """The bool silhouette of a small object on a canvas of exactly its footprint."""
  w, h = OBJECT_SIZE[kind]
  if kind == "car":
    return _mask(w, h, lambda g: g.rounded_rectangle((0, 0, w - 1, h - 1), radius=3, fill=255))
  if kind == "truck":  # cab, gap, trailer
    return _mask(w, h, lambda g: (g.rectangle((0, 1, 7, h - 2), fill=255), g.rectangle((10, 0, w - 1, h - 1), fill=255)))
  if kind == "tank":
    return _mask(w, h, lambda g: g.ellipse((0, 0, w - 1, h - 1), fill=255))
  if kind == "plane":
    return _mask(w, h, lambda g: (g.rectangle((0, h // 2 - 3, w - 1, h // 2 + 3), fill=255),         # fuselage
                                  g.polygon([(10, 0), (17, 0), (19, h - 1), (8, h - 1)], fill=255),  # wings
                                  g.rectangle((w - 6, h // 2 - 8, w - 1, h // 2 + 8), fill=255)))    # tail
  if kind == "helicopter":
    return _mask(w, h, lambda g: (g.ellipse((0, 0, w - 1, h - 1), outline=255, width=3),             # rotor
                                  g.ellipse((6, 8, 19, 17), fill=255),                              # body
                                  g.rectangle((18, 11, w - 1, 14), fill=255)))                      # tail boom
  raise ValueError(f"unknown object {kind!r}")


OBJECT_SIZE = {"car": CAR, "truck": TRUCK, "tank": (TANK_D, TANK_D), "plane": PLANE,
               "helicopter": (HELI_D, HELI_D)}


def draw_object(img, kind: str, cx: int, cy: int) -> tuple[int, int, int, int]:
  """A small object (car, truck, tank, plane, helicopter) centred at (cx, cy); returns its footprint box."""
  w, h = OBJECT_SIZE[kind]
  x0, y0 = cx - w // 2, cy - h // 2
  _paint_matched(img, x0, y0, _silhouette(kind))
  return x0, y0, x0 + w, y0 + h


def draw_paved_area(img, rng, box) -> None:
  x0, y0, x1, y1 = box
  h, w = y1 - y0, x1 - x0
  tex = 0.96 + 0.08 * smooth_noise(rng, h, w, 40)
  img[y0:y1, x0:x1] = np.asarray(ASPHALT, np.float32) * tex[..., None]
  # painted border
  for (a, b, c, d) in ((x0, y0, x1, y0 + 3), (x0, y1 - 3, x1, y1), (x0, y0, x0 + 3, y1), (x1 - 3, y0, x1, y1)):
    _fill(img, (a, b, c, d), (180, 180, 170))


def partner_color(color) -> np.ndarray:
  """The dull partner so one `color` square + three partner squares average to the plain roof grey."""
  return (4.0 * ROOF - np.asarray(color, np.float32)) / 3.0


def draw_building(img, x0: int, y0: int, color: str, symbol: str, material: str) -> tuple[int, int, int, int]:
  """A large building roof (BUILDING w x h) at (x0, y0); returns the roof box.

  Layout: the material texture (metal: vertical stripes of period 16; tiles: 8-px checker; concrete:
  plain) covers the roof; two 2x2 colour blocks (one `color` square + three partner squares, 14 px
  each) sit in the top corners; the symbol (dark, ~26 px) is centred in the lower part. A cast shadow
  falls to the bottom-right.
  """
  w, h = BUILDING
  _fill(img, (x0 + 4, y0 + h, x0 + w + 4, y0 + h + 4), (40, 40, 42))  # shadow
  _fill(img, (x0 + w, y0 + 4, x0 + w + 4, y0 + h + 4), (40, 40, 42))
  yy, xx = np.mgrid[0:h, 0:w]
  if material == "metal":
    t = np.where((xx // 8) % 2 == 0, 1.0, -1.0)
  elif material == "tiles":
    t = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 1.0, -1.0)
  elif material == "concrete":
    t = np.zeros((h, w))
  else:
    raise ValueError(f"unknown material {material!r}")
  roof = np.repeat((ROOF + ROOF_TEXTURE_AMP * t)[..., None], 3, axis=2).astype(np.float32)
  c = np.asarray(COLORS[color], np.float32)
  p = partner_color(c)
  s = COLOR_CELL
  for bx in (3, w - 3 - 2 * s):
    by = 3
    roof[by:by + 2 * s, bx:bx + 2 * s] = p
    # the colour square sits at the block's outer top corner
    cx = bx if bx < w // 2 else bx + s
    roof[by:by + s, cx:cx + s] = c
  sym = _symbol_mask(symbol, SYMBOL)
  sx, sy = (w - SYMBOL) // 2, h - SYMBOL - 4
  roof[sy:sy + SYMBOL, sx:sx + SYMBOL][sym] = (44.0, 44.0, 48.0)
  img[y0:y0 + h, x0:x0 + w] = roof
  return x0, y0, x0 + w, y0 + h


def _symbol_mask(symbol: str, s: int) -> np.ndarray:
  if symbol == "circle":
    return _mask(s, s, lambda g: g.ellipse((0, 0, s - 1, s - 1), fill=255))
  if symbol == "square":
    return _mask(s, s, lambda g: g.rectangle((2, 2, s - 3, s - 3), fill=255))
  if symbol == "triangle":
    return _mask(s, s, lambda g: g.polygon([(s // 2, 0), (s - 1, s - 1), (0, s - 1)], fill=255))
  if symbol == "cross":
    a = s // 3
    return _mask(s, s, lambda g: (g.rectangle((a, 0, s - 1 - a, s - 1), fill=255),
                                  g.rectangle((0, a, s - 1, s - 1 - a), fill=255)))
  raise ValueError(f"unknown symbol {symbol!r}")


def draw_ship(img, x0: int, y0: int, kind: str, moving: bool, facing_right: bool) -> tuple[int, int, int, int]:
  """A ship (SHIP w x h) with its hull box at (x0, y0); a wake behind the stern when `moving`.

  Container ship: two rows of small coloured containers on deck. Tanker: a plain deck with a dark
  central pipe and three round hatches.
  """
  w, h = SHIP
  bow = 18
  if moving:  # two foam lines diverging from the stern, and foam at the stern
    sx = x0 if facing_right else x0 + w
    d = -1 if facing_right else 1
    L = 80
    bx0, by0 = min(sx, sx + d * L) - 2, y0 - 30
    m = _mask(L + 4, h + 60, lambda g: (
        g.line([(sx - bx0, h // 2 + 30), (sx + d * L - bx0, 6)], fill=255, width=3),
        g.line([(sx - bx0, h // 2 + 30), (sx + d * L - bx0, h + 54)], fill=255, width=3),
        g.ellipse((sx - bx0 - 6, h // 2 + 30 - 5, sx - bx0 + 6, h // 2 + 30 + 5), fill=255)))
    _paint(img, bx0, by0, m, (224, 230, 234))
  if facing_right:
    hull = [(0, 0), (w - bow, 0), (w - 1, h // 2), (w - bow, h - 1), (0, h - 1)]
  else:
    hull = [(w - 1, 0), (bow, 0), (0, h // 2), (bow, h - 1), (w - 1, h - 1)]
  _paint(img, x0, y0, _mask(w, h, lambda g: g.polygon(hull, fill=255)), (62, 62, 66))
  inner = [(x + (2 if x < w / 2 else -2), y + (2 if y < h / 2 else -2)) for x, y in hull]
  _paint(img, x0, y0, _mask(w, h, lambda g: g.polygon(inner, fill=255)), (150, 150, 150))
  # superstructure at the stern
  st = x0 + 4 if facing_right else x0 + w - 18
  _fill(img, (st, y0 + 6, st + 14, y0 + h - 6), (236, 236, 236))
  deck0 = x0 + 22 if facing_right else x0 + bow + 4
  deck1 = deck0 + (w - 22 - bow - 4)
  if kind == "container ship":
    palette = [(196, 64, 52), (58, 116, 186), (214, 176, 60), (86, 156, 86)]
    k = 0
    for row in (y0 + 5, y0 + h // 2 + 1):
      for cx in range(deck0, deck1 - 9, 11):
        _fill(img, (cx, row, cx + 9, row + h // 2 - 6), palette[k % 4])
        k += 1
  elif kind == "tanker":
    _fill(img, (deck0, y0 + h // 2 - 1, deck1, y0 + h // 2 + 2), (70, 70, 74))
    for cx in np.linspace(deck0 + 8, deck1 - 8, 3).astype(int):
      _paint(img, int(cx) - 6, y0 + h // 2 - 6, _mask(12, 12, lambda g: g.ellipse((0, 0, 11, 11), fill=255)),
             (112, 112, 116))
  else:
    raise ValueError(f"unknown ship kind {kind!r}")
  return x0, y0, x0 + w, y0 + h


def finish(img: np.ndarray, rng: np.random.Generator, grain: float = 5.0) -> np.ndarray:
  """Adds fine sensor noise and quantises to uint8 (in place on the float image)."""
  img += rng.normal(0.0, grain, size=img.shape[:2]).astype(np.float32)[..., None]
  np.clip(img, 0, 255, out=img)
  return img.astype(np.uint8)
