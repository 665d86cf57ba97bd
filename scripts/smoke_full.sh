#!/usr/bin/env bash
# The `full` profile's stages end to end on a small slice of the embedded corpora, 2 optimizer steps per training:
# every family at its full size through the real stage notebooks, data paths and evaluations (a broken `full` config
# or data path fails here in minutes, not after hours on a GPU).
#   bash scripts/smoke_full.sh [DIR]      DIR: a fresh clone of this repository's HEAD (default /tmp/audiolab-smoke-full,
#                                         replaced); your checkout is never touched
# In DIR it (1) merges the overrides below into params.yaml (profile: full; corpora counts; max_steps 2; batch 1-2;
# evaluation sizes), (2) generates the embedded corpora slice (`audiolab.data.corpora`, ~2 minutes) and `dvc add`s it,
# (3) `dvc repro`s every stage but `bench` and `summary` (the machine benchmarks, not a family), (4) shows the metrics.
# Uses $AUDIOLAB_VENV (default ~/.cache/audiolab/venv; made by scripts/env.sh when missing) with DIR first on
# PYTHONPATH, so a shared environment's editable install is not re-pointed. Extra args go to `dvc repro`.
# Deviations from `full` besides sizes: audiolm min_utt_s 1.0 (the embedded utterances are 1.5-5.3 s; VALL-E keeps
# 5-15 s), tokenizer k-means on 2048 frames x 5 iterations (full: 32768 x 50).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-/tmp/audiolab-smoke-full}
shift || true
export AUDIOLAB_VENV=${AUDIOLAB_VENV:-$HOME/.cache/audiolab/venv}
if [ ! -x "$AUDIOLAB_VENV/bin/python" ]; then (source "$REPO/scripts/env.sh"); fi
rm -rf "$DIR"
git clone -q "$REPO" "$DIR"
cd "$DIR"
export PATH="$AUDIOLAB_VENV/bin:$PATH" PYTHONPATH="$DIR" AUDIOLAB_NO_APT=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2} MPLBACKEND=Agg PYTHONHASHSEED=0
start=$(date +%s)
python - <<'PY'
import yaml

OVERRIDES = """
profile: full
corpora:
  full:
    speech: {n_speakers: 6, utts_per_speaker: 6, chapters_per_speaker: 2, dev_speakers: 1, test_speakers: 1, workers: 1}
    kicks: {n_synth: 40, n_augment: 0, recorded: true}
    jazz: {n_songs: 4, seconds: 40, workers: 1}
    music: {n_synth: 3, synth_seconds: 10, n_recorded: 2, clip_seconds: 10, workers: 1}
tokenizer:
  full:
    batch_size: 2
    max_speech_eval: 1
    max_eval_s: 2.0
    model: {kmeans_iters: 5, kmeans_frames: 2048}
    train: {max_steps: 2, warmup_steps: 0}
separator:
  full:
    batch_size: 1
    train: {max_steps: 2, warmup_steps: 0}
saxgpt:
  full:
    batch_size: 1
    train: {max_steps: 2, warmup_steps: 0, grad_accum: 1, valid_every: 0}
audiolm:
  full:
    min_utt_s: 1.0
    max_frames: 600
    train: {max_steps: 2, warmup_steps: 0, valid_every: 0}
melvae:
  full:
    batch_size: 2
    sample_every: 0
    train: {max_steps: 2, warmup_steps: 0, valid_every: 0}
codec:
  batch_size: 1
  full:
    max_files: 5
    valid_segments: 2
    train: {max_steps: 2, warmup_steps: 0}
vocoder_speech:
  full:
    batch_size: 1
    max_valid: 2
    train: {max_steps: 2, warmup_steps: 0}
vocoder_kick:
  full:
    batch_size: 1
    max_valid: 2
    train: {max_steps: 2}
kick:
  full:
    vae_batch: 2
    diff_batch: 2
    vae_train: {max_steps: 2, warmup_steps: 0}
    diff_train: {max_steps: 2, warmup_steps: 0, grad_accum: 1}
    eval_n: 8
    ddpm_n: 2
    save_every: 0
    sample_every: 0
"""


def merge(a: dict, b: dict) -> dict:
    "b's leaves over a, nested mappings merged key by key."
    for k, v in b.items():
        a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, dict) else v
    return a


params = yaml.safe_load(open("params.yaml"))
yaml.safe_dump(merge(params, yaml.safe_load(OVERRIDES)), open("params.yaml", "w"), sort_keys=False, width=120)
PY
echo "[smoke_full] corpora slice"
python -m audiolab.data.corpora --params params.yaml --out data --profile full
dvc add -q data
echo "[smoke_full] dvc repro (every stage but bench and summary) after $(( $(date +%s) - start )) s"
dvc repro kick_evaluate melvae saxgpt audiolm codec "$@"
dvc metrics show
echo "[smoke_full] passed in $(( $(date +%s) - start )) s"
