"""Data: LRS-GRO source, image store (global view / crop rule), Toy Earth, tokenizer, grain pipelines.

Modules (import what you need; nothing heavy is imported here):
  boxes         frames (gt1024 / original / global) and the released crop-window rule
  images        decoding to RGB with a pixel limit, global view, crop-and-zoom, ImageStore (LRU by bytes)
  lrs_gro       LRS-GRO JSONL reader with row validation and path-escape checks
  toy_earth     procedural ultra-high-resolution dataset in LRS-GRO format (CLI); its layouts and drawing
                in toy_earth_scene / toy_earth_render, its tokenizer recipe in toy_earth_tokenizer
  tokenizer     byte-level BPE for the embedded default, Qwen special tokens, ModelConfig ids
  trajectories  SFT trajectories (released / multiturn protocols) -> ids, loss mask, images
  pipeline      grain pipelines for SFT batches and RL prompts (sharded, bucketed, resumable)
"""
