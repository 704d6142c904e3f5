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
  assert run_mod.run(_questions(10), answer_fn, path, batch_size=4, limit=6, progress=False).written == 6
  assert calls == [["q0", "q1", "q2", "q3"], ["q4", "q5"]]
  # a crash mid-write leaves half a line: it is cut off and that question redone
  with open(path, "a") as f:
    f.write('{"question_id": "q6", "ans')
  calls.clear()
  assert run_mod.run(_questions(10), answer_fn, path, batch_size=4, progress=False).written == 4
  assert calls == [["q6", "q7", "q8", "q9"]]
  rows = [json.loads(l) for l in path.read_text().splitlines()]
  assert [r["question_id"] for r in rows] == [f"q{i}" for i in range(10)]
  assert run_mod.run(_questions(10), answer_fn, path, progress=False).written == 0   # nothing left


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


@pytest.mark.slow
def test_run_cli_with_a_tiny_model(tmp_path):
  """`python -m zoomjax.eval run` end to end: a random tiny model + Toy Earth tokenizer in an HF dir,
  three questions (one image missing), then a rerun that has nothing left to do."""
  import jax
  import numpy as np
  from PIL import Image

  from zoomjax import hf
  from zoomjax.data import tokenizer as T, toy_earth_tokenizer
  from zoomjax.eval.__main__ import main
  from zoomjax.model import ModelConfig
  from zoomjax.model.qwen2_5_vl import init_params

  model = tmp_path / "model"
  toy_earth_tokenizer.build(model, num_images=4)
  tok = T.load_tokenizer(model)
  cfg = ModelConfig.tiny(vocab_size=T.padded_vocab_size(tok), **T.special_ids(tok))
  hf.save(model, cfg, init_params(cfg, jax.random.PRNGKey(0)))
  images = tmp_path / "images"
  images.mkdir()
  rs = np.random.RandomState(0)
  for name, size in (("a.png", (300, 280)), ("b.png", (280, 420))):
    Image.fromarray(rs.randint(0, 255, (size[1], size[0], 3), np.uint8)).save(images / name)
  rows = [dict(question_id="q1", image_name="a.png", question="What is it?", ground_truth="port",
               bbox=[], type="global", category="Scene Type", higher_level="reasoning"),
          dict(question_id="q2", image_name="b.png", question="What color is the roof?",
               ground_truth="red", bbox=[10, 20, 300, 400], type="object", category="Object color",
               higher_level="perception"),
          dict(question_id="q3", image_name="missing.png", question="?", ground_truth="yes", bbox=[],
               type="global")]
  ann = tmp_path / "A.jsonl"
  ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
  pred, out = tmp_path / "P.jsonl", tmp_path / "R.json"
  args = ["run", "--model", str(model), "--images", str(images), "--predictions", str(pred),
          "--annotations", str(ann), "--out", str(out), "--batch-size", "2", "--max-new-tokens", "6",
          "--max-total-tokens", "1024", "--no-progress"]
  assert main(args) == 1                         # q3's image is missing: recorded as failed, exit 1
  got = [json.loads(l) for l in pred.read_text().splitlines()]
  assert [r["question_id"] for r in got] == ["q1", "q2", "q3"]
  assert all(isinstance(r["answer"], str) for r in got[:2])
  assert got[2]["error"] and got[2]["answer"] is None
  assert got[0]["visual_tokens"] > 0 and got[0]["turns"] >= 1
  report = json.loads(out.read_text())
  assert report["overall"]["n"] == 2 and report["rows"]["skipped"] == 0 and report["errors"] == 1
  assert out.with_suffix(".md").exists()
  Image.fromarray(rs.randint(0, 255, (200, 240, 3), np.uint8)).save(images / "missing.png")
  assert main(args) == 0                         # resumed: only the failed question is retried
  got = [json.loads(l) for l in pred.read_text().splitlines()]
  assert [r["question_id"] for r in got] == ["q1", "q2", "q3", "q3"] and isinstance(got[3]["answer"], str)
  report = json.loads(out.read_text())
  assert report["overall"]["n"] == 3 and report["errors"] == 0
  assert main(args) == 0                         # nothing left to do
  assert len(pred.read_text().splitlines()) == 4
