"""Batched KV-cache generation: jitted prefill / continuation and a `lax.while_loop` decoder.

    gen = Generator(cfg, params)
    sess = gen.session(batch_size=8, max_len=4096, seed=0)
    sess.append(token_rows, image_rows)            # prefill (or continue: text and new images mid-sequence)
    sess.append(token_rows, image_rows, group_size=G)   # G identical rows per group: prefilled once, copied
    outs = sess.generate(256, Sampling(temperature=1.0, top_p=0.9), stop_token_ids=(im_end, eos))
    outs[b].tokens / outs[b].logprobs / outs[b].finish     # "stop" | "length" | "cut" | "idle"
    sess.rollback(b, n); sess.append(...)          # drop a row's tail (e.g. text after a crop request)

Model side: `zoomjax.model.cache` (`init_cache`, `extend`, `decode`; per-row lengths, rows packed from
slot 0, M-RoPE `rope_deltas` kept in the cache). Everything here calls those pure functions inside its own
jits, with the params as an argument and the cache donated:

* `_extend_last` (prefill / continuation): `extend` on the new tokens of every row (right-padded to a
  bucketed length `Tn`, images' patches padded to a bucketed count) with `last_only=True`: the final norm
  and the head run on each row's last new token only. Positions of the new tokens come from the row's
  full history (`prepare_extend`), so a continuation after appended text + images gets the ids a fresh
  prefill of the whole sequence would.
* `_extend_shared` (a GRPO group's prompt, or an append to only some rows): the same on one row per group
  (the vision tower and the LM prefill run on `B / G` rows), or on the rows that have new tokens (e.g. the
  crops of the rows that zoomed), then the updated cache rows and logits are copied into their rows
  (`cache.take_rows` / `put_rows`, one program, cache donated).
* Both pass `cache.extend` a static `kv_len` (bucketed longest new row length): attention reads the slots
  the rows fill, not the whole cache, which is sized for the longest trajectory (a prompt prefill into a
  768-slot cache read ~5x the slots it needs).
* `_decode_loop`: `lax.while_loop` over at most `n_max` (bucketed) steps, carrying a `DecodeState`; each
  step samples one token per live row from the current logits, records it and its log-prob, and feeds it
  through `decode` (positions `length + rope_deltas`). A row stops at a stop token (kept, fed to the
  cache) or at its own budget `limit[b]`. Without a `stop_fn` a whole `generate` call is one device
  program and one host transfer at the end.

On CPU the programs read a per-layer copy of the weights (`Generator(unstack=...)`,
`qwen2_5_vl.unstack_layers`): under `nn.scan` each decode step copies every layer's weights out of the
stacked arrays before its matmuls; and a tied head reads its own [D, V] copy of the embedding
(`qwen2_5_vl.untie_head`), which XLA's CPU dot streams twice as fast as the [V, D] table.

Invariants of a `Session` row: the cache holds the row's whole token history, and `next_logits[b]` are
the model's logits after it. `rollback` breaks the second (the row is "stale" until the next `append`).

Shapes are bucketed (`zoomjax.model.buckets.round_up`: 4 sizes per octave) so a run compiles a handful
of programs, not one per prompt: batch (padded rows are idle), new-token length, patch count, decode
steps, cache length.

Log-probs are those of the raw model distribution, `log_softmax(logits)[token]` in float32 (no
temperature, top-k or top-p), i.e. what a learner recomputes with a forward pass (GRPO's `logp_old`).

Sampling: `zoomjax.rollout.sampling` (`Sampling`, `sample_tokens`). `logits_processor(logits, lengths) ->
logits` (static, optional) runs before sampling, e.g. a logit bias; `lengths` int32[B] are the rows'
current history lengths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from zoomjax.model import cache as cache_lib
from zoomjax.model.buckets import round_up
from zoomjax.model.config import ModelConfig
from zoomjax.model.inputs import prepare_extend
from zoomjax.model.qwen2_5_vl import unstack_layers, untie_head
# GREEDY and Sampling are also public here (`from zoomjax.rollout.generate import Sampling`).
from zoomjax.rollout.sampling import GREEDY, Sampling, sample_tokens  # noqa: F401

FINISH_REASONS = ("stop", "length", "cut", "idle")


# ------------------------------------------------------------------------------------------ device programs
@functools.partial(jax.jit, static_argnums=0, static_argnames="kv_len", donate_argnums=(2, 5))
def _extend_last(cfg: ModelConfig, params, cache, inputs, pixel_values, prev_logits, *, kv_len=None):
  """extend + logits of each row's last new token (rows with no new tokens keep `prev_logits`); attention
  over the first `kv_len` cache slots (`cache.extend`)."""
  last, cache = cache_lib.extend(cfg, params, cache, inputs, pixel_values, last_only=True, kv_len=kv_len)
  n = inputs["num_new"]
  return jnp.where((n > 0)[:, None], last, prev_logits), cache


@functools.partial(jax.jit, static_argnums=0, static_argnames="kv_len", donate_argnums=(2, 5))
def _extend_shared(cfg: ModelConfig, params, cache, inputs, pixel_values, prev_logits, leaders, copy_to, copy_from,
                   *, kv_len=None):
  """`_extend_last` on the rows `leaders` (int32[Bl]) only; then row `copy_to[i]` gets a copy of the updated
  leader row `copy_from[i]` (an index into `leaders`) and its logits. int32[R] each; `copy_to` entries >= B
  are skipped. One program: the gather, the group leaders' extend and the scatter into the donated cache."""
  small = cache_lib.take_rows(cache, leaders)
  last, small = cache_lib.extend(cfg, params, small, inputs, pixel_values, last_only=True, kv_len=kv_len)
  last = jnp.where((inputs["num_new"] > 0)[:, None], last, prev_logits[leaders])
  cache = cache_lib.put_rows(cache, copy_to, small, copy_from)
  return prev_logits.at[copy_to].set(last[copy_from], mode="drop"), cache


@flax.struct.dataclass
class DecodeState:
  """What `_decode_loop`'s `lax.while_loop` carries (B rows, n_max steps at most)."""

  step: jax.Array       # int32[]: decode steps taken
  cache: Any            # the KV cache (`zoomjax.model.cache`), rows advance as they sample
  logits: jax.Array     # float32[B, V]: each row's next-token logits (kept as is once the row is done)
  tokens: jax.Array     # int32[B, n_max]: sampled ids, step t in column t; pad id after a row stops
  logprobs: jax.Array   # float32[B, n_max]: raw-model log-probs of `tokens` (0 after a row stops)
  n_gen: jax.Array      # int32[B]: tokens sampled per row
  done: jax.Array       # bool[B]: row stopped (stop token, budget `limit`, or nothing to do)
  hit_stop: jax.Array   # bool[B]: row stopped at a stop token


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "stop_ids", "n_max", "processor", "banned"),
                   donate_argnames=("cache", "logits"))
def _decode_loop(params, cache, logits, limit, key, *, cfg: ModelConfig, sampling: Sampling,
                 stop_ids: tuple[int, ...], n_max: int, processor: Callable | None, banned: tuple[int, ...] = ()):
  """Up to `n_max` decode steps; `banned` token ids are never sampled (their logit is -inf; the returned
  log-probs are still the model's own). Returns (tokens int32[B, n_max], logprobs float32[B, n_max],
  n_gen int32[B], hit_stop bool[B], cache, logits)."""
  b = logits.shape[0]
  stops = jnp.asarray(stop_ids if stop_ids else (-1,), jnp.int32)
  pad = jnp.int32(cfg.pad_token_id)

  def cond(s: DecodeState):
    return (s.step < n_max) & ~jnp.all(s.done)

  def body(s: DecodeState) -> DecodeState:
    live = ~s.done
    x = s.logits if processor is None else processor(s.logits, s.cache["length"])
    if banned:
      x = x.at[:, jnp.asarray(banned, jnp.int32)].set(-jnp.inf)
    tok = sample_tokens(x, jax.random.fold_in(key, s.step), sampling)
    lp = jnp.take_along_axis(jax.nn.log_softmax(s.logits.astype(jnp.float32), axis=-1), tok[:, None], axis=1)[:, 0]
    tok = jnp.where(live, tok, pad)
    n_gen = s.n_gen + live.astype(jnp.int32)
    is_stop = live & jnp.isin(tok, stops)
    new_logits, cache = cache_lib.decode(cfg, params, s.cache, tok, active=live)
    return DecodeState(step=s.step + 1, cache=cache, logits=jnp.where(live[:, None], new_logits, s.logits),
                       tokens=s.tokens.at[:, s.step].set(tok),
                       logprobs=s.logprobs.at[:, s.step].set(jnp.where(live, lp, 0.0)), n_gen=n_gen,
                       done=s.done | is_stop | (n_gen >= limit), hit_stop=s.hit_stop | is_stop)

  init = DecodeState(step=jnp.int32(0), cache=cache, logits=logits, tokens=jnp.full((b, n_max), pad, jnp.int32),
                     logprobs=jnp.zeros((b, n_max), jnp.float32), n_gen=jnp.zeros((b,), jnp.int32),
                     done=limit <= 0, hit_stop=jnp.zeros((b,), bool))
  s = jax.lax.while_loop(cond, body, init)
  return s.tokens, s.logprobs, s.n_gen, s.hit_stop, s.cache, s.logits


# ------------------------------------------------------------------------------------------------ host API
@dataclasses.dataclass
class ImageInput:
  """One image for the model: `pixel_values` float32[P, patch_dim] and `grid_thw` int[3] (from
  `zoomjax.processing.preprocess_image`). Its tokens are `grid.prod() // merge**2` `<|image_pad|>`s."""

  pixel_values: np.ndarray
  grid_thw: np.ndarray

  def num_tokens(self, cfg: ModelConfig) -> int:
    return int(np.prod(self.grid_thw)) // cfg.vision.spatial_merge_size ** 2


@dataclasses.dataclass
class Generation:
  """One row's output of `Session.generate`.

  Attributes:
    tokens: the generated ids (a stop token, when hit, included).
    logprobs: float32[len(tokens)] raw-model log-probs of those ids.
    finish: "stop" (stop token), "length" (budget or cache full), "cut" (truncated by `stop_fn`),
      "idle" (the row was not asked to generate).
  """

  tokens: list[int]
  logprobs: np.ndarray
  finish: str


class Generator:
  """A model (config + params) and the bucketing policy for its sessions.

  Args:
    cfg: model config (static for every jit).
    params: the `{"visual", "language"}` params (device arrays; e.g. placed with
      `zoomjax.model.sharding.param_shardings(cfg, mesh)`).
    cache_dtype: KV-cache dtype (default cfg.dtype).
    min_bucket: smallest bucket for token lengths.
    mesh / rules: when a mesh is given, each session's KV cache is placed by
      `zoomjax.model.cache.CACHE_LOGICAL_AXES` through `rules` (batch over data/fsdp, KV heads over tensor)
      and the device programs run under `sharding.activation_rules(mesh, rules)`.
    unstack: run the programs on a per-layer copy of stacked (`cfg.scan_layers`) weights
      (`qwen2_5_vl.unstack_layers`) with a tied head as its own [D, V] kernel (`qwen2_5_vl.untie_head`;
      `run_cfg` / `run_params`). Default: on the CPU backend, where a scanned decode step copies every
      layer's weights out of the stacks and the head reads the [V, D] embedding at half speed (measured
      in benchmarks/results/rollout.md); it costs a second copy of the weights while the caller keeps
      its own.
  """

  def __init__(self, cfg: ModelConfig, params: Any, *, cache_dtype: Any = None, min_bucket: int = 16,
               mesh: Any = None, rules: Any = None, unstack: bool | None = None):
    self.cfg = cfg
    self.cache_dtype = cache_dtype
    self.min_bucket = int(min_bucket)
    self.mesh = mesh
    self.rules = rules
    self.unstack = jax.default_backend() == "cpu" if unstack is None else bool(unstack)
    self.params = params

  @property
  def params(self) -> Any:
    return self._params

  @params.setter
  def params(self, params: Any) -> None:
    """New weights (e.g. after a policy update); the per-layer copy the programs read is rebuilt."""
    self._params = params
    self.run_cfg, self.run_params = self.cfg, params
    if self.unstack:
      self.run_cfg, self.run_params = untie_head(*unstack_layers(self.cfg, params))

  def _context(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    from zoomjax.model import sharding
    return sharding.activation_rules(self.mesh, self.rules or sharding.DEFAULT_RULES)

  def _place_cache(self, cache):
    if self.mesh is None:
      return cache
    from zoomjax.model import sharding
    shard = sharding.logical_to_shardings(cache_lib.CACHE_LOGICAL_AXES, cache, self.mesh,
                                          self.rules or sharding.DEFAULT_RULES)
    return jax.device_put(cache, shard)

  def session(self, batch_size: int, max_len: int, *, seed: int | jax.Array = 0,
              bucket_batch: bool = True) -> "Session":
    """A fresh batch of `batch_size` empty rows whose histories may grow to `max_len` tokens."""
    return Session(self, batch_size, max_len, seed=seed, bucket_batch=bucket_batch)


class Session:
  """A batch of growing token histories sharing one KV cache (see the module docstring)."""

  def __init__(self, gen: Generator, batch_size: int, max_len: int, *, seed: int | jax.Array = 0,
               bucket_batch: bool = True):
    if batch_size <= 0 or max_len <= 0:
      raise ValueError(f"batch_size and max_len must be positive, got {batch_size}, {max_len}")
    self.gen = gen
    self.cfg = gen.cfg
    self.batch_size = int(batch_size)
    self._b = round_up(batch_size, 1) if bucket_batch else int(batch_size)
    self.max_len = int(max_len)
    self._s = round_up(max_len, 64)
    self.histories: list[list[int]] = [[] for _ in range(self.batch_size)]
    self.images: list[list[ImageInput]] = [[] for _ in range(self.batch_size)]
    self._cached = np.zeros(self._b, np.int64)           # host mirror of cache["length"]
    self._stale = np.ones(self._b, bool)                 # next_logits invalid (empty row / rolled back)
    self._cache = gen._place_cache(cache_lib.init_cache(self.cfg, self._b, self._s, gen.cache_dtype))
    self._logits = jnp.zeros((self._b, self.cfg.text.vocab_size), jnp.float32)
    self._key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
    self._calls = 0

  # -------------------------------------------------------------------------------------------- rows
  def length(self, row: int) -> int:
    return len(self.histories[row])

  def room(self, row: int) -> int:
    """Tokens row `row` may still grow by."""
    return self.max_len - len(self.histories[row])

  def append(self, tokens: Sequence[Sequence[int]], images: Sequence[Sequence[ImageInput]] | None = None, *,
             group_size: int = 1) -> None:
    """Appends new tokens (and the images whose `<|image_pad|>` runs they hold) to each row, then prefills
    them. `tokens[b]` may be empty (the row is left as it is). Image pads must already be expanded to
    each image's token count.

    `group_size` G > 1: rows `[g*G, (g+1)*G)` form a group whose histories and new tokens / images are
    identical (e.g. the G samples of one GRPO prompt); only the group's first row is computed (vision
    tower and prefill on `batch_size / G` rows) and its cache row and logits are copied into the other
    G - 1 rows, which then diverge as they sample. Otherwise, when some rows have no new tokens, only the
    others are computed.
    """
    if len(tokens) != self.batch_size:
      raise ValueError(f"{len(tokens)} token rows for a batch of {self.batch_size}")
    images = images if images is not None else [[] for _ in range(self.batch_size)]
    if len(images) != self.batch_size:
      raise ValueError(f"{len(images)} image rows for a batch of {self.batch_size}")
    cfg = self.cfg
    new_rows = [list(map(int, t)) for t in tokens]
    for b in range(self.batch_size):
      n_pad = sum(t == cfg.image_token_id for t in new_rows[b])
      need = sum(im.num_tokens(cfg) for im in images[b])
      if n_pad != need:
        raise ValueError(f"row {b}: {n_pad} image tokens in the new text, but its {len(images[b])} new "
                         f"image(s) need {need}")
      if len(self.histories[b]) + len(new_rows[b]) > self.max_len:
        raise ValueError(f"row {b}: {len(self.histories[b]) + len(new_rows[b])} tokens exceed max_len "
                         f"{self.max_len}")
    if group_size > 1:
      self._check_groups(group_size, new_rows, images)
    if not any(new_rows):
      return
    for b in range(self.batch_size):
      self.histories[b].extend(new_rows[b])
      self.images[b].extend(images[b])
    run_cfg, params = self.gen.run_cfg, self.gen.run_params
    if group_size > 1:   # each group's first row is computed and copied into the group's rows
      leaders = list(range(0, self.batch_size, group_size))
      dest, src = list(range(self.batch_size)), [b // group_size for b in range(self.batch_size)]
    else:                # only the rows with new tokens are computed
      leaders = [b for b in range(self.batch_size) if new_rows[b]]
      dest, src = leaders, list(range(len(leaders)))
    nl = round_up(len(leaders), 1)
    if group_size <= 1 and nl >= self._b:
      inputs, pv, kv_len = self._extend_inputs(list(range(self.batch_size)), self._b, new_rows, images)
      with self.gen._context():
        self._logits, self._cache = _extend_last(run_cfg, params, self._cache, inputs, pv, self._logits,
                                                 kv_len=kv_len)
    else:
      inputs, pv, kv_len = self._extend_inputs(leaders, nl, new_rows, images)
      lead_idx = np.zeros(nl, np.int32)
      lead_idx[:len(leaders)] = leaders
      copy_to = np.full(self._b, self._b, np.int32)          # >= B: skipped (padded rows stay as they are)
      copy_to[:len(dest)] = dest
      copy_from = np.zeros(self._b, np.int32)
      copy_from[:len(src)] = src
      with self.gen._context():
        self._logits, self._cache = _extend_shared(run_cfg, params, self._cache, inputs, pv, self._logits,
                                                   lead_idx, copy_to, copy_from, kv_len=kv_len)
    for b in range(self.batch_size):
      if new_rows[b]:
        self._cached[b] = len(self.histories[b])
        self._stale[b] = False

  def _check_groups(self, g: int, new_rows, images) -> None:
    if self.batch_size % g:
      raise ValueError(f"group_size {g} does not divide the batch of {self.batch_size} rows")
    for b in range(self.batch_size):
      lead = b - b % g
      if b == lead:
        continue
      same = (new_rows[b] == new_rows[lead] and self.histories[b] == self.histories[lead]
              and len(images[b]) == len(images[lead]) and len(self.images[b]) == len(self.images[lead])
              and all(x is y or (np.array_equal(x.grid_thw, y.grid_thw) and np.array_equal(x.pixel_values, y.pixel_values))
                      for x, y in zip(self.images[b] + list(images[b]), self.images[lead] + list(images[lead]))))
      if not same:
        raise ValueError(f"group_size {g}: row {b} differs from row {lead}, the first of its group")

  def _extend_inputs(self, rows: list[int], n: int, new_rows, images):
    """Host inputs of an `extend` over `rows` (padded to `n` rows): tokens, positions, image patches, and
    the static `kv_len` (bucketed `max(cached) + Tn`; None when that is the whole cache)."""
    cfg = self.cfg
    hist = [self.histories[b] for b in rows] + [[] for _ in range(n - len(rows))]
    grids = [np.asarray([im.grid_thw for im in self.images[b]], np.int64).reshape(-1, 3) for b in rows]
    grids += [None] * (n - len(rows))
    cached = np.zeros(n, np.int64)
    cached[:len(rows)] = self._cached[rows]
    new_pix = [im.pixel_values for b in rows for im in images[b]]
    n_patch = sum(p.shape[0] for p in new_pix)
    pad_patches = round_up(n_patch, 4 * cfg.vision.spatial_merge_size ** 2) if new_pix else None
    tn = round_up(max(len(new_rows[b]) for b in rows), self.gen.min_bucket)
    inputs = prepare_extend(cfg, hist, cached, grids, pad_to=tn, pad_patches_to=pad_patches)
    inputs.pop("image_grid_thw", None)
    pv = None
    if new_pix:
      pv = np.zeros((pad_patches, cfg.vision.patch_dim), np.float32)
      pv[:n_patch] = np.concatenate(new_pix, 0)
    kv_len = round_up(int(cached.max()) + tn, self.gen.min_bucket)
    return inputs, pv, (kv_len if kv_len < self._s else None)

  def rollback(self, row: int, length: int) -> None:
    """Drops row `row`'s history after `length` tokens (an image may not be cut). The row must be
    appended to before it generates again."""
    h = self.histories[row]
    if not 0 <= length <= len(h):
      raise ValueError(f"rollback length {length} outside [0, {len(h)}]")
    if length == len(h):
      return
    n_img_tokens = sum(t == self.cfg.image_token_id for t in h[:length])
    kept, acc = [], 0
    for im in self.images[row]:
      if acc >= n_img_tokens:
        break
      acc += im.num_tokens(self.cfg)
      kept.append(im)
    if acc != n_img_tokens:
      raise ValueError(f"rollback to {length} would cut an image of row {row} in half")
    del h[length:]
    self.images[row] = kept
    self._cached[row] = length
    self._stale[row] = True
    self._cache["length"] = jax.device_put(self._cached.astype(np.int32), self._cache["length"].sharding)

  # ------------------------------------------------------------------------------------------ decode
  def generate(self, max_new_tokens: int | Sequence[int], sampling: Sampling = GREEDY, *,
               stop_token_ids: Sequence[int] = (), rows: Sequence[int] | None = None,
               stop_fn: Callable[[int, list[int]], int | None] | None = None, chunk: int = 64,
               logits_processor: Callable | None = None, banned_token_ids: Sequence[int] = ()) -> list[Generation]:
    """Samples up to `max_new_tokens` (an int or one per row) for the rows in `rows` (default all);
    `banned_token_ids` are never sampled (e.g. image placeholders, which only the loop may insert).

    Each row stops at a stop token, at its budget, or when the cache is full (`room`). With `stop_fn`,
    decoding runs in chunks of `chunk` steps and after each chunk `stop_fn(row, generated_so_far)` may
    return `k`: the row keeps its first `k` generated tokens (the rest is rolled back) and stops ("cut").
    """
    rows = list(range(self.batch_size)) if rows is None else sorted(set(int(r) for r in rows))
    budget = np.zeros(self._b, np.int64)
    want = (np.full(self.batch_size, int(max_new_tokens)) if np.ndim(max_new_tokens) == 0
            else np.asarray(max_new_tokens, np.int64))
    for r in rows:
      if self._stale[r]:
        raise ValueError(f"row {r} has no next-token logits (empty or rolled back): append to it first")
      budget[r] = max(0, min(int(want[r]), self.room(r)))
    outs = {r: Generation([], np.zeros((0,), np.float32), "length") for r in rows}
    live = {r for r in rows if budget[r] > 0}
    while live:
      left = np.array([budget[b] - len(outs[b].tokens) if b in live else 0 for b in range(self._b)])
      n_max = round_up(int(left.max()), self.gen.min_bucket)
      if stop_fn is not None:
        n_max = min(n_max, round_up(chunk, 1))
      self._calls += 1
      key = jax.random.fold_in(self._key, self._calls)
      with self.gen._context():
        toks, lps, n_gen, hit, self._cache, self._logits = _decode_loop(
            self.gen.run_params, self._cache, self._logits, jnp.asarray(np.minimum(left, n_max), jnp.int32), key,
            cfg=self.gen.run_cfg, sampling=sampling, stop_ids=tuple(int(t) for t in stop_token_ids), n_max=n_max,
            processor=logits_processor, banned=tuple(sorted(int(t) for t in banned_token_ids)))
      toks, lps, n_gen, hit = (np.asarray(a) for a in (toks, lps, n_gen, hit))
      for b in sorted(live):
        n = int(n_gen[b])
        o = outs[b]
        o.tokens.extend(toks[b, :n].tolist())
        o.logprobs = np.concatenate([o.logprobs, lps[b, :n]])
        self.histories[b].extend(toks[b, :n].tolist())
        self._cached[b] += n
        finish = "stop" if hit[b] else ("length" if len(o.tokens) >= budget[b] else None)
        k = None if stop_fn is None else stop_fn(b, list(o.tokens))
        if k is not None and 0 <= int(k) < len(o.tokens):
          k = int(k)
          self.rollback(b, len(self.histories[b]) - (len(o.tokens) - k))
          del o.tokens[k:]
          o.logprobs = o.logprobs[:k]
          finish = "cut"
        elif k is not None and finish is None:
          finish = "cut"
        if finish is not None:
          o.finish = finish
          live.discard(b)
    return [outs.get(b, Generation([], np.zeros((0,), np.float32), "idle")) for b in range(self.batch_size)]


def generate(cfg: ModelConfig, params: Any, prompts: Sequence[Sequence[int]],
             images: Sequence[Sequence[ImageInput]] | None = None, max_new_tokens: int = 64,
             sampling: Sampling = GREEDY, *, stop_token_ids: Sequence[int] = (), seed: int = 0,
             max_len: int | None = None) -> list[Generation]:
  """One-shot batched generation from prompts of different lengths (image pads already expanded)."""
  longest = max(len(p) for p in prompts)
  sess = Generator(cfg, params).session(len(prompts), max_len or longest + max_new_tokens, seed=seed)
  sess.append(prompts, images)
  return sess.generate(max_new_tokens, sampling, stop_token_ids=stop_token_ids)
