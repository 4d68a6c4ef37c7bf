"""Integrator contacts as identities (issue 22): notify matches the portal's sign-in on the key of
hecht/emails.py, not on ``lower()`` (which made the Kelvin sign a ``k``), answers the portal's
``POST /v1/integrator-sign-in-addresses`` with the stored contact addresses, and recomputes the
keys stored by earlier releases at start-up."""
from __future__ import annotations

import pytest

from services.notify.repository import RegionBook, ensure_indexes
from tests.conftest import bearer
from tests.integration.test_notify_integrators import ADMIN, APPS, invite, problem
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    REGION, fast, notify_client, notify_db)

PORTAL = bearer("portal")


def addresses(client, email: str) -> list[dict]:
    r = client.post("/v1/integrator-sign-in-addresses", json={"email": email}, headers=PORTAL)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["addresses"]


def signed_in(client, email: str) -> list[dict]:
    r = client.post("/v1/integrator-sign-ins", json={"email": email}, headers=PORTAL)
    assert r.status_code in (200, 422), r.get_data(as_text=True)
    return r.json.get("integrators", [])


def test_contacts_are_matched_on_the_key_and_the_stored_address_is_answered(notify_client):
    app = invite(notify_client, email="Ops.Team@Strasse.Example.ORG")
    kate = invite(notify_client, email="kate@example.org", name="Kate")
    assert app["contact_email"] == "Ops.Team@strasse.example.org"
    # Upper-case ASCII reaches the application; the answer is the address it stored.
    assert addresses(notify_client, "OPS.TEAM@STRASSE.EXAMPLE.ORG") == [
        {"email": "Ops.Team@strasse.example.org", "language": "en"}]
    # Never the lookalikes: ß is not ss, its punycode is another domain, the Kelvin sign is not k
    # (``"\u212a".lower() == "k"``: the rule before issue 22 matched it).
    for typed in ("ops.team@straße.example.org", "ops.team@xn--strae-oqa.example.org", "\u212Aate@example.org",
                  "\u212AATE@example.org", "kate\u200b@example.org"):
        if typed.startswith("ops"):
            assert addresses(notify_client, typed) == []
        assert signed_in(notify_client, typed) == []
    for doc in notify_db().integrators.find({"_id": {"$in": [app["id"], kate["id"]]}}):
        assert doc["status"] == "invited", "a lookalike activated the application"
    assert [i["id"] for i in signed_in(notify_client, "Kate@Example.org")] == [kate["id"]]


@pytest.mark.parametrize("headers, status", [({}, 401), (ADMIN, 403), (bearer("platform-admin"), 403),
                                             (bearer("integrator", REGION), 403)])
def test_only_the_portal_asks_for_contact_addresses(notify_client, headers, status):
    invite(notify_client, email="ops@example.org")
    problem(notify_client.post("/v1/integrator-sign-in-addresses", json={"email": "ops@example.org"},
                               headers=headers), status)


def test_a_non_ascii_contact_only_where_the_region_opts_in(notify_client):
    body = {"name": "Jürgen", "contact_email": "jürgen@example.org", "event_types": ["agreement.*"]}
    p = problem(notify_client.post(APPS, json=body, headers=ADMIN), 422)
    assert "contact_email" in p["errors"]
    RegionBook(notify_db()).apply(REGION, 1, "ELZ", "BE", True)
    r = notify_client.post(APPS, json=body, headers=ADMIN)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert addresses(notify_client, "jürgen@example.org") == [{"email": "jürgen@example.org", "language": "en"}]
    assert addresses(notify_client, "jurgen@example.org") == []
    # A change of the contact follows the same rule.
    RegionBook(notify_db()).apply(REGION, 2, "ELZ", "BE", False)
    p = problem(notify_client.patch(f"{APPS}/{r.json['id']}", json={"contact_email": "zoë@example.org"},
                                    headers=ADMIN), 422)
    assert "contact_email" in p["errors"]


def test_contacts_stored_with_the_lower_case_key_are_rekeyed_at_start_up(notify_client):
    """Before issue 22 the key was ``contact_email_lc`` = ``lower()`` of the address."""
    app = invite(notify_client, email="ops@xn--strae-oqa.example.org")
    notify_db().integrators.update_one({"_id": app["id"]}, {
        "$set": {"contact_email": "Ops@straße.example.org", "contact_email_lc": "ops@straße.example.org"},
        "$unset": {"contact_email_key": ""}})
    ensure_indexes(notify_db())
    ensure_indexes(notify_db())   # idempotent
    doc = notify_db().integrators.find_one({"_id": app["id"]})
    assert doc["contact_email_key"] == "ops@xn--strae-oqa.example.org" and "contact_email_lc" not in doc
    assert addresses(notify_client, "OPS@xn--strae-oqa.example.org") == [
        {"email": "Ops@straße.example.org", "language": "en"}]
    assert addresses(notify_client, "ops@strasse.example.org") == []
    assert [i["id"] for i in signed_in(notify_client, "ops@straße.example.org")] == [app["id"]]
