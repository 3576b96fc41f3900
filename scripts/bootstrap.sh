#!/usr/bin/env bash
# Make this checkout runnable: a virtualenv with the package and its test tools, and
# (with --with-redis, for `make test`) redis-server and redis-cli for the integration tests and
# Debian's chromium for the dashboard test, or (with --with-bench) the benchmark's
# plotting and progress-bar libraries.
#
# Silent and quick when nothing changed. It installs again only for what is missing: an
# extra never installed, or a pyproject.toml that changed since. It rebuilds .venv when
# PYTHON names another interpreter than the one that made it (without PYTHON, the
# existing .venv is kept, whichever made it), and when .venv is broken: its python does
# not run, its creation never finished (no pip), or the package is gone from it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
MADE_BY="$VENV/.made-by"  # the interpreter that made it; written once it is complete
PYTHON_GIVEN=${PYTHON:+yes}
PYTHON=${PYTHON:-python3}

identity() {  # the interpreter behind a command: its real path and version
  "$1" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])'
}

venv_identity() {  # the interpreter a virtualenv was made from
  "$VENV/bin/python" -c \
    'import os, sys; print(os.path.realpath(sys._base_executable), sys.version.split()[0])'
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: PYTHON=$PYTHON is not a command here (python3 >= 3.11 is needed)" >&2
  exit 1
fi

rebuild=""
if [ -e "$VENV" ]; then
  if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    rebuild="its python does not run"
  elif [ ! -f "$MADE_BY" ]; then
    if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
      venv_identity > "$MADE_BY"  # complete, made before this file was kept: adopted
    else
      rebuild="its creation did not finish"
    fi
  fi
  if [ -z "$rebuild" ] && [ -n "$PYTHON_GIVEN" ] \
      && [ "$(cat "$MADE_BY")" != "$(identity "$PYTHON")" ]; then
    rebuild="it was made by $(cat "$MADE_BY"), PYTHON is $(identity "$PYTHON")"
  fi
fi
if [ -n "$rebuild" ]; then
  echo "bootstrap: rebuilding $VENV: $rebuild" >&2
  rm -rf "$VENV"
fi
if [ ! -e "$VENV" ]; then
  echo "bootstrap: creating $VENV with $PYTHON" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  identity "$PYTHON" > "$MADE_BY"
fi

extras=(test)
[ "${1:-}" = "--with-bench" ] && extras=(test bench)
version=$(sha1sum pyproject.toml | cut -c1-12)
missing=()
for extra in "${extras[@]}"; do
  [ -f "$VENV/.installed-$version-$extra" ] || missing+=("$extra")
done
if [ ${#missing[@]} -eq 0 ] && ! "$VENV/bin/python" -c 'import trio_scheduler' 2>/dev/null; then
  echo "bootstrap: the package is gone from $VENV" >&2
  missing=("${extras[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  wanted=$(IFS=,; echo "${missing[*]}")
  echo "bootstrap: installing the package and its [$wanted] tools" >&2
  "$VENV/bin/python" -m pip install --quiet -e ".[$wanted]"
  # Stamps of an older pyproject.toml no longer say anything.
  find "$VENV" -maxdepth 1 -name '.installed-*' ! -name ".installed-$version-*" -delete
  for extra in "${missing[@]}"; do touch "$VENV/.installed-$version-$extra"; done
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
