"""The launch scripts' `--dry-run`: the exact commands they would run, printed shell-quoted and parsed back
here (arguments with spaces survive both the local and the remote shell); nothing is executed."""
import os
import shlex
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry(script, *args):
  r = subprocess.run(["bash", os.path.join(ROOT, "launch", script), "--dry-run", *args], capture_output=True,
                     text=True, timeout=60, env={**os.environ, "PATH": "/usr/bin:/bin"})
  assert r.returncode == 0, r.stderr
  return [shlex.split(line) for line in r.stdout.splitlines() if line.strip()]


def test_tpu_pod_runs_the_same_train_command_on_every_worker():
  (cmd,) = dry("tpu_pod.sh", "my-v5e16", "us-west4-a", "lrs_gro_3b_v5e16", "model.hf_dir=/data/Q", "data.root=/d/a b")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e16"]
  assert cmd[cmd.index("--zone") + 1] == "us-west4-a" and "--worker=all" in cmd
  remote = [shlex.split(part) for part in cmd[cmd.index("--command") + 1].split(";")]
  pip = next(p for p in remote if p[:1] == ["pip"])
  assert "jax[tpu]==0.10.2" in pip and pip[pip.index("-r") + 1] == "requirements.txt"
  train = next(p for p in remote if p[:3] == ["python3", "-m", "zoomjax.train"])
  assert train[3:] == ["lrs_gro_3b_v5e16", "distributed.enabled=true", "model.hf_dir=/data/Q", "data.root=/d/a b"]


def test_tpu_vm_and_gpu_install_the_pinned_jax_then_train():
  install, train = dry("tpu_vm.sh", "toy_earth_sft", "mesh.fsdp=-1")
  assert install[:4] == ["python3", "-m", "pip", "install"] and "jax[tpu]==0.10.2" in install
  assert train == ["python3", "-m", "zoomjax.train", "toy_earth_sft", "mesh.fsdp=-1"]
  out = dry("gpu.sh")
  assert "jax[cuda12]==0.10.2" in out[0] and out[1] == ["XLA_PYTHON_CLIENT_MEM_FRACTION=0.92"]
  assert out[2] == ["python3", "-m", "zoomjax.train", "lrs_gro_3b_gpu"]
