"""Steady background load for the fault runs (issue 6), and reading a topic to its end.

``SteadyLoad`` signs GPs up through the sign-up endpoint at a fixed rate for as
long as the story runs, whatever is down, as the region's admin: the only caller told
the new member's id (an anonymous one gets 202 without it, issue 22). Every answer must be a 201 or, while
the database is down, a 503 problem with ``Retry-After``, within the request
timeout: a 500, another status or a hang is recorded as a violation. The ids of
the acknowledged sign-ups are kept so the run can check each one is stored and
its event reached Kafka and the integrator.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

import requests
from kafka import KafkaConsumer, TopicPartition


class SteadyLoad:
    def __init__(self, members_url: str, region: str, suffix: str, *, rate_per_s: float | None = None,
                 timeout_s: float = 15.0):
        rate_per_s = rate_per_s or float(os.environ.get("HECHT_STORY_LOAD_RATE", 2))
        self.url = f"{members_url}/v1/regions/{region}/members"
        self.region = region
        self.suffix = suffix
        self.interval = 1.0 / rate_per_s
        self.timeout_s = timeout_s
        self.acknowledged: list[str] = []   # member ids of sign-ups answered 201
        self.statuses: Counter = Counter()
        self.violations: list[str] = []     # anything but 201 or a proper 503 problem
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def __enter__(self) -> "SteadyLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 5)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def _body(self, k: int) -> dict:
        n6 = 150000 + k  # RIZIV: 1 (physician), serial, check digits 97 − (N6 mod 97), competence
        return {"given_name": "Belasting", "family_name": f"Load{k}", "language": "nl",
                "email": f"load{k}.{self.suffix}@example.org",
                "registration": {"scheme": "RIZIV", "number": f"{n6}{97 - n6 % 97:02d}004"},
                "practice": {"name": f"Praktijk L{k}", "postcode": "9000", "municipality": "Gent"}}

    def _run(self) -> None:
        from tests.conftest import bearer
        session = requests.Session()
        session.headers.update(bearer("region-admin", self.region))
        k = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            k += 1
            self._one(session, k)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        session.close()

    def _one(self, session: requests.Session, k: int) -> None:
        started = time.monotonic()
        try:
            r = session.post(self.url, json=self._body(k), timeout=self.timeout_s)
        except requests.Timeout:
            self.statuses["timeout"] += 1
            self.violations.append(f"sign-up {k}: no answer within {self.timeout_s}s")
            return
        except requests.ConnectionError as e:
            self.statuses["connection-error"] += 1
            self.violations.append(f"sign-up {k}: connection failed: {e}")
            return
        self.statuses[r.status_code] += 1
        if r.status_code == 201:
            self.acknowledged.append(r.json()["id"])
        elif r.status_code == 503:
            ok = (r.headers.get("Content-Type", "").startswith("application/problem+json")
                  and r.headers.get("Retry-After") and "Traceback" not in r.text)
            if not ok:
                self.violations.append(f"sign-up {k}: 503 without a problem body/Retry-After: {r.text[:200]}")
        else:
            self.violations.append(f"sign-up {k}: {r.status_code} after {time.monotonic() - started:.1f}s: "
                                   f"{r.text[:200]}")


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list:
    """Every record of ``topic`` up to its current end (not just what one poll returns)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        records: list = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic} to its end: {len(records)} records")
            for batch in c.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        c.close()
