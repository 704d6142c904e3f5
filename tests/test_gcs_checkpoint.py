"""`gs://` checkpoints and params exports, for real, offline: an in-process GCS emulator on 127.0.0.1.

Both storage paths that a `gs://` checkpoint takes are pointed at the emulator (gcp-storage-emulator, the
JSON API in memory), with no credentials and no traffic off the loopback:

  - etils.epath (directories, listings, `info.json`, orbax's commit files) -> fsspec's gcsfs, which honours
    `STORAGE_EMULATOR_HOST`; `token="anon"` through fsspec's config, so no credential look-up;
  - tensorstore (orbax's array data, OCDBT) -> its own GCS driver: `TENSORSTORE_GCS_HTTP_URL` and a fixed
    test bearer token (`GOOGLE_AUTH_TOKEN_FOR_TESTING`), so no metadata-server look-up;
  - google-cloud-storage (orbax asks whether a bucket has a hierarchical namespace before deleting an old
    step) is anonymous by itself once `STORAGE_EMULATOR_HOST` is set.

Any metadata-server probe that slipped through would be sent to a dead loopback port (GCE_METADATA_*).

The emulator is made to honour GCS's generation preconditions and given objects.moveTo (`_emulator_fixes`).
Not covered, as it cannot: the gRPC storage-control API (gcsfs's bucket-layout look-up is stubbed to "a flat
bucket", the layout of an ordinary bucket), hierarchical-namespace / zonal buckets, resumable uploads of
large arrays (these tiny ones go up in one request), real IAM / credentials, GCS's consistency, latency and
rate limits, and several processes writing one checkpoint.
"""

import json
import os

import jax
import numpy as np
import optax
import pytest
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zoomjax import params_io
from zoomjax.train import checkpoint as ck
from zoomjax.train.state import init_state

BUCKET = "zoomjax-ci"
pytestmark = pytest.mark.timeout(180)


def _emulator_fixes(mp):
  """Makes the emulator honour GCS's generation preconditions (tensorstore's OCDBT relies on them), and
  adds objects.moveTo (gcsfs's rename: without it, 501 answers retried for ~30 s, then copy + delete).

  The emulator ignores `ifGenerationMatch` / `ifGenerationNotMatch` and sends no `x-goog-generation` header
  with object data, so tensorstore's manifest revalidation (`ifGenerationNotMatch=<gen>`, answered 304 by
  GCS when unchanged) reads back generation 0 and its next conditional write fails ("Malformed
  StorageGeneration") whenever the revalidation happens to run. Per
  https://cloud.google.com/storage/docs/request-preconditions: a read answers 412 when `ifGenerationMatch`
  fails and 304 when `ifGenerationNotMatch` fails; an upload answers 412 when `ifGenerationMatch` fails
  (0: the object must not exist). The server is single-threaded, so check-then-act is atomic.
  """
  from http import HTTPStatus

  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects

  def generation(request, storage, name):
    try:
      return int(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
    except NotFound:
      return None

  def condition(request, key):
    v = request.query.get(key)
    return int(v[0]) if v else None

  def read(original):
    def handler(request, response, storage, *args, **kwargs):
      gen = generation(request, storage, request.params["object_id"])
      if gen is not None:
        match, not_match = condition(request, "ifGenerationMatch"), condition(request, "ifGenerationNotMatch")
        if match is not None and match != gen:
          response.status = HTTPStatus.PRECONDITION_FAILED
          return
        if not_match is not None and not_match == gen:
          response.status = HTTPStatus.NOT_MODIFIED
          return
        response["x-goog-generation"] = str(gen)
      return original(request, response, storage, *args, **kwargs)
    return handler

  def upload(original):
    def handler(request, response, storage, *args, **kwargs):
      match = condition(request, "ifGenerationMatch")
      if match is not None and "name" in request.query:
        if (generation(request, storage, request.query["name"][0]) or 0) != match:
          response.status = HTTPStatus.PRECONDITION_FAILED
          return
      return original(request, response, storage, *args, **kwargs)
    return handler

  def move(request, response, storage, *args, **kwargs):
    """objects.moveTo (gcsfs's rename), which the emulator lacks: a copy and a delete, here atomic."""
    bucket, src, dest = (request.params[k] for k in ("bucket_name", "object_id", "dest_object_id"))
    try:
      obj = objects._copy(request.base_url, storage, bucket, src, bucket, dest)
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND
      return
    storage.delete_file(bucket, src)
    response.json(obj)

  wrap = {objects.get: read, objects.download: read, objects.insert: upload}
  for _, by_method in server.HANDLERS:
    for method, fn in list(by_method.items()):
      if fn in wrap:
        mp.setitem(by_method, method, wrap[fn](fn))
  move_route = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
                r"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {"POST": move})
  mp.setattr(server, "HANDLERS", (move_route, *server.HANDLERS))


def _reset_fs_caches():
  """Forgets cached GCS clients (fsspec's, etils', orbax's) so none outlives the emulator or its settings."""
  import gcsfs
  from etils.epath import backend
  from orbax.checkpoint._src.path import gcs_utils
  backend._FileSystemSpecBackend._get_filesystem.cache_clear()
  gcsfs.GCSFileSystem.clear_instance_cache()
  gcsfs.core.GCSFileSystem.clear_instance_cache()
  gcs_utils.get_bucket.cache_clear()   # orbax's google-cloud-storage bucket look-up (HNS check before deletes)


@pytest.fixture(scope="module")
def gcs():
  """The emulator on a free loopback port, with bucket `BUCKET`; yields its `http://127.0.0.1:PORT` URL."""
  import fsspec
  from gcp_storage_emulator.server import create_server
  from gcsfs.extended_gcsfs import BucketType, ExtendedGcsFileSystem

  server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=BUCKET)  # port 0: the OS picks one
  server._api.daemon = True      # a failing test must not leave the process waiting on the server thread
  server.start()
  url = f"http://127.0.0.1:{server._api._httpd.server_port}"

  async def flat_bucket(self, bucket):
    return BucketType.NON_HIERARCHICAL   # gcsfs asks the gRPC storage-control API, which the emulator lacks

  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("STORAGE_EMULATOR_HOST", url)
    mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
    mp.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
    mp.setenv("NO_GCE_CHECK", "true")
    mp.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    mp.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    mp.setenv("GCE_METADATA_ROOT", "127.0.0.1:9")
    mp.setitem(fsspec.config.conf, "gcs", {**fsspec.config.conf.get("gcs", {}), "token": "anon"})
    mp.setattr(ExtendedGcsFileSystem, "_get_bucket_type", flat_bucket)
    _emulator_fixes(mp)
    _reset_fs_caches()
    try:
      yield url
    finally:
      _reset_fs_caches()
      server.stop()


def _blobs(url, prefix):
  """Object names under `prefix`, listed by the emulator's JSON API directly (not through zoomjax's stack)."""
  import urllib.request
  names, token = [], ""
  while True:
    q = f"{url}/storage/v1/b/{BUCKET}/o?prefix={prefix}" + (f"&pageToken={token}" if token else "")
    with urllib.request.urlopen(q, timeout=10) as r:
      page = json.load(r)
    names += [o["name"] for o in page.get("items", [])]
    token = page.get("nextPageToken")
    if not token:
      return names


def _state():
  mesh = Mesh(np.array(jax.devices()).reshape(8, 1), ("a", "b"))
  params = {"w": jax.device_put(np.arange(64, dtype=np.float32).reshape(8, 8) / 7, NamedSharding(mesh, P("a", None))),
            "b": jax.device_put(np.linspace(-1, 1, 8, dtype=np.float32), NamedSharding(mesh, P()))}
  st = init_state(params, optax.adam(1e-3), seed=3)
  return st.replace(step=st.step + 5, rng=jax.random.PRNGKey(7))


def _assert_bit_identical(a, b):
  la, ta = jax.tree_util.tree_flatten(jax.device_get(a))
  lb, tb = jax.tree_util.tree_flatten(jax.device_get(b))
  assert ta == tb
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def test_checkpointer_saves_and_restores_on_gs(gcs):
  d = f"gs://{BUCKET}/run/checkpoints"
  st = _state()
  abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), st)
  c = ck.Checkpointer(d, keep=2)
  assert c.directory == d and c.latest_step() is None
  for s in (1, 2, 3):
    c.save(s, st.replace(step=st.step * 0 + s), {"batches": s}, {"note": "gs"})
  c.wait()
  assert c.latest_step() == 3 and c.all_steps() == [2, 3]   # keep=2 deleted step 1 on the bucket
  c.close()

  # a fresh manager (a restarted run) sees only what is in the bucket
  c = ck.Checkpointer(d, keep=2)
  assert c.latest_step() == 3 and c.all_steps() == [2, 3]
  state, data_state, meta = c.restore(abstract)
  assert data_state == {"batches": 3} and meta["step"] == 3 and meta["note"] == "gs"
  _assert_bit_identical(st.replace(step=st.step * 0 + 3), state)
  assert state.params["w"].sharding == NamedSharding(Mesh(np.array(jax.devices()).reshape(8, 1), ("a", "b")),
                                                     P("a", None))
  step, state2, data2, _ = c.restore_latest(abstract)     # the trainer's resume path
  assert step == 3 and data2 == {"batches": 3}
  _assert_bit_identical(state, state2)
  c.close()

  # what the bucket holds, listed by the emulator itself: steps 2 and 3, each committed, with array data
  names = set(_blobs(gcs, "run/checkpoints/"))
  assert {n.split("/")[2] for n in names} == {"2", "3"}, sorted(names)
  for s in ("2", "3"):
    base = f"run/checkpoints/{s}"
    assert {f"{base}/commit_success.txt", f"{base}/state/manifest.ocdbt", f"{base}/data/metadata",
            f"{base}/meta/metadata"} <= names, sorted(names)
    assert any(n.startswith(f"{base}/state/ocdbt.process_0/d/") for n in names)   # tensorstore's arrays


def test_params_export_round_trip_on_gs(gcs):
  path = f"gs://{BUCKET}/run/params"
  params = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3) / 3}, "b": np.arange(3, dtype=np.int32)}
  assert params_io.export_params(path, params, {"step": 4, "model": "tiny"}) == path
  _assert_bit_identical(params, params_io.load_params(path))
  assert json.loads((epath.Path(path) / params_io.INFO).read_text()) == {"step": 4, "model": "tiny"}
  assert f"run/params/{params_io.INFO}" in _blobs(gcs, "run/params/")

  # exporting again replaces the directory: the old info.json goes, the new arrays read back
  again = {"a": {"kernel": np.ones((2, 3), np.float32)}, "b": np.full(3, 7, np.int32)}
  ck.export_params(path, again)
  _assert_bit_identical(again, ck.load_params(path))
  assert not (epath.Path(path) / params_io.INFO).exists()
  target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), again)
  _assert_bit_identical(again, params_io.load_params(path, target))


def test_torn_newest_checkpoint_on_gs_is_set_aside(gcs, capsys):
  """`restore_latest` moves an unreadable step to `<dir>.corrupt/<step>` on GCS too (no empty folders there)."""
  d = f"gs://{BUCKET}/torn/checkpoints"
  params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
  c = ck.Checkpointer(d, keep=3)
  for s in (1, 2):
    c.save(s, jax.tree_util.tree_map(lambda x: x + s, params), {"batches": s})
  c.close()
  for name in _blobs(gcs, "torn/checkpoints/2/state/"):
    epath.Path(f"gs://{BUCKET}/{name}").write_bytes(b"")       # step 2's arrays truncated
  c = ck.Checkpointer(d, keep=3)
  step, state, data_state, _ = c.restore_latest({"w": jax.ShapeDtypeStruct((3, 4), np.float32)})
  c.close()
  assert step == 1 and data_state == {"batches": 1}
  np.testing.assert_array_equal(state["w"], params["w"] + 1)
  assert "checkpoint step 2" in capsys.readouterr().err
  assert not _blobs(gcs, "torn/checkpoints/2/")
  aside = _blobs(gcs, "torn/checkpoints.corrupt/")
  assert "torn/checkpoints.corrupt/2/commit_success.txt" in aside and "torn/checkpoints.corrupt/README.txt" in aside
