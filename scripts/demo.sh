#!/usr/bin/env bash
# Sets up roomsystem and runs the demo room on this machine until Ctrl-C.
# Arguments go to `roomsystem demo`, e.g. --http 0.0.0.0:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/roomsystem demo "$@"
