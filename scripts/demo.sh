#!/usr/bin/env bash
# All set-up, then the demo: simulator + airflow standalone + the canary wave.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/rce demo "$@"
