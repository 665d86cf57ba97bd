"""`scripts/gpu_check.sh --dry-run` (bench/gpu_check.py on CPU) on one family: the same code paths as on a GPU (the
Learner's bf16 autocast and fp16 GradScaler steps, a 1-process DDP and FSDP2 step on gloo, the attention comparison)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    cmd = ["bash", "scripts/gpu_check.sh", "--dry-run", "--only", "saxgpt", "--steps", "2", "--out", str(out)]
    r = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["failed"] == [] and rep["mode"] == "dry-run (CPU)"
    assert rep["build_full/saxgpt"]["params"] == 32_304_896  # the full network, built on meta
    for key, precision in (("bf16/saxgpt", "bf16"), ("fp16_gradscaler/saxgpt", "fp16")):
        step = rep[key]
        assert step["precision"] == precision and step["finite"] and len(step["step_times_s"]) == 2
    dist = rep["distributed/saxgpt"]
    assert dist["backend"] == "gloo"
    for name in ("ddp", "fsdp"):  # one rank: the same loss and the same updated weights as the plain step
        assert dist[name]["loss"] == dist[name]["ref_loss"] and dist[name]["max_weight_diff"] < 1e-5
    assert rep["flash_vs_sdpa"]["ok"] and "flash_vs_sdpa" in rep["skipped"]


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    r = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--out", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "no CUDA device" not in r.stderr:  # a CUDA machine: this test is for CPU-only ones
        return
    assert r.returncode == 2 and not (tmp_path / "x.json").exists()
