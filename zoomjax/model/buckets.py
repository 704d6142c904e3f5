"""Static sizes: the one rounding rule for every variable dimension a jitted program sees.

XLA compiles a program per input shape, so token lengths, patch counts, batch rows, decode steps and
cache lengths are rounded up to a few allowed sizes before they reach a jit. The rule (`round_up`):
within each octave [2^k, 2^(k+1)) the sizes are `per_octave` evenly spaced multiples of
2^k / per_octave (per_octave = 4: 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, ...), so a padded row wastes
less than 1 / per_octave of its length (or a multiple of `multiple`, when that is coarser). Both are
powers of two, so `round_up` of an allowed size is itself.

The generator (`zoomjax.rollout.generate`) calls `round_up` directly; the data pipeline's `Buckets`
(`zoomjax.data.pipeline`) list the same sizes ahead of time with `ladder(lo, hi)`, so
`Buckets.pick(n, ladder(lo, hi))` is `min(round_up(n, lo), hi)`.
"""

from __future__ import annotations


def round_up(n: int, minimum: int = 1, per_octave: int = 4, multiple: int = 1) -> int:
  """The allowed size for `n` items: at least `minimum`, on the `per_octave` grid, a multiple of `multiple`."""
  for name, x in (("per_octave", per_octave), ("multiple", multiple)):
    if x < 1 or x & (x - 1):
      raise ValueError(f"{name} must be a power of two, got {x}")
  n = max(int(n), int(minimum), 1)
  step = max((1 << (n.bit_length() - 1)) // per_octave, multiple, 1)   # powers of two: the larger grid wins
  return -(-n // step) * step


def ladder(lo: int, hi: int, per_octave: int = 4, multiple: int = 8) -> tuple[int, ...]:
  """Every size `round_up(n, lo, per_octave, multiple)` gives for n in [lo, hi], the last capped at `hi`."""
  if not 1 <= lo <= hi:
    raise ValueError(f"need 1 <= lo <= hi, got lo={lo}, hi={hi}")
  out: list[int] = []
  n = lo
  while True:
    v = round_up(n, lo, per_octave, multiple)
    if v >= hi:
      out.append(int(hi))
      return tuple(out)
    out.append(v)
    n = v + 1
