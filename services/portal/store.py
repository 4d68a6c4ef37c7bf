"""The portal's own database (``hecht_portal``): sign-in links, sessions, rate-limit windows.

Nothing else is kept here: domain data stays in the services. Secrets are stored only as
SHA-256 hashes (link tokens, session ids), so a copy of this database signs nobody in.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from hecht import emails, mongo
from hecht.web import ensure_ttl_index

log = logging.getLogger(__name__)

_indexes_ready: set[str] = set()
_lock = threading.Lock()


def now() -> datetime:
    return datetime.now(timezone.utc)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(self, uri: str, database: str):
        self.uri, self.database = uri, database

    @property
    def db(self):
        return mongo.database(self.uri, self.database)

    def ensure_indexes(self) -> None:
        """Once per process, on first use (start-up must not need the database)."""
        key = f"{self.uri}/{self.database}"
        if key in _indexes_ready:
            return
        with _lock:
            if key in _indexes_ready:
                return
            db = self.db
            ensure_ttl_index(db.links, "expires_at", 0)
            ensure_ttl_index(db.sessions, "expires_at", 0)
            ensure_ttl_index(db.rate_limits, "expires_at", 0)
            db.sessions.create_index([("email", ASCENDING)], sparse=True)
            # Erasure and "my data" find a membership's sessions by its member id.
            db.sessions.create_index([("data.memberships.member_id", ASCENDING)], sparse=True)
            db.links.create_index([("email_key", ASCENDING)], sparse=True)
            _indexes_ready.add(key)

    # -- sign-in links --------------------------------------------------------------------
    def create_link(self, email: str, *, next_path: str, language: str, valid: timedelta,
                    purpose: str = "sign-in") -> str:
        """A new single-use link token; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        t = now()
        self.db.links.insert_one({"_id": digest(token), "email": email, "email_key": emails.key(email),
                                  "next": next_path,
                                  "language": language, "purpose": purpose,
                                  "created_at": t, "expires_at": t + valid})
        return token

    def peek_link(self, token: str) -> dict | None:
        """The link if it is still usable (for the GET page that shows the button)."""
        return self.db.links.find_one({"_id": digest(token), "expires_at": {"$gt": now()}})

    def consume_link(self, token: str) -> dict | None:
        """Use the link: one atomic delete, so two clicks can never both sign in.

        An expired link the TTL monitor has not removed yet is not matched (and stays
        unusable until it is removed)."""
        return self.db.links.find_one_and_delete({"_id": digest(token), "expires_at": {"$gt": now()}})

    # -- sessions ------------------------------------------------------------------------
    def load_session(self, sid: str) -> dict | None:
        return self.db.sessions.find_one({"_id": digest(sid), "expires_at": {"$gt": now()}})

    def save_session(self, sid: str, data: dict, expires_at: datetime) -> None:
        email = data.get("email")
        self.db.sessions.update_one(
            {"_id": digest(sid)},
            {"$set": {"data": data, "email": email, "expires_at": expires_at, "updated_at": now()},
             "$setOnInsert": {"created_at": now()}},
            upsert=True)

    def delete_session(self, sid: str) -> None:
        self.db.sessions.delete_one({"_id": digest(sid)})

    def sessions_of(self, member_id: str) -> list[dict]:
        """The signed-in sessions holding a membership (for "my data"): times only, no ids."""
        return [{"created_at": d.get("created_at"), "updated_at": d.get("updated_at"),
                 "expires_at": d.get("expires_at")}
                for d in self.db.sessions.find({"data.memberships.member_id": member_id}, {"data": 0}).limit(200)]

    def end_sessions_of(self, member_id: str, *, keep_sid: str | None = None) -> int:
        """Erasure: every session holding the membership ends (but ``keep_sid``'s). Matched on the
        member id, not the address: a session may have signed in with another spelling of it."""
        query: dict = {"data.memberships.member_id": member_id}
        if keep_sid:
            query["_id"] = {"$ne": digest(keep_sid)}
        return self.db.sessions.delete_many(query).deleted_count

    def forget_links(self, email: str | None) -> None:
        """Erasure: the unused sign-in links to the address (any spelling with its key) go too."""
        if email:
            self.db.links.delete_many({"$or": [{"email": email}, {"email_key": emails.key(email)}]})

    def once(self, bucket: str, key: str, window_s: int) -> bool:
        """True the first time in the current fixed window (the windows of :meth:`hit`)."""
        t = time.time()
        window = int(t // window_s)
        try:
            self.db.rate_limits.insert_one({
                "_id": f"{bucket}:{digest(key)}:{window}",
                "expires_at": datetime.fromtimestamp((window + 1) * window_s, timezone.utc)})
        except DuplicateKeyError:
            return False
        return True

    # -- rate limits ---------------------------------------------------------------------
    def hit(self, bucket: str, key: str, limit: int, window_s: int) -> int | None:
        """Count one call in the fixed window; the seconds to wait when over ``limit``.

        The pattern of ``hecht.web.rate_limit``: one counter per window, removed by TTL."""
        t = time.time()
        window = int(t // window_s)
        doc = None
        for _ in range(3):
            try:
                doc = self.db.rate_limits.find_one_and_update(
                    {"_id": f"{bucket}:{digest(key)}:{window}"},
                    {"$inc": {"n": 1}, "$setOnInsert": {
                        "expires_at": datetime.fromtimestamp((window + 1) * window_s, timezone.utc)}},
                    upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                continue  # two first calls of a window raced to insert the counter
            if doc is not None:
                break
        if doc is None:
            log.warning("rate-limit counter not readable; call let through", extra={"bucket": bucket})
            return None
        if doc["n"] > limit:
            return max(1, int((window + 1) * window_s - t) + 1)
        return None

    def ping(self) -> bool:
        try:
            self.db.command("ping")
            return True
        except PyMongoError:
            return False
