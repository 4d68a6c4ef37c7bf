"""Logs with the request id and trace id on every record.

Production (``HECHT_ENV`` unset or anything but development): one JSON object per line, for
log shippers. Development (``make run``, the tests): one short text line per record, e.g.
``12:03:04 portal     GET /r/elz/membership 200 12ms``, coloured on a terminal (or with
``HECHT_LOG_COLOR=1``; ``NO_COLOR`` turns colour off). ``HECHT_LOG_FORMAT=json|text``
overrides the choice.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import secrets
import sys
import time
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


def text_format(env=None) -> bool:
    """Human-readable lines: ``HECHT_LOG_FORMAT=text``, or development unless ``HECHT_LOG_FORMAT=json``."""
    from .config import is_development
    env = os.environ if env is None else env
    chosen = env.get("HECHT_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen == "text"
    return is_development(env)


def colour_wanted(stream, env=None) -> bool:
    """ANSI colours: ``HECHT_LOG_COLOR=1`` (``make run`` sets it on a terminal), else when
    ``stream`` is a terminal; ``NO_COLOR`` or ``HECHT_LOG_COLOR=0`` turn them off."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR"):
        return False
    forced = env.get("HECHT_LOG_COLOR", "").strip().lower()
    if forced in ("1", "true", "yes", "always"):
        return True
    if forced in ("0", "false", "no", "never"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# What a LogRecord carries by itself: everything else on it came from ``extra=``.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "service", "request_id", "trace_id", "color_message", "taskName"}
_SERVICE_COLOURS = {"portal": "36", "members": "32", "agreements": "35", "notify": "34"}
_LEVEL_COLOURS = {"WARNING": "33", "ERROR": "31", "CRITICAL": "31;1", "DEBUG": "2"}


def _paint(text: str, code: str | None, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour and code else text


class TextFormatter(logging.Formatter):
    """One short line per record for a developer's terminal.

    A request (``web._finish``): ``12:03:04 portal     GET /path 200 12ms`` (the client too when
    it is not this machine). Any other record: time, service, the level unless INFO, the
    message and its ``extra`` fields as ``key=value``; a traceback follows on its own lines.
    """

    def __init__(self, service: str, colour: bool = False):
        super().__init__()
        self.service = service
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        c = self.colour
        service = getattr(record, "service", None) or self.service
        head = (_paint(time.strftime("%H:%M:%S", time.localtime(record.created)), "2", c) + " "
                + _paint(f"{service:<10}", _SERVICE_COLOURS.get(service.split("-")[0]), c))
        extra = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS and not k.startswith("_")}
        message = record.getMessage()
        if message == "request" and {"method", "path", "status"} <= extra.keys():
            status = extra.pop("status")
            code = {2: "32", 3: "36", 4: "33", 5: "31"}.get(int(status) // 100 if str(status).isdigit() else 0)
            line = f"{head} {extra.pop('method')} {extra.pop('path')} {_paint(str(status), code, c)}"
            ms = extra.pop("ms", None)
            if isinstance(ms, (int, float)):
                line += f" {ms:.0f}ms" if ms >= 10 else f" {ms:.1f}ms"
            client = extra.pop("client", None)
            if client and client not in ("127.0.0.1", "::1"):
                line += f" from {client}"
            rid = getattr(record, "request_id", None)
            extra = {k: v for k, v in extra.items() if v is not None}
            if rid:   # enough of it to find the request's other lines
                extra["req"] = rid[:8]
        else:
            level = "" if record.levelname == "INFO" else _paint(record.levelname, _LEVEL_COLOURS.get(
                record.levelname), c) + " "
            line = f"{head} {level}{message}"
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def setup(service: str, level: str = "INFO") -> None:
    """Idempotent: gunicorn workers and tests may call it more than once."""
    root = logging.getLogger()
    if getattr(root, "_hecht_configured", None) == service:
        return
    handler = logging.StreamHandler(sys.stderr)
    if text_format():
        handler.setFormatter(TextFormatter(service, colour=colour_wanted(sys.stderr)))
    else:
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
