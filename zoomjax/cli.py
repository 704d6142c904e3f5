"""The fault contract every zoomjax CLI keeps (SPEC §9): one `error: …` line, the right exit code.

    @cli.main
    def main(argv=None) -> int:
      p = argparse.ArgumentParser(...)
      cli.add_debug(p)
      ...

Exit codes:

* **0** done.
* **1** finished but could not do all of its work: raise `PartialFailure("3 of 8 questions failed …")`
  *after* writing what could be written; the message gives the counts and why.
* **2** a user error: `UserError("--annotations A.jsonl: no such file; pass …")`, or one of the
  project's specific exceptions (an image that cannot be used, a model directory that is not one, a bad
  config key, WordNet missing, a file that is missing / a directory / not UTF-8 / not JSON). The message
  names the file, key or flag and the fix.
* **130** Ctrl-C.
* Anything else is a bug: one line naming the exception and where it was raised, exit 1.

`--debug` (or `ZOOMJAX_DEBUG=1`) lets the exception through, traceback and all.

`reading(path, flag)` turns OSError / UnicodeDecodeError / JSON errors raised while a file is read into
a `UserError` that names the file and the flag; `writable_file` / `writable_dir` check an output path
before any work is done, so a bad `--out` costs nothing.

No heavy imports here (no jax): the CLIs import this first and stay fast to fail.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import traceback
from typing import Callable, Iterator, Sequence

DEBUG_ENV = "ZOOMJAX_DEBUG"
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
  """Bad input the user can fix (exit 2); the message names the file, key or flag and the fix."""


class PartialFailure(Exception):
  """The command finished but could not do all of its work (exit 1); the message gives counts and why."""


# The project's specific exceptions, by class name within zoomjax (matched along the MRO, so subclasses
# such as `ImageNotFoundError` count, and a class may move between zoomjax modules), so that this module
# imports none of them (nor jax through them). Value: a prefix for the message.
_USER_ERRORS = {                 # exit 2
    "ImageError": "",            # zoomjax.data.images
    "CheckpointError": "",       # zoomjax.hf
    "CheckpointMismatch": "",    # zoomjax.train.checkpoint
    "ConfigError": "config: ",   # zoomjax.train.config / zoomjax.model.config
    "TokenizerError": "",        # zoomjax.data.tokenizer
    "WordNetUnavailable": "",    # zoomjax.rl.wordnet
}
_PARTIAL = {                     # exit 1: finished without doing its work
    "TrainingFailed": "",        # zoomjax.train.driver
}


def add_debug(parser) -> None:
  """Adds `--debug` (show the traceback instead of one line) to an argparse parser."""
  parser.add_argument("--debug", action="store_true",
                      help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)")


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _os_message(e: OSError) -> str:
  what = e.strerror or type(e).__name__
  if e.errno == errno.ENOSPC:
    return f"no space left on device{f' writing {e.filename}' if e.filename else ''}: free some space and rerun"
  if e.filename is None:
    return f"{what} ({type(e).__name__})"
  where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
  return f"{where}: {what}"


def describe(exc: BaseException) -> tuple[int, str]:
  """(exit code, one-line message) for an exception, by the contract in the module docstring."""
  if isinstance(exc, KeyboardInterrupt):
    return EXIT_INTERRUPTED, "interrupted"
  if isinstance(exc, UserError):
    return EXIT_USAGE, _one_line(exc)
  if isinstance(exc, PartialFailure):
    return EXIT_PARTIAL, _one_line(exc)
  for cls in type(exc).__mro__:
    if cls.__module__.split(".")[0] != "zoomjax":
      continue
    for table, code in ((_USER_ERRORS, EXIT_USAGE), (_PARTIAL, EXIT_PARTIAL)):
      if cls.__qualname__ in table:
        return code, _one_line(f"{table[cls.__qualname__]}{exc}")
  if isinstance(exc, UnicodeDecodeError):
    return EXIT_USAGE, _one_line(f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                 "re-save it as UTF-8")
  if isinstance(exc, json.JSONDecodeError):
    return EXIT_USAGE, _one_line(f"malformed JSON: {exc}")
  if isinstance(exc, OSError):
    return EXIT_USAGE, _one_line(_os_message(exc))
  tb = traceback.extract_tb(exc.__traceback__)
  where = f" at {os.path.relpath(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
  return EXIT_PARTIAL, _one_line(
      f"internal error{where}: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, "
      "and please report it)")


def _debug(argv: Sequence[str]) -> bool:
  return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report(exc: BaseException, stream=None) -> int:
  """Prints `error: …` for `exc` and returns its exit code."""
  code, message = describe(exc)
  stream = sys.stderr if stream is None else stream
  print(f"error: {message}", file=stream, flush=True)
  return code


def main(fn: Callable | None = None, *, exit_fn: Callable[[int], None] | None = None):
  """Decorates a CLI `main(argv=None) -> int` with the contract: exceptions become one line + exit code.

  `exit_fn(code)` (optional) is called instead of returning the code of a failure, e.g. `os._exit` for
  a process whose background threads must not keep it alive.
  """
  if fn is None:
    return functools.partial(main, exit_fn=exit_fn)

  @functools.wraps(fn)
  def wrapper(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
      return fn(argv)
    except SystemExit:
      raise
    except BaseException as e:  # noqa: BLE001  the one place every CLI error is turned into a line
      if _debug(argv):
        raise
      code = report(e)
      if exit_fn is not None:
        exit_fn(code)
      return code

  return wrapper


@contextlib.contextmanager
def about(label: str) -> Iterator[None]:
  """Inside: a user error (exit 2 by `describe`) becomes a `UserError` prefixed with `label`, e.g.
  `with cli.about(f"--model {path}"): ...` so the line names the flag as well as the file."""
  try:
    yield
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001  re-raised unchanged unless `describe` calls it a user error
    code, message = describe(e)
    if code != EXIT_USAGE:
      raise
    raise UserError(f"{label}: {message}") from e


@contextlib.contextmanager
def reading(path, flag: str, what: str = "file") -> Iterator[None]:
  """Inside: an OSError, UnicodeDecodeError or JSON error becomes a `UserError` naming `flag` and `path`."""
  name = f"{flag} {os.fspath(path)}" if flag else os.fspath(path)
  if os.path.isdir(path):
    raise UserError(f"{name} is a directory; pass the {what} itself")
  try:
    yield
  except FileNotFoundError:
    raise UserError(f"{name}: no such {what}; check the path") from None
  except IsADirectoryError:
    raise UserError(f"{name} is a directory; pass the {what} itself") from None
  except PermissionError:
    raise UserError(f"{name}: permission denied; make it readable") from None
  except UnicodeDecodeError as e:
    raise UserError(f"{name} is not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix or "
                    "regenerate it") from None


def writable_dir(path, flag: str) -> str:
  """Creates directory `path` if needed and checks a file can be written in it; returns it."""
  path = os.fspath(path)
  name = f"{flag} {path}" if flag else path
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{name} exists and is not a directory; pass a directory")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".zoomjax-write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"{name} is not writable ({e.strerror or e}); pass a directory you can write to") from None
  return path


def writable_file(path, flag: str) -> str:
  """Checks that file `path` can be written (creating its parent directory) without changing it."""
  path = os.fspath(path)
  name = f"{flag} {path}" if flag else path
  if os.path.isdir(path):
    raise UserError(f"{name} is a directory; pass a file path")
  parent = os.path.dirname(os.path.abspath(path))
  existed = os.path.exists(path)
  try:
    os.makedirs(parent, exist_ok=True)
    with open(path, "a"):
      pass
    if not existed:
      os.remove(path)
  except OSError as e:
    raise UserError(f"{name} is not writable ({e.strerror or e}); pass a path you can write to") from None
  return path


def existing_dir(path, flag: str, what: str) -> str:
  """`path` if it is a directory, else a `UserError` saying what `flag` should name."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise UserError(f"{flag} {path}: no such directory; pass {what}")
  if not os.path.isdir(path):
    raise UserError(f"{flag} {path} is not a directory; pass {what}")
  return path
