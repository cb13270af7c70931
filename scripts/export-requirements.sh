#!/usr/bin/env bash
# Write docker/requirements.txt (the Docker image's pins) from uv.lock. Run after every lock
# change; tests/deploy/test_image.py fails while the two differ.
set -euo pipefail
cd "$(dirname "$0")/.."
.tools/bin/uv export --frozen --no-dev --no-hashes --no-emit-project > docker/requirements.txt
