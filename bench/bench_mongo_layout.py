"""MongoDB layout: one SecantusDB server per service (B) against one shared server (A).

Issue 12, item 1: "Measure one server per service (a real 'MongoDB per service', one
process each, spread over the cores) against one shared server, choose, and put the
figures in the README."

The script starts its own SecantusDB servers on free loopback ports, with temporary
storage and the flags of ``deploy/local/stack.sh`` (``--sync-on-commit``, heartbeats,
256M cache):

* layout A (baseline): one server holding the three service databases;
* layout B: three servers, one per service database.

All four servers run for the whole script (an idle server uses no CPU), and the rounds
alternate A, B, B, A, … so that both layouts see the same machine minute by minute.
In each round, per service (members, agreements, notify):

* one **writer process** with ``--threads`` threads (2, like the two gunicorn sync workers
  of a service) runs what a hecht write does, in a closed loop: a multi-document
  transaction (``ClientSession.with_transaction``) of either a guarded
  ``find_one_and_update({_id, version})`` (75 %) or the insert of a new aggregate (25 %),
  plus ``insert_many`` of 1–2 event documents into the service's ``outbox``; after each
  commit two ``find_one`` reads by ``_id``;
* one **relay process** follows the outbox's change stream (inserts only), records when
  each event arrived and removes the delivered entries in one bulk ``delete_many`` per batch,
  like the relay.

Reported per layout, pooled over its rounds (measurement window only, warm-up dropped):
committed transactions/s, transaction latency p50/p99 (start of ``with_transaction`` to
the commit's acknowledgement), change-stream delivery p50/p99 (commit acknowledged in the
writer → change received in the relay; same clock), read latency, and the CPU of the
server processes (cores busy, and CPU ms per committed transaction). ``value`` is layout
B, ``baseline`` layout A, ``ratio`` B/A.

    .venv/bin/python bench/bench_mongo_layout.py [--profile quick|full] [--rounds N]
        [--seconds S] [--threads T]

Servers are stopped by pid at the end, always; their logs stay in
``var/bench/mongo-layout-<tag>/``, their data directories are removed.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

SERVICES = ("members", "agreements", "notify")
AGGREGATE = {"members": "members", "agreements": "agreements", "notify": "deliveries"}
SECANTUS_VERSION = os.environ.get("HECHT_SECANTUS_VERSION", "0.7.0b3")
PROFILES = {
    # rounds alternate A, B, B, A, ...; seconds = measured window per round
    "quick": {"rounds": 4, "seconds": 7.0, "warmup": 1.5},
    "full": {"rounds": 8, "seconds": 30.0, "warmup": 3.0},
}
PRELOAD_PER_THREAD = 200
READS_PER_TX = 2


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------
def secantus_bin() -> Path:
    explicit = os.environ.get("HECHT_SECANTUS_BIN")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("HECHT_CACHE_DIR") or Path.home() / ".cache" / "hecht")
    return cache / f"secantusdb-{SECANTUS_VERSION}" / "bin" / "secantusd-py"


def start_server(name: str, data_root: Path, log_dir: Path) -> tuple[lib.Proc, int]:
    port = lib.free_port()
    data = data_root / name
    data.mkdir(parents=True)
    argv = [str(secantus_bin()), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data),
            "--sync-on-commit", "--noop-heartbeat-seconds", "10",
            "--cache-size", os.environ.get("HECHT_MONGO_CACHE", "256M"), "--log-level", "WARNING"]
    proc = lib.Proc(name, argv, dict(os.environ), log_dir / f"{name}.log").start()
    return proc, port


def wait_ready(proc: lib.Proc, port: int, timeout: float = 60.0) -> None:
    import pymongo

    def up():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {proc.tail(800)}")
        c = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=500)
        try:
            return c.admin.command("ping").get("ok") == 1
        finally:
            c.close()

    deadline = time.monotonic() + timeout
    while True:
        try:
            if up():
                return
        except RuntimeError:
            raise
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} on port {port} not ready after {timeout:g} s")
        time.sleep(0.1)


def stop_servers(servers: list[lib.Proc], timeout: float = 15.0) -> None:
    """SIGTERM to every server at once (each takes about 2 s to close), then wait for each;
    SIGKILL whichever is still there after ``timeout``. By pid (each runs in its own group)."""
    for p in servers:
        if p.alive():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in servers:
        if p.proc is None:
            continue
        try:
            p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - still running
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass


cpu_seconds = lib.cpu_seconds


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def client(uri: str):
    import pymongo
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000, connectTimeoutMS=3000, socketTimeoutMS=30000,
                               tz_aware=True, uuidRepresentation="standard", maxPoolSize=16)


# --------------------------------------------------------------------------------------------
# Child processes (spawned: pymongo is not fork-safe, and nothing is inherited)
# --------------------------------------------------------------------------------------------
def relay_main(svc: str, uri: str, db_name: str, out: mp.Queue, stop: mp.Event) -> None:
    """Follow the outbox's change stream; record the arrival time of every insert; delete
    the delivered entries in one bulk write per batch (as the relay does after publishing)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        c = client(uri)
        outbox = c[db_name]["outbox"]
        received: dict[str, float] = {}
        batches = 0
        with outbox.watch([{"$match": {"operationType": "insert"}}], max_await_time_ms=100) as stream:
            out.put(("ready", "relay", svc, None))
            pending: list[str] = []
            while not stop.is_set():
                change = stream.try_next()
                if change is not None:
                    eid = change["documentKey"]["_id"]
                    received[eid] = time.time()
                    pending.append(eid)
                    if len(pending) < 100:
                        continue
                if pending:
                    outbox.delete_many({"_id": {"$in": pending}})
                    batches += 1
                    pending = []
        c.close()
        out.put(("result", "relay", svc, {"received": received, "batches": batches}))
    except Exception:  # noqa: BLE001
        out.put(("error", "relay", svc, traceback.format_exc()))


def writer_main(svc: str, uri: str, db_name: str, threads: int, out: mp.Queue, go: mp.Event,
                schedule) -> None:
    """``threads`` closed-loop writers: transaction (aggregate + 1–2 outbox events), then reads."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from pymongo import ReturnDocument
        c = client(uri)
        db = c[db_name]
        aggs, outbox = db[AGGREGATE[svc]], db["outbox"]
        db.command("ping")
        # warm the pool: one connection per thread
        warm = [threading.Thread(target=lambda: aggs.find_one({"_id": "none"})) for _ in range(threads)]
        [t.start() for t in warm]
        [t.join() for t in warm]
        out.put(("ready", "writer", svc, None))
        go.wait()
        t_end = schedule[2]

        def run(k: int, res: dict) -> None:
            rnd = random.Random(f"{svc}-{k}")
            versions = {f"{svc}-{k}-{i}": 1 for i in range(PRELOAD_PER_THREAD)}
            ids = list(versions)
            n_new = 0
            while True:
                t0 = time.time()
                if t0 >= t_end:
                    break
                events = [{"_id": uuid.uuid4().hex, "service": svc, "type": f"{svc}.changed",
                           "created_at": t0, "payload": {"n": rnd.random(), "text": "x" * 200}}
                          for _ in range(rnd.choice((1, 2)))]
                if rnd.random() < 0.25:
                    n_new += 1
                    op, agg_id = "insert", f"{svc}-{k}-new-{n_new}"
                else:
                    op, agg_id = "update", rnd.choice(ids)
                for e in events:
                    e["subject"] = agg_id
                attempts = [0]
                conflict = [False]

                def txn(session):
                    attempts[0] += 1
                    if op == "insert":
                        aggs.insert_one({"_id": agg_id, "version": 1, "name": "y" * 100, "created_at": t0},
                                        session=session)
                    else:
                        v = versions[agg_id]
                        doc = aggs.find_one_and_update({"_id": agg_id, "version": v},
                                                       {"$set": {"version": v + 1, "updated_at": t0}},
                                                       session=session, return_document=ReturnDocument.AFTER)
                        if doc is None:
                            conflict[0] = True
                    outbox.insert_many(events, ordered=True, session=session)

                with c.start_session() as s:
                    s.with_transaction(txn)
                t1 = time.time()
                if op == "insert":
                    versions[agg_id] = 1
                    ids.append(agg_id)
                elif not conflict[0]:
                    versions[agg_id] += 1
                res["tx"].append((t0, t1 - t0))
                res["retries"] += attempts[0] - 1
                res["conflicts"] += conflict[0]
                for e in events:
                    res["commits"][e["_id"]] = t1
                for _ in range(READS_PER_TX):
                    r0 = time.time()
                    if aggs.find_one({"_id": rnd.choice(ids)}) is None:
                        res["read_misses"] += 1
                    res["reads"].append((r0, time.time() - r0))

        results = [{"tx": [], "reads": [], "commits": {}, "retries": 0, "conflicts": 0, "read_misses": 0}
                   for _ in range(threads)]
        errors: list[str] = []

        def guarded(k):
            try:
                run(k, results[k])
            except Exception:  # noqa: BLE001
                errors.append(traceback.format_exc())

        ts = [threading.Thread(target=guarded, args=(k,)) for k in range(threads)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        c.close()
        if errors:
            out.put(("error", "writer", svc, errors[0]))
            return
        merged = {"tx": [], "reads": [], "commits": {}, "retries": 0, "conflicts": 0, "read_misses": 0}
        for r in results:
            merged["tx"] += r["tx"]
            merged["reads"] += r["reads"]
            merged["commits"].update(r["commits"])
            for key in ("retries", "conflicts", "read_misses"):
                merged[key] += r[key]
        out.put(("result", "writer", svc, merged))
    except Exception:  # noqa: BLE001
        out.put(("error", "writer", svc, traceback.format_exc()))


# --------------------------------------------------------------------------------------------
# One round
# --------------------------------------------------------------------------------------------
def prepare(uri: str, db_name: str, svc: str, threads: int) -> None:
    c = client(uri)
    try:
        db = c[db_name]
        db.create_collection(AGGREGATE[svc])
        db.create_collection("outbox")
        db["outbox"].create_index([("created_at", 1), ("_id", 1)])
        now = time.time()
        docs = [{"_id": f"{svc}-{k}-{i}", "version": 1, "name": "y" * 100, "created_at": now}
                for k in range(threads) for i in range(PRELOAD_PER_THREAD)]
        db[AGGREGATE[svc]].insert_many(docs)
    finally:
        c.close()


def drop(uri: str, db_name: str) -> None:
    c = client(uri)
    try:
        c.drop_database(db_name)
    except Exception:  # noqa: BLE001 - cleanup
        pass
    finally:
        c.close()


def collect(out: mp.Queue, kind: str, want: int, procs: list, timeout: float) -> dict:
    """Wait for ``want`` messages of ``kind`` ('ready' or 'result'); fail on an error message."""
    got: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waited {timeout:g} s for {kind} of {want} processes, got {sorted(got)}")
        try:
            msg = out.get(timeout=min(left, 1.0))
        except queue.Empty:
            dead = [p.name for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
            if dead:
                raise RuntimeError(f"child process(es) died: {dead}")
            continue
        what, role, svc, data = msg
        if what == "error":
            raise RuntimeError(f"{role} {svc} failed:\n{data}")
        if what != kind:
            raise RuntimeError(f"unexpected message {what} from {role} {svc} while waiting for {kind}")
        got[f"{role}:{svc}"] = data
    return got


def run_round(ctx, layout: str, uris: dict[str, str], server_pids: list[int], round_no: int, tag: str,
              seconds: float, warmup: float, threads: int, live: list) -> dict:
    dbs = {svc: f"hecht_layout_{tag}_r{round_no}_{svc}" for svc in SERVICES}
    for svc in SERVICES:
        prepare(uris[svc], dbs[svc], svc, threads)
    out = ctx.Queue()
    stop, go = ctx.Event(), ctx.Event()
    schedule = ctx.Array("d", 3, lock=False)
    relays = [ctx.Process(target=relay_main, name=f"relay-{svc}", args=(svc, uris[svc], dbs[svc], out, stop),
                          daemon=True) for svc in SERVICES]
    writers = [ctx.Process(target=writer_main, name=f"writer-{svc}",
                           args=(svc, uris[svc], dbs[svc], threads, out, go, schedule), daemon=True)
               for svc in SERVICES]
    procs = relays + writers
    live.extend(procs)
    try:
        for p in relays:
            p.start()
        collect(out, "ready", len(relays), procs, 60)
        for p in writers:
            p.start()
        collect(out, "ready", len(writers), procs, 60)

        t_start = time.time() + 0.2
        t_measure, t_end = t_start + warmup, t_start + warmup + seconds
        schedule[0], schedule[1], schedule[2] = t_start, t_measure, t_end
        go.set()
        client_pids = {p.name: p.pid for p in procs}
        time.sleep(max(0.0, t_measure - time.time()))
        cpu0 = {pid: cpu_seconds(pid) for pid in server_pids}
        ccpu0 = {n: cpu_seconds(pid) for n, pid in client_pids.items()}
        m0, w0 = machine_busy(), time.time()
        time.sleep(max(0.0, t_end - time.time()))
        cpu1 = {pid: cpu_seconds(pid) for pid in server_pids}
        ccpu1 = {n: cpu_seconds(pid) for n, pid in client_pids.items()}
        m1, w1 = machine_busy(), time.time()
        window = w1 - w0

        wres = collect(out, "result", len(writers), procs, 60 + seconds)
        time.sleep(1.0)  # let the last changes arrive
        stop.set()
        rres = collect(out, "result", len(relays), procs, 60)
        for p in procs:
            p.join(10)
    finally:
        stop.set()
        go.set()
        for p in procs:
            if p.is_alive():
                p.terminate()  # by pid
                p.join(5)
        for svc in SERVICES:
            drop(uris[svc], dbs[svc])

    tx_lat, read_lat, delivery, committed_in_window = [], [], [], 0
    retries = conflicts = read_misses = lost = 0
    per_service = {}
    for svc in SERVICES:
        w, r = wres[f"writer:{svc}"], rres[f"relay:{svc}"]
        mine = [lat for (t0, lat) in w["tx"] if t0 >= t_measure and t0 + lat <= t_end]
        tx_lat += mine
        committed_in_window += len(mine)
        read_lat += [lat for (t0, lat) in w["reads"] if t0 >= t_measure and t0 + lat <= t_end]
        retries += w["retries"]
        conflicts += w["conflicts"]
        read_misses += w["read_misses"]
        received = r["received"]
        svc_delivery = []
        for eid, t_commit in w["commits"].items():
            if t_measure <= t_commit <= t_end:
                t_recv = received.get(eid)
                if t_recv is None:
                    lost += 1
                else:
                    svc_delivery.append(t_recv - t_commit)
        delivery += svc_delivery
        per_service[svc] = {"tx_per_s": round(len(mine) / seconds, 1),
                            "tx_p50_ms": ms(lib.percentile(mine, 50)), "tx_p99_ms": ms(lib.percentile(mine, 99)),
                            "delivery_p50_ms": ms(lib.percentile(svc_delivery, 50)),
                            "delete_batches": r["batches"]}
    server_cpu = sum((cpu1[p] or 0) - (cpu0[p] or 0) for p in server_pids)
    client_cpu = {n: round(((ccpu1.get(n) or 0) - (ccpu0.get(n) or 0)) / window, 3) for n in ccpu1}
    machine_share = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    return {
        "layout": layout, "round": round_no, "seconds": round(window, 2),
        "committed": committed_in_window, "tx_per_s": committed_in_window / window,
        "tx_lat": tx_lat, "read_lat": read_lat, "delivery": delivery,
        "retries": retries, "conflicts": conflicts, "read_misses": read_misses, "undelivered": lost,
        "server_cpu_s": server_cpu, "server_cores": server_cpu / window,
        "server_cores_each": [round(((cpu1[p] or 0) - (cpu0[p] or 0)) / window, 3) for p in server_pids],
        "client_cores": client_cpu, "machine_busy_share": machine_share,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "per_service": per_service,
    }


def ms(x):
    return None if x is None else x * 1000.0


def summarise(rounds: list[dict]) -> dict:
    secs = sum(r["seconds"] for r in rounds)
    committed = sum(r["committed"] for r in rounds)
    tx = [x for r in rounds for x in r["tx_lat"]]
    reads = [x for r in rounds for x in r["read_lat"]]
    deliv = [x for r in rounds for x in r["delivery"]]
    cpu = sum(r["server_cpu_s"] for r in rounds)
    return {
        "tx_per_s": committed / secs if secs else None,
        "tx_p50_ms": ms(lib.percentile(tx, 50)), "tx_p99_ms": ms(lib.percentile(tx, 99)),
        "delivery_p50_ms": ms(lib.percentile(deliv, 50)), "delivery_p99_ms": ms(lib.percentile(deliv, 99)),
        "read_p50_ms": ms(lib.percentile(reads, 50)), "read_p99_ms": ms(lib.percentile(reads, 99)),
        "server_cores": cpu / secs if secs else None,
        "server_cpu_ms_per_tx": 1000.0 * cpu / committed if committed else None,
        "machine_busy_share": sum(r["machine_busy_share"] * r["seconds"] for r in rounds) / secs if secs else None,
        "committed": committed, "seconds": round(secs, 2),
        "retries": sum(r["retries"] for r in rounds), "conflicts": sum(r["conflicts"] for r in rounds),
        "undelivered": sum(r["undelivered"] for r in rounds),
    }


METRICS = [
    # key, name, unit
    ("tx_per_s", "committed transactions/s (3 services together)", "tx/s"),
    ("tx_p50_ms", "transaction latency p50", "p50 ms"),
    ("tx_p99_ms", "transaction latency p99", "p99 ms"),
    ("delivery_p50_ms", "change-stream delivery (commit → relay) p50", "p50 ms"),
    ("delivery_p99_ms", "change-stream delivery (commit → relay) p99", "p99 ms"),
    ("read_p50_ms", "find_one by _id p50", "p50 ms"),
    ("read_p99_ms", "find_one by _id p99", "p99 ms"),
    ("server_cores", "server CPU (all server processes)", "cores"),
    ("server_cpu_ms_per_tx", "server CPU per committed transaction", "CPU ms/tx"),
]


def fmt(x, digits=1):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}" if abs(x) < 100 else f"{x:,.0f}"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=tuple(PROFILES), default=os.environ.get("HECHT_BENCH_PROFILE", "quick"))
    ap.add_argument("--rounds", type=int, help="rounds in all (alternating A, B, B, A, …)")
    ap.add_argument("--seconds", type=float, help="measured seconds per round")
    ap.add_argument("--warmup", type=float, help="seconds discarded at the start of each round")
    ap.add_argument("--threads", type=int, default=2, help="writer threads per service (default 2)")
    args, _ = ap.parse_known_args()
    prof = PROFILES[args.profile]
    n_rounds = args.rounds or prof["rounds"]
    seconds = args.seconds or prof["seconds"]
    warmup = prof["warmup"] if args.warmup is None else args.warmup
    order = ["AB"[(i + 1) // 2 % 2] for i in range(n_rounds)]  # A B B A A B B A …

    binary = secantus_bin()
    if not binary.exists():
        print(f"SecantusDB not installed at {binary} (deploy/local/stack.sh installs it)", file=sys.stderr)
        lib.emit([], [f"not run: {binary} missing"], {})
        return 1

    tag = lib.tag()
    log_dir = lib.REPO / "var" / "bench" / f"mongo-layout-{tag}"
    data_root = Path(tempfile.mkdtemp(prefix=f"hecht-layout-{tag}-"))
    servers: list[lib.Proc] = []
    live: list = []

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    mach = lib.machine()
    lib.log(f"mongo layout: {n_rounds} rounds × ({warmup:g} s warm-up + {seconds:g} s), order {''.join(order)}, "
            f"{args.threads} writer threads per service; load {mach['loadavg_at_start']}")
    ctx = mp.get_context("spawn")
    rounds: list[dict] = []
    try:
        shared, shared_port = start_server("shared", data_root, log_dir)
        servers.append(shared)
        own = {}
        for svc in SERVICES:
            p, port = start_server(svc, data_root, log_dir)
            servers.append(p)
            own[svc] = (p, port)
        wait_ready(shared, shared_port)
        for p, port in own.values():
            wait_ready(p, port)
        layouts = {
            "A": ({svc: f"mongodb://127.0.0.1:{shared_port}" for svc in SERVICES}, [shared.pid]),
            "B": ({svc: f"mongodb://127.0.0.1:{own[svc][1]}" for svc in SERVICES}, [own[s][0].pid for s in SERVICES]),
        }
        lib.log(f"servers up: shared :{shared_port} (pid {shared.pid}); "
                + ", ".join(f"{s} :{own[s][1]} (pid {own[s][0].pid})" for s in SERVICES))
        for i, layout in enumerate(order):
            uris, pids = layouts[layout]
            r = run_round(ctx, layout, uris, pids, i, tag, seconds, warmup, args.threads, live)
            rounds.append(r)
            lib.log(f"round {i} {layout}: {r['tx_per_s']:.0f} tx/s, tx p50 {ms(lib.percentile(r['tx_lat'], 50)):.1f} "
                    f"p99 {ms(lib.percentile(r['tx_lat'], 99)):.1f} ms, delivery p50 "
                    f"{fmt(ms(lib.percentile(r['delivery'], 50)))} ms, server {r['server_cores']:.2f} cores "
                    f"{r['server_cores_each']}, machine busy {100 * r['machine_busy_share']:.0f}%, "
                    f"load {r['loadavg']}")
        rss = {p.name: lib.rss_mb(p.pid) for p in servers}
    finally:
        for p in live:
            try:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
            except Exception:  # noqa: BLE001
                pass
        stop_servers(servers)
        shutil.rmtree(data_root, ignore_errors=True)

    summary = {L: summarise([r for r in rounds if r["layout"] == L]) for L in "AB"}
    a, b = summary["A"], summary["B"]
    results = [lib.entry(f"mongo layout: {name}", unit, b[key], a[key], None) for key, name, unit in METRICS]

    # The table (stdout, before the BENCH_JSON line)
    print(f"\nMongoDB layout — A: one shared SecantusDB server, B: one server per service "
          f"({n_rounds} rounds {''.join(order)}, {seconds:g} s each, {args.threads} writer threads per service, "
          f"{mach['cores']} cores, load at start {mach['loadavg_at_start']})\n")
    w = max(len(n) for _, n, _ in METRICS) + 2
    print(f"{'metric':<{w}} {'unit':>10} {'A shared':>10} {'B per-svc':>10} {'B/A':>7}")
    for key, name, unit in METRICS:
        ratio = b[key] / a[key] if a[key] and b[key] is not None else None
        print(f"{name:<{w}} {unit:>10} {fmt(a[key], 2):>10} {fmt(b[key], 2):>10} "
              f"{(f'{ratio:.2f}' if ratio is not None else '–'):>7}")
    print("\nper round:")
    for r in rounds:
        print(f"  {r['round']} {r['layout']}: {r['tx_per_s']:7.1f} tx/s  "
              f"tx p50 {fmt(ms(lib.percentile(r['tx_lat'], 50)))} "
              f"p99 {fmt(ms(lib.percentile(r['tx_lat'], 99)))} ms  delivery p50 "
              f"{fmt(ms(lib.percentile(r['delivery'], 50)))} p99 {fmt(ms(lib.percentile(r['delivery'], 99)))} ms  "
              f"server {r['server_cores']:.2f} cores {r['server_cores_each']}  machine busy "
              f"{100 * r['machine_busy_share']:.0f}%  load {r['loadavg']}")
    print()

    notes = [
        "mongo layout: value = B (one SecantusDB server per service), baseline = A (one shared server, three "
        f"databases); rounds {''.join(order)} side by side, {seconds:g} s measured each; 3 writer processes × "
        f"{args.threads} threads (closed loop: transaction of a guarded find_one_and_update or an insert + "
        f"insert_many of 1–2 outbox events, then {READS_PER_TX} find_one) and 3 change-stream relay processes "
        "(bulk delete per batch); servers as in stack.sh (--sync-on-commit).",
        f"mongo layout: machine busy during the runs A {100 * (a['machine_busy_share'] or 0):.0f}%, "
        f"B {100 * (b['machine_busy_share'] or 0):.0f}% of {mach['cores']} cores (includes other users); "
        f"retries A {a['retries']} / B {b['retries']}, version conflicts A {a['conflicts']} / B {b['conflicts']}, "
        f"undelivered events A {a['undelivered']} / B {b['undelivered']}.",
    ]
    extra = {
        "mongo_layout": {
            "machine": mach, "order": order, "seconds": seconds, "warmup": warmup, "threads": args.threads,
            "summary": summary, "server_rss_mb_at_end": rss, "logs": str(log_dir.relative_to(lib.REPO)),
            "rounds": [{k: v for k, v in r.items() if k not in ("tx_lat", "read_lat", "delivery")}
                       | {"tx_p50_ms": ms(lib.percentile(r["tx_lat"], 50)),
                          "tx_p99_ms": ms(lib.percentile(r["tx_lat"], 99)),
                          "delivery_p50_ms": ms(lib.percentile(r["delivery"], 50)),
                          "delivery_p99_ms": ms(lib.percentile(r["delivery"], 99))}
                       for r in rounds],
        }
    }
    lib.emit(results, notes, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
