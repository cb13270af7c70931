#!/usr/bin/env bash
# Run the wave benchmark: bench/run.sh [--sddcs 100] [--time-scale 120] [--json OUT] ...
set -euo pipefail
cd "$(dirname "$0")/.." && scripts/bootstrap.sh && exec .venv/bin/rce bench "$@"
