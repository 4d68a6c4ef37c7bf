"""Request limits of the shared platform (issue 22, items 7 and 12) on all three services:
JSON nested too deeply is a 400 problem before anything parses it, a long URI a 414
problem (from the app, and from gunicorn beyond its own limit), every response carries
``nosniff``, and a service without its production settings does not start."""
from __future__ import annotations

import importlib
import os
import subprocess

import pytest
import requests

from tests.conftest import bearer
from tests.support import fleet as fleet_support

SERVICES = ("members", "agreements", "notify")
REGION = "zuid"
# One JSON-taking POST of each service; members' sign-up needs no token.
POSTS = {
    "members": (f"/v1/regions/{REGION}/members", {}),
    "agreements": (f"/v1/regions/{REGION}/agreements", bearer("platform-admin")),
    "notify": (f"/v1/regions/{REGION}/subscriptions", bearer("platform-admin")),
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=SERVICES)
def service(request, hecht_env):
    app = importlib.import_module(f"services.{request.param}.app").create_app()
    return request.param, app.test_client()


def nested(depth: int) -> bytes:
    """``depth`` arrays inside each other, closed: valid JSON."""
    return b"[" * depth + b"]" * depth


def too_deep(r) -> bool:
    return r.status_code == 400 and r.mimetype == "application/problem+json" \
        and r.get_json()["type"] == "urn:hecht:problem:json-too-deep"


def test_a_hundred_thousand_brackets_are_a_400_problem(service):
    name, client = service
    path, auth = POSTS[name]
    for body in (b"[" * 100_000, b'{"a":' * 50_000, nested(100_000)):
        r = client.post(path, data=body, headers={**JSON, **auth})
        assert too_deep(r), (name, r.status_code, r.get_data(as_text=True)[:300])
        assert r.get_json()["status"] == 400 and "32 levels" in r.get_json()["detail"]
    # The idempotency layer sees the body too: the same answer, nothing stored.
    r = client.post(path, data=b"[" * 100_000, headers={**JSON, **auth, "Idempotency-Key": "deep-1"})
    assert too_deep(r)


def test_depth_just_below_the_cap_is_parsed_just_above_is_refused(service):
    name, client = service
    path, auth = POSTS[name]
    at_cap = client.post(path, data=nested(32), headers={**JSON, **auth})
    assert not too_deep(at_cap) and at_cap.status_code < 500, at_cap.get_data(as_text=True)[:300]
    assert too_deep(client.post(path, data=nested(33), headers={**JSON, **auth}))
    # Brackets inside strings do not count, escaped quotes do not end a string.
    text = b'{"name": "' + b"[" * 1000 + b'\\"' + b"{" * 1000 + b'"}'
    r = client.post(path, data=text, headers={**JSON, **auth})
    assert not too_deep(r) and r.status_code < 500


def test_every_response_is_nosniff(service):
    name, client = service
    for path in ("/docs", "/openapi.json", "/healthz", "/v1/nothing-here", POSTS[name][0]):
        r = client.get(path, headers=bearer("platform-admin"))
        assert r.headers.get("X-Content-Type-Options") == "nosniff", (name, path, r.status_code)
    r = client.post(POSTS[name][0], data=b"[" * 100, headers=JSON)
    assert r.headers.get("X-Content-Type-Options") == "nosniff"


def test_a_long_uri_is_a_414_problem(service):
    name, client = service
    r = client.get("/healthz?pad=" + "a" * 5000)
    assert r.status_code == 414 and r.mimetype == "application/problem+json"
    assert r.get_json()["type"] == "urn:hecht:problem:uri-too-long"
    assert r.headers.get("X-Content-Type-Options") == "nosniff"
    assert client.get("/healthz?pad=" + "a" * 3000).status_code == 200


# -- under gunicorn, as deployed ----------------------------------------------------------------
@pytest.fixture
def served(hecht_env, tmp_path):
    """The three services under gunicorn (deploy/gunicorn.conf.py), without workers."""
    with fleet_support.fleet(hecht_env, tmp_path, portal=False, workers=False) as f:
        yield f


def test_under_gunicorn_long_uris_and_deep_json_are_problems(served):
    for name in SERVICES:
        url = served.urls[name]
        # Over the app's limit (HECHT_MAX_URI_BYTES), under gunicorn's: the app's problem.
        r = requests.get(f"{url}/healthz?pad={'a' * 6000}", timeout=10)
        assert r.status_code == 414 and r.headers["Content-Type"] == "application/problem+json", r.text[:200]
        assert r.json()["type"] == "urn:hecht:problem:uri-too-long" and r.json().get("request_id")
        # Over gunicorn's own limit: gunicorn answers, also as a problem (no HTML page).
        r = requests.get(f"{url}/healthz?pad={'a' * 20000}", timeout=10)
        assert r.status_code == 414, r.text[:200]
        assert r.headers["Content-Type"] == "application/problem+json" and "<html" not in r.text
        assert r.json()["status"] == 414 and r.headers["X-Content-Type-Options"] == "nosniff"
        # A hundred thousand brackets through the real server: a 400 problem, the worker lives.
        path, auth = POSTS[name]
        r = requests.post(url + path, data=b"[" * 100_000, headers={**JSON, **auth}, timeout=10)
        assert r.status_code == 400 and r.json()["type"] == "urn:hecht:problem:json-too-deep", r.text[:300]
        r = requests.get(f"{url}/openapi.json", timeout=10)
        assert r.status_code == 200 and r.headers["X-Content-Type-Options"] == "nosniff"


def test_gunicorn_refuses_to_start_a_service_without_production_settings(hecht_env, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HECHT_ENV", "HECHT_JWT_SECRET", "HECHT_JWT_ISSUER", "HECHT_JWT_AUDIENCE")}
    port = fleet_support.free_port()
    p = fleet_support.gunicorn("members", port, env, tmp_path).start()
    try:
        p.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.stop()
        pytest.fail("gunicorn kept running without HECHT_JWT_SECRET")
    assert p.proc.returncode != 0
    log = (tmp_path / "members.log").read_text()
    assert "refusing to start in production" in log and "HECHT_JWT_SECRET is not set" in log
