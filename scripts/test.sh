#!/usr/bin/env bash
# Run pytest against a test stack on its own ports and data dir, so a dev stack
# (`make run`) is never touched. Reuses a test stack that is already running;
# otherwise starts a fresh one and stops it (by pid) when the tests end.
set -euo pipefail
cd "$(dirname "$0")/.."

export HECHT_STACK_DIR=${HECHT_TEST_STACK_DIR:-$PWD/var/test-stack}
export HECHT_KAFKA_PORT=${HECHT_TEST_KAFKA_PORT:-19092}
export HECHT_KAFKA_CONTROLLER_PORT=${HECHT_TEST_KAFKA_CONTROLLER_PORT:-19093}
export HECHT_MONGO_PORT=${HECHT_TEST_MONGO_PORT:-27018}
export HECHT_SMTP_PORT=${HECHT_TEST_SMTP_PORT:-1026}
STACK=deploy/local/stack.sh

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; they never
# download a browser (no `playwright install`). Installed here when missing, as root.
needs_browser() {
  local a
  for a in "$@"; do
    case $a in
      tests|tests/|./tests|./tests/|tests/browser|tests/browser/*|./tests/browser*) return 0 ;;
    esac
  done
  return 1
}
if needs_browser "$@"; then
  export HECHT_CHROMIUM=${HECHT_CHROMIUM:-/usr/bin/chromium}
  if [ ! -x "$HECHT_CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && [ "$HECHT_CHROMIUM" = /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
      echo "test: installing Debian's chromium for the browser tests (apt-get install -y chromium)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null; }
    fi
    if [ ! -x "$HECHT_CHROMIUM" ]; then
      echo "test: error: the browser tests need Chromium at $HECHT_CHROMIUM, and it is not there." >&2
      echo "test:   install Debian's package as root: apt-get install -y chromium" >&2
      echo "test:   or point HECHT_CHROMIUM at a Chromium binary, or leave tests/browser out." >&2
      exit 1
    fi
  fi
fi

started=0
if ! $STACK status >/dev/null 2>&1; then
  $STACK wipe >/dev/null 2>&1 || true   # a fresh broker: no topics left from earlier runs
  $STACK start
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then $STACK stop; fi; }
trap cleanup EXIT

eval "$($STACK env)"
export PATH="$PWD/.venv/bin:$PATH"   # tools installed in the venv (hadolint, gunicorn, hecht)
export HECHT_TEST_MONGO="mongodb://127.0.0.1:${HECHT_MONGO_PORT}"
unset MONGO_URI HECHT_MEMBERS_MONGO_URI HECHT_AGREEMENTS_MONGO_URI HECHT_NOTIFY_MONGO_URI

.venv/bin/python -m pytest "$@" -q -p no:cacheprovider -o console_output_style=classic \
  ${PYTEST_ADDOPTS_EXTRA:-}
