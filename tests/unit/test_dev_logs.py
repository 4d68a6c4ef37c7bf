"""`make run`'s terminal (issue 28 item 12): short text log lines in development, JSON
otherwise, for the services and the workers alike (hecht/logs.py), and the closing summary
(hecht/devsummary.py) printed only after every service is ready and the demo is seeded."""
from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hecht import devsummary, logs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, getattr(root, "_hecht_configured", None)
    yield
    root.handlers[:], level, configured = saved
    root.setLevel(level)
    root._hecht_configured = configured


def _log_with(monkeypatch, service: str, **env) -> str:
    for name in ("HECHT_ENV", "HECHT_LOG_FORMAT", "HECHT_LOG_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logging.getLogger()._hecht_configured = None
    logs.setup(service)
    token = logs.request_id.set("3f2a9c1b77aa4d0e")
    try:
        logging.getLogger("hecht.web").info("request", extra={"method": "GET", "path": "/r/elz/membership",
                                                               "status": 200, "ms": 12.3, "client": "127.0.0.1"})
    finally:
        logs.request_id.reset(token)
    logging.getLogger("hecht.worker").warning("a component died", extra={"components": ["relay"]})
    return err.getvalue()


@pytest.mark.parametrize("service", ["portal", "members-worker"])
def test_development_logs_are_short_text_lines(monkeypatch, root_logging, service):
    request, warning = _log_with(monkeypatch, service, HECHT_ENV="development").splitlines()
    assert re.fullmatch(rf"\d\d:\d\d:\d\d {service} +GET /r/elz/membership 200 12ms req=3f2a9c1b", request)
    assert re.fullmatch(rf"\d\d:\d\d:\d\d {service} +WARNING a component died components=\['relay'\]", warning)
    assert "\033[" not in request   # not a terminal, not asked for colour


@pytest.mark.parametrize("env", [{}, {"HECHT_ENV": "production"}, {"HECHT_ENV": "development", "HECHT_LOG_FORMAT": "json"}])
def test_production_logs_are_json_as_before(monkeypatch, root_logging, env):
    request, warning = (json.loads(x) for x in _log_with(monkeypatch, "notify-worker", **env).splitlines())
    assert {k: request[k] for k in ("level", "logger", "message", "service", "request_id", "method", "path",
                                   "status", "ms", "client")} == {
        "level": "INFO", "logger": "hecht.web", "message": "request", "service": "notify-worker",
        "request_id": "3f2a9c1b77aa4d0e", "method": "GET", "path": "/r/elz/membership", "status": 200,
        "ms": 12.3, "client": "127.0.0.1"}
    assert "trace_id" in request and "time" in request
    assert warning["level"] == "WARNING" and warning["components"] == ["relay"]


def test_colour_when_asked_and_never_with_no_color(monkeypatch, root_logging):
    coloured = _log_with(monkeypatch, "portal", HECHT_ENV="development", HECHT_LOG_COLOR="1")
    assert "\033[32m200\033[0m" in coloured
    assert "\033[" not in _log_with(monkeypatch, "portal", HECHT_ENV="development", HECHT_LOG_COLOR="1",
                                    NO_COLOR="1")


def test_a_remote_client_and_a_traceback_are_shown():
    record = logging.LogRecord("hecht.web", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update(method="POST", path="/x", status=503, ms=1.26, client="10.0.0.7", request_id=None)
    assert re.fullmatch(r"\S+ agreements +POST /x 503 1\.3ms from 10\.0\.0\.7",
                        logs.TextFormatter("agreements").format(record))
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("hecht.web", logging.ERROR, __file__, 1, "unhandled error", (), sys.exc_info())
    text = logs.TextFormatter("agreements").format(failed)
    assert text.splitlines()[0].endswith("agreements ERROR unhandled error") and "ValueError: boom" in text


# -- the summary printed last ------------------------------------------------------------------

class _Stub:
    """Four services' /readyz: 503 until ``ready`` is set; each 200 is recorded in ``events``."""

    def __init__(self, events: list):
        self.events, self.ready = events, threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):   # noqa: N802
                ok = stub.ready.is_set() and self.path == "/readyz"
                if ok:
                    stub.events.append(("ready", self.server.server_port))
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(4)]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.urls = {name: f"http://127.0.0.1:{s.server_port}"
                     for name, s in zip(("portal", "agreements", "members", "notify"), self.servers)}

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


class _Out(io.StringIO):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def write(self, text):
        self.events.append(("print", text))
        return super().write(text)


def test_summary_comes_after_readiness_and_the_demo():
    events: list = []
    stub = _Stub(events)
    out = _Out(events)
    try:
        def seed(urls):
            events.append(("seed", None))
            return "demo: 3 change(s)\n  person  status\n  An Peeters  active  an.peeters@demo.hecht.local"

        threading.Timer(1.2, stub.ready.set).start()   # the services come up a little later
        rc = devsummary.run(stub.urls, wait=30, seed=seed, out=out, token=lambda: "TOKEN", stack="Kafka k")
    finally:
        stub.close()
    assert rc == 0
    kinds = [k for k, _ in events]
    assert kinds.count("seed") == 1 and "print" in kinds
    first_print, seeded = kinds.index("print"), kinds.index("seed")
    readies = {port for k, port in events[:seeded] if k == "ready"}
    assert len(readies) == 4, events       # every service answered /readyz before the demo ran
    assert seeded < first_print            # and the demo was seeded before anything was printed
    text = out.getvalue()
    assert all(url in text for url in stub.urls.values()) and "TOKEN" in text and "Kafka k" in text
    # the demo table is the last thing before the closing rule
    tail = text.rstrip().splitlines()
    assert "an.peeters@demo.hecht.local" in tail[-3] and tail[-2] == devsummary.RULE


def test_no_summary_while_waiting_and_none_once_run_sh_is_gone():
    events: list = []
    stub = _Stub(events)   # never ready
    out = _Out(events)
    alive = iter([True] * 3 + [False] * 100)
    try:
        rc = devsummary.run(stub.urls, wait=30, seed=lambda urls: "x", out=out, token=lambda: "T",
                            alive=lambda: next(alive))
    finally:
        stub.close()
    assert rc == 1 and out.getvalue() == ""


def test_run_sh_prints_no_urls_itself_and_starts_the_summary_next_to_honcho():
    """The URLs and the demo table come from `hecht dev-summary` (after readiness), not from a
    message run.sh prints before the services' start-up lines."""
    script = (REPO / "scripts" / "run.sh").read_text(encoding="utf-8")
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    printing = [line for line in code if re.search(r"\b(echo|printf|cat)\b", line)]
    assert printing and not [line for line in printing if re.search(r":800[0-3]|<<|hecht token", line)], printing
    assert not [line for line in code if re.search(r"hecht demo\b", line) and "echo" not in line]
    summary = next(i for i, line in enumerate(code) if re.search(r"hecht dev-summary .*&\s*$", line))
    honcho = next(i for i, line in enumerate(code) if "honcho" in line and "start" in line)
    assert summary < honcho and "--no-prefix" in code[honcho]
