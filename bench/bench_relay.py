"""Benchmark 2 — relay: outbox → Kafka events/s vs a raw kafka-python producer.

Each round writes N events into aggregate documents with ``hecht.outbox.AggregateStore``
(creates and updates, 1–4 events per document, real ``region.*`` envelopes), then:

- **hecht**: ``Relay.run_once`` in a loop until the outbox is drained (publish with the
  idempotent producer, archive, clear each outbox by ``_id`` under its claim);
- **baseline**: a raw kafka-python producer with the same settings (``hecht.kafka.producer``:
  acks=all, idempotence, linger 5 ms) sending the same payloads, keys and headers, one flush
  at the end, every future checked.

Rounds alternate which side goes first; the figures are the medians over rounds. If the
ratio misses its target, one more (smaller) hecht round runs under cProfile and the time
spent in Kafka flushes and in MongoDB calls is reported.

Run: ``python bench/bench_relay.py --profile quick`` (against the stack in the environment).
"""
from __future__ import annotations

import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

SIZES = {"quick": {"events": 1000, "rounds": 2, "profile_events": 400},
         "full": {"events": 5000, "rounds": 3, "profile_events": 1000}}
EVENTS_PER_DOC = (1, 1, 2, 4)  # the cycle: on average 2 events per document when the relay runs
TARGET = "ratio >= 0.5"


def seed(db, coll_name: str, n_events: int, round_no: int) -> list[dict]:
    """Write ``n_events`` events into documents of ``coll_name``; returns the envelopes in order."""
    from hecht import outbox
    from hecht.outbox import AggregateStore, EventDraft
    store = AggregateStore(db[coll_name], source="")
    outbox.ensure_indexes(db, [coll_name])
    written = 0
    i = 0
    while written < n_events:
        # One insert per document, with its k events (as a create followed by updates would
        # leave them): FerretDB's updates are slow enough to dominate the seeding otherwise.
        k = min(EVENTS_PER_DOC[i % len(EVENTS_PER_DOC)], n_events - written)
        region_id = f"bench-r{round_no}-{i:06d}"
        data = {"region_id": region_id, "name": f"Benchmark region {i}", "country": "BE",
                "kind": "eerstelijnszone", "municipalities": ["Gent", "Merelbeke", "Melle", "Destelbergen"],
                "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}
        drafts = [EventDraft("region.registered", data)]
        drafts += [EventDraft("region.updated", dict(data, name=f"Benchmark region {i} rev {j}"))
                   for j in range(1, k)]
        store.create({"_id": region_id, "region": region_id, "name": data["name"]}, drafts)
        written += k
        i += 1
    envelopes = []
    for d in db[coll_name].find({"_pending": True}, {"_outbox": 1}).sort("_id", 1):
        envelopes.extend(d["_outbox"])
    return envelopes


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


def make_relay(settings, db, coll_name: str, topic: str):
    from hecht import kafka as hk
    from hecht.outbox import Relay
    relay = Relay(db, [coll_name], topic, lambda: hk.producer(settings), service="bench")
    relay._get_producer().partitions_for(topic)
    return relay


def drain(relay, db, coll_name: str) -> tuple[float, int, int]:
    """Seconds until the outbox is empty; returns (seconds, events published, run_once calls)."""
    t = lib.Timer()
    published = calls = 0
    while True:
        n = relay.run_once()
        calls += 1
        published += n
        if n == 0:
            if db[coll_name].count_documents({"_pending": True}) == 0:
                break
    return t.elapsed(), published, calls


def profile_round(settings, db, topic: str, n_events: int) -> dict:
    """One hecht round under cProfile: where the relay's time goes."""
    coll = "agg_profile"
    seed(db, coll, n_events, 99)
    relay = make_relay(settings, db, coll, topic)
    prof = cProfile.Profile()
    try:
        prof.enable()
        seconds, published, calls = drain(relay, db, coll)
        prof.disable()
    finally:
        relay.close()
    stats = pstats.Stats(prof)
    total = seconds

    def cum(pred) -> float:
        return sum(v[3] for k, v in stats.stats.items() if pred(k))

    breakdown = {
        "total_s": round(total, 3),
        "events": published,
        "run_once_calls": calls,
        "publish_s (Relay._publish: send + flush + ack)": round(cum(lambda k: k[2] == "_publish"), 3),
        "flush_s (KafkaProducer.flush)": round(cum(lambda k: k[2] == "flush" and "kafka" in k[0]), 3),
        "archive_s (insert_many into events)": round(cum(lambda k: k[2] == "_archive"), 3),
        "updates_s (clear outbox by _id under the claim)": round(cum(lambda k: k[2] in ("update_one", "update_many")
                                                           and "collection" in k[0]), 3),
        "find_s (pending scan)": round(cum(lambda k: k[2] == "__next__" and "cursor" in k[0]), 3),
    }
    flushes = sum(v[1] for k, v in stats.stats.items() if k[2] == "flush" and "kafka" in k[0])
    breakdown["flush_calls"] = flushes
    breakdown["update_calls"] = sum(v[1] for k, v in stats.stats.items()
                                    if k[2] in ("update_one", "update_many") and "collection" in k[0])
    import io
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
    top = "\n".join(line for line in buf.getvalue().splitlines()[6:] if line.strip())
    return {"breakdown": breakdown, "top_cumulative": top}


def main() -> None:
    profile = lib.profile_arg()
    size = SIZES[profile]
    lib.quiet_logs()
    from hecht import mongo
    tag = lib.tag()
    prefix = f"bench{tag}."
    db_name = f"hecht_bench_relay_{tag}"
    settings = lib.settings("bench", db_name, prefix)
    topic = settings.topic("hecht.members")
    lib.create_topic(topic, 3)
    db = mongo.database(settings.mongo_uri, db_name)
    hecht_rates, raw_rates, notes, rounds = [], [], [], []
    try:
        for r in range(size["rounds"]):
            coll = f"agg_{r}"
            lib.log(f"relay round {r + 1}/{size['rounds']}: seeding {size['events']} events")
            envelopes = seed(db, coll, size["events"], r)
            order = ("raw", "hecht") if r % 2 == 0 else ("hecht", "raw")
            result = {}
            for side in order:
                if side == "raw":
                    secs = run_raw(settings, topic, envelopes)
                    result["raw"] = len(envelopes) / secs
                else:
                    relay = make_relay(settings, db, coll, topic)
                    try:
                        secs, published, calls = drain(relay, db, coll)
                    finally:
                        relay.close()
                    if published < len(envelopes):
                        raise RuntimeError(f"relay published {published} of {len(envelopes)} events")
                    result["hecht"] = published / secs
                    result["run_once_calls"] = calls
            lib.log(f"  hecht {result['hecht']:.0f} events/s, raw producer {result['raw']:.0f} events/s")
            hecht_rates.append(result["hecht"])
            raw_rates.append(result["raw"])
            rounds.append({k: round(v, 1) for k, v in result.items()})
        value, baseline = lib.median(hecht_rates), lib.median(raw_rates)
        results = [lib.entry("relay: outbox → Kafka", "events/s", value, baseline, TARGET,
                             note=f"{size['events']} events/round, {size['rounds']} rounds, medians")]
        extra = {"rounds": rounds, "events_per_round": size["events"]}
        if value / baseline < 0.5 or profile == "full":
            lib.log("relay: profiling one round (cProfile)")
            extra["profile"] = profile_round(settings, db, topic, size["profile_events"])
            b = extra["profile"]["breakdown"]
            notes.append("cProfile of one relay round: " + ", ".join(f"{k} {v}" for k, v in b.items()))
        lib.emit(results, notes, extra)
    finally:
        mongo.close_all()
        lib.drop_databases([db_name])
        lib.delete_topics(prefix)


if __name__ == "__main__":
    main()
