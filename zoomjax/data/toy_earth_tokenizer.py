"""The embedded default's tokenizer recipe: a byte-level BPE trained on Toy Earth trajectory text.

    build(out_dir, seed=0, num_images=64) -> out_dir      # trains and saves (transformers format)
    corpus(seed=0, num_images=64) -> list[str]            # the training text (no image is rendered)

`tokenizer.train_tokenizer` does the training; this module chooses the text and the extra tokens:

* The protocol tags (`<think>`, `</think>`, `<answer>`, `</answer>`) and the box key `"bbox_2d"` are added
  tokens (not special: they decode as text), so each is one id the model writes in one step.
* So are the hyphenated cell names with their leading space (` top-left`, ` bottom-right`, ...): the
  pre-tokenizer splits at the hyphen (` top` + `-right`), so carrying a question's cell into the
  reasoning, the box label and the box would otherwise be a two-token induction copy, which the small
  default model learns late (`benchmarks/results/toy_earth_recipe.md`).
* The corpus weights what the model *writes*: every trajectory's assistant text (and the answer words of
  `toy_earth.VOCAB`, bare and after a space) many times, each prompt template's fixed text a few times.
  Trained on whole trajectories, the ~300-word released instruction (repeated in every example) takes most
  of a small vocabulary's merges and answer words such as `farmland` end up in five pieces; weighted
  this way they are single tokens and the instruction still compresses.
"""

from __future__ import annotations

import os
from typing import Sequence

from zoomjax.data import lrs_gro, toy_earth, trajectories
from zoomjax.data import tokenizer as T
from zoomjax.data.toy_earth_scene import POSITIONS
from zoomjax.protocol import templates as P

# The cell names that the pre-tokenizer would split at the hyphen (` top-right` -> ` top` + `-right`), as
# single ids, so that carrying the referent's cell from the question into the box is a one-token copy.
POSITION_TOKENS = tuple(" " + p for row in POSITIONS for p in row if "-" in p)
EXTRA_TOKENS = (P.THINK_START, P.THINK_END, P.ANSWER_START, P.ANSWER_END, '"bbox_2d"') + POSITION_TOKENS
DEFAULT_VOCAB_SIZE = 1024
GENERATED_REPEATS = 4    # copies of each assistant text in the corpus
PROMPT_REPEATS = 24      # copies of each prompt template's fixed text (its words stay mergeable)
VOCAB_REPEATS = 100      # copies of each answer word per image of the corpus


def _versions() -> list[tuple[str, str]]:
  return [(proto, v) for proto in P.PROTOCOLS for v in P.VERSIONS[proto]]


def corpus(seed: int = 0, num_images: int = 64, size: int = 2048) -> list[str]:
  """Texts of Toy Earth trajectories (assistant text weighted, see module docstring), without images."""
  texts: list[str] = []
  for i in range(num_images):
    for d in toy_earth.text_rows(seed, i, size):
      row = lrs_gro.parse_row(d)
      texts.append(row.question)
      for proto, version in _versions():
        rendered = trajectories.render(row, size, size, proto, version)
        generated = "".join(s.text for s in rendered.segments if s.kind == "generated")
        texts.extend([generated] * GENERATED_REPEATS)
  for proto, version in _versions():
    texts.extend([P.render_prompt("", proto, version=version).text] * PROMPT_REPEATS)
  words = sorted({w for vocab in toy_earth.VOCAB.values() for w in vocab})
  answers = [" ".join(words), " ".join(P.ANSWER_START + w + P.ANSWER_END for w in words)]
  texts.extend(answers * (VOCAB_REPEATS * num_images))
  return texts


def build(out_dir: str | os.PathLike, seed: int = 0, num_images: int = 64, vocab_size: int = DEFAULT_VOCAB_SIZE,
          extra_texts: Sequence[str] = ()) -> str:
  """Trains the Toy Earth tokenizer and saves it to `out_dir` (transformers format); returns the path."""
  tok = T.train_tokenizer(corpus(seed, num_images) + list(extra_texts), vocab_size, extra_tokens=EXTRA_TOKENS)
  return T.save_tokenizer(tok, out_dir)


def main(argv: Sequence[str] | None = None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="python -m zoomjax.data.toy_earth_tokenizer",
                              description="Train and save the Toy Earth tokenizer (transformers format).")
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--num-images", type=int, default=64)
  p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
  a = p.parse_args(argv)
  path = build(a.out, a.seed, a.num_images, a.vocab_size)
  tok = T.load_tokenizer(path)
  print(f"tokenizer ({T.vocab_size(tok)} ids) -> {path}; special ids {T.special_ids(tok)}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
