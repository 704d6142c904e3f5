"""SFT trajectories (ids, masks, images) and the grain pipelines (resume, sharding, static shapes)."""

import numpy as np
import pytest

from zoomjax.data import lrs_gro as L
from zoomjax.data import pipeline as PL
from zoomjax.data import tokenizer as T
from zoomjax.data import toy_earth as TE
from zoomjax.data import trajectories as TR
from zoomjax.processing import preprocess_image
from zoomjax.protocol import parse
from zoomjax.protocol import templates as P

BUDGET = TR.ImageBudget(max_pixels=112 * 112)   # small images keep the test fast


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  out = tmp_path_factory.mktemp("toy")
  TE.generate(str(out), seed=11, num_images=3, size=1536, workers=1)
  src = L.LrsGroSource(out / "sft.jsonl")
  texts = [TR.render(r, 1536, 1536, p).text for r in src for p in P.PROTOCOLS]
  tok = T.train_tokenizer(texts, vocab_size=700)
  return out, src, tok


def first(src, **kw):
  return next(r for r in src if all(getattr(r, k) == v for k, v in kw.items()))


@pytest.mark.parametrize("protocol", P.PROTOCOLS)
def test_trajectory_masks(data, protocol):
  _, src, tok = data
  ds = TR.SftDataset(src, tok, protocol, BUDGET)
  row = first(src, type="object")
  ex = ds[src.rows.index(row)]
  ids, mask = ex["input_ids"], ex["loss_mask"]
  sid = T.special_ids(tok)
  grids = ex["image_grid_thw"]
  assert grids.shape == (2, 3)                                   # global view + crop
  assert (ids == sid["image_token_id"]).sum() == int(grids.prod(1).sum()) // 4
  assert ex["pixel_values"].shape == (int(grids.prod(1).sum()), 1176)
  for key in ("image_token_id", "vision_start_token_id", "vision_end_token_id"):
    assert (mask[ids == sid[key]] == 0).all() and (ids == sid[key]).sum() >= 2
  # Independent reference: the generated segments' text, tokenised alone, is what the mask selects.
  rendered = TR.render(row, 1536, 1536, protocol)
  gen = [s.text for s in rendered.segments if s.kind == "generated"]
  enc = T.encoder(tok)
  assert ids[mask == 1].tolist() == [t for g in gen for t in enc(g)]
  # The prompt (through "<|im_start|>assistant\n") is all 0; the final <|im_end|> is a target.
  prompt_len = len(enc(P.render_prompt(row.question, protocol).text.split(P.IMAGE_PLACEHOLDER)[0])) \
      + 2 + int(grids[0].prod()) // 4 + len(enc(P.render_prompt(row.question, protocol).text.split(P.IMAGE_PLACEHOLDER)[1]))
  assert (mask[:prompt_len] == 0).all() and mask[prompt_len] == 1
  assert ids[-1] == sid["eos_token_id"] and mask[-1] == 1
  generated = tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
  assert generated.endswith(f"<answer>{row.ground_truth}</answer><|im_end|>")
  # The box the model learns to ask for is in global-view pixels: 1024 frame -> 1536 px -> 512 px view.
  expect = [round(v * 1536 / 1024 / 3) for v in row.bbox]
  assert TR.global_box(row, 1536, 1536) == expect
  assert f'"bbox_2d": [{", ".join(map(str, expect))}]' in generated
  # The crop in the batch is the GT crop: same pixels as preprocessing it directly.
  img = src.store.get(row.image_name)
  crop = TR.I.crop_and_zoom(img, row.box_original(*img.size))
  pv, g = preprocess_image(crop, max_pixels=BUDGET.max_pixels)
  assert np.array_equal(ex["pixel_values"][-len(pv):], pv) and (grids[1] == g).all()
  if protocol == "multiturn":   # the tool-response turn is not a target
    resp = enc("\n" + P.IM_START + "user\n" + P.TOOL_RESPONSE_START + "\n")
    n = len(resp)
    starts = [i for i in range(len(ids) - n) if ids[i:i + n].tolist() == resp]
    assert len(starts) == 1 and (mask[starts[0]:starts[0] + n] == 0).all()


def test_global_question_has_one_image(data):
  _, src, tok = data
  row = first(src, type="global")
  ex = TR.SftDataset(src, tok, "released", BUDGET)[src.rows.index(row)]
  assert ex["image_grid_thw"].shape == (1, 3)
  assert "bbox_2d" not in tok.decode(ex["input_ids"][ex["loss_mask"] == 1].tolist())


def test_resume_gives_identical_batches(data):
  _, src, tok = data
  ds = TR.SftDataset(src, tok, "released", BUDGET)
  pad = T.special_ids(tok)["pad_token_id"]
  batches = PL.sft_batches(ds, 4, pad_id=pad, seed=7, num_epochs=3, shard_index=0, shard_count=1)
  it = iter(PL.to_iter(batches, num_threads=2))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = iter(PL.to_iter(batches, num_threads=3))
  resumed.set_state(state)
  got = [next(resumed) for _ in range(3)]
  for a, b in zip(expected, got):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Epochs are reshuffled, and each epoch covers every example once.
  n = len(ds)
  order = [int(i) for k in range(len(batches)) for i in batches[k]["example_index"]]
  epochs = [order[:n], order[n:2 * n]]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(n)) and epochs[0] != epochs[1]


def test_sharding_and_static_shapes(data):
  _, src, tok = data
  ds = TR.SftDataset(src, tok, "released", BUDGET)
  pad = T.special_ids(tok)["pad_token_id"]
  kw = dict(pad_id=pad, seed=1, num_epochs=1)
  whole = PL.sft_batches(ds, 4, shard_index=0, shard_count=1, **kw)
  halves = [PL.sft_batches(ds, 4, shard_index=p, shard_count=2, **kw) for p in (0, 1)]
  assert len(halves[0]) == len(halves[1]) == len(whole)
  for g in range(len(whole)):
    parts = [h[g]["example_index"].tolist() for h in halves]
    assert sorted(parts[0] + parts[1]) == sorted(whole[g]["example_index"].tolist())
  b = whole[0]
  T_ = b["input_ids"].shape[1]
  assert T_ in PL.Buckets().seq_len
  assert b["pixel_values"].shape[0] in PL.Buckets().pixel_rows
  lengths = b["attention_mask"].sum(1)
  for r in range(4):
    assert (b["input_ids"][r, lengths[r]:] == pad).all() and (b["loss_mask"][r, lengths[r]:] == 0).all()
  used_images = int((b["image_grid_thw"].sum(1) > 0).sum())
  used_rows = int(b["image_grid_thw"][:used_images].prod(1).sum())
  assert (b["image_grid_thw"][used_images:] == 0).all() and (b["pixel_values"][used_rows:] == 0).all()
  # A short last batch keeps the static batch size, with invalid rows.
  tail = PL.sft_batches(ds, 5, shard_index=0, shard_count=1, drop_remainder=False, **kw)
  last = tail[len(tail) - 1]
  assert last["input_ids"].shape[0] == 5
  assert int(last["valid"].sum()) == (len(ds) % 5 or 5)
  with pytest.raises(ValueError):
    PL.sft_batches(ds, 3, shard_index=0, shard_count=2, **kw)


def test_too_long_examples(data):
  _, src, tok = data
  ds = TR.SftDataset(src, tok, "released", BUDGET)
  small = PL.Buckets(seq_len=(64,))
  b = PL.sft_batches(ds, 2, pad_id=0, shuffle=False, num_epochs=1, shard_index=0, shard_count=1, buckets=small)
  first_batch = b[0]
  assert first_batch["valid"].tolist() == [0, 0] and int(first_batch["num_skipped"]) == 2
  strict = PL.sft_batches(ds, 2, pad_id=0, shuffle=False, num_epochs=1, shard_index=0, shard_count=1,
                          buckets=small, on_error="raise")
  with pytest.raises(PL.ExampleTooLongError):
    strict[0]


@pytest.mark.parametrize("protocol", P.PROTOCOLS)
def test_rl_prompts(data, protocol):
  out, _, tok = data
  src = L.LrsGroSource(out / "rl.jsonl")
  prompts = PL.RlPromptDataset(src, tok, protocol, BUDGET, max_turns=2)
  sid = T.special_ids(tok)
  ds = PL.rl_batches(prompts, 4, pad_id=sid["pad_token_id"], shuffle=False, num_epochs=1, shard_index=0,
                     shard_count=1)
  b = ds[0]
  for r in range(4):
    row = src[r]
    n = int(b["prompt_length"][r])
    ids = b["input_ids"][r, :n]
    # Reference: the protocol's prompt text with the one placeholder expanded to the view's token count.
    k = int(b["image_grid_thw"][r].prod()) // 4
    text = P.render_prompt(row.question, protocol, **({"max_turns": 2} if protocol == "multiturn" else {})).text
    ref = text.replace(P.IMAGE_PAD, P.IMAGE_PAD * k)
    assert tok.decode(ids.tolist(), skip_special_tokens=False) == ref
    assert b["meta"][r]["answer"] == row.ground_truth and b["has_box"][r] == int(row.has_box)
    if row.has_box:
      np.testing.assert_allclose(b["gt_box"][r], np.asarray(row.bbox) * 1536 / 1024, rtol=1e-6)
    assert b["global_scale"][r] == pytest.approx(3.0) and b["image_size"][r].tolist() == [1536, 1536]


def test_toy_version_and_box_weight(data):
  _, src, tok = data
  row = first(src, type="region")
  plain = TR.SftDataset(src, tok, "released", BUDGET, version=P.TOY_VERSION)[src.rows.index(row)]
  text = tok.decode(plain["input_ids"].tolist())
  assert P.TOY_INSTRUCTION in text and P.RELEASED_INSTRUCTION not in text
  weighted = TR.SftDataset(src, tok, "released", BUDGET, version=P.TOY_VERSION, box_weight=3)[src.rows.index(row)]
  assert np.array_equal(weighted["input_ids"], plain["input_ids"])         # same ids, only the weights differ
  m, w = plain["loss_mask"], weighted["loss_mask"]
  assert set(np.unique(w)) == {0, 1, 3} and ((w > 0) == (m > 0)).all()
  where = row.label.split(" in the ")[1].removesuffix(" part")                  # e.g. "top-left"
  box = ", ".join(map(str, TR.global_box(row, 1536, 1536)))
  # weighted: the position words (intent sentence, label) and the box's numbers, nothing else
  assert tok.decode(weighted["input_ids"][w == 3].tolist()) == f" {where} {where}{box}"
  # the toy block names the referent before its box (same JSON to the parser)
  assert f'{{"label": "{row.label}", "bbox_2d": [{box}]}}' in text
  stage1 = parse.released_stage1(text.rsplit("assistant\n", 1)[1])           # what the model wrote
  # the global view is given (0); the crop's <|vision_start|> is the model's request for it (1)
  starts = np.flatnonzero(plain["input_ids"] == T.special_ids(tok)["vision_start_token_id"])
  assert plain["loss_mask"][starts].tolist() == [0, 1]
  assert parse.parse_crop_request(stage1, "released") == [float(v) for v in TR.global_box(row, 1536, 1536)]
