"""The embedded default's tokenizer: Qwen's added tokens, offline AutoTokenizer, round trips, chat template."""

import pytest

from zoomjax.data import lrs_gro as L
from zoomjax.data import tokenizer as T
from zoomjax.data import trajectories as TR
from zoomjax.data import toy_earth, toy_earth_tokenizer as TT
from zoomjax.data.toy_earth_scene import POSITIONS
from zoomjax.model.config import ModelConfig
from zoomjax.protocol import templates as P

VOCAB = TT.DEFAULT_VOCAB_SIZE


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  out = tmp_path_factory.mktemp("tok")
  raw = T.train_tokenizer(TT.corpus(seed=0, num_images=6), vocab_size=VOCAB, extra_tokens=TT.EXTRA_TOKENS)
  T.save_tokenizer(raw, out)
  return raw, T.load_tokenizer(out)


def test_added_tokens_in_qwen_order(saved):
  raw, tok = saved
  assert len(tok) == VOCAB == T.vocab_size(raw)
  first = VOCAB - len(T.QWEN_ADDED_TOKENS)
  for k, (content, special) in enumerate(T.QWEN_ADDED_TOKENS):
    assert tok.convert_tokens_to_ids(content) == first + k == raw.token_to_id(content)
    assert tok.encode(content, add_special_tokens=False) == [first + k]   # one token, never split
  assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
  assert "<tool_call>" not in tok.all_special_tokens and "<|image_pad|>" in tok.all_special_tokens


def test_special_ids_feed_model_config(saved):
  raw, tok = saved
  ids = T.special_ids(tok)
  assert ids == T.special_ids(raw)
  assert ids["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
  assert ids["eos_token_id"] == tok.convert_tokens_to_ids("<|im_end|>")
  assert ids["pad_token_id"] == ids["bos_token_id"] == tok.convert_tokens_to_ids("<|endoftext|>")
  assert len(set(ids.values())) == 6
  cfg = ModelConfig.tiny(vocab_size=T.padded_vocab_size(tok), **ids)
  assert cfg.image_token_id == ids["image_token_id"] and cfg.text.vocab_size % 64 == 0
  with pytest.raises(T.TokenizerError):
    T.token_id(tok, "<|not_a_token|>")


@pytest.mark.parametrize("text", [
    "What color are the markings on the roof of the large building in the top-left part of the image?",
    '<think>I need a crop.</think>\n```json\n[\n    {"bbox_2d": [12, 345, 67, 890], "label": "ship"}\n]\n```\n',
    "Unseen words: Zürich, naïve café, 東京, emoji 🛰️, tabs\tand\r\nCRLF, trailing space ",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n",
])
def test_round_trip(saved, text):
  raw, tok = saved
  ids = tok.encode(text, add_special_tokens=False)
  assert tok.decode(ids) == text
  assert T.encoder(tok)(text) == T.encoder(raw)(text) == ids


def test_digits_and_boundaries(saved):
  _, tok = saved
  assert len(tok.encode("1024", add_special_tokens=False)) == 4           # one token per digit, as Qwen
  ids = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
  assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
  # The toy vocabulary compresses what the model writes (its merges go to the assistant text first) and
  # still the released prompt, far below one token per byte.
  row = L.parse_row(toy_earth.text_rows(0, 100)[-1])
  gen = "".join(s.text for s in TR.render(row, 2048, 2048).segments if s.kind == "generated")
  assert len(tok.encode(gen, add_special_tokens=False)) < len(gen.encode()) / 3
  prompt = P.render_prompt("How many water bodies are visible in the image?").text
  assert len(tok.encode(prompt, add_special_tokens=False)) < len(prompt.encode()) / 2


def test_chat_template_matches_protocol(saved):
  _, tok = saved
  q = "Is the ship in the top part of the image moving or stationary?"
  user = [{"type": "image"}, {"type": "text", "text": q + P.MULTITURN_INSTRUCTION.format(max_turns=3)}]
  msgs = [{"role": "user", "content": user}]
  text = tok.apply_chat_template(msgs, tools=[P.CROP_AND_ZOOM_SCHEMA], add_generation_prompt=True, tokenize=False)
  assert text == P.render_prompt(q, "multiturn").text
  call = P.tool_call_text("crop_and_zoom", {"bbox_2d": [1, 2, 30, 40]})
  msgs += [{"role": "assistant", "content": "<think>zoom</think>\n" + call},
           {"role": "tool", "content": [{"type": "image"}]},
           {"role": "assistant", "content": "<answer>moving</answer>"}]
  full = tok.apply_chat_template(msgs, tools=[P.CROP_AND_ZOOM_SCHEMA], tokenize=False)
  ref = P.render_multiturn_trajectory(q, ["<think>zoom</think>\n" + call, "<answer>moving</answer>"]).text
  assert full == ref + "\n"   # the template ends every turn with "<|im_end|>\n"
  plain = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
  assert plain == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_protocol_tags_and_answer_words_are_single_tokens(saved):
  raw, tok = saved
  first = VOCAB - len(T.QWEN_ADDED_TOKENS) - len(TT.EXTRA_TOKENS)
  for k, t in enumerate(TT.EXTRA_TOKENS):                         # added, not special: decoded as text
    assert tok.encode(t, add_special_tokens=False) == [first + k] and t not in tok.all_special_tokens
  words = {w for vocab in toy_earth.VOCAB.values() for w in vocab if " " not in w}
  for w in words:
    assert len(tok.encode(w, add_special_tokens=False)) == 1, w   # as the model writes it after <answer>
  ids = tok.encode("<answer>farmland</answer>", add_special_tokens=False)
  assert len(ids) == 3 and tok.decode(ids) == "<answer>farmland</answer>"


def test_cell_names_are_single_tokens(saved):
  _, tok = saved
  cells = [c for row in POSITIONS for c in row]
  assert set(TT.POSITION_TOKENS) == {" " + c for c in cells if "-" in c}
  q = "Is the paved area in the bottom-right part of the image occupied or empty?"
  ids = tok.encode(q, add_special_tokens=False)
  assert tok.decode(ids) == q and tok.convert_tokens_to_ids(" bottom-right") in ids
  for c in cells:   # every cell name after "the" is one id, the same one in the question and in a label
    one = tok.encode(f" the {c} part", add_special_tokens=False)
    assert len(one) == 3, (c, [tok.decode([i]) for i in one])
    assert one[1] in tok.encode(f'{{"label": "paved area in the {c} part"', add_special_tokens=False)


def test_toy_prompt_is_short(saved):
  _, tok = saved
  q = "How many water bodies are visible in the image?"
  toy = tok.encode(P.render_prompt(q, version=P.TOY_VERSION).text, add_special_tokens=False)
  released = tok.encode(P.render_prompt(q).text, add_special_tokens=False)
  assert len(toy) < 80 < 400 < len(released)


def test_too_small_vocab():
  with pytest.raises(T.TokenizerError):
    T.train_tokenizer(["a b c"], vocab_size=100)
