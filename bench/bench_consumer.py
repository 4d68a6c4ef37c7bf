"""Benchmark 3 — consumers: events/s applied through ConsumerRunner vs a raw consumer loop.

N CloudEvents (``region.updated``, S subjects, strictly increasing ``sequence`` per subject,
key = subject) are produced once to a fresh 3-partition topic. Then, per round, each side
reads the whole topic from the beginning under a fresh consumer group and database:

- **hecht**: ``hecht.consumer.ConsumerRunner.poll_once`` in a loop (decode, sequence check
  against the cached subject cursor, the handler, inbox + cursor writes once per batch,
  commit after each batch);
- **baseline**: a raw kafka-python ``KafkaConsumer`` with the same settings
  (``hecht.kafka.consumer``: manual commits, ``max_poll_records`` 200) doing ``json.loads``
  and the same handler, committing after each batch.

The handler is the same trivial MongoDB write on both sides: an upsert of the subject's
projection. Timing starts at the first record received (group join excluded on both
sides) and stops when all N are applied. Rounds alternate which side goes first.
"""
from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

SIZES = {"quick": {"events": 1500, "subjects": 150, "rounds": 2, "profile_events": 600},
         "full": {"events": 10000, "subjects": 1000, "rounds": 3, "profile_events": 2000}}
TARGET = "ratio >= 0.5"
TOPIC = "hecht.members"


def produce(settings, topic: str, n: int, subjects: int) -> None:
    from hecht import events as ev
    from hecht import kafka as hk
    producer = hk.producer(settings, client_id="bench-seed")
    seq = [0] * subjects
    data = {"region_id": "bench-x", "name": "Benchmark region", "country": "BE", "kind": "eerstelijnszone",
            "municipalities": ["Gent", "Merelbeke"],
            "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5, "voting_period_days": 14}}
    try:
        for i in range(n):
            s = i % subjects
            seq[s] += 1
            subject = f"bench-s{s:05d}"
            e = ev.build("region.updated", region="bench-x", subject=subject, sequence=seq[s],
                         data=dict(data, region_id=subject), source="/regions/bench-x", validate_data=False)
            producer.send(topic, key=subject.encode(), value=ev.encode(e), headers=ev.kafka_headers(e))
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=5)


def handler(db):
    def handle(event: dict) -> None:
        db.projection.update_one({"_id": event["subject"]},
                                 {"$set": {"sequence": event["sequence"], "type": event["type"]}}, upsert=True)
    return handle


def run_hecht(settings, db, group: str, n: int, timeout_s: float = 600) -> float:
    from hecht.consumer import ConsumerRunner
    runner = ConsumerRunner(settings, db, group, [TOPIC], handler(db))
    try:
        seen = 0
        t = None
        deadline = lib.Timer()
        while seen < n:
            got = runner.poll_once(timeout_ms=1000)
            if got and t is None:
                t = lib.Timer()
            seen += got
            if deadline.elapsed() > timeout_s:
                raise TimeoutError(f"hecht consumer: {seen} of {n} events after {timeout_s} s")
        return t.elapsed()
    finally:
        runner.close()


def run_raw(settings, db, group: str, n: int, timeout_s: float = 600) -> float:
    from hecht import kafka as hk
    consumer = hk.consumer(settings, group, [settings.topic(TOPIC)], client_id="bench-raw")
    handle = handler(db)
    try:
        seen = 0
        t = None
        deadline = lib.Timer()
        while seen < n:
            batches = consumer.poll(timeout_ms=1000)
            got = 0
            for records in batches.values():
                for record in records:
                    handle(json.loads(record.value))
                    got += 1
            if got:
                consumer.commit()
                if t is None:
                    t = lib.Timer()
            seen += got
            if deadline.elapsed() > timeout_s:
                raise TimeoutError(f"raw consumer: {seen} of {n} events after {timeout_s} s")
        return t.elapsed()
    finally:
        consumer.close()


def main() -> None:
    profile = lib.profile_arg()
    size = SIZES[profile]
    lib.quiet_logs()
    from hecht import mongo
    tag = lib.tag()
    prefix = f"bench{tag}."
    settings = lib.settings("bench", f"hecht_bench_cons_{tag}", prefix)
    topic = settings.topic(TOPIC)
    lib.create_topic(topic, 3)
    n = size["events"]
    lib.log(f"consumer: producing {n} events to {topic}")
    produce(settings, topic, n, size["subjects"])
    dbs, rows, hecht_rates, raw_rates, notes, extra = [], [], [], [], [], {}
    try:
        for r in range(size["rounds"]):
            order = ("raw", "hecht") if r % 2 == 0 else ("hecht", "raw")
            row = {}
            for side in order:
                db_name = f"hecht_bench_cons_{tag}_{side}{r}"
                dbs.append(db_name)
                db = mongo.database(settings.mongo_uri, db_name)
                if side == "hecht":
                    from hecht.consumer import ensure_indexes
                    ensure_indexes(db)
                    secs = run_hecht(settings, db, f"bench-hecht-{r}", n)
                else:
                    secs = run_raw(settings, db, f"bench-raw-{r}", n)
                row[side] = n / secs
            lib.log(f"consumer round {r + 1}/{size['rounds']}: hecht {row['hecht']:.0f} events/s, "
                    f"raw {row['raw']:.0f} events/s")
            hecht_rates.append(row["hecht"])
            raw_rates.append(row["raw"])
            rows.append({k: round(v, 1) for k, v in row.items()})
        value, baseline = lib.median(hecht_rates), lib.median(raw_rates)
        extra["rounds"] = rows
        if value / baseline < 0.5 or profile == "full":
            lib.log("consumer: profiling one hecht pass (cProfile)")
            db_name = f"hecht_bench_cons_{tag}_profile"
            dbs.append(db_name)
            db = mongo.database(settings.mongo_uri, db_name)
            prof = cProfile.Profile()
            prof.enable()
            run_hecht(settings, db, "bench-hecht-profile", n)
            prof.disable()
            st = pstats.Stats(prof)

            def cum(name, where):
                return round(sum(v[3] for k, v in st.stats.items() if k[2] == name and where in k[0]), 3)

            def calls(name, where):
                return sum(v[1] for k, v in st.stats.items() if k[2] == name and where in k[0])

            b = {"events": n,
                 "process_s (per event: dedupe, cursor, handler, mark)": cum("process", "hecht/consumer"),
                 "handler_s (the benchmark's own write)": cum("handle", "bench_consumer"),
                 "cursor reads (find_one, first sight of a subject)": cum("find_one", "collection"),
                 "find_one_calls": calls("find_one", "collection"),
                 "flush_s (inbox insert_many + cursor $max per subject, per batch)": cum("_flush", "hecht/consumer"),
                 "kafka poll_s": cum("poll", "kafka/consumer"),
                 "commit_s": cum("commit", "kafka/consumer")}
            extra["profile"] = {"breakdown": b}
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(15)
            extra["profile"]["top_cumulative"] = "\n".join(
                line for line in buf.getvalue().splitlines()[6:] if line.strip())
            notes.append("cProfile of one ConsumerRunner pass: " + ", ".join(f"{k} {v}" for k, v in b.items()))
        lib.emit([lib.entry("consumer: events applied", "events/s", value, baseline, TARGET,
                            note=f"{n} events/round, {size['subjects']} subjects, {size['rounds']} rounds, medians")],
                 notes, extra)
    finally:
        mongo.close_all()
        lib.drop_databases(dbs)
        lib.delete_topics(prefix)


if __name__ == "__main__":
    main()
