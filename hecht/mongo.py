"""One MongoClient per process, created lazily after fork.

pymongo is not fork-safe: gunicorn forks workers, so a client built at import
time (or in the master) would be shared by children. ``database()`` checks the
process id and builds a fresh client in each process.
"""
from __future__ import annotations

import os
import threading

import pymongo
from pymongo.database import Database

_lock = threading.Lock()
_clients: dict[tuple[int, str], pymongo.MongoClient] = {}


def client(uri: str) -> pymongo.MongoClient:
    key = (os.getpid(), uri)
    c = _clients.get(key)
    if c is None:
        with _lock:
            c = _clients.get(key)
            if c is None:
                # Short timeouts: a database outage must surface as a quick 503,
                # not a request hanging for pymongo's default 30 s.
                c = pymongo.MongoClient(
                    uri,
                    serverSelectionTimeoutMS=int(os.environ.get("HECHT_MONGO_TIMEOUT_MS", 3000)),
                    connectTimeoutMS=3000,
                    socketTimeoutMS=10000,
                    tz_aware=True,
                    uuidRepresentation="standard",
                    retryWrites=retry_writes(),
                )
                _clients[key] = c
    return c


def retry_writes() -> bool:
    """Retryable writes (the driver retries a single write once after a network error).

    On by default, as on MongoDB. The local stack turns them off
    (HECHT_MONGO_RETRY_WRITES=0, from ``stack.sh env``): SecantusDB 0.7 scans and sorts
    its table of up to 10,000 retryable-write records on every retryable write, which made
    each write cost it 9-15 ms of CPU after a busy minute instead of under 1 ms. Nothing in
    hecht depends on the retry: transactions retry their commit themselves, and every other
    write is idempotent or answered with a 503 that the client repeats.
    """
    return os.environ.get("HECHT_MONGO_RETRY_WRITES", "1").strip().lower() not in ("0", "false", "no")


def database(uri: str, name: str) -> Database:
    return client(uri)[name]


def close_all() -> None:
    for key in list(_clients):
        if key[0] == os.getpid():
            _clients.pop(key).close()
