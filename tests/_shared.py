"""Where the shared data lives: the real LRS-GRO annotations and the benchmark format samples.

Looked up in `$ZOOMJAX_SHARED`, then `shared/` beside the checkout (where CI puts it), then inside it.
"""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def find_shared(*parts: str) -> pathlib.Path | None:
  """`shared/<parts>` if it exists anywhere we look, else None."""
  for base in (os.environ.get("ZOOMJAX_SHARED"), REPO.parent / "shared", REPO / "shared"):
    if base and (path := pathlib.Path(base).joinpath(*parts)).exists():
      return path
  return None


def shared_path(*parts: str) -> pathlib.Path:
  """`shared/<parts>`; skips the test when it is absent (conftest makes that a failure under CI)."""
  path = find_shared(*parts)
  if path is None:
    pytest.skip(f"shared/{'/'.join(parts)} is not next to this checkout (set ZOOMJAX_SHARED)")
  return path
