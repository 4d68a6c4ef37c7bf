#!/usr/bin/env bash
# `make bench` / `make bench-full`: the benchmarks (bench/run.py) against a bench stack on its
# own ports and data dir, so a dev stack (`make run`) or a test stack is never touched.
# Reuses a bench stack that is already running; otherwise starts a fresh one and stops it
# (by pid, through stack.sh) when the run ends.
#
#   scripts/bench.sh quick|full [bench/run.py options, e.g. --only relay,4]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-quick}
shift || true
case $profile in quick | full) ;; *) echo "usage: scripts/bench.sh quick|full [run.py options]" >&2; exit 2 ;; esac

export HECHT_STACK_DIR=${HECHT_BENCH_STACK_DIR:-$PWD/var/bench-stack}
export HECHT_KAFKA_PORT=${HECHT_BENCH_KAFKA_PORT:-19192}
export HECHT_KAFKA_CONTROLLER_PORT=${HECHT_BENCH_KAFKA_CONTROLLER_PORT:-19193}
export HECHT_MONGO_PORT=${HECHT_BENCH_MONGO_PORT:-27019}
export HECHT_SMTP_PORT=${HECHT_BENCH_SMTP_PORT:-1027}
STACK=deploy/local/stack.sh

started=0
if ! $STACK status >/dev/null 2>&1; then
  $STACK wipe >/dev/null 2>&1 || true   # a fresh broker and database: nothing left from earlier runs
  $STACK start
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then $STACK stop; fi; }
trap cleanup EXIT

eval "$($STACK env)"
unset HECHT_MEMBERS_MONGO_URI HECHT_AGREEMENTS_MONGO_URI HECHT_NOTIFY_MONGO_URI HECHT_TOPIC_PREFIX
export PATH="$PWD/.venv/bin:$PATH"
export HECHT_ENV=${HECHT_ENV:-development}   # the development JWT secret (unset means production)

.venv/bin/python bench/run.py --profile "$profile" "$@"
