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
# --compile-bytecode: every Airflow process (dag-processor, each task run) would otherwise
# compile Airflow from source when PYTHONDONTWRITEBYTECODE is set, as it is on CI machines.
.tools/bin/uv sync --frozen --extra dev --python "$PY" --quiet --compile-bytecode

# promtool (tests/observability, tests/deploy check the alert rules and Prometheus' config with
# it) and the prometheus binary: Debian's `prometheus` package, when promtool is missing. The
# package's daemon must not start (nothing may be left listening on 9090): a temporary
# policy-rc.d tells invoke-rc.d / deb-systemd-invoke "not now", and whatever started anyway is
# stopped. Hosts without apt only get a warning; the tests then fail saying what is missing.
install_debs() {  # package names...
  local sudo="" policy=/usr/sbin/policy-rc.d own_policy=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && own_policy=1
  fi
  local apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0)
  local ok=0
  "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { "${apt[@]}" update >/dev/null 2>&1 \
         && "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null 2>&1; } \
    || ok=$?
  [ -z "$own_policy" ] || $sudo rm -f "$policy"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    $sudo /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  return "$ok"
}
# need COMMAND PACKAGE...: install Debian packages when COMMAND is missing.
need() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: WARNING: $cmd missing and no apt-get here: install $*" >&2
  elif ! install_debs "$@" || ! command -v "$cmd" >/dev/null 2>&1; then
    echo "bootstrap: WARNING: could not install $cmd (apt-get install $* failed)" >&2
  fi
}
need promtool prometheus
# Headless Chromium and its WebDriver for the browser check of the Airflow UI (tests/e2e).
need chromedriver chromium chromium-driver
