"""preprocess_image against transformers' Qwen2VLImageProcessorPil (the reference that builds without torchvision)."""
import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref_smart_resize

from zoomjax import processing

MIN_PX, MAX_PX = 3136, 12845056


def _reference(image, min_pixels=MIN_PX, max_pixels=MAX_PX):
  proc = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
  out = proc(images=[image], return_tensors="np")
  return np.asarray(out["pixel_values"]), np.asarray(out["image_grid_thw"])


def _random_image(h, w, mode="RGB", seed=0):
  # Uniform noise: bicubic overshoot and the uint8 clipping are exercised everywhere.
  arr = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
  if mode == "RGB":
    return Image.fromarray(arr[..., :3], "RGB")
  if mode == "RGBA":
    return Image.fromarray(arr, "RGBA")
  if mode == "L":
    return Image.fromarray(arr[..., 0], "L")
  if mode == "P":
    return Image.fromarray(arr[..., :3], "RGB").convert("P")
  raise ValueError(mode)


CASES = [
    (20, 30, "RGB"),       # tiny: min_pixels drives the size
    (56, 56, "RGB"),       # exactly min_pixels
    (27, 29, "RGB"),
    (224, 224, "RGB"),     # already a multiple of 28: resize to the same size
    (333, 517, "RGB"),
    (512, 341, "RGBA"),    # alpha composited onto white
    (480, 640, "L"),       # greyscale
    (300, 200, "P"),       # palette
    (30, 5000, "RGB"),     # extreme aspect ratio (wide)
    (4000, 21, "RGB"),     # extreme aspect ratio (tall)
    (1000, 1001, "RGB"),
    (3800, 3600, "RGB"),   # 13.7 MP > max_pixels: downscaled
]


@pytest.mark.parametrize("h,w,mode", CASES)
def test_matches_reference(h, w, mode):
  img = _random_image(h, w, mode, seed=h * 7 + w)
  pv, grid = processing.preprocess_image(img, min_pixels=MIN_PX, max_pixels=MAX_PX)
  ref_pv, ref_grid = _reference(img)
  np.testing.assert_array_equal(grid, ref_grid[0])
  assert pv.dtype == np.float32 and pv.shape == ref_pv.shape
  np.testing.assert_array_equal(pv, ref_pv)
  assert pv.shape == (grid[1] * grid[2], 1176)
  assert processing.num_image_tokens(grid) == grid[1] * grid[2] // 4
  assert MIN_PX <= grid[1] * grid[2] * 14 * 14 <= MAX_PX and grid[1] % 2 == 0 and grid[2] % 2 == 0


def test_custom_pixel_bounds_match_reference():
  img = _random_image(700, 900, seed=3)
  pv, grid = processing.preprocess_image(img, min_pixels=256 * 28 * 28, max_pixels=512 * 28 * 28)
  ref_pv, ref_grid = _reference(img, 256 * 28 * 28, 512 * 28 * 28)
  np.testing.assert_array_equal(grid, ref_grid[0])
  np.testing.assert_array_equal(pv, ref_pv)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_numpy_input_matches_reference(channels):
  rng = np.random.default_rng(channels or 0)
  shape = (97, 131) if channels is None else (97, 131, channels)
  arr = rng.integers(0, 256, shape, dtype=np.uint8)
  pv, grid = processing.preprocess_image(arr)
  ref_input = arr if channels in (3, 4) else np.repeat(arr.reshape(97, 131, 1), 3, axis=-1)
  ref_pv, ref_grid = _reference(ref_input)
  np.testing.assert_array_equal(grid, ref_grid[0])
  np.testing.assert_array_equal(pv, ref_pv)


def test_smart_resize_hand_values():
  assert processing.smart_resize(20, 30) == (56, 84)
  assert processing.smart_resize(224, 224) == (224, 224)
  assert processing.smart_resize(100, 100) == (112, 112)
  # 12845056 = 3584**2, but 10000 / (10000 / 3584) / 28 floors to 127 in floating point, as in the reference.
  assert processing.smart_resize(10000, 10000, max_pixels=MAX_PX) == (3556, 3556)
  for hw in [(20, 30), (30, 5000), (4000, 21), (10000, 10000), (12345, 6789), (1, 150)]:
    assert processing.smart_resize(*hw, max_pixels=MAX_PX) == ref_smart_resize(*hw, max_pixels=MAX_PX)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="aspect ratio"):
    processing.smart_resize(10, 2500)
  with pytest.raises(ValueError, match="positive size"):
    processing.smart_resize(0, 10)
  with pytest.raises(TypeError, match="uint8"):
    processing.preprocess_image(np.zeros((30, 30, 3), np.float32))
  with pytest.raises(ValueError, match="HxWxC"):
    processing.preprocess_image(np.zeros((30, 30, 2), np.uint8))
  with pytest.raises(TypeError, match="PIL image"):
    processing.preprocess_image("not an image")


def test_num_image_tokens_batch():
  np.testing.assert_array_equal(processing.num_image_tokens(np.array([[1, 4, 6], [1, 2, 2], [0, 0, 0]])),
                                [6, 1, 0])
