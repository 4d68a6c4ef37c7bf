"""Notify's reader of ``hecht.members.contacts``: the address book's e-mail addresses.

The topic is compacted and internal (only notify may read it): key = member id, value = the
member's latest contact record (JSON, with the member ``sequence`` it was written with) or a
tombstone (null) after erasure. Its records are not CloudEvents, so ``hecht.consumer`` (which
decodes and dead-letters CloudEvents) is not used; the guarantees are the same: offsets are
committed after the batch is applied (at-least-once), and applying is idempotent (a record
older than the one kept is ignored; a tombstone is final).

Ordering against ``hecht.members``: the two topics are consumed apart, so ``member.enrolled``
may be handled before the contact record. The mail sender therefore resolves the address
when it sends, and waits (bounded) while it is unknown (``worker.MailSender``).
"""
from __future__ import annotations

import json
import logging
import threading

from prometheus_client import Counter
from pymongo.database import Database

from hecht import kafka, topics
from hecht.consumer import poll_until_stopped
from hecht.config import Settings

from .repository import AddressBook

log = logging.getLogger(__name__)

CONTACTS = Counter("hecht_notify_contacts_total", "Contact records read by outcome",
                   ["outcome"])  # applied | ignored | tombstone | unreadable


class ContactsConsumer:
    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.book = AddressBook(db)
        self.topic = settings.topic(topics.MEMBER_CONTACTS)
        self._consumer = None

    def apply(self, key: bytes | None, value: bytes | None) -> str:
        """One record; returns its outcome."""
        if not key:
            return self._count("unreadable")
        member_id = key.decode("utf-8", "replace")
        if value is None:
            self.book.forget_contact(member_id)
            return self._count("tombstone")
        try:
            contact = json.loads(value)
            if not isinstance(contact, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            # Only members writes this topic (ACLs); a record we cannot read is logged and
            # skipped: the member's next record, or the tombstone, supersedes it anyway.
            log.error("unreadable contact record skipped", extra={"member": member_id, "error": str(e)})
            return self._count("unreadable")
        outcome = self._count("applied" if self.book.apply_contact(member_id, contact) else "ignored")
        if isinstance(contact.get("notice"), dict):
            self.queue_notice(member_id, contact)
        return outcome

    def queue_notice(self, member_id: str, contact: dict) -> bool:
        """A record may carry a ``notice``: an e-mail to the member, queued once per
        notice id, even when the record's contact fields are not newer than the ones kept (it is
        written with the member's current version). Not for an erased or tombstoned member."""
        from . import domain, handlers   # handlers imports the repositories this module uses too
        notice = contact["notice"]
        template = domain.NOTICE_TEMPLATES.get(notice.get("kind"))
        region = contact.get("region_id")
        if template is None or not notice.get("id") or not region:
            log.error("unknown notice skipped", extra={"member": member_id, "kind": notice.get("kind")})
            return False
        entry = self.book.get(member_id) or {}
        if entry.get("status") == "erased" or entry.get("contact_erased"):
            return False
        repos = handlers.Repos(self.book.coll.database, self.settings)
        context = {"region_name": repos.regions.name(region), "via": notice.get("via") or "email",
                   "link": domain.portal_link(self.settings.portal_url, template, region),
                   "contact_sequence": int(contact.get("sequence") or 0)}
        return bool(handlers.queue_notifications(repos, region=region, template=template, member_ids=[member_id],
                                                 cause_event_id=str(notice["id"]),
                                                 cause_type=f"contact.{notice['kind']}", context=context))

    @staticmethod
    def _count(outcome: str) -> str:
        CONTACTS.labels(outcome).inc()
        return outcome

    def poll_once(self, timeout_ms: int = 500) -> int:
        if self._consumer is None:
            self._consumer = kafka.consumer(self.settings, topics.CONTACTS_GROUP, [self.topic])
        n = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                self.apply(record.key, record.value)
                n += 1
        if n:
            self._consumer.commit()
        return n

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing during an outage
                pass

    def run(self, stop: threading.Event) -> None:
        poll_until_stopped(stop, self.poll_once, self.close, "contacts consumer", {"topic": self.topic})
