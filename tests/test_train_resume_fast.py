"""Resume restores the data position (seconds, one process): after `harness.restore_or_init` reads a
checkpoint taken after step 3, the batch source hands out exactly the uninterrupted run's step 4, 5, ...
(The end-to-end kill/resume run with the real trainer: test_train_resume.py.)

The setup is the harness's, built for a stand-in linear loss (its step is never run); the source is the
SFT path's `StepStream` over a 37-example list, so steps cross epoch boundaries, padded one example per
piece or packed several per piece (`data.pack`).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from zoomjax.data.packing import packed_sft_pieces
from zoomjax.data.pipeline import Buckets, sft_batches
from zoomjax.train import checkpoint as ck
from zoomjax.train import harness
from zoomjax.train.config import load_config
from zoomjax.train.stream import StepStream

PIECES_PER_STEP = 8


def examples():
  return [{"input_ids": np.arange(3 + i % 4, dtype=np.int32) + 100 * i, "loss_mask": np.ones(3 + i % 4, np.int32),
           "pixel_values": np.zeros((0, 1176), np.float32), "image_grid_thw": np.zeros((0, 3), np.int32)}
          for i in range(37)]


def source(packed=False):
  if packed:
    pieces = packed_sft_pieces(examples(), seq_len=16, max_patches=4, max_images=1, pad_id=0, seed=4, bins=2)
  else:
    pieces = sft_batches(examples(), 1, pad_id=0, seed=4, buckets=Buckets.fixed(8, 4, 1))
  return harness.StreamSource(StepStream(pieces, PIECES_PER_STEP, prefetch=2))


def step_examples(src, state=None):
  """The examples of the source's next step, in order (first token // 100 of every sequence)."""
  batch, _ = src.next(state)
  out = []
  for p in batch:
    seg, ids = p["attention_mask"][0], p["input_ids"][0]
    out += [int(ids[t]) // 100 for t in range(len(seg)) if seg[t] > 0 and (t == 0 or seg[t] != seg[t - 1])]
  return out


def linear_loss(params, mb, rng):
  del rng
  x = mb["input_ids"].astype(jnp.float32)
  return {"loss_sum": jnp.sum((x @ params["w"]) ** 2), "count": jnp.sum(mb["loss_mask"].astype(jnp.float32))}


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_restore_or_init_continues_with_the_next_batch(tmp_path, packed):
  cfg = load_config(None, ["steps=10", "optim.warmup_steps=0", f"checkpoint.dir={tmp_path / 'ck'}",
                           "checkpoint.resume=true"])
  abstract = {"w": jax.ShapeDtypeStruct((8, 2), jnp.float32)}
  setup = harness.build(cfg, None, loss_fn=linear_loss, abstract_params=abstract, logical_specs={"w": P(None, None)})
  params_fn = lambda: jax.device_put({"w": jnp.ones((8, 2), jnp.float32)}, setup.shardings.params)  # noqa: E731

  # the uninterrupted run's first 7 steps
  ref = source(packed)
  uninterrupted = [step_examples(ref) for _ in range(7)]
  ref.close()
  assert len({tuple(s) for s in uninterrupted}) == 7     # every step differs, so a wrong position shows

  # a run that stops after step 3 and checkpoints
  ckpt = ck.Checkpointer(str(tmp_path / "ck"), keep=2, async_save=False)
  first = source(packed)
  state, start = harness.restore_or_init(setup, ckpt, first, params_fn)
  assert start == 0
  done = [step_examples(first, state) for _ in range(3)]
  assert done == uninterrupted[:3]
  ckpt.save(3, state, first.get_state(), {})
  ckpt.wait()
  first.close()
  ckpt.close()

  # a new process: fresh source, restored from the checkpoint
  ckpt = ck.Checkpointer(str(tmp_path / "ck"), keep=2, async_save=False)
  again = source(packed)
  state, start = harness.restore_or_init(setup, ckpt, again, params_fn)
  assert start == 3 and int(state.step) == 0
  assert [step_examples(again, state) for _ in range(4)] == uninterrupted[3:7]
  again.close()
  ckpt.close()
