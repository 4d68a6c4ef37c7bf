"""Issue 22, item 11 ("Lax input") for the members and agreements services, on the real stack:
an empty PATCH of a region or a staff account is 422 and changes nothing (no version spent, no
event); control characters in any name-like field are 422; a document URL with userinfo is 422.
The shared validators are hecht/validation.py (unit tests: tests/unit/test_validation.py)."""
from __future__ import annotations

import pytest

from hecht import outbox
from tests.conftest import bearer, problem
from tests.integration.test_agreements_support import (
    REGION, FakeClock, admin as agreements_admin, agreements_db, body as agreement_body, drafted, known_region)
from tests.integration.test_members_api import ADMIN, GENT, app, client, db, form  # noqa: F401 - fixtures

PLATFORM = bearer("platform-admin")
CONTROL = ["Gent\n", "Gent\rX", "Ge\x0bnt", "\x00Gent", "Gent\x7f", "Gent\x85", "Gent\u2028Melle", "Gent\t"]


def _events(subject: str) -> int:
    return len(outbox.history(db(), subject))


# -- empty PATCH: 422, nothing changed ------------------------------------------------------------
@pytest.mark.parametrize("patch", [{}, {"confirm_affected": True}, {"mandate_policy": {}}])
def test_an_empty_region_patch_is_422_and_spends_no_version(client, patch):
    before = client.get(f"/v1/regions/{GENT['id']}", headers=ADMIN)
    events = _events(GENT["id"])
    for headers in (ADMIN, {**ADMIN, "If-Match": before.headers["ETag"]}, PLATFORM):
        p = problem(client.patch(f"/v1/regions/{GENT['id']}", json=patch, headers=headers), 422)
        assert "_schema" in p["errors"], p
    after = client.get(f"/v1/regions/{GENT['id']}", headers=ADMIN)
    assert after.headers["ETag"] == before.headers["ETag"] and after.json == before.json
    assert _events(GENT["id"]) == events
    assert client.patch(f"/v1/regions/{GENT['id']}", json={"name": "ELZ Gent-Zuid"}, headers=ADMIN).status_code == 200


def test_an_empty_staff_patch_is_422_and_spends_no_version(client):
    r = client.post("/v1/staff", json={"email": "coord@zone.be", "name": "Ann Smet", "admin_of": ["elz-gent"]}, headers=PLATFORM)
    assert r.status_code == 201, r.json
    url = f"/v1/staff/{r.json['id']}"
    before = client.get(url, headers=PLATFORM)
    events = _events(r.json["id"])
    for headers in (PLATFORM, {**PLATFORM, "If-Match": before.headers["ETag"]}):
        assert "_schema" in problem(client.patch(url, json={}, headers=headers), 422)["errors"]
    after = client.get(url, headers=PLATFORM)
    assert after.headers["ETag"] == before.headers["ETag"] and after.json == before.json
    assert _events(r.json["id"]) == events
    assert client.patch(url, json={"language": "fr"}, headers=PLATFORM).status_code == 200


# -- control characters in names and municipalities (members) --------------------------------------
@pytest.mark.parametrize("bad", CONTROL)
def test_members_refuse_control_characters_in_every_name_like_field(client, bad):
    region = {**GENT, "id": "elz-x"}
    attempts = [
        ("post", "/v1/regions", {**region, "name": bad}, PLATFORM, "name"),
        ("post", "/v1/regions", {**region, "municipalities": ["Melle", bad]}, PLATFORM, "municipalities"),
        ("patch", f"/v1/regions/{GENT['id']}", {"name": bad}, ADMIN, "name"),
        ("patch", f"/v1/regions/{GENT['id']}", {"municipalities": ["Gent", bad]}, ADMIN, "municipalities"),
        ("post", f"/v1/regions/{GENT['id']}/members", form(1, given_name=f"An{bad}"), ADMIN, "given_name"),
        ("post", f"/v1/regions/{GENT['id']}/members", form(2, family_name=bad), ADMIN, "family_name"),
        ("post", f"/v1/regions/{GENT['id']}/members",
         form(3, practice={"name": bad, "postcode": "9000", "municipality": "Gent"}), ADMIN, "practice"),
        ("post", f"/v1/regions/{GENT['id']}/members",
         form(4, practice={"name": "P", "postcode": "9000", "municipality": bad}), ADMIN, "practice"),
        ("post", "/v1/staff", {"email": "x@zone.be", "name": bad, "admin_of": ["elz-gent"]}, PLATFORM, "name"),
        ("post", f"/v1/regions/{GENT['id']}/staff", {"email": "y@zone.be", "name": bad}, ADMIN, "name"),
    ]
    version = client.get(f"/v1/regions/{GENT['id']}", headers=ADMIN).headers["ETag"]
    for method, url, payload, headers, field in attempts:
        p = problem(getattr(client, method)(url, json=payload, headers=headers), 422)
        assert field in p["errors"], (url, field, p)
    assert client.get(f"/v1/regions/{GENT['id']}", headers=ADMIN).headers["ETag"] == version
    assert db().regions.count_documents({"_id": "elz-x"}) == 0
    assert db().members.count_documents({}) == 0 and db().staff.count_documents({}) == 0


def test_members_refuse_control_characters_in_profile_and_staff_changes(client):
    m = client.post(f"/v1/regions/{GENT['id']}/members", json=form(1), headers=ADMIN)
    assert m.status_code == 201, m.json
    url = f"/v1/regions/{GENT['id']}/members/{m.json['id']}"
    for change, field in (({"family_name": "Peeters\nBcc: x"}, "family_name"),
                          ({"practice": {"municipality": "Gent\r"}}, "practice"),
                          ({"practice": {"name": "P\x0b"}}, "practice")):
        assert field in problem(client.patch(url, json=change, headers=ADMIN), 422)["errors"]
    s = client.post("/v1/staff", json={"email": "coord@zone.be", "name": "Ann Smet", "admin_of": ["elz-gent"]}, headers=PLATFORM).json
    assert "name" in problem(client.patch(f"/v1/staff/{s['id']}", json={"name": "Ann\nSmet"},
                                          headers=PLATFORM), 422)["errors"]


# -- agreements --------------------------------------------------------------------------------------
@pytest.fixture
def agreements(hecht_env):
    from services.agreements.app import create_app
    known_region(REGION)
    return create_app({"HECHT_CLOCK": FakeClock()}).test_client()


@pytest.mark.parametrize("bad", CONTROL)
def test_agreements_refuse_control_characters_in_titles_partners_and_municipalities(agreements, bad):
    partner = {"name": "AZ Sint-Lucas", "kind": "hospital"}
    for overrides, field in (({"title": bad}, "title"),
                             ({"partners": [{**partner, "name": bad}]}, "partners"),
                             ({"partners": [{**partner, "identifier": bad}]}, "partners"),
                             ({"municipalities": ["Merelbeke", bad]}, "municipalities"),
                             ({"commitments": [{"party": bad, "text": "x"}]}, "commitments"),
                             ({"documents": [{"title": bad, "url": "https://example.org/p.pdf"}]}, "documents")):
        p = problem(agreements.post(f"/v1/regions/{REGION}/agreements", json=agreement_body(**overrides),
                                    headers=agreements_admin()), 422)
        assert field in p["errors"], (overrides, p)
    assert agreements_db().agreements.count_documents({}) == 0
    a = drafted(agreements)
    for change in ({"title": bad}, {"municipalities": [bad]}, {"partners": [{**partner, "name": bad}]}):
        p = problem(agreements.patch(f"/v1/regions/{REGION}/agreements/{a['id']}", json=change,
                                     headers={**agreements_admin(), "If-Match": '"1"'}), 422)
        assert set(change) <= set(p["errors"]), p
    # a summary and a commitment's text are prose: line breaks are fine there
    ok = agreements.post(f"/v1/regions/{REGION}/agreements", headers=agreements_admin(), json=agreement_body(
        summary="First line.\nSecond line.", commitments=[{"party": "region", "text": "One.\r\nTwo."}]))
    assert ok.status_code == 201, ok.get_json()


@pytest.mark.parametrize("url", [
    "https://javascript:alert(1)@example.org/",
    "https://user@example.org/protocol.pdf",
    "https://:secret@example.org/",
    "https://example.org@evil.example/",
    "http://example.org/protocol.pdf",
    "javascript:alert(1)",
    "https://exa mple.org/",
    "https://example.org/a\nb",
])
def test_agreement_document_urls_are_https_without_userinfo(agreements, url):
    doc = {"title": "Protocol", "url": url}
    p = problem(agreements.post(f"/v1/regions/{REGION}/agreements", json=agreement_body(documents=[doc]),
                                headers=agreements_admin()), 422)
    assert "documents" in p["errors"], p
    a = drafted(agreements)
    p = problem(agreements.patch(f"/v1/regions/{REGION}/agreements/{a['id']}", json={"documents": [doc]},
                                 headers={**agreements_admin(), "If-Match": '"1"'}), 422)
    assert "documents" in p["errors"], p
    assert agreements_db().agreements.count_documents({}) == 1
