"""The resumable `run` driver (zoomjax.eval.run) with a stand-in answer_fn, and the CLI's --help."""
import json
import subprocess
import sys
import pathlib

import pytest

from zoomjax.eval import run as run_mod
from zoomjax.eval.loaders import Question

REPO = pathlib.Path(__file__).resolve().parents[1]


def _questions(n):
  return [Question(question_id=f"q{i}", question="?", ground_truth="port", image=f"{i}.png",
                   benchmark="lrs_gro", type="global") for i in range(n)]


def test_run_is_batched_and_resumable(tmp_path):
  calls = []

  def answer_fn(batch):
    calls.append([q.question_id for q in batch])
    return [{"question_id": q.question_id, "answer": "port", "bbox": None} for q in batch]

  path = tmp_path / "sub" / "P.jsonl"
  assert run_mod.run(_questions(10), answer_fn, path, batch_size=4, limit=6, progress=False) == 6
  assert calls == [["q0", "q1", "q2", "q3"], ["q4", "q5"]]
  # a crash mid-write leaves half a line: it is cut off and that question redone
  with open(path, "a") as f:
    f.write('{"question_id": "q6", "ans')
  calls.clear()
  assert run_mod.run(_questions(10), answer_fn, path, batch_size=4, progress=False) == 4
  assert calls == [["q6", "q7", "q8", "q9"]]
  rows = [json.loads(l) for l in path.read_text().splitlines()]
  assert [r["question_id"] for r in rows] == [f"q{i}" for i in range(10)]
  assert run_mod.run(_questions(10), answer_fn, path, progress=False) == 0   # nothing left


def test_run_rejects_mismatched_rows(tmp_path):
  with pytest.raises(ValueError, match="returned 0 rows"):
    run_mod.run(_questions(2), lambda b: [], tmp_path / "P.jsonl", progress=False)
  with pytest.raises(ValueError, match="answered"):
    run_mod.run(_questions(1), lambda b: [{"question_id": "other", "answer": ""}],
                tmp_path / "Q.jsonl", progress=False)


def test_cli_help():
  for args in ([], ["score"], ["run"]):
    r = subprocess.run([sys.executable, "-m", "zoomjax.eval", *args, "--help"], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and "usage: python -m zoomjax.eval" in r.stdout
