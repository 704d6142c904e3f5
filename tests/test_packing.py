"""Packed SFT (`zoomjax.data.packing`): a packed example's logits equal transformers' for it alone, the
packer keeps every example exactly once within its budgets, and a packed stream resumes exactly."""
import numpy as np
import pytest

from zoomjax import hf
from zoomjax.data.packing import packed_sft_pieces
from zoomjax.model import forward
from zoomjax.model import reference as ref_lib
from zoomjax.model.config import ModelConfig
from zoomjax.model.inputs import prepare_inputs, segments

TOL = 1e-4


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
  cfg = ModelConfig.tiny()
  d = tmp_path_factory.mktemp("pack_ref")
  model = ref_lib.build_reference(cfg, seed=3, save_dir=d)
  got_cfg, params = hf.load(d, scan_layers=cfg.scan_layers)
  return cfg, got_cfg, params, model


def _image_tokens(cfg, grid):
  return [cfg.vision_start_token_id] + [cfg.image_token_id] * int(np.prod(grid) // 4) + [cfg.vision_end_token_id]


def _examples(cfg, rs):
  """Three examples: two images of different sizes; one image; text only."""
  txt = lambda n: list(rs.randint(0, cfg.text.vocab_size - 16, n))  # noqa: E731
  grids = [np.array([[1, 8, 12], [1, 4, 6]]), np.array([[1, 6, 10]]), np.zeros((0, 3), np.int64)]
  ids = [txt(4) + _image_tokens(cfg, grids[0][0]) + txt(3) + _image_tokens(cfg, grids[0][1]) + txt(5),
         txt(2) + _image_tokens(cfg, grids[1][0]) + txt(7),
         txt(9)]
  pix = [rs.randn(int(g.prod(-1).sum()), cfg.vision.patch_dim).astype(np.float32) for g in grids]
  return ids, grids, pix


def test_packed_logits_equal_reference_alone(loaded):
  cfg, got_cfg, params, model = loaded
  ids, grids, pix = _examples(cfg, np.random.RandomState(0))
  t = sum(map(len, ids)) + 5  # 5 padding slots at the end
  row = np.full((1, t), cfg.pad_token_id, np.int64)
  seg = np.zeros((1, t), np.int64)
  at = 0
  for k, x in enumerate(ids):
    row[0, at:at + len(x)] = x
    seg[0, at:at + len(x)] = k + 1
    at += len(x)
  ours = np.asarray(forward(got_cfg, params, row, np.concatenate(pix), np.concatenate(grids), attention_mask=seg))
  at = 0
  for x, g, p in zip(ids, grids, pix):
    x = np.asarray(x)[None]
    alone = ref_lib.reference_logits(model, cfg, x, None, p if len(g) else None, g if len(g) else None)
    np.testing.assert_allclose(ours[0, at:at + x.shape[1]], alone[0], atol=TOL, rtol=0)
    at += x.shape[1]


def test_packed_positions_restart_per_example(loaded):
  cfg = loaded[0]
  ids, grids, _ = _examples(cfg, np.random.RandomState(1))
  row = np.concatenate([np.asarray(x) for x in ids])[None]
  seg = np.concatenate([np.full(len(x), k + 1) for k, x in enumerate(ids)])[None]
  got = prepare_inputs(cfg, row, seg, np.concatenate(grids))["position_ids"]
  at = 0
  for x, g in zip(ids, grids):
    ref, _ = ref_lib.reference_rope_index(cfg, np.asarray(x)[None], None, g if len(g) else None)
    np.testing.assert_array_equal(got[:, 0, at:at + len(x)], np.asarray(ref)[:, 0])
    at += len(x)
  assert segments(np.array([0, 2, 2, 1, 1, 0])) == [2, 1]
  # text only, packed: every example from 0
  text = prepare_inputs(cfg, np.ones((1, 6), np.int64), np.array([[1, 1, 1, 2, 2, 0]]))["position_ids"]
  np.testing.assert_array_equal(text[0, 0], [0, 1, 2, 0, 1, 5])


class _Toy:
  """Map-style examples of varied length: example i has tokens [i*1000 + j], loss 1 after the first,
  and i % 3 images of 4 patches; example 5 is unreadable and example 7 is too long."""

  def __init__(self, n=24):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if i == 5:
      raise OSError("corrupt image")
    n = 40 if i == 7 else 3 + (i * 7) % 9
    k = i % 3
    return {"input_ids": np.arange(n) + 1000 * i, "loss_mask": np.r_[0, np.ones(n - 1)].astype(np.int32),
            "pixel_values": np.full((4 * k, 1176), i, np.float32), "image_grid_thw": np.tile([[1, 2, 2]], (k, 1)),
            "question_id": str(i)}


def _pieces(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)], it


def test_packer_keeps_every_example_once_within_budgets():
  src = _Toy()
  ds = packed_sft_pieces(src, seq_len=24, max_patches=12, max_images=3, pad_id=-7, seed=1, num_epochs=1, bins=3)
  pieces = list(iter(ds))
  seen, skipped = [], 0
  for p in pieces:
    assert p["input_ids"].shape == (1, 24) and p["pixel_values"].shape == (12, 1176)
    assert p["image_grid_thw"].shape == (3, 3)
    seg, ids = p["attention_mask"][0], p["input_ids"][0]
    assert (ids[seg == 0] == -7).all() and (p["loss_mask"][0][seg == 0] == 0).all()
    rows = 0
    for s in segments(seg):
      tok = ids[seg == s]
      i = int(tok[0]) // 1000
      np.testing.assert_array_equal(tok, np.arange(len(tok)) + 1000 * i)  # whole, in order
      assert p["loss_mask"][0][seg == s][0] == 0
      k = i % 3  # its images follow the previous examples' in order
      np.testing.assert_array_equal(p["pixel_values"][rows:rows + 4 * k, 0], i)
      rows += 4 * k
      seen.append(i)
    assert (p["pixel_values"][rows:] == 0).all()
    skipped += int(p["num_skipped"])
  assert sorted(seen) == [i for i in range(24) if i not in (5, 7)]
  assert skipped == 2
  per_piece = np.mean([len(segments(p["attention_mask"][0])) for p in pieces])
  token_fill = np.mean([(p["attention_mask"] > 0).mean() for p in pieces])
  assert per_piece > 1.5 and 0 < token_fill <= 1


def test_packed_stream_resumes_exactly():
  ds = packed_sft_pieces(_Toy(), seq_len=24, max_patches=12, max_images=3, pad_id=0, seed=4, bins=2)
  first, it = _pieces(ds, 5)
  state = it.get_state()
  rest = [next(it) for _ in range(6)]
  it2 = iter(ds)
  it2.set_state(state)
  again = [next(it2) for _ in range(6)]
  for a, b in zip(rest, again):
    for k in ("input_ids", "attention_mask", "loss_mask", "pixel_values", "image_grid_thw"):
      np.testing.assert_array_equal(a[k], b[k])


def test_packer_raises_when_asked():
  with pytest.raises(OSError):
    list(iter(packed_sft_pieces(_Toy(), seq_len=64, max_patches=12, max_images=3, pad_id=0, num_epochs=1,
                                shuffle=False, on_error="raise")))
  with pytest.raises(ValueError, match="seq_len"):
    packed_sft_pieces(_Toy(), seq_len=0, max_patches=12, max_images=3, pad_id=0)


def test_packed_sft_run_trains_on_whole_examples(tmp_path):
  """`data.pack=3` through the real trainer (synthetic copy task, 8-device mesh): each step's rows hold
  about three examples each, the held-out evaluation stays unpacked, and the loss falls."""
  from zoomjax.train.config import load_config
  from zoomjax.train.logger import read_jsonl
  from zoomjax.train.trainer import train
  common = ["log.every=1", "optim.lr=3e-3", "optim.warmup_steps=0", "log.progress=false", "log.tensorboard=false",
            "checkpoint.export_params=false", "checkpoint.every=0", "steps=6", "data.batch_size=8"]
  cfg = load_config("synthetic_tiny", common + [f"run_dir={tmp_path / 'packed'}", "data.pack=3", "data.seq_len=96",
                                                "eval.batches=1"])
  train(cfg)
  rows = [r for r in read_jsonl(str(tmp_path / "packed" / "metrics.jsonl")) if r.get("split") is None]
  padded = load_config("synthetic_tiny", common + [f"run_dir={tmp_path / 'padded'}", "data.seq_len=32", "eval.batches=0"])
  train(padded)
  ref = [r for r in read_jsonl(str(tmp_path / "padded" / "metrics.jsonl")) if r.get("split") is None]
  # a synthetic example is 22 tokens with 9 targets: 8 padded rows train 72 targets, 8 packed rows of 96
  # tokens hold 4 examples each (the image budget is 3 x 1 image: 3 examples) = 216
  assert [r["tokens"] for r in ref] == [72.0] * 6
  assert [r["tokens"] for r in rows] == [216.0] * 6
  assert np.isfinite([r["loss"] for r in rows]).all() and rows[-1]["loss"] < rows[0]["loss"] - 0.1
  ev = [r for r in read_jsonl(str(tmp_path / "packed" / "metrics.jsonl")) if r.get("split") == "eval"]
  assert ev and ev[-1]["tokens"] > 0
