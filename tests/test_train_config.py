"""Run config: YAML + dotted overrides, validation errors that name the key and value, the CLI."""

import os
import subprocess
import sys

import pytest
import yaml

from zoomjax.train import config as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_validate_and_roundtrip(tmp_path):
  cfg = C.load_config()
  assert cfg.optim.lr == 3e-5 and cfg.mesh.data == -1
  p = tmp_path / "c.yaml"
  C.save_config(cfg, str(p))
  again = C.load_config(str(p))
  assert again == cfg


@pytest.mark.parametrize("arg, key, value", [
    ("optim.lr=1e-4", ("optim", "lr"), 1e-4),
    ("optim.lr=2E-3", ("optim", "lr"), 2e-3),
    ("steps=7", ("steps",), 7),
    ("model.freeze_vision=true", ("model", "freeze_vision"), True),
    ("mesh.fsdp=4", ("mesh", "fsdp"), 4),
    ("model.hf_dir=null", ("model", "hf_dir"), None),
    ("run_dir=runs/x.1", ("run_dir",), "runs/x.1"),
    ("mesh.rules.embed=[fsdp, tensor]", ("mesh", "rules"), {"embed": ["fsdp", "tensor"]}),
    ("model.text.num_hidden_layers=3", ("model", "text"), {"num_hidden_layers": 3}),
    ("distributed.enabled=true", ("distributed", "enabled"), True),
    ("distributed.enabled=auto", ("distributed", "enabled"), "auto"),
    ("mesh.devices=1", ("mesh", "devices"), 1),
])
def test_overrides(arg, key, value):
  cfg = C.load_config(None, [arg])
  node = cfg
  for k in key:
    node = getattr(node, k)
  assert node == value
  assert type(node) is type(value)


@pytest.mark.parametrize("arg, message", [
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast' (str)"),
    ("optim.lr=-1", "optim.lr: must be > 0, got -1.0"),
    ("mesh.dat=2", "mesh.dat: unknown key (did you mean 'mesh.data'?)"),
    ("mesh.data=0", "mesh.data: must be a positive size or -1 (fill), got 0"),
    ("steps=1.5", "steps: expected an integer, got 1.5 (float)"),
    ("model.dtype=fp8", "model.dtype: expected one of ['float32', 'bfloat16'], got 'fp8'"),
    ("optim.grad_accum=3", "optim.grad_accum: data.batch_size=8 is not divisible by grad_accum=3"),
    ("data.kind=imagenet", "data.kind: expected one of"),
    ("mesh.rules.heads=model", "mesh.rules.heads: expected null, a mesh axis"),
    ("optim", "overrides are key=value"),
    ("model.freeze_vision=maybe", "model.freeze_vision: expected a boolean, got 'maybe' (str)"),
    ("distributed.enabled=maybe", "distributed.enabled: expected one of [True, False, 'auto'], got 'maybe'"),
    ("data.eval_fraction=2", "data.eval_fraction: must lie in [0.0, 0.9], got 2.0"),
    ("optim.lr.x=1", "optim.lr: expected a number, got {'x': 1} (dict)"),
    ("eval.zoom_images=-1", "eval.zoom_images: must be >= 0, got -1"),
])
def test_validation_errors_name_key_and_value(arg, message):
  with pytest.raises(C.ConfigError) as e:
    C.load_config(None, [arg])
  assert message in str(e.value)


def test_base_inheritance_and_shipped_configs():
  cfg = C.load_config("lrs_gro_3b_v5e16")
  assert cfg.model.preset == "qwen2_5_vl_3b" and cfg.model.dtype == "bfloat16"  # from the base
  assert cfg.mesh.fsdp == 16 and cfg.optim.grad_accum == 2                     # from the child
  assert cfg.checkpoint.every == 32 and cfg.checkpoint.dir.startswith("gs://")  # merged section
  for name in os.listdir(os.path.join(ROOT, "configs")):
    C.load_config(name)  # every shipped config validates
  emb = C.load_config("embedded")
  assert emb.model.text["num_hidden_layers"] >= 1 and emb.data.kind == "toy_earth"


def test_base_cycle_and_missing_file(tmp_path):
  a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
  a.write_text("base: b.yaml\n")
  b.write_text("base: a.yaml\n")
  with pytest.raises(C.ConfigError, match="cycle"):
    C.load_config(str(a))
  with pytest.raises(C.ConfigError, match="not found"):
    C.load_config("no_such_config")
  bad = tmp_path / "bad.yaml"
  bad.write_text("optim: [1, 2]\n")
  with pytest.raises(C.ConfigError, match="optim: expected a mapping"):
    C.load_config(str(bad))


def test_model_section_errors_surface_as_config_errors():
  from zoomjax.train.trainer import build_model_config
  cfg = C.load_config(None, ["model.text.hidden_sise=3"])
  with pytest.raises(C.ConfigError, match="hidden_sise"):
    build_model_config(cfg)
  cfg = C.load_config(None, ["model.text.num_key_value_heads=3"])
  with pytest.raises(C.ConfigError, match="num_key_value_heads"):
    build_model_config(cfg)


def test_cli_help_print_config_and_error_exit():
  env = dict(os.environ, PYTHONPATH=ROOT)
  run = lambda *a: subprocess.run([sys.executable, "-m", "zoomjax.train", *a], capture_output=True, text=True,  # noqa: E731
                                  cwd=ROOT, env=env, timeout=120)
  r = run("--help")
  assert r.returncode == 0 and "key=value" in r.stdout
  r = run("configs/synthetic_tiny.yaml", "optim.lr=5e-4", "--print-config")
  assert r.returncode == 0
  printed = yaml.safe_load(r.stdout)
  assert printed["optim"]["lr"] == 5e-4 and printed["data"]["kind"] == "synthetic"
  r = run("optim.lr=fast")
  assert r.returncode == 2 and "optim.lr: expected a number, got 'fast'" in r.stderr
