"""Figures of a run: the zoom picture of one answered question and the learning curves.

    render_result(view, boxes_global, crops, answer) -> PIL image   # what `zoomjax.infer --out` writes
    zoom_sheet(panels, path)          # several questions, one row each, with the question and the GT box
    zoom_sheet_image(panels)          # the same as a PIL image (what TensorBoard shows during GRPO)
    learning_curves(rows, path)       # metrics.jsonl rows of every stage -> one PNG (matplotlib, Agg)
"""

from __future__ import annotations

from typing import Any, Sequence

from PIL import Image, ImageDraw

_COLORS = ((255, 40, 40), (40, 200, 255), (255, 200, 0), (120, 255, 80))
_GT = (0, 200, 0)


def render_result(view: Image.Image, boxes_global: Sequence[Sequence[float]], crops: Sequence[Image.Image],
                  answer: str | None = None) -> Image.Image:
  """The global view with each requested box drawn, the crops to its right (same height band)."""
  view = view.convert("RGB")
  pad = 8
  crops = [c.convert("RGB") for c in crops]
  h = max([view.height] + [c.height for c in crops])
  w = view.width + sum(c.width + pad for c in crops)
  canvas = Image.new("RGB", (w, h + 24), (255, 255, 255))
  canvas.paste(view, (0, 0))
  draw = ImageDraw.Draw(canvas)
  lw = max(2, round(max(view.size) / 256))
  for i, box in enumerate(boxes_global):
    if box is None:
      continue
    x1, y1, x2, y2 = (float(v) for v in box)
    draw.rectangle([x1, y1, x2, y2], outline=_COLORS[i % len(_COLORS)], width=lw)
  x = view.width + pad
  for i, c in enumerate(crops):
    canvas.paste(c, (x, 0))
    draw.rectangle([x, 0, x + c.width - 1, c.height - 1], outline=_COLORS[i % len(_COLORS)], width=lw)
    x += c.width + pad
  text = f"answer: {answer}" if answer is not None else "no answer"
  if not crops:
    text += "   (no crop requested)"
  draw.text((4, h + 6), text, fill=(0, 0, 0))
  return canvas


def zoom_sheet(panels: Sequence[dict[str, Any]], path: str) -> str:
  """`zoom_sheet_image(panels)` saved as a PNG at `path`; returns `path`."""
  zoom_sheet_image(panels).save(path, format="PNG")
  return path


def zoom_sheet_image(panels: Sequence[dict[str, Any]]) -> Image.Image:
  """Stacks `render_result` pictures, one per question, each under its question and above its ground
  truth, with the GT box (green) drawn on the view. A panel holds `view`, `boxes_global` (the model's
  requests, view pixels), `crops`, `answer`, `question`, `truth` and optionally `gt_box_global`
  (`zoomjax.eval.answers.zoom_panels` makes them)."""
  rows = []
  for p in panels:
    pic = render_result(p["view"], p["boxes_global"], p["crops"], p.get("answer"))
    draw = ImageDraw.Draw(pic)
    if p.get("gt_box_global") is not None:
      draw.rectangle([float(v) for v in p["gt_box_global"]], outline=_GT, width=2)
    head = Image.new("RGB", (pic.width, 18), (255, 255, 255))
    ImageDraw.Draw(head).text((4, 3), f"Q: {p['question']}   (truth: {p['truth']})", fill=(0, 0, 0))
    rows.append((head, pic))
  w = max([max(h.width, pic.width) for h, pic in rows] + [1])
  sheet = Image.new("RGB", (w, sum(h.height + pic.height + 6 for h, pic in rows) or 1), (255, 255, 255))
  y = 0
  for head, pic in rows:
    sheet.paste(head, (0, y))
    sheet.paste(pic, (0, y + head.height))
    y += head.height + pic.height + 6
  return sheet


# The panels of `learning_curves`: (title, split, keys); a key missing from every row is left out.
_CURVES = (("training loss", "train", ("loss",)),
           ("held-out token loss (SFT)", "eval", ("loss",)),
           ("GRPO reward terms (train rollouts)", "train", ("reward_total", "reward_iou", "reward_region_guided",
                                                        "reward_answer", "reward_format")),
           ("held-out answers", "eval", ("accuracy", "apo_iou", "accuracy_global", "accuracy_region",
                                         "accuracy_object", "crop_rate")))


def learning_curves(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str | None:
  """One PNG of the run's curves from `metrics.jsonl` rows: the stages of a chain one after the other on a
  shared step axis (each stage's steps offset by the steps of the stages before it, a dotted line where
  a stage begins). Returns the path, or None when no row has anything to plot."""
  import matplotlib
  matplotlib.use("Agg", force=True)
  from matplotlib import pyplot as plt

  order: list[str] = []
  for r in rows:
    s = r.get("stage", "")
    if s not in order:
      order.append(s)
  length = {s: max([r.get("step", 0) for r in rows if r.get("stage", "") == s] + [0]) for s in order}
  offset, acc = {}, 0
  for s in order:
    offset[s], acc = acc, acc + length[s]
  panels = []
  for name, split, keys in _CURVES:
    series = {}
    for k in keys:
      pts = [(offset[r.get("stage", "")] + r.get("step", 0), r[k]) for r in rows
             if r.get("split", "train") == split and isinstance(r.get(k), (int, float))]
      if pts:
        series[k] = pts
    if series:
      panels.append((name, series))
  if not panels:
    return None
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
  for ax, (name, series) in zip(axes[0], panels):
    for k, pts in series.items():
      xs, ys = zip(*sorted(pts))
      ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, markersize=3, label=k)
    for s in order[1:]:
      ax.axvline(offset[s], color="grey", linestyle=":", linewidth=1)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step" + (" (" + " then ".join(s or "train" for s in order) + ")" if len(order) > 1 else ""),
                  fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1 or name == "held-out answers":
      ax.legend(fontsize=6)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
