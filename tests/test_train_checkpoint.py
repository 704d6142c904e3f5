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
from zoomjax.train.data import BatchStream
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


class _Range:
  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return int(i)


def _collate(xs):
  return np.array(xs)


def test_stream_order_is_independent_of_sharding_and_resumes_exactly():
  ds = _Range(37)
  one = BatchStream(ds, _collate, batch_size=8, num_micro=1, num_shards=1, seed=4, prefetch=0)
  flat = [np.concatenate(next(one)) for _ in range(10)]  # crosses epoch boundaries (37 examples)
  seq = np.concatenate(flat)
  np.testing.assert_array_equal(np.sort(seq[:37]), np.arange(37))       # epoch 0: a permutation
  np.testing.assert_array_equal(np.sort(seq[37:74]), np.arange(37))     # epoch 1: another one
  assert not np.array_equal(seq[:37], seq[37:74])
  # 2 microbatches x 4 shards, this "process" holding shards 2..3: the same sequences, sliced
  part = BatchStream(ds, _collate, batch_size=8, num_micro=2, num_shards=4, shard_range=(2, 4), seed=4, prefetch=2)
  for g in range(10):
    pieces = next(part)
    assert [p.tolist() for p in pieces] == [flat[g][2:3].tolist(), flat[g][3:4].tolist(),
                                            flat[g][6:7].tolist(), flat[g][7:8].tolist()]
  # resume: a new stream set to the state after 6 batches continues with batch 6
  fresh = BatchStream(ds, _collate, batch_size=8, seed=4, prefetch=2)
  for _ in range(3):
    next(fresh)
  state = {"batches": 6, "seed": 4, "batch_size": 8, "num_examples": 37}
  fresh.set_state(state)
  np.testing.assert_array_equal(np.concatenate(next(fresh)), flat[6])
  assert fresh.get_state()["batches"] == 7
  fresh.close()
  part.close()
  # epoch-bounded stream stops
  ep = BatchStream(ds, _collate, batch_size=8, num_epochs=1, prefetch=1)
  assert len(list(ep)) == 37 // 8
