"""The embedded default's tokenizer: a byte-level BPE trained in-process, with Qwen2.5-VL's added tokens.

`train_tokenizer(texts, vocab_size)` trains a BPE with Qwen2's pre-tokenisation (its split regex, then
byte-level, digits one per token) on the given texts, then appends Qwen2.5-VL's 22 added tokens in
Qwen's order (`<|endoftext|>` … `<|file_sep|>`; `<tool_call>`/`</tool_call>` and the FIM tokens are
added but not special, as in Qwen's files), so the layout mirrors Qwen's vocabulary at a small size.
`save_tokenizer` writes a transformers tokenizer directory (`tokenizer.json`, `tokenizer_config.json`
with a Qwen2-VL-style chat template that also renders tools) that `AutoTokenizer.from_pretrained` loads
offline. The Toy Earth recipe (which text, which extra tokens) is `zoomjax.data.toy_earth_tokenizer`.

Special ids always come from the tokenizer (`special_ids(tok)`), never from constants: they differ
between this tokenizer and Qwen's.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable, Sequence

from zoomjax.protocol import templates as P

# Qwen2.5-VL's added tokens, in Qwen's id order (151643 ...), with Qwen's `special` flags.
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2 / Qwen2.5): digits are single tokens.
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_VOCAB_SIZE = 1024  # total, added tokens included

# Qwen2-VL's chat template (images / videos in list contents, default system prompt) extended with
# Qwen2.5's tool block (`tools=`), `tool` messages as `<tool_response>` user turns and assistant
# `tool_calls`. With `tools=[CROP_AND_ZOOM_SCHEMA]` it renders `protocol.render_prompt(q, "multiturn")`
# and `render_multiturn_trajectory` exactly. All output goes through `{{ }}` expressions, so the
# template's own layout whitespace never reaches the text.
CHAT_TEMPLATE = r"""
{%- set image_count = namespace(value=0) %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = 'You are a helpful assistant.' %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- '<|im_start|>system\n' }}
{%- if system_message is string %}
    {{- system_message }}
{%- else %}
    {%- for part in system_message %}
        {%- if 'text' in part %}{{- part['text'] }}{%- endif %}
    {%- endfor %}
{%- endif %}
{%- if tools %}
    {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' ~ (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in loop_messages %}
    {%- set is_tool = message['role'] == 'tool' %}
    {%- if is_tool %}
        {%- if loop.first or loop_messages[loop.index0 - 1]['role'] != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
    {%- else %}
        {{- '<|im_start|>' ~ message['role'] ~ '\n' }}
    {%- endif %}
    {%- if message['content'] is string %}
        {{- message['content'] }}
    {%- elif message['content'] %}
        {%- for part in message['content'] %}
            {%- if part['type'] == 'image' or 'image' in part or 'image_url' in part %}
                {%- set image_count.value = image_count.value + 1 %}
                {%- if add_vision_id %}
                    {{- 'Picture ' ~ image_count.value ~ ': ' }}
                {%- endif %}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
            {%- elif part['type'] == 'video' or 'video' in part %}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
            {%- elif 'text' in part %}
                {{- part['text'] }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {%- if message['tool_calls'] %}
        {%- for call in message['tool_calls'] %}
            {%- if call['function'] is defined %}
                {%- set call = call['function'] %}
            {%- endif %}
            {%- if message['content'] or not loop.first %}
                {{- '\n' }}
            {%- endif %}
            {{- '<tool_call>\n{"name": "' ~ call['name'] ~ '", "arguments": ' ~ (call['arguments'] | tojson) ~ '}\n</tool_call>' }}
        {%- endfor %}
    {%- endif %}
    {%- if is_tool %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or loop_messages[loop.index0 + 1]['role'] != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""".strip()


class TokenizerError(ValueError):
  """A tokenizer lacks a token zoomjax needs, or cannot be loaded."""


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2,
                    extra_tokens: Sequence[str] = ()):
  """Trains a byte-level BPE (`tokenizers.Tokenizer`) with Qwen's pre-tokenisation and added tokens.

  Args:
    texts: training text. Added-token strings in it are removed first (they are added afterwards as
      whole tokens, so merges are not wasted on them).
    vocab_size: total vocabulary, added tokens included (>= 256 byte tokens + the added tokens).
    extra_tokens: more added tokens (not special: they decode as text), e.g. protocol tags; their ids
      come right after the BPE vocabulary, before Qwen's added tokens (which keep the last ids).
  """
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
  extra = [t for t in dict.fromkeys(extra_tokens) if t not in {c for c, _ in QWEN_ADDED_TOKENS}]
  n_added = len(QWEN_ADDED_TOKENS) + len(extra)
  if vocab_size < 256 + n_added:
    raise TokenizerError(f"vocab_size must be >= {256 + n_added} (bytes + added tokens), got {vocab_size}")
  strip = sorted([t for t, _ in QWEN_ADDED_TOKENS] + extra, key=len, reverse=True)

  def clean():
    for t in texts:
      for s in strip:
        t = t.replace(s, "\n")
      yield t

  tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
  trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_added, min_frequency=min_frequency,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
                                show_progress=False)
  tok.train_from_iterator(clean(), trainer)
  for content, special in [(t, False) for t in extra] + list(QWEN_ADDED_TOKENS):
    t = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
    (tok.add_special_tokens if special else tok.add_tokens)([t])
  return tok


def save_tokenizer(tok, out_dir: str | os.PathLike, model_max_length: int = 32768) -> str:
  """Writes `tok` (a `tokenizers.Tokenizer`) as a transformers tokenizer directory; returns the path."""
  from transformers import PreTrainedTokenizerFast
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  specials = [t for t, s in QWEN_ADDED_TOKENS if s]
  fast = PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
      unk_token=None, additional_special_tokens=[t for t in specials if t not in ("<|endoftext|>", "<|im_end|>")],
      model_max_length=model_max_length, padding_side="right", clean_up_tokenization_spaces=False,
      split_special_tokens=False)
  fast.chat_template = CHAT_TEMPLATE
  fast.save_pretrained(out_dir)
  # The chat template also goes into tokenizer_config.json (older loaders read it only from there).
  cfg_path = os.path.join(out_dir, "tokenizer_config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg.setdefault("chat_template", CHAT_TEMPLATE)
  cfg["zoomjax"] = {"kind": "toy-bpe", "vocab_size": tok.get_vocab_size(with_added_tokens=True)}
  with open(cfg_path, "w") as f:
    json.dump(cfg, f, indent=1, ensure_ascii=False)
  return out_dir


def load_tokenizer(path: str | os.PathLike):
  """`AutoTokenizer.from_pretrained(path)` offline (a directory with tokenizer.json / tokenizer_config.json)."""
  from transformers import AutoTokenizer
  try:
    return AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
  except (OSError, ValueError) as e:
    raise TokenizerError(f"cannot load a tokenizer from {path}: {e}") from e


def token_id(tok, token: str) -> int:
  """Id of a single (added) token in a transformers tokenizer or a `tokenizers.Tokenizer`; raises if absent."""
  if hasattr(tok, "token_to_id"):         # tokenizers.Tokenizer
    i = tok.token_to_id(token)
  else:                                   # transformers
    i = tok.convert_tokens_to_ids(token)
    unk = getattr(tok, "unk_token_id", None)
    if i is not None and unk is not None and i == unk and token != getattr(tok, "unk_token", None):
      i = None
  if i is None:
    raise TokenizerError(f"the tokenizer has no token {token!r}")
  return int(i)


def special_ids(tok) -> dict[str, int]:
  """The `ModelConfig` special-token fields from a tokenizer (Qwen2.5-VL conventions).

  Returns keys `image_token_id, video_token_id, vision_start_token_id, vision_end_token_id,
  eos_token_id (<|im_end|>), pad_token_id (<|endoftext|>), bos_token_id (<|endoftext|>, as Qwen's
  config)`; e.g. `ModelConfig.tiny(vocab_size=padded_vocab_size(tok), **special_ids(tok))`.
  """
  return {"image_token_id": token_id(tok, P.IMAGE_PAD),
          "video_token_id": token_id(tok, "<|video_pad|>"),
          "vision_start_token_id": token_id(tok, P.VISION_START),
          "vision_end_token_id": token_id(tok, P.VISION_END),
          "eos_token_id": token_id(tok, P.IM_END),
          "pad_token_id": token_id(tok, P.ENDOFTEXT),
          "bos_token_id": token_id(tok, P.ENDOFTEXT)}


def vocab_size(tok) -> int:
  """Number of ids the tokenizer can produce (added tokens included)."""
  if hasattr(tok, "get_vocab_size"):
    return int(tok.get_vocab_size(with_added_tokens=True))
  return len(tok)


def padded_vocab_size(tok, multiple: int = 64) -> int:
  """`vocab_size(tok)` rounded up to a multiple (an embedding size that shards evenly)."""
  n = vocab_size(tok)
  return -(-n // multiple) * multiple


def encoder(tok) -> Callable[[str], list[int]]:
  """`text -> ids` without added BOS/EOS, for a transformers tokenizer or a `tokenizers.Tokenizer`."""
  backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
  if backend is None and hasattr(tok, "encode_batch"):
    backend = tok
  if backend is not None:
    return lambda s: backend.encode(s, add_special_tokens=False).ids
  return lambda s: tok.encode(s, add_special_tokens=False)
