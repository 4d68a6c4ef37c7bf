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
                )
                _clients[key] = c
    return c


def database(uri: str, name: str) -> Database:
    return client(uri)[name]


def close_all() -> None:
    for key in list(_clients):
        if key[0] == os.getpid():
            _clients.pop(key).close()
