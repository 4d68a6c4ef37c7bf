"""E-mail addresses as identities in the members service (issue 22, the account takeover): the
keys of hecht/emails.py for members and staff, the portal's ``POST /v1/sign-in-addresses``, keys
stored by earlier releases (``casefold()``) recomputed at start-up, and the region's opt-in to
non-ASCII local parts."""
from __future__ import annotations

import pytest

from services.members.repository import _RECENT_REGIONS, ensure_indexes
from tests.conftest import bearer
from tests.integration.test_members_api import (  # noqa: F401 - fixtures
    ADMIN, app, client, db, problem, sign_up, url)

PLATFORM = bearer("platform-admin")
PORTAL = bearer("portal")
VICTIM = "victim@strasse.example.org"
PUNYCODE = "victim@xn--strae-oqa.example.org"   # straße: another DNS domain, anyone may register it
SHARP_S = "victim@straße.example.org"


def addresses(client, email: str, headers: dict = PORTAL) -> list[dict]:
    r = client.post("/v1/sign-in-addresses", json={"email": email}, headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["addresses"]


def signed_in(client, email: str) -> dict:
    r = client.post("/v1/sign-ins", json={"email": email}, headers=PORTAL)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def invite_staff(client, email: str, **kw) -> dict:
    r = client.post("/v1/staff", json={"email": email, "name": "Pat Admin", **kw}, headers=PLATFORM)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.json


def test_sharp_s_and_punycode_never_reach_the_strasse_account(client):
    gp = sign_up(client, 1, email=VICTIM, language="fr")
    staff = invite_staff(client, "root@strasse.example.org", platform_admin=True)
    for typed in (PUNYCODE, SHARP_S, "victim@STRAẞE.example.org"):
        assert addresses(client, typed) == []
        got = signed_in(client, typed)
        assert got["memberships"] == [] and got["staff"] is None
    for typed in ("root@xn--strae-oqa.example.org", "root@straße.example.org"):
        assert addresses(client, typed) == [] and signed_in(client, typed)["staff"] is None
    # Nothing was proven by those sign-ins.
    assert client.get(url(gp), headers=ADMIN).json["email_verified_at"] is None
    assert client.get(f"/v1/staff/{staff['id']}", headers=PLATFORM).json["status"] == "invited"


def test_upper_case_ascii_names_the_account_and_the_answer_is_the_stored_address(client):
    sign_up(client, 1, email="An.Peeters@Praktijk.be", language="fr")
    sign_up(client, 1, region="zg-utrecht", email="an.peeters@praktijk.be",
            registration={"scheme": "BIG", "number": "19012345601"},
            practice={"name": "Praktijk U", "postcode": "3511 AB", "municipality": "Utrecht"})
    invite_staff(client, "AN.PEETERS@praktijk.be", admin_of=["elz-gent"], language="en")
    # Each distinct stored address once, with the person's language; never the typed one.
    got = addresses(client, "  AN.PEETERS@PRAKTIJK.BE ")
    assert sorted(got, key=lambda a: a["email"]) == [
        {"email": "AN.PEETERS@praktijk.be", "language": "en"},
        {"email": "An.Peeters@praktijk.be", "language": "fr"},
        {"email": "an.peeters@praktijk.be", "language": "nl"}]
    assert addresses(client, "nobody@praktijk.be") == []


def test_erased_members_and_revoked_staff_get_no_address(client):
    m = sign_up(client, 1)
    s = invite_staff(client, "an1@praktijk.be", admin_of=["elz-gent"])
    assert {a["email"] for a in addresses(client, "AN1@praktijk.be")} == {"an1@praktijk.be"}
    assert client.delete(url(m), headers=ADMIN).status_code == 200
    client.post(f"/v1/staff/{s['id']}/revoke", headers=PLATFORM)
    assert addresses(client, "an1@praktijk.be") == []


@pytest.mark.parametrize("headers, status", [
    ({}, 401), (PLATFORM, 403), (ADMIN, 403), (bearer("gp", "elz-gent", "m_x"), 403),
    (bearer("integrator", "elz-gent"), 403),
])
def test_only_the_portal_asks_for_sign_in_addresses(client, headers, status):
    sign_up(client, 1)
    problem(client.post("/v1/sign-in-addresses", json={"email": "an1@praktijk.be"}, headers=headers), status)


def test_a_typed_address_that_is_not_one_is_a_422(client):
    for bad in ("not an address", "\u212Aate@example.org", "a@exa mple.org"):
        p = problem(client.post("/v1/sign-in-addresses", json={"email": bad}, headers=PORTAL), 422)
        assert "email" in p["errors"]


# -- keys stored by earlier releases -------------------------------------------------------------
def test_keys_stored_with_casefold_are_recomputed_at_start_up(client):
    """Before issue 22 the key was ``casefold()`` of the address, and sign-up stored the domain in
    Unicode (email_validator): ``victim@straße.…`` was keyed ``victim@strasse.…``. Start-up (the
    indexes, ``hecht migrate``) recomputes such keys, so the old document is found under the new
    rule, and no longer by the lookalike."""
    m = sign_up(client, 1, email=PUNYCODE)
    s = invite_staff(client, "root@straße.example.org", platform_admin=True)
    db().members.update_one({"_id": m}, {"$set": {"email": SHARP_S, "email_key": SHARP_S.casefold()}})
    db().staff.update_one({"_id": s["id"]}, {"$set": {"email": "root@straße.example.org",
                                                      "email_key": "root@strasse.example.org"}})
    # An old document with an ASCII address keeps its key (casefold is the new key there).
    ascii_member = sign_up(client, 2, email="Old.Ascii@Praktijk.be")
    before = db().members.find_one({"_id": ascii_member})["email_key"]

    ensure_indexes(db())
    ensure_indexes(db())   # idempotent

    assert db().members.find_one({"_id": m})["email_key"] == "victim@xn--strae-oqa.example.org"
    assert db().staff.find_one({"_id": s["id"]})["email_key"] == "root@xn--strae-oqa.example.org"
    assert db().members.find_one({"_id": ascii_member})["email_key"] == before == "old.ascii@praktijk.be"
    # Found under the new rule: by its own domain, in either form ...
    for typed in (SHARP_S, PUNYCODE):
        assert [x["member_id"] for x in signed_in(client, typed)["memberships"]] == [m]
        assert addresses(client, typed) == [{"email": SHARP_S, "language": "nl"}]
    assert signed_in(client, "root@xn--strae-oqa.example.org")["staff"]["id"] == s["id"]
    # ... and no longer by the lookalike ``strasse``.
    assert signed_in(client, VICTIM)["memberships"] == []
    assert signed_in(client, "root@strasse.example.org")["staff"] is None
    assert addresses(client, VICTIM) == []


# -- the region's opt-in to non-ASCII local parts --------------------------------------------------
def test_non_ascii_local_parts_only_where_the_region_opts_in(client):
    p = problem(client.post("/v1/regions/elz-gent/members", json={
        **_form(), "email": "jürgen@praktijk.be"}, headers=ADMIN), 422)
    assert "ASCII" in p["errors"]["email"][0]
    region = client.get("/v1/regions/elz-gent", headers=ADMIN)
    assert region.json["unicode_email_local_parts"] is False

    r = client.patch("/v1/regions/elz-gent", json={"unicode_email_local_parts": True},
                     headers={**PLATFORM, "If-Match": region.headers["ETag"]})
    assert r.status_code == 200 and r.json["unicode_email_local_parts"] is True, r.get_data(as_text=True)
    _RECENT_REGIONS.clear()   # sign-up reads the region as of at most 5 s ago
    m = sign_up(client, 1, email="Jürgen@Praktijk.BE")
    assert client.get(url(m), headers=ADMIN).json["email"] == "Jürgen@praktijk.be"
    # Matched without folding anything but ASCII letters: ü is not u, and not Ü.
    assert [x["member_id"] for x in signed_in(client, "jürgen@praktijk.be")["memberships"]] == [m]
    assert signed_in(client, "jurgen@praktijk.be")["memberships"] == []
    assert signed_in(client, "JÜRGEN@praktijk.be")["memberships"] == []
    # Staff belong to no region: ASCII only.
    r = client.post("/v1/staff", json={"email": "jürgen@praktijk.be", "name": "J", "platform_admin": True},
                    headers=PLATFORM)
    assert "email" in problem(r, 422)["errors"]


def _form() -> dict:
    from tests.integration.test_members_api import form
    return form(1)
