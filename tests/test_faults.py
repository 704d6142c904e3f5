"""The fault matrix (SPEC §9) of `eval score|run`, `infer`, `convert` and `data.toy_earth`, each case run
through the real CLI as a subprocess: the exit code (2 bad input, 1 partial result), one `error: …` line
that names the file / flag, no traceback, and nothing lost (reports still written, failures recorded,
nothing silently scored 0). The training CLI's cases are in `test_faults_train.py`."""
import json

import jax
import numpy as np
import pytest
from PIL import Image

import _cli
from zoomjax import hf
from zoomjax.data.tokenizer import padded_vocab_size, save_tokenizer, special_ids, train_tokenizer
from zoomjax.model import ModelConfig, init_params
from zoomjax.protocol import templates as P

ROWS = [dict(question_id=f"q{i}", image_name=name, question=q, ground_truth=gt, bbox=box, type=t,
             category="Scene Type", higher_level="reasoning")
        for i, (name, q, gt, box, t) in enumerate([
            ("a.png", "What is it?", "port", [], "global"),
            ("b.png", "What color is the roof?", "red", [10, 20, 300, 400], "object"),
            ("a.png", "Is there a ship?", "yes", [], "global"),
            ("b.png", "How many cars?", "3", [0, 0, 100, 100], "region")])]


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  """Annotations, two images, a file to put paths under (never a directory), predictions."""
  d = tmp_path_factory.mktemp("faults")
  (d / "images").mkdir()
  rs = np.random.RandomState(0)
  for name, (w, h) in (("a.png", (300, 280)), ("b.png", (280, 420))):
    Image.fromarray(rs.randint(0, 255, (h, w, 3), np.uint8)).save(d / "images" / name)
  _jsonl(d / "A.jsonl", ROWS)
  _jsonl(d / "P.jsonl", [{"question_id": r["question_id"], "answer": r["ground_truth"],
                          "bbox": r["bbox"] or None} for r in ROWS])
  (d / "afile").write_text("a file, not a directory\n")
  return d


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A tiny random Qwen2.5-VL with its tokenizer (HF layout)."""
  d = tmp_path_factory.mktemp("tiny_model")
  tok = train_tokenizer([P.render_prompt(r["question"], p).text for r in ROWS for p in P.PROTOCOLS] * 4,
                        vocab_size=600)
  save_tokenizer(tok, d)
  cfg = ModelConfig.tiny(vocab_size=padded_vocab_size(tok), **special_ids(tok))
  hf.save(d, cfg, init_params(cfg, jax.random.key(0)))
  return d


@pytest.fixture(scope="module")
def untokenized_model(tmp_path_factory, model_dir):
  """Config and weights, no tokenizer files."""
  d = tmp_path_factory.mktemp("no_tokenizer")
  for f in model_dir.iterdir():
    if f.name.startswith("model") or f.name == "config.json":
      (d / f.name).write_bytes(f.read_bytes())
  return d


def _score(work, *args, **kw):
  out = kw.pop("out", work / "out" / "R.json")
  base = {"--predictions": work / "P.jsonl", "--annotations": work / "A.jsonl", "--out": out}
  base.update(kw)
  flat = [str(x) for k, v in base.items() for x in (k, v)]
  return _cli.run("zoomjax.eval", "score", *flat, *args)


# ------------------------------------------------------------------------------------------ eval score
@pytest.mark.parametrize("case", ["missing", "directory", "not_utf8"])
def test_score_unusable_annotations(work, tmp_path, case):
  path = {"missing": tmp_path / "nope.jsonl", "directory": tmp_path}.get(case, tmp_path / "latin1.jsonl")
  if case == "not_utf8":
    path.write_bytes(json.dumps(ROWS[0]).replace("port", "p\xf6rt").encode("latin-1") + b"\n")
  line = _cli.error_line(_score(work, **{"--annotations": path, "out": tmp_path / "R.json"}), 2,
                         "--annotations", str(path))
  assert {"missing": "no such", "directory": "directory", "not_utf8": "UTF-8"}[case] in line
  assert not (tmp_path / "R.json").exists()


@pytest.mark.parametrize("case", ["missing", "directory"])
def test_score_unusable_predictions(work, tmp_path, case):
  path = tmp_path / "nope.jsonl" if case == "missing" else tmp_path
  _cli.error_line(_score(work, **{"--predictions": path, "out": tmp_path / "R.json"}), 2, "--predictions",
                  str(path))


def test_score_unwritable_out_fails_before_scoring(work):
  out = work / "afile" / "R.json"
  _cli.error_line(_score(work, out=out), 2, "--out", str(out))


def test_score_nothing_scored_is_exit_1_with_report(work, tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  out = tmp_path / "R.json"
  line = _cli.error_line(_score(work, **{"--predictions": empty, "out": out}), 1, "nothing scored")
  assert "0 of 4" in line
  rep = json.loads(out.read_text())
  assert rep["overall"]["n"] == 0 and rep["coverage"] == {"scored": 0, "annotated": 4, "fraction": 0.0}


def test_score_wrong_benchmark_is_exit_1_with_reason(work, tmp_path):
  out = tmp_path / "R.json"
  line = _cli.error_line(_score(work, "--benchmark", "xlrs", out=out), 1, "xlrs", "rejected all 4")
  assert "--benchmark" in line
  assert json.loads(out.read_text())["rows"]["annotations_skipped"] == 4


def test_score_partial_coverage_is_shown_where_people_read(work, tmp_path):
  """1 answered question of 4: the headline says 1/4, not a bare 100.00 beside the paper's row."""
  pred = _jsonl(tmp_path / "P1.jsonl", [{"question_id": "q0", "answer": "port", "bbox": None}])
  out = tmp_path / "R.json"
  r = _score(work, **{"--predictions": pred, "out": out})
  assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
  assert "scored 1 of 4 annotated questions" in r.stderr
  rep = json.loads(out.read_text())
  assert rep["coverage"] == {"scored": 1, "annotated": 4, "fraction": 0.25} and rep["rows"]["missing"] == 3
  md = out.with_suffix(".md").read_text()
  assert "| P1 (1/4 questions) |" in md and "Partial result: 1 of 4 annotated questions scored" in md


def test_score_malformed_rows_are_exit_1_after_scoring_the_rest(work, tmp_path):
  pred = tmp_path / "P2.jsonl"
  pred.write_text(json.dumps({"question_id": "q0", "answer": "port"}) + "\n{not json\n"
                  + json.dumps({"question_id": "q1"}) + "\n")
  out = tmp_path / "R.json"
  _cli.error_line(_score(work, **{"--predictions": pred, "out": out}), 1, "2 prediction rows skipped")
  rep = json.loads(out.read_text())
  assert rep["overall"]["n"] == 1 and rep["overall"]["accuracy"] == 1.0 and rep["rows"]["skipped"] == 2


def test_score_failed_questions_count_until_answered(work, tmp_path):
  """A row recording a failure is not an empty answer: counted in `errors`, exit 1; a later answer for
  that question (the retry of `eval run`) replaces it."""
  rows = [{"question_id": r["question_id"], "answer": r["ground_truth"], "bbox": r["bbox"] or None}
          for r in ROWS]
  failed = {"question_id": "q3", "answer": None, "bbox": None, "error": "ImageNotFoundError: image not found"}
  pred = _jsonl(tmp_path / "P3.jsonl", rows[:3] + [failed])
  out = tmp_path / "R.json"
  _cli.error_line(_score(work, **{"--predictions": pred, "out": out}), 1, "1 questions failed",
                  "image not found")
  rep = json.loads(out.read_text())
  assert rep["errors"] == 1 and rep["overall"]["n"] == 3 and rep["overall"]["accuracy"] == 1.0
  assert rep["failed"] == [{"question_id": "q3", "error": failed["error"]}]
  _jsonl(pred, rows[:3] + [failed, rows[3]])
  r = _score(work, **{"--predictions": pred, "out": out})
  assert r.returncode == 0, r.stderr
  rep = json.loads(out.read_text())
  assert rep["errors"] == 0 and rep["overall"]["n"] == 4 and rep["rows"]["skipped"] == 0


def test_score_never_downloads_wordnet(work, tmp_path):
  """No WordNet anywhere and no permission to download: one line naming WordNet and the fix, exit 2,
  and `nltk.download` was never called (a sitecustomize trap records any call)."""
  trap = tmp_path / "trap"
  trap.mkdir()
  marker = tmp_path / "downloaded"
  (trap / "sitecustomize.py").write_text(
      "import nltk\n"
      "def _trap(*a, **k):\n"
      f"  open({str(marker)!r}, 'w').write('called')\n"
      "  return False\n"
      "nltk.download = _trap\n")
  pred = _jsonl(tmp_path / "P4.jsonl", [{"question_id": "q0", "answer": "harbour", "bbox": None}])
  empty = tmp_path / "empty"
  empty.mkdir()
  env = dict(PYTHONPATH=f"{trap}:{_cli.REPO}", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"),
             NLTK_DATA=str(empty), ZOOMJAX_WORDNET_SRC=str(empty), ZOOMJAX_NLTK_DATA=str(tmp_path / "nltk"))
  r = _cli.run("zoomjax.eval", "score", "--predictions", pred, "--annotations", work / "A.jsonl", "--out",
               tmp_path / "R.json", ZOOMJAX_WORDNET_DOWNLOAD="", **env)
  _cli.error_line(r, 2, "WordNet", "apt-get install")
  assert not marker.exists(), "the judge called nltk.download without being asked"


def test_debug_shows_the_traceback(work, tmp_path):
  r = _score(work, "--debug", **{"--annotations": tmp_path / "nope.jsonl", "out": tmp_path / "R.json"})
  assert r.returncode != 0 and "Traceback" in r.stderr


# -------------------------------------------------------------------------------------------- eval run
def _run_args(work, model, **kw):
  base = {"--model": model, "--images": work / "images", "--predictions": work / "run" / "P.jsonl",
          "--annotations": work / "A.jsonl", "--out": work / "run" / "R.json"}
  base.update(kw)
  return ["run", *[str(x) for k, v in base.items() for x in (k, v)], "--max-new-tokens", "4",
          "--max-total-tokens", "1024", "--no-progress"]


@pytest.mark.parametrize("flag", ["--model", "--images"])
def test_run_missing_directory_fails_before_loading(work, model_dir, tmp_path, flag):
  bad = tmp_path / "typo"
  r = _cli.run("zoomjax.eval", *_run_args(work, model_dir, **{flag: bad, "--predictions": tmp_path / "P.jsonl"}))
  _cli.error_line(r, 2, flag, str(bad))
  assert not (tmp_path / "P.jsonl").exists()


def test_run_unwritable_out_fails_before_the_model_runs(work, model_dir, tmp_path):
  out = work / "afile" / "R.json"
  r = _cli.run("zoomjax.eval", *_run_args(work, model_dir, **{"--out": out, "--predictions": tmp_path / "P.jsonl"}))
  _cli.error_line(r, 2, "--out", str(out))
  assert not (tmp_path / "P.jsonl").exists()


def test_run_not_a_model_directory(work, tmp_path):
  (tmp_path / "m").mkdir()
  r = _cli.run("zoomjax.eval", *_run_args(work, tmp_path / "m", **{"--predictions": tmp_path / "P.jsonl"}))
  _cli.error_line(r, 2, "--model", str(tmp_path / "m"))


def test_run_records_failed_questions_and_retries_them(work, model_dir, tmp_path):
  """Finding 1: a question whose image is missing is recorded as failed (not as an empty answer),
  counted on stderr and in the report, exit 1; the next run retries exactly that question."""
  images = tmp_path / "images"
  images.mkdir()
  (images / "a.png").write_bytes((work / "images" / "a.png").read_bytes())   # b.png missing
  ann = _jsonl(tmp_path / "A.jsonl", ROWS[:2])
  pred, out = tmp_path / "P.jsonl", tmp_path / "R.json"
  args = _run_args(work, model_dir, **{"--images": images, "--annotations": ann, "--predictions": pred,
                                       "--out": out})
  line = _cli.error_line(_cli.run("zoomjax.eval", *args), 1, "1 of 2 questions failed", str(pred))
  assert "retries" in line
  r = _cli.run("zoomjax.eval", *args)
  assert r.returncode == 1
  rows = [json.loads(l) for l in pred.read_text().splitlines()]
  assert [row["question_id"] for row in rows] == ["q0", "q1", "q1"]        # q1 retried, q0 not
  assert rows[1]["answer"] is None and "b.png" in rows[1]["error"]
  assert "failed q1: ImageNotFoundError" in r.stderr
  rep = json.loads(out.read_text())
  assert rep["errors"] == 1 and rep["overall"]["n"] == 1 and rep["coverage"]["annotated"] == 2


# ----------------------------------------------------------------------------------------------- infer
def _infer(model, image, *extra, question="What is it?"):
  return _cli.run("zoomjax.infer", "--model", model, "--image", image, "--question", question,
                  "--max-new-tokens", "4", "--max-pixels", str(56 * 56 * 4), *extra)


def test_infer_image_is_a_directory(work, model_dir):
  line = _cli.error_line(_infer(model_dir, work / "images"), 2, "--image", str(work / "images"))
  assert "directory" in line and "not found" not in line


def test_infer_max_image_pixels_zero_means_no_limit(work, tmp_path):
  """`--max-image-pixels 0` accepts a 1x1 image (the next error is about the missing model)."""
  tiny = tmp_path / "one.png"
  Image.new("RGB", (1, 1)).save(tiny)
  _cli.error_line(_infer(tmp_path / "no_model", tiny, "--max-image-pixels", "0"), 2, "--model")
  _cli.error_line(_infer(tmp_path / "no_model", tiny, "--max-image-pixels", "-1"), 2, "--max-image-pixels")


def test_infer_empty_question_is_refused_before_the_model(work, tmp_path):
  _cli.error_line(_infer(tmp_path / "no_model", work / "images" / "a.png", question="  "), 2, "--question")


def test_infer_missing_model(work, tmp_path):
  _cli.error_line(_infer(tmp_path / "no_model", work / "images" / "a.png"), 2, "--model",
                  str(tmp_path / "no_model"))


def test_infer_broken_config_json_names_the_file(work, model_dir, tmp_path):
  broken = tmp_path / "broken"
  broken.mkdir()
  for f in model_dir.iterdir():
    (broken / f.name).write_bytes(f.read_bytes())
  (broken / "config.json").write_text('{"model_type": "qwen2_5_vl", ')
  _cli.error_line(_infer(broken, work / "images" / "a.png"), 2, "--model", str(broken / "config.json"))


@pytest.mark.parametrize("case", ["none", "config_only"])
def test_infer_missing_tokenizer_is_one_line(work, untokenized_model, tmp_path, case):
  model = untokenized_model
  if case == "config_only":   # tokenizer_config.json without tokenizer.json: transformers' sentencepiece path
    model = tmp_path / "m"
    model.mkdir()
    for f in untokenized_model.iterdir():
      (model / f.name).write_bytes(f.read_bytes())
    (model / "tokenizer_config.json").write_text("{}")
  line = _cli.error_line(_infer(model, work / "images" / "a.png"), 2, "--model", "tokenizer")
  assert "sentencepiece" not in line


def test_infer_corrupt_image(work, tmp_path):
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  _cli.error_line(_infer(tmp_path / "no_model", bad), 2, str(bad))


def test_infer_unwritable_out_fails_before_the_model(work, model_dir):
  out = work / "afile" / "x.png"
  _cli.error_line(_infer(model_dir, work / "images" / "a.png", "--out", out), 2, "--out", str(out))


# --------------------------------------------------------------------------------------------- convert
def test_convert_missing_inputs(tmp_path):
  _cli.error_line(_cli.run("zoomjax.convert", "to-orbax", "--hf-dir", tmp_path / "nope", "--out", tmp_path / "o"),
                  2, "--hf-dir", str(tmp_path / "nope"))
  _cli.error_line(_cli.run("zoomjax.convert", "to-hf", "--orbax-dir", tmp_path / "nope", "--out", tmp_path / "h"),
                  2, "--orbax-dir", str(tmp_path / "nope"))


def test_convert_broken_config_and_non_checkpoint(tmp_path):
  (tmp_path / "ck").mkdir()
  bad = tmp_path / "config.json"
  bad.write_text("{")
  _cli.error_line(_cli.run("zoomjax.convert", "to-hf", "--orbax-dir", tmp_path / "ck", "--out", tmp_path / "h",
                           "--config", bad), 2, "--config", str(bad))
  _cli.error_line(_cli.run("zoomjax.convert", "to-hf", "--orbax-dir", tmp_path / "ck", "--out", tmp_path / "h"),
                  2, "info.json", "--config")


# ------------------------------------------------------------------------------------------- toy_earth
def test_toy_earth_unwritable_out(work):
  out = work / "afile" / "toy"
  _cli.error_line(_cli.run("zoomjax.data.toy_earth", "--out", out, "--num-images", "1", "--size", "1536"), 2,
                  "--out", str(out))
