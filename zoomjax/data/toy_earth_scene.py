"""Toy Earth scenes: what an image holds (`Layout`: scene type, season, entities in a 3 x 3 grid of cells)
and how it is drawn (`render`, with the primitives of `toy_earth_render`).

`make_layout(rng, size)` draws a layout; `VOCAB` holds the closed answer vocabularies, which are also the
attribute values entities are drawn from. `zoomjax.data.toy_earth` asks the questions and writes files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from zoomjax.data import toy_earth_render as R

SCENES = ("residential", "industrial", "farmland", "forest")
URBAN = {"residential": "urban", "industrial": "urban", "farmland": "rural", "forest": "rural"}
SEASONS = ("spring", "summer", "autumn", "winter")
POSITIONS = (("top-left", "top", "top-right"), ("left", "central", "right"),
             ("bottom-left", "bottom", "bottom-right"))
AREA_KINDS = ("parking", "storage", "airfield", "empty")
AREA_OBJECTS = {"parking": ("car", "truck"), "storage": ("tank",), "airfield": ("plane", "helicopter")}
PLURAL = {"car": "cars", "truck": "trucks", "tank": "tanks", "plane": "planes", "helicopter": "helicopters"}
NOUN = {"parking": "vehicles", "storage": "storage tanks", "airfield": "aircraft"}

VOCAB: dict[str, tuple[str, ...]] = {
    "Scene Type": SCENES,
    "Urban-Rural": ("urban", "rural"),
    "Season": SEASONS,
    "Counting/global": ("1", "2", "3"),
    "Counting/region": ("1", "2", "3", "4"),
    "Region function": ("parking", "storage", "airfield"),
    "Region status": ("occupied", "empty"),
    "Object category": tuple(PLURAL.values()),
    "Object existence": ("yes", "no"),
    "Other visual features": ("row", "scattered"),
    "Object color / pattern": tuple(R.COLORS),
    "Object shape / structure": ("circle", "square", "triangle", "cross"),
    "Object material / surface": ("metal", "concrete", "tiles"),
    "Object relative position / context": ("car", "truck", "nothing"),
    "Object state / motion / activity": ("moving", "stationary"),
    "Object category refinement": ("tanker", "container ship"),
}



@dataclasses.dataclass
class Entity:
  kind: str              # "area" | "building" | "ship" | "lake"
  cell: tuple[int, int]
  box: tuple[int, int, int, int]    # original pixels (the referent's box)
  attrs: dict[str, Any]

  @property
  def where(self) -> str:
    return f"in the {POSITIONS[self.cell[0]][self.cell[1]]} part of the image"


@dataclasses.dataclass
class Layout:
  size: int
  scene: str
  season: str
  entities: list[Entity]

  @property
  def num_water(self) -> int:
    return sum(e.kind in ("lake", "ship") for e in self.entities)


def _cell_bounds(size: int, cell: tuple[int, int]) -> tuple[int, int, int, int]:
  c = size // 3
  r, k = cell
  return k * c, r * c, (size if k == 2 else (k + 1) * c), (size if r == 2 else (r + 1) * c)


def _place(rng, bounds, w: int, h: int, margin: int = 40) -> tuple[int, int]:
  x0, y0, x1, y1 = bounds
  return (int(rng.integers(x0 + margin, max(x0 + margin + 1, x1 - margin - w))),
          int(rng.integers(y0 + margin, max(y0 + margin + 1, y1 - margin - h))))


def _area_objects(rng, box, obj: str, n: int, arrangement: str) -> list[tuple[int, int]]:
  """Centres of `n` objects inside the paved area `box`, in a row or scattered."""
  x0, y0, x1, y1 = box
  ow, oh = R.OBJECT_SIZE[obj]
  pad = 12
  if arrangement == "row":
    gap = int(rng.integers(14, 26))
    span = n * ow + (n - 1) * gap
    sx = int(rng.integers(x0 + pad, max(x0 + pad + 1, x1 - pad - span)))
    cy = int(rng.integers(y0 + pad + oh, y1 - pad - oh))
    return [(sx + i * (ow + gap) + ow // 2, cy) for i in range(n)]
  min_d = max(ow, oh) + 12
  for _ in range(1000):
    pts = [(int(rng.integers(x0 + pad + ow // 2 + 1, x1 - pad - ow // 2 - 1)),
            int(rng.integers(y0 + pad + oh // 2 + 1, y1 - pad - oh // 2 - 1))) for _ in range(n)]
    ok = all((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 >= min_d ** 2
             for i, a in enumerate(pts) for b in pts[i + 1:])
    ys = [p[1] for p in pts]
    if ok and (n < 3 or max(ys) - min(ys) >= 3 * oh):
      return pts
  raise RuntimeError("could not scatter objects in a paved area")  # cannot happen for the sizes used


def make_layout(rng: np.random.Generator, size: int) -> Layout:
  scene = SCENES[int(rng.integers(len(SCENES)))]
  season = SEASONS[int(rng.integers(len(SEASONS)))]
  cells = [(int(i) // 3, int(i) % 3) for i in rng.permutation(9)]
  n_area = int(rng.integers(2, 4))
  n_building = int(rng.integers(1, 3))
  n_ship = int(rng.integers(0, 3))
  n_water = int(rng.integers(max(1, n_ship), 4))
  n_lake = min(n_water - n_ship, 9 - n_area - n_building - n_ship)
  ents: list[Entity] = []
  for kind, n in (("area", n_area), ("building", n_building), ("ship", n_ship), ("lake", n_lake)):
    for _ in range(n):
      cell = cells.pop()
      bounds = _cell_bounds(size, cell)
      if kind == "area":
        w, h = int(rng.integers(220, 321)), int(rng.integers(170, 281))
        x, y = _place(rng, bounds, w, h)
        box = (x, y, x + w, y + h)
        area_kind = AREA_KINDS[int(rng.choice(4, p=[0.3, 0.25, 0.25, 0.2]))]
        attrs: dict[str, Any] = {"area": area_kind}
        if area_kind != "empty":
          choices = AREA_OBJECTS[area_kind]
          obj = choices[int(rng.integers(len(choices)))]
          n_obj = int(rng.integers(1, 5))
          arrangement = "row" if n_obj < 3 else ("row", "scattered")[int(rng.integers(2))]
          attrs.update(object=obj, count=n_obj, arrangement=arrangement,
                       centres=_area_objects(rng, box, obj, n_obj, arrangement))
      elif kind == "building":
        w, h = R.BUILDING
        x, y = _place(rng, bounds, w + 40, h + 8)
        box = (x, y, x + w, y + h)
        attrs = {"color": VOCAB["Object color / pattern"][int(rng.integers(5))],
                 "symbol": VOCAB["Object shape / structure"][int(rng.integers(4))],
                 "material": VOCAB["Object material / surface"][int(rng.integers(3))],
                 "neighbour": VOCAB["Object relative position / context"][int(rng.integers(3))]}
      elif kind == "ship":
        bw, bh = int(rng.integers(320, 421)), int(rng.integers(170, 241))
        bx, by = _place(rng, bounds, bw, bh)
        w, h = R.SHIP
        facing_right = bool(rng.integers(2))
        # hull + wake (90 px behind the stern) centred in the basin
        span_x0 = bx + (bw - (w + 90)) // 2 + int(rng.integers(-10, 11))
        x = span_x0 + 90 if facing_right else span_x0
        y = by + (bh - h) // 2 + int(rng.integers(-20, 21))
        box = (x, y, x + w, y + h)
        attrs = {"ship": VOCAB["Object category refinement"][int(rng.integers(2))],
                 "moving": bool(rng.integers(2)), "facing_right": facing_right,
                 "basin": (bx, by, bx + bw, by + bh)}
      else:
        x0, y0, x1, y1 = bounds
        w = int(rng.integers(220, max(221, x1 - x0 - 80)))
        h = int(rng.integers(180, max(181, y1 - y0 - 80)))
        x, y = _place(rng, bounds, w, h)
        box = (x, y, x + w, y + h)
        attrs = {}
      ents.append(Entity(kind, cell, box, attrs))
  return Layout(size, scene, season, ents)


def render(rng: np.random.Generator, lay: Layout) -> np.ndarray:
  """The uint8[size, size, 3] image of a layout."""
  img = R.terrain(rng, lay.size, lay.scene, lay.season)
  # plain ground around entities (snow would leave no room for mean-matched contrast: pavement instead)
  ground = np.asarray(R.SEASON_VEG[lay.season] if lay.season != "winter" else R.WINTER_APRON, np.float32)
  for e in lay.entities:
    if e.kind == "lake":
      R.water_body(img, rng, e.box)
    elif e.kind == "ship":
      R.water_body(img, rng, e.attrs["basin"])
  for e in lay.entities:
    if e.kind == "area":
      R.clearing(img, e.box, ground)
      R.draw_paved_area(img, rng, e.box)
      for cx, cy in e.attrs.get("centres", ()):
        R.draw_object(img, e.attrs["object"], cx, cy)
    elif e.kind == "building":
      x0, y0, x1, y1 = e.box
      R.clearing(img, (x0, y0, x1 + 40, y1 + 4), ground)
      R.draw_building(img, x0, y0, e.attrs["color"], e.attrs["symbol"], e.attrs["material"])
      if e.attrs["neighbour"] != "nothing":
        kind = e.attrs["neighbour"]
        R.draw_object(img, kind, x1 + 8 + R.OBJECT_SIZE[kind][0] // 2, (y0 + y1) // 2)
    elif e.kind == "ship":
      R.draw_ship(img, e.box[0], e.box[1], e.attrs["ship"], e.attrs["moving"], e.attrs["facing_right"])
  return R.finish(img, rng)
