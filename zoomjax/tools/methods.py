"""The classical image methods behind the downstream tools (numpy / scipy / scikit-image, host only).

Images are float64[h, w, 3] in [0, 1] unless said otherwise.

* Haze / thin-cloud removal: the dark channel prior, K. He, J. Sun, X. Tang, "Single Image Haze Removal
  Using Dark Channel Prior", CVPR 2009, with the transmission refined by the guided filter, K. He, J. Sun,
  X. Tang, "Guided Image Filtering", ECCV 2010 (`dehaze`, `dark_channel`, `guided_filter`).
* Noise level: J. Immerkær, "Fast Noise Variance Estimation", CVIU 64(2), 1996 (`noise_sigma`).
* Denoising: scikit-image's non-local means (Buades, Coll, Morel 2005) and total-variation
  (Chambolle 2004) denoisers (`denoise`).
* Foreground segmentation: CIELAB colour distance from the box's background colour (the median of its
  border ring) thresholded by Otsu's method (Otsu 1979), or Felzenszwalb-Huttenlocher graph segments
  (IJCV 2004) kept when their mean colour differs from the background (`segment`).
* Object removal: biharmonic inpainting (scikit-image `inpaint_biharmonic`, Damelin & Hoang 2018) of the
  box from a ring of its surroundings (`inpaint_remove`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage import color as skcolor
from skimage import filters as skfilters
from skimage import restoration, segmentation
from skimage.transform import resize as skresize

# ---------------------------------------------------------------------------------------------------------
# Dark channel prior dehazing (He et al. 2009) with guided-filter refinement (He et al. 2010).


def dark_channel(img: np.ndarray, patch: int = 15) -> np.ndarray:
  """`min over a patch x patch window of min over channels` -> float[h, w] (He et al. 2009, eq. 5)."""
  return ndimage.minimum_filter(np.asarray(img).min(axis=2), size=int(patch), mode="nearest")


def atmospheric_light(img: np.ndarray, dark: np.ndarray, top: float = 0.001) -> np.ndarray:
  """A float[3]: among the brightest `top` fraction of the dark channel, the pixel of highest intensity."""
  flat = dark.ravel()
  n = max(1, int(math.ceil(flat.size * top)))
  idx = np.argpartition(flat, flat.size - n)[flat.size - n:]
  cand = img.reshape(-1, 3)[idx]
  return cand[np.argmax(cand.sum(axis=1))]


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
  """Mean over a (2r+1)^2 window (edges reflected)."""
  return ndimage.uniform_filter(x, size=2 * int(radius) + 1, mode="reflect")


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
  """He et al. 2010, grey guide: q = mean(a) * I + mean(b), a = cov(I, p) / (var(I) + eps) -> float[h, w]."""
  mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
  cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
  var_i = box_mean(guide * guide, radius) - mean_i * mean_i
  a = cov_ip / (var_i + eps)
  b = mean_p - a * mean_i
  return box_mean(a, radius) * guide + box_mean(b, radius)


def estimate_airlight(*images: np.ndarray, patch: int = 15) -> np.ndarray:
  """The atmospheric light A float[3] over several views of a scene (e.g. the box and the global view): each
  gives He et al.'s estimate; the brightest (largest min channel, i.e. the densest haze seen) wins, as
  I = J t + A (1 - t) <= A wherever J <= A."""
  cands = [atmospheric_light(im, dark_channel(im, patch)) for im in images]
  return max(cands, key=lambda a: (float(a.min()), float(a.sum())))


def dehaze(img: np.ndarray, *, airlight: np.ndarray | None = None, patch: int = 15, omega: float = 0.95,
           t0: float = 0.1, radius: int | None = None, eps: float = 1e-3) -> tuple[np.ndarray, dict]:
  """Recovers J from I = J t + A (1 - t) by the dark channel prior -> (J float[h, w, 3], details).

  Args:
    img: the hazy / thinly clouded region.
    airlight: A float[3] (default: `estimate_airlight(img)`).
    patch: dark-channel window (15 in the paper).
    omega: haze kept for depth perception (0.95; 1 removes all).
    t0: lower bound of the transmission (0.1).
    radius / eps: guided filter (default radius = patch, eps 1e-3) refining t along edges of the guide.

  Returns: J and `{"airlight": A float[3], "transmission_mean": mean t}`.
  """
  img = np.asarray(img, np.float64)
  a = estimate_airlight(img, patch=patch) if airlight is None else np.asarray(airlight, np.float64)
  a = np.maximum(a, 1e-3)
  t = 1.0 - omega * dark_channel(img / a, patch)
  gray = img @ np.array([0.299, 0.587, 0.114])
  t = guided_filter(gray, t, radius if radius is not None else patch, eps)
  t = np.clip(t, t0, 1.0)
  j = (img - a) / t[..., None] + a
  return np.clip(j, 0.0, 1.0), {"airlight": a.tolist(), "transmission_mean": float(t.mean())}


# ---------------------------------------------------------------------------------------------------------
# Denoising.

_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_sigma(img: np.ndarray) -> float:
  """Gaussian noise std of an image (mean over channels), Immerkær 1996: sqrt(pi/2) / (6 (W-2)(H-2)) *
  sum |I * N| with N the difference of two Laplacians. Needs h, w >= 3."""
  img = np.asarray(img, np.float64)
  if img.ndim == 2:
    img = img[..., None]
  h, w = img.shape[:2]
  sig = []
  for c in range(img.shape[2]):
    conv = ndimage.convolve(img[..., c], _IMMERKAER, mode="reflect")[1:-1, 1:-1]
    sig.append(math.sqrt(math.pi / 2.0) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))
  return float(np.mean(sig))


DENOISE_METHODS = ("nl_means", "tv")


def denoise(img: np.ndarray, method: str = "nl_means", sigma: float | None = None) -> tuple[np.ndarray, float]:
  """Denoises with scikit-image -> (float[h, w, 3], the noise std used).

  nl_means: `restoration.denoise_nl_means` (fast mode, 5x5 patches, 13x13 search, h = 0.8 sigma);
  tv: `restoration.denoise_tv_chambolle` with weight 1.2 sigma. `sigma` (in [0, 1] units) defaults to
  the Immerkær estimate.
  """
  img = np.asarray(img, np.float64)
  s = noise_sigma(img) if sigma is None else float(sigma)
  if s <= 0:
    return img.copy(), 0.0
  if method == "nl_means":
    out = restoration.denoise_nl_means(img, patch_size=5, patch_distance=6, h=0.8 * s, sigma=s, fast_mode=True,
                                       channel_axis=-1)
  elif method == "tv":
    out = restoration.denoise_tv_chambolle(img, weight=1.2 * s, channel_axis=-1)
  else:
    raise ValueError(f"denoising method must be one of {DENOISE_METHODS}, got {method!r}")
  return np.clip(out, 0.0, 1.0), s


# ---------------------------------------------------------------------------------------------------------
# Foreground segmentation.

SEGMENT_METHODS = ("otsu", "felzenszwalb")


def border_ring(h: int, w: int) -> np.ndarray:
  """bool[h, w]: the outer ring of the box, about 2% of its size thick (at least 1 px)."""
  k = max(1, int(round(0.02 * max(h, w))))
  ring = np.zeros((h, w), bool)
  ring[:k], ring[-k:], ring[:, :k], ring[:, -k:] = True, True, True, True
  return ring


def background_distance(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """CIELAB distance (delta E 1976) of every pixel from the box's background colour -> (float[h, w], lab)."""
  lab = skcolor.rgb2lab(np.asarray(img, np.float64))
  bg = np.median(lab[border_ring(*lab.shape[:2])], axis=0)
  return np.sqrt(((lab - bg) ** 2).sum(axis=2)), lab


def clean_mask(mask: np.ndarray, min_object: int) -> np.ndarray:
  """Opening with a 3x3 square, holes filled, components of fewer than `min_object` pixels dropped."""
  m = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool)) if min(mask.shape) >= 3 else mask
  m = ndimage.binary_fill_holes(m)
  lab, n = ndimage.label(m)
  if n:
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_object
    keep[0] = False
    m = keep[lab]
  return m


def segment(img: np.ndarray, method: str = "otsu", min_delta_e: float = 12.0) -> tuple[np.ndarray, float]:
  """Foreground objects of a box (what differs from its background) -> (bool[h, w], threshold).

  otsu: delta E from the background colour, thresholded at max(Otsu's threshold, `min_delta_e`) (so a
    uniform box has no foreground).
  felzenszwalb: `segmentation.felzenszwalb` segments (scale ~ box size, sigma 0.8) whose mean delta E
    exceeds that threshold.
  Then `clean_mask` (components under 0.05% of the box, at least 9 px, dropped).
  """
  img = np.asarray(img, np.float64)
  h, w = img.shape[:2]
  dist, _ = background_distance(img)
  thr = float(min_delta_e)
  if dist.max() - dist.min() > 1e-9:
    thr = max(thr, float(skfilters.threshold_otsu(dist)))
  if method == "otsu":
    mask = dist > thr
  elif method == "felzenszwalb":
    labels = segmentation.felzenszwalb(img, scale=max(50.0, 0.5 * max(h, w)), sigma=0.8,
                                       min_size=max(9, (h * w) // 4000), channel_axis=-1)
    mean = ndimage.mean(dist, labels=labels, index=np.arange(labels.max() + 1))
    mask = np.asarray(mean)[labels] > thr
  else:
    raise ValueError(f"segmentation method must be one of {SEGMENT_METHODS}, got {method!r}")
  return clean_mask(mask, max(9, (h * w) // 2000)), thr


def object_boxes(mask: np.ndarray, offset=(0, 0)) -> list[list[int]]:
  """`[x1, y1, x2, y2]` (exclusive ends) of each connected component, shifted by `offset = (x0, y0)`."""
  lab, _ = ndimage.label(mask)
  out = []
  for sl in ndimage.find_objects(lab):
    if sl is not None:
      out.append([sl[1].start + offset[0], sl[0].start + offset[1], sl[1].stop + offset[0], sl[0].stop + offset[1]])
  return out


# ---------------------------------------------------------------------------------------------------------
# Object removal.


def masked_smooth(img: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian smoothing of the `known` (bool[h, w]) pixels only (normalised convolution) -> float[h, w, 3]."""
  k = known.astype(np.float64)
  num = ndimage.gaussian_filter(img * k[..., None], (sigma, sigma, 0), mode="nearest")
  den = ndimage.gaussian_filter(k, sigma, mode="nearest")
  return num / np.maximum(den, 1e-6)[..., None]


def inpaint_remove(context: np.ndarray, hole: np.ndarray, work_long_side: int = 160,
                   smooth_sigma: float = 2.0) -> np.ndarray:
  """Fills `hole` (bool[h, w]) of `context` (float[h, w, 3]) by biharmonic inpainting -> float[h, w, 3].

  The biharmonic fill continues the values *and slopes* at the hole's edge, so pixel noise there would
  be extrapolated into waves: the known pixels are first smoothed (Gaussian, `smooth_sigma` px, known
  pixels only). The fill is smooth, so a context whose long side exceeds `work_long_side` is inpainted at
  that size (area-averaged down, bilinear up). Only the hole takes the fill; known pixels stay exact.
  """
  context = np.asarray(context, np.float64)
  h, w = hole.shape
  if hole.all():
    raise ValueError("the box leaves no surrounding pixels to fill it from")
  scale = min(1.0, work_long_side / max(h, w))
  src, src_hole = context, hole
  if scale < 1.0:
    sh, sw = max(2, round(h * scale)), max(2, round(w * scale))
    src = skresize(context, (sh, sw, 3), order=1, anti_aliasing=True)
    src_hole = skresize(hole.astype(np.float64), (sh, sw), order=1, anti_aliasing=True) > 0.01
    if src_hole.all():
      raise ValueError("the box leaves too few surrounding pixels to fill it from")
  src = masked_smooth(src, ~src_hole, smooth_sigma)
  filled = restoration.inpaint_biharmonic(np.where(src_hole[..., None], 0.0, src), src_hole, channel_axis=-1)
  if scale < 1.0:
    filled = np.stack([ndimage.zoom(filled[..., c], (h / filled.shape[0], w / filled.shape[1]), order=1,
                                    mode="nearest", grid_mode=True) for c in range(3)], axis=-1)
    filled = filled[:h, :w]
  return np.clip(np.where(hole[..., None], filled, context), 0.0, 1.0)
