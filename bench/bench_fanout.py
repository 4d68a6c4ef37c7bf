"""Benchmark — notify fan-out: webhook deliveries/s to 100 subscriptions, and endpoint isolation.

The real path: events are produced to ``hecht.members``, notify's consumer copies them and
fans them out to 100 subscriptions (one local HTTP receiver each, in a separate process so
the receivers do not share our GIL), and the delivery engine signs and posts them.

1. **Throughput**: a burst of events (100 deliveries each); deliveries/s from the first
   event produced to the last delivery recorded as succeeded.
2. **Baseline latency**: a stream of events (each fanned out to all 100) spaced so that the
   engine would need two thirds of the interval at the burst's rate; the p99 of (delivery
   recorded − event time) over the 99 subscriptions that stay healthy.
3. **One slow endpoint**: the same stream while receiver 0 sleeps 10 s on every request;
   p99 of the same 99 others. Target: within 1.2× of the baseline. Phases 2 and 3 run
   alternately, twice each, and each condition's samples are pooled.

Between phases the deliveries, attempts and event copies are deleted, so each phase starts
from the same (empty) collections and no phase pays for what an earlier one left. Bounded:
the whole run stays under 90 s.

Run: ``python bench/bench_fanout.py --profile quick`` (against the stack in the environment).
``HECHT_BENCH_RATE_LIMIT=5`` gives every subscription a rate limit of 5 deliveries/s (issue 15:
the isolation target must hold with per-subscription rate limits set; the stream offers each
endpoint at most one event per second, so the limit costs its slot bookkeeping, not throughput).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

SUBSCRIPTIONS = 100
RATE_LIMIT = float(os.environ.get("HECHT_BENCH_RATE_LIMIT") or 0) or None
SLOW_SLEEP_S = 10.0
TARGET = "ratio <= 1.2"
SIZES = {"quick": {"burst_events": 10, "stream_s": 16.0, "members": 40},
         "full": {"burst_events": 15, "stream_s": 20.0, "members": 60}}
RUN_BUDGET_S = 88.0


# -- receivers (a child process) --------------------------------------------------------------
def _receivers(n: int, ports, ready, slow_index, stop) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def handler_for(i: int):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if slow_index.value == i:
                    time.sleep(SLOW_SLEEP_S)
                try:
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args):
                pass
        return Handler

    servers = []
    for i in range(n):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(i))
        srv.daemon_threads = True
        servers.append(srv)
        ports[i] = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    ready.set()
    stop.wait()
    for srv in servers:
        srv.shutdown()


# -- the run ----------------------------------------------------------------------------------
def _capacity_event(member: str, seq: int):
    from hecht import events as ev
    data = {"member_id": member, "region_id": "bench-fanout", "status": "active", "category": "practice-owner",
            "roles": ["member"], "language": "nl", "municipality": "Gent",
            "capacity": {"status": ("open", "limited", "closed")[seq % 3], "since": "2026-01-01", "note": None},
            "personal": {"given_name": "B", "family_name": "Ench", "email": f"{member}@bench.example"}}
    return ev.build("member.capacity_changed", region="bench-fanout", subject=member, sequence=seq, data=data,
                    source="/regions/bench-fanout/members", validate_data=False)


class Run:
    def __init__(self, size: dict, db_name: str, prefix: str):
        from hecht import mongo, topics
        from hecht.config import settings
        from hecht.kafka import ensure_topics, producer
        from services.notify import domain, handlers, worker
        self.size = size
        self.settings = settings("notify")
        self.db = mongo.database(self.settings.mongo_uri, self.settings.database_name)
        worker.ensure_indexes(self.db)
        ensure_topics(self.settings)
        self.topic = self.settings.topic(topics.MEMBERS)
        self.producer = producer(self.settings, linger_ms=0)
        self.stop = threading.Event()
        self.engine = worker.DeliveryEngine(self.settings, self.db)
        self.consumer = worker.consumer(self.settings, self.db)
        self.handlers, self.domain = handlers, domain
        self.seq: dict[str, int] = {}
        self.produced = 0
        self.sub_ids: list[str] = []

    def subscribe(self, ports) -> None:
        for i in range(SUBSCRIPTIONS):
            doc, _, _ = self.handlers.handle(self.domain.CreateSubscription(
                region="bench-fanout", url=f"http://127.0.0.1:{ports[i]}/hook", event_types=["member.*"],
                rate_limit=RATE_LIMIT),
                self.db, self.settings)
            self.sub_ids.append(doc["_id"])

    def start(self) -> None:
        self.threads = [threading.Thread(target=fn, args=(self.stop,), daemon=True)
                        for fn in (self.consumer.run, self.engine.run)]
        for t in self.threads:
            t.start()

    def send(self, n: int, member_pool: int) -> list[str]:
        """Produce ``n`` events, cycling over ``member_pool`` members (several lanes per endpoint)."""
        from hecht import events as ev
        ids = []
        for _ in range(n):
            member = f"m_{self.produced % member_pool:04d}"
            self.produced += 1
            seq = self.seq[member] = self.seq.get(member, 0) + 1
            e = _capacity_event(member, seq)
            self.producer.send(self.topic, key=member.encode(), value=ev.encode(e), headers=ev.kafka_headers(e))
            ids.append(e["id"])
        self.producer.flush()
        return ids

    def succeeded(self, event_ids: list[str], exclude: str | None = None) -> int:
        q = {"event_id": {"$in": event_ids}, "status": "succeeded"}
        if exclude:
            q["subscription_id"] = {"$ne": exclude}
        return self.db.deliveries.count_documents(q)

    def wait(self, event_ids, expected: int, deadline: float, exclude: str | None = None) -> bool:
        while time.monotonic() < deadline:
            if self.succeeded(event_ids, exclude) >= expected:
                return True
            time.sleep(0.1)
        return False

    def latencies(self, event_ids, exclude: str) -> list[float]:
        out = []
        for d in self.db.deliveries.find({"event_id": {"$in": event_ids}, "status": "succeeded",
                                          "subscription_id": {"$ne": exclude}},
                                         {"delivered_at": 1, "event_time": 1}):
            out.append((d["delivered_at"] - d["event_time"]).total_seconds())
        return out

    def reset(self) -> None:
        """A clean slate between phases: no backlog of one phase weighs on the next."""
        self.db.deliveries.delete_many({})
        self.db.attempts.delete_many({})
        self.db.event_copies.delete_many({})

    def stream(self, rate: float, seconds: float, pool: int) -> list[str]:
        ids, start = [], time.monotonic()
        interval = 1.0 / rate
        n = 0
        while time.monotonic() - start < seconds:
            ids += self.send(1, pool)
            n += 1
            time.sleep(max(0.0, start + n * interval - time.monotonic()))
        return ids

    def close(self) -> None:
        self.stop.set()
        for t in getattr(self, "threads", []):
            t.join(timeout=20)  # the engine waits for in-flight requests (the slow receiver: ≤ 10 s)
        self.producer.close(timeout=5)


def main() -> None:
    profile = lib.profile_arg()
    size = SIZES[profile]
    lib.quiet_logs()
    began = time.monotonic()
    budget_end = began + RUN_BUDGET_S
    tag = lib.tag()
    db_name, prefix = f"bench_fanout_{tag}", f"bf{tag}."
    os.environ.update({
        "HECHT_NOTIFY_MONGO_URI": f"{lib.mongo_base()}/{db_name}", "KAFKA_BOOTSTRAP_SERVERS": lib.kafka_servers(),
        "HECHT_TOPIC_PREFIX": prefix, "HECHT_WEBHOOKS_ALLOW_PRIVATE": "1", "HECHT_WEBHOOK_TIMEOUT_S": "15",
        "HECHT_WEBHOOK_POLL_S": "0.05", "HECHT_LOG_LEVEL": "ERROR", "HECHT_METRICS_PORT": "0",
        "HECHT_WEBHOOK_RETRY_SCHEDULE_S": "1,5,30"})
    ctx = mp.get_context("spawn")
    ports, ready, stop = ctx.Array("i", SUBSCRIPTIONS), ctx.Event(), ctx.Event()
    slow_index = ctx.Value("i", -1)
    receivers = ctx.Process(target=_receivers, args=(SUBSCRIPTIONS, ports, ready, slow_index, stop), daemon=True)
    receivers.start()
    run = None
    notes: list[str] = []
    try:
        if not ready.wait(30):
            raise RuntimeError("the receivers did not start")
        run = Run(size, db_name, prefix)
        run.subscribe(list(ports))
        slow_sub = run.sub_ids[0]
        run.start()
        lib.log("fanout: warming up (consumer group join, first deliveries)")
        warm = run.send(1, 1)
        if not run.wait(warm, SUBSCRIPTIONS, time.monotonic() + 30):
            raise RuntimeError("warm-up deliveries did not complete")
        run.reset()

        # 1. throughput
        n = size["burst_events"]
        lib.log(f"fanout: burst of {n} events × {SUBSCRIPTIONS} subscriptions")
        t0 = time.monotonic()
        burst = run.send(n, size["members"])
        done = run.wait(burst, n * SUBSCRIPTIONS, min(budget_end - 40, t0 + 35))
        elapsed = time.monotonic() - t0
        delivered = run.succeeded(burst)
        rate = delivered / elapsed
        if not done:
            notes.append(f"burst: only {delivered} of {n * SUBSCRIPTIONS} delivered within the phase budget")
        lib.log(f"fanout: {delivered} deliveries in {elapsed:.1f} s = {rate:.0f}/s")
        run.reset()

        # 2. and 3. the same stream, without and with one slow endpoint, alternated twice so
        # that drift (the shared database, the machine) does not favour either condition.
        interval = min(5.0, max(1.0, 1.5 * SUBSCRIPTIONS / max(rate, 1.0)))  # seconds between events
        stream_rate = 1.0 / interval
        remaining = budget_end - time.monotonic()
        seconds = max(3.0, min(size["stream_s"] / 2, (remaining - 4 * 4) / 4))
        samples: dict[str, list[float]] = {"baseline": [], "one slow endpoint": []}
        counts = {k: {"events": 0, "slow_endpoint_done": 0} for k in samples}
        for phase, slow in (("baseline", -1), ("one slow endpoint", 0)) * 2:
            slow_index.value = slow
            lib.log(f"fanout: {phase}: one event every {interval:.1f} s for {seconds:.0f} s")
            ids = run.stream(stream_rate, seconds, size["members"])
            expected = len(ids) * (SUBSCRIPTIONS - 1)
            if not run.wait(ids, expected, time.monotonic() + 4, exclude=slow_sub):
                notes.append(f"{phase}: {run.succeeded(ids, slow_sub)} of {expected} delivered to the others "
                             "within 4 s of the stream's end")
            lat = run.latencies(ids, slow_sub)
            samples[phase] += lat
            counts[phase]["events"] += len(ids)
            counts[phase]["slow_endpoint_done"] += run.succeeded(ids) - len(lat)
            lib.log(f"fanout: {phase}: p50 {lib.percentile(lat, 50) or 0:.3f} s, "
                    f"p99 {lib.percentile(lat, 99) or 0:.3f} s over {len(lat)} deliveries")
            run.reset()
        results_by_phase = {k: dict(counts[k], deliveries=len(v), p50=lib.percentile(v, 50),
                                    p99=lib.percentile(v, 99)) for k, v in samples.items()}
        slow_index.value = -1
        base, slow = results_by_phase["baseline"], results_by_phase["one slow endpoint"]
        results = [
            lib.entry("fanout: webhook deliveries to 100 subscriptions", "deliveries/s", rate,
                      note=f"{delivered} deliveries of {n} events, consume → sign → POST → recorded"),
            lib.entry("fanout: p99 latency of the other 99 endpoints, one endpoint sleeping 10 s",
                      "seconds (event time → delivery recorded)", slow["p99"], base["p99"], TARGET),
        ]
        if RATE_LIMIT:
            notes.append(f"every subscription has rate_limit = {RATE_LIMIT:g} deliveries/s (HECHT_BENCH_RATE_LIMIT)")
        notes.append(f"stream: one event every {interval:.1f} s for {seconds:.0f} s per phase, 2 phases each "
                     f"({stream_rate * SUBSCRIPTIONS:.0f} deliveries/s offered on average)")
        notes.append("the slow endpoint holds at most HECHT_WEBHOOK_CONCURRENCY_PER_ENDPOINT (2) of the "
                     f"{run.engine.tuning.workers} delivery threads; it finished "
                     f"{slow['slow_endpoint_done']} deliveries during its phase")
        lib.emit(results, notes, {"phases": results_by_phase, "profile": profile,
                                  "seconds_total": round(time.monotonic() - began, 1)})
    finally:
        if run is not None:
            run.close()
        stop.set()
        receivers.join(timeout=15)
        if receivers.is_alive():
            receivers.terminate()
        lib.drop_databases([db_name])
        lib.delete_topics(prefix)


if __name__ == "__main__":
    main()
