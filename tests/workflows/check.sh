#!/usr/bin/env bash
# Checks every GitHub Actions workflow in .github/workflows against GitHub's published workflow
# JSON schema: check-jsonschema's built-in `vendor.github-workflows` (PyPI, pinned in
# requirements.txt beside this script, installed into target/workflows-venv on first use).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="$PWD/target/workflows-venv"
if ! [ -x "$VENV/bin/check-jsonschema" ] || ! cmp -s tests/workflows/requirements.txt "$VENV/.requirements"; then
  "${HERALD_PYTHON:-python3}" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r tests/workflows/requirements.txt
  cp tests/workflows/requirements.txt "$VENV/.requirements"
fi
shopt -s nullglob
files=(.github/workflows/*.yml .github/workflows/*.yaml)
[ "${#files[@]}" -gt 0 ] || { echo "no workflow files in .github/workflows" >&2; exit 1; }
"$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}"
