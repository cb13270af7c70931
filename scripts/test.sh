#!/usr/bin/env bash
# All set-up, then lint, type-check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/services.sh
echo "== ruff";  .venv/bin/ruff check rce_lib dags plugins config tests
echo "== mypy";  .venv/bin/mypy
echo "== pytest"
exec .venv/bin/pytest --durations=25 "$@"
