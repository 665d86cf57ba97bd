#!/usr/bin/env bash
# The main job: set up, get the raw corpora (DVC remote if it answers, else regenerate the embedded ones
# deterministically), then `dvc repro`. Usage: bash scripts/repro.sh [dvc repro args]
source "$(dirname "$0")/env.sh"
# dvclive and `dvc exp` need a commit to exist (a tarball or `git init` checkout has none).
git rev-parse --verify -q HEAD >/dev/null || { git add -A && git -c user.name=audiolab -c user.email=audiolab@localhost commit -qm "initial snapshot"; }
if ! dvc pull -q data.dvc 2>/dev/null; then
  echo "[repro] no DVC remote answered: generating the embedded corpora"
  python -m audiolab.data.corpora --params params.yaml --out data
fi
dvc repro "$@"
dvc metrics show
