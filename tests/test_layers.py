"""The import layering of ARCHITECTURE.md holds (`.importlinter`), and the checker would see a breach."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint(root: str) -> subprocess.CompletedProcess:
  exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
  return subprocess.run([exe, os.path.join(root, ".importlinter")], cwd=root, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, PYTHONPATH=root))


def test_layers_and_no_circles_hold():
  r = _lint(ROOT)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
  assert "2 kept, 0 broken" in r.stdout


def test_checker_fails_on_a_reintroduced_circle_and_an_upward_import(tmp_path):
  copy = tmp_path / "repo"
  shutil.copytree(os.path.join(ROOT, "zoomjax"), copy / "zoomjax", ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(ROOT, ".importlinter"), copy / ".importlinter")
  # model importing the trainer (upward) and rollout.tools <-> rollout.loop (a circle)
  with open(copy / "zoomjax" / "model" / "rope.py", "a") as fh:
    fh.write("\nfrom zoomjax.train import harness  # noqa\n")
  with open(copy / "zoomjax" / "rollout" / "tools.py", "a") as fh:
    fh.write("\nfrom zoomjax.rollout import loop  # noqa\n")
  r = _lint(str(copy))
  assert r.returncode != 0
  assert "zoomjax.model is not allowed to import zoomjax.train" in r.stdout
  assert "No cycles are allowed in zoomjax.rollout" in r.stdout
