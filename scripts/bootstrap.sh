#!/usr/bin/env bash
# Make this checkout runnable: a virtualenv with the package and its test tools, and
# (with --with-redis, for `make test`) redis-server and redis-cli for the integration tests and
# Debian's chromium for the dashboard test, or (with --with-bench) the benchmark's
# plotting and progress-bar libraries.
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

apt_install() {  # apt-get install as root, or through sudo
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "${1:-}" = "--with-redis" ]; then
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "bootstrap: installing redis-server and redis-cli (integration tests start their own server and cluster)" >&2
    apt_install redis-server redis-tools
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    echo "bootstrap: installing chromium (the dashboard test drives it headless)" >&2
    apt_install chromium || echo "bootstrap: chromium not installed; its test will be skipped" >&2
  fi
fi
