#!/usr/bin/env bash
# The test command: sets up the environment, then checks notebooks == library, runs ruff (format check + lint),
# the notebooks' tests (nbdev_test; `slow`/`gpu` cells skipped) and pytest.
# Usage: bash scripts/test.sh [extra pytest args]
source "$(dirname "$0")/env.sh"
echo "[test] notebooks in sync with audiolab/ (nbdev_export + nbdev_clean leave no diff)"
before=$(git status --porcelain -- nbs audiolab)
nbdev_export && nbdev_clean
after=$(git status --porcelain -- nbs audiolab)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_export/nbdev_clean changed files; commit the regenerated library and clean notebooks:"
  diff <(echo "$before") <(echo "$after") || true; exit 1
fi
echo "[test] ruff (pyproject.toml: 120 columns, E/W/F): notebooks, tests, benches and scripts formatted and linted"
ruff format --check nbs tests bench scripts
ruff check nbs audiolab tests bench scripts
echo "[test] nbdev_test"
nbdev_test --n_workers 2 --timing --do_print
echo "[test] pytest"
set +e; python -m pytest tests -q "$@"; rc=$?; set -e
[ $rc = 5 ] && { echo "pytest collected no tests"; rc=0; }
exit $rc
