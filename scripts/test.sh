#!/usr/bin/env bash
# Installs (idempotent) and runs the whole test suite: unit, integration (local Ray +
# S3 test server) and job tests (ray start --head + ray job submit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
