"""Benchmark loaders on the format samples (../shared/data/formats) and on malformed rows."""
import json
import pathlib

import pytest

from zoomjax.eval import loaders
from zoomjax.eval.score import judge_answer

from _shared import shared_path


def _formats() -> pathlib.Path:
  return shared_path("data", "formats")


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
