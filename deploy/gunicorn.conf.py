"""gunicorn settings for the hecht web processes (all three services).

Used as ``gunicorn -c deploy/gunicorn.conf.py 'services.<name>.app:create_app()'``
in the image, in docker-compose and in Kubernetes. Everything that differs
between deployments comes from the environment:

``HECHT_BIND``            address to listen on (default ``0.0.0.0:8000``)
``WEB_CONCURRENCY``       worker processes (default 2; size by CPU request)
``GUNICORN_THREADS``      threads per worker (default 1: the sync worker)
``GUNICORN_TIMEOUT``      seconds a request may take before its worker is
                          killed and replaced (default 30)
``GUNICORN_KEEPALIVE``    seconds to keep an idle connection (default 5; keep
                          it above the load balancer's idle timeout if that
                          one is longer)
``HECHT_LOG_LEVEL``       log level of gunicorn's own messages (default info)
``GUNICORN_ACCESSLOG``    gunicorn's access log (default off: the services log
                          every request themselves, hecht/web.py); ``-`` writes
                          it to stdout as JSON lines as well
``GUNICORN_LIMIT_REQUEST_LINE``  longest request line gunicorn reads (default
                          8190, its maximum); the services answer longer URIs
                          than ``HECHT_MAX_URI_BYTES`` (4096) themselves
``PROMETHEUS_MULTIPROC_DIR``  when set, prometheus_client's multiprocess mode:
                          the directory is emptied at start (see on_starting)

Why these choices:

- No ``preload_app``: pymongo is not fork-safe, so every worker creates its
  own ``MongoClient`` after the fork (``create_app()`` runs in the worker).
- ``worker_tmp_dir = /dev/shm``: the heartbeat file lives in memory, so a slow
  or read-only disk (``readOnlyRootFilesystem``) cannot stall the workers.
- One log line per request: the service's own (hecht/web.py: method, path,
  status, duration, client, request id and trace id), so gunicorn's access log
  is off unless ``GUNICORN_ACCESSLOG`` asks for it (then one JSON object per
  line on stdout). gunicorn's error log goes to stderr as JSON, or as short
  text lines with ``HECHT_ENV=development`` like the services' logs
  (hecht/logs.py; ``HECHT_LOG_FORMAT=json|text`` overrides).
- ``max_requests`` with jitter recycles workers now and then, which bounds
  slow memory growth without restarting them all at once.
- Requests gunicorn itself refuses (a request line or headers too long, a
  malformed request line) are answered as RFC 9457 problems
  (``application/problem+json``, ``nosniff``) like every error of the
  services, instead of gunicorn's HTML page (``_write_problem``). The services
  refuse URIs over ``HECHT_MAX_URI_BYTES`` themselves; gunicorn's
  ``limit_request_line`` above that is the hard backstop.
"""

import datetime
import json
import logging
import os
import re

from gunicorn import glogging, util as _gunicorn_util


def _int_env(name, default):
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


bind = [os.environ.get("HECHT_BIND", "").strip() or "0.0.0.0:8000"]
workers = _int_env("WEB_CONCURRENCY", 2)
threads = _int_env("GUNICORN_THREADS", 1)
timeout = _int_env("GUNICORN_TIMEOUT", 30)
# Less than Kubernetes' terminationGracePeriodSeconds (30) minus the preStop
# pause (5), so in-flight requests finish before the pod is killed.
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)
max_requests = _int_env("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int_env("GUNICORN_MAX_REQUESTS_JITTER", 200)

preload_app = False
worker_tmp_dir = "/dev/shm"
# The control socket (gunicorn >= 25.1) would be created under $HOME; the
# containers run with a read-only root file system and need no runtime control.
control_socket_disable = True

# gunicorn's maximum (8190): above the services' own HECHT_MAX_URI_BYTES (hecht/web.py), so
# they answer a long URI with their 414 problem; longer lines meet _write_problem below.
limit_request_line = _int_env("GUNICORN_LIMIT_REQUEST_LINE", 8190)

loglevel = os.environ.get("HECHT_LOG_LEVEL", "info").strip().lower() or "info"
# The services log each request (hecht/web.py): gunicorn's access log would print it twice.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "").strip() or None
errorlog = "-"


def _text_logs():
    """Short text lines for gunicorn's own messages, as hecht/logs.py decides for the services."""
    chosen = os.environ.get("HECHT_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen == "text"
    return os.environ.get("HECHT_ENV", "").strip().lower() in ("development", "dev", "test")


def _timestamp(seconds=None):
    moment = datetime.datetime.fromtimestamp(
        seconds if seconds is not None else datetime.datetime.now().timestamp(),
        tz=datetime.timezone.utc,
    )
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; used for gunicorn's error log."""

    def format(self, record):
        entry = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS <service>  message`` (development); the service is read from the app's module."""

    def __init__(self, service):
        super().__init__()
        self.service = service

    def format(self, record):
        level = "" if record.levelname == "INFO" else record.levelname + " "
        line = "%s %-10s %s%s" % (datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S"),
                                  self.service, level, record.getMessage())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _service_name(cfg):
    """``portal`` for ``services.portal.app:create_app()``; else gunicorn's process name."""
    match = re.search(r"services\.(\w+)\.", str(getattr(cfg, "default_proc_name", "") or ""))
    return match.group(1) if match else "gunicorn"


class JsonLogger(glogging.Logger):
    """gunicorn logger writing the access log as JSON lines on stdout.

    The access record carries the request id and the W3C trace context, so a
    request can be followed from the access log into the application's logs.
    Values are encoded with ``json.dumps``: quotes, backslashes and control
    characters in paths or headers cannot break the line.
    """

    def setup(self, cfg):
        super().setup(cfg)
        errors = TextFormatter(_service_name(cfg)) if _text_logs() else JsonFormatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(errors)
        for handler in self.access_log.handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))

    def access_entry(self, resp, req, environ, request_time):
        """The access record as a dict (separate from ``access`` for tests)."""
        atoms = self.atoms(resp, req, environ, request_time)

        def header(name):
            value = atoms.get("{%s}i" % name)
            return value if value not in (None, "", "-") else None

        status = atoms.get("s")
        try:
            status = int(status)
        except (TypeError, ValueError):
            pass
        return {
            "time": _timestamp(),
            "level": "info",
            "logger": "gunicorn.access",
            "method": atoms.get("m"),
            "path": atoms.get("U"),
            "query": atoms.get("q") or None,
            "status": status,
            "bytes": atoms.get("B"),
            "duration_ms": round(
                request_time.seconds * 1000 + request_time.microseconds / 1000, 3
            ),
            "remote_addr": atoms.get("h"),
            "user_agent": header("user-agent"),
            "request_id": header("x-request-id"),
            "traceparent": header("traceparent"),
            "pid": os.getpid(),
        }

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        try:
            entry = self.access_entry(resp, req, environ, request_time)
            self.access_log.info(json.dumps(entry, ensure_ascii=False, default=str))
        except Exception:  # a log line must never fail a request
            self.exception("could not write the access log entry")


logger_class = JsonLogger


def _write_problem(sock, status_int, reason, mesg):
    """gunicorn's error answer (``gunicorn.util.write_error``) as an RFC 9457 problem.

    Used for the requests gunicorn refuses before any application sees them: 414 for a
    request line over ``limit_request_line``, 431 for headers, 400 for a malformed request.
    The detail is gunicorn's own message (it may quote the request: JSON-encoded here).
    """
    body = {"type": "about:blank", "title": reason, "status": status_int}
    if mesg:
        body["detail"] = str(mesg)[:200]
    payload = json.dumps(body).encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/problem+json\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n")
    _gunicorn_util.write_nonblock(sock, head.encode("latin-1") + payload)


# The workers call gunicorn.util.write_error by module attribute: the problem writer replaces it.
_gunicorn_util.write_error = _write_problem


def on_starting(server):
    """Start prometheus_client's multiprocess mode with an empty directory.

    Only when ``PROMETHEUS_MULTIPROC_DIR`` is set (the deployments set it for
    the web containers, so that /metrics sums all gunicorn workers). Files
    left by an earlier run (a restarted container keeps its emptyDir) would
    count dead processes, so they are removed; the directory is created if
    missing.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    """Drop a dead worker's live gauges when prometheus_client's multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
