#!/usr/bin/env bash
# Make this checkout runnable: a virtualenv with the package and its test tools, and
# (with --with-redis) a redis-server binary for the integration tests, or (with
# --with-bench) the benchmark's plotting and progress-bar libraries.
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

extras=test
[ "${1:-}" = "--with-bench" ] && extras=test,bench
stamp="$VENV/.installed-$extras-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing the package and its [$extras] tools" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

if [ "${1:-}" = "--with-redis" ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "bootstrap: installing redis-server (integration tests start their own)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
fi
