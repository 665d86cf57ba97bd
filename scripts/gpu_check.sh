#!/usr/bin/env bash
# The GPU check, one command on a CUDA machine that has only this repository (<= 8 minutes on one GPU):
#   bash scripts/gpu_check.sh [--dry-run] [bench/gpu_check.py options, e.g. --only saxgpt,codec --batch 4]
# 1. installs audiolab with its pinned dependencies (constraints.txt) into $AUDIOLAB_VENV (default .venv-gpu here),
#    unless `import audiolab` already works with them; then tries flash-attn (allowed to fail: the check says so);
# 2. runs bench/gpu_check.py: every family's full-size training step under bf16 autocast (SaxGPT also fp16 +
#    GradScaler), flash-attn vs SDPA, 1-process NCCL DDP and FSDP2 steps; JSON in results/bench/gpu_check.json.
# --dry-run: no installation, CPU only (tiny sizes, gloo, CPU autocast; every full model built on the meta device).
set -uo pipefail
cd "$(dirname "$0")/.."
log() { echo "[gpu_check.sh] $*"; }
PY=${PYTHON:-python3}
if [[ " $* " == *" --dry-run "* ]]; then
  exec "$PY" bench/gpu_check.py "$@"
fi
VENV=${AUDIOLAB_VENV:-$PWD/.venv-gpu}
if ! "$PY" -c "import audiolab, vocos, demucs, encodec, auraloss" 2>/dev/null; then
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV (with the system's packages: a preinstalled CUDA torch is kept when it matches)"
    "$PY" -m venv --system-site-packages "$VENV" || { log "cannot create a virtualenv"; exit 2; }
  fi
  PY="$VENV/bin/python"
  if ! "$PY" -c "import audiolab, vocos, demucs, encodec, auraloss" 2>/dev/null; then
    log "installing audiolab[all] with constraints.txt (a few minutes)"
    "$PY" -m pip install -q --upgrade pip setuptools wheel || log "pip upgrade failed (offline?): continuing"
    if ! "$PY" -m pip install -q -c constraints.txt -e ".[all]"; then
      log "SKIPPED the installation: pip failed (offline machine, or no wheel for this platform)."
      log "Continuing with what is importable; families that need a missing package fail with its ImportError."
      export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
  fi
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "no CUDA device visible to $("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null): nothing to check on a GPU"
  log "(run: bash scripts/gpu_check.sh --dry-run for the CPU check)"
  exit 2
fi
if ! "$PY" -c "import flash_attn" 2>/dev/null; then
  log "trying flash-attn (optional; it builds against the installed torch and CUDA)"
  if ! timeout 300 "$PY" -m pip install -q flash-attn --no-build-isolation; then
    log "SKIPPED flash-attn: its installation failed; the check compares nothing against SDPA (see 'skipped' in the JSON)"
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/[gpu_check.sh] GPU: /'
exec timeout 480 "$PY" bench/gpu_check.py "$@"
