#!/usr/bin/env bash
# Fetch, start, probe, stop and wipe the local stack: real servers, no Docker.
#
#   Apache Kafka (KRaft, single broker+controller)  from the broker's jars on Maven Central
#   SecantusDB (MongoDB wire protocol, WiredTiger)  pip-installed into its own venv in the cache
#   aiosmtpd Maildir sink (SMTP)                    from the project's virtualenv
#
# Every server listens on 127.0.0.1 only, keeps its state under $HECHT_STACK_DIR
# and is tracked by a pid file there; several stacks (e.g. a dev stack and the
# `make test` stack) run side by side when they use different dirs and ports.
#
# Usage: deploy/local/stack.sh COMMAND
#   fetch                        download/build what is missing into $HECHT_CACHE (quiet when cached)
#   start                        fetch, start every server not already running, probe, create topics
#   stop                         SIGTERM each server (SIGKILL after 20 s), remove the pid files
#   wipe                         stop, then delete $HECHT_STACK_DIR
#   status                       one line per server; exit 0 only if all three answer
#   env                          print `export ...` lines for eval "$(deploy/local/stack.sh env)"
#   kill9   kafka|mongo|smtp     SIGKILL one server (reliability tests)
#   restart kafka|mongo|smtp     stop one server if running, start it again, probe it
#   selfcheck N                  run the pid/marker and version helpers N times; exit 1 on any miss
#
# Environment (defaults):
#   HECHT_CACHE                  ~/.cache/hecht        jars and binaries, pinned by version
#   HECHT_STACK_DIR              <repo>/var/stack      data, logs, pid files, maildir
#   HECHT_KAFKA_PORT             9092
#   HECHT_KAFKA_CONTROLLER_PORT  9093
#   HECHT_MONGO_PORT             27017
#   HECHT_SMTP_PORT              1025
#   HECHT_STACK_TIMEOUT          60                    seconds to wait for a server to answer
#   PYTHON                       <repo>/.venv/bin/python  (needs pymongo, kafka-python, aiosmtpd)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# Pinned versions: change them here only.
KAFKA_VERSION=4.3.1
# SecantusDB: a single-node MongoDB wire-protocol server on WiredTiger that
# advertises itself as a one-member replica set, so multi-document transactions,
# change streams and TTL indexes work as on a MongoDB replica set (production).
# Beta and GPL-2.0: it runs as its own process in its own virtualenv; nothing of
# it is linked into hecht. Its dependencies are pinned in secantusdb-constraints.txt.
SECANTUS_VERSION=0.7.0b3

CACHE=$(realpath -m "${HECHT_CACHE:-$HOME/.cache/hecht}")
STACK_DIR=$(realpath -m "${HECHT_STACK_DIR:-$REPO/var/stack}")
KAFKA_PORT=${HECHT_KAFKA_PORT:-9092}
CONTROLLER_PORT=${HECHT_KAFKA_CONTROLLER_PORT:-9093}
MONGO_PORT=${HECHT_MONGO_PORT:-27017}
SMTP_PORT=${HECHT_SMTP_PORT:-1025}
TIMEOUT=${HECHT_STACK_TIMEOUT:-60}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
HOST=127.0.0.1

KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
SECANTUS_VENV=$CACHE/secantusdb-$SECANTUS_VERSION
SECANTUS_BIN=$SECANTUS_VENV/bin/secantusd-py
MAILDIR=$STACK_DIR/mail
SERVERS="kafka mongo smtp"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for port in "$KAFKA_PORT" "$CONTROLLER_PORT" "$MONGO_PORT" "$SMTP_PORT" "$TIMEOUT"; do
  [[ $port =~ ^[0-9]+$ ]] || die "not a number: '$port' (check the HECHT_* variables)"
done

# --- per-server layout -------------------------------------------------------

server_dir() {
  case $1 in
    kafka) echo "$STACK_DIR/kafka" ;;
    mongo) echo "$STACK_DIR/mongo" ;;
    smtp)  echo "$STACK_DIR/smtp" ;;
    *) die "unknown server '$1' (expected kafka, mongo or smtp)" ;;
  esac
}
server_port() {
  case $1 in kafka) echo "$KAFKA_PORT" ;; mongo) echo "$MONGO_PORT" ;; smtp) echo "$SMTP_PORT" ;; esac
}
server_url() {
  case $1 in
    kafka) echo "$HOST:$KAFKA_PORT" ;;
    mongo) echo "mongodb://$HOST:$MONGO_PORT" ;;
    smtp)  echo "smtp://$HOST:$SMTP_PORT" ;;
  esac
}
pidfile() { echo "$(server_dir "$1")/pid"; }
logfile() {
  case $1 in kafka) echo "$STACK_DIR/kafka/kafka.log" ;; mongo) echo "$STACK_DIR/mongo/secantusd.log" ;;
    smtp) echo "$STACK_DIR/smtp/smtp.log" ;; esac
}
# A string found in the server's command line: guards against a recycled pid.
cmd_marker() {
  case $1 in kafka) echo "$STACK_DIR/kafka/server.properties" ;; mongo) echo "$STACK_DIR/mongo/data" ;;
    smtp) echo "$MAILDIR" ;; esac
}

# alive PID: true while the process exists and is not a zombie.
alive() {
  local pid=$1 state
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) || return 1
    [[ $state != Z ]] || return 1
  fi
}

# pid_of NAME: print the pid of NAME if its pid file names a live process of this stack.
pid_of() {
  local file pid
  file=$(pidfile "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  has_marker "$pid" "$(cmd_marker "$1")" || return 1
  echo "$pid"
}

# has_marker PID STRING: true if PID's command line contains STRING (or cannot be read).
# The command line is captured first and matched in bash, never piped into a quiet grep
# under pipefail (grep exits at the first match, the writer gets SIGPIPE, the pipeline fails).
has_marker() {
  local cmdline
  [[ -r /proc/$1/cmdline ]] || return 0
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$2"* ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# spawn NAME CMD...: start CMD detached (own session, no terminal signals), log and pid file.
spawn() {
  local name=$1 logf
  shift
  logf=$(logfile "$name")
  printf '=== %s: starting %s\n' "$(date -u +%FT%TZ)" "$name" >>"$logf"
  if command -v setsid >/dev/null; then
    setsid "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
  else
    nohup "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
  fi
  echo $! >"$(pidfile "$name")"
  echo "$(server_url "$name")" >"$(server_dir "$name")/addr"
}

# show_log NAME: the end of NAME's log since its last start.
show_log() {
  local logf
  logf=$(logfile "$1")
  [[ -f $logf ]] || return 0
  log "end of $logf:"
  tac "$logf" | sed '/^=== /q' | tac | tail -n 40 >&2 || true
}

# --- locks ---------------------------------------------------------------------
# fd 8: the cache (fetch); fd 9: the stack dir. Servers are spawned with both closed.

lock_cache() {
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.fetch.lock"
  flock 8
}
unlock_cache() { exec 8>&-; }
lock_stack() {
  mkdir -p "$STACK_DIR"
  touch "$STACK_DIR/.hecht-stack"
  exec 9>"$STACK_DIR/.lock"
  flock 9
}

# --- fetch -------------------------------------------------------------------------

fetch_kafka() {
  local jar=$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar out mvnlog
  # Complete = the broker jar and the SLF4J binding (see kafka/pom.xml).
  if [[ -f $jar ]] && compgen -G "$KAFKA_LIBS/log4j-slf4j-impl-*.jar" >/dev/null; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  if [[ -f $jar ]]; then
    # A cache from before the binding was added: copy-dependencies only adds the
    # missing jars (it does not overwrite release jars already there).
    log "adding the jars missing from $KAFKA_LIBS (Maven Central)"
    out=$KAFKA_LIBS
  else
    log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
    out=$KAFKA_LIBS.tmp.$$
    rm -rf "$out"
  fi
  mvnlog=$(mktemp)
  if ! mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out" >"$mvnlog" 2>&1; then
    cat "$mvnlog" >&2
    rm -f "$mvnlog"
    [[ $out == "$KAFKA_LIBS" ]] || rm -rf "$out"
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  fi
  rm -f "$mvnlog"
  if [[ $out != "$KAFKA_LIBS" ]]; then
    [[ -f $out/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf "$out"; die "mvn did not produce $(basename "$jar")"; }
    rm -rf "$KAFKA_LIBS"
    mv "$out" "$KAFKA_LIBS"
  fi
}

# secantus_version: the version the installed SecantusDB reports, or nothing.
secantus_version() {
  local out
  [[ -x $SECANTUS_VENV/bin/python ]] || return 0
  out=$("$SECANTUS_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("secantusdb"))' 2>/dev/null) || return 0
  printf '%s' "$out"
}

# The venv counts as installed only when its package reports the pinned version, so an
# interrupted install (no such report) is thrown away and done again.
fetch_secantus() {
  local version pylog
  version=$(secantus_version)
  [[ $version == "$SECANTUS_VERSION" && -x $SECANTUS_BIN ]] && return 0
  log "installing SecantusDB $SECANTUS_VERSION from PyPI into $SECANTUS_VENV"
  rm -rf "$SECANTUS_VENV"
  pylog=$(mktemp)
  if ! { python3 -m venv "$SECANTUS_VENV" &&
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$SECANTUS_VENV/bin/pip" install -q \
      -c "$HERE/secantusdb-constraints.txt" "secantusdb==$SECANTUS_VERSION"; } >"$pylog" 2>&1; then
    cat "$pylog" >&2
    rm -rf "$SECANTUS_VENV" "$pylog"
    die "pip could not install secantusdb==$SECANTUS_VERSION"
  fi
  rm -f "$pylog"
  version=$(secantus_version)
  [[ $version == "$SECANTUS_VERSION" && -x $SECANTUS_BIN ]] \
    || { rm -rf "$SECANTUS_VENV"; die "the SecantusDB installed reports version '$version', not $SECANTUS_VERSION"; }
}

cmd_fetch() {
  lock_cache
  fetch_kafka
  fetch_secantus
  unlock_cache
}

# --- launch --------------------------------------------------------------------

kafka_java() {
  "$JAVA" -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -cp "$KAFKA_LIBS/*" "$@"
}

launch_kafka() {
  local dir=$STACK_DIR/kafka uuid
  command -v "$JAVA" >/dev/null || die "no java found (Kafka $KAFKA_VERSION needs Java 17+; set JAVA_HOME)"
  mkdir -p "$dir/logs"
  cat >"$dir/server.properties" <<EOF
# Written by deploy/local/stack.sh at every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/logs
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
# After a kill -9 the restarted broker cannot register until the controller expires
# the dead incarnation's session (default 9 s); a short session makes restarts quick.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
EOF
  if [[ ! -f $dir/logs/meta.properties ]]; then
    uuid=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$dir/kafka.log") \
      || { show_log kafka; die "kafka: StorageTool random-uuid failed"; }
    kafka_java kafka.tools.StorageTool format -t "$uuid" -c "$dir/server.properties" --standalone \
      >>"$dir/kafka.log" 2>&1 || { show_log kafka; die "kafka: formatting the storage failed"; }
    echo "$CONTROLLER_PORT" >"$dir/controller-port"
  elif [[ -f $dir/controller-port && $(<"$dir/controller-port") != "$CONTROLLER_PORT" ]]; then
    # The KRaft quorum recorded the controller's address when the storage was formatted.
    die "kafka: $dir was formatted with controller port $(<"$dir/controller-port"), not $CONTROLLER_PORT; wipe the stack or use that port"
  fi
  spawn kafka "$JAVA" -Xmx512m -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties"
}

launch_mongo() {
  local dir=$STACK_DIR/mongo
  mkdir -p "$dir/data"
  # --sync-on-commit: the WiredTiger log is fsynced at every commit, so an acknowledged
  # write survives kill -9 (the fault runs check it). Heartbeats every 10 s (mongod's
  # default) keep an idle change stream's resume token inside the oplog window.
  spawn mongo "$SECANTUS_BIN" --host "$HOST" --port "$MONGO_PORT" --storage-path "$dir/data" \
    --sync-on-commit --noop-heartbeat-seconds 10 --cache-size "${HECHT_MONGO_CACHE:-256M}" --log-level WARNING
}

launch_smtp() {
  # Mailbox stores every message received in the Maildir $MAILDIR (new/, cur/, tmp/).
  # Created here so that readers find it before the first mail (aiosmtpd only creates
  # the subdirs when the Maildir itself does not exist yet).
  mkdir -p "$STACK_DIR/smtp" "$MAILDIR/new" "$MAILDIR/cur" "$MAILDIR/tmp"
  spawn smtp "$PYTHON" -u -m aiosmtpd -n -l "$HOST:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR"
}

# --- probes (real client round trips) ------------------------------------------

# probe NAME PID SECONDS: poll until NAME answers; fail early if PID exits.
probe() {
  "$PYTHON" - "$1" "$HOST" "$(server_port "$1")" "$2" "$3" <<'PY'
import logging, os, sys, time

logging.disable(logging.CRITICAL)
name, host, port, pid, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])


def alive():
    if pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def kafka():
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=f"{host}:{port}", client_id="hecht-stack-probe",
                             bootstrap_timeout_ms=2000, request_timeout_ms=5000)
    try:
        admin.list_topics()
    finally:
        admin.close()


def mongo():
    import pymongo

    client = pymongo.MongoClient(host, port, directConnection=True, serverSelectionTimeoutMS=1000,
                                 connectTimeoutMS=1000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def smtp():
    import smtplib

    with smtplib.SMTP(host, port, timeout=2) as s:
        code, msg = s.noop()
        if code != 250:
            raise RuntimeError(f"NOOP answered {code} {msg!r}")


check = {"kafka": kafka, "mongo": mongo, "smtp": smtp}[name]
deadline = time.monotonic() + timeout
while True:
    try:
        check()
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
        last = e
    if not alive():
        print(f"stack: {name}: the server process {pid} exited", file=sys.stderr)
        sys.exit(2)
    if time.monotonic() >= deadline:
        print(f"stack: {name}: no answer on {host}:{port} after {timeout:g} s: {last!r}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
PY
}

# The topic names come from hecht/topics.py, the one list the code reads; locally the
# event streams get 3 partitions and the dead-letter topics 1 (replication factor 1).
create_topics() {
  "$PYTHON" - "$REPO" "$HOST:$KAFKA_PORT" <<'PY'
import logging, sys

sys.path.insert(0, sys.argv[1])
from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from hecht.topics import ALL_TOPICS, COMPACTED_CONFIG, COMPACTED_TOPICS, EVENT_TOPICS

logging.disable(logging.CRITICAL)
wanted = {name: 3 if name in EVENT_TOPICS + COMPACTED_TOPICS else 1 for name in ALL_TOPICS}
admin = KafkaAdminClient(bootstrap_servers=sys.argv[2], client_id="hecht-stack-topics", request_timeout_ms=30000)
try:
    existing = set(admin.list_topics())
    missing = {name: {"num_partitions": n, "replication_factor": 1,
                      **({"configs": dict(COMPACTED_CONFIG)} if name in COMPACTED_TOPICS else {})}
               for name, n in wanted.items() if name not in existing}
    if missing:
        result = admin.create_topics(missing, timeout_ms=30000, raise_errors=False)
        failed = [(t["name"], t["error_code"], t.get("error_message")) for t in result["topics"]
                  if t["error_code"] not in (0, TopicAlreadyExistsError.errno)]
        if failed:
            sys.exit(f"stack: kafka: could not create topics: {failed}")
        admin.wait_for_topics(list(missing))
finally:
    admin.close()
PY
}

# --- commands --------------------------------------------------------------------

# check_reuse NAME: a running server must be the one asked for (same address).
check_reuse() {
  local addr_file
  addr_file=$(server_dir "$1")/addr
  if [[ -f $addr_file && $(<"$addr_file") != "$(server_url "$1")" ]]; then
    die "$1 of $STACK_DIR already runs at $(<"$addr_file"), not $(server_url "$1"); stop it first"
  fi
}

# launch NAME: start NAME unless it runs; sets STATE[NAME] to started or reused.
declare -A STATE
launch() {
  local name=$1 port
  if pid_of "$name" >/dev/null; then
    check_reuse "$name"
    STATE[$name]=reused
    return 0
  fi
  rm -f "$(pidfile "$name")"
  for port in $(server_port "$name") $([[ $name == kafka ]] && echo "$CONTROLLER_PORT"); do
    port_in_use "$port" && die "$name: port $HOST:$port is taken by another process (another stack? set HECHT_*_PORT)"
  done
  "launch_$name"
  STATE[$name]=started
}

# ready NAME: probe NAME; on failure show its log, stop it if this run started it, exit.
ready() {
  local name=$1 pid rc=0
  if pid=$(pid_of "$name"); then
    probe "$name" "$pid" "$TIMEOUT" || rc=$?
  else
    log "$name: the server process exited"
    rc=2
  fi
  if ((rc != 0)); then
    show_log "$name"
    [[ ${STATE[$name]:-} == started ]] && stop_servers "$name"
    die "$name did not become ready"
  fi
  if [[ $name == kafka ]]; then
    create_topics || die "kafka: creating the topics failed"
  fi
}

report() {
  local name=$1 extra=""
  [[ $name == smtp ]] && extra="  maildir $MAILDIR"
  [[ $name == kafka ]] && extra="  controller $HOST:$CONTROLLER_PORT"
  printf '%-6s %-26s pid %-7s %s%s\n' "$name" "$(server_url "$name")" "$(pid_of "$name" || echo '?')" \
    "${STATE[$name]:-running}" "$extra"
}

need_python() {
  [[ -x $PYTHON ]] || die "no Python at $PYTHON (create the project's virtualenv, or set PYTHON)"
}

cmd_start() {
  local name
  need_python
  cmd_fetch
  lock_stack
  for name in $SERVERS; do launch "$name"; done
  for name in $SERVERS; do ready "$name"; done
  for name in $SERVERS; do report "$name"; done
}

# stop_servers NAME...: SIGTERM all, wait up to 20 s each, then SIGKILL.
stop_servers() {
  local name pid i
  declare -A pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids[$name]=$pid
    else
      rm -f "$(pidfile "$name")"
    fi
  done
  for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    for ((i = 0; i < 40; i++)); do alive "$pid" || break; sleep 0.5; done
    if alive "$pid"; then
      log "$name (pid $pid) still running after 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do alive "$pid" || break; sleep 0.5; done
    fi
    alive "$pid" && die "$name (pid $pid) does not die"
    rm -f "$(pidfile "$name")"
    echo "$name stopped (pid $pid)"
  done
}

cmd_stop() {
  [[ -d $STACK_DIR ]] || return 0
  lock_stack
  stop_servers $SERVERS
}

cmd_wipe() {
  [[ -d $STACK_DIR ]] || return 0
  case $STACK_DIR in / | "$HOME" | "$REPO" | "$CACHE") die "refusing to wipe $STACK_DIR" ;; esac
  if [[ ! -e $STACK_DIR/.hecht-stack && -n $(ls -A "$STACK_DIR") ]]; then
    die "refusing to wipe $STACK_DIR: not a stack dir (no .hecht-stack marker)"
  fi
  lock_stack
  stop_servers $SERVERS
  rm -rf "$STACK_DIR"
  echo "wiped $STACK_DIR"
}

cmd_status() {
  local name pid all=0
  need_python
  for name in $SERVERS; do
    if pid=$(pid_of "$name"); then
      if probe "$name" "$pid" 0 2>/dev/null; then
        printf '%-6s %-26s pid %-7s ready\n' "$name" "$(server_url "$name")" "$pid"
      else
        printf '%-6s %-26s pid %-7s NOT ANSWERING (log: %s)\n' "$name" "$(server_url "$name")" "$pid" "$(logfile "$name")"
        all=1
      fi
    else
      printf '%-6s %-26s stopped\n' "$name" "$(server_url "$name")"
      all=1
    fi
  done
  return $all
}

cmd_env() {
  printf 'export MONGO_URI=%q\n' "mongodb://$HOST:$MONGO_PORT"
  # SecantusDB 0.7 makes every retryable write scan its table of retryable-write records
  # (see hecht/mongo.py retry_writes): the local stack runs without them.
  printf 'export HECHT_MONGO_RETRY_WRITES=0\n'
  printf 'export KAFKA_BOOTSTRAP_SERVERS=%q\n' "$HOST:$KAFKA_PORT"
  printf 'export HECHT_SMTP_URL=%q\n' "smtp://$HOST:$SMTP_PORT"
  printf 'export HECHT_MAILDIR=%q\n' "$MAILDIR"
}

cmd_kill9() {
  local name=$1 pid i
  server_dir "$name" >/dev/null
  [[ -d $STACK_DIR ]] || die "$name is not running"
  lock_stack
  pid=$(pid_of "$name") || die "$name is not running"
  kill -KILL "$pid"
  for ((i = 0; i < 40; i++)); do alive "$pid" || break; sleep 0.25; done
  alive "$pid" && die "$name (pid $pid) survived SIGKILL"
  rm -f "$(pidfile "$name")"
  echo "$name killed (pid $pid, SIGKILL)"
}

cmd_restart() {
  local name=$1
  server_dir "$name" >/dev/null
  need_python
  cmd_fetch
  lock_stack
  stop_servers "$name"
  launch "$name"
  ready "$name"
  report "$name"
}

# The helpers that decide "is this our server" and "is this the pinned version" must never
# fail at random (piping a version into a quiet grep under pipefail did, one time in three):
# run them N times.
cmd_selfcheck() {
  local n=$1 i name failures=0 version
  [[ $n =~ ^[0-9]+$ ]] || die "selfcheck needs a count"
  for ((i = 0; i < n; i++)); do
    version=$(secantus_version)
    [[ $version == "$SECANTUS_VERSION" ]] || { failures=$((failures + 1)); log "run $i: version '$version'"; }
    for name in $SERVERS; do
      pid_of "$name" >/dev/null || { failures=$((failures + 1)); log "run $i: $name not found by its pid file"; }
    done
  done
  echo "selfcheck: $n runs, $failures failures"
  ((failures == 0))
}

usage() { sed -n '/^# Usage:/,/^# *PYTHON /s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

case ${1:-} in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  wipe) cmd_wipe ;;
  status) cmd_status ;;
  env) cmd_env ;;
  kill9) [[ $# -eq 2 ]] || usage; cmd_kill9 "$2" ;;
  restart) [[ $# -eq 2 ]] || usage; cmd_restart "$2" ;;
  selfcheck) [[ $# -eq 2 ]] || usage; cmd_selfcheck "$2" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
