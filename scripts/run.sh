#!/usr/bin/env bash
# `make run`: the dev stack on the default ports, then every service and worker
# under honcho (Procfile). Ctrl-C stops the services, then the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=deploy/local/stack.sh

$STACK start
demo_pid=
stop_all() {
  # the summary (demo seeder) runs in the background: stop it (by pid) before the stack goes
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  $STACK stop
}
trap stop_all EXIT
.venv/bin/hecht migrate >/dev/null
# One prometheus_client multiprocess directory per web service (Procfile): a shared one would
# show every service's series on each /metrics, and each gunicorn empties its own at start.
export HECHT_PROMETHEUS_DIR=${HECHT_PROMETHEUS_DIR:-$PWD/var/prometheus}
unset PROMETHEUS_MULTIPROC_DIR   # the workers serve their own registry on HECHT_METRICS_PORT
rm -rf "$HECHT_PROMETHEUS_DIR" && mkdir -p "$HECHT_PROMETHEUS_DIR"
export HECHT_WEBHOOKS_ALLOW_PRIVATE=${HECHT_WEBHOOKS_ALLOW_PRIVATE:-1}
eval "$($STACK env)"
unset MONGO_URI   # each service uses its own database (hecht_<service>)
export HECHT_ENV=${HECHT_ENV:-development}   # the portal on plain http: no Secure cookie; links in its log
export HECHT_PORTAL_URL=${HECHT_PORTAL_URL:-http://127.0.0.1:8000}

# Coloured log lines when the terminal is one (hecht/logs.py; NO_COLOR or HECHT_LOG_COLOR=0 turn it off):
# the services write into honcho's pipes, where they cannot see the terminal themselves.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then export HECHT_LOG_COLOR=${HECHT_LOG_COLOR:-1}; fi

echo "hecht: starting the services and workers (Procfile); the URLs, a platform-admin token and the demo"
echo "sign-ins are printed last, once every service answers /readyz (HECHT_DEMO=0 skips the demo)."
# `hecht dev-summary` (hecht/devsummary.py) waits for every /readyz, seeds the demo region
# (`hecht demo`, idempotent: a restart changes nothing) and then prints the summary.
summary_args=()
if [ "${HECHT_DEMO:-1}" = 0 ]; then summary_args+=(--no-demo); fi
.venv/bin/hecht dev-summary --wait 180 ${summary_args[@]+"${summary_args[@]}"} &
demo_pid=$!
# honcho in the background, so that a SIGINT/SIGTERM to this script alone stops it too (Ctrl-C
# reaches the whole process group anyway). --no-prefix: the services' lines carry time and name.
.venv/bin/honcho -f Procfile start --no-prefix &
honcho_pid=$!
forward() { kill -"$1" "$honcho_pid" 2>/dev/null || true; }
trap 'forward INT' INT
trap 'forward TERM' TERM
# `wait` returns early when a trapped signal arrives: wait until honcho has stopped its processes.
while kill -0 "$honcho_pid" 2>/dev/null; do wait "$honcho_pid" || true; done
