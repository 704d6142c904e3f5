"""The LRS-GRO reader on the real RL split (paired with generated images), with broken rows and files."""

import collections
import json

import numpy as np
import pytest
from PIL import Image

from zoomjax.data import lrs_gro as L
from zoomjax.data import pipeline as PL

from _data import rl_jsonl

RL_JSONL = str(rl_jsonl())


def image_size_for(name: str) -> tuple[int, int]:
  """A deterministic, varied (width, height) per image name (small, so 625 images are written fast)."""
  h = sum(ord(c) * (i + 7) for i, c in enumerate(name))
  return 200 + h % 700, 150 + (h // 7) % 800


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  """rl.jsonl's rows and an image root holding one small generated image per image name."""
  root = tmp_path_factory.mktemp("lrs_gro")
  with open(RL_JSONL, encoding="utf-8") as f:
    lines = [ln for ln in f.read().splitlines() if ln.strip()]
  rows = [json.loads(ln) for ln in lines]
  images = root / "images"
  images.mkdir()
  for name in sorted({r["image_name"] for r in rows}):
    Image.new("RGB", image_size_for(name), (90, 120, 60)).save(images / name)
  return root, lines, rows


def test_real_counts_and_boxes(real):
  root, lines, rows = real
  src = L.LrsGroSource(RL_JSONL, root / "images")
  assert src.problems == [] and len(src) == len(rows) == 6622
  c = src.counts()
  assert c["type"] == collections.Counter(r["type"] for r in rows)
  assert c["type"] == {"object": 3431, "region": 1598, "global": 1593}
  assert c["category"] == collections.Counter(r["category"] for r in rows)
  assert len(c["image"]) == len({r["image_name"] for r in rows})
  for i in (0, 2, 5, 777, 4000, 6621):
    row, raw = src[i], rows[i]
    assert row.question_id == raw["question_id"] and list(row.bbox) == raw["bbox"]
    w, h = image_size_for(raw["image_name"])
    assert src.image_size(row) == (w, h)
    if raw["bbox"]:
      s = max(w, h) / 1024
      assert src.box_original(row) == pytest.approx([v * s for v in raw["bbox"]])
    else:
      assert src.box_original(row) is None


def test_broken_rows_and_files_are_reported(real, tmp_path):
  root, lines, rows = real
  images = root / "images"
  (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
  good = dict(rows[2])
  extra = [
      "{not json",                                                                  # malformed line
      json.dumps({**good, "question_id": "X-escape", "image_name": "../../etc/passwd"}),
      json.dumps({**good, "question_id": "X-missing", "image_name": "no_such_image.png"}),
      json.dumps({**good, "question_id": "X-corrupt", "image_name": "corrupt.png"}),
      json.dumps({**good, "question_id": "X-box", "bbox": [10, 10, 5, 20]}),
      json.dumps({**good, "question_id": "X-type", "type": "galaxy"}),
      json.dumps({k: v for k, v in good.items() if k != "question"} | {"question_id": "X-noq"}),
      json.dumps({**good}),                                                         # duplicate id
  ]
  path = tmp_path / "rl_broken.jsonl"
  path.write_text("\n".join(lines[:50] + extra + lines[50:60]) + "\n", encoding="utf-8")
  src = L.LrsGroSource(path, images)
  assert len(src) == 60
  got = {p.line: p for p in src.problems}
  assert sorted(got) == list(range(51, 59))
  assert "invalid JSON" in got[51].reason
  assert "outside the image root" in got[52].reason and got[52].question_id == "X-escape"
  assert "ImageNotFoundError" in got[53].reason
  assert "ImageDecodeError" in got[54].reason
  assert "bbox" in got[55].reason and "type" in got[56].reason and "question" in got[57].reason
  assert "duplicate" in got[58].reason
  assert "8 problem(s)" in src.report() and "line 51" in src.report()


def test_rl_pipeline_survives_a_truncated_image(real, tmp_path):
  """An image whose header is fine but whose data is cut passes the source check and fails at decode:
  the batch keeps its static shape, marks the row invalid and counts it."""
  root, lines, rows = real
  images = root / "images"
  arr = np.random.default_rng(0).integers(0, 255, (700, 900, 3), dtype=np.uint8)
  Image.fromarray(arr).save(tmp_path / "full.png")
  data = (tmp_path / "full.png").read_bytes()
  (images / "trunc.png").write_bytes(data[: len(data) // 3])
  bad = {**rows[0], "question_id": "X-trunc", "image_name": "trunc.png"}
  path = tmp_path / "rl_trunc.jsonl"
  path.write_text("\n".join([lines[0], json.dumps(bad), lines[1], lines[2]]) + "\n", encoding="utf-8")
  src = L.LrsGroSource(path, images)
  assert len(src) == 4 and src.problems == []

  from zoomjax.data import tokenizer as T
  tok = T.train_tokenizer([r["question"] for r in rows[:300]], vocab_size=400)
  from zoomjax.data import trajectories as TR
  prompts = PL.RlPromptDataset(src, tok, "released", TR.ImageBudget(max_pixels=56 * 56))
  ds = PL.rl_batches(prompts, 4, pad_id=T.special_ids(tok)["pad_token_id"], shuffle=False, num_epochs=1,
                     shard_index=0, shard_count=1)
  (batch,) = list(iter(PL.to_iter(ds, num_threads=2)))
  assert int(batch["num_skipped"]) == 1
  assert batch["valid"].tolist() == [1, 1, 1, 0] and batch["example_index"].tolist() == [0, 2, 3, -1]
  assert [m and m["question_id"] for m in batch["meta"]] == [rows[0]["question_id"], rows[1]["question_id"],
                                                           rows[2]["question_id"], None]
  assert (batch["attention_mask"][3] == 0).all() and (batch["gt_box"][3] == 0).all()
  w, h = image_size_for(rows[0]["image_name"])
  assert batch["image_size"][0].tolist() == [w, h]
  assert batch["global_scale"][0] == pytest.approx(max(1.0, max(w, h) / 512))
  with pytest.raises(Exception, match="trunc.png"):
    list(iter(PL.rl_batches(prompts, 4, pad_id=0, shuffle=False, num_epochs=1, shard_index=0,
                            shard_count=1, on_error="raise")))
