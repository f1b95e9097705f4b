#!/usr/bin/env bash
# Installs (idempotent) and runs the main job on built-in sample data, local Ray, local files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fer-ray demo --output ./demo "$@"
