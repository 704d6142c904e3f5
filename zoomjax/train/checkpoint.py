"""Orbax checkpoints of the whole run: train state, data-iterator state, RNG, and metadata.

Layout under `checkpoint.dir`:

    <step>/state/   the `TrainState` pytree (params, opt_state, step, rng, skipped), sharded arrays
    <step>/data/    the data iterator's state (JSON), so the next batch after a restore is the same
    <step>/meta/    JSON: step, wall time, mesh shape, process count

Orbax writes each step into a temporary directory and renames it into place only once every item
(and, with async saves, the background write) is complete; `latest_step()` lists finalized steps only,
so a checkpoint interrupted half way — a killed process, a full disk — is never loaded. `restore`
reads onto whatever shardings the caller's abstract state names, so a run saved on one mesh restores
onto another.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

_ITEMS = ("state", "data", "meta")


class Checkpointer:
  """Saves and restores run checkpoints (a thin layer over `ocp.CheckpointManager`).

  Args:
    directory: checkpoint root (created).
    keep: finalized checkpoints kept; older ones are deleted after a successful save.
    async_save: write arrays in the background (call `wait()` before exiting).
  """

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = _abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

  def latest_step(self) -> int | None:
    """The newest finalized step (temporary / partial directories are not steps)."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, data_state: Any = None, meta: dict | None = None) -> bool:
    """Starts saving `step` (returns at once with async saves); True if a save was started."""
    meta = dict(meta or {}, step=int(step), process_count=jax.process_count())
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(encode_data_state(data_state)),
                              meta=ocp.args.JsonSave(meta))
    return self._mngr.save(int(step), args=args, force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, Any, dict]:
    """Restores (state, data_state, meta) at `step` (default: latest) onto `abstract_state`'s shardings.

    `abstract_state` is the state pytree of `jax.ShapeDtypeStruct`s carrying the target shardings.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no finalized checkpoint in {self.directory}")
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out["state"], decode_data_state(out["data"]), dict(out["meta"] or {})

  def wait(self) -> None:
    """Blocks until background writes are finalized."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _abspath(path: str) -> str:
  """Absolute local path; URLs (`gs://…`) pass through (orbax reads and writes them via epath)."""
  return path if "://" in path else os.path.abspath(path)


def encode_data_state(data_state: Any) -> dict:
  """JSON-able form of an iterator state (a dict, bytes or None)."""
  if data_state is None:
    return {"kind": "none"}
  if isinstance(data_state, (bytes, bytearray)):
    return {"kind": "bytes", "value": bytes(data_state).decode("latin-1")}
  json.dumps(data_state)  # raises TypeError early for non-JSON states
  return {"kind": "json", "value": data_state}


def decode_data_state(obj: Any) -> Any:
  if not obj or obj.get("kind") == "none":
    return None
  if obj["kind"] == "bytes":
    return obj["value"].encode("latin-1")
  return obj["value"]


def export_params(path: str, params: Any, extra: dict | None = None) -> str:
  """Writes a params-only orbax checkpoint (for inference) to `path`, plus `extra` as `info.json`."""
  path = _abspath(path)
  if jax.process_index() == 0 and epath.Path(path).exists():
    epath.Path(path).rmtree()
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path, params)
  ckptr.wait_until_finished()
  ckptr.close()
  if extra is not None and jax.process_index() == 0:
    (epath.Path(path) / "info.json").write_text(json.dumps(extra, indent=1, default=str))
  logging.info("exported params to %s", path)
  return path


def load_params(path: str, abstract_params: Any | None = None) -> Any:
  """Reads a params checkpoint written by `export_params` (onto `abstract_params`' shardings if given)."""
  ckptr = ocp.StandardCheckpointer()
  try:
    if abstract_params is None:
      return ckptr.restore(_abspath(path))
    return ckptr.restore(_abspath(path), abstract_params)
  finally:
    ckptr.close()
