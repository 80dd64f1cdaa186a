#!/usr/bin/env bash
# Prints the chart tests' Python (target/chart-venv/bin/python), making the virtualenv from
# tests/chart/requirements.txt first when it is missing or its requirements changed: the same
# virtualenv, marker and lock that crates/herald/tests/chart.rs uses.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET="$PWD/target"
VENV="$TARGET/chart-venv"
mkdir -p "$TARGET"
exec 9>"$TARGET/chart-venv.lock"
flock 9
if ! [ -x "$VENV/bin/python" ] || ! cmp -s tests/chart/requirements.txt "$VENV/.herald-requirements"; then
  echo "making $VENV (pip install -r tests/chart/requirements.txt)" >&2
  "${HERALD_PYTHON:-python3}" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r tests/chart/requirements.txt >&2
  cp tests/chart/requirements.txt "$VENV/.herald-requirements"
fi
echo "$VENV/bin/python"
