"""Notify's pure rules: patterns, redaction, retry policy, URL rules, reminders, templates, signing."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from hecht.config import settings
from hecht.errors import Invalid
from services.notify import domain, mail, signing

# -- event-type patterns ----------------------------------------------------------------------


def test_patterns_match_on_the_short_type():
    assert domain.matches(["agreement.*"], "agreement.activated")
    assert not domain.matches(["agreement.*"], "member.enrolled")
    assert domain.matches(["member.capacity_changed"], "member.capacity_changed")
    assert not domain.matches(["member.capacity_changed"], "member.capacity_changed_again")
    assert not domain.matches(["member.enrolled"], "member.enrolled_x")
    assert domain.matches(["*"], "subscription.disabled")
    assert not domain.matches(["agreement.*"], "agreements.x")


def test_patterns_are_validated_and_normalised():
    assert domain.normalize_patterns(["agreement.*", "hecht.member.enrolled.v1", "agreement.*"]) == \
        ["agreement.*", "member.enrolled"]
    with pytest.raises(Invalid) as e:
        domain.normalize_patterns(["agrement.*", "member.enroled", "Agreement.*", "a.b.c", ""])
    assert set(e.value.errors["event_types"]) == {"0", "1", "2", "3", "4"}
    with pytest.raises(Invalid):
        domain.normalize_patterns([])


# -- redaction --------------------------------------------------------------------------------
def test_redaction_removes_personal_data_and_contact_keys_everywhere():
    event = {"id": "e", "type": "hecht.member.enrolled.v1", "data": {
        "member_id": "m_1", "status": "active",
        "personal": {"given_name": "An", "family_name": "Peeters", "email": "an@example.be"},
        "practice": {"phone": "+32 9 000", "Email_Address": "x@y.be", "name": "Praktijk"},
        "contacts": [{"mobile": "0470", "role": "x"}],
        "capacity": {"status": "limited", "note": "mail an@example.be for questions"}}}
    out = domain.redact(event)
    data = out["data"]
    assert "personal" not in data
    assert data["practice"] == {"name": "Praktijk"}
    assert data["contacts"] == [{"role": "x"}]
    assert "an@example.be" not in str(out) and data["capacity"] == {"status": "limited"}  # staff text: gone
    assert event["data"]["personal"]["email"] == "an@example.be"  # the original is untouched


def test_redaction_leaves_out_each_types_staff_free_text_and_masks_addresses_in_other_text():
    terminated = {"id": "e", "type": "hecht.agreement.terminated.v1",
                  "data": {"agreement_id": "a_1", "title": "Zorgpad (vragen: an@example.be)", "reason": "intern"}}
    out = domain.redact(terminated)["data"]
    assert "reason" not in out and out["title"] == "Zorgpad (vragen: [redacted])"
    failed = {"id": "e", "type": "hecht.notification.failed.v1",
              "data": {"notification_id": "n", "error": "550 an@example.be unknown"}}
    assert "error" not in domain.redact(failed)["data"]
    # other kinds keep a field of the same name: the table is per event type
    disabled = {"id": "e", "type": "hecht.subscription.disabled.v1", "data": {"reason": "3 failures in a row"}}
    assert domain.redact(disabled)["data"]["reason"] == "3 failures in a row"
    assert domain.staff_text_fields("member.rejected") == ("reason", "capacity.note")


# -- retry policy -----------------------------------------------------------------------------
def test_retry_policy_follows_the_schedule_with_bounded_jitter():
    policy = domain.RetryPolicy((5, 300, 1800))
    rng = random.Random(7)
    assert policy.max_attempts == 4
    delays = [policy.delay_after(n, rng=rng) for n in (1, 2, 3)]
    for got, base in zip(delays, (5, 300, 1800)):
        assert base * 0.8 <= got <= base * 1.2
    assert policy.delay_after(4, rng=rng) is None
    assert len({round(policy.delay_after(1, rng=rng), 6) for _ in range(20)}) > 1  # jitter varies


def test_retry_after_lengthens_but_is_capped():
    policy = domain.RetryPolicy((1, 1))
    assert policy.delay_after(1, retry_after_s=30) == 30
    assert policy.delay_after(1, retry_after_s=10**9) == domain.MAX_RETRY_AFTER_S
    assert policy.delay_after(1, retry_after_s=0) <= 1.2


def test_parse_retry_after():
    assert domain.parse_retry_after("120") == 120
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert domain.parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60
    assert domain.parse_retry_after("soon") is None and domain.parse_retry_after(None) is None


def test_classify_outcomes():
    assert domain.classify(200) == domain.classify(204) == domain.SUCCESS
    assert domain.classify(410) == domain.GONE
    for status in (301, 400, 429, 500, 503, None):
        assert domain.classify(status) == domain.RETRY


# -- outbound URL rules -----------------------------------------------------------------------
@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                "100.100.100.200", "0.0.0.0", "::1", "fd00:ec2::254", "fe80::1",
                                "::ffff:127.0.0.1", "224.0.0.1", "2002:7f00:1::"])
def test_non_public_addresses_are_refused(ip):
    assert not domain.address_is_public(ip)


def test_public_addresses_are_allowed():
    assert domain.address_is_public("93.184.216.34") and domain.address_is_public("2606:4700::1111")


@pytest.mark.parametrize("url", ["http://example.com/hook", "https://127.0.0.1/x", "https://localhost:8443/x",
                                 "https://[::1]/x", "https://169.254.169.254/latest/meta-data",
                                 "https://user:pw@example.com/x", "ftp://example.com/x", "https:///nohost",
                                 "https://api.internal/x"])
def test_url_shapes_refused_without_private_allowance(url):
    with pytest.raises(Invalid):
        domain.check_url_shape(url, allow_private=False)


def test_url_shapes_allowed():
    assert domain.check_url_shape("https://hooks.example.com/x?y=1", allow_private=False)
    assert domain.check_url_shape("http://127.0.0.1:8080/x", allow_private=True)
    with pytest.raises(Invalid):
        domain.check_url_shape("https://user:pw@127.0.0.1/x", allow_private=True)


# -- reminders --------------------------------------------------------------------------------
def test_vote_reminder_is_due_48_hours_before_the_deadline():
    opened = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)
    deadline = opened + timedelta(days=14)
    assert domain.reminder_due_at(opened, deadline) == deadline - timedelta(hours=48)
    assert domain.reminder_due_at(opened, opened + timedelta(hours=47)) is None  # short votes: no reminder
    assert domain.reminder_due_at(opened, None) is None


# -- templates --------------------------------------------------------------------------------
CONTEXT = {"region_name": "ELZ Gent", "title": "Zorg & <Welzijn>", "theme": "chronic-care",
           "partners": ["AZ Sint-Jan"], "reason": "incomplete", "effective_from": "2026-04-01",
           "effective_until": None, "review_date": "2027-04-01", "deadline": "2026-03-12T16:00:00Z",
           "quorum": 0.5, "approval_threshold": 0.6, "votes_for": 7, "votes_against": 2, "votes_abstain": 1,
           "turnout": 0.625, "quorum_met": True, "threshold_met": True, "link": None}


def test_every_template_exists_in_every_language():
    assert all(set(names) == set(domain.TEMPLATES) for names in mail.available().values())


@pytest.mark.parametrize("language", domain.LANGUAGES)
@pytest.mark.parametrize("template", domain.TEMPLATES)
def test_templates_render_text_and_escaped_html(template, language):
    subject, text, html = mail.render(template, language, CONTEXT)
    assert subject and "\n" not in subject and text.strip()
    assert "<Welzijn>" not in html
    if "title" in text or "Welzijn" in text:
        assert "&lt;Welzijn&gt;" in html
    assert f'lang="{language}"' in html


def test_dates_are_written_in_the_readers_language():
    assert mail.render("vote_opened", "nl", CONTEXT)[0].endswith("12 maart 2026")
    assert mail.render("vote_opened", "fr", CONTEXT)[0].endswith("12 mars 2026")
    assert "12 March 2026 at 17:00" in mail.render("vote_opened", "en", CONTEXT)[1]  # CET
    assert mail.render("vote_opened", "xx", CONTEXT) == mail.render("vote_opened", "en", CONTEXT)


# -- secrets and signatures -------------------------------------------------------------------
def test_secrets_have_the_standard_shape_and_verify_with_the_official_library():
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 44
    body = '{"id":"e1"}'
    hdrs = signing.headers([secret], "e1", body)
    assert Webhook(secret).verify(body, hdrs) == {"id": "e1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, hdrs)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + " ", hdrs)


def test_two_secrets_give_two_signatures_each_verifiable():
    old, new = signing.new_secret(), signing.new_secret()
    hdrs = signing.headers([new, old], "e2", "{}")
    assert len(hdrs["webhook-signature"].split(" ")) == 2
    Webhook(old).verify("{}", hdrs)
    Webhook(new).verify("{}", hdrs)


def test_secret_box_encrypts_and_refuses_a_foreign_key(monkeypatch):
    from cryptography.fernet import Fernet
    monkeypatch.setenv("HECHT_WEBHOOK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    box = signing.SecretBox(settings("notify"))
    token = box.encrypt("whsec_abc")
    assert "whsec_abc" not in token and box.decrypt(token) == "whsec_abc"
    monkeypatch.setenv("HECHT_WEBHOOK_ENCRYPTION_KEY", Fernet.generate_key().decode())
    with pytest.raises(ValueError):
        signing.SecretBox(settings("notify")).decrypt(token)
    monkeypatch.setenv("HECHT_WEBHOOK_ENCRYPTION_KEY", "not-a-key")
    with pytest.raises(ValueError):
        signing.SecretBox(settings("notify"))


def test_secret_box_derives_a_development_key_only_without_jwks(monkeypatch):
    monkeypatch.delenv("HECHT_WEBHOOK_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("HECHT_JWKS_URL", raising=False)
    a = signing.SecretBox(settings("notify"))
    assert signing.SecretBox(settings("notify")).decrypt(a.encrypt("x")) == "x"  # stable across instances
    monkeypatch.setenv("HECHT_JWKS_URL", "https://idp.example/jwks")
    with pytest.raises(ValueError):
        signing.SecretBox(settings("notify"))


def test_secret_box_derives_no_key_in_production(monkeypatch):
    """HECHT_ENV unset is production: the worker (which checks no token) must not fall back
    to a key derived from the JWT secret either (issue 22, item 12)."""
    monkeypatch.delenv("HECHT_WEBHOOK_ENCRYPTION_KEY", raising=False)
    monkeypatch.delenv("HECHT_JWKS_URL", raising=False)
    monkeypatch.delenv("HECHT_ENV", raising=False)
    monkeypatch.setenv("HECHT_JWT_SECRET", "a-production-secret-of-at-least-32-characters")
    with pytest.raises(ValueError, match="HECHT_WEBHOOK_ENCRYPTION_KEY"):
        signing.SecretBox(settings("notify"))


def test_active_secrets_drop_expired_ones():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stored = [{"enc": "a", "expires_at": None}, {"enc": "b", "expires_at": t + timedelta(seconds=1)},
              {"enc": "c", "expires_at": t}]
    assert [s["enc"] for s in signing.active_secrets(stored, t)] == ["a", "b"]
