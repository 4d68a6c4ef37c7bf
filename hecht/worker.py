"""Runs a service's background components (relay, consumers, schedulers) as threads.

Each service's ``worker.py`` exposes ``components(settings, db)`` returning
``(name, run)`` pairs, where ``run(stop_event)`` loops until the event is set.
SIGTERM / SIGINT set it; the process exits once every component has stopped.
"""
from __future__ import annotations

import importlib
import logging
import signal
import threading
from typing import Callable

from prometheus_client import start_http_server

from . import logs, mongo
from .config import settings as load_settings
from .kafka import ensure_topics
from .web import ensure_platform_indexes

log = logging.getLogger(__name__)

Component = tuple[str, Callable[[threading.Event], None]]


def run(service: str, *, stop: threading.Event | None = None, metrics: bool = True) -> None:
    settings = load_settings(service)
    logs.setup(f"{service}-worker", settings.log_level)
    module = importlib.import_module(f"services.{service}.worker")
    db = mongo.database(settings.mongo_uri, settings.database_name)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    if metrics and settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1" if _local(settings) else "0.0.0.0")
    _retry_until(stop, "topics", lambda: ensure_topics(settings))
    _retry_until(stop, "indexes", lambda: (ensure_platform_indexes(db), module.ensure_indexes(db)))
    # Expired idempotency records, rate-limit windows and inbox entries go by TTL indexes.
    components = list(module.components(settings, db))
    threads = [threading.Thread(target=fn, args=(stop,), name=name, daemon=True) for name, fn in components]
    for t in threads:
        t.start()
    log.info("worker running", extra={"service": service, "components": [n for n, _ in components]})
    while not stop.wait(1.0):
        dead = [t.name for t in threads if not t.is_alive()]
        if dead:
            log.error("a worker component died; stopping so the supervisor restarts us",
                      extra={"components": dead})
            stop.set()
    for t in threads:
        t.join(timeout=30)
    mongo.close_all()
    log.info("worker stopped", extra={"service": service})


def _local(settings) -> bool:
    return "127.0.0.1" in settings.kafka_bootstrap_servers or "localhost" in settings.kafka_bootstrap_servers


def _retry_until(stop: threading.Event, what: str, fn: Callable[[], object]) -> None:
    """Start-up work that needs Kafka or Mongo: wait for them instead of crashing."""
    delay = 0.5
    while not stop.is_set():
        try:
            fn()
            return
        except Exception as e:  # noqa: BLE001
            log.warning(f"waiting for dependencies ({what})", extra={"error": repr(e), "retry_in_s": delay})
            stop.wait(delay)
            delay = min(delay * 2, 10)
