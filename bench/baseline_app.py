"""The baseline of the HTTP benchmarks: a bare Flask + pymongo insert endpoint.

What any sign-up must at least cost: parse a JSON body, insert one document, answer
201 with an id. No validation, no auth, no rate limit, no outbox, no problem+json.
Served by gunicorn exactly like the services, so the comparison isolates hecht's own
work::

    MONGO_URI=mongodb://127.0.0.1:27017/bench_baseline \\
        gunicorn -c deploy/gunicorn.conf.py 'bench.baseline_app:create_app()'

The MongoClient is created per process on first use (after gunicorn's fork).
"""
from __future__ import annotations

import os
import uuid

import pymongo
from flask import Flask, jsonify, request

_client: dict[int, pymongo.MongoClient] = {}


def _collection():
    pid = os.getpid()
    if pid not in _client:
        # Retryable writes as hecht has them (HECHT_MONGO_RETRY_WRITES), so both sides pay the same.
        retry = os.environ.get("HECHT_MONGO_RETRY_WRITES", "1").strip().lower() not in ("0", "false", "no")
        _client[pid] = pymongo.MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/bench_baseline"),
                                           retryWrites=retry)
    return _client[pid].get_default_database("bench_baseline")["signups"]


def create_app() -> Flask:
    app = Flask("bench.baseline")

    @app.post("/v1/regions/<region_id>/members")
    def sign_up(region_id: str):
        body = request.get_json()
        doc = {"_id": uuid.uuid4().hex, "region": region_id, "status": "pending", **body}
        _collection().insert_one(doc)
        return jsonify({"id": doc["_id"], "status": "pending"}), 201

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app
