"""Staff accounts over HTTP against the real stack (docs/PORTAL.md, part 2): the platform's
/v1/staff, a region's /v1/regions/{r}/staff, sign-ins of staff, the events (no address, no name),
and ``hecht staff add``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hecht import events as ev, outbox
from services.members import domain, handlers
from tests.conftest import bearer
from tests.integration.test_members_api import (  # noqa: F401 - fixtures
    ADMIN, app, client, db, problem, sign_up)

PLATFORM = bearer("platform-admin")
PORTAL = bearer("portal")
UTRECHT_ADMIN = bearer("region-admin", "zg-utrecht")
REPO = Path(__file__).resolve().parents[2]


def invite(client, email="coord@zone.be", name="Ann Smet", **kw):
    return client.post("/v1/staff", json={"email": email, "name": name, **kw}, headers=PLATFORM)


def events_of(subject: str) -> list[dict]:
    return outbox.history(db(), subject)


def types_of(subject: str) -> list[str]:
    return [ev.short_type(e["type"]) for e in events_of(subject)]


def sign_in(client, email: str) -> dict:
    r = client.post("/v1/sign-ins", json={"email": email}, headers=PORTAL)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


# -- the platform's /v1/staff ---------------------------------------------------------------------
def test_invite_read_and_list_staff(client):
    r = invite(client, " Coord@Zone.BE ", "  Ann   Smet ", language="fr", admin_of=["elz-gent"])
    assert r.status_code == 201, r.json
    s = r.json
    assert s["id"].startswith("stf_") and r.headers["Location"] == f"/v1/staff/{s['id']}"
    assert r.headers["ETag"] == '"1"'
    assert {k: s[k] for k in ("email", "name", "language", "platform_admin", "admin_of", "status", "version")} == {
        "email": "Coord@zone.be", "name": "Ann Smet", "language": "fr", "platform_admin": False,
        "admin_of": ["elz-gent"], "status": "invited", "version": 1}
    assert s["invited_at"] and s["activated_at"] is None and s["revoked_at"] is None
    assert "email_key" not in s and "region" not in s

    got = client.get(f"/v1/staff/{s['id']}", headers=PLATFORM)
    assert got.status_code == 200 and got.json == s and got.headers["ETag"] == '"1"'

    other = invite(client, "boss@hecht.example.org", "Bea Boss", platform_admin=True).json
    listed = client.get("/v1/staff?limit=1", headers=PLATFORM).json
    assert [i["id"] for i in listed["items"]] == [s["id"]] and listed["next"]
    page2 = client.get(listed["next"], headers=PLATFORM).json
    assert [i["id"] for i in page2["items"]] == [other["id"]] and page2["next"] is None
    assert [i["id"] for i in client.get("/v1/staff?region=elz-gent", headers=PLATFORM).json["items"]] == [s["id"]]
    assert [i["id"] for i in client.get("/v1/staff?q=bea%20BOSS", headers=PLATFORM).json["items"]] == [other["id"]]
    assert [i["id"] for i in client.get("/v1/staff?q=zone.be", headers=PLATFORM).json["items"]] == [s["id"]]
    assert client.get("/v1/staff?status=active", headers=PLATFORM).json["items"] == []
    problem(client.get("/v1/staff?status=gone", headers=PLATFORM), 422)
    problem(client.get("/v1/staff/stf_nope", headers=PLATFORM), 404)


def test_an_address_is_on_one_account_only(client):
    assert invite(client, "coord@zone.be", admin_of=["elz-gent"]).status_code == 201
    for email in ("coord@zone.be", "COORD@Zone.be"):
        p = problem(invite(client, email, platform_admin=True), 409)
        assert p["errors"] == {"email": ["already on a staff account"]}
    assert len(client.get("/v1/staff", headers=PLATFORM).json["items"]) == 1


@pytest.mark.parametrize("body, field", [
    ({"email": "nope", "name": "A", "admin_of": ["elz-gent"]}, "email"),
    ({"email": "a@b.be", "name": " ", "admin_of": ["elz-gent"]}, "name"),
    ({"email": "a@b.be", "name": "A"}, "admin_of"),                              # no role at all
    ({"email": "a@b.be", "name": "A", "admin_of": ["elz-nowhere"]}, "admin_of"),  # no such region
    ({"email": "a@b.be", "name": "A", "admin_of": ["Not A Slug"]}, "admin_of"),
    ({"email": "a@b.be", "name": "A", "platform_admin": "maybe"}, "platform_admin"),
    ({"email": "a@b.be", "name": "A", "platform_admin": True, "language": "de"}, "language"),
])
def test_a_bad_invitation_is_a_422_and_changes_nothing(client, body, field):
    p = problem(client.post("/v1/staff", json=body, headers=PLATFORM), 422)
    assert field in p["errors"], p
    assert db().staff.count_documents({}) == 0
    assert db().outbox.count_documents({"source": "/regions/platform/staff"}) == 0


def test_idempotency_key_replays_the_invitation(client):
    headers = {**PLATFORM, "Idempotency-Key": "invite-1"}
    body = {"email": "coord@zone.be", "name": "Ann", "admin_of": ["elz-gent"]}
    first = client.post("/v1/staff", json=body, headers=headers)
    again = client.post("/v1/staff", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json["id"] == first.json["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert db().staff.count_documents({}) == 1


def test_patch_with_if_match_and_revoke(client):
    s = invite(client, admin_of=["elz-gent"]).json
    url = f"/v1/staff/{s['id']}"
    r = client.patch(url, json={"name": "Ann De Smet", "admin_of": ["elz-gent", "zg-utrecht"]},
                     headers={**PLATFORM, "If-Match": '"1"'})
    assert r.status_code == 200, r.json
    assert r.json["name"] == "Ann De Smet" and r.json["admin_of"] == ["elz-gent", "zg-utrecht"]
    assert r.headers["ETag"] == '"2"'
    # A stale ETag: 412, nothing changed.
    p = problem(client.patch(url, json={"name": "Stale"}, headers={**PLATFORM, "If-Match": '"1"'}), 412)
    assert "changed" in p["detail"]
    problem(client.patch(url, json={"admin_of": ["elz-nowhere"]}, headers=PLATFORM), 422)
    problem(client.patch(url, json={"admin_of": [], "platform_admin": False}, headers=PLATFORM), 422)
    problem(client.patch(url, json={"language": "de"}, headers=PLATFORM), 422)
    assert client.get(url, headers=PLATFORM).json["name"] == "Ann De Smet"

    r = client.post(f"{url}/revoke", headers=PLATFORM)
    assert r.status_code == 200 and r.json["status"] == "revoked" and r.json["revoked_at"]
    problem(client.post(f"{url}/revoke", headers=PLATFORM), 409)
    problem(client.patch(url, json={"name": "X"}, headers=PLATFORM), 409)
    assert types_of(s["id"]) == ["staff.invited", "staff.updated", "staff.revoked"]


def test_staff_events_carry_roles_and_status_only(client):
    s = invite(client, "coord@zone.be", "Ann Smet", admin_of=["elz-gent"]).json
    sign_in(client, "coord@zone.be")
    for e in events_of(s["id"]):
        ev.validate(e)
        assert e["region"] == domain.STAFF_EVENT_REGION and e["source"] == "/regions/platform/staff"
        assert set(e["data"]) == {"staff_id", "platform_admin", "admin_of", "status"}
        assert "coord" not in str(e).casefold() and "smet" not in str(e).casefold()
    assert [e["data"]["status"] for e in events_of(s["id"])] == ["invited", "active"]


def test_a_region_cannot_take_the_staff_events_region_id(client):
    body = {"id": "platform", "name": "P", "country": "BE", "kind": "other", "municipalities": ["Gent"]}
    p = problem(client.post("/v1/regions", json=body, headers=PLATFORM), 422)
    assert "id" in p["errors"]


# -- sign-ins -------------------------------------------------------------------------------------
def test_sign_in_answers_the_account_and_activates_an_invitation_once(client):
    s = invite(client, "Coord@Zone.be", "Ann", admin_of=["elz-gent"]).json
    got = sign_in(client, " coord@ZONE.be ")
    assert got["staff"] == {"id": s["id"], "name": "Ann", "language": "nl", "platform_admin": False,
                            "admin_of": ["elz-gent"], "status": "active"}
    assert got["memberships"] == []
    account = client.get(f"/v1/staff/{s['id']}", headers=PLATFORM).json
    assert account["status"] == "active" and account["activated_at"] and account["version"] == 2
    assert sign_in(client, "coord@zone.be")["staff"]["status"] == "active"
    assert types_of(s["id"]) == ["staff.invited", "staff.activated"]   # once

    # A GP membership with another address is not a staff account; an unknown address has none.
    sign_up(client, 1)
    assert sign_in(client, "an1@praktijk.be")["staff"] is None
    assert sign_in(client, "nobody@example.org")["staff"] is None


def test_a_revoked_account_is_not_answered_and_the_demo_domain_signs_in(client):
    s = invite(client, "admin@demo.hecht.local", "Demo Admin", platform_admin=True).json
    assert s["email"] == "admin@demo.hecht.local"
    assert sign_in(client, "Admin@Demo.Hecht.Local")["staff"]["id"] == s["id"]
    client.post(f"/v1/staff/{s['id']}/revoke", headers=PLATFORM)
    assert sign_in(client, "admin@demo.hecht.local")["staff"] is None
    assert client.get(f"/v1/staff/{s['id']}", headers=PLATFORM).json["status"] == "revoked"


def test_sign_in_of_an_account_revoked_meanwhile_is_not_activated(client):
    s = invite(client, admin_of=["elz-gent"]).json
    repos = handlers.Repos(db())
    handlers.revoke_staff(domain.RevokeStaff(s["id"]), repos, None)
    email, _, staff = handlers.handle(domain.SignIn("coord@zone.be"), db())
    assert staff is None and types_of(s["id"]) == ["staff.invited", "staff.revoked"]


# -- a region's admins ----------------------------------------------------------------------------
def test_a_region_admin_invites_lists_and_removes_admins_of_their_region(client):
    base = "/v1/regions/elz-gent/staff"
    r = client.post(base, json={"email": "new@zone.be", "name": "Nieuw", "language": "nl"}, headers=ADMIN)
    assert r.status_code == 201, r.json
    new = r.json
    assert set(new) == {"id", "region_id", "email", "name", "language", "status", "invited_at", "activated_at"}
    assert (new["region_id"], new["status"]) == ("elz-gent", "invited")

    # An address already on an account (an admin of Utrecht): that account gains Gent, keeps its name.
    other = invite(client, "utrecht@zone.nl", "Uta", admin_of=["zg-utrecht"]).json
    r = client.post(base, json={"email": "UTRECHT@zone.nl", "name": "Someone Else"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["id"] == other["id"] and r.json["name"] == "Uta"
    assert "admin_of" not in r.json   # Gent does not learn which other regions the account has
    again = client.post(base, json={"email": "utrecht@zone.nl", "name": "Uta"}, headers=ADMIN)
    assert again.status_code == 200 and types_of(other["id"]) == ["staff.invited", "staff.updated"]
    assert client.get(f"/v1/staff/{other['id']}", headers=PLATFORM).json["admin_of"] == ["zg-utrecht", "elz-gent"]

    listed = client.get(base, headers=ADMIN).json
    assert [i["id"] for i in listed["items"]] == [new["id"], other["id"]]
    assert [i["id"] for i in client.get("/v1/regions/zg-utrecht/staff", headers=UTRECHT_ADMIN).json["items"]] \
        == [other["id"]]

    # Removing: the other account keeps Utrecht; the new one has nothing left and is revoked.
    assert client.delete(f"{base}/{other['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/v1/staff/{other['id']}", headers=PLATFORM).json["admin_of"] == ["zg-utrecht"]
    assert client.delete(f"{base}/{new['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/v1/staff/{new['id']}", headers=PLATFORM).json["status"] == "revoked"
    assert client.get(base, headers=ADMIN).json["items"] == []
    problem(client.delete(f"{base}/{new['id']}", headers=ADMIN), 404)

    # A revoked address invited again by a region: a fresh invitation for that region only.
    r = client.post(base, json={"email": "new@zone.be", "name": "Nieuw"}, headers=ADMIN)
    assert r.status_code == 200 and r.json["id"] == new["id"] and r.json["status"] == "invited"
    assert types_of(new["id"]) == ["staff.invited", "staff.revoked", "staff.invited"]


def test_a_region_admin_cannot_touch_another_regions_admins(client):
    utrecht = invite(client, "utrecht@zone.nl", "Uta", admin_of=["zg-utrecht"]).json
    # Not Gent's admin: 404, and nothing changed.
    problem(client.delete(f"/v1/regions/elz-gent/staff/{utrecht['id']}", headers=ADMIN), 404)
    problem(client.delete("/v1/regions/elz-gent/staff/stf_nope", headers=ADMIN), 404)
    # Another region's endpoints: 404 like everywhere.
    problem(client.get("/v1/regions/zg-utrecht/staff", headers=ADMIN), 404)
    problem(client.post("/v1/regions/zg-utrecht/staff", json={"email": "x@y.be", "name": "X"}, headers=ADMIN), 404)
    problem(client.delete(f"/v1/regions/zg-utrecht/staff/{utrecht['id']}", headers=ADMIN), 404)
    # The platform's endpoints: 403.
    problem(client.get("/v1/staff", headers=ADMIN), 403)
    problem(client.post("/v1/staff", json={}, headers=ADMIN), 403)
    assert client.get(f"/v1/staff/{utrecht['id']}", headers=PLATFORM).json["version"] == 1


def test_a_bad_region_invitation_is_a_422_and_changes_nothing(client):
    for body in ({"email": "nope", "name": "X"}, {"name": "X"}, {"email": "a@b.be", "name": " "},
                 {"email": "a@b.be", "name": "X", "language": "de"}):
        problem(client.post("/v1/regions/elz-gent/staff", json=body, headers=ADMIN), 422)
    assert db().staff.count_documents({}) == 0
    problem(client.get("/v1/regions/elz-nowhere/staff", headers=PLATFORM), 404)


# -- hecht staff add ----------------------------------------------------------------------------------
def staff_add(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "hecht"), "staff", "add", *args], cwd=REPO,
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)


def test_cli_staff_add_is_idempotent_and_updates_roles(client):
    r = staff_add("--email", "Root@Hecht.example.org", "--name", "Root", "--platform-admin")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("created staff account stf_")
    [doc] = list(db().staff.find())
    assert (doc["email"], doc["status"], doc["platform_admin"], doc["admin_of"]) == (
        "Root@hecht.example.org", "active", True, [])

    r = staff_add("--email", "root@hecht.example.org", "--name", "Root", "--platform-admin")
    assert r.returncode == 0 and r.stdout.startswith("unchanged"), r.stdout + r.stderr
    r = staff_add("--email", "ROOT@hecht.example.org", "--name", "Root", "--region", "elz-gent",
                  "--region", "zg-utrecht", "--language", "fr")
    assert r.returncode == 0 and r.stdout.startswith("updated"), r.stdout + r.stderr
    [doc] = list(db().staff.find())
    assert (doc["platform_admin"], doc["admin_of"], doc["language"]) == (False, ["elz-gent", "zg-utrecht"], "fr")
    assert types_of(doc["_id"]) == ["staff.activated", "staff.updated"]
    assert sign_in(client, "root@hecht.example.org")["staff"]["status"] == "active"

    # A revoked account comes back active; bad input changes nothing.
    client.post(f"/v1/staff/{doc['_id']}/revoke", headers=PLATFORM)
    r = staff_add("--email", "root@hecht.example.org", "--name", "Root", "--platform-admin")
    assert r.returncode == 0 and db().staff.find_one()["status"] == "active"
    for bad in (["--email", "x@y.be", "--name", "X"], ["--email", "x@y.be", "--name", "X", "--region", "nowhere"],
                ["--email", "nope", "--name", "X", "--platform-admin"]):
        r = staff_add(*bad)
        assert r.returncode == 2 and "staff add:" in r.stderr, r.stdout + r.stderr
    assert db().staff.count_documents({}) == 1


# -- the other services' consumers of hecht.members ---------------------------------------------------
def test_notify_and_agreements_ignore_staff_events(client):
    """A staff event on hecht.members changes nothing in notify (no copy, no delivery, not even for a
    subscription to every type) nor in agreements' read model, and breaks neither consumer."""
    from hecht import mongo
    from hecht.config import settings
    from services.agreements import handlers as agreements
    from services.notify.handlers import handle_event
    s = invite(client, admin_of=["elz-gent"]).json
    [staff_event] = events_of(s["id"])
    ns = settings("notify")
    notify_db = mongo.database(ns.mongo_uri, ns.database_name)
    notify_db.subscriptions.insert_one({"_id": "sub_all", "region": "platform", "event_types": ["*"],
                                        "enabled": True, "status": "enabled", "url": "https://x.example/h"})
    handle_event(staff_event, notify_db, ns)
    assert notify_db.event_copies.count_documents({}) == 0 and notify_db.deliveries.count_documents({}) == 0
    as_ = settings("agreements")
    agreements_db = mongo.database(as_.mongo_uri, as_.database_name)
    agreements.event_handler(agreements_db)(staff_event)
    assert {c for c in agreements_db.list_collection_names() if c.endswith("_view")} == set()


# -- names for a region's histories (issue 28) ------------------------------------------------------
def test_a_region_admin_names_the_staff_who_may_have_acted_in_their_region(client):
    """``GET /v1/regions/{r}/staff/names?ids=``: names (never addresses) of the region's admins,
    now or before, and of platform admins; anyone else is left out, known or not."""
    gent = invite(client, "gent@zone.be", "Griet Gent", admin_of=["elz-gent"]).json["id"]
    platform = invite(client, "plat@hecht.be", "Piet Platform", platform_admin=True).json["id"]
    utrecht = invite(client, "utrecht@zone.nl", "Uta Utrecht", admin_of=["zg-utrecht"]).json["id"]
    former = invite(client, "former@zone.be", "Frans Vroeger", admin_of=["elz-gent", "zg-utrecht"]).json["id"]
    assert client.delete(f"/v1/regions/elz-gent/staff/{former}", headers=ADMIN).status_code == 204
    asked = ",".join([gent, platform, utrecht, former, "stf_unknown"])

    r = client.get("/v1/regions/elz-gent/staff/names", query_string={"ids": asked}, headers=ADMIN)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert sorted(r.json["items"], key=lambda i: i["name"]) == [
        {"id": former, "name": "Frans Vroeger"},      # an admin of Gent before: still named in its history
        {"id": gent, "name": "Griet Gent"},
        {"id": platform, "name": "Piet Platform"}]    # platform admins may act in every region
    body = r.get_data(as_text=True)
    assert "@" not in body and "Uta" not in body and "stf_unknown" not in body and "zg-utrecht" not in body

    r = client.get("/v1/regions/zg-utrecht/staff/names", query_string={"ids": asked}, headers=UTRECHT_ADMIN)
    assert {i["name"] for i in r.json["items"]} == {"Uta Utrecht", "Piet Platform", "Frans Vroeger"}

    # Only the region's own admins ask: another region 404, a GP or the portal 403, odd ids 422.
    problem(client.get("/v1/regions/zg-utrecht/staff/names", query_string={"ids": gent}, headers=ADMIN), 404)
    problem(client.get("/v1/regions/elz-gent/staff/names", query_string={"ids": gent},
                       headers=bearer("gp", "elz-gent", "m_x")), 403)
    problem(client.get("/v1/regions/elz-gent/staff/names", query_string={"ids": gent}, headers=PORTAL), 403)
    for ids in ("", "a b", ",".join(f"stf_{i}" for i in range(101)), "x" * 65):
        problem(client.get("/v1/regions/elz-gent/staff/names", query_string={"ids": ids}, headers=ADMIN), 422)
    problem(client.get("/v1/regions/elz-gent/staff/names", headers=ADMIN), 422)
    problem(client.get("/v1/regions/nowhere/staff/names", query_string={"ids": gent},
                       headers=bearer("platform-admin")), 404)


def test_members_named_by_id_whatever_their_status(client):
    """``GET …/members?ids=``: the members a history or the notifications log names, in one call."""
    from tests.integration.test_members_api import url
    a, b, c = sign_up(client, 1), sign_up(client, 2), sign_up(client, 3)
    assert client.post(url(a, "/approve"), headers=ADMIN).status_code == 200
    assert client.delete(url(c), headers=ADMIN).status_code in (200, 204)
    other = sign_up(client, 4, region="zg-utrecht", registration={"scheme": "BIG", "number": "19012345601"},
                    practice={"name": "P", "postcode": "3511 AB", "municipality": "Utrecht"})
    r = client.get("/v1/regions/elz-gent/members", query_string={"ids": f"{a},{b},{c},{other},m_none"},
                   headers=ADMIN)
    assert r.status_code == 200, r.get_data(as_text=True)
    got = {m["id"]: m for m in r.json["items"]}
    assert set(got) == {a, b, c}   # another region's member is not there
    assert (got[a]["status"], got[b]["status"], got[c]["status"]) == ("active", "pending", "erased")
    assert got[a]["given_name"] and "given_name" not in got[c]
    r = client.get("/v1/regions/elz-gent/members", query_string={"ids": f"{a},{b}", "status": "active"},
                   headers=ADMIN)
    assert [m["id"] for m in r.json["items"]] == [a]
    problem(client.get("/v1/regions/elz-gent/members", query_string={"ids": "a b"}, headers=ADMIN), 422)
    problem(client.get("/v1/regions/elz-gent/members", query_string={"ids": a}, headers=PORTAL), 403)
