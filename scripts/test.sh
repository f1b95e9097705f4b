#!/usr/bin/env bash
# Installs (idempotent) and runs the whole test suite: unit, integration (local Ray +
# S3 test server) and job tests (ray start --head + ray job submit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the linter first: a finding fails in seconds, before the 20-minute suite
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
