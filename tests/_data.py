"""The test data kept in the repo (`tests/data/`): the real LRS-GRO RL annotations and the benchmark
format samples. Every test reads them from here; nothing outside the checkout is needed.

`tests/data/lrs_gro/rl.jsonl.gz` is the LRS-GRO RL split (6622 questions, 2 MB as JSONL, 180 kB
compressed); `rl_jsonl()` decompresses it once per machine into the temp directory (the readers under
test take a plain JSONL path). `tests/data/formats/` holds the format samples as they are.
"""
import gzip
import hashlib
import os
import pathlib
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
FORMATS = DATA / "formats"
RL_GZ = DATA / "lrs_gro" / "rl.jsonl.gz"


def rl_jsonl() -> pathlib.Path:
  """A plain-JSONL copy of `rl.jsonl.gz` (written once, atomically; keyed by the archive's hash)."""
  raw = RL_GZ.read_bytes()
  digest = hashlib.sha256(raw).hexdigest()[:16]
  path = pathlib.Path(tempfile.gettempdir()) / f"zoomjax-tests-{digest}" / "rl.jsonl"
  if not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"rl.jsonl.{os.getpid()}.tmp")
    tmp.write_bytes(gzip.decompress(raw))
    os.replace(tmp, path)
  return path
