"""Mutation benchmark: plants realistic bugs one at a time and checks that a fast test fails.

    python3 benchmarks/mutations.py                 # every mutation, markdown table + score
    python3 benchmarks/mutations.py --only metrics  # the mutations whose file or description contains it
    python3 benchmarks/mutations.py --list          # the list, nothing run

Each mutation is a text substitution `(file, old, new, tests, description)`: `old` must occur exactly
once in `file` (else the entry is reported `stale` and needs updating). The working tree is never
touched: it is copied once (without .git, runs/, caches) to a temporary directory, each mutation is
applied there, `python -m pytest -x -q <tests>` runs in the copy, and the file is put back.
`killed` = the tests failed (or ran past `--timeout`), `survived` = they passed.

First a baseline runs every test file in the list unmutated (`--no-baseline` skips it): a test that fails
without a mutation would count as a kill, so a failing baseline marks its mutations `invalid`.

To add one (GRPO advantages, policy loss, masks, ...), append a `Mutation(...)` to `MUTATIONS`; choose
the fastest test file that guards the code.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

REPO = pathlib.Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", "runs", "outputs", ".cache", "__pycache__", ".pytest_cache", "*.pyc",
                                "*.egg-info", ".whl", ".gl")


class Mutation(NamedTuple):
  file: str                 # path relative to the repo root
  old: str                  # exact text, once in the file
  new: str                  # what it becomes
  tests: tuple[str, ...]    # pytest paths / node ids, relative to the repo root
  description: str


M = Mutation
REWARDS, FORMAT, JUDGE = "zoomjax/rl/rewards.py", "zoomjax/rl/format.py", "zoomjax/rl/judge.py"
METRICS, LOSS = "zoomjax/eval/metrics.py", "zoomjax/train/loss.py"
STEP, OPTIM, HARNESS = "zoomjax/train/step.py", "zoomjax/train/optim.py", "zoomjax/train/harness.py"
PARSE, BOXES = "zoomjax/protocol/parse.py", "zoomjax/data/boxes.py"
T_REWARDS, T_JUDGE, T_PARSE = ("tests/test_rewards.py",), ("tests/test_judge.py",), ("tests/test_parse.py",)
T_METRICS, T_OPTIM = ("tests/test_eval_metrics.py",), ("tests/test_train_optim.py",)
T_BOXES = ("tests/test_data_images.py",)
T_XENT = ("tests/test_train_step.py::test_masked_xent_matches_numpy",)
T_CONST = ("tests/test_model_constants.py",)
GRPO = "zoomjax/rl/grpo.py"
T_GRPO = tuple(f"tests/test_grpo.py::{t}" for t in (
    "test_group_advantages_std_and_mean_by_hand", "test_group_advantages_valid_mask_and_zero_variance",
    "test_zero_variance_group_with_float_noise_is_exactly_zero", "test_term_advantages_normalise_each_term",
    "test_policy_loss_clipping_both_signs_and_aggregations", "test_policy_loss_clip_higher_and_k3_kl",
    "test_masked_tokens_get_exactly_zero_gradient", "test_seq_mean_counts_only_rows_with_a_generated_token"))

MUTATIONS: list[Mutation] = [
    # ---------------------------------------------------------------- rl/rewards.py
    M(REWARDS, "  eps: float = 0.2\n", "  eps: float = 2.0\n", T_REWARDS,
      "paper Region-Guided eps 0.2 -> 2.0"),
    M(REWARDS, 'return 0.05 if self.variant == "paper" else 1.0', 'return 0.5 if self.variant == "paper" else 1.0',
      T_REWARDS, "paper format weight beta 0.05 -> 0.5"),
    M(REWARDS, "  union = _area(a) + _area(b) - inter\n", "  union = _area(a) + _area(b)\n", T_REWARDS,
      "IoU union without subtracting the intersection"),
    M(REWARDS, "    a = jnp.clip(a, 0.0, jnp.maximum(limit - min_size, 0.0))\n", "    a = jnp.maximum(a, 0.0)\n",
      T_REWARDS, "crop window clamped at 0 but not shifted inside the right/bottom edge"),
    M(REWARDS, "    r = jnp.tanh(alpha / (d + (1e-6 if eps is None else _f32(eps))))\n  return jnp.where(ok, r, 0.0)",
      "    r = jnp.tanh(alpha / (d + (1e-6 if eps is None else _f32(eps))))\n  return r", T_REWARDS,
      "Region-Guided reward not masked for rows without a box"),
    M(REWARDS, "  total = r_iou + r_rg + answer + cfg.beta * fmt\n", "  total = r_iou + r_rg + answer + fmt\n",
      T_REWARDS, "total reward ignores the format weight beta"),
    # ---------------------------------------------------------------- rl/format.py
    M(FORMAT, "    if len(texts) > 2:\n", "    if len(texts) > 3:\n", T_REWARDS,
      "released format accepts three stages"),
    M(FORMAT, 'not (_has(texts[0], "think") and has_box(texts[0]))', 'not _has(texts[0], "think")', T_REWARDS,
      "released format: stage 1 of a crop needs no box"),
    M(FORMAT, 'ok = all(_has(t, "think") and _tool_call_has_box(t) for t in texts[:-1])',
      'ok = all(_has(t, "think") for t in texts[:-1])', T_REWARDS,
      "multiturn format: earlier turns need no crop tool call"),
    # ---------------------------------------------------------------- rl/judge.py
    M(JUDGE, '  return (text or "").strip().lower().rstrip(".")\n', '  return (text or "").strip().lower()\n',
      T_JUDGE, "judge normalisation keeps the trailing dot"),
    M(JUDGE, "  return min(recall, precision)\n", "  return max(recall, precision)\n", T_JUDGE,
      "multi-word similarity: max instead of min of recall and precision"),
    M(JUDGE, "  return 1.0 if sim >= THRESHOLD else float(sim)\n", "  return 1.0 if sim >= THRESHOLD else 0.0\n",
      T_JUDGE, "judge scores 0 below the threshold instead of the similarity"),
    # ---------------------------------------------------------------- eval/metrics.py
    M(METRICS, "for r in records if r.gt_box is not None]\n  out =",
      "for r in records if r.gt_box is not None and r.pred_box is not None]\n  out =", T_METRICS,
      "HOLE 1: APO IoU excludes questions that got no box (paper: they score 0)"),
    M(METRICS, "  if x2 - x1 < min_size or y2 - y1 < min_size:\n", "  if x2 - x1 < min_size and y2 - y1 < min_size:\n",
      T_METRICS, "window APO: 512 window only when both sides are small"),
    M(METRICS, '"precision": _mean([float(r.gt_box is not None) for r in cropped])',
      '"precision": _mean([float(r.gt_box is not None) for r in records])', T_METRICS,
      "crop precision over all questions instead of the cropped ones"),
    M(METRICS, '"by_higher_level": _by(records, "higher_level", apo)', '"by_higher_level": _by(records, "category", apo)',
      T_METRICS, "higher_level groups keyed by category"),
    # ---------------------------------------------------------------- train/loss.py
    M(LOSS, "correct = (predicted_ids(logits) == input_ids)", "correct = (jnp.argmax(logits, axis=-1) == input_ids)",
      T_XENT, "token accuracy compares the unshifted argmax"),
    M("zoomjax/model/logprobs.py", "  x = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)\n", "", T_XENT,
      "log-probs not shifted: token t scored by the logits at t"),
    # ---------------------------------------------------------------- train/step.py
    M(STEP, "  (stats, grads), _ = jax.lax.scan(body, (zeros_s, zeros_g), (batch, rngs))\n  return stats, grads\n",
      "  (stats, grads), _ = jax.lax.scan(body, (zeros_s, zeros_g), (batch, rngs))\n"
      "  return stats, jax.tree_util.tree_map(lambda g: g / num_micro, grads)\n", T_OPTIM,
      "HOLE 3: accumulated gradient divided by the microbatch count a second time"),
    M(STEP, "    acc_s = {k: acc_s[k] + stats[k].astype(jnp.float32) for k in acc_s}\n",
      "    acc_s = {k: stats[k].astype(jnp.float32) for k in acc_s}\n", T_OPTIM,
      "accumulation keeps only the last microbatch's stats"),
    # ---------------------------------------------------------------- train/optim.py
    M(OPTIM, "    parts.append(optax.clip_by_global_norm(oc.clip_norm))\n",
      "    parts.append(optax.clip_by_global_norm(100 * oc.clip_norm))\n", T_OPTIM,
      "HOLE 2: gradient clipping 100x too loose"),
    M(OPTIM, "optax.linear_schedule(0.0, oc.lr, warmup)", "optax.linear_schedule(0.1 * oc.lr, oc.lr, warmup)", T_OPTIM,
      "warmup starts at 0.1 lr instead of 0"),
    M(OPTIM, "alpha=oc.end_lr_ratio)", "alpha=0.0)", T_OPTIM, "cosine decays to 0 instead of end_lr_ratio * lr"),
    # ---------------------------------------------------------------- protocol/parse.py
    M(PARSE, "  if x1 > x2:\n    x1, x2 = x2, x1\n", "", T_PARSE, "swapped x corners not re-ordered"),
    M(PARSE, "  x1, x2 = min(max(x1, 0.0), w_max), min(max(x2, 0.0), w_max)\n",
      "  x1, x2 = max(x1, 0.0), max(x2, 0.0)\n", T_PARSE, "x not clamped to the view width"),
    M(PARSE, "  if not (x1 < x2 and y1 < y2):\n", "  if not (x1 <= x2 and y1 <= y2):\n", T_PARSE,
      "zero-area box accepted as a crop request"),
    # ---------------------------------------------------------------- data/boxes.py
    M(BOXES, "  return max(1.0, max(width, height) / long_side)\n", "  return max(width, height) / long_side\n",
      T_BOXES, "global scale < 1 for images smaller than the view (the release's bug)"),
    M(BOXES, "  a = min(max(a, 0), max(limit - size, 0))\n", "  a = max(a, 0)\n", T_BOXES,
      "crop window not shifted inside the right/bottom edge"),
    M(BOXES, "  return _scaled(box, max(width, height) / GT_FRAME)\n", "  return _scaled(box, min(width, height) / GT_FRAME)\n",
      T_BOXES, "1024-frame boxes scaled by the short side"),
    # ---------------------------------------------------------------- model constants
    M("zoomjax/model/vision.py", "NORM_EPS = 1e-6 ", "NORM_EPS = 1e-5 ", T_CONST,
      "HOLE 4: vision RMSNorm eps 10x too large"),
    M("zoomjax/model/language.py", 'h = RMSNorm(t.rms_norm_eps, dt, pdt, name="input_layernorm")(x)',
      'h = RMSNorm(1e-6, dt, pdt, name="input_layernorm")(x)', T_CONST,
      "language input norm ignores the config's rms_norm_eps"),
    M("zoomjax/model/config.py", "mrope_section=tuple(mrope),", "mrope_section=tuple(reversed(mrope)),", T_CONST,
      "M-RoPE sections read reversed from config.json"),
    # ---------------------------------------------------------------- train/harness.py (resume)
    M(HARNESS, "      source.set_state(source_state)\n", "      del source_state\n", ("tests/test_train_resume_fast.py",),
      "HOLE 5: resume without restoring the data position"),
    # ---------------------------------------------------------------- rl/grpo.py
    M(GRPO, "    std = jnp.sqrt(jnp.sum(vf * centred ** 2) / jnp.maximum(n, 1.0))\n",
      "    std = jnp.sqrt(jnp.sum(vf * centred ** 2) / jnp.maximum(n - 1.0, 1.0))\n", T_GRPO,
      "advantages: sample std (ddof 1) instead of the population std"),
    M(GRPO, "  return jnp.where(v & ~flat, adv, 0.0)\n", "  return jnp.where(v, adv, 0.0)\n", T_GRPO,
      "advantages: a zero-variance group leaks float noise / (0 + eps)"),
    M(GRPO, "  mean = jnp.sum(r * vf) / jnp.maximum(n, 1.0)\n", "  mean = jnp.mean(r)\n", T_GRPO,
      "advantages: invalid (over-long) rows enter the group mean"),
    M(GRPO, "  clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)\n",
      "  clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_low)\n", T_GRPO,
      "policy loss: clip-higher ignored (eps_high -> eps_low)"),
    M(GRPO, "  per_token = -jnp.minimum(ratio * adv, clipped_ratio * adv)\n",
      "  per_token = -jnp.maximum(ratio * adv, clipped_ratio * adv)\n", T_GRPO,
      "policy loss: max instead of min (the pessimistic bound lost)"),
    M(GRPO, "    kl = jnp.exp(d) - d - 1.0\n", "    kl = jnp.exp(d) - 1.0\n", T_GRPO,
      "policy loss: k3 KL without the -log-ratio term"),
    M(GRPO, "    denom = jnp.sum((row_tokens > 0).astype(jnp.float32))\n",
      "    denom = jnp.asarray(row_tokens.shape[0], jnp.float32)\n", T_GRPO,
      "policy loss: seq-mean over all rows, including rows with no generated token"),
    M(GRPO, "  logp = jnp.where(on, jnp.asarray(logp, jnp.float32), 0.0)\n",
      "  logp = jnp.asarray(logp, jnp.float32)\n", T_GRPO,
      "policy loss: masked tokens' log-probs enter the math (junk / gradient leaks)"),
]


def run_pytest(root: pathlib.Path, tests, timeout: float) -> tuple[str, float, str]:
  """('pass' | 'fail' | 'timeout' | 'error', seconds, output tail) of `pytest -x -q tests` in `root`."""
  env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(root),
             PYTHONDONTWRITEBYTECODE="1")
  env.pop("CI", None)
  cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
  t0 = time.perf_counter()
  try:
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return "timeout", time.perf_counter() - t0, out[-2000:]
  dt = time.perf_counter() - t0
  status = {0: "pass", 1: "fail"}.get(r.returncode, "error")
  return status, dt, (r.stdout + r.stderr)[-2000:]


def first_failure(tail: str) -> str:
  """The first `FAILED ...` / `E ...` line of a pytest tail (what killed the mutation)."""
  for line in tail.splitlines():
    if line.startswith("FAILED "):
      test = line[len("FAILED "):].split(" - ")[0].strip()
      return test if len(test) <= 90 else test[:87] + "..."
  return ""


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--only", default=None, help="run the mutations whose file or description contains this")
  ap.add_argument("--list", action="store_true", help="print the list and exit")
  ap.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run (a timeout kills)")
  ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the test files")
  ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
  args = ap.parse_args(argv)

  chosen = [(i + 1, m) for i, m in enumerate(MUTATIONS)
            if args.only is None or args.only in m.file or args.only.lower() in m.description.lower()]
  if args.list:
    for i, m in chosen:
      print(f"{i:3d}  {m.file:28s}  {m.description}  [{' '.join(m.tests)}]")
    return 0

  tmp = pathlib.Path(tempfile.mkdtemp(prefix="zoomjax-mutations-"))
  root = tmp / "repo"
  t_start = time.perf_counter()
  shutil.copytree(REPO, root, ignore=IGNORE)
  print(f"copy of {REPO} in {root}; python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs", file=sys.stderr)
  bad_files: set[str] = set()
  if not args.no_baseline:
    files = sorted({t.split("::")[0] for _, m in chosen for t in m.tests})
    for f in files:
      status, dt, tail = run_pytest(root, [t for _, m in chosen for t in m.tests if t.split("::")[0] == f],
                                    args.timeout)
      print(f"baseline {f}: {status} ({dt:.0f} s)", file=sys.stderr)
      if status != "pass":
        bad_files.add(f)
        print(tail, file=sys.stderr)

  rows, killed, survived = [], 0, 0
  for i, m in chosen:
    path = root / m.file
    text = path.read_text(encoding="utf-8")
    count = text.count(m.old)
    if count != 1:
      rows.append((i, m, "stale", 0.0, f"`old` found {count} times"))
      print(f"[{i}] stale ({count} matches): {m.description}", file=sys.stderr)
      continue
    if any(t.split("::")[0] in bad_files for t in m.tests):
      rows.append((i, m, "invalid", 0.0, "baseline fails"))
      continue
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")
    try:
      status, dt, tail = run_pytest(root, list(m.tests), args.timeout)
    finally:
      path.write_text(text, encoding="utf-8")
    result = {"fail": "killed", "timeout": "killed", "pass": "survived"}.get(status, "error")
    killed += result == "killed"
    survived += result == "survived"
    note = first_failure(tail) if status == "fail" else ("timeout" if status == "timeout" else "")
    if result == "error":
      note = tail.strip().splitlines()[-1] if tail.strip() else "pytest error"
    rows.append((i, m, result, dt, note))
    print(f"[{i}] {result} ({dt:.0f} s): {m.description}", file=sys.stderr)

  total = time.perf_counter() - t_start
  print("| # | file | planted bug | tests | result | s | caught by |")
  print("|---:|---|---|---|---|---:|---|")
  for i, m, result, dt, note in rows:
    tests = ", ".join(f"`{t.replace('tests/', '')}`" for t in m.tests)
    print(f"| {i} | `{m.file.replace('zoomjax/', '')}` | {m.description} | {tests} | {result} | {dt:.0f} | "
          f"{note.replace('|', '/')} |")
  scored = killed + survived
  print(f"\nscore: {killed}/{scored} killed ({100 * killed / max(scored, 1):.0f}%); "
        f"{sum(r[2] in ('stale', 'invalid', 'error') for r in rows)} stale/invalid/error; {total / 60:.1f} min")
  if args.keep:
    print(f"copy kept in {root}", file=sys.stderr)
  else:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0 if survived == 0 and scored == len(rows) else 1


if __name__ == "__main__":
  sys.exit(main())
