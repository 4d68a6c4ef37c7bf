"""Benchmark 2 — relay: outbox → Kafka events/s vs a raw kafka-python producer.

Each round builds N events as ``hecht.outbox.AggregateStore`` writes them (real
``region.*`` envelopes, 1–4 events per aggregate, sequences 1..k per subject) and
compares, on the same topic:

- **hecht (change stream)**: ``Relay.run`` in a thread, following the outbox collection's
  change stream of a fresh database (opened, backlog read, resume token stored before the
  timing starts). The N outbox documents (``_id`` = event id, envelope at top level) are
  inserted in one multi-document transaction; the clock starts at its commit and stops
  when the relay has published every event with the idempotent producer, archived it to
  ``events`` and deleted it from ``outbox`` (counted in the relay's own ``_send``; checked
  against the collections afterwards).
- **baseline**: a raw kafka-python producer with the same settings (``hecht.kafka.producer``:
  acks=all, idempotence, linger 5 ms) sending the same payloads, keys and headers, one flush
  at the end, every future checked.
- **hecht (backlog)**, without a target: ``Relay.run_once`` on N events already in the
  outbox — what a relay does at start without a usable resume token.

Rounds alternate which side goes first; the figures are the medians over rounds. If the
change-stream ratio misses its target (and always in the full profile), one more round of
the relay thread runs under cProfile and the time spent publishing, archiving, deleting,
reading the stream and storing the token is reported.

Run: ``python bench/bench_relay.py --profile quick`` (against the stack in the environment).
"""
from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

SIZES = {"quick": {"events": 1000, "rounds": 3, "profile_events": 1000},
         "full": {"events": 5000, "rounds": 3, "profile_events": 2000}}
EVENTS_PER_DOC = (1, 1, 2, 4)  # the cycle: on average 2 events per aggregate
TARGET = "ratio >= 0.5"
DRAIN_TIMEOUT_S = 120


def envelopes_for(n_events: int, round_no: int) -> list[dict]:
    """``n_events`` envelopes as AggregateStore.create/update would build them, in write order."""
    from hecht import events as ev
    out: list[dict] = []
    i = 0
    while len(out) < n_events:
        k = min(EVENTS_PER_DOC[i % len(EVENTS_PER_DOC)], n_events - len(out))
        region_id = f"bench-r{round_no}-{i:06d}"
        data = {"region_id": region_id, "name": f"Benchmark region {i}", "country": "BE",
                "kind": "eerstelijnszone", "municipalities": ["Gent", "Merelbeke", "Melle", "Destelbergen"],
                "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}
        types = [("region.registered", data)] + [
            ("region.updated", dict(data, name=f"Benchmark region {i} rev {j}")) for j in range(1, k)]
        out += [ev.build(t, region=region_id, subject=region_id, sequence=seq, data=d,
                         source=f"/regions/{region_id}") for seq, (t, d) in enumerate(types, start=1)]
        i += 1
    return out


def write_outbox(db, envelopes: list[dict]) -> lib.Timer:
    """Insert the outbox documents in one transaction; returns a timer started at the commit."""
    from hecht import outbox
    client = db.client
    entries = outbox.outbox_entries(envelopes)
    with client.start_session() as s:
        s.start_transaction()
        for i in range(0, len(entries), 500):
            db[outbox.OUTBOX].insert_many(entries[i:i + 500], session=s)
        t = lib.Timer()
        s.commit_transaction()
    return t


def run_raw(settings, topic: str, envelopes: list[dict]) -> float:
    """Seconds for a raw producer (same settings) to send and confirm every envelope."""
    from hecht import events as ev
    from hecht import kafka as hk
    producer = hk.producer(settings, client_id="bench-raw")
    try:
        producer.partitions_for(topic)  # metadata outside the timing, as for the relay
        t = lib.Timer()
        futures = [producer.send(topic, key=e["subject"].encode(), value=ev.encode(e),
                                 headers=ev.kafka_headers(e)) for e in envelopes]
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=60)
        return t.elapsed()
    finally:
        producer.close(timeout=5)


class CountingRelay:
    """A ``Relay`` that signals when it has sent (published, archived, deleted) ``expected`` events."""

    def __new__(cls, settings, db, topic: str, expected: int):
        from hecht import kafka as hk
        from hecht.outbox import Relay

        class _Relay(Relay):
            def _send(self, entries):
                n = super()._send(entries)
                self.sent += n
                self.batches += 1 if n else 0
                if self.sent >= self.expected:
                    self.done.set()
                return n

        relay = _Relay(db, topic, lambda: hk.producer(settings), service="bench", poll_s=settings.relay_poll_s)
        relay.sent, relay.batches, relay.expected, relay.done = 0, 0, expected, threading.Event()
        relay._get_producer().partitions_for(topic)  # metadata outside the timing
        return relay


def check_drained(db, n: int) -> None:
    from hecht import outbox
    left, archived = db[outbox.OUTBOX].count_documents({}), db[outbox.ARCHIVE].count_documents({})
    if left or archived != n:
        raise RuntimeError(f"relay left {left} events in the outbox and archived {archived} of {n}")


def run_stream(settings, db, topic: str, envelopes: list[dict], prof: cProfile.Profile | None = None) -> dict:
    """The relay following the change stream; seconds from the commit to the last event sent."""
    from hecht import outbox
    outbox.ensure_indexes(db)
    relay = CountingRelay(settings, db, topic, len(envelopes))
    stop = threading.Event()
    errors: list[BaseException] = []

    def target():
        try:
            if prof is not None:
                prof.runcall(relay.run, stop)
            else:
                relay.run(stop)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    thread = threading.Thread(target=target, name="relay", daemon=True)
    thread.start()
    try:
        # Following: the stream is open, the (empty) backlog read and the token stored.
        lib.wait_until(lambda: db[outbox.RELAY_STATE].find_one({"_id": topic}) is not None, timeout=30,
                       what="the relay to open its change stream")
        t = write_outbox(db, envelopes)
        if not relay.done.wait(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"relay sent {relay.sent} of {len(envelopes)} events in {DRAIN_TIMEOUT_S} s")
        seconds = t.elapsed()
    finally:
        stop.set()
        thread.join(timeout=30)
    if errors:
        raise errors[0]
    check_drained(db, len(envelopes))
    return {"seconds": seconds, "sent": relay.sent, "batches": relay.batches}


def run_backlog(settings, db, topic: str, envelopes: list[dict]) -> dict:
    """``Relay.run_once`` on a backlog already in the outbox."""
    from hecht import outbox
    outbox.ensure_indexes(db)
    write_outbox(db, envelopes)
    relay = CountingRelay(settings, db, topic, len(envelopes))
    try:
        t = lib.Timer()
        n = relay.run_once()
        seconds = t.elapsed()
    finally:
        relay.close()
    if n != len(envelopes):
        raise RuntimeError(f"run_once published {n} of {len(envelopes)} events")
    check_drained(db, len(envelopes))
    return {"seconds": seconds, "sent": n, "batches": relay.batches}


def profile_round(settings, db, topic: str, n_events: int) -> dict:
    """One change-stream round with the relay thread under cProfile: where its time goes."""
    prof = cProfile.Profile()
    r = run_stream(settings, db, topic, envelopes_for(n_events, 99), prof)
    stats = pstats.Stats(prof)

    def cum(pred) -> float:
        return round(sum(v[3] for k, v in stats.stats.items() if pred(k)), 3)

    def calls(pred) -> int:
        return sum(v[1] for k, v in stats.stats.items() if pred(k))

    def is_coll(name):
        return lambda k: k[2] == name and k[0].endswith("collection.py") and "pymongo" in k[0]

    breakdown = {
        "drain_s (commit → last event sent)": round(r["seconds"], 3),
        "events": r["sent"],
        "batches": r["batches"],
        "publish_s (Relay._publish: send + flush + ack)": cum(lambda k: k[2] == "_publish"),
        "flush_s (KafkaProducer.flush)": cum(lambda k: k[2] == "flush" and "kafka" in k[0]),
        "archive_s (insert_many into events)": cum(lambda k: k[2] == "_archive"),
        "delete_s (delete_many from outbox)": cum(is_coll("delete_many")),
        "lookup_s (find the changed ids in the outbox)": cum(lambda k: k[2] == "__next__" and "cursor.py" in k[0]
                                                            and "command_cursor" not in k[0]),
        "stream_s (change stream try_next, incl. waits)": cum(lambda k: k[2] == "try_next"),
        "token_s (resume token update_one)": cum(lambda k: k[2] == "_save_token"),
        "try_next_calls": calls(lambda k: k[2] == "try_next"),
        "flush_calls": calls(lambda k: k[2] == "flush" and "kafka" in k[0]),
    }
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(20)
    top = "\n".join(line for line in buf.getvalue().splitlines()[6:] if line.strip())
    return {"breakdown": breakdown, "top_cumulative": top}


def main() -> None:
    profile = lib.profile_arg()
    size = SIZES[profile]
    lib.quiet_logs()
    from hecht import mongo
    tag = lib.tag()
    prefix = f"bench{tag}."
    base_db = f"hecht_bench_relay_{tag}"
    settings = lib.settings("bench", base_db, prefix)
    topic = settings.topic("hecht.members")
    lib.create_topic(topic, 3)
    dbs: list[str] = []

    def fresh_db(name: str):
        dbs.append(f"{base_db}_{name}")
        return mongo.database(settings.mongo_uri, dbs[-1])

    n = size["events"]
    rates: dict[str, list[float]] = {"stream": [], "backlog": [], "raw": []}
    notes, rounds = [], []
    try:
        for r in range(size["rounds"]):
            envelopes = envelopes_for(n, r)
            order = ("raw", "stream", "backlog") if r % 2 == 0 else ("stream", "backlog", "raw")
            row: dict = {}
            for side in order:
                if side == "raw":
                    row["raw"] = n / run_raw(settings, topic, envelopes)
                elif side == "stream":
                    res = run_stream(settings, fresh_db(f"s{r}"), topic, envelopes)
                    row["stream"], row["stream_batches"] = n / res["seconds"], res["batches"]
                else:
                    res = run_backlog(settings, fresh_db(f"b{r}"), topic, envelopes)
                    row["backlog"], row["backlog_batches"] = n / res["seconds"], res["batches"]
            lib.log(f"relay round {r + 1}/{size['rounds']}: change stream {row['stream']:.0f} events/s, "
                    f"backlog {row['backlog']:.0f} events/s, raw producer {row['raw']:.0f} events/s")
            for k in rates:
                rates[k].append(row[k])
            rounds.append({k: round(v, 1) for k, v in row.items()})
        stream, backlog, raw = (lib.median(rates[k]) for k in ("stream", "backlog", "raw"))
        results = [
            lib.entry("relay: outbox → Kafka (change stream)", "events/s", stream, raw, TARGET,
                      note=f"{n} events/round committed in one transaction, timed from the commit until every "
                           f"event was published, archived and deleted; {size['rounds']} rounds, medians"),
            lib.entry("relay: outbox backlog → Kafka (run_once at start)", "events/s", backlog, raw,
                      note="no target: the path of a relay starting without a usable resume token"),
        ]
        extra = {"rounds": rounds, "events_per_round": n}
        if stream / raw < 0.5 or profile == "full":
            lib.log("relay: profiling one change-stream round (cProfile)")
            extra["profile"] = profile_round(settings, fresh_db("profile"), topic, size["profile_events"])
            b = extra["profile"]["breakdown"]
            notes.append("cProfile of the relay thread, one round: " + ", ".join(f"{k} {v}" for k, v in b.items()))
        lib.emit(results, notes, extra)
    finally:
        mongo.close_all()
        lib.drop_databases(dbs)
        lib.delete_topics(prefix)


if __name__ == "__main__":
    main()
