"""The portal reads agreements of every region for its public pages, never drafts (docs/PORTAL.md)."""
from __future__ import annotations

from tests.conftest import bearer
from tests.integration.test_agreements_support import (  # noqa: F401 - fixtures
    OTHER_REGION, REGION, admin, client, clock, drafted, mandated, seed_region)

PORTAL = bearer("portal")
BASE = f"/v1/regions/{REGION}/agreements"


def _ids(r) -> list[str]:
    assert r.status_code == 200, r.get_json()
    return [a["id"] for a in r.get_json()["items"]]


def test_the_portal_lists_and_reads_agreements_but_never_drafts(client):
    voters = seed_region()
    draft = drafted(client)
    passed = mandated(client, voters)
    elsewhere = drafted(client, OTHER_REGION)

    assert _ids(client.get(BASE, headers=PORTAL)) == [passed["id"]]
    assert sorted(_ids(client.get(BASE, headers=admin()))) == sorted([draft["id"], passed["id"]])
    assert _ids(client.get(f"{BASE}?status=draft", headers=PORTAL)) == []
    assert _ids(client.get(f"{BASE}?status=mandated", headers=PORTAL)) == [passed["id"]]
    assert _ids(client.get(f"/v1/regions/{OTHER_REGION}/agreements", headers=PORTAL)) == []

    got = client.get(f"{BASE}/{passed['id']}", headers=PORTAL)
    assert got.status_code == 200 and got.get_json()["status"] == "mandated"
    for path in (f"{BASE}/{draft['id']}", f"/v1/regions/{OTHER_REGION}/agreements/{elsewhere['id']}"):
        r = client.get(path, headers=PORTAL)
        assert r.status_code == 404 and r.mimetype == "application/problem+json", r.get_json()
    assert client.get(f"{BASE}/{draft['id']}", headers=admin()).status_code == 200


def test_an_amendment_in_draft_is_not_in_the_chain_the_portal_sees(client, clock):
    from tests.integration.test_agreements_support import active
    voters = seed_region()
    a = active(client, voters, clock)
    r = client.post(f"{BASE}/{a['id']}/amendments", json={"title": "Amended"}, headers=admin())
    assert r.status_code == 201, r.get_json()
    seen = client.get(f"{BASE}/{a['id']}", headers=PORTAL).get_json()["versions"]
    assert [v["status"] for v in seen] == ["active"]
    assert len(client.get(f"{BASE}/{a['id']}", headers=admin()).get_json()["versions"]) == 2


def test_the_portal_changes_nothing_and_sees_no_tally_or_history(client):
    voters = seed_region()
    a = mandated(client, voters)
    url = f"{BASE}/{a['id']}"
    for method, path, body in [("get", f"{url}/mandate", None), ("get", f"{url}/history", None),
                               ("post", BASE, {}), ("post", f"{url}/sign", None),
                               ("get", f"{url}/mandate/votes/{voters[0]}", None),
                               ("put", f"{url}/mandate/votes/{voters[0]}", {"choice": "for"})]:
        r = getattr(client, method)(path, json=body, headers=PORTAL)
        assert r.status_code == 403, (method, path, r.get_json())


def test_member_email_verified_keeps_the_electorate_read_model_current(client):
    """A verified address changes no status: the member stays in the electorate, and the read
    model moves on to the event's sequence (so an older event cannot overwrite it)."""
    from hecht import events as ev
    from services.agreements.repository import MEMBERS_VIEW, ReadModel
    from tests.integration.test_agreements_support import agreements_db, apply_directly, member_event
    voters = seed_region()
    data = dict(member_event(voters[0], "active", 3)["data"], email_verified_at="2026-12-03T10:00:00Z")
    apply_directly(ev.build("member.email_verified", region=REGION, subject=voters[0], sequence=3, data=data,
                            source=f"/regions/{REGION}/members"))
    assert agreements_db()[MEMBERS_VIEW].find_one({"_id": voters[0]})["sequence"] == 3
    assert ReadModel(agreements_db()).active_members(REGION) == sorted(voters)
