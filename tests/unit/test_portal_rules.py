"""Pure rules behind docs/PORTAL.md: the portal role's scope, e-mail ownership and stale sign-ups,
and the portal links in e-mails."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hecht import events as ev
from hecht.auth import ROLES, Principal
from hecht.config import settings
from hecht.errors import Invalid, InvalidTransition
from services.members import domain
from services.notify import mail
from services.notify.domain import LINKS, TEMPLATES, portal_link

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
BE = domain.Region(id="elz-gent", name="ELZ Gent", country="BE", kind="eerstelijnszone", municipalities=["Gent"])
SIGN_UP = {"given_name": "An", "family_name": "De Smet", "email": "An.DeSmet@Example.BE", "language": "nl",
           "registration": {"scheme": "RIZIV", "number": "10829059003"},
           "practice": {"name": "Praktijk", "postcode": "9000", "municipality": "Gent"}}


# -- the portal role --------------------------------------------------------------------------
def test_the_portal_is_a_role_that_acts_in_every_region_only_on_its_own():
    assert "portal" in ROLES
    portal = Principal(sub="svc:portal", roles=frozenset({"portal"}))
    assert portal.is_portal and portal.may_act_in("elz-gent") and portal.may_act_in("zg-utrecht")
    mixed = Principal(sub="x", roles=frozenset({"portal", "region-admin"}), region="elz-gent")
    assert not mixed.is_portal and mixed.may_act_in("elz-gent") and not mixed.may_act_in("zg-utrecht")
    gp = Principal(sub="member:m_1", roles=frozenset({"gp"}), region="elz-gent", member="m_1")
    assert not gp.is_portal and not gp.may_act_in("zg-utrecht")


def test_settings_defaults_and_overrides(monkeypatch):
    for name in ("HECHT_PORTAL_URL", "HECHT_SIGNUP_CONFIRM_DAYS"):
        monkeypatch.delenv(name, raising=False)
    s = settings("notify")
    assert s.portal_url == "http://127.0.0.1:8000" and s.signup_confirm_days == 7
    monkeypatch.setenv("HECHT_PORTAL_URL", "https://portal.example/")
    monkeypatch.setenv("HECHT_SIGNUP_CONFIRM_DAYS", "3")
    s = settings("members")
    assert s.portal_url == "https://portal.example" and s.signup_confirm_days == 3


# -- e-mail ownership -----------------------------------------------------------------------------
def _member(status: str = "pending", days_ago: float = 0) -> domain.Member:
    m = domain.sign_up("m_1", BE, SIGN_UP)
    m.status = status
    m.signed_up_at = NOW - timedelta(days=days_ago)
    return m


def test_verifying_the_address_counts_once_and_emits_a_contract_event():
    m = _member()
    assert m.verify_email(NOW) == "member.email_verified" and m.email_verified_at == NOW
    data = m.verified_event_data()
    assert data["email_verified_at"] == "2026-12-03T10:00:00Z" and data["status"] == "pending"
    ev.build("member.email_verified", region="elz-gent", subject="m_1", sequence=2, data=data,
             source="/regions/elz-gent/members")  # validates against the published schema
    assert m.verify_email(NOW + timedelta(days=1)) is None and m.email_verified_at == NOW


def test_an_erased_member_cannot_verify_and_erasure_forgets_the_proof():
    m = _member("active")
    m.verify_email(NOW)
    m.erase()
    assert m.email_verified_at is None
    with pytest.raises(InvalidTransition):
        m.verify_email(NOW)


def test_a_changed_address_needs_a_new_proof():
    m = _member("active")
    m.verify_email(NOW)
    m.update_profile({"email": "an.desmet@example.be"}, BE)  # the same address, other case
    assert m.email_verified_at == NOW
    m.update_profile({"email": "other@example.be"}, BE)
    assert m.email_verified_at is None


def test_the_email_schema_refuses_data_without_the_time():
    m = _member()
    with pytest.raises(ev.InvalidEvent):
        ev.build("member.email_verified", region="elz-gent", subject="m_1", sequence=2, data=m.event_data(),
                 source="/regions/elz-gent/members")


def test_sign_in_addresses_are_normalised_like_sign_up():
    assert domain.sign_in_email("  An.DeSmet@Example.BE ") == domain.sign_up("m", BE, SIGN_UP).email
    with pytest.raises(Invalid) as e:
        domain.sign_in_email("not-an-address")
    assert "email" in e.value.errors


@pytest.mark.parametrize("status, verified, days_ago, stale", [
    ("pending", False, 8, True),
    ("pending", False, 7.01, True),
    ("pending", False, 6.99, False),
    ("pending", True, 30, False),
    ("active", False, 30, False),
    ("rejected", False, 30, False),
])
def test_a_stale_sign_up_is_pending_unproven_and_older_than_the_limit(status, verified, days_ago, stale):
    m = _member(status, days_ago)
    if verified:
        m.email_verified_at = NOW
    assert m.is_stale(NOW, 7) is stale
    naive = m.signed_up_at.replace(tzinfo=None)  # as a database without tz_aware returns it
    assert domain.is_stale_sign_up(status, m.email_verified_at, naive, NOW, 7) is stale


# -- links in e-mails ----------------------------------------------------------------------------
def test_every_template_has_a_portal_page():
    assert set(LINKS) == set(TEMPLATES)
    base = "https://p.example"
    assert portal_link(base + "/", "enrolment_approved", "elz-gent") == f"{base}/r/elz-gent/membership"
    assert portal_link(base, "vote_opened", "elz-gent", "a_1") == f"{base}/r/elz-gent/votes/a_1"
    assert portal_link("https://p.example", "vote_closing", "elz-gent", "a_1").endswith("/r/elz-gent/votes/a_1")
    for t in ("mandate_passed", "mandate_rejected", "agreement_activated", "review_due"):
        assert portal_link("https://p.example", t, "r1", "a/1") == "https://p.example/r/r1/agreements/a%2F1"
    assert portal_link("https://p.example", "vote_opened", "elz-gent", None) is None
    assert portal_link("", "vote_opened", "elz-gent", "a_1") is None
    assert portal_link("https://p.example", "unknown", "elz-gent", "a_1") is None


CONTEXT = {"region_name": "ELZ Gent", "title": "Zorgpad", "theme": "chronic-care", "partners": ["AZ"],
           "reason": "r", "effective_from": "2026-04-01", "effective_until": None, "review_date": "2027-04-01",
           "deadline": "2026-04-15T16:00:00Z", "quorum": 0.5, "approval_threshold": 0.5, "votes_for": 1,
           "votes_against": 0, "votes_abstain": 0, "turnout": 1.0, "quorum_met": True, "threshold_met": True}


@pytest.mark.parametrize("language", ["nl", "fr", "en"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_shows_the_link_in_text_and_html(template, language):
    link = portal_link("https://p.example", template, "elz-gent", "a_1")
    _, text, html = mail.render(template, language, dict(CONTEXT, link=link))
    assert link in text and f'href="{link}"' in html
    _, text, html = mail.render(template, language, dict(CONTEXT, link=None))
    assert "https://" not in text and "href" not in html
