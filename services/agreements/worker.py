"""Agreements worker: the outbox relay, the members-events consumer, and the lifecycle scheduler.

The scheduler applies dated transitions — a vote reaching its deadline, an
agreement reaching its start date, its end date or its review date, and the
"superseded" step of an amendment's activation. Each transition is a commit
guarded by the agreement's sequence (see ``repository``). Two schedulers
racing for the same item both try; one commits, the other re-reads, finds
nothing due, and moves on. A scheduler killed at any point leaves either the
whole transition (state and event, one transaction) or nothing, and the next
pass finishes the job: exactly once, without leases or timeouts. Time comes
from ``now()``.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime
from typing import Callable

from hecht import kafka, topics
from hecht.consumer import ConsumerRunner
from hecht.outbox import Relay

from . import domain, handlers
from .repository import AgreementRepository, ensure_indexes  # noqa: F401 - `hecht migrate`

log = logging.getLogger(__name__)

# In this order: a vote closes before anything else, an activation supersedes its
# predecessor, and an agreement that expired is not also reported as due for review.
RULES: list[tuple[str, type]] = [
    ("close_vote", domain.CloseOverdueVote),
    ("activate", domain.ActivateDue),
    ("supersede", domain.SupersedePrevious),
    ("expire", domain.ExpireDue),
    ("review", domain.MarkReviewDue),
]


class Scheduler:
    def __init__(self, db, now: Callable[[], datetime] = handlers.utcnow, *, poll_s: float = 1.0,
                 on_item: Callable[[str, str], None] | None = None):
        self.db = db
        self.now = now
        self.poll_s = poll_s
        self.on_item = on_item  # a hook for tests: called before each transition is attempted

    def run_once(self) -> Counter:
        """Apply every transition due now; returns how many of each this scheduler applied."""
        done: Counter = Counter()
        repo = AgreementRepository(self.db)
        for rule, command in RULES:
            now = self.now()
            for agreement_id in repo.due(rule, now):
                if self.on_item:
                    self.on_item(rule, agreement_id)
                if handlers.handle(command(agreement_id), self.db, now=now) is not None:
                    done[rule] += 1
        if done:
            log.info("scheduled transitions applied", extra={"transitions": dict(done)})
        return done

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler started")
        delay = self.poll_s
        while not stop.is_set():
            try:
                self.run_once()
                delay = self.poll_s
            except Exception as e:  # noqa: BLE001 - a database outage must not kill the worker
                log.warning("scheduler pass failed; retrying", extra={"error": f"{type(e).__name__}: {e}"})
                delay = min(max(delay * 2, 0.5), 30.0)
            stop.wait(delay)
        log.info("scheduler stopped")


def components(settings, db):
    relay = Relay(db, settings.topic(topics.AGREEMENTS),
                  lambda: kafka.producer(settings), service="agreements", poll_s=settings.relay_poll_s)
    consumer = ConsumerRunner(settings, db, "agreements", [topics.MEMBERS], handlers.event_handler(db))
    scheduler = Scheduler(db)
    return [("relay", relay.run), ("consumer", consumer.run), ("scheduler", scheduler.run)]
