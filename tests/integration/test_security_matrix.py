"""Every endpoint of every service × {no token, expired, bad signature, unknown role,
another region's token, a GP acting on another GP, the portal}: 401/403/404 as designed,
never data, never a 5xx, never internals in the body.

Endpoints come from each app's URL map, so a new endpoint is covered the day it
is added.
"""
from __future__ import annotations

import importlib
import re
import warnings

import pytest

from tests.conftest import bearer

REGION = "elz-sec"
# What a ``portal`` token may call (docs/PORTAL.md); everything else answers it 403.
PORTAL_ALLOWED = {
    ("members", "GET", "/v1/regions"), ("members", "GET", "/v1/regions/<region_id>"),
    ("members", "POST", "/v1/sign-ins"), ("members", "POST", "/v1/sign-in-addresses"),
    ("agreements", "GET", "/v1/regions/<region_id>/agreements"),
    ("agreements", "GET", "/v1/regions/<region_id>/agreements/<agreement_id>"),
    ("notify", "POST", "/v1/integrator-sign-ins"), ("notify", "POST", "/v1/integrator-sign-in-addresses"),
}


def endpoints(service: str):
    warnings.simplefilter("ignore", UserWarning)
    app = importlib.import_module(f"services.{service}.app").create_app()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("ops.", "api-docs.", "static")):
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield app, rule.rule, method, getattr(view, "hecht_public", False)


def concrete(rule: str, member: str = "m_other") -> str:
    path = rule.replace("<region_id>", REGION).replace("<member_id>", member)
    return re.sub(r"<[^>]+>", "x_0000000000", path)


def call(client, method: str, path: str, headers: dict):
    kwargs = {"headers": headers}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.open(path, method=method, **kwargs)


def assert_refused(r, allowed: set[int], context: str) -> None:
    text = r.get_data(as_text=True)
    assert r.status_code in allowed, f"{context}: {r.status_code} {text[:300]}"
    assert r.mimetype == "application/problem+json", context
    body = r.json
    assert "items" not in body and "id" not in body, f"{context} leaked data: {text[:300]}"
    assert "Traceback" not in text and "pymongo" not in text and "File \"" not in text


@pytest.mark.parametrize("service", ["members", "agreements", "notify"])
def test_security_matrix(hecht_env, service):
    pytest.importorskip(f"services.{service}.app", reason=f"the {service} service is not built yet")
    cases = 0
    expired = bearer("region-admin", REGION, ttl=-60)
    forged = {"Authorization": bearer("region-admin", REGION)["Authorization"][:-6] + "AAAAAA"}
    other_region = bearer("region-admin", "elz-elsewhere")
    nobody = bearer("nobody", REGION)
    other_gp = bearer("gp", REGION, member="m_self")
    portal = bearer("portal")
    portal_allowed = 0
    for app, rule, method, is_public in endpoints(service):
        client = app.test_client()
        path = concrete(rule)
        ctx = f"{service} {method} {rule}"
        if not is_public:
            assert_refused(call(client, method, path, {}), {401}, f"{ctx} without a token")
        assert_refused(call(client, method, path, expired), {401}, f"{ctx} expired")
        assert_refused(call(client, method, path, forged), {401}, f"{ctx} bad signature")
        if "<region_id>" in rule and not is_public:
            assert_refused(call(client, method, path, other_region), {404}, f"{ctx} other region")
        if not is_public:
            assert_refused(call(client, method, path, nobody), {403, 404}, f"{ctx} unknown role")
        if "<member_id>" in rule and not is_public:
            assert_refused(call(client, method, path, other_gp), {403, 404}, f"{ctx} GP on another GP")
        if (service, method, rule) in PORTAL_ALLOWED:
            r = call(client, method, path, portal)
            assert r.status_code in (200, 404, 422), f"{ctx} portal: {r.status_code} {r.get_data(as_text=True)[:300]}"
            portal_allowed += 1
        elif not is_public:
            assert_refused(call(client, method, path, portal), {403}, f"{ctx} portal")
        cases += 1
    assert portal_allowed == sum(1 for s, _, _ in PORTAL_ALLOWED if s == service), "a portal endpoint is gone"
    assert cases >= 3, f"{service}: only {cases} endpoints found"
    print(f"security matrix {service}: {cases} endpoint×method pairs")


# -- another integrator of the same region (issue 15) ----------------------------------------------
def test_another_integrator_of_the_same_region_gets_nothing(hecht_env):
    """Every notify endpoint that names a subscription, a delivery or an integrator application,
    called by a second integrator application of the same region on the first one's objects
    (real ones): 404 as if they did not exist (403 where only the region-admin may call), never
    data, and nothing changes. The endpoints come from the URL map, so a new one is covered."""
    from services.notify.app import create_app
    from services.notify.repository import ensure_indexes
    from tests.integration.test_notify_support import known_region, notify_db
    ensure_indexes(notify_db())
    known_region(REGION)
    client = create_app().test_client()
    admin = bearer("region-admin", REGION)
    apps = []
    for name in ("A", "B"):
        r = client.post(f"/v1/regions/{REGION}/integrators", headers=admin,
                        json={"name": name, "contact_email": f"{name}@example.test", "event_types": ["*"]})
        assert r.status_code == 201, r.get_data(as_text=True)
        client.patch(f"/v1/regions/{REGION}/integrators/{r.json['id']}", json={"status": "active"}, headers=admin)
        apps.append(r.json["id"])
    a, b = (bearer("integrator", REGION, sub=i) for i in apps)
    sub = client.post(f"/v1/regions/{REGION}/subscriptions", headers=a,
                      json={"url": "http://127.0.0.1:9/a", "event_types": ["agreement.*"]}).json
    delivery = client.post(f"/v1/regions/{REGION}/subscriptions/{sub['id']}/ping", headers=a).json["delivery_id"]
    secret = client.post(f"/v1/regions/{REGION}/integrators/{apps[0]}/secrets", headers=a).json["id"]
    ids = {"<subscription_id>": sub["id"], "<delivery_id>": delivery, "<integrator_id>": apps[0],
           "<secret_id>": secret}
    before = notify_db().subscriptions.find_one({"_id": sub["id"]})
    cases = 0
    for app, rule, method, is_public in endpoints("notify"):
        if not any(k in rule for k in ids):
            continue
        path = rule.replace("<region_id>", REGION)
        for k, v in ids.items():
            path = path.replace(k, v)
        # a valid body, so the answer is about the object, not the input
        body = ({"since": "2026-01-01T00:00:00Z"} if rule.endswith("/replay") else
                {"url": "http://127.0.0.1:9/evil"} if rule.endswith("<subscription_id>") else
                {"status": "suspended"} if rule.endswith("<integrator_id>") else {})
        r = app.test_client().open(path, method=method, headers=b,
                                   json=body if method in ("POST", "PATCH") else None)
        assert_refused(r, {403, 404}, f"notify {method} {rule} another integrator")
        assert "http://127.0.0.1:9/a" not in r.get_data(as_text=True)
        cases += 1
    assert cases >= 14
    after = notify_db().subscriptions.find_one({"_id": sub["id"]})
    assert after["version"] == before["version"] and after["url"] == before["url"]
    assert client.get(f"/v1/regions/{REGION}/subscriptions", headers=b).json["items"] == []
    assert client.get(f"/v1/regions/{REGION}/integrators/{apps[0]}", headers=a).json["status"] == "active"
    assert len(client.get(f"/v1/regions/{REGION}/integrators/{apps[0]}/secrets", headers=a).json["items"]) == 1


# -- docs/PORTAL.md part 2: staff accounts and capacity history, role by role ----------------------
# (method, rule, who may call it). "platform": platform-admin only; "region": a region-admin of the
# region (and platform-admin). Every other role, the portal and another region's admin are refused.
PART2 = [
    ("POST", "/v1/staff", "platform"), ("GET", "/v1/staff", "platform"),
    ("GET", "/v1/staff/<staff_id>", "platform"), ("PATCH", "/v1/staff/<staff_id>", "platform"),
    ("POST", "/v1/staff/<staff_id>/revoke", "platform"),
    ("GET", "/v1/regions/<region_id>/staff", "region"), ("POST", "/v1/regions/<region_id>/staff", "region"),
    ("DELETE", "/v1/regions/<region_id>/staff/<staff_id>", "region"),
    ("GET", "/v1/regions/<region_id>/staff/names", "region"),
    ("POST", "/v1/regions/<region_id>/capacity/snapshots", "region"),
    ("GET", "/v1/regions/<region_id>/capacity/history", "region"),
]


def test_part2_endpoints_exist():
    rules = {(m, r) for _, r, m, _ in endpoints("members")}
    assert {(m, r) for m, r, _ in PART2} <= rules


@pytest.mark.parametrize("method, rule, who", PART2, ids=[f"{m} {r}" for m, r, _ in PART2])
def test_part2_security_matrix(hecht_env, method, rule, who):
    """Each new endpoint against every role: only the role it names gets past authorisation (a
    404/422 about the missing region or body, never data), the others get 401/403/404, and a
    region endpoint answers another region's admin 404 as if the region did not exist."""
    from services.members.app import create_app
    client = create_app().test_client()
    path = concrete(rule)
    refused = {
        "no token": ({}, {401}),
        "expired": (bearer("region-admin", REGION, ttl=-60), {401}),
        "gp": (bearer("gp", REGION, member="m_self"), {403}),
        "integrator": (bearer("integrator", REGION), {403}),
        "portal": (bearer("portal"), {403}),
        "unknown role": (bearer("nobody", REGION), {403}),
        "other region's admin": (bearer("region-admin", "elz-elsewhere"), {404} if who == "region" else {403}),
    }
    if who == "platform":
        refused["region-admin"] = (bearer("region-admin", REGION), {403})
    for name, (headers, statuses) in refused.items():
        assert_refused(call(client, method, path, headers), statuses, f"{method} {rule} {name}")
    allowed = [bearer("platform-admin")] + ([bearer("region-admin", REGION)] if who == "region" else [])
    for headers in allowed:
        r = call(client, method, path, headers)
        # Past authorisation: the region / account does not exist, or the empty body is refused.
        assert r.status_code in (200, 404, 422), f"{method} {rule}: {r.status_code} {r.get_data(as_text=True)[:300]}"
        if r.status_code >= 400:
            assert r.mimetype == "application/problem+json"
