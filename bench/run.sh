#!/usr/bin/env bash
# Run the wave benchmark: bench/run.sh [--sddcs 200] [--json OUT] [--no-baseline] [--parse-only] ...
set -euo pipefail
cd "$(dirname "$0")/.." && scripts/bootstrap.sh && exec .venv/bin/rce bench "$@"
