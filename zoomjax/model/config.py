"""Model configuration: frozen dataclasses with presets, built from or written to an HF `config.json`.

Field names follow the Hugging Face Qwen2.5-VL config so that a reader of either can map them 1:1.
Runtime switches (scan vs unrolled layers, remat policy, compute dtype) live on `ModelConfig` too, so a
single hashable object is the static argument of every jitted model function.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

_REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "save_attn_out")
_DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
  """A model configuration value is invalid or inconsistent."""


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Qwen2.5-VL vision tower (ViT with window attention and a 2x2 patch merger).

  Attributes:
    depth: number of transformer blocks.
    hidden_size: ViT width (1280 for 3B/7B).
    intermediate_size: SwiGLU hidden width (3420), biased projections.
    num_heads: attention heads (head_dim = hidden_size // num_heads = 80).
    in_channels / patch_size / temporal_patch_size: patch embedding Conv3d(in, hidden, (tp, p, p)),
      equivalent to a linear map of the flattened `in_channels * tp * p * p` (= 1176) vector.
    spatial_merge_size: the merger concatenates `m x m` neighbouring patches (m = 2).
    window_size: window attention side in pixels (112 px = 8 patches = 4x4 merged tokens).
    fullatt_block_indexes: blocks that use full (per-image) attention instead of window attention.
    out_hidden_size: merger output width = language-model hidden size.
  """

  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  out_hidden_size: int = 2048
  rms_norm_eps: float = 1e-6
  hidden_act: str = "silu"

  def __post_init__(self):
    object.__setattr__(self, "fullatt_block_indexes", tuple(int(i) for i in self.fullatt_block_indexes))
    _check(self.depth > 0, f"vision.depth must be > 0, got {self.depth}")
    _check(self.hidden_size % self.num_heads == 0,
           f"vision.hidden_size ({self.hidden_size}) must be divisible by vision.num_heads ({self.num_heads})")
    _check((self.hidden_size // self.num_heads) % 2 == 0,
           f"vision head_dim ({self.hidden_size // self.num_heads}) must be even for rotary embeddings")
    _check(all(0 <= i < self.depth for i in self.fullatt_block_indexes),
           f"vision.fullatt_block_indexes {self.fullatt_block_indexes} must lie in [0, depth={self.depth})")
    merge_px = self.patch_size * self.spatial_merge_size
    _check(self.window_size % merge_px == 0,
           f"vision.window_size ({self.window_size}) must be a multiple of patch_size*spatial_merge_size ({merge_px})")
    _check(self.hidden_act == "silu", f"vision.hidden_act must be 'silu', got {self.hidden_act!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch vector (3*2*14*14 = 1176)."""
    return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Qwen2.5 language model (decoder with GQA, q/k/v bias, M-RoPE, SwiGLU, RMSNorm)."""

  vocab_size: int = 151936
  hidden_size: int = 2048
  intermediate_size: int = 11008
  num_hidden_layers: int = 36
  num_attention_heads: int = 16
  num_key_value_heads: int = 2
  head_dim: int | None = None  # defaults to hidden_size // num_attention_heads
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1_000_000.0
  mrope_section: tuple[int, ...] = (16, 24, 24)
  max_position_embeddings: int = 128000
  tie_word_embeddings: bool = True
  hidden_act: str = "silu"

  def __post_init__(self):
    object.__setattr__(self, "mrope_section", tuple(int(s) for s in self.mrope_section))
    if self.head_dim is None:
      _check(self.hidden_size % self.num_attention_heads == 0,
             f"text.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
             f"({self.num_attention_heads}) when head_dim is not given")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
    _check(self.num_attention_heads % self.num_key_value_heads == 0,
           f"text.num_attention_heads ({self.num_attention_heads}) must be a multiple of "
           f"num_key_value_heads ({self.num_key_value_heads})")
    _check(len(self.mrope_section) == 3, f"text.mrope_section must have 3 entries, got {self.mrope_section}")
    _check(sum(self.mrope_section) * 2 == self.head_dim,
           f"text.mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}")
    _check(self.hidden_act == "silu", f"text.hidden_act must be 'silu', got {self.hidden_act!r}")

  @property
  def num_groups(self) -> int:
    """Query heads per KV head (GQA ratio)."""
    return self.num_attention_heads // self.num_key_value_heads


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Full Qwen2.5-VL configuration plus zoomjax runtime switches.

  Attributes:
    text / vision: architecture.
    image_token_id, video_token_id, vision_start_token_id, vision_end_token_id: special ids (from the
      checkpoint's config or the tokenizer, never assumed).
    eos_token_id / pad_token_id / bos_token_id: generation ids.
    scan_layers: stack layers and run them under `nn.scan` (fast compile) or unroll them.
    remat_policy: one of `none`, `full`, `dots`, `dots_with_no_batch_dims`, `save_attn_out`.
    dtype: compute dtype of activations/matmuls; param_dtype: dtype parameters are stored in.
  """

  text: TextConfig = dataclasses.field(default_factory=TextConfig)
  vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  bos_token_id: int = 151643
  eos_token_id: int = 151645
  pad_token_id: int = 151643
  scan_layers: bool = True
  remat_policy: str = "none"
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    _check(self.remat_policy in _REMAT_POLICIES,
           f"remat_policy must be one of {_REMAT_POLICIES}, got {self.remat_policy!r}")
    _check(self.dtype in _DTYPES, f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
    _check(self.param_dtype in _DTYPES, f"param_dtype must be one of {_DTYPES}, got {self.param_dtype!r}")
    _check(self.vision.out_hidden_size == self.text.hidden_size,
           f"vision.out_hidden_size ({self.vision.out_hidden_size}) must equal text.hidden_size "
           f"({self.text.hidden_size})")
    for name in ("image_token_id", "vision_start_token_id", "vision_end_token_id", "eos_token_id", "pad_token_id"):
      v = getattr(self, name)
      _check(0 <= v < self.text.vocab_size, f"{name}={v} is outside the vocabulary [0, {self.text.vocab_size})")

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  # ----------------------------------------------------------------------------------------- presets
  @classmethod
  def qwen2_5_vl_3b(cls, **kw) -> "ModelConfig":
    return cls(text=TextConfig(), vision=VisionConfig(out_hidden_size=2048), **kw)

  @classmethod
  def qwen2_5_vl_7b(cls, **kw) -> "ModelConfig":
    text = TextConfig(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                      num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)
    return cls(text=text, vision=VisionConfig(out_hidden_size=3584), **kw)

  @classmethod
  def tiny(cls, vocab_size: int = 512, **kw) -> "ModelConfig":
    """A few-layer model for tests and the CPU default (special ids at the top of the vocab)."""
    text = TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, mrope_section=(2, 3, 3),
                      rope_theta=10000.0, tie_word_embeddings=True)
    vision = VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                          fullatt_block_indexes=(1,), window_size=56)
    ids = dict(bos_token_id=vocab_size - 8, pad_token_id=vocab_size - 8, eos_token_id=vocab_size - 6,
               vision_start_token_id=vocab_size - 5, vision_end_token_id=vocab_size - 4,
               image_token_id=vocab_size - 3, video_token_id=vocab_size - 2)
    ids.update(kw)
    return cls(text=text, vision=vision, **ids)

  # ------------------------------------------------------------------------------------ HF interop
  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any], **runtime) -> "ModelConfig":
    """Builds a config from an HF `config.json` dict (nested `text_config` or the older flat layout).

    `rope_scaling` (older) and `rope_parameters` (newer) are both read for `mrope_section`/`rope_theta`.
    `runtime` sets zoomjax-only fields (scan_layers, remat_policy, dtype, param_dtype).
    """
    d = dict(d)
    mt = d.get("model_type")
    if mt is not None and mt not in ("qwen2_5_vl", "qwen2_vl"):
      raise ConfigError(f"config.json model_type={mt!r} is not a Qwen2.5-VL model")
    t = dict(d.get("text_config") or {})
    for k, v in d.items():  # flat layout: text fields at the top level
      if k not in ("text_config", "vision_config") and k not in t:
        t[k] = v
    rope = t.get("rope_parameters") or t.get("rope_scaling") or d.get("rope_scaling") or {}
    mrope = rope.get("mrope_section")
    if mrope is None:
      raise ConfigError("config.json has no mrope_section in rope_scaling/rope_parameters")
    theta = rope.get("rope_theta", t.get("rope_theta", 1_000_000.0))
    tie = d.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
    try:
      text = TextConfig(
          vocab_size=int(t["vocab_size"]), hidden_size=int(t["hidden_size"]),
          intermediate_size=int(t["intermediate_size"]), num_hidden_layers=int(t["num_hidden_layers"]),
          num_attention_heads=int(t["num_attention_heads"]),
          num_key_value_heads=int(t.get("num_key_value_heads") or t["num_attention_heads"]),
          head_dim=t.get("head_dim"), rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
          mrope_section=tuple(mrope), max_position_embeddings=int(t.get("max_position_embeddings", 128000)),
          tie_word_embeddings=bool(tie), hidden_act=t.get("hidden_act", "silu"))
      v = dict(d.get("vision_config") or {})
      vision = VisionConfig(
          depth=int(v.get("depth", 32)), hidden_size=int(v.get("hidden_size", 1280)),
          intermediate_size=int(v.get("intermediate_size", 3420)), num_heads=int(v.get("num_heads", 16)),
          in_channels=int(v.get("in_channels", v.get("in_chans", 3))), patch_size=int(v.get("patch_size", 14)),
          temporal_patch_size=int(v.get("temporal_patch_size", 2)),
          spatial_merge_size=int(v.get("spatial_merge_size", 2)), window_size=int(v.get("window_size", 112)),
          fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", (7, 15, 23, 31))),
          out_hidden_size=int(v.get("out_hidden_size", text.hidden_size)), hidden_act=v.get("hidden_act", "silu"))
    except KeyError as e:
      raise ConfigError(f"config.json is missing required field {e.args[0]!r}") from None

    def tid(name, default):
      val = d.get(name, t.get(name, default))
      if isinstance(val, (list, tuple)):
        val = val[0]
      return int(default if val is None else val)

    ids = dict(
        image_token_id=tid("image_token_id", 151655), video_token_id=tid("video_token_id", 151656),
        vision_start_token_id=tid("vision_start_token_id", 151652),
        vision_end_token_id=tid("vision_end_token_id", 151653), bos_token_id=tid("bos_token_id", 151643),
        eos_token_id=tid("eos_token_id", 151645))
    ids["pad_token_id"] = tid("pad_token_id", ids["bos_token_id"])
    return cls(text=text, vision=vision, **ids, **runtime)

  @classmethod
  def from_hf_dir(cls, path: str | os.PathLike, **runtime) -> "ModelConfig":
    f = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(f):
      raise ConfigError(f"no config.json in {os.fspath(path)!r}")
    try:
      with open(f, encoding="utf-8") as fh:
        d = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ConfigError(f"{f} is not valid JSON ({e}); restore or regenerate it") from None
    if not isinstance(d, dict):
      raise ConfigError(f"{f} holds a JSON {type(d).__name__}, not a config object")
    try:
      return cls.from_hf_dict(d, **runtime)
    except ConfigError as e:
      raise ConfigError(f"{f}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
      raise ConfigError(f"{f} is not a Qwen2.5-VL config ({type(e).__name__}: {e})") from None

  def to_hf_dict(self) -> dict[str, Any]:
    """The nested HF layout that `transformers.Qwen2_5_VLConfig(**d)` accepts."""
    t, v = self.text, self.vision
    rope = {"rope_type": "default", "mrope_section": list(t.mrope_section), "rope_theta": t.rope_theta}
    text_config = dict(
        model_type="qwen2_5_vl_text", vocab_size=t.vocab_size, hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
        head_dim=t.head_dim, rms_norm_eps=t.rms_norm_eps, rope_parameters=rope, rope_scaling=rope,
        rope_theta=t.rope_theta, max_position_embeddings=t.max_position_embeddings, hidden_act=t.hidden_act,
        tie_word_embeddings=t.tie_word_embeddings, bos_token_id=self.bos_token_id,
        eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id)
    vision_config = dict(
        model_type="qwen2_5_vl_vision", depth=v.depth, hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size, num_heads=v.num_heads, in_channels=v.in_channels,
        patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
        spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
        fullatt_block_indexes=list(v.fullatt_block_indexes), out_hidden_size=v.out_hidden_size,
        hidden_act=v.hidden_act)
    return dict(
        model_type="qwen2_5_vl", architectures=["Qwen2_5_VLForConditionalGeneration"],
        text_config=text_config, vision_config=vision_config, tie_word_embeddings=t.tie_word_embeddings,
        image_token_id=self.image_token_id, video_token_id=self.video_token_id,
        vision_start_token_id=self.vision_start_token_id, vision_end_token_id=self.vision_end_token_id,
        bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id)
