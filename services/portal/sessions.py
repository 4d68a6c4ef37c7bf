"""Server-side sessions in the portal's database (a small own store, not Flask-Session).

Why not Flask-Session 0.8: it keeps the raw session id as the document key and has no
hook to store the signed-in address next to the data (needed for "my data"); a few
lines here store only the id's hash, rotate the id at sign-in and end it at sign-out.

The cookie holds a random id only: HttpOnly, SameSite=Lax, Secure outside development.
"""
from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from pymongo.errors import PyMongoError
from werkzeug.datastructures import CallbackDict

from .store import Store, now

COOKIE = "hecht_session"
log = logging.getLogger(__name__)


class PortalSession(CallbackDict, SessionMixin):
    def __init__(self, initial=None, sid: str | None = None):
        def on_update(_):
            self.modified = True
        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.modified = False
        self.old_sids: list[str] = []

    def rotate(self) -> None:
        """A new id for the same data (at sign-in: a fixated id is worth nothing)."""
        if self.sid:
            self.old_sids.append(self.sid)
        self.sid = None
        self.modified = True

    def end(self) -> None:
        """Sign-out: forget everything but the language choice."""
        lang = self.get("lang")
        self.clear()
        if lang:
            self["lang"] = lang
        self.rotate()


class MongoSessionInterface(SessionInterface):
    def __init__(self, store: Store, lifetime: timedelta, secure: bool):
        self.store, self.lifetime, self.secure = store, lifetime, secure

    def open_session(self, app: Flask, request: Request) -> PortalSession:
        sid = request.cookies.get(COOKIE)
        if sid and 20 <= len(sid) <= 100:
            try:
                self.store.ensure_indexes()
                doc = self.store.load_session(sid)
            except PyMongoError:
                # The database is down: carry on without a session (public pages still work;
                # a page that needs one redirects to sign-in or answers 503).
                log.warning("session store unavailable")
                return PortalSession()
            if doc is not None:
                return PortalSession(doc.get("data") or {}, sid=sid)
        return PortalSession()

    def save_session(self, app: Flask, session: PortalSession, response: Response) -> None:
        try:
            self._save(session, response)
        except PyMongoError:
            log.warning("session not saved: the session store is unavailable")

    def _save(self, session: PortalSession, response: Response) -> None:
        for old in session.old_sids:
            self.store.delete_session(old)
        if not session.modified:
            return
        if not session:
            if session.sid:
                self.store.delete_session(session.sid)
            response.delete_cookie(COOKIE, path="/", secure=self.secure, httponly=True, samesite="Lax")
            return
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
        expires = now() + self.lifetime
        self.store.ensure_indexes()
        self.store.save_session(session.sid, dict(session), expires)
        response.set_cookie(COOKIE, session.sid, max_age=int(self.lifetime.total_seconds()), path="/",
                            secure=self.secure, httponly=True, samesite="Lax")
        response.vary.add("Cookie")
