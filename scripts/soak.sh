#!/usr/bin/env bash
# The crash-resume soak, long mode: scripts/soak.sh [--sddcs 30] [--kills 30] [--minutes 30] [--seed N] ...
# (rce soak --help lists every option). Exits 0 only when every pass criterion held.
set -euo pipefail
cd "$(dirname "$0")/.." && scripts/bootstrap.sh && exec .venv/bin/rce soak "$@"
