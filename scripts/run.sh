#!/usr/bin/env bash
# `make run`: the dev stack on the default ports, then every service and worker
# under honcho (Procfile). Ctrl-C stops the services, then the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=deploy/local/stack.sh

$STACK start
trap '$STACK stop' EXIT
.venv/bin/hecht migrate >/dev/null
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
export HECHT_WEBHOOKS_ALLOW_PRIVATE=${HECHT_WEBHOOKS_ALLOW_PRIVATE:-1}
eval "$($STACK env)"
unset MONGO_URI   # each service uses its own database (hecht_<service>)

cat <<MSG

hecht is starting:
  agreements  http://127.0.0.1:8001   (docs: /docs, spec: /openapi.json)
  members     http://127.0.0.1:8002
  notify      http://127.0.0.1:8003
  Kafka ${KAFKA_BOOTSTRAP_SERVERS} · MongoDB (SecantusDB) ${HECHT_MONGO_URL:-mongodb://127.0.0.1:27017} · SMTP sink ${HECHT_SMTP_URL}

platform-admin token (1 h):
  export TOKEN=$(.venv/bin/hecht token --role platform-admin)
  $(.venv/bin/hecht token --role platform-admin)
other tokens: .venv/bin/hecht token --role region-admin|gp|integrator --region <id> [--member <id>]

MSG
exec_honcho() { .venv/bin/honcho -f Procfile start; }
exec_honcho
