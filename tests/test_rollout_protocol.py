"""Protocol templates: released prompt text, trajectory segment kinds, segment-wise tokenisation."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from zoomjax.protocol import templates as P


@pytest.fixture(scope="module")
def tok():
  t = Tokenizer(models.BPE())
  t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  t.decoder = decoders.ByteLevel()
  corpus = [P.render_prompt("How many ships are docked?").text, P.render_prompt("q", "multiturn").text] * 3
  t.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=list(P.SPECIAL_TOKENS),
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return t


def test_released_prompt_is_the_release_text():
  text = P.render_prompt("What is it?").text
  assert text.startswith("\n<|im_start|>system\nYou are a helpful assistant. <|im_end|>\n<|im_start|>user\n"
                         "<|vision_start|><|image_pad|><|vision_end|>What is it?\nYou are an intelligent")
  assert text.endswith("never say uncertain.\n<|im_end|>\n<|im_start|>assistant\n")
  assert '[{"bbox_2d": [x_min,y_min,x_max,y_max], "label": "<short description>"}]' in text
  assert text.count(P.IMAGE_PAD) == 1
  # a question with braces is inserted verbatim
  assert "{x}" in P.render_prompt("{x}").text


def test_released_trajectory_forms():
  box = P.released_bbox_json([10, 20, 30.5, 40], "ship")
  assert '{"bbox_2d": [10, 20, 30.5, 40], "label": "ship"}' in box
  r = P.render_released_trajectory("Q?", "scene. " + box, "it is red.", "red")
  kinds = [s.kind for s in r.segments]
  assert kinds == ["prompt", "image", "prompt", "generated", "image", "generated"]
  assert r.num_images == 2
  assert r.segments[3].text.startswith("<think>scene.") and r.segments[3].text.endswith("</think>\n")
  assert r.segments[5].text == "\n<think>it is red.</think>\n<answer>red</answer><|im_end|>"
  r2 = P.render_released_trajectory("Q?", "scene.", "count them.", "3")
  assert [s.kind for s in r2.segments] == ["prompt", "image", "prompt", "generated"]
  assert r2.segments[-1].text == "<think>scene. count them.</think>\n<answer>3</answer><|im_end|>"


def test_multiturn_trajectory_forms():
  call = P.tool_call_text("crop_and_zoom", {"bbox_2d": [1, 2.0, 3.25, 4]})
  assert call == '<tool_call>\n{"name": "crop_and_zoom", "arguments": {"bbox_2d": [1, 2, 3.25, 4]}}\n</tool_call>'
  r = P.render_multiturn_trajectory("Q?", ["<think>a</think>\n" + call, "<think>b</think>\n<answer>x</answer>"])
  assert [s.kind for s in r.segments] == ["prompt", "image", "prompt", "generated", "tool", "image", "tool",
                                          "generated"]
  assert "# Tools" in r.text and '"name": "crop_and_zoom"' in r.text
  assert "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>\n</tool_response>" \
         "<|im_end|>\n<|im_start|>assistant\n<think>b" in r.text
  with pytest.raises(P.ProtocolError):
    P.render_multiturn_trajectory("Q?", ["a", "b"], [])
  with pytest.raises(P.ProtocolError):
    P.render_prompt("Q", "nope")
  with pytest.raises(P.ProtocolError):
    P.render_prompt("Q", "released", version="released-v0")


@pytest.mark.parametrize("protocol", ["released", "multiturn"])
def test_segmentwise_encoding_equals_whole_text(tok, protocol):
  enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
  pad = tok.token_to_id(P.IMAGE_PAD)
  if protocol == "released":
    r = P.render_released_trajectory("How many ships?", "A port.\n" + P.released_bbox_json([1, 2, 3, 4]),
                                     "Three.", "3")
  else:
    r = P.render_multiturn_trajectory(
        "How many?", ["<think>z</think>\n" + P.tool_call_text("crop_and_zoom", {"bbox_2d": [5, 6, 7, 8]}),
                      "<think>ok</think>\n<answer>3</answer>"], [["crop:", P.IMAGE]])
  ids, mask = P.encode_segments(r, enc, [1] * r.num_images, pad)
  assert ids == enc(r.text)  # one pad per image == the unexpanded text
  ids3, mask3 = P.encode_segments(r, enc, [3] * r.num_images, pad)
  assert len(ids3) == len(ids) + 2 * r.num_images and ids3.count(pad) == 3 * r.num_images
  # generated tokens decode back to exactly the generated text
  gen = [i for i, m in zip(ids, mask) if m]
  assert tok.decode(gen, skip_special_tokens=False) == "".join(s.text for s in r.segments if s.trainable)
  assert all(m == 0 for i, m in zip(ids3, mask3) if i == pad)
