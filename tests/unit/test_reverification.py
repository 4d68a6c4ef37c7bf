"""Periodic re-verification of registrations (issue 16): the due computation at its boundaries
(exactly N months, month ends, leap days), the query bound that lists members past due, the
member's transitions, and the agreements service's copy of the rule."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from hecht import events as ev
from hecht.errors import Invalid, InvalidTransition
from services.agreements import domain as agreements
from services.members import domain
from services.members.domain import add_months, is_reverify_due, reverify_cutoff, reverify_due_at

UTC = timezone.utc
BE = domain.Region("elz-gent", "ELZ Gent", "BE", "eerstelijnszone", ["Gent"])
SIGN_UP = {"given_name": "An", "family_name": "De Smet", "email": "an@example.be", "language": "nl",
           "registration": {"scheme": "RIZIV", "number": "1-08290-59-003"},
           "practice": {"name": "Praktijk Zuid", "postcode": "9000", "municipality": "Gent"}}


def at(y, m, d, hh=0, mm=0, ss=0, us=0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, us, tzinfo=UTC)


# -- calendar months --------------------------------------------------------------------------
@pytest.mark.parametrize("day, months, expected", [
    (date(2025, 12, 3), 12, date(2026, 12, 3)),
    (date(2026, 1, 31), 1, date(2026, 2, 28)),     # February lacks the 31st: its last day
    (date(2028, 1, 31), 1, date(2028, 2, 29)),     # leap year
    (date(2024, 2, 29), 12, date(2025, 2, 28)),    # a leap day, a year on
    (date(2024, 2, 29), 48, date(2028, 2, 29)),
    (date(2026, 3, 31), 1, date(2026, 4, 30)),
    (date(2026, 12, 15), 1, date(2027, 1, 15)),    # across the year end
    (date(2026, 11, 30), 60, date(2031, 11, 30)),
    (date(2026, 3, 31), -1, date(2026, 2, 28)),    # backwards (the query bound)
])
def test_calendar_months_clamp_to_the_last_day_of_a_shorter_month(day, months, expected):
    assert add_months(day, months) == expected


def test_due_from_the_start_of_the_same_day_n_months_later():
    verified = at(2025, 12, 3, 15, 30)
    assert reverify_due_at(verified, 12) == at(2026, 12, 3)
    assert not is_reverify_due(verified, 12, at(2026, 12, 2, 23, 59, 59, 999999))   # a moment before
    assert is_reverify_due(verified, 12, at(2026, 12, 3))                            # exactly 12 months
    assert is_reverify_due(verified, 12, at(2026, 12, 3, 0, 0, 1))
    assert reverify_due_at(None, 12) is None and not is_reverify_due(None, 12, at(2030, 1, 1))


def test_month_end_verifications_are_due_on_the_last_day_of_the_shorter_month():
    for day in (29, 30, 31):
        assert reverify_due_at(at(2026, 1, day, 23), 1) == at(2026, 2, 28)
    assert reverify_due_at(at(2027, 2, 28, 8), 12) == at(2028, 2, 28)   # not the 29th of a leap year


def test_naive_datetimes_from_the_database_are_utc():
    assert reverify_due_at(datetime(2025, 12, 3, 23, 59), 12) == at(2026, 12, 3)


def _brute_force_cutoff(now: datetime, months: int) -> datetime:
    """The smallest whole day whose verifications are not yet due at ``now`` (by definition)."""
    day = (now - timedelta(days=months * 31 + 5)).date()
    while is_reverify_due(datetime(day.year, day.month, day.day, 12, tzinfo=UTC), months, now):
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.mark.parametrize("now", [at(2026, 2, 28, 12), at(2028, 2, 29, 1), at(2028, 2, 28, 1), at(2026, 3, 30),
                                 at(2026, 3, 31, 23, 59), at(2026, 4, 30), at(2026, 12, 3), at(2027, 1, 1)])
@pytest.mark.parametrize("months", [1, 12, 13, 60])
def test_the_query_bound_is_exactly_the_inverse_of_the_due_rule(now, months):
    cutoff = reverify_cutoff(now, months)
    assert cutoff == _brute_force_cutoff(now, months)
    # every moment of the day before the bound is due, none from the bound on
    assert is_reverify_due(cutoff - timedelta(microseconds=1), months, now)
    assert not is_reverify_due(cutoff, months, now)


def test_on_the_last_day_of_february_the_ends_of_january_are_due():
    assert reverify_cutoff(at(2026, 2, 28, 9), 1) == at(2026, 2, 1)   # 29, 30 and 31 January included
    assert reverify_cutoff(at(2026, 2, 27, 9), 1) == at(2026, 1, 28)


# -- the policy setting -----------------------------------------------------------------------
def test_the_policy_defaults_to_12_months_and_staying_in_the_electorate():
    p = domain.MandatePolicy()
    assert (p.reverify_months, p.unverified_leave_electorate) == (12, False)
    assert p.as_dict()["reverify_months"] == 12 and p.as_dict()["unverified_leave_electorate"] is False


@pytest.mark.parametrize("months", [0, 61, -1])
def test_the_period_is_1_to_60_months(months):
    with pytest.raises(Invalid) as e:
        domain.MandatePolicy(reverify_months=months)
    assert "reverify_months" in e.value.errors["mandate_policy"]


def test_changing_the_setting_is_a_new_policy_version():
    p = domain.MandatePolicy()
    assert p.changed({"reverify_months": 24}).version == 2
    assert p.changed({"unverified_leave_electorate": True}).version == 2
    assert p.changed({"reverify_months": 12}).version == 1


# -- the member -------------------------------------------------------------------------------
def _member(status: str = "pending") -> domain.Member:
    m = domain.sign_up("m_1", BE, SIGN_UP)
    if status != "pending":
        m.approve()
        m.status = status
    return m


def test_approval_verifies_and_a_pending_sign_up_is_never_due():
    m = _member()
    assert m.verified_at is None and m.reverify_due_at(12) is None
    m.approve()
    assert m.verified_at == m.updated_at and m.reverify_due_at(12) == reverify_due_at(m.verified_at, 12)
    assert m.event_data()["verified_at"].endswith("Z")


def test_a_member_approved_before_verified_at_existed_counts_from_the_sign_up():
    m = _member("active")
    m.verified_at, m.signed_up_at = None, at(2025, 1, 31, 10)
    assert m.effective_verified_at == at(2025, 1, 31, 10)
    assert m.reverify_due_at(1) == at(2025, 2, 28)
    assert m.event_data()["verified_at"] == "2025-01-31T10:00:00.000Z"


def test_reconfirm_sets_verified_at_and_may_correct_the_registration_with_the_same_checks():
    m = _member("active")
    m.verified_at = at(2024, 1, 1)
    assert m.reconfirm({}, BE) == "member.reverified"
    assert m.verified_at > at(2026, 1, 1) and m.registration.number == "10829059003"
    assert m.reconfirm({"registration": {"scheme": "RIZIV", "number": "1-08290-59-004"}}, BE) == "member.reverified"
    assert m.registration.number == "10829059004"
    with pytest.raises(Invalid) as e:   # a specialist's competence code, as at sign-up
        m.reconfirm({"registration": {"scheme": "RIZIV", "number": "1-08290-59-580"}}, BE)
    assert "registration" in e.value.errors and m.registration.number == "10829059004"


@pytest.mark.parametrize("status", ["pending", "left", "rejected", "erased"])
def test_only_active_and_suspended_members_reconfirm(status):
    m = _member()
    m.status = status
    with pytest.raises(InvalidTransition):
        m.reconfirm({}, BE)
    with pytest.raises(InvalidTransition):
        m.mark_reverification_due(at(2026, 1, 1))


def test_a_registration_correction_verifies_an_enrolled_member_only():
    pending = _member()
    pending.update_profile({"registration": {"scheme": "RIZIV", "number": "1-08290-59-004"}}, BE)
    assert pending.verified_at is None
    active = _member("active")
    active.verified_at = at(2024, 1, 1)
    active.update_profile({"registration": {"scheme": "RIZIV", "number": "1-08290-59-004"}}, BE)
    assert active.verified_at > at(2026, 1, 1)
    before = active.verified_at
    active.update_profile({"language": "fr"}, BE)        # not a registration change
    assert active.verified_at == before


def test_the_due_announcement_happens_once_per_period():
    m = _member("suspended")
    due = at(2026, 12, 3)
    assert m.mark_reverification_due(due) == "member.reverification_due"
    assert m.reverify_notified_for == due and set(m.event_data()) == {
        "member_id", "region_id", "status", "category", "roles", "municipality", "capacity", "verified_at"}
    assert m.mark_reverification_due(due) is None
    m.reverify_notified_for = datetime(2026, 12, 3)   # as the database returns it (naive UTC)
    assert m.mark_reverification_due(due) is None
    assert m.mark_reverification_due(at(2027, 12, 3)) == "member.reverification_due"   # the next period


def test_erasure_forgets_the_verification():
    m = _member("active")
    m.mark_reverification_due(at(2026, 12, 3))
    m.erase()
    assert m.verified_at is None and m.reverify_notified_for is None and m.event_data()["verified_at"] is None


# -- the agreements service's copy of the rule ---------------------------------------------------
@pytest.mark.parametrize("verified", [at(2025, 12, 3, 15), at(2026, 1, 31, 23, 59), at(2024, 2, 29, 1),
                                      at(2026, 3, 31), at(2026, 12, 31, 23)])
@pytest.mark.parametrize("months", [1, 12, 25])
def test_agreements_decides_exactly_as_members_does(verified, months):
    due = reverify_due_at(verified, months)
    iso = verified.isoformat().replace("+00:00", "Z")
    for now in (due - timedelta(microseconds=1), due, due + timedelta(hours=1)):
        assert agreements.reverify_due(iso, months, now) == is_reverify_due(verified, months, now)
        assert agreements.reverify_due(verified, months, now) == is_reverify_due(verified, months, now)


def _row(mid: str, verified: str | None, **kw) -> dict:
    return {"_id": mid, "status": "active", "roles": ["member"], "category": "practice-owner",
            "municipality": "Gent", "verified_at": verified, **kw}


def test_members_past_due_leave_the_electorate_only_where_the_policy_says_so_and_are_listed():
    rows = [_row("m_fresh", "2026-06-01T10:00:00.000Z"), _row("m_due", "2025-06-01T10:00:00.000Z"),
            _row("m_unknown", None), _row("m_far", "2020-01-01T00:00:00.000Z", municipality="Brugge")]
    now = at(2026, 12, 3, 9)
    keep = agreements.MandatePolicy(0.5, 0.5, 14)
    e = agreements.electorate_for(keep, rows, ["Gent"], now)
    assert e.members == ("m_due", "m_fresh", "m_unknown") and e.unverified == ()
    leave = agreements.MandatePolicy(0.5, 0.5, 14, unverified_leave_electorate=True)
    e = agreements.electorate_for(leave, rows, ["Gent"], now)
    assert e.members == ("m_fresh", "m_unknown")      # unknown (events before issue 16): not taken out
    assert e.unverified == ("m_due",) and e.outside_region == ("m_far",)
    longer = agreements.MandatePolicy(0.5, 0.5, 14, unverified_leave_electorate=True, reverify_months=24)
    assert agreements.electorate_for(longer, rows, ["Gent"], now).unverified == ()


def test_council_seats_of_members_past_due_are_left_out_and_listed():
    rows = [_row("m_a", "2025-01-01T00:00:00.000Z"), _row("m_b", "2026-11-01T00:00:00.000Z")]
    policy = agreements.MandatePolicy(0.5, 0.5, 14, body="council", seats=(("m_a", "care"), ("m_b", "welfare")),
                                      unverified_leave_electorate=True)
    e = agreements.electorate_for(policy, rows, ["Gent"], at(2026, 12, 3))
    assert (e.members, e.seats, e.unverified) == (("m_b",), (("m_b", "welfare"),), ("m_a",))


def test_the_opened_vote_lists_the_unverified_in_its_event():
    terms = agreements.Terms(title="Frail elderly", theme="frail-elderly",
                             partners=[{"name": "WZC De Linde", "kind": "nursing-home"}],
                             commitments=[{"party": "region", "text": "A named GP per resident"}],
                             effective_from=date(2027, 4, 1))
    a, _ = agreements.Agreement.draft("agr_1", "elz-gent", terms, at(2026, 12, 1))
    e = agreements.Electorate(("m_b",), (), (), ("m_a",))
    events = a.open_mandate(e, "agr_1:e", agreements.MandatePolicy(0.5, 0.5, 14, unverified_leave_electorate=True),
                            at(2026, 12, 3))
    assert events[0].data["electorate"] == ["m_b"] and events[0].data["unverified"] == ["m_a"]
    ev.validate(ev.build(events[0].type, region="elz-gent", subject="agr_1", sequence=2, data=events[0].data,
                         source="/regions/elz-gent/agreements"))
    assert a.mandate.unverified == ("m_a",)
