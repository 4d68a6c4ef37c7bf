"""The notify HTTP API: subscriptions (secret once, encrypted at rest), auth, validation,
If-Match, idempotent create, pagination, delivery listing filters, notifications, OpenAPI."""
from __future__ import annotations

import json

from hecht.config import settings
from services.notify.signing import SecretBox
from tests.conftest import bearer
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    REGION, agreement_event, consume, fast, integrator, member_event, notify_client, notify_db, signed_event,
    subscribe, vote_cast_event)

BASE = f"/v1/regions/{REGION}/subscriptions"


def _problem(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.mimetype == "application/problem+json"
    return r.json


def test_the_secret_is_shown_once_and_stored_encrypted(notify_client):
    created = subscribe(notify_client, "https://hooks.example.com/hecht", ["agreement.*", "member.enrolled"])
    assert created["secret"].startswith("whsec_") and created["enabled"] and created["signing_secrets"] == 1
    assert created["event_types"] == ["agreement.*", "member.enrolled"]
    got = notify_client.get(f"{BASE}/{created['id']}", headers=integrator())
    assert got.status_code == 200 and "secret" not in got.json and got.headers["ETag"] == '"1"'
    listed = notify_client.get(BASE, headers=integrator()).json["items"]
    assert [s["id"] for s in listed] == [created["id"]] and "secret" not in listed[0]
    raw = notify_db().subscriptions.find_one({"_id": created["id"]})
    assert created["secret"] not in json.dumps(raw, default=str)
    assert created["secret"][6:] not in json.dumps(raw, default=str)
    assert SecretBox(settings("notify")).decrypt(raw["secrets"][0]["enc"]) == created["secret"]
    assert not list(notify_db().idempotency.find())


def test_who_may_manage_subscriptions(notify_client):
    body = {"url": "https://hooks.example.com/x", "event_types": ["*"]}
    _problem(notify_client.post(BASE, json=body), 401)
    _problem(notify_client.post(BASE, json=body, headers=bearer("gp", REGION, "m_1")), 403)
    _problem(notify_client.post(BASE, json=body, headers=bearer("integrator", "elz-other")), 404)
    assert notify_client.post(BASE, json=body, headers=bearer("region-admin", REGION)).status_code == 201
    created = notify_client.post(BASE, json=body, headers=integrator()).json
    _problem(notify_client.get(f"/v1/regions/elz-other/subscriptions/{created['id']}",
                               headers=bearer("integrator", "elz-other")), 404)
    _problem(notify_client.get(f"{BASE}/sub_nope", headers=integrator()), 404)


def test_invalid_subscriptions_are_refused_field_by_field(notify_client):
    r = notify_client.post(BASE, json={"url": "ftp://x", "event_types": ["agrement.*"]}, headers=integrator())
    body = _problem(r, 422)
    assert "url" in body["errors"]
    r = notify_client.post(BASE, json={"url": "https://hooks.example.com", "event_types": ["agrement.*", "*"]},
                           headers=integrator())
    assert "0" in _problem(r, 422)["errors"]["event_types"]
    body = _problem(notify_client.post(BASE, json={"description": "x"}, headers=integrator()), 422)
    assert {"url", "event_types"} <= set(body["errors"])
    _problem(notify_client.post(BASE, json={"url": "https://h.example", "event_types": []}, headers=integrator()),
             422)
    assert notify_db().subscriptions.count_documents({}) == 0


def test_update_with_if_match_and_delete(notify_client):
    created = subscribe(notify_client, "https://hooks.example.com/a", ["agreement.*"])
    path = f"{BASE}/{created['id']}"
    r = notify_client.patch(path, json={"event_types": ["member.capacity_changed"], "description": "capacity"},
                            headers={**integrator(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json["event_types"] == ["member.capacity_changed"]
    assert r.headers["ETag"] == '"2"' and r.json["description"] == "capacity"
    _problem(notify_client.patch(path, json={"enabled": False}, headers={**integrator(), "If-Match": '"1"'}), 412)
    r = notify_client.patch(path, json={"enabled": False}, headers=integrator())
    assert r.json["enabled"] is False and r.json["disabled_reason"] == "disabled by a user"
    _problem(notify_client.patch(path, json={"url": "gopher://x"}, headers=integrator()), 422)
    _problem(notify_client.post(f"{path}/ping", headers=integrator()), 409)  # disabled: no ping
    consume(member_event("member.capacity_changed", "m_1", 1))
    assert notify_db().deliveries.count_documents({}) == 0  # disabled: nothing fanned out
    assert notify_client.patch(path, json={"enabled": True}, headers=integrator()).status_code == 200
    consume(member_event("member.capacity_changed", "m_1", 2), vote_cast_event("a_1", 1))
    assert [d["event_type"] for d in notify_db().deliveries.find()] == ["member.capacity_changed"]
    assert notify_client.delete(path, headers=integrator()).status_code == 204
    _problem(notify_client.get(path, headers=integrator()), 404)
    assert notify_db().deliveries.count_documents({}) == 0
    assert notify_db().subscriptions.find_one({"_id": created["id"]})["secrets"] == []  # no secret kept
    assert notify_client.get(BASE, headers=integrator()).json["items"] == []


def test_a_retried_create_with_the_same_idempotency_key_returns_the_same_subscription(notify_client):
    body = {"url": "https://hooks.example.com/a", "event_types": ["*"]}
    headers = {**integrator(), "Idempotency-Key": "create-1"}
    first = notify_client.post(BASE, json=body, headers=headers)
    again = notify_client.post(BASE, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json["id"] == first.json["id"] and again.json["secret"] == first.json["secret"]
    assert again.headers["Idempotent-Replayed"] == "true"
    _problem(notify_client.post(BASE, json=dict(body, description="other"), headers=headers), 422)
    assert notify_client.post(BASE, json=body, headers=integrator()).json["id"] != first.json["id"]
    assert notify_db().subscriptions.count_documents({}) == 2


def test_subscriptions_and_deliveries_are_paginated_and_filtered(notify_client):
    ids = [subscribe(notify_client, f"https://hooks.example.com/{i}", ["*"])["id"] for i in range(5)]
    seen, url = [], f"{BASE}?limit=2"
    while url:
        page = notify_client.get(url, headers=integrator()).json
        seen += [s["id"] for s in page["items"]]
        url = page["next"]
    assert seen == ids
    consume(member_event("member.enrolled", "m_1", 1), member_event("member.roles_changed", "m_1", 2),
            vote_cast_event("a_1", 1), signed_event("a_1", 2))
    notify_db().deliveries.update_one({"subscription_id": ids[0], "event_type": "agreement.signed"},
                                      {"$set": {"status": "failed"}})
    dpath = f"{BASE}/{ids[0]}/deliveries"
    all_items, url = [], f"{dpath}?limit=3"
    while url:
        page = notify_client.get(url, headers=integrator()).json
        all_items += page["items"]
        url = page["next"]
    assert [d["event_type"] for d in all_items] == ["member.enrolled", "member.roles_changed", "agreement.vote_cast",
                                                    "agreement.signed"]
    assert "attempts" not in all_items[0]
    members = notify_client.get(f"{dpath}?event_type=member.*", headers=integrator()).json["items"]
    assert [d["event_type"] for d in members] == ["member.enrolled", "member.roles_changed"]
    exact = notify_client.get(f"{dpath}?event_type=agreement.vote_cast", headers=integrator()).json["items"]
    assert [d["event_type"] for d in exact] == ["agreement.vote_cast"]
    failed = notify_client.get(f"{dpath}?status=failed", headers=integrator()).json["items"]
    assert [d["event_type"] for d in failed] == ["agreement.signed"]
    _problem(notify_client.get(f"{dpath}?status=lost", headers=integrator()), 422)
    _problem(notify_client.get(f"{BASE}/{ids[0]}/deliveries/dlv_nope", headers=integrator()), 404)


def test_openapi_documents_the_notify_api(notify_client):
    doc = notify_client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    for path in ("/v1/regions/{region_id}/subscriptions", "/v1/regions/{region_id}/subscriptions/{subscription_id}",
                 "/v1/regions/{region_id}/subscriptions/{subscription_id}/rotate-secret",
                 "/v1/regions/{region_id}/subscriptions/{subscription_id}/ping",
                 "/v1/regions/{region_id}/subscriptions/{subscription_id}/deliveries",
                 "/v1/regions/{region_id}/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry",
                 "/v1/regions/{region_id}/subscriptions/{subscription_id}/replay",
                 "/v1/regions/{region_id}/notifications"):
        assert path in doc["paths"], path
    assert notify_client.get("/docs").status_code == 200


def test_subscriptions_and_integrators_only_in_a_region_notify_knows(notify_client):
    """Issue 22 (8): a platform admin could make both in a region that does not exist (201).
    Now 404 (problem) until notify has learned the region from the members service's event,
    and nothing is stored; once ``region.registered`` arrives, the same requests succeed."""
    from hecht import events as ev
    region = "nonexistent-region-zz"
    platform = bearer("platform-admin")
    subs, apps = f"/v1/regions/{region}/subscriptions", f"/v1/regions/{region}/integrators"
    sub_body = {"url": "https://hooks.example.com/hecht", "event_types": ["agreement.*"]}
    app_body = {"name": "AZ Nergens", "contact_email": "it@nergens.example", "event_types": ["agreement.*"]}
    for path, body, headers in ((subs, sub_body, platform), (apps, app_body, platform),
                                (subs, sub_body, bearer("region-admin", region)),
                                (subs, sub_body, bearer("integrator", region))):
        got = _problem(notify_client.post(path, json=body, headers=headers), 404)
        assert region in got["detail"] and "region" in got["title"].lower() + got["detail"]
    assert notify_db().subscriptions.count_documents({"region": region}) == 0
    assert notify_db().integrators.count_documents({"region": region}) == 0
    assert notify_client.post(subs, json=sub_body).status_code == 401  # who asks still comes first
    consume(ev.build("region.registered", region=region, subject=region, sequence=1, source=f"/regions/{region}",
                     data={"region_id": region, "name": "ELZ Ergens", "country": "BE", "kind": "eerstelijnszone",
                           "municipalities": ["Gent"], "mandate_policy": {"quorum": 0.5, "approval_threshold": 0.5,
                                                                          "voting_period_days": 14}}))
    assert notify_client.post(subs, json=sub_body, headers=platform).status_code == 201
    assert notify_client.post(apps, json=app_body, headers=platform).status_code == 201


def test_an_empty_patch_or_rotation_body_is_422_and_changes_nothing(notify_client):
    """Issue 22 (11): an empty PATCH bumped the version; rotate-secret took no body (or a form
    body, ignored) as "rotate with the default grace period". Its body is a JSON object:
    ``{}`` or ``{"grace_period_s": n}``."""
    created = subscribe(notify_client, "https://hooks.example.com/hecht", ["agreement.*"])
    path = f"{BASE}/{created['id']}"
    before = notify_db().subscriptions.find_one({"_id": created["id"]})
    json_type = {"Content-Type": "application/json"}
    bad = [(422, {"json": {}}), (422, {}), (422, {"data": "", "headers": json_type}),
           (422, {"data": "null", "headers": json_type}), (422, {"data": "[]", "headers": json_type}),
           (422, {"data": '"x"', "headers": json_type}), (415, {"data": "enabled=true"}),
           (422, {"json": {"nope": 1}})]
    for status, kw in bad:
        headers = {**integrator(), **kw.pop("headers", {})}
        _problem(notify_client.patch(path, headers=headers, **kw), status)
    rotations = [(422, {}), (422, {"data": "", "headers": json_type}), (422, {"data": "null", "headers": json_type}),
                 (422, {"data": "[]", "headers": json_type}), (415, {"data": "grace_period_s=0"}),
                 (422, {"json": {"grace_period_s": -1}}), (422, {"json": {"grace_period_s": "soon"}}),
                 (422, {"json": {"grace": 5}})]
    for status, kw in rotations:
        headers = {**integrator(), **kw.pop("headers", {})}
        _problem(notify_client.post(f"{path}/rotate-secret", headers=headers, **kw), status)
    after = notify_db().subscriptions.find_one({"_id": created["id"]})
    assert after == before  # no new version, no new secret
    # what the body is meant to be still works: a field to change; {} or a grace period
    changed = notify_client.patch(path, json={"description": "ander"}, headers=integrator())
    assert changed.status_code == 200 and changed.json["version"] == before["version"] + 1
    assert notify_client.post(f"{path}/rotate-secret", json={}, headers=integrator()).status_code == 200
    assert notify_client.post(f"{path}/rotate-secret", json={"grace_period_s": 60},
                              headers=integrator()).status_code == 200
