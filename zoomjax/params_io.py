"""Params-only orbax checkpoints: the inference export of training runs and of `zoomjax.convert to-orbax`.

    export_params(path, params, extra)    # the params tree + `info.json` (model config, layout, step)
    params = load_params(path, abstract_params=None)

`path` may be local or a URL (`gs://...`, via etils.epath); multi-process runs write their shards and
process 0 writes `info.json`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

INFO = "info.json"


def abspath(path: str) -> str:
  """Absolute local path; URLs (`gs://…`) pass through (orbax reads and writes them via epath)."""
  return path if "://" in path else os.path.abspath(path)


def export_params(path: str, params: Any, extra: dict | None = None) -> str:
  """Writes a params-only orbax checkpoint (for inference) to `path`, plus `extra` as `info.json`."""
  path = abspath(path)
  if jax.process_index() == 0 and epath.Path(path).exists():
    epath.Path(path).rmtree()
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path, params)
  ckptr.wait_until_finished()
  ckptr.close()
  if extra is not None and jax.process_index() == 0:
    (epath.Path(path) / INFO).write_text(json.dumps(extra, indent=1, default=str))
  logging.info("exported params to %s", path)
  return path


def load_params(path: str, abstract_params: Any | None = None) -> Any:
  """Reads a params checkpoint written by `export_params` (onto `abstract_params`' shardings if given)."""
  ckptr = ocp.StandardCheckpointer()
  try:
    if abstract_params is None:
      return ckptr.restore(abspath(path))
    return ckptr.restore(abspath(path), abstract_params)
  finally:
    ckptr.close()
