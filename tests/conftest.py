"""Test-session set-up: offline hub, an 8-device simulated CPU mesh, fp32 matmuls."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """Under CI (`CI=true`) a skipped test is a failure: every conditional skip (Debian
  WordNet missing, too few simulated devices) means lost coverage, never a pass."""
  outcome = yield
  report = outcome.get_result()
  if report.skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes") and not hasattr(report, "wasxfail"):
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, which must run every test: {report.longrepr}"
