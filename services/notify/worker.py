"""Notify worker: relay, consumer, webhook delivery engine, e-mail sender, reminder scheduler.

The delivery engine
-------------------
Deliveries wait in the ``deliveries`` collection. A dispatcher thread picks the due ones and
hands each to a thread pool; three rules keep endpoints from hurting each other and keep
each endpoint's view of an aggregate in order:

- **Lanes.** A lane is (subscription, aggregate subject). At most one delivery per lane is
  in flight, and only the lane's oldest open delivery (by sequence) may go: an event for
  member M is never sent before an earlier event for M has succeeded or finally failed.
- **Per-endpoint cap.** One subscription has at most ``HECHT_WEBHOOK_CONCURRENCY_PER_ENDPOINT``
  (default 2) deliveries in flight, whatever its number of lanes; the pool has
  ``HECHT_WEBHOOK_WORKERS`` (default 128) threads. A slow or dead endpoint ties up at most
  its cap, and the dispatcher does not even query its deliveries while it is at the cap,
  so it cannot crowd the others out of a batch either.
- **Claims with leases.** The attempts a dispatch hands over are leased in one conditional
  ``update_many`` (``DeliveryRepository.claim``: still pending, due, unchanged since read,
  no live lease): updates are isolated per document, so two workers never send the same
  attempt at once. A lease runs out after the timeout plus a margin, so a killed worker's
  attempt is made again (receivers dedupe on ``webhook-id``, which is the event id).

Retries follow ``HECHT_WEBHOOK_RETRY_SCHEDULE_S`` with jitter (``domain.RetryPolicy``); a
``Retry-After`` on 429/503 lengthens the wait; 410 Gone fails the delivery and disables the
subscription at once; after ``HECHT_WEBHOOK_DISABLE_AFTER_FAILURES`` deliveries in a row
have failed for good, the subscription is disabled and ``subscription.disabled`` emitted.
Deliveries of a disabled subscription stay ``pending`` and resume when it is re-enabled.
Every attempt is logged (``attempts``): time, status, latency, first 512 bytes of the reply.
An attempt has one total deadline (``HECHT_WEBHOOK_TIMEOUT_S``) for connect, send and receive,
reads at most 64 KB of the reply and never follows a redirect nor reads its body
(``outbound.post``).

Two controls per subscription sit on top:

- **Rate limit** (``rate_limit``, deliveries per second). Each send takes the subscription's
  next slot with one conditional update (``rl_next_at``: free when past, moved 1/rate on), so
  several workers together keep the spacing too. The subscription shows ``throttled_until``
  (its next free slot); an attempt that waited for the limit records ``throttled_ms`` (how long
  it was held back) and ``throttled_until`` (when its slot came).
- **Circuit breaker**, apart from the permanent disable: after
  ``HECHT_WEBHOOK_CIRCUIT_FAILURES`` (5) failed attempts in a row the circuit opens for
  ``HECHT_WEBHOOK_CIRCUIT_COOLDOWN_S`` (60 s): nothing is sent. Then one probe (the lane head
  that is due) is claimed with a conditional update (``half-open``, leased like an attempt);
  success closes the circuit and delivery resumes, failure re-opens it for another cool-down.
  Each attempt records ``probe``, the state it went in (``circuit``) and the state after it
  (``circuit_after``), so open, probe and close are all visible in the attempt log.
A delivery that settles gets ``expires_at`` (with its attempts, and its event's copy once no
other delivery needs it): TTL indexes remove them after ``HECHT_NOTIFY_RETENTION_DAYS``.
"""
from __future__ import annotations

import json
import re
import logging
import os
import queue
import random
import smtplib
import socket
import threading
from typing import Callable
import time
import uuid
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import requests
from prometheus_client import Counter as PromCounter, Histogram
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database

from hecht import kafka, logs, topics
from hecht.config import Settings
from hecht.consumer import ConsumerRunner
from hecht.errors import PreconditionFailed
from hecht.outbox import EventDraft, Relay
from hecht.web import new_id

from . import domain, handlers, mail, outbound, signing
from .repository import (FAILED, PENDING, SENT, SUCCEEDED, AddressBook, DeliveryRepository,  # noqa: F401
                         NotificationRepository, ensure_indexes, now, retention)  # ensure_indexes: `hecht migrate`

log = logging.getLogger(__name__)

ATTEMPTS = PromCounter("hecht_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"])
ATTEMPT_LATENCY = Histogram("hecht_webhook_attempt_seconds", "Webhook attempt latency")
EMAILS = PromCounter("hecht_emails_total", "E-mails by outcome", ["outcome"])

SKIPPED, ABANDONED = "skipped", "abandoned"
LEASE = {"lease_owner": "", "lease_until": ""}  # $unset: the attempt is over
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
RESPONSE_BYTES = 512
MAX_BODY_READ = 64 * 1024


@dataclass(frozen=True)
class Tuning:
    """Notify's own knobs (environment, with defaults that suit production)."""
    workers: int = 128
    per_endpoint: int = 2
    poll_s: float = 0.2
    batch: int = 5000
    mail_poll_s: float = 1.0
    mail_retry_schedule_s: tuple[float, ...] = (30, 120, 600, 3600, 14400)
    scheduler_poll_s: float = 30.0
    circuit_failures: int = 5
    circuit_cooldown_s: float = 60.0

    @classmethod
    def from_env(cls) -> "Tuning":
        env = os.environ
        return cls(
            workers=int(env.get("HECHT_WEBHOOK_WORKERS", 128)),
            per_endpoint=max(1, int(env.get("HECHT_WEBHOOK_CONCURRENCY_PER_ENDPOINT", 2))),
            poll_s=float(env.get("HECHT_WEBHOOK_POLL_S", 0.2)),
            batch=int(env.get("HECHT_WEBHOOK_BATCH", 5000)),
            mail_poll_s=float(env.get("HECHT_MAIL_POLL_S", 1.0)),
            mail_retry_schedule_s=tuple(float(x) for x in env.get(
                "HECHT_MAIL_RETRY_SCHEDULE_S", "30,120,600,3600,14400").split(",") if x.strip()),
            scheduler_poll_s=float(env.get("HECHT_NOTIFY_SCHEDULER_POLL_S", 30)),
            circuit_failures=max(1, int(env.get("HECHT_WEBHOOK_CIRCUIT_FAILURES", 5))),
            circuit_cooldown_s=float(env.get("HECHT_WEBHOOK_CIRCUIT_COOLDOWN_S", 60)),
        )


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


# =============================================================================================
# Webhook delivery engine
# =============================================================================================
class DeliveryEngine:
    def __init__(self, settings: Settings, db: Database, tuning: Tuning | None = None,
                 rng: random.Random | None = None):
        self.settings = settings
        self.db = db
        self.tuning = tuning or Tuning.from_env()
        self.policy = domain.RetryPolicy(settings.webhook_retry_schedule_s)
        self.rng = rng or random.Random()
        # An attempt starts as soon as it is claimed (claims respect the free capacity), so
        # its HTTP timeout plus a few writes bound it; a killed worker's lanes resume this soon.
        # A holder outliving its lease is harmless: its writes are guarded by ``claim_seq``,
        # which the next claim moves on.
        self.lease_s = settings.webhook_timeout_s + 10
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.session = outbound.session(settings.webhooks_allow_private, pool_size=self.tuning.workers)
        self._pool = ThreadPoolExecutor(self.tuning.workers, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._lanes: set[tuple[str, str]] = set()
        self._per_sub: Counter = Counter()
        self._wake = threading.Event()
        self._outcomes: queue.SimpleQueue = queue.SimpleQueue()
        self._subs: dict[str, dict] = {}
        self._subs_at = 0.0
        self._held: dict[str, datetime] = {}   # delivery → when the rate limit first held it back
        self._secrets: dict[tuple[str, int], list[str]] = {}
        self._bodies: OrderedDict[str, str | None] = OrderedDict()
        self._box = signing.SecretBox(settings)

    # -- state shared with the pool threads -------------------------------------------------
    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._lanes)

    def wake(self) -> None:
        self._wake.set()

    def _subscriptions(self, force: bool = False) -> dict[str, dict]:
        """The subscriptions that may deliver now. Those owned by a suspended integrator
        application are left out, so their deliveries stay pending (held, not dropped) and
        go out in order when the region makes it active again."""
        if force or time.monotonic() - self._subs_at > 1.0:
            suspended = [d["_id"] for d in self.db.integrators.find({"status": "suspended"}, {"_id": 1})]
            query: dict = {"enabled": True, "deleted": {"$ne": True}}
            if suspended:
                query["owner"] = {"$nin": suspended}
            self._subs = {s["_id"]: s for s in self.db.subscriptions.find(query)}
            self._subs_at = time.monotonic()
        return self._subs

    def _secrets_for(self, sub: dict) -> list[str]:
        key = (sub["_id"], sub["version"])
        active = signing.active_secrets(sub.get("secrets", []))
        plain = self._secrets.get(key)
        if plain is None or len(plain) != len(active):
            plain = [self._box.decrypt(s["enc"]) for s in active]
            if len(self._secrets) > 4096:
                self._secrets.clear()
            self._secrets[key] = plain
        return plain

    def _body(self, event_id: str) -> str | None:
        with self._lock:
            if event_id in self._bodies:
                self._bodies.move_to_end(event_id)
                return self._bodies[event_id]
        doc = self.db.event_copies.find_one({"_id": event_id}, {"event": 1})
        body = json.dumps(doc["event"], separators=(",", ":"), ensure_ascii=False, default=str) if doc else None
        with self._lock:
            self._bodies[event_id] = body
            while len(self._bodies) > 2048:
                self._bodies.popitem(last=False)
        return body

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch_once(self) -> int:
        """Claim what may go now and hand it to the pool; returns how many were handed over.

        One query reads the open deliveries of the endpoints that have room, due or not: the
        due ones are the candidates, the others tell which lanes must wait (an earlier event
        of the same aggregate in backoff). Only when that read is truncated does a second,
        narrower query look for blockers.
        """
        with self._lock:
            free = self.tuning.workers - len(self._lanes)
            busy_lanes = set(self._lanes)
            per_sub = Counter(self._per_sub)
        if free <= 0:
            return 0
        subs = self._subscriptions(force=True)
        t = now()
        probing: set[str] = set()   # circuits whose cool-down is over: one probe may go
        open_subs = []
        for sid, sub in subs.items():
            if per_sub[sid] >= self.tuning.per_endpoint:
                continue
            gate = _circuit_gate(sub, t)
            if gate == "wait":
                continue
            if gate == "probe":
                if per_sub[sid]:
                    continue  # attempts from before it opened are still in flight
                probing.add(sid)
            open_subs.append(sid)
        if not open_subs:
            return 0
        pending = list(self.db.deliveries.find(
            {"subscription_id": {"$in": open_subs}, "status": PENDING}).sort([("next_attempt_at", ASCENDING), ("sequence", ASCENDING)]).limit(self.tuning.batch))
        truncated = len(pending) >= self.tuning.batch
        first: dict[tuple[str, str], dict] = {}   # the lane's earliest open delivery we saw
        for c in pending:
            lane = (c["subscription_id"], c["subject"])
            best = first.get(lane)
            if best is None or (c["sequence"], c["_id"]) < (best["sequence"], best["_id"]):
                first[lane] = c
        heads = {lane: c for lane, c in first.items()
                 if lane not in busy_lanes and _aware(c["next_attempt_at"]) <= t}
        if not heads:
            return 0
        if truncated:
            self._drop_blocked(heads)
        self._gate_heads(heads, subs, probing, t)
        chosen = []
        for c in sorted(heads.values(), key=lambda d: (_aware(d["next_attempt_at"]), d["_id"])):
            if len(chosen) >= free:
                break
            if per_sub[c["subscription_id"]] < self.tuning.per_endpoint:
                per_sub[c["subscription_id"]] += 1
                chosen.append(c)
        # One conditional update_many leases them all (one more for the rare partial win);
        # the outcome is recorded under the claim number the lease moved to.
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        won = DeliveryRepository(self.db).claim(chosen, token, t, t + timedelta(seconds=self.lease_s))
        handed = 0
        for d in chosen:
            if d["_id"] not in won:
                continue  # in flight elsewhere (its lease is live), or changed since we read it
            d["claim_seq"] = d.get("claim_seq", 0) + 1
            d["lease_owner"] = token
            d["_probe"] = d["subscription_id"] in probing
            with self._lock:
                held = self._held.pop(d["_id"], None)
            if held is not None:
                d["_throttled"] = (held, t)
            lane = (d["subscription_id"], d["subject"])
            with self._lock:
                self._lanes.add(lane)
                self._per_sub[d["subscription_id"]] += 1
            self._pool.submit(self._run_one, d, subs.get(d["subscription_id"]), lane)
            handed += 1
        return handed

    def _gate_heads(self, heads: dict[tuple[str, str], dict], subs: dict[str, dict], probing: set[str],
                    t: datetime) -> None:
        """Keep what the circuit and the rate limits let go now (in place).

        A circuit past its cool-down sends one probe: the earliest head, if this worker wins
        the conditional update that moves the circuit to half-open. A rate-limited subscription
        sends one delivery per slot; the heads left waiting are marked ``throttled_until``."""
        by_sub: dict[str, list[tuple[str, str]]] = {}
        for lane in heads:
            by_sub.setdefault(lane[0], []).append(lane)
        keep: dict[str, list[tuple[str, str]]] = {}
        for sid, lanes in by_sub.items():
            lanes.sort(key=lambda ln: (_aware(heads[ln]["next_attempt_at"]), heads[ln]["_id"]))
            keep[sid] = lanes
            if sid in probing:
                keep[sid] = lanes[:1] if self._claim_probe(sid, t) else []
        limited = [sid for sid, k in keep.items() if k and (subs.get(sid) or {}).get("rate_limit")]
        if limited:
            won, _ = self._take_slots(limited, t)
            with self._lock:
                if len(self._held) > 100_000:
                    self._held.clear()
                for sid in limited:
                    if sid in won:  # this worker took the slot: one delivery goes now
                        waiting, keep[sid] = keep[sid][1:], keep[sid][:1]
                    else:
                        waiting, keep[sid] = keep[sid], []
                    for ln in waiting:  # held back by the rate limit since (kept in memory: no write)
                        self._held.setdefault(heads[ln]["_id"], t)
        for sid, lanes in by_sub.items():
            kept = set(keep[sid])
            for ln in lanes:
                if ln not in kept:
                    heads.pop(ln, None)

    def _claim_probe(self, sid: str, t: datetime) -> bool:
        lease = t + timedelta(seconds=self.lease_s)
        won = self.db.subscriptions.find_one_and_update(
            {"_id": sid, "$or": [{"circuit.state": OPEN, "circuit.retry_at": {"$lte": t}},
                                 {"circuit.state": HALF_OPEN, "circuit.probe_until": {"$lte": t}}]},
            {"$set": {"circuit.state": HALF_OPEN, "circuit.probe_until": lease}}, projection={"_id": 1})
        return won is not None

    def _take_slots(self, sids: list[str], t: datetime) -> tuple[set[str], dict[str, datetime]]:
        """Take the next send slot of each rate-limited subscription whose slot is free, in one
        conditional update (the slot moves 1/rate on); (the ones taken, when the others free up).
        Shared through the database, so several workers together keep the spacing."""
        token = uuid.uuid4().hex
        self.db.subscriptions.update_many(
            {"_id": {"$in": sids}, "$or": [{"rl_next_at": {"$lte": t}}, {"rl_next_at": None}]},
            [{"$set": {"rl_next_at": {"$add": [t, {"$divide": [1000, "$rate_limit"]}]}, "rl_token": token}}])
        won, slots = set(), {}
        for doc in self.db.subscriptions.find({"_id": {"$in": sids}}, {"rl_next_at": 1, "rl_token": 1}):
            if doc.get("rl_token") == token:
                won.add(doc["_id"])
            else:
                slots[doc["_id"]] = _aware(doc.get("rl_next_at"))
        return won, slots

    def _drop_blocked(self, heads: dict[tuple[str, str], dict]) -> None:
        """Remove lanes whose candidate must wait behind an earlier open delivery of the lane
        (one in backoff, or one being attempted by another worker)."""
        subs = list({lane[0] for lane in heads})
        subjects = list({lane[1] for lane in heads})
        for b in self.db.deliveries.find(
                {"subscription_id": {"$in": subs}, "subject": {"$in": subjects}, "status": PENDING},
                {"subscription_id": 1, "subject": 1, "sequence": 1}):
            lane = (b["subscription_id"], b["subject"])
            c = heads.get(lane)
            if c is not None and b["_id"] != c["_id"] and (b["sequence"], b["_id"]) < (c["sequence"], c["_id"]):
                heads.pop(lane, None)

    def _run_one(self, delivery: dict, sub: dict | None, lane: tuple[str, str]) -> None:
        """Pool thread: the HTTP attempt only. Its outcome is queued for the dispatcher to record."""
        try:
            result = self.attempt(delivery, sub)
        except Exception:  # noqa: BLE001 - one bad delivery must not kill the pool thread
            log.exception("delivery crashed; its lease will run out and it will be tried again",
                          extra={"delivery_id": delivery["_id"]})
            result = None
        self._outcomes.put((delivery, sub, lane, result))
        self._wake.set()

    # -- one attempt ------------------------------------------------------------------------
    def attempt(self, d: dict, sub: dict | None) -> tuple[dict | None, str, float | None]:
        """Make one attempt for a claimed delivery: (attempt log entry, outcome, Retry-After).

        ``sub`` is the subscription as read by the dispatch that claimed the delivery (every
        dispatch reads them afresh, so a URL change or a secret rotation applies at once)."""
        if sub is None:
            sub = self.db.subscriptions.find_one({"_id": d["subscription_id"], "deleted": {"$ne": True}})
        if sub is not None and not sub.get("enabled"):
            return None, SKIPPED, None  # disabled since: no attempt, it waits for re-enabling
        body = self._body(d["event_id"])
        with logs.continued_trace(_traceparent(body)):
            return self._attempt(d, sub, body)

    def _attempt(self, d: dict, sub: dict | None, body: str | None) -> tuple[dict | None, str, float | None]:
        started = now()
        status, error, snippet, retry_after = None, None, "", None
        t0 = time.perf_counter()
        if sub is None or body is None:
            error = "the subscription was deleted" if sub is None else "notify has no copy of this event"
        else:
            try:
                hdrs = signing.headers_for(sub.get("signature") or signing.V1, self._secrets_for(sub),
                                           d["event_id"], body)
                child = logs.child_traceparent(_traceparent(body))
                if child:  # the receiver can continue the event's trace too
                    hdrs["traceparent"] = child
                status, snippet, retry_after, error = self._post(sub["url"], body, hdrs)
            except outbound.BlockedDestination as e:
                error = f"refused: {e}"
            except outbound.DeadlineExceeded:
                error = (f"timeout: no complete answer within the total deadline of "
                         f"{self.settings.webhook_timeout_s:g} s (connect, send and receive)")
            except requests.Timeout:
                error = f"timeout after {self.settings.webhook_timeout_s:g} s"
            except requests.ConnectionError as e:
                error = f"connection error: {_short(e)}"
            except requests.RequestException as e:
                error = f"request error: {_short(e)}"
        latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        ATTEMPT_LATENCY.observe(latency_ms / 1000)
        log.info("webhook attempt", extra={"delivery_id": d["_id"], "subscription_id": d["subscription_id"],
                                           "event_id": d["event_id"], "status": status, "error": error,
                                           "latency_ms": latency_ms})
        probe = bool(d.get("_probe"))
        attempt = {"delivery_id": d["_id"], "subscription_id": d["subscription_id"], "at": started,
                   "n": d.get("attempt_count", 0) + 1, "status": status, "latency_ms": latency_ms,
                   "response": snippet, "error": error, "probe": probe,
                   "circuit": HALF_OPEN if probe else ((sub or {}).get("circuit") or {}).get("state", CLOSED),
                   "throttled_until": d["_throttled"][1] if d.get("_throttled") else None,
                   "throttled_ms": round((d["_throttled"][1] - d["_throttled"][0]).total_seconds() * 1000, 1)
                   if d.get("_throttled") else None}
        outcome = ABANDONED if sub is None or body is None else domain.classify(status)
        ATTEMPTS.labels(outcome).inc()
        return attempt, outcome, retry_after

    def deliver(self, d: dict, sub: dict | None = None) -> str:
        """Attempt and record at once (tools and tests; the engine batches the recording)."""
        attempt, outcome, retry_after = self.attempt(d, sub)
        self._record([(d, sub, None, (attempt, outcome, retry_after))])
        return outcome

    def _post(self, url: str, body: str, hdrs: dict) -> tuple[int, str, float | None, str | None]:
        """One POST within the total deadline; at most ``MAX_BODY_READ`` bytes of the answer are
        read (none of a redirect's) and its first ``RESPONSE_BYTES`` kept."""
        reply = outbound.post(self.session, url, body.encode(), hdrs, self.settings.webhook_timeout_s,
                              max_read=MAX_BODY_READ)
        snippet = reply.body[:RESPONSE_BYTES].decode("utf-8", errors="replace")
        error = None
        if reply.is_redirect:
            error = (f"redirect ({reply.status}) not followed: webhooks never follow redirects "
                     "(its body was not read)")
        retry_after = None
        if reply.status in domain.RETRY_AFTER_STATUSES:
            retry_after = domain.parse_retry_after(reply.headers.get("Retry-After"))
        return reply.status, snippet, retry_after, error

    # -- recording outcomes -----------------------------------------------------------------
    def flush(self, wait_s: float = 0.0) -> int:
        """Record the outcomes the pool has queued (waiting up to ``wait_s`` for the first one)."""
        items = []
        if wait_s > 0:
            try:
                items.append(self._outcomes.get(timeout=wait_s))
            except queue.Empty:
                return 0
        while True:
            try:
                items.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        if not items:
            return 0
        try:
            self._record(items)
        finally:
            with self._lock:
                for _, _, lane, _ in items:
                    if lane is None:
                        continue
                    self._lanes.discard(lane)
                    self._per_sub[lane[0]] -= 1
                    if self._per_sub[lane[0]] <= 0:
                        del self._per_sub[lane[0]]
            self._wake.set()  # lanes are free again
        return len(items)

    def _record(self, items: list) -> None:
        """Every write is guarded by the claim (``claim_seq``), moves it on and ends the lease:
        if the lease ran out and another worker took over, this outcome is not recorded (that
        worker's is).

        Successes of one round are recorded with one ``update_many`` (per claim number), the
        attempt log with one ``insert_many``. A delivery that settles (succeeded, or failed for
        good) gets ``expires_at``, and so do its attempts: retention is their TTL index."""
        t = now()
        expires = t + retention()
        plans = []  # (delivery, subscription, attempt, outcome, delay before the next attempt)
        for d, sub, _, result in items:
            if result is None:
                continue  # crashed: the lease runs out and the attempt is made again
            attempt, outcome, retry_after = result
            delay = None
            if outcome not in (SKIPPED, domain.SUCCESS, domain.GONE, ABANDONED):
                delay = self.policy.delay_after(d.get("round_attempts", 0) + 1, retry_after, self.rng)
            plans.append((d, sub, attempt, outcome, delay))
        for d, sub, attempt, outcome, _ in plans:
            if attempt is not None and sub is not None and outcome not in (SKIPPED, ABANDONED):
                attempt["circuit_after"] = self._circuit_after(d, sub, outcome, t)
        attempts = [dict(a, _id=new_id("att"), **({"expires_at": expires} if outcome != SKIPPED and delay is None
                                                  else {}))
                    for _, _, a, outcome, delay in plans if a is not None]
        if attempts:
            self.db.attempts.insert_many(attempts, ordered=False)
        successes: dict[int, list[dict]] = {}
        settled = []
        for d, sub, attempt, outcome, delay in plans:
            seq = d.get("claim_seq", 0)
            if outcome == SKIPPED:
                self.db.deliveries.update_one({"_id": d["_id"], "claim_seq": seq},
                                              {"$inc": {"claim_seq": 1}, "$unset": LEASE})
            elif outcome == domain.SUCCESS:
                successes.setdefault(seq, []).append(d)
                if sub is not None and sub.get("consecutive_failures"):
                    handlers.SubscriptionRepository(self.db).record_success(d["subscription_id"])
            elif self._record_failure(d, sub, attempt, outcome, delay, t, expires):
                settled.append(d)
        for seq, done in successes.items():
            last = {"last_attempt_at": t, "last_status": None, "last_error": None}
            ids = [d["_id"] for d in done]
            res = self.db.deliveries.update_many(
                {"_id": {"$in": ids}, "claim_seq": seq},
                {"$set": dict(last, status=SUCCEEDED, delivered_at=t, expires_at=expires), "$unset": LEASE,
                 "$inc": {"attempt_count": 1, "round_attempts": 1, "claim_seq": 1}})
            if res.modified_count < len(ids):  # some leases ran out and were taken over: not ours
                ours = {x["_id"] for x in self.db.deliveries.find(
                    {"_id": {"$in": ids}, "claim_seq": seq + 1, "delivered_at": t}, {"_id": 1})}
                for d in done:
                    if d["_id"] not in ours:
                        log.warning("delivery lease ran out before the outcome was recorded "
                                    "(another worker took over)", extra={"delivery_id": d["_id"]})
                done = [d for d in done if d["_id"] in ours]
            settled += done
        if settled:
            DeliveryRepository(self.db).settled(settled, t)

    def _circuit_after(self, d: dict, sub: dict, outcome: str, t: datetime) -> str:
        """Move the subscription's circuit on after an attempt; the state it is left in."""
        coll = self.db.subscriptions
        sid = d["subscription_id"]
        cooldown = timedelta(seconds=self.tuning.circuit_cooldown_s)
        if outcome == domain.SUCCESS:
            known = sub.get("circuit") or {}
            if d.get("_probe") or known.get("state", CLOSED) != CLOSED or known.get("consecutive_failures"):
                coll.update_one({"_id": sid}, {"$set": {"circuit": {"state": CLOSED, "consecutive_failures": 0,
                                                                    "opened_at": None, "retry_at": None}}})
            return CLOSED
        if d.get("_probe"):  # the probe failed: another cool-down
            coll.update_one({"_id": sid}, {"$set": {"circuit.state": OPEN, "circuit.opened_at": t,
                                                    "circuit.retry_at": t + cooldown},
                                           "$inc": {"circuit.consecutive_failures": 1}})
            return OPEN
        doc = coll.find_one_and_update({"_id": sid, "circuit": {"$type": "object"}},
                                       {"$inc": {"circuit.consecutive_failures": 1}},
                                       projection={"circuit": 1}, return_document=ReturnDocument.AFTER)
        if doc is None:  # created before circuits existed (no circuit object yet)
            doc = coll.find_one_and_update({"_id": sid}, {"$set": {"circuit": {
                "state": CLOSED, "consecutive_failures": 1, "opened_at": None, "retry_at": None}}},
                projection={"circuit": 1}, return_document=ReturnDocument.AFTER) or {}
        circuit = doc.get("circuit") or {}
        if circuit.get("state", CLOSED) == CLOSED and circuit.get("consecutive_failures", 0) >= \
                self.tuning.circuit_failures:
            res = coll.update_one({"_id": sid, "circuit.state": CLOSED},
                                  {"$set": {"circuit.state": OPEN, "circuit.opened_at": t,
                                            "circuit.retry_at": t + cooldown}})
            if res.modified_count:
                log.warning("webhook circuit opened", extra={"subscription_id": sid,
                                                             "failures": circuit.get("consecutive_failures")})
                return OPEN
        return circuit.get("state", CLOSED)

    def _record_failure(self, d: dict, sub: dict | None, attempt: dict, outcome: str,
                        delay: float | None, t: datetime, expires: datetime) -> bool:
        """Record a failed attempt: a retry after ``delay``, or (None) failed for good. True if
        the delivery settled."""
        guard = {"_id": d["_id"], "claim_seq": d.get("claim_seq", 0)}
        last = {"last_attempt_at": attempt["at"], "last_status": attempt["status"], "last_error": attempt["error"]}
        inc = {"attempt_count": 1, "round_attempts": 1, "claim_seq": 1}
        if delay is not None:
            nxt = t + timedelta(seconds=delay)
            res = self.db.deliveries.update_one(guard, {"$set": dict(last, next_attempt_at=nxt), "$unset": LEASE,
                                                        "$inc": inc})
            if res.matched_count:
                # Later events of the lane wait behind this one: keep them out of the due set.
                self.db.deliveries.update_many(
                    {"subscription_id": d["subscription_id"], "subject": d["subject"], "status": PENDING,
                     "sequence": {"$gt": d["sequence"]}, "next_attempt_at": {"$lt": nxt}},
                    {"$set": {"next_attempt_at": nxt}})
            self._lost(d, res)
            return False
        res = self.db.deliveries.update_one(guard, {"$set": dict(last, status=FAILED, failed_at=t, expires_at=expires),
                                                    "$unset": LEASE, "$inc": inc})
        if not res.matched_count:
            self._lost(d, res)
            return False
        if sub is None:
            return True
        failures = handlers.SubscriptionRepository(self.db).record_failure(d["subscription_id"])
        if outcome == domain.GONE:
            reason = "the endpoint answered 410 Gone"
        elif failures >= self.settings.webhook_disable_after_failures:
            reason = f"{failures} deliveries in a row failed after every retry"
        else:
            return True
        disabled = handlers.handle(domain.DisableSubscription(d["subscription_id"], reason, failures),
                                   self.db, self.settings)
        if disabled is not None:
            log.warning("webhook subscription disabled", extra={"subscription_id": d["subscription_id"],
                                                                "reason": reason})
        return True

    @staticmethod
    def _lost(d: dict, res) -> None:
        if not res.matched_count:
            log.warning("delivery lease ran out before the outcome was recorded (another worker took over)",
                        extra={"delivery_id": d["_id"]})

    # -- loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """The dispatcher loop; a recorder thread writes outcomes meanwhile, so the database
        writes of one round overlap the claims and HTTP of the next."""
        log.info("delivery engine started", extra={"workers": self.tuning.workers,
                                                   "per_endpoint": self.tuning.per_endpoint})
        recorder = threading.Thread(target=self._record_loop, args=(stop,), name="webhook-recorder", daemon=True)
        recorder.start()
        delay = 0.5
        while not stop.is_set():
            try:
                n = self.dispatch_once()
                delay = 0.5
            except Exception as e:  # noqa: BLE001 - outages: back off, keep going
                log.warning("delivery dispatch paused", extra={"error": f"{type(e).__name__}: {e}",
                                                               "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            if n == 0:
                self._wake.wait(self.tuning.poll_s)
                self._wake.clear()
        recorder.join(timeout=30)
        self.close()
        log.info("delivery engine stopped")

    def _record_loop(self, stop: threading.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                self.flush(wait_s=0.1)
                delay = 0.5
            except Exception as e:  # noqa: BLE001 - the leases run out; the attempts are made again
                log.warning("delivery outcomes not recorded yet", extra={"error": f"{type(e).__name__}: {e}",
                                                                        "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.flush()  # what finished during shutdown is recorded, not re-sent
        except Exception as e:  # noqa: BLE001
            log.warning("outcomes not recorded at shutdown; their leases will run out", extra={"error": repr(e)})
        self.session.close()


def _circuit_gate(sub: dict, t: datetime) -> str:
    """go (closed), wait (open and cooling down, or a probe in flight), or probe."""
    c = sub.get("circuit") or {}
    state = c.get("state", CLOSED)
    if state == CLOSED:
        return "go"
    if state == OPEN:
        retry_at = _aware(c.get("retry_at"))
        return "probe" if retry_at is None or retry_at <= t else "wait"
    probe_until = _aware(c.get("probe_until"))
    return "probe" if probe_until is None or probe_until <= t else "wait"


_TRACE_IN_BODY = re.compile(r'"traceparent":"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"')


def _traceparent(body: str | None) -> str | None:
    """The event's traceparent, read from the serialised copy without parsing it again."""
    m = _TRACE_IN_BODY.search(body or "")
    return m.group(1) if m else None


def _short(e: Exception) -> str:
    text = str(e)
    return text[:300]


# =============================================================================================
# E-mail
# =============================================================================================
class MailSender:
    """Sends the queued notifications: lease one, look the address up, render, send, mark.

    Exactly-once towards people, as far as SMTP allows: the notification is recorded (with
    a unique key per event, member and template) *before* anything is sent and claimed with a
    lease. Sending is one transaction: the ``sent`` mark and its ``notification.sent`` event
    are written, the message is handed to the SMTP relay, and the transaction commits. The
    one window for a duplicate is a crash after the relay accepted the message and before
    that commit: the lease then expires and the message is sent again. The alternative
    (commit first, then send) would lose the message instead.
    """

    def __init__(self, settings: Settings, db: Database, tuning: Tuning | None = None):
        self.settings = settings
        self.db = db
        self.tuning = tuning or Tuning.from_env()
        self.repo = NotificationRepository(db)
        self.address_book = AddressBook(db)
        self.policy = domain.RetryPolicy(self.tuning.mail_retry_schedule_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = float(os.environ.get("HECHT_MAIL_LEASE_S", 120))  # a killed worker's claim expires

    def run_once(self, limit: int = 50) -> int:
        doc = self.repo.claim(self.owner, self.lease_s)
        if doc is None:
            return 0
        sender = mail.SmtpSender(self.settings.smtp_url, self.settings.smtp_from)
        handled = 0
        connected = False
        try:
            while doc is not None:
                address = self._address(doc)
                if address is not None:
                    if not connected:
                        try:
                            sender.__enter__()
                            connected = True
                        except (smtplib.SMTPException, OSError) as e:
                            self._retry(doc, f"mail relay unreachable: {_short(e)}")
                            return handled
                    if not self._send(sender, doc, *address):
                        return handled  # the session broke: the next tick reconnects
                handled += 1
                if handled >= limit:
                    break
                doc = self.repo.claim(self.owner, self.lease_s)
        finally:
            if connected:
                sender.__exit__(None, None, None)
        return handled

    def _address(self, doc: dict) -> tuple[str, str] | None:
        """(e-mail, language), or None after settling the notification as failed / retried."""
        if doc.get("to"):  # to an address, not a member (an integrator application's invitation)
            return doc["to"], domain.language_of(doc.get("language"))
        entry = self.address_book.get(doc["member_id"])
        if entry is None:
            self._wait_for_contact(doc)  # neither their events nor their contact record yet
            return None
        if entry.get("status") == "erased":
            self._finish(doc, FAILED, "the member's personal data was erased")
            return None
        if entry.get("contact_erased"):
            self._finish(doc, FAILED, "the member's contact data was erased")
            return None
        context = doc.get("context") or {}
        if not entry.get("email") or (entry.get("contact_sequence") or 0) < (context.get("contact_sequence") or 0):
            # The contacts topic is read apart from the member events: the record may still be
            # on its way. Asked again soon, for a bounded time; then failed, never sent to nobody.
            self._wait_for_contact(doc)
            return None
        if entry.get("reason") and not context.get("reason"):
            doc["context"] = dict(context, reason=entry["reason"])
        return entry["email"], domain.language_of(entry.get("language"))

    def _send(self, sender: mail.SmtpSender, doc: dict, email: str, language: str) -> bool:
        try:
            subject, text, html = mail.render(doc["template"], language, doc.get("context") or {})
        except Exception as e:  # noqa: BLE001 - a template bug fails this message, not the sender
            log.exception("template failed", extra={"notification_id": doc["_id"], "template": doc["template"]})
            self._finish(doc, FAILED, f"template error: {type(e).__name__}")
            return True
        msg = mail.build_message(self.settings.smtp_from, email, subject, text, html, language=language,
                                 notification_id=doc["_id"])
        handed_over: list[bool] = []

        def hand_over() -> None:  # once, even if the transaction around it is retried
            if not handed_over:
                sender.send(msg)
                handed_over.append(True)
        try:
            # The "sent" record and its event are written first, the message is handed to
            # SMTP, and only then is the transaction committed: a crash between the relay's
            # acceptance and our record (the one window for a duplicate) is one commit wide.
            self._finish(doc, SENT, None, language=language, before_commit=hand_over)
        except mail.PermanentMailError as e:
            self._finish(doc, FAILED, str(e))
            return True
        except (smtplib.SMTPException, OSError) as e:
            self._retry(doc, f"mail relay error: {_short(e)}")
            return False
        return True

    def _wait_for_contact(self, doc: dict) -> None:
        """Requeue shortly (0.5 s doubling to 30 s) until ``HECHT_MAIL_CONTACT_WAIT_S`` (default
        900) after the notification was queued; then it fails, recorded as such."""
        error = "the member's contact record has not reached notify yet"
        limit = float(os.environ.get("HECHT_MAIL_CONTACT_WAIT_S", 900))
        created = _aware(doc.get("created_at")) or now()
        if (now() - created).total_seconds() >= limit:
            self._finish(doc, FAILED, f"{error} (waited {limit:g} s)")
            return
        self.repo.requeue(doc, now() + timedelta(seconds=min(0.5 * 2 ** doc.get("attempts", 0), 30.0)), error)
        EMAILS.labels("retried").inc()

    def _retry(self, doc: dict, error: str) -> None:
        delay = self.policy.delay_after(doc.get("attempts", 0) + 1)
        if delay is None:
            self._finish(doc, FAILED, error)
            return
        self.repo.requeue(doc, now() + timedelta(seconds=delay), error)
        EMAILS.labels("retried").inc()
        log.warning("e-mail postponed", extra={"notification_id": doc["_id"], "template": doc["template"],
                                               "error": error, "retry_in_s": delay})

    def _finish(self, doc: dict, status: str, error: str | None, language: str | None = None,
                before_commit: Callable[[], None] | None = None) -> None:
        data = {"notification_id": doc["_id"], "region_id": doc["region"], "member_id": doc["member_id"],
                "template": doc["template"], "channel": "email", "cause_event_id": doc["cause_event_id"]}
        extra: dict = {}
        if status == SENT:
            extra = {"sent_at": now(), "language": language, "error": None}
            event = EventDraft("notification.sent", data)
        else:
            extra = {"error": error}
            # a mail server's answer may quote the address: masked before it reaches hecht.notify
            event = EventDraft("notification.failed", dict(data, error=domain.mask_addresses(error or "failed")[:500]))
        if doc.get("member_id") is None:
            event = None  # notification.* events are about members; an invitation is notify's own business
        elif doc["template"] in domain.PRIVATE_TEMPLATES:
            event = None  # a sign-up's e-mails: integrators must not learn of an attempt
        try:
            self.repo.finish(doc, status, event, extra, before_commit=before_commit)
        except PreconditionFailed:
            log.warning("notification settled by another sender meanwhile", extra={"notification_id": doc["_id"]})
        EMAILS.labels(status).inc()

    def run(self, stop: threading.Event) -> None:
        log.info("mail sender started")
        delay = 0.5
        while not stop.is_set():
            try:
                n = self.run_once()
                delay = 0.5
            except Exception as e:  # noqa: BLE001
                log.warning("mail sender paused", extra={"error": f"{type(e).__name__}: {e}", "retry_in_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if n == 0:
                stop.wait(self.tuning.mail_poll_s)
        log.info("mail sender stopped")


# =============================================================================================
# Scheduler and wiring
# =============================================================================================
def scheduler(settings: Settings, db: Database, tuning: Tuning):
    """Fires the vote-closing reminders. (Retention needs no tick: TTL indexes expire settled
    deliveries, their attempts and event copies.)"""
    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                handlers.fire_due_reminders(db, settings)
            except Exception as e:  # noqa: BLE001
                log.warning("reminder scheduler skipped a tick", extra={"error": f"{type(e).__name__}: {e}"})
            stop.wait(tuning.scheduler_poll_s)
    return run


def consumer(settings: Settings, db: Database) -> ConsumerRunner:
    return ConsumerRunner(settings, db, "notify", [topics.MEMBERS, topics.AGREEMENTS, topics.NOTIFY],
                          lambda event: handlers.handle_event(event, db, settings))


def components(settings: Settings, db: Database):
    from .contacts import ContactsConsumer  # the address book's feed (hecht.members.contacts)
    tuning = Tuning.from_env()
    relay = Relay(db, settings.topic(topics.NOTIFY),
                  lambda: kafka.producer(settings), service="notify", poll_s=settings.relay_poll_s)
    engine = DeliveryEngine(settings, db, tuning)
    return [("relay", relay.run), ("consumer", consumer(settings, db).run),
            ("contacts", ContactsConsumer(settings, db).run), ("deliveries", engine.run),
            ("mailer", MailSender(settings, db, tuning).run), ("scheduler", scheduler(settings, db, tuning))]
