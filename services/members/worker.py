"""Members worker: the outbox relay (members consumes no other service's events)."""
from __future__ import annotations

from hecht import kafka, topics
from hecht.outbox import Relay

from .repository import ensure_indexes, purge_archive, without_personal  # noqa: F401


class MembersRelay(Relay):
    """The platform relay, plus one duty of erasure: nothing personal about an erased member
    leaves the database again.

    Erasure strips the member's pending events and archived copies right away, but a relay
    pass may have read the outbox just before. So events of erased members are published
    without ``personal``, and after every archive write the erased members' archived events
    are purged again (an erasure committed after that check purges them itself).
    """

    def _erased(self, events: list[dict]) -> set[str]:
        subjects = {e["subject"] for e in events if without_personal(e) != e}
        if not subjects:
            return set()
        return {d["_id"] for d in self.db.members.find({"_id": {"$in": sorted(subjects)}, "status": "erased"},
                                                       {"_id": 1})}

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


def components(settings, db):
    return [("relay", relay(settings, db).run)]
