#!/usr/bin/env bash
# Create .venv/ from the lock file (uv, pinned). Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
PY=$(command -v python3.11 || command -v python3)
if [ ! -x .tools/bin/uv ] || ! .tools/bin/uv --version | grep -q "$UV_VERSION"; then
  "$PY" -m venv .tools
  .tools/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
.tools/bin/uv sync --frozen --extra dev --python "$PY" --quiet
