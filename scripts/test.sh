#!/usr/bin/env bash
# Sets up roomsystem and runs every check: lint, format, types and the whole test suite.
# Arguments go to pytest, e.g. -k config.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff check" && ruff check .
echo "== ruff format --check" && ruff format --check .
echo "== mypy" && mypy roomsystem controlpanel tests bench
echo "== pytest"
status=0
pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
