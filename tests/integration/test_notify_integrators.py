"""Integrator applications (issue 15) against the real stack: invitation e-mail, lifecycle,
portal sign-in, OAuth 2.0 client credentials, event-type limits, the ownership matrix of two
integrators of one region over every subscription endpoint, ed25519 (v1a) signatures, the
circuit breaker, the per-subscription rate limit and the event catalogue."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

import jsonschema
import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

from hecht import events as ev
from hecht.config import settings
from tests.conftest import bearer, wait_until
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    REGION, agreement_event, consume, fast, mails_to, notify_client, notify_db, notify_worker, receiver,
    signed_event, unique_address, vote_cast_event)

ADMIN = bearer("region-admin", REGION)
APPS = f"/v1/regions/{REGION}/integrators"
SUBS = f"/v1/regions/{REGION}/subscriptions"


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json", r.mimetype
    return r.json


def invite(client, event_types=("agreement.*",), email: str | None = None, name: str = "AZ Sint-Jan") -> dict:
    r = client.post(APPS, json={"name": name, "contact_email": email or unique_address("int"),
                                "event_types": list(event_types)}, headers=ADMIN)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.json


def as_app(app_id: str, region: str = REGION) -> dict:
    """The token the token endpoint would issue (same claims), for the API tests."""
    return bearer("integrator", region, sub=app_id)


def active_app(client, **kw) -> dict:
    app = invite(client, **kw)
    r = client.patch(f"{APPS}/{app['id']}", json={"status": "active"}, headers=ADMIN)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def token_for(client, client_id: str, secret: str, how: str = "basic"):
    if how == "basic":
        auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers={"Authorization": f"Basic {auth}"})
    return client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                              "client_secret": secret})


def subscribe_as(client, headers, url: str, event_types=("agreement.*",), **extra) -> dict:
    r = client.post(SUBS, json={"url": url, "event_types": list(event_types), **extra}, headers=headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.json


# -- applications -------------------------------------------------------------------------------
def test_an_invitation_is_an_application_and_an_email_to_its_contact(notify_client, notify_worker, monkeypatch):
    email = unique_address("int")
    app = invite(notify_client, ["agreement.*", "member.enrolled"], email=email)
    assert app["id"].startswith("int_") and app["status"] == "invited" and app["activated_at"] is None
    assert app["region"] == REGION and app["secrets"] == [] and app["event_types"] == ["agreement.*", "member.enrolled"]
    ntf = notify_db().notifications.find_one({"integrator_id": app["id"]})
    assert ntf["template"] == "integrator_invited" and ntf["to"] == email and ntf["status"] == "queued"
    notify_worker("mailer")
    [msg] = wait_until(lambda: mails_to(email), timeout=30, message="the invitation")
    text = msg.get_body(("plain",)).get_content()
    assert f"{settings('notify').portal_url}/integrations/{REGION}" in text and "AZ Sint-Jan" in text
    done = wait_until(lambda: notify_db().notifications.find_one({"_id": ntf["_id"], "status": "sent"}),
                      message="marked sent")
    assert done["member_id"] is None
    # nothing about members was emitted for it (notification.* events are about members)
    assert notify_db().outbox.count_documents({"subject": ntf["_id"]}) == 0
    # bad input: problems, never a 500
    problem(notify_client.post(APPS, json={"name": "", "contact_email": "nope", "event_types": []},
                               headers=ADMIN), 422)
    problem(notify_client.post(APPS, json={"name": "x", "contact_email": email, "event_types": ["agrement.*"]},
                               headers=ADMIN), 422)


def test_lifecycle_sign_in_suspend_delete(notify_client):
    email = unique_address("Int")
    app = invite(notify_client, email=email)
    other = invite(notify_client)
    url = f"{APPS}/{app['id']}"
    # the portal reports a sign-in: case-insensitive, invited → active
    r = notify_client.post("/v1/integrator-sign-ins", json={"email": email.upper()}, headers=bearer("portal"))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.json["integrators"] == [{"id": app["id"], "region": REGION, "name": "AZ Sint-Jan", "status": "active"}]
    assert notify_client.get(url, headers=ADMIN).json["activated_at"] is not None
    problem(notify_client.post("/v1/integrator-sign-ins", json={"email": email}, headers=ADMIN), 403)
    # an application reads itself, not another
    assert notify_client.get(url, headers=as_app(app["id"])).status_code == 200
    problem(notify_client.get(f"{APPS}/{other['id']}", headers=as_app(app["id"])), 404)
    problem(notify_client.get(APPS, headers=as_app(app["id"])), 403)
    # list and filter
    listed = notify_client.get(f"{APPS}?status=active", headers=ADMIN).json["items"]
    assert [a["id"] for a in listed] == [app["id"]]
    # If-Match honoured; suspend
    etag = notify_client.get(url, headers=ADMIN).headers["ETag"]
    problem(notify_client.patch(url, json={"status": "suspended"}, headers=dict(ADMIN, **{"If-Match": '"99"'})), 412)
    r = notify_client.patch(url, json={"status": "suspended", "name": "AZ 2"}, headers=dict(ADMIN, **{"If-Match": etag}))
    assert r.status_code == 200 and r.json["status"] == "suspended" and r.json["name"] == "AZ 2"
    problem(notify_client.get(url, headers=as_app(app["id"])), 401)  # its tokens stop working at once
    problem(notify_client.patch(url, json={"status": "deleted"}, headers=ADMIN), 422)
    # a suspended application does not sign in
    assert notify_client.post("/v1/integrator-sign-ins", json={"email": email},
                              headers=bearer("portal")).json["integrators"] == []
    # delete: kept for audit, secrets revoked, subscriptions disabled
    notify_client.patch(url, json={"status": "active"}, headers=ADMIN)
    secret = notify_client.post(f"{url}/secrets", headers=ADMIN).json
    sub = subscribe_as(notify_client, as_app(app["id"]), "http://127.0.0.1:9/hook")
    assert notify_client.delete(url, headers=ADMIN).status_code == 204
    assert [a["id"] for a in notify_client.get(APPS, headers=ADMIN).json["items"]] == [other["id"]]
    gone = notify_client.get(f"{APPS}?status=deleted", headers=ADMIN).json["items"]
    assert [a["id"] for a in gone] == [app["id"]] and gone[0]["secrets"] == []
    s = notify_client.get(f"{SUBS}/{sub['id']}", headers=ADMIN).json
    assert s["enabled"] is False and "deleted" in s["disabled_reason"]
    [disabled] = [e for e in notify_db().outbox.find({"subject": sub["id"]}) if e["type"].endswith("disabled.v1")]
    assert "deleted" in disabled["data"]["reason"]
    problem(token_for(notify_client, app["id"], secret["client_secret"]), 401)
    problem(notify_client.delete(url, headers=ADMIN), 404)


# -- OAuth 2.0 client credentials -----------------------------------------------------------
def test_client_credentials_flow(notify_client):
    app = active_app(notify_client)
    url = f"{APPS}/{app['id']}"
    first = notify_client.post(f"{url}/secrets", headers=ADMIN)
    assert first.status_code == 201, first.get_data(as_text=True)
    first = first.json
    assert first["client_id"] == app["id"] and first["hint"] == first["client_secret"][-4:]
    stored = notify_db().integrators.find_one({"_id": app["id"]})
    assert first["client_secret"] not in json.dumps(stored, default=str)  # stored hashed only
    # a token, by Basic and by form post
    for how in ("basic", "post"):
        r = token_for(notify_client, app["id"], first["client_secret"], how)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.json["token_type"] == "Bearer" and r.json["expires_in"] == 300
    claims = jwt.decode(r.json["access_token"], options={"verify_signature": False})
    assert claims["sub"] == app["id"] and claims["roles"] == ["integrator"] and claims["region"] == REGION
    assert claims["exp"] - claims["iat"] == 300
    tok = {"Authorization": f"Bearer {r.json['access_token']}"}
    assert notify_client.get(url, headers=tok).status_code == 200
    assert notify_client.get(url, headers=ADMIN).json["secrets"][0]["last_used_at"] is not None
    # wrong secret, unknown client, wrong grant
    body = problem(token_for(notify_client, app["id"], "hcs_wrong"), 401)
    assert body["error"] == "invalid_client" and body["error_description"] is not None and body["status"] == 401
    problem(token_for(notify_client, "int_nope", first["client_secret"]), 401)
    bad_grant = notify_client.post("/oauth/token", data={"grant_type": "password", "client_id": app["id"],
                                                          "client_secret": first["client_secret"]})
    assert bad_grant.status_code == 400 and bad_grant.json["error"] == "unsupported_grant_type"
    # rotation: a second secret works alongside; a third is refused; the revoked one stops
    second = notify_client.post(f"{url}/secrets", headers=tok).json  # the application itself may too
    assert token_for(notify_client, app["id"], second["client_secret"]).status_code == 200
    assert problem(notify_client.post(f"{url}/secrets", headers=ADMIN), 409)["active_secrets"]
    listed = notify_client.get(f"{url}/secrets", headers=tok).json["items"]
    assert {s["id"] for s in listed} == {first["id"], second["id"]} and "client_secret" not in str(listed)
    assert notify_client.delete(f"{url}/secrets/{first['id']}", headers=tok).status_code == 204
    problem(token_for(notify_client, app["id"], first["client_secret"]), 401)
    assert token_for(notify_client, app["id"], second["client_secret"]).status_code == 200
    problem(notify_client.delete(f"{url}/secrets/{first['id']}", headers=ADMIN), 404)
    # suspended: no new token, and the one it holds is refused by notify at once
    notify_client.patch(url, json={"status": "suspended"}, headers=ADMIN)
    assert problem(token_for(notify_client, app["id"], second["client_secret"]), 401)["error"] == "invalid_client"
    problem(notify_client.get(url, headers=tok), 401)
    notify_client.patch(url, json={"status": "active"}, headers=ADMIN)
    assert notify_client.get(url, headers=tok).status_code == 200


def test_failed_token_attempts_are_limited_per_client_id_across_workers(fast, monkeypatch):
    """Issue 22 (12): past the limit of failed attempts, even the right secret gets 429 with
    Retry-After until the window ends; the count is in the database, so two app instances
    (two gunicorn workers) share it, and it is per client id."""
    from services.notify.app import create_app
    monkeypatch.setenv("HECHT_OAUTH_FAILURE_LIMIT", "3")
    monkeypatch.setenv("HECHT_OAUTH_FAILURE_WINDOW_S", "3")
    one, two = create_app().test_client(), create_app().test_client()
    app, other = active_app(one), active_app(one)
    secret = one.post(f"{APPS}/{app['id']}/secrets", headers=ADMIN).json["client_secret"]
    other_secret = one.post(f"{APPS}/{other['id']}/secrets", headers=ADMIN).json["client_secret"]
    for _ in range(4):  # successes do not count against the limit
        assert token_for(one, app["id"], secret).status_code == 200
    for client in (one, two, one):
        assert problem(token_for(client, app["id"], "hcs_wrong", "post"), 401)["error"] == "invalid_client"
    for how, client, guess in (("basic", two, "hcs_wrong"), ("post", one, secret), ("basic", two, secret)):
        r = token_for(client, app["id"], guess, how)
        body = problem(r, 429)
        assert body["error"] == "temporarily_unavailable" and "too many failed attempts" in body["error_description"]
        assert 1 <= int(r.headers["Retry-After"]) <= 3
        assert "access_token" not in body
    assert token_for(two, other["id"], other_secret).status_code == 200  # another client id is not held up
    time.sleep(int(r.headers["Retry-After"]) + 0.2)
    assert token_for(two, app["id"], secret).status_code == 200  # the window has passed


def test_the_token_works_in_every_service(notify_client, fast):
    """hecht.auth accepts it (members and agreements decode tokens with the same function)."""
    from hecht.auth import decode
    app = active_app(notify_client)
    secret = notify_client.post(f"{APPS}/{app['id']}/secrets", headers=ADMIN).json["client_secret"]
    access = token_for(notify_client, app["id"], secret).json["access_token"]
    for service in ("members", "agreements", "notify"):
        p = decode(access, settings(service))
        assert p.sub == app["id"] and p.roles == {"integrator"} and p.region == REGION


# -- event-type limits ----------------------------------------------------------------------
def test_event_type_limits_on_create_update_and_narrowing(notify_client, receiver):
    app = active_app(notify_client, event_types=["agreement.*", "member.enrolled"])
    me = as_app(app["id"])
    ok = subscribe_as(notify_client, me, receiver.url(), ["agreement.activated", "member.enrolled"])
    assert ok["owner"] == app["id"]
    body = problem(notify_client.post(SUBS, json={"url": receiver.url(), "event_types": ["agreement.*", "member.*"]},
                                      headers=me), 422)
    assert list(body["errors"]["event_types"]) == ["1"]
    problem(notify_client.post(SUBS, json={"url": receiver.url(), "event_types": ["*"]}, headers=me), 422)
    body = problem(notify_client.patch(f"{SUBS}/{ok['id']}", json={"event_types": ["member.left"]}, headers=me), 422)
    assert "member.left" in json.dumps(body["errors"])
    # the region-admin is not limited by an application's list, but the application's own
    # subscription stays within it whoever edits it
    problem(notify_client.patch(f"{SUBS}/{ok['id']}", json={"event_types": ["*"]}, headers=ADMIN), 422)
    assert subscribe_as(notify_client, ADMIN, receiver.url(), ["*"])["owner"].startswith("dev:")
    # narrowing the application below what its subscriptions use: 409 naming them
    body = problem(notify_client.patch(f"{APPS}/{app['id']}", json={"event_types": ["agreement.*"]},
                                       headers=ADMIN), 409)
    assert body["subscriptions"] == [ok["id"]]
    assert notify_client.patch(f"{APPS}/{app['id']}", json={"event_types": ["agreement.*", "member.*"]},
                               headers=ADMIN).status_code == 200


# -- ownership: two integrators of one region --------------------------------------------------
def test_ownership_matrix_two_integrators_of_one_region(notify_client):
    a, b = active_app(notify_client, name="A"), active_app(notify_client, name="B")
    ha, hb = as_app(a["id"]), as_app(b["id"])
    sub = subscribe_as(notify_client, ha, "http://127.0.0.1:9/a")
    own_b = subscribe_as(notify_client, hb, "http://127.0.0.1:9/b")
    base = f"{SUBS}/{sub['id']}"
    ping = notify_client.post(f"{base}/ping", headers=ha)
    assert ping.status_code == 202
    dlv = ping.json["delivery_id"]
    since = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    calls = [  # every subscription endpoint, on A's subscription
        ("GET", base, None), ("PATCH", base, {"description": "hijack", "url": "http://127.0.0.1:9/evil"}),
        ("POST", f"{base}/rotate-secret", {}), ("POST", f"{base}/ping", None),
        ("GET", f"{base}/deliveries", None), ("GET", f"{base}/deliveries/{dlv}", None),
        ("POST", f"{base}/deliveries/{dlv}/retry", None), ("POST", f"{base}/replay", {"since": since}),
        ("DELETE", base, None),
    ]
    for method, path, body in calls:
        r = notify_client.open(path, method=method, json=body, headers=hb)
        text = r.get_data(as_text=True)
        assert r.status_code == 404, f"B {method} {path}: {r.status_code} {text[:200]}"
        assert sub["id"] not in text.replace(path, "") or "not found" in text, text
        assert "hijack" not in text and "items" not in r.json
    # nothing of A's changed
    doc = notify_db().subscriptions.find_one({"_id": sub["id"]})
    assert doc["url"] == "http://127.0.0.1:9/a" and not doc.get("deleted") and doc["version"] == sub["version"]
    # lists: each sees its own; the region-admin sees both and filters by owner
    assert [s["id"] for s in notify_client.get(SUBS, headers=hb).json["items"]] == [own_b["id"]]
    assert [s["id"] for s in notify_client.get(f"{SUBS}?owner={a['id']}", headers=hb).json["items"]] == [own_b["id"]]
    assert {s["id"] for s in notify_client.get(SUBS, headers=ADMIN).json["items"]} == {sub["id"], own_b["id"]}
    assert [s["id"] for s in notify_client.get(f"{SUBS}?owner={a['id']}", headers=ADMIN).json["items"]] == [sub["id"]]
    # the owner and the region-admin reach every endpoint
    for headers in (ha, ADMIN):
        for method, path, body in calls[:-1]:
            r = notify_client.open(path, method=method, json=body and {k: v for k, v in body.items()
                                                                        if k != "url"}, headers=headers)
            assert r.status_code in (200, 202, 409), f"{method} {path}: {r.status_code} {r.get_data(as_text=True)[:200]}"
    assert notify_client.delete(base, headers=ha).status_code == 204


# -- v1a: ed25519 signatures -----------------------------------------------------------------
def test_an_ed25519_signed_delivery_verifies_with_the_spec_algorithm(notify_client, notify_worker, receiver):
    sub = subscribe_as(notify_client, ADMIN, receiver.url(), ["agreement.*"], signature="v1a")
    assert "secret" not in sub and sub["public_key"].startswith("whpk_") and sub["signature"] == "v1a"
    notify_worker("deliveries")
    event = vote_cast_event("a_v1a", 1)
    consume(event)
    wait_until(lambda: receiver.count() == 1, message="the delivery")
    req = receiver.requests[0]
    h = req["headers"]
    assert h["webhook-signature"].startswith("v1a,") and h["webhook-id"] == event["id"]
    # The Standard Webhooks spec's asymmetric scheme, checked with cryptography's ed25519: the
    # official Python package (standardwebhooks 1.1, pinned) only knows v1 (HMAC).
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sub["public_key"][len("whpk_"):]))
    content = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + req["body"]
    key.verify(base64.b64decode(h["webhook-signature"].split(",", 1)[1]), content)
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(h["webhook-signature"].split(",", 1)[1]), content.replace(b"a_v1a", b"a_xxx"))
    with pytest.raises(WebhookVerificationError):  # the official package refuses v1a (no v1 entry)
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(req["body"], h)
    # rotation rotates the key pair: both keys sign during the grace period
    rotated = notify_client.post(f"{SUBS}/{sub['id']}/rotate-secret", json={"grace_period_s": 600}, headers=ADMIN).json
    assert rotated["public_key"] != sub["public_key"] and set(rotated["public_keys"]) == {
        rotated["public_key"], sub["public_key"]} and "secret" not in rotated
    consume(vote_cast_event("a_v1a2", 1))
    wait_until(lambda: receiver.count() == 2, message="the second delivery")
    h2 = receiver.requests[1]["headers"]
    sigs = h2["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1a,") for s in sigs)
    content2 = f"{h2['webhook-id']}.{h2['webhook-timestamp']}.".encode() + receiver.requests[1]["body"]
    for pk, sig in zip((rotated["public_key"], sub["public_key"]), sigs):
        Ed25519PublicKey.from_public_bytes(base64.b64decode(pk[5:])).verify(base64.b64decode(sig[4:]), content2)


# -- circuit breaker --------------------------------------------------------------------------
def test_circuit_breaker_opens_probes_and_closes_in_the_attempt_log(notify_client, notify_worker, receiver,
                                                                    monkeypatch):
    monkeypatch.setenv("HECHT_WEBHOOK_CIRCUIT_FAILURES", "3")
    monkeypatch.setenv("HECHT_WEBHOOK_CIRCUIT_COOLDOWN_S", "1.5")
    monkeypatch.setenv("HECHT_WEBHOOK_RETRY_SCHEDULE_S", "0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2")
    monkeypatch.setenv("HECHT_WEBHOOK_DISABLE_AFTER_FAILURES", "50")
    sub = subscribe_as(notify_client, ADMIN, receiver.url(), ["agreement.*"])
    # 3 failures open it; the first probe fails (re-open); the second probe succeeds (close)
    receiver.script = [500, 500, 500, 503]
    notify_worker("deliveries")
    consume(vote_cast_event("a_cb", 1))
    d = wait_until(lambda: notify_client.get(f"{SUBS}/{sub['id']}/deliveries?status=succeeded",
                                             headers=ADMIN).json["items"], timeout=30, message="delivered")[0]
    detail = notify_client.get(f"{SUBS}/{sub['id']}/deliveries/{d['id']}", headers=ADMIN).json
    log = [(a["status"], a["probe"], a["circuit"], a["circuit_after"]) for a in detail["attempts"]]
    assert log == [(500, False, "closed", "closed"), (500, False, "closed", "closed"),
                   (500, False, "closed", "open"),
                   (503, True, "half-open", "open"),
                   (200, True, "half-open", "closed")], log
    at = [datetime.fromisoformat(a["at"].replace("Z", "+00:00")) for a in detail["attempts"]]
    assert (at[3] - at[2]).total_seconds() >= 1.4 and (at[4] - at[3]).total_seconds() >= 1.4  # cool-downs
    for a in detail["attempts"]:
        assert a["latency_ms"] >= 0 and "response" in a and a["n"] >= 1
    circuit = notify_client.get(f"{SUBS}/{sub['id']}", headers=ADMIN).json["circuit"]
    assert circuit["state"] == "closed" and circuit["consecutive_failures"] == 0
    assert notify_client.get(f"{SUBS}/{sub['id']}", headers=ADMIN).json["enabled"] is True  # not disabled


def test_an_open_circuit_shows_on_the_subscription_and_holds_deliveries(notify_client, notify_worker, receiver,
                                                                       monkeypatch):
    monkeypatch.setenv("HECHT_WEBHOOK_CIRCUIT_FAILURES", "2")
    monkeypatch.setenv("HECHT_WEBHOOK_CIRCUIT_COOLDOWN_S", "30")
    monkeypatch.setenv("HECHT_WEBHOOK_RETRY_SCHEDULE_S", "0.1,0.1,0.1,0.1")
    monkeypatch.setenv("HECHT_WEBHOOK_DISABLE_AFTER_FAILURES", "50")
    sub = subscribe_as(notify_client, ADMIN, receiver.url(), ["agreement.*"])
    receiver.default = 500
    notify_worker("deliveries")
    consume(vote_cast_event("a_open", 1))
    circuit = wait_until(lambda: (c := notify_client.get(f"{SUBS}/{sub['id']}", headers=ADMIN).json["circuit"])
                         ["state"] == "open" and c, message="open")
    assert circuit["consecutive_failures"] == 2 and circuit["retry_at"] > circuit["opened_at"]
    consume(vote_cast_event("a_open2", 1))
    time.sleep(1.0)
    assert receiver.count() == 2  # nothing goes while it cools down


def test_a_suspended_application_s_deliveries_are_held_and_resume_in_order(notify_client, notify_worker, receiver):
    """Suspension refuses the application's tokens and holds its deliveries (pending, not
    dropped); another application of the region keeps receiving; resuming releases them."""
    app, other = active_app(notify_client), active_app(notify_client)
    held = subscribe_as(notify_client, as_app(app["id"]), receiver.url("/held"), ["agreement.*"])
    free = subscribe_as(notify_client, as_app(other["id"]), receiver.url("/free"), ["agreement.*"])
    url = f"{APPS}/{app['id']}"
    r = notify_client.patch(url, json={"status": "suspended"},
                            headers=dict(ADMIN, **{"If-Match": notify_client.get(url, headers=ADMIN).headers["ETag"]}))
    assert r.status_code == 200, r.get_data(as_text=True)
    notify_worker("deliveries")
    consume(vote_cast_event("a_susp", 1), signed_event("a_susp", 2))
    wait_until(lambda: receiver.count("/free") == 2, timeout=30, message="the other application's deliveries")
    time.sleep(1.5)
    assert receiver.count("/held") == 0
    pending = notify_client.get(f"{SUBS}/{held['id']}/deliveries?status=pending", headers=ADMIN).json["items"]
    assert len(pending) == 2
    r = notify_client.patch(url, json={"status": "active"},
                            headers=dict(ADMIN, **{"If-Match": notify_client.get(url, headers=ADMIN).headers["ETag"]}))
    assert r.status_code == 200, r.get_data(as_text=True)
    wait_until(lambda: receiver.count("/held") == 2, timeout=30, message="released after resuming")
    types = [b["type"] for b in receiver.bodies("/held")]
    assert types == [ev.full_type("agreement.vote_cast"), ev.full_type("agreement.signed")]
    assert free["owner"] == other["id"] and held["owner"] == app["id"]


# -- rate limit -------------------------------------------------------------------------------
def test_the_rate_limit_spaces_deliveries(notify_client, notify_worker, receiver):
    sub = subscribe_as(notify_client, ADMIN, receiver.url(), ["agreement.*"], rate_limit=4)
    assert sub["rate_limit"] == 4
    consume(*[vote_cast_event(f"a_rl{i}", 1) for i in range(8)])  # 8 lanes, all due
    notify_worker("deliveries")
    wait_until(lambda: receiver.count() == 8, timeout=30, message="8 deliveries")
    times = sorted(r["at"] for r in receiver.requests)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.25 - 0.02, gaps  # 1/rate, less the receiver's clock granularity
    throttled = [a for d in notify_client.get(f"{SUBS}/{sub['id']}/deliveries", headers=ADMIN).json["items"]
                 for a in notify_client.get(f"{SUBS}/{sub['id']}/deliveries/{d['id']}", headers=ADMIN).json["attempts"]
                 if a.get("throttled_until")]
    assert len(throttled) >= 5 and all(a["throttled_ms"] > 0 for a in throttled)  # waits are in the attempt log
    assert max(a["throttled_ms"] for a in throttled) >= 1000  # the 8th waited ~7 slots of 250 ms
    # the limit can be changed and removed
    r = notify_client.patch(f"{SUBS}/{sub['id']}", json={"rate_limit": None}, headers=ADMIN)
    assert r.status_code == 200 and r.json["rate_limit"] is None
    problem(notify_client.patch(f"{SUBS}/{sub['id']}", json={"rate_limit": 0}, headers=ADMIN), 422)


# -- the event catalogue ----------------------------------------------------------------------
def test_the_event_catalogue_has_every_type_with_a_valid_example(notify_client):
    r = notify_client.get("/v1/event-types")  # public
    assert r.status_code == 200
    items = r.json["items"]
    types = {e["type"] for e in items}
    assert {"agreement.activated", "member.enrolled", "subscription.ping"} <= types
    assert not any(t.startswith("staff.") for t in types)
    registry = ev._registry()[0]
    for e in items:
        assert e["description"] and e["schema"]["$id"].endswith(e["full_type"][len("hecht."):])
        jsonschema.Draft202012Validator(e["schema"], registry=registry,
                                        format_checker=jsonschema.FormatChecker()).validate(e["example"])
        assert "personal" not in e["example"]  # as delivered: redacted
    assert notify_client.get("/v1/event-types", headers=bearer("portal")).status_code == 200
