"""Members worker: the outbox relay (members consumes no other service's events), the daily
capacity snapshots and the re-verification sweep."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable

from hecht import kafka, topics
from hecht.errors import NotFound
from hecht.outbox import RECORD_VALUE, Relay

from .handlers import announce_reverification_due

from .repository import (ensure_indexes, purge_archive, regions_without_snapshot, take_snapshot,  # noqa: F401
                         without_personal)

log = logging.getLogger(__name__)


class MembersRelay(Relay):
    """The platform relay, plus one duty of erasure: nothing personal about an erased member
    leaves the database again.

    Erasure strips the member's pending events and archived copies, and drops their pending
    contact records, right away; but a relay pass may have read the outbox just before. So
    events of erased members are published without personal data, after every archive write
    the erased members' archived events are purged again (an erasure committed after that
    check purges them itself), and a contact record of an erased member goes out as a
    tombstone. A contact record published while its member was being erased is followed by
    one more tombstone, so the latest value under the key is always the tombstone.
    """

    def _erased_ids(self, subjects: set[str]) -> set[str]:
        if not subjects:
            return set()
        return {d["_id"] for d in self.db.members.find({"_id": {"$in": sorted(subjects)}, "status": "erased"},
                                                       {"_id": 1})}

    def _erased(self, events: list[dict]) -> set[str]:
        return self._erased_ids({e["subject"] for e in events if without_personal(e) != e})

    def _publish_records(self, entries: list[dict]) -> None:
        subjects = {e["subject"] for e in entries if e[RECORD_VALUE] is not None}
        erased = self._erased_ids(subjects)
        super()._publish_records([dict(e, **{RECORD_VALUE: None}) if e["subject"] in erased else e
                                  for e in entries])
        late = self._erased_ids(subjects - erased)
        if late:
            last = {e["subject"]: e for e in entries if e["subject"] in late}
            super()._publish_records([dict(e, **{RECORD_VALUE: None}) for e in last.values()])

    def _publish(self, events: list[dict]) -> None:
        erased = self._erased(events)
        super()._publish([without_personal(e) if e["subject"] in erased else e for e in events])

    def _archive(self, events: list[dict]) -> None:
        erased = self._erased(events)
        super()._archive([without_personal(e) if e["subject"] in erased else e for e in events])
        late = self._erased(events) - erased
        if late:
            purge_archive(self.db, sorted(late))


def relay(settings, db) -> MembersRelay:
    return MembersRelay(db, settings.topic(topics.MEMBERS),
                        lambda: kafka.producer(settings), service="members", poll_s=settings.relay_poll_s)


class CapacitySnapshots:
    """Once a day, a capacity snapshot of every region (docs/PORTAL.md, capacity over time).

    Each pass asks which regions have no snapshot for today (UTC) and takes theirs, so it is
    cheap to run often: on a quiet day a pass is two small reads. Several workers may pass at
    once; a day's snapshot is an upsert by ``{region}:{day}``, so they cannot add a day twice.
    A region registered during the day gets its first snapshot at the next pass.
    """

    def __init__(self, db, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc), *,
                 poll_s: float = 60.0):
        self.db = db
        self.now = now
        self.poll_s = poll_s

    def run_once(self) -> list[str]:
        """Take today's missing snapshots; returns the regions snapshotted."""
        day = self.now().date()
        done = []
        for region_id in regions_without_snapshot(self.db, day):
            try:
                take_snapshot(self.db, region_id, day)
            except NotFound:   # gone between the two reads
                continue
            done.append(region_id)
        if done:
            log.info("capacity snapshots taken", extra={"day": day.isoformat(), "regions": len(done)})
        return done

    what = "capacity snapshots"

    def run(self, stop: threading.Event) -> None:
        log.info(f"{self.what} started")
        while not stop.is_set():
            try:
                self.run_once()
                delay = self.poll_s
            except Exception as e:  # noqa: BLE001 - a database outage must not kill the worker
                log.warning(f"{self.what} pass failed; retrying", extra={"error": f"{type(e).__name__}: {e}"})
                delay = min(self.poll_s, 5.0)
            stop.wait(delay)
        log.info(f"{self.what} stopped")


class ReverificationSweep(CapacitySnapshots):
    """Announces members past their re-confirmation (``member.reverification_due``; notify
    e-mails them). Once per due period per member, however often it passes and however many
    workers run: see ``handlers.announce_reverification_due``. Hourly: a due date is a day."""

    def __init__(self, db, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc), *,
                 poll_s: float = 3600.0):
        super().__init__(db, now, poll_s=poll_s)

    what = "re-verification sweep"

    def run_once(self) -> list[str]:
        return announce_reverification_due(self.db, self.now(), trace=None)


def components(settings, db):
    return [("relay", relay(settings, db).run), ("capacity-snapshots", CapacitySnapshots(db).run),
            ("reverification", ReverificationSweep(db).run)]
