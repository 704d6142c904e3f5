"""launch/colab_tpu.ipynb executed headless on CPU with nbclient (a small config in its parameters cell):
every cell runs, the run's table, curves and zoom picture are shown inline, both exports load, and the
export is evaluated by `zoomjax.eval run`."""
import base64
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_colab_notebook_runs_headless_on_cpu(tmp_path):
  import nbformat
  from nbclient import NotebookClient
  nb = nbformat.read(os.path.join(ROOT, "launch", "colab_tpu.ipynb"), as_version=4)
  (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  run = tmp_path / "run"
  params.source = (f"RUN_DIR = {str(run)!r}\nQUICK = True\n"
                   "OVERRIDES = ['steps=3', 'data.num_images=4', 'log.progress=false', 'eval.every=0',\n"
                   "             'eval.answers=2', 'eval.max_new_tokens=16', 'checkpoint.every=0',\n"
                   "             'then.steps=1', 'then.data.batch_size=8', 'then.grpo.max_new_tokens=16']")
  env_keep = {k: os.environ[k] for k in ("XLA_FLAGS", "JAX_PLATFORMS") if k in os.environ}
  os.environ.update({"HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"})
  try:
    NotebookClient(nb, timeout=1500, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
  finally:
    os.environ.pop("JAX_PLATFORMS", None)
    os.environ.update(env_keep)
  outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
  assert "backend: cpu" in text and "orbax export identical: True" in text and "exit 0" in text
  assert "sft: step 3" in text and "grpo: step 1" in text
  pngs = [base64.b64decode(o.data["image/png"]) for o in outs if "image/png" in o.get("data", {})]
  assert len(pngs) == 2 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)   # curves and zoom picture
  assert any("after grpo" in o.data.get("text/markdown", "") for o in outs if "data" in o)
  report = json.loads((run / "eval_report.json").read_text())
  assert 0 < report["overall"]["n"] <= 16
