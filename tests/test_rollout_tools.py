"""Tool registry: crop_and_zoom maps the global box to the original, applies the 512-window rule, and bad
calls come back as error results; a downstream tool plugs in through the same interface."""
import numpy as np
import pytest
from PIL import Image

from zoomjax.protocol import templates as P
from zoomjax.rollout.tools import (CropAndZoom, SceneImage, Tool, ToolResult, bbox_argument,
                                   default_registry)


def coord_image(w, h):
  """R = x mod 256, G = y mod 256, B = 16 * (x // 256) + (y // 256): every pixel names its position."""
  x = np.arange(w)[None, :].repeat(h, 0)
  y = np.arange(h)[:, None].repeat(w, 1)
  return Image.fromarray(np.stack([x % 256, y % 256, 16 * (x // 256) + y // 256], -1).astype(np.uint8))


def test_crop_and_zoom_small_box_gets_512_window():
  orig = coord_image(2048, 1024)
  scene = SceneImage.from_original(orig)
  assert scene.view_size == (512, 256)
  out = default_registry().call("crop_and_zoom", scene, {"bbox_2d": [100, 50, 110, 60]})
  assert out.ok and out.image is not None
  assert out.info["box_original"] == [400, 200, 440, 240]
  # centre (420, 220): window x 164..676, y -36 -> shifted to 0..512
  assert out.info["window"] == [164, 0, 676, 512]
  np.testing.assert_array_equal(np.asarray(out.image), np.asarray(orig)[0:512, 164:676])


def test_crop_and_zoom_large_box_is_exact_then_downscaled():
  orig = coord_image(4096, 2048)
  scene = SceneImage.from_original(orig)                       # scale 8
  out = default_registry().call("crop_and_zoom", scene, {"bbox_2d": [256, 0, 384, 128]})
  assert out.info["window"] == [2048, 0, 3072, 1024]
  assert out.image.size == (512, 512)
  ref = orig.crop((2048, 0, 3072, 1024)).resize((512, 512), Image.BICUBIC)
  np.testing.assert_array_equal(np.asarray(out.image), np.asarray(ref))


def test_bad_calls_become_error_results():
  scene = SceneImage.from_original(coord_image(1024, 1024))
  reg = default_registry()
  for args in ({}, {"bbox_2d": [1, 2, 3]}, {"bbox_2d": [5, 5, 5, 9]}, {"bbox_2d": [900, 900, 990, 990]},
               {"bbox_2d": ["a", 1, 2, 3]}, [1, 2, 3, 4], "junk"):
    out = reg.call("crop_and_zoom", scene, args)
    assert not out.ok and out.image is None and out.text.startswith("Error:"), args
  out = reg.call("no_such_tool", scene, {})
  assert not out.ok and "unknown tool" in out.error
  assert bbox_argument(scene, {"bbox_2d": [30, 40, 10, -20]}) == [10, 0, 30, 40]


def test_schema_matches_protocol_and_downstream_tool_plugs_in():
  assert CropAndZoom().schema() == P.CROP_AND_ZOOM_SCHEMA

  class Caption(Tool):
    name = "caption"
    description = "Describe a region."
    parameters = {"type": "object", "properties": {"bbox_2d": {"type": "array"}}, "required": ["bbox_2d"]}

    def apply(self, image, arguments):
      return f"region {bbox_argument(image, arguments)} of a {image.original_size[0]} px image"

  class Invert(Tool):
    name = "invert"

    def apply(self, image, arguments):
      return Image.fromarray(255 - np.asarray(image.view))

  reg = default_registry()
  reg.register(Caption())
  reg.register(Invert())
  with pytest.raises(ValueError):
    reg.register(Caption())
  assert reg.names() == ["crop_and_zoom", "caption", "invert"]
  assert [s["function"]["name"] for s in reg.schemas()] == reg.names()
  scene = SceneImage.from_original(coord_image(1024, 512))
  assert reg.call("caption", scene, {"bbox_2d": [1, 2, 3, 4]}).text == "region [1.0, 2.0, 3.0, 4.0] of a 1024 px image"
  inv = reg.call("invert", scene, {})
  assert isinstance(inv, ToolResult) and inv.image.size == scene.view_size
  assert "caption" in P.system_text("multiturn", tools=reg.schemas())
