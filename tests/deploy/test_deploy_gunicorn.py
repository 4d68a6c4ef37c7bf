"""deploy/gunicorn.conf.py: settings from the environment, JSON access log."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import runpy
import types

import pytest
from gunicorn.config import KNOWN_SETTINGS, Config

from .deploy_helpers import DEPLOY

CONF = DEPLOY / "gunicorn.conf.py"
ENV_NAMES = ("HECHT_BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT",
             "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_KEEPALIVE", "HECHT_LOG_LEVEL", "GUNICORN_ACCESSLOG",
             "HECHT_LOG_FORMAT")


def _load(monkeypatch, **env):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def _settings(namespace):
    """The module's names that gunicorn reads as settings: its config loader takes
    every top-level name (classes too, e.g. logger_class). Helpers are private,
    modules, or CamelCase classes."""
    return {
        name: value for name, value in namespace.items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and not name[0].isupper()
        and name != "annotations"
    }


def test_defaults(monkeypatch):
    conf = _load(monkeypatch)
    assert conf["bind"] == ["0.0.0.0:8000"]
    assert conf["workers"] == 2
    assert conf["preload_app"] is False  # pymongo is not fork-safe
    assert conf["worker_tmp_dir"] == "/dev/shm"
    # the services log each request themselves (hecht/web.py): no second line from gunicorn
    assert conf["accesslog"] is None and conf["errorlog"] == "-"
    assert conf["loglevel"] == "info"
    assert 0 < conf["graceful_timeout"] < 30 - 5  # fits terminationGracePeriodSeconds minus preStop
    assert conf["timeout"] == 30
    assert conf["logger_class"].__name__ == "JsonLogger"


def test_environment_overrides(monkeypatch):
    conf = _load(monkeypatch, HECHT_BIND="127.0.0.1:8003", WEB_CONCURRENCY="5",
                 GUNICORN_TIMEOUT="60", HECHT_LOG_LEVEL="DEBUG")
    assert conf["bind"] == ["127.0.0.1:8003"]
    assert conf["workers"] == 5
    assert conf["timeout"] == 60
    assert conf["loglevel"] == "debug"


def test_every_setting_is_a_gunicorn_setting(monkeypatch):
    """A misspelt name (say `worker_tmpdir`) would be ignored by gunicorn silently."""
    known = {setting.name for setting in KNOWN_SETTINGS}
    names = set(_settings(_load(monkeypatch)))
    helpers = {"datetime", "json", "logging", "os", "glogging"}
    assert names - known == set()
    assert {"bind", "workers", "worker_tmp_dir", "preload_app", "logger_class", "child_exit"} <= names
    assert not (helpers & names)


def _config(monkeypatch, **env):
    cfg = Config()
    for name, value in _settings(_load(monkeypatch, **env)).items():
        cfg.set(name, value)  # runs gunicorn's own validators
    return cfg


def test_gunicorn_accepts_the_settings(monkeypatch):
    cfg = _config(monkeypatch)
    assert cfg.address == [("0.0.0.0", 8000)]
    assert cfg.workers == 2
    assert cfg.preload_app is False
    assert cfg.worker_tmp_dir == "/dev/shm"


class _Response:
    status = "201 CREATED"
    sent = 42
    headers = [("Content-Type", "application/json")]


class _Request:
    headers = [
        ("USER-AGENT", 'curl "quoted" \\ agent'),
        ("X-REQUEST-ID", "req-123"),
        ("TRACEPARENT", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]


def test_access_log_only_when_asked_for(monkeypatch):
    assert _load(monkeypatch, GUNICORN_ACCESSLOG="-")["accesslog"] == "-"
    assert _load(monkeypatch, GUNICORN_ACCESSLOG=" ")["accesslog"] is None


def test_access_log_is_one_json_object_per_line(monkeypatch):
    cfg = _config(monkeypatch, GUNICORN_ACCESSLOG="-")
    logger = cfg.logger_class(cfg)
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": "/v1/regions?x=1", "PATH_INFO": "/v1/regions",
               "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7"}
    logger.access(_Response(), _Request(), environ, datetime.timedelta(milliseconds=12, microseconds=500))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["method"] == "POST" and entry["path"] == "/v1/regions" and entry["query"] == "x=1"
    assert entry["status"] == 201 and entry["bytes"] == 42
    assert entry["duration_ms"] == 12.5
    assert entry["request_id"] == "req-123"
    assert entry["traceparent"].startswith("00-0af7651916cd43dd")
    assert entry["user_agent"] == 'curl "quoted" \\ agent'
    assert entry["time"].endswith("Z")


def test_error_log_is_json(monkeypatch):
    cfg = _config(monkeypatch, HECHT_ENV="production")
    logger = cfg.logger_class(cfg)
    stream = io.StringIO()
    for handler in logger.error_log.handlers:
        handler.setStream(stream)
    logger.warning("worker %s timed out", 7)
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["level"] == "warning" and entry["message"] == "worker 7 timed out"


@pytest.mark.parametrize("env", [{"HECHT_ENV": "development"}, {"HECHT_ENV": "production", "HECHT_LOG_FORMAT": "text"}])
def test_error_log_is_text_in_development(monkeypatch, env):
    """`make run`: gunicorn's own messages as short lines named after the service, like the services'."""
    cfg = _config(monkeypatch, **env)
    cfg.set("default_proc_name", "services.portal.app:create_app()")
    logger = cfg.logger_class(cfg)
    stream = io.StringIO()
    for handler in logger.error_log.handlers:
        handler.setStream(stream)
    logger.info("Listening at: %s", "http://127.0.0.1:8000")
    logger.warning("worker %s timed out", 7)
    text = stream.getvalue()   # (the gunicorn.error logger may keep other tests' handlers too)
    assert re.search(r"^\d\d:\d\d:\d\d portal +Listening at: http://127\.0\.0\.1:8000$", text, re.M), text
    assert re.search(r"^\d\d:\d\d:\d\d portal +WARNING worker 7 timed out$", text, re.M), text


@pytest.mark.parametrize("value", ["", "  "])
def test_blank_values_fall_back_to_defaults(monkeypatch, value):
    conf = _load(monkeypatch, HECHT_BIND=value, WEB_CONCURRENCY=value)
    assert conf["bind"] == ["0.0.0.0:8000"] and conf["workers"] == 2


def test_multiprocess_metrics_directory_is_created_and_emptied(monkeypatch, tmp_path):
    directory = tmp_path / "prometheus"
    conf = _load(monkeypatch)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    conf["on_starting"](None)
    assert directory.is_dir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "keep.txt").write_text("not ours")
    conf["on_starting"](None)
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


def test_multiprocess_hooks_do_nothing_without_the_variable(monkeypatch, tmp_path):
    conf = _load(monkeypatch)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    conf["on_starting"](None)
    conf["child_exit"](None, types.SimpleNamespace(pid=1))
    assert list(tmp_path.iterdir()) == []
