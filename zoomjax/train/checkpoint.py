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

A finalized checkpoint can still be unreadable later (a file truncated by a full disk, a copy cut
short, bit rot). `restore_latest` then reports the step, moves it aside to `<dir>.corrupt/<step>` (never
deletes it) and restores the newest step that reads back, so a restarted run resumes instead of
crashing on every restart. A checkpoint of another model (arrays of other shapes than the run's state)
is not "torn": it raises `CheckpointMismatch`, naming the first leaf that differs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from zoomjax import params_io
from zoomjax.params_io import export_params, load_params  # noqa: F401  (re-exported: the run's exports)

_ITEMS = ("state", "data", "meta")
CORRUPT_SUFFIX = ".corrupt"


class CheckpointMismatch(ValueError):
  """The checkpoint directory holds a run of another model or state layout (a user error: exit 2)."""


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
    # Handlers named up front so `item_metadata` can read a step's stored shapes before any array is read
    # (a foreign model's checkpoint is refused from its metadata, with no restore started).
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

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

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, Any, dict] | None:
    """(step, state, data_state, meta) of the newest checkpoint that reads back; None when there is none.

    A newer step that cannot be read (torn or corrupt files) is reported on stderr by step number, moved
    aside to `<directory>.corrupt/<step>` and skipped. Raises `CheckpointMismatch` when a checkpoint's
    arrays do not fit `abstract_state` (another model's run directory): that is not repaired by skipping.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        stored = self._mngr.item_metadata(step)["state"]
      except Exception as e:  # noqa: BLE001  any read failure of a finalized step means it is torn
        self._set_aside(step, e)
        continue
      self._check_fits(step, stored, abstract_state)
      try:
        state, data_state, meta = self.restore(abstract_state, step)
      except Exception as e:  # noqa: BLE001
        if "not compatible with the stored shape" in str(e):
          raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} does not fit this run's "
                                   f"model ({_first_line(e)}); {_MISMATCH_FIX}") from None
        self._set_aside(step, e)
        continue
      return step, state, data_state, meta
    return None

  def _check_fits(self, step: int, stored: Any, abstract_state: Any) -> None:
    """Raises `CheckpointMismatch` if the stored leaves' shapes differ from `abstract_state`'s."""
    have = _shapes(stored)
    want = _shapes(abstract_state)
    if not have:
      return
    if set(have) == set(want):
      diff = [k for k in want if have[k] != want[k]]
      if not diff:
        return
      k = diff[0]
      what = f"{k} is {have[k]} there, {want[k]} in this run ({len(diff)} arrays differ)"
    elif sorted(have.values()) != sorted(want.values()):
      extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
      what = (f"its state has other arrays ({len(have)} vs {len(want)}; e.g. "
              f"{(extra or missing or ['?'])[0]} {'only there' if extra else 'missing there'})")
    else:
      return
    raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} was written by another model: "
                             f"{what}; {_MISMATCH_FIX}")

  def _set_aside(self, step: int, error: BaseException) -> None:
    dest = f"{self.directory}{CORRUPT_SUFFIX}/{step}"
    if jax.process_index() == 0:
      target = epath.Path(dest)
      if target.exists():
        dest = f"{dest}-{int(time.time())}"
        target = epath.Path(dest)
      target.parent.mkdir(parents=True, exist_ok=True)
      if not target.parent.exists():
        # An object store (gs://) has no empty directories: mkdir made nothing there, and epath's rename
        # wants the destination's folder to exist. One small object makes it.
        (target.parent / "README.txt").write_text("Checkpoint steps that did not read back, moved here by "
                                                  "zoomjax (never deleted).\n")
      epath.Path(self.directory, str(step)).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils   # only multi-process runs need the barrier
      multihost_utils.sync_global_devices(f"zoomjax-checkpoint-aside-{step}")
    msg = (f"checkpoint step {step} in {self.directory} is unreadable ({_first_line(error)[:300]}); "
           f"moved it to {dest} and trying the previous one")
    logging.warning("%s", msg)
    print(f"warning: {msg}", file=sys.stderr, flush=True)
    self._mngr.reload()

  def wait(self) -> None:
    """Blocks until background writes are finalized."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


_MISMATCH_FIX = ("use a new run_dir for this model (or move the old checkpoints away); "
                 "checkpoint.resume=false starts over in this one")


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _key_name(k: Any) -> str:
  for attr in ("name", "key", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree: Any) -> dict[str, tuple]:
  """'a.b.0' -> shape for every array-like leaf (anything with a `shape`)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {".".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves
          if hasattr(leaf, "shape")}


_abspath = params_io.abspath


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
