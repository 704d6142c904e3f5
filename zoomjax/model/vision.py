"""Qwen2.5-VL vision tower (ViT with 2-D rotary, window attention and a 2x2 patch merger) in Flax Linen.

Reference: `transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py` (`Qwen2_5_VisionTransformerPretrainedModel`)
and `transformers/vision_utils.py` (`get_vision_position_ids`, `get_vision_window_index`) in the pinned
transformers. Notation: P patches (all images concatenated, plus padding), m = spatial_merge_size (2),
U = m*m (4) patches per merged token, N = P // U merged tokens, D = hidden_size, H = num_heads,
K = head_dim, F = intermediate_size, E = out_hidden_size (language-model width).

Interface
---------
`vision_metadata(vcfg, grid_thw, pad_patches_to=None) -> dict[str, np.ndarray]` (host, numpy)
  grid_thw: int[I, 3] rows (t, h, w) in patches; all-zero rows are padding images (0 patches).
  P = pad_patches_to or the real patch count R = sum(t*h*w); P must be a multiple of U and >= R.
  Keys (all static shapes, functions of P only):
    "window_index"   int32[N]    merged token n of window order = merged token window_index[n] of the
                                 original order (the reference's get_window_index; padding tokens last).
    "reverse_index"  int32[N]    argsort(window_index): original order = window order[reverse_index].
    "rope_pos"       int32[P, 2] (row, col) of each patch inside its frame, in WINDOW order (the
                                 reference's position ids, permuted like the hidden states); 0 for padding.
    "window_segments" int32[P]   attention segment of each patch in window order for window-attention
                                 blocks: one id per (image, frame, 112-px window).
    "full_segments"  int32[P]    segment of each patch in window order for full-attention blocks: one id
                                 per (image, frame).
  Padding patches (rows R..P-1 of pixel_values, zeros) are grouped U at a time into segments of their own
  (ids never used by a real patch), so they never attend to or with real patches; their merged outputs
  are the last N - R//U rows of the tower output.

`VisionTower(cfg: ModelConfig)` Linen module, instantiated as `VisionTower(cfg, name="visual")`
  __call__(pixel_values: f32[P, patch_dim], meta: dict) -> f32[N, E]
  pixel_values rows in the processor's order (images concatenated); output rows in the ORIGINAL
  (non-window) order of merged tokens, images concatenated in order, padding tokens last.
  Params (relative to the `visual` subtree; `blocks` leaves carry a leading `layers` axis of size depth
  when cfg.scan_layers, else they live under `blocks_0` ... `blocks_{depth-1}`):
    patch_embed/kernel                 [patch_dim, D]      (vision_patch, vision_embed)
    blocks/norm1/scale, norm2/scale    [D]                 (vision_embed,)
    blocks/attn/qkv/kernel             [D, 3, H, K]        (vision_embed, None, vision_heads, vision_head_dim)
    blocks/attn/qkv/bias               [3, H, K]           (None, vision_heads, vision_head_dim)
    blocks/attn/proj/kernel            [H, K, D]           (vision_heads, vision_head_dim, vision_embed)
    blocks/attn/proj/bias              [D]                 (vision_embed,)
    blocks/mlp/{gate,up}_proj/kernel   [D, F]              (vision_embed, vision_mlp); bias [F]
    blocks/mlp/down_proj/kernel        [F, D]              (vision_mlp, vision_embed); bias [D]
    merger/ln_q/scale                  [D]                 (vision_embed,)
    merger/mlp_0/kernel                [U*D, U*D]          (vision_merge, vision_mlp); bias [U*D]
    merger/mlp_2/kernel                [U*D, E]            (vision_mlp, embed); bias [E]

`vision_leaf_table(cfg: ModelConfig) -> LeafTable` maps every param path above to its HF tensor(s):
  visual.patch_embed.proj.weight (Conv3d [D, C, tp, p, p]), visual.blocks.N.{norm1,norm2}.weight,
  visual.blocks.N.attn.{qkv,proj}.{weight,bias}, visual.blocks.N.mlp.{gate,up,down}_proj.{weight,bias},
  visual.merger.ln_q.weight, visual.merger.mlp.{0,2}.{weight,bias}.
"""
