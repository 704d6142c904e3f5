"""Qwen2-VL / Qwen2.5-VL image preprocessing in numpy + PIL, equal to transformers' `Qwen2VLImageProcessorPil`.

The reference pipeline (transformers 5.23, `models/qwen2_vl/image_processing_pil_qwen2_vl.py` on the PIL
backend) for one image:

  1. convert to RGB: transparency is composited onto white, other modes go through `Image.convert("RGB")`;
  2. `smart_resize` to (H, W), both multiples of patch_size * merge_size (28), H*W in [min_pixels, max_pixels];
  3. PIL bicubic resize of the uint8 image (always, even to the same size);
  4. rescale by 1/255 (in float64, then cast to float32) and normalise with the OpenAI CLIP mean/std (float32);
  5. patchify: rows ordered by (merged-block row, merged-block col, row in block, col in block) and each row
     flattened in (channel, temporal, patch row, patch col) order, the frame repeated temporal_patch_size
     times: float32[(H/14)*(W/14), 3*2*14*14 = 1176], with `image_grid_thw = (1, H/14, W/14)`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
  """The target (height, width) of Qwen2-VL preprocessing (identical to transformers' `smart_resize`).

  Both sides become multiples of `factor`, the area lies in [min_pixels, max_pixels] and the aspect ratio is
  kept as closely as possible. Raises ValueError for an empty image or an aspect ratio above 200.
  """
  if height <= 0 or width <= 0:
    raise ValueError(f"image must have a positive size, got height={height}, width={width}")
  ratio = max(height, width) / min(height, width)
  if ratio > MAX_ASPECT_RATIO:
    raise ValueError(f"absolute aspect ratio must be at most {MAX_ASPECT_RATIO}, got {ratio:.1f} "
                     f"(height={height}, width={width})")
  h_bar = round(height / factor) * factor
  w_bar = round(width / factor) * factor
  if h_bar * w_bar > max_pixels:
    beta = math.sqrt((height * width) / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


def _to_rgb(image) -> Image.Image:
  """A PIL RGB image from a PIL image of any mode or a uint8 array HxW / HxWx{1,3,4} (as the reference).

  Transparency (an alpha band or a `transparency` entry, e.g. palette images) is composited onto white.
  """
  if isinstance(image, Image.Image):
    if "A" in image.getbands() or image.info.get("transparency") is not None:
      rgba = image.convert("RGBA")
      white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise TypeError(f"array images must be uint8 HxWxC, got dtype {image.dtype}")
    if image.ndim == 2:
      image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
      raise ValueError(f"array images must be HxW or HxWxC with C in (1, 3, 4), got shape {image.shape}")
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    elif image.shape[-1] == 4:
      alpha = image[..., 3:4] / 255
      image = np.round(alpha * image[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(image))
  raise TypeError(f"expected a PIL image or a numpy uint8 array, got {type(image).__name__}")


def patchify(image: np.ndarray, patch_size: int = 14, temporal_patch_size: int = 2,
             merge_size: int = 2) -> np.ndarray:
  """float32[C, H, W] -> float32[(H/p)*(W/p), C*tp*p*p] in the processor's element order."""
  c, h, w = image.shape
  gh, gw = h // patch_size, w // patch_size
  x = image.reshape(c, gh // merge_size, merge_size, patch_size, gw // merge_size, merge_size, patch_size)
  x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, p, p)
  x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], temporal_patch_size, *x.shape[5:]))
  return x.reshape(gh * gw, c * temporal_patch_size * patch_size * patch_size)


def preprocess_image(image, min_pixels: int = 3136, max_pixels: int = 12845056, patch_size: int = 14,
                     temporal_patch_size: int = 2, merge_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """One image -> (pixel_values float32[h*w, 3*tp*p*p], image_grid_thw int64[3] = (1, h, w)).

  `image`: a PIL image of any mode or a uint8 array HxW / HxWx{1,3,4}. h, w are the grid sides in patches
  (resized side / patch_size). Equal to `Qwen2VLImageProcessorPil(min_pixels=..., max_pixels=...)` output.
  """
  rgb = _to_rgb(image)
  width, height = rgb.size
  factor = patch_size * merge_size
  new_h, new_w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
  resized = np.asarray(rgb.resize((new_w, new_h), resample=Image.BICUBIC))
  x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
  x = (x - np.asarray(OPENAI_CLIP_MEAN, np.float32)) / np.asarray(OPENAI_CLIP_STD, np.float32)
  x = np.ascontiguousarray(x.transpose(2, 0, 1))
  pixel_values = patchify(x, patch_size, temporal_patch_size, merge_size)
  grid_thw = np.array([1, new_h // patch_size, new_w // patch_size], dtype=np.int64)
  return pixel_values, grid_thw


def num_image_tokens(grid_thw, merge_size: int = 2):
  """Merged (language-model) tokens of an image: t*h*w // merge_size**2. int[3] -> int; int[I, 3] -> int64[I]."""
  g = np.asarray(grid_thw, dtype=np.int64)
  n = g[..., 0] * g[..., 1] * g[..., 2] // (merge_size * merge_size)
  return int(n) if n.ndim == 0 else n
