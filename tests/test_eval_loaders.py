"""Benchmark loaders on the format samples (tests/data/formats) and on malformed rows."""
import json
import pathlib

import pytest

from zoomjax.eval import loaders
from zoomjax.eval.score import judge_answer

from _data import FORMATS


def _formats() -> pathlib.Path:
  return FORMATS


def test_lrs_vqa_sample():
  qs, problems = loaders.load(_formats() / "lrs_vqa_sample.jsonl", "lrs_vqa")
  assert len(qs) == 20 and not problems
  q = qs[0]
  assert (q.question_id, q.ground_truth, q.kind, q.image_size) == ("FAIR_1", "yes", "open", (4000, 4000))
  # hbox [282, 3418, 763, 4050] in a 4000-px image -> 1024 frame
  assert q.bbox == pytest.approx([282 * 0.256, 3418 * 0.256, 763 * 0.256, 4050 * 0.256])
  assert q.question.startswith("Is the bottom-most") and q.extra["abs_size"] == "large"


def test_mme_realworld_template():
  path = _formats() / "mme_realworld_template.json"
  qs, problems = loaders.load_mme_realworld(path, rs_only=False)
  assert len(qs) == 5 and not problems
  q = qs[0]
  assert q.kind == "choice" and q.letters == "ABCDE" and q.ground_truth == "D"
  assert judge_answer(q, "The answer is (D).") == (True, 1.0)
  assert judge_answer(q, "C")[0] is False
  # the template holds no remote-sensing rows: the default RS subset is empty
  assert loaders.load_mme_realworld(path)[0] == []


def test_mme_remote_sensing_filter(tmp_path):
  rows = [{"Question_id": "perception/remote_sensing/color/0001", "Image": "remote_sensing/1.png",
           "Text": "What color is the roof?", "Answer choices": ["(A) red", "(B) blue", "(C) green",
                                                                  "(D) grey", "(E) none"],
           "Ground truth": "B", "Task": "Perception", "Subtask": "Remote Sensing", "Category": "color"},
          {"Question_id": "perception/ocr/0002", "Image": "ocr/2.png", "Text": "?",
           "Answer choices": ["(A) x", "(B) y"], "Ground truth": "A", "Task": "Perception",
           "Subtask": "OCR", "Category": "ocr"},
          {"Question_id": "perception/remote_sensing/bad", "Image": "remote_sensing/3.png", "Text": "?",
           "Answer choices": ["(A) x", "(B) y"], "Ground truth": "F", "Subtask": "Remote Sensing"}]
  path = tmp_path / "mme.json"
  path.write_text(json.dumps(rows))
  qs, problems = loaders.load(path, "mme_rs")
  assert [q.question_id for q in qs] == ["perception/remote_sensing/color/0001"]
  assert [p.line for p in problems] == [3] and "not one of the options" in problems[0].message


def test_xlrs_sample_and_set_match():
  qs, problems = loaders.load(_formats() / "xlrs_bench_lite_sample.jsonl", "xlrs")
  assert len(qs) == 2 and not problems
  single, multi = qs
  assert single.ground_truth == "B" and not single.multi_select and single.image == "images/xlrs_0000.png"
  assert multi.ground_truth == "AC" and multi.multi_select and multi.letters == "ABCD"
  assert judge_answer(multi, "A, C")[0] and judge_answer(multi, "C and A")[0]
  assert not judge_answer(multi, "A")[0] and not judge_answer(multi, "A, B, C")[0]   # exact set
  assert judge_answer(single, "5")[0]                                                # option text


def test_geollava_sample(tmp_path):
  qs, problems = loaders.load(_formats() / "geollava_sample.json", "geollava")
  assert len(qs) == 1 and not problems
  q = qs[0]
  assert q.question_id == "geo_0000" and q.ground_truth == "red" and q.kind == "open"
  assert q.question == "What color is the roof of the largest building near the river?"
  rows = [{"id": "g1", "image": "a.png", "conversations": [
      {"from": "human", "value": "<image>\nWhich is it?\nA. farmland\nB. water\nC. city"},
      {"from": "gpt", "value": "B"}, {"from": "human", "value": "And the colour?"},
      {"from": "gpt", "value": "blue"}]},
          {"id": "g2", "conversations": "oops"}]
  path = tmp_path / "geo.json"
  path.write_text(json.dumps(rows))
  qs, problems = loaders.load(path, "geollava")
  assert [(q.question_id, q.kind, q.ground_truth) for q in qs] == [("g1#0", "choice", "B"),
                                                                   ("g1#1", "open", "blue")]
  assert [p.line for p in problems] == [2]


def test_lrs_gro_split_fields_and_bad_rows(tmp_path):
  rows = [
      {"question_id": "q1", "image_name": "1.tif", "category": "Counting", "question": "How many?",
       "higher_level": "perception", "ground_truth": "3", "bbox": [1, 2, 30, 40], "type": "object",
       "split": "SFT", "cut": True, "global": False, "stage_1_reasoning": "r1",
       "stage_2_reasoning": "r2", "scale": 9.7},
      {"question_id": "q2", "image_name": "1.tif", "question": "Scene?", "ground_truth": "port",
       "bbox": [], "type": "global", "split": "test", "label": "x"},
      {"question_id": "q3", "question": "?", "ground_truth": "a", "bbox": [], "type": "galaxy"},
      {"question_id": "q4", "question": "?", "ground_truth": "a", "bbox": [5, 5, 1, 1], "type": "object"},
      {"question_id": "q5", "question": "?", "type": "object"},
      {"question_id": "q1", "question": "?", "ground_truth": "a", "bbox": [], "type": "global"},
  ]
  path = tmp_path / "a.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
  qs, problems = loaders.load_lrs_gro(path)
  assert [q.question_id for q in qs] == ["q1", "q2"]
  q1, q2 = qs
  assert q1.bbox == [1.0, 2.0, 30.0, 40.0] and q1.type == "object" and q1.image == "1.tif"
  assert q1.extra == {"split": "SFT", "cut": True, "global": False, "stage_1_reasoning": "r1",
                      "stage_2_reasoning": "r2", "scale": 9.7}
  assert q2.bbox is None and q2.extra == {"split": "test", "label": "x"}
  assert [p.line for p in problems] == [3, 4, 5, 6, 7]
  msgs = [p.message for p in problems]
  assert "unknown type" in msgs[0] and "bad box" in msgs[1] and "missing field" in msgs[2]
  assert "duplicate" in msgs[3] and "bad JSON" in msgs[4]


# ------------------------------------------------------------------------------ inline fixtures
def _write_jsonl(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return path


def test_lrs_vqa_inline_hbox_to_1024_frame(tmp_path):
  rows = [
      {"question_id": "v1", "text": "Is it?", "ground_truth": "yes", "image": "a.png",
       "image_size": [2048, 1024], "hbox": [100, 200, 300, 400], "category": "presence"},
      {"question_id": "v2", "text": "Count?", "ground_truth": "3", "image": "b.png",
       "image_size": [1000, 4000], "hbox": [10, 20, 30, 40]},
      {"question_id": "v3", "text": "Scene?", "ground_truth": "port", "image": "c.png",
       "image_size": [800, 600]},
      {"question_id": "v4", "text": "?", "ground_truth": "a", "hbox": [1, 2, 3, 4]},      # no image_size
      {"question_id": "v5", "ground_truth": "a"},                                          # no text
  ]
  qs, problems = loaders.load(_write_jsonl(tmp_path / "v.jsonl", rows), "lrs_vqa")
  assert [q.question_id for q in qs] == ["v1", "v2", "v3"]
  v1, v2, v3 = qs
  assert v1.bbox == pytest.approx([50, 100, 150, 200])             # 1024 / max(2048, 1024) = 0.5
  assert v2.bbox == pytest.approx([2.56, 5.12, 7.68, 10.24])       # 1024 / 4000 = 0.256 (the long side)
  assert v3.bbox is None and v3.image_size == (800, 600) and v1.image_size == (2048, 1024)
  assert v1.category == "presence" and v1.kind == "open" and v1.extra == {"hbox": [100, 200, 300, 400]}
  assert [p.line for p in problems] == [4, 5]
  assert "image_size" in problems[0].message and "missing field" in problems[1].message


def test_xlrs_inline_sets_images_and_tasks(tmp_path):
  opts = ["(A) 1", "(B) 2", "(C) 3", "(D) 4"]
  rows = [{"index": 7, "question": "Which?", "multi-choice options": opts, "answer": "C, A",
           "image": ["x.png"], "category": "perception/count", "l2-category": "counting"},
          {"index": 8, "question": "One?", "multi-choice options": opts, "answer": "B",
           "image": ["x.png", "y.png"]},
          {"index": 9, "question": "Bad?", "multi-choice options": opts, "answer": "E"},
          {"index": 10, "question": "Bad?", "multi-choice options": "A B", "answer": "A"}]
  qs, problems = loaders.load(_write_jsonl(tmp_path / "x.jsonl", rows), "xlrs")
  assert [q.question_id for q in qs] == ["7", "8"]
  multi, single = qs
  assert multi.ground_truth == "AC" and multi.multi_select and multi.letters == "ABCD"
  assert multi.image == "x.png" and multi.extra == {"task": "perception"} and multi.higher_level == "counting"
  assert single.ground_truth == "B" and not single.multi_select and single.image == ["x.png", "y.png"]
  assert [p.line for p in problems] == [3, 4]
  assert "not a set of the options" in problems[0].message and "list of strings" in problems[1].message
  assert loaders.prompt_text(multi) == "\n".join(["Which?", *opts, loaders.MULTI_INSTRUCTION])


def test_mme_inline_and_prompt(tmp_path):
  row = {"Question_id": "perception/remote_sensing/1", "Image": "remote_sensing/1.png", "Text": "Colour?",
         "Answer choices": ["(A) red", "(B) blue"], "Ground truth": "(B)", "Subtask": "Remote Sensing"}
  path = tmp_path / "m.json"
  path.write_text(json.dumps([row], indent=1))
  (q,), problems = loaders.load(path, "mme_rs")
  assert not problems and q.ground_truth == "B" and q.letters == "AB"
  assert loaders.prompt_text(q) == "Colour?\n(A) red\n(B) blue\n" + loaders.CHOICE_INSTRUCTION
  with pytest.raises(ValueError, match="unknown benchmark"):
    loaders.load(path, "mme")


def test_parse_box_rules():
  assert loaders.parse_box([]) is None and loaders.parse_box(None) is None
  assert loaders.parse_box([1, 2, 3.5, 4]) == [1.0, 2.0, 3.5, 4.0]
  for bad in ([1, 2, 3], [3, 2, 1, 4], [1, 4, 3, 4], [1, 2, float("nan"), 4], [True, 2, 3, 4], ["1", 2, 3, 4],
              "1,2,3,4"):
    with pytest.raises(loaders.RowError, match="bad box"):
      loaders.parse_box(bad)
