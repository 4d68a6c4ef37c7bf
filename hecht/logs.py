"""JSON logs, one object per line, with the request id and trace id on every line."""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets
import sys
from typing import Iterator

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)


TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def child_traceparent(traceparent: str | None) -> str | None:
    """The same trace with a new span id (W3C trace context), for the next hop; None if invalid."""
    m = TRACEPARENT.match(traceparent or "")
    return f"00-{m.group(1)}-{secrets.token_hex(8)}-{m.group(3)}" if m else None


@contextlib.contextmanager
def continued_trace(traceparent: str | None) -> Iterator[str | None]:
    """Log under the trace id of ``traceparent`` (an event's, a delivery's) while the block runs,
    so one trace id links the HTTP request, the Kafka hop and the webhook delivery."""
    m = TRACEPARENT.match(traceparent or "")
    token = trace_id.set(m.group(1) if m else None)
    try:
        yield m.group(1) if m else None
    finally:
        trace_id.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id.get()
        record.trace_id = trace_id.get()
        return True


def setup(service: str, level: str = "INFO") -> None:
    """Idempotent: gunicorn workers and tests may call it more than once."""
    root = logging.getLogger()
    if getattr(root, "_hecht_configured", None) == service:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s %(trace_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(_ContextFilter(service))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Kafka client logs every reconnect attempt at INFO/WARNING; keep ours readable.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    logging.getLogger("pymongo").setLevel(logging.WARNING)
    root._hecht_configured = service  # type: ignore[attr-defined]
