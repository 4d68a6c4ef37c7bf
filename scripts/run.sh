#!/usr/bin/env bash
# `make run`: the dev stack on the default ports, then every service and worker
# under honcho (Procfile). Ctrl-C stops the services, then the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=deploy/local/stack.sh

$STACK start
demo_pid=
stop_all() {
  # the demo seeder runs in the background: stop it (by pid) before the stack goes
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

cat <<MSG

hecht is starting:
  portal      ${HECHT_PORTAL_URL}   (GPs: sign up, sign in, vote)
  agreements  http://127.0.0.1:8001   (docs: /docs, spec: /openapi.json)
  members     http://127.0.0.1:8002
  notify      http://127.0.0.1:8003
  Kafka ${KAFKA_BOOTSTRAP_SERVERS} · MongoDB (SecantusDB) ${HECHT_MONGO_URL:-mongodb://127.0.0.1:27017} · SMTP sink ${HECHT_SMTP_URL}

platform-admin token (1 h):
  export TOKEN=$(.venv/bin/hecht token --role platform-admin)
  $(.venv/bin/hecht token --role platform-admin)
other tokens: .venv/bin/hecht token --role region-admin|gp|integrator --region <id> [--member <id>]

MSG
# Seed the demo region once the services answer (idempotent: a restart changes nothing);
# it prints how to sign in as each demo person. HECHT_DEMO=0 leaves the databases alone.
if [ "${HECHT_DEMO:-1}" != 0 ]; then
  echo "demo: seeding the demo region (hecht demo) once the services are up; HECHT_DEMO=0 skips it"
  .venv/bin/hecht demo --wait 180 &
  demo_pid=$!
else
  echo "demo: skipped (HECHT_DEMO=0); run .venv/bin/hecht demo to seed the demo region"
fi
exec_honcho() { .venv/bin/honcho -f Procfile start; }
exec_honcho
