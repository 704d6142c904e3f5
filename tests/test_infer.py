"""`python -m zoomjax.infer`: end to end on a tiny saved model, clear errors for bad images, the PNG layout."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jax

from zoomjax import hf
from zoomjax.data.tokenizer import padded_vocab_size, save_tokenizer, special_ids, train_tokenizer
from zoomjax.eval.figures import render_result
from zoomjax.infer import main
from zoomjax.model import ModelConfig, init_params
from zoomjax.protocol import templates as P


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tiny_model")
  tok = train_tokenizer([P.render_prompt("What is it?", p).text for p in P.PROTOCOLS] * 4, vocab_size=600)
  save_tokenizer(tok, d)
  cfg = ModelConfig.tiny(vocab_size=padded_vocab_size(tok), **special_ids(tok))
  hf.save(d, cfg, init_params(cfg, jax.random.key(0)))
  return str(d)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
  p = tmp_path_factory.mktemp("img") / "scene.png"
  rs = np.random.RandomState(0)
  Image.fromarray(rs.randint(0, 255, (700, 1200, 3), dtype=np.uint8)).save(p)
  return str(p)


def test_runs_end_to_end_and_writes_png(model_dir, image_path, tmp_path, capsys):
  out = tmp_path / "result.png"
  for proto in ("released", "multiturn"):
    rc = main(["--model", model_dir, "--image", image_path, "--question", "What is it?", "--protocol", proto,
               "--max-new-tokens", "12", "--max-pixels", str(56 * 56 * 4), "--out", str(out), "--json",
               "--temperature", "1.0", "--top-k", "20", "--seed", "1"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["protocol"] == proto and res["image_size"] == [1200, 700] and res["view_size"] == [512, 298]
    assert res["stop_reason"] in ("answer", "no_answer", "budget", "max_turns")
    with Image.open(out) as im:
      assert im.width >= 512 and im.height >= 298
  rc = main(["--model", model_dir, "--image", image_path, "--question", "What?", "--max-new-tokens", "4",
             "--max-pixels", str(56 * 56 * 4)])
  text = capsys.readouterr().out
  assert rc == 0 and text.startswith("answer: ") and "stop: " in text and "box" in text


def test_image_errors_are_clear(tmp_path, capsys):
  bad = tmp_path / "corrupt.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
  for path, extra, msg in [(bad, [], "cannot"), (tmp_path / "missing.tif", [], "not found"),
                           (None, ["--max-image-pixels", "1000"], "above the limit")]:
    if path is None:
      path = tmp_path / "big.png"
      Image.new("RGB", (100, 100)).save(path)
    rc = main(["--model", str(tmp_path / "no_model"), "--image", str(path), "--question", "q", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and msg in err, err
  # a good image but no model: a clear model error, also exit 2
  good = tmp_path / "ok.png"
  Image.new("RGB", (64, 64)).save(good)
  assert main(["--model", str(tmp_path / "no_model"), "--image", str(good), "--question", "q"]) == 2
  assert "--model" in capsys.readouterr().err


def test_render_result_layout():
  view = Image.new("RGB", (512, 256), (0, 0, 0))
  crop = Image.new("RGB", (300, 300), (0, 255, 0))
  canvas = render_result(view, [[10, 20, 110, 120]], [crop], "yes")
  a = np.asarray(canvas)
  assert canvas.size == (512 + 8 + 300, 300 + 24)
  assert tuple(a[20, 60]) == (255, 40, 40) and tuple(a[60, 60]) == (0, 0, 0)   # box edge drawn, inside untouched
  assert tuple(a[150, 512 + 8 + 150]) == (0, 255, 0)                          # crop pasted beside the view
  assert render_result(view, [], [], None).size == (512, 256 + 24)


def test_help_runs_as_a_module():
  r = subprocess.run([sys.executable, "-m", "zoomjax.infer", "--help"], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and "--protocol" in r.stdout and "--max-turns" in r.stdout
