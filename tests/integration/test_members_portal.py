"""The members service's side of docs/PORTAL.md against the real stack: the portal role, sign-ins
(email_verified_at), stale sign-ups and their purge, and the GDPR export."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hecht import events as ev, outbox
from hecht.auth import mint
from hecht.config import settings
from hecht.errors import Conflict
from services.members import domain, handlers
from tests.conftest import bearer
from tests.integration.test_members_api import (  # noqa: F401 - fixtures
    ADMIN, app, client, db, form, gp, problem, sign_up, url)

PORTAL = bearer("portal")
UTRECHT_FORM = {"registration": {"scheme": "BIG", "number": "19012345601"},
                "practice": {"name": "Praktijk U", "postcode": "3511 AB", "municipality": "Utrecht"}}


def sign_in(client, email: str, headers: dict = PORTAL):
    return client.post("/v1/sign-ins", json={"email": email}, headers=headers)


def pending_types(member_id: str) -> list[str]:
    return [ev.short_type(e["type"]) for e in outbox.pending(db(), member_id)]


def backdate(member_id: str, days: int) -> None:
    """As if the sign-up happened ``days`` ago."""
    at = datetime.now(timezone.utc) - timedelta(days=days)
    db().members.update_one({"_id": member_id}, {"$set": {"signed_up_at": at}})


def listed(client, query: str = "") -> list[str]:
    r = client.get(f"/v1/regions/elz-gent/members{query}", headers=ADMIN)
    assert r.status_code == 200, r.get_json()
    return [m["id"] for m in r.json["items"]]


# -- sign-ins ----------------------------------------------------------------------------------
def test_a_sign_in_proves_the_address_of_every_membership_once(client):
    gent = sign_up(client, 1, email="An1@Praktijk.be")
    utrecht = sign_up(client, 1, region="zg-utrecht", email="an1@praktijk.BE", **UTRECHT_FORM)
    other = sign_up(client, 2)

    r = sign_in(client, "  AN1@praktijk.be ")
    assert r.status_code == 200, r.get_json()
    assert r.json["email"] == "AN1@praktijk.be"
    got = {m["region_id"]: m for m in r.json["memberships"]}
    assert set(got) == {"elz-gent", "zg-utrecht"}
    assert got["elz-gent"]["member_id"] == gent and got["zg-utrecht"]["member_id"] == utrecht
    assert got["elz-gent"]["region_name"] == "ELZ Gent" and got["zg-utrecht"]["region_name"] == "Zorggroep Utrecht"
    assert got["elz-gent"]["status"] == "pending" and got["elz-gent"]["roles"] == []
    first = got["elz-gent"]["email_verified_at"]
    assert datetime.fromisoformat(first) <= datetime.now(timezone.utc)

    member = client.get(url(gent), headers=ADMIN).json
    assert member["email_verified_at"] == first and member["version"] == 2
    assert client.get(url(gent), headers=gp(gent)).json["email_verified_at"] == first
    assert client.get(url(other), headers=ADMIN).json["email_verified_at"] is None
    assert pending_types(gent) == ["member.signed_up", "member.email_verified"]
    [verified] = [e for e in outbox.pending(db(), gent) if e["type"].endswith("email_verified.v1")]
    ev.validate(verified)
    assert verified["data"]["email_verified_at"] and verified["data"]["status"] == "pending"
    assert "personal" not in verified["data"]  # the address travels on the contacts topic only
    [contact] = [e[outbox.RECORD_VALUE] for e in db()[outbox.OUTBOX].find({"subject": gent}) if outbox.is_record(e)]
    assert contact["email"] == "An1@praktijk.be"  # domain lower-cased at sign-up

    # A second sign-in changes nothing: the first proof counts.
    again = sign_in(client, "an1@praktijk.be").json
    assert {m["email_verified_at"] for m in again["memberships"]} == {first, got["zg-utrecht"]["email_verified_at"]}
    assert pending_types(gent) == ["member.signed_up", "member.email_verified"]
    assert client.get(url(gent), headers=ADMIN).json["version"] == 2


def test_sign_in_of_unknown_erased_or_invalid_addresses(client):
    assert sign_in(client, "nobody@example.org").json == {"email": "nobody@example.org", "memberships": [],
                                                               "staff": None}
    m = sign_up(client, 1)
    assert client.delete(url(m), headers=ADMIN).status_code == 200
    assert sign_in(client, "an1@praktijk.be").json["memberships"] == []
    assert "email" in problem(sign_in(client, "not an address"), 422)["errors"]
    assert "email" in problem(client.post("/v1/sign-ins", json={}, headers=PORTAL), 422)["errors"]
    assert db().members.count_documents({"email_verified_at": {"$exists": True}}) == 0


@pytest.mark.parametrize("headers, status", [
    ({}, 401), (bearer("platform-admin"), 403), (bearer("region-admin", "elz-gent"), 403),
    (bearer("gp", "elz-gent", "m_x"), 403), (bearer("integrator", "elz-gent"), 403),
])
def test_only_the_portal_reports_sign_ins(client, headers, status):
    m = sign_up(client, 1)
    problem(sign_in(client, "an1@praktijk.be", headers), status)
    assert client.get(url(m), headers=ADMIN).json["email_verified_at"] is None


def test_the_portal_reads_every_region_and_nothing_else(client):
    r = client.get("/v1/regions", headers=PORTAL)
    assert r.status_code == 200 and {x["id"] for x in r.json["items"]} == {"elz-gent", "zg-utrecht"}
    assert client.get("/v1/regions/zg-utrecht", headers=PORTAL).json["name"] == "Zorggroep Utrecht"
    problem(client.get("/v1/regions/nowhere", headers=PORTAL), 404)
    m = sign_up(client, 1)
    for method, path in [("get", "/v1/regions/elz-gent/members"), ("get", url(m)), ("get", url(m, "/history")),
                         ("get", url(m, "/export")), ("get", "/v1/regions/elz-gent/capacity"),
                         ("get", "/v1/regions/elz-gent/history"), ("post", url(m, "/approve")),
                         ("delete", url(m))]:
        problem(getattr(client, method)(path, headers=PORTAL), 403)
    problem(client.patch("/v1/regions/elz-gent", json={"name": "X"}, headers=PORTAL), 403)
    problem(client.post("/v1/regions", json={}, headers=PORTAL), 403)
    # A token that is portal *and* something else is not trusted across regions.
    both = {"Authorization": "Bearer " + mint(settings("members"), roles=["portal", "region-admin"],
                                               region="elz-gent")}
    problem(client.get("/v1/regions/zg-utrecht", headers=both), 404)
    assert client.get("/v1/regions", headers=both).json["items"][0]["id"] == "elz-gent"


# -- email_verified_at in lists, stale sign-ups -----------------------------------------------------
def test_list_filters_on_verification_and_leaves_stale_sign_ups_out(client):
    fresh = sign_up(client, 1)                    # pending, unverified, new: listed
    stale = sign_up(client, 2)                    # pending, unverified, old: stale
    proven = sign_up(client, 3)                   # pending, old but verified: listed
    approved = sign_up(client, 4)                 # active, old, unverified: listed
    assert client.post(url(approved, "/approve"), headers=ADMIN).status_code == 200
    assert sign_in(client, "an3@praktijk.be").status_code == 200
    for m in (stale, proven, approved):
        backdate(m, 8)

    assert sorted(listed(client)) == sorted([fresh, proven, approved])
    assert listed(client, "?stale=true") == [stale]
    assert sorted(listed(client, "?stale=false")) == sorted([fresh, proven, approved])
    assert listed(client, "?email_verified=true") == [proven]
    assert sorted(listed(client, "?email_verified=false")) == sorted([fresh, approved])
    assert listed(client, "?status=pending&stale=true&email_verified=false") == [stale]
    assert problem(client.get("/v1/regions/elz-gent/members?stale=maybe", headers=ADMIN), 422)["errors"]
    # still a member you can open, and a day younger it is not stale
    assert client.get(url(stale), headers=ADMIN).status_code == 200
    backdate(stale, 6)
    assert stale in listed(client)


def test_stale_sign_ups_count_nowhere(client):
    active_one = sign_up(client, 1)
    assert client.post(url(active_one, "/approve"), headers=ADMIN).status_code == 200
    stale = sign_up(client, 2)
    backdate(stale, 30)
    totals = client.get("/v1/regions/elz-gent/capacity", headers=ADMIN).json["totals"]
    assert totals["active"] == 1


def test_the_purge_erases_stale_sign_ups_through_erasure(client, capsys):
    keep_new, stale, keep_verified = sign_up(client, 1), sign_up(client, 2), sign_up(client, 3)
    assert sign_in(client, "an3@praktijk.be").status_code == 200
    backdate(stale, 8)
    backdate(keep_verified, 8)

    from hecht.cli import main
    assert main(["purge-unconfirmed", "--dry-run"]) == 0
    assert stale in capsys.readouterr().out
    assert client.get(url(stale), headers=ADMIN).json["status"] == "pending"
    assert main(["purge-unconfirmed", "--days", "9"]) == 0     # not stale after 9 days: kept
    assert client.get(url(stale), headers=ADMIN).json["status"] == "pending"

    assert main(["purge-unconfirmed"]) == 0
    out = capsys.readouterr().out
    assert "erased 1 stale sign-up" in out and stale in out
    tomb = client.get(url(stale), headers=ADMIN).json
    assert tomb["status"] == "erased" and tomb.get("email") is None
    assert pending_types(stale)[-1] == "member.erased"
    assert not any("personal" in e["data"] for e in outbox.pending(db(), stale))
    for m in (keep_new, keep_verified):
        assert client.get(url(m), headers=ADMIN).json["status"] == "pending"
    assert handlers.purge_unconfirmed(db(), confirm_days=7) == []


def test_the_purge_keeps_a_sign_up_confirmed_after_it_looked(client):
    """The guarded erasure re-checks staleness on the state it replaces."""
    m = sign_up(client, 1)
    backdate(m, 8)
    assert sign_in(client, "an1@praktijk.be").status_code == 200
    cmd = domain.EraseMember("elz-gent", m, only_if_stale=(datetime.now(timezone.utc), 7))
    with pytest.raises(Conflict):
        handlers.handle(cmd, db())
    assert client.get(url(m), headers=ADMIN).json["status"] == "pending"


def test_a_new_address_needs_its_own_proof(client):
    m = sign_up(client, 1)
    sign_in(client, "an1@praktijk.be")
    assert client.patch(url(m), json={"language": "fr"}, headers=gp(m)).json["email_verified_at"]
    assert client.patch(url(m), json={"email": "AN1@praktijk.be"}, headers=gp(m)).json["email_verified_at"]
    r = client.patch(url(m), json={"email": "new@praktijk.be"}, headers=gp(m))
    assert r.status_code == 200 and r.json["email_verified_at"] is None
    assert sign_in(client, "an1@praktijk.be").json["memberships"] == []
    assert sign_in(client, "new@praktijk.be").json["memberships"][0]["email_verified_at"]


# -- export -----------------------------------------------------------------------------------------
def test_a_gp_exports_their_own_membership_and_history(client):
    m = sign_up(client, 1)
    other = sign_up(client, 2)
    sign_in(client, "an1@praktijk.be")
    r = client.get(url(m, "/export"), headers=gp(m))
    assert r.status_code == 200, r.get_json()
    body = r.json
    assert body["member"]["id"] == m and body["member"]["email"] == "an1@praktijk.be"
    assert body["member"]["email_verified_at"] and body["exported_at"]
    assert [ev.short_type(e["type"]) for e in body["history"]] == ["member.signed_up", "member.email_verified"]
    assert client.get(url(m, "/export"), headers=ADMIN).status_code == 200
    problem(client.get(url(other, "/export"), headers=gp(m)), 403)
    problem(client.get(url(m, "/export"), headers=bearer("region-admin", "zg-utrecht")), 404)
    problem(client.get(url("m_nobody", "/export"), headers=ADMIN), 404)
    problem(client.get(url(m, "/export"), headers=bearer("integrator", "elz-gent")), 403)

    assert client.delete(url(m), headers=ADMIN).status_code == 200
    after = client.get(url(m, "/export"), headers=ADMIN).json
    assert after["member"]["status"] == "erased" and "email" not in after["member"]
    assert not any("personal" in e["data"] for e in after["history"])


def test_openapi_documents_the_portal_endpoints(client):
    spec = client.get("/openapi.json").json
    assert "/v1/sign-ins" in spec["paths"]
    export = spec["paths"]["/v1/regions/{region_id}/members/{member_id}/export"]["get"]
    assert "200" in export["responses"]
    schemas = spec["components"]["schemas"]
    assert "email_verified_at" in schemas["Member"]["properties"]
    assert {"member", "history"} <= set(schemas["MemberExport"]["properties"])
