"""One log line per request (issue 28 item 12): a service under gunicorn, configured as
deploy/gunicorn.conf.py configures it, writes exactly one line for a request, a short text
line with HECHT_ENV=development (``make run``) and a JSON object otherwise (log shippers)."""
from __future__ import annotations

import json
import re
import secrets
import time

import pytest
import requests

from tests.conftest import wait_until
from tests.support.fleet import answers, free_port, gunicorn

PRODUCTION = {"HECHT_ENV": "production", "HECHT_JWT_SECRET": secrets.token_hex(32),
              "HECHT_JWT_ISSUER": "https://issuer.test", "HECHT_JWT_AUDIENCE": "hecht-test"}


def _lines_for(log, needle: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if needle in line]


@pytest.mark.parametrize("mode", ["development", "production"])
def test_one_log_line_per_request_under_gunicorn(hecht_env, tmp_path, mode):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HECHT_LOG_", "GUNICORN_"))}
    env.update({"WEB_CONCURRENCY": "1", "PYTHONUNBUFFERED": "1", "HECHT_LOG_LEVEL": "INFO", "NO_COLOR": "1"})
    env.update(PRODUCTION if mode == "production" else {"HECHT_ENV": "development"})
    port = free_port()
    proc = gunicorn("members", port, env, tmp_path).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(url) or not proc.alive(), timeout=60)
        assert proc.alive(), proc.tail()
        rid = secrets.token_hex(16)
        path = f"/v1/no-such-thing-{secrets.token_hex(4)}"
        r = requests.get(url + path, headers={"X-Request-Id": rid}, timeout=10)
        assert r.status_code == 404 and r.headers["X-Request-Id"] == rid
        wait_until(lambda: _lines_for(proc.log, path), timeout=10)
        time.sleep(1.0)   # gunicorn writes its access line after the response: give a second one time
        lines = _lines_for(proc.log, path)
        assert len(lines) == 1, proc.tail()
        line = lines[0]
        if mode == "development":
            assert re.fullmatch(rf"\d\d:\d\d:\d\d members +GET {re.escape(path)} 404 \d+(\.\d)?ms "
                                rf"req={rid[:8]}", line), line
            # gunicorn's own messages are text lines too, none of the log is JSON
            assert not [x for x in proc.log.read_text().splitlines() if x.startswith("{")], proc.tail()
            assert re.search(r"^\d\d:\d\d:\d\d members +Listening at", proc.log.read_text(), re.M), proc.tail()
        else:
            entry = json.loads(line)
            assert entry["message"] == "request" and entry["method"] == "GET" and entry["path"] == path
            assert entry["status"] == 404 and isinstance(entry["ms"], (int, float))
            assert entry["request_id"] == rid and re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"])
            assert entry["client"] == "127.0.0.1" and entry["service"] == "members"
            # every line is JSON: the services' and gunicorn's own
            for x in proc.log.read_text().splitlines():
                json.loads(x)
    finally:
        proc.stop()
