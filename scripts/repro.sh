#!/usr/bin/env bash
# The main job: set up, get the raw corpora, `dvc repro`, show the metrics. Usage: bash scripts/repro.sh [dvc repro args]
# Raw corpora (data/, tracked by data.dvc): from the DVC cache or remote when they have them, else generated
# deterministically (nbs/pipelines/corpora.ipynb with params.yaml's `corpora` section) and pushed to the remote,
# so the next clone pulls them. Regenerated corpora hash to what data.dvc records; a difference is reported.
source "$(dirname "$0")/env.sh"
# dvclive and `dvc exp` need a commit to exist (a tarball or `git init` checkout has none).
git rev-parse --verify -q HEAD >/dev/null || { git add -A && git -c user.name=audiolab -c user.email=audiolab@localhost commit -qm "initial snapshot"; }
mkdir -p runs
if [ -f data.dvc ] && dvc status -q data.dvc 2>/dev/null; then
  echo "[repro] data/ matches data.dvc"
elif [ -f data.dvc ] && dvc pull -q data.dvc 2>/dev/null; then
  echo "[repro] data/ pulled from the DVC remote"
else
  echo "[repro] generating the embedded corpora (profile $(python -c 'import yaml;print(yaml.safe_load(open("params.yaml"))["profile"])'))"
  rm -rf data
  papermill --cwd . -k python3 nbs/pipelines/corpora.ipynb runs/corpora.ipynb -p out data -p params params.yaml
  had=$(cat data.dvc 2>/dev/null || true)
  dvc add -q data
  if [ -n "$had" ] && [ "$had" != "$(cat data.dvc)" ]; then
    echo "[repro] NOTE: the regenerated corpora differ from the committed data.dvc (git diff data.dvc shows how)"
  fi
  dvc push -q data.dvc || echo "[repro] (no DVC remote to push to)"
fi
dvc repro "$@"
dvc metrics show
