"""Running a zoomjax CLI as a subprocess and checking the fault contract of SPEC §9 on its output."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def env(**extra) -> dict:
  """The subprocess environment: offline, CPU, one device (fast start), this checkout importable."""
  e = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           ZOOMJAX_WORDNET_DOWNLOAD="0", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  e.pop("ZOOMJAX_DEBUG", None)
  e.update(extra)
  return e


def run(module: str, *args, timeout: int = 600, cwd=None, **env_extra) -> subprocess.CompletedProcess:
  """`python -m module args...`; stdout and stderr captured as text."""
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                        timeout=timeout, cwd=cwd or REPO, env=env(**env_extra))


def error_line(r: subprocess.CompletedProcess, code: int, *names: str) -> str:
  """Asserts exit `code`, no traceback, and exactly one `error: …` line on stderr that contains every
  string in `names` (the file, key or flag); returns that line."""
  out = f"rc={r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-5000:]}"
  assert r.returncode == code, out
  assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, out
  errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, out
  for name in names:
    assert str(name) in errors[0], f"{name!r} not named in {errors[0]!r}\n{out}"
  return errors[0]
