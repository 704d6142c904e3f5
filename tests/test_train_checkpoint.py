"""Checkpoints: restore onto another mesh, half-written checkpoints never loaded, data-stream resume,
params export. (The end-to-end kill/resume run: test_train_resume.py.)"""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoomjax.train import checkpoint as ck
from zoomjax.train.state import init_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(mesh, spec):
  params = {"w": jax.device_put(np.arange(64, dtype=np.float32).reshape(8, 8), NamedSharding(mesh, spec)),
            "b": jax.device_put(np.ones(8, np.float32), NamedSharding(mesh, P()))}
  return init_state(params, optax.adam(1e-3), seed=3)


def test_restore_onto_a_different_mesh(tmp_path):
  devs = np.array(jax.devices())
  m1 = Mesh(devs.reshape(8, 1), ("a", "b"))
  m2 = Mesh(devs.reshape(2, 4), ("a", "b"))
  st = _state(m1, P("a", None))
  st = st.replace(step=st.step + 5, rng=jax.random.PRNGKey(7))
  c = ck.Checkpointer(str(tmp_path / "ck"), keep=2)
  c.save(5, st, {"batches": 5}, {"note": "x"})
  c.wait()
  target = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(m2, P(None, "b") if x.ndim == 2 else P())),
      st)
  r, data_state, meta = c.restore(target)
  c.close()
  assert data_state == {"batches": 5} and meta["step"] == 5 and meta["note"] == "x"
  assert r.params["w"].sharding == NamedSharding(m2, P(None, "b"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(st), jax.device_get(r))


def test_keep_n_and_bytes_data_state(tmp_path):
  st = _state(Mesh(np.array(jax.devices()).reshape(8, 1), ("a", "b")), P("a", None))
  c = ck.Checkpointer(str(tmp_path / "ck"), keep=2)
  for s in (1, 2, 3):
    c.save(s, st, b"\x00\xffgrain-state", None)
  c.wait()
  assert c.all_steps() == [2, 3]
  _, data_state, _ = c.restore(jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                                     sharding=x.sharding), st))
  assert data_state == b"\x00\xffgrain-state"
  c.close()


_KILL_MID_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax, numpy as np
    from zoomjax.train import checkpoint as ck
    d = sys.argv[1]
    small = {"w": np.ones((4,), np.float32)}
    c = ck.Checkpointer(d, keep=5, async_save=True)
    c.save(1, small, {"batches": 1})
    c.wait()
    big = {"w": jax.numpy.ones((64, 1024, 1024), jax.numpy.float32)}   # 256 MiB: the write takes a while
    c.save(2, big, {"batches": 2})
    print("saving", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)                              # killed before step 2 is final
""")


def test_half_written_checkpoint_is_never_loaded(tmp_path):
  d = str(tmp_path / "ck")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  r = subprocess.run([sys.executable, "-c", _KILL_MID_SAVE, d], env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
  assert "saving" in r.stdout
  leftovers = [n for n in os.listdir(d) if n != "1"]
  assert leftovers, "the killed save left nothing behind; the test did not interrupt a write"
  assert all("tmp" in n for n in leftovers), leftovers  # only orbax's temporary directory
  c = ck.Checkpointer(d, keep=5)
  assert c.latest_step() == 1 and c.all_steps() == [1]
  state, data_state, _ = c.restore({"w": jax.ShapeDtypeStruct((4,), np.float32)})
  np.testing.assert_array_equal(state["w"], np.ones(4))
  assert data_state == {"batches": 1}
  c.close()


def test_export_and_load_params(tmp_path):
  params = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.zeros(3, np.float32)}
  path = ck.export_params(str(tmp_path / "params"), params, {"step": 4})
  again = ck.load_params(path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
  assert '"step": 4' in open(os.path.join(path, "info.json")).read()
  # exporting again replaces the directory
  ck.export_params(path, {"a": {"kernel": np.ones((2, 3), np.float32)}, "b": np.ones(3, np.float32)})
  np.testing.assert_array_equal(ck.load_params(path)["b"], np.ones(3))


def _stream_pieces(stream, steps):
  """Example indices of each step's pieces, in layout order."""
  return [[int(p["example_index"][0]) for p in next(stream)] for _ in range(steps)]


def test_stream_examples_do_not_depend_on_layout_and_resume_exactly():
  from zoomjax.data.pipeline import Buckets, sft_batches
  from zoomjax.train.stream import StepStream
  ds = [{"input_ids": np.arange(3 + i % 4, dtype=np.int32), "loss_mask": np.ones(3 + i % 4, np.int32),
         "pixel_values": np.zeros((0, 1176), np.float32), "image_grid_thw": np.zeros((0, 3), np.int32)}
        for i in range(37)]
  pieces = lambda: sft_batches(ds, 1, pad_id=0, seed=4, buckets=Buckets.fixed(8, 4, 1))  # noqa: E731
  one = StepStream(pieces(), 8, prefetch=0)            # 1 x 1 x 8 layout
  flat = _stream_pieces(one, 10)                        # crosses epoch boundaries (37 examples)
  seq = np.concatenate(flat)
  np.testing.assert_array_equal(np.sort(seq[:37]), np.arange(37))       # epoch 0: a permutation
  np.testing.assert_array_equal(np.sort(seq[37:74]), np.arange(37))     # epoch 1: another one
  assert not np.array_equal(seq[:37], seq[37:74])
  # prefetched in a background thread: the same examples
  two = StepStream(pieces(), 8, prefetch=2)
  assert _stream_pieces(two, 10) == flat
  two.close()
  # resume: a fresh stream set to the state taken after 6 steps continues with step 6
  first = StepStream(pieces(), 8, prefetch=2)
  _stream_pieces(first, 6)
  state = first.get_state()
  first.close()
  import json
  state = json.loads(json.dumps(state))                 # what the checkpoint stores
  again = StepStream(pieces(), 8, prefetch=2)
  again.set_state(state)
  assert _stream_pieces(again, 4) == flat[6:10]
  again.close()
  # an epoch-bounded eval stream pads its last step with blank pieces
  ev = StepStream(sft_batches(ds, 1, pad_id=0, shuffle=False, num_epochs=1, drop_remainder=False,
                              buckets=Buckets.fixed(8, 4, 1)), 8, prefetch=0, pad_last=True)
  steps = list(ev)
  assert len(steps) == 5 and sum(int(p["valid"][0]) for st in steps for p in st) == 37
  assert all(p["attention_mask"].sum() == 0 for p in steps[-1][5:])
