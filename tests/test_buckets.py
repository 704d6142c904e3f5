"""The one rounding rule for static sizes (zoomjax.model.buckets) and the pipeline's buckets built on it."""

import pytest

from zoomjax.data.pipeline import Buckets, ExampleTooLongError
from zoomjax.model.buckets import ladder, round_up


def test_round_up_four_sizes_per_octave():
  assert [round_up(n, 16) for n in (1, 16, 17, 20, 21, 33, 100, 129)] == [16, 16, 20, 20, 24, 40, 112, 160]
  assert [round_up(n) for n in range(1, 10)] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
  assert [round_up(n, per_octave=1) for n in (1, 3, 5, 9, 200)] == [1, 4, 8, 16, 256]
  assert [round_up(n, 256, 2, 64) for n in (1, 300, 385, 513, 1000)] == [256, 384, 512, 768, 1024]
  assert round_up(17, multiple=8) == 24 and round_up(0) == 1


def test_padding_waste_is_bounded():
  for per_octave in (1, 2, 4, 8):
    for n in range(1, 5000):
      v = round_up(n, per_octave=per_octave)
      assert n <= v < n * (1 + 1 / per_octave) + 1, (n, per_octave, v)


def test_ladder_lists_exactly_the_sizes_of_the_rule():
  assert ladder(128, 512) == (128, 160, 192, 224, 256, 320, 384, 448, 512)
  assert ladder(1, 256, 1, 1) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
  assert ladder(100, 130) == (112, 128, 130)
  for lo, hi, per, mult in [(128, 8192, 4, 8), (256, 1 << 16, 2, 64), (1, 256, 1, 1), (5, 999, 8, 4)]:
    sizes = ladder(lo, hi, per, mult)
    assert list(sizes) == sorted(set(sizes)) and sizes[-1] == hi
    assert all(round_up(v, lo, per, mult) == v for v in sizes[:-1])   # an allowed size maps to itself
    for n in range(1, hi + 1):
      assert Buckets.pick(n, sizes, "n") == min(round_up(n, lo, per, mult), hi), (lo, hi, n)
    with pytest.raises(ExampleTooLongError, match="exceeds the largest bucket"):
      Buckets.pick(hi + 1, sizes, "n")


def test_bad_arguments():
  with pytest.raises(ValueError, match="power of two"):
    round_up(10, per_octave=3)
  with pytest.raises(ValueError, match="power of two"):
    round_up(10, multiple=6)
  with pytest.raises(ValueError, match="lo <= hi"):
    ladder(10, 5)
