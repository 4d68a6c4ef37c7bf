"""Staff accounts and capacity history, pure rules: invitation, roles, the account's states, the
events' data (no address, no name), and the history's date range."""
from __future__ import annotations

from datetime import date

import pytest

from hecht import events as ev
from hecht.errors import Invalid, InvalidTransition
from services.members import domain
from services.members.domain import Staff, history_range, invite_staff, normalise_staff_email, staff_roles


def account(**kw) -> Staff:
    data = {"email": "Coord@Zone.BE", "name": "  Ann   Smet ", "admin_of": ["elz-gent"], **kw}
    return invite_staff("stf_0123abcd", data)


# -- invitation ---------------------------------------------------------------------------------
def test_an_invitation_is_normalised_and_invited():
    s = account()
    assert (s.email, s.name, s.language, s.status) == ("Coord@zone.be", "Ann Smet", "nl", "invited")
    assert s.admin_of == ["elz-gent"] and s.platform_admin is False
    assert s.invited_at is not None and s.activated_at is None


def test_an_account_created_by_the_cli_is_active():
    s = invite_staff("stf_01", {"email": "a@b.be", "name": "A", "platform_admin": True}, active=True)
    assert s.status == "active" and s.activated_at is not None


def test_every_broken_field_is_reported_at_once():
    with pytest.raises(Invalid) as e:
        invite_staff("stf_01", {"email": "not an address", "name": "  ", "language": "de", "admin_of": []})
    assert set(e.value.errors) == {"email", "name", "language", "admin_of"}


@pytest.mark.parametrize("raw, want", [
    (" Admin@Demo.Hecht.LOCAL ", "Admin@demo.hecht.local"),   # the demo's development addresses
    ("an@Praktijk.BE", "an@praktijk.be"),
])
def test_staff_addresses_are_normalised_like_members_and_dot_local_is_accepted(raw, want):
    assert normalise_staff_email(raw) == want
    assert domain.sign_in_email(raw) == want


@pytest.mark.parametrize("raw", ["@demo.local", "a b@x.local", "a@.local", "x@localhost", "a@b.test"])
def test_broken_or_other_special_addresses_are_refused(raw):
    with pytest.raises(ValueError):
        normalise_staff_email(raw)


# -- roles --------------------------------------------------------------------------------------
def test_roles_need_one_and_regions_are_unique_in_order():
    assert staff_roles(False, ["b-reg", "a-reg", "b-reg"]) == (False, ["b-reg", "a-reg"])
    assert staff_roles(True, []) == (True, [])
    for bad in ((False, []), (False, ["Not A Slug"]), ("yes", ["a-reg"])):
        with pytest.raises(Invalid):
            staff_roles(*bad)


def test_update_changes_name_language_and_roles_and_keeps_the_rest_on_error():
    s = account()
    assert s.update({"name": "Ann  De Smet", "language": "fr", "admin_of": ["elz-gent", "zg-x"]}) == "staff.updated"
    assert (s.name, s.language, s.admin_of) == ("Ann De Smet", "fr", ["elz-gent", "zg-x"])
    with pytest.raises(Invalid) as e:
        s.update({"name": "New", "platform_admin": False, "admin_of": []})
    assert "admin_of" in e.value.errors
    assert (s.name, s.admin_of) == ("Ann De Smet", ["elz-gent", "zg-x"])   # nothing half-applied


# -- the account's states -------------------------------------------------------------------------
def test_activation_happens_once_and_never_for_a_revoked_account():
    s = account()
    assert s.activate() == "staff.activated" and s.status == "active"
    assert s.activate() is None
    assert s.revoke() == "staff.revoked" and s.status == "revoked" and s.revoked_at is not None
    for action in (s.activate, s.revoke, lambda: s.update({"name": "X"}), lambda: s.drop_region("elz-gent")):
        with pytest.raises(InvalidTransition):
            action()


def test_granting_a_region_is_idempotent_and_reinvites_a_revoked_account():
    s = account(platform_admin=True)
    assert s.grant_region("elz-gent") is None
    assert s.grant_region("zg-x") == "staff.updated" and s.admin_of == ["elz-gent", "zg-x"]
    s.revoke()
    assert s.grant_region("elz-other") == "staff.invited"
    assert (s.status, s.platform_admin, s.admin_of, s.revoked_at) == ("invited", False, ["elz-other"], None)


def test_dropping_the_last_role_revokes_the_account():
    s = account(admin_of=["a-reg", "b-reg"])
    assert s.drop_region("a-reg") == "staff.updated" and s.status == "invited"
    assert s.drop_region("b-reg") == "staff.revoked" and s.status == "revoked" and s.admin_of == []
    p = account(platform_admin=True, admin_of=["a-reg"])
    assert p.drop_region("a-reg") == "staff.updated" and p.status == "invited"   # still a platform admin


def test_events_carry_roles_and_status_never_the_address_or_name():
    s = account()
    s.activate()
    data = s.event_data()
    assert data == {"staff_id": "stf_0123abcd", "platform_admin": False, "admin_of": ["elz-gent"],
                    "status": "active"}
    for event_type in ("staff.activated", "staff.updated"):
        ev.build(event_type, region=domain.STAFF_EVENT_REGION, subject=s.id, sequence=2, data=data,
                 source="/regions/platform/staff")
    with pytest.raises(ev.InvalidEvent):   # the schemas refuse personal data
        ev.build("staff.updated", region="platform", subject=s.id, sequence=2, source="/regions/platform/staff",
                 data={**data, "email": s.email})
    with pytest.raises(ev.InvalidEvent):   # and a status the type cannot have
        ev.build("staff.invited", region="platform", subject=s.id, sequence=1, data=data,
                 source="/regions/platform/staff")


# -- capacity history ------------------------------------------------------------------------------
TODAY = date(2026, 12, 3)


def test_history_defaults_to_the_last_90_days():
    assert history_range(None, None, TODAY) == (date(2026, 9, 5), TODAY)
    assert history_range(None, date(2026, 3, 31), TODAY) == (date(2026, 1, 1), date(2026, 3, 31))
    assert history_range(date(2026, 11, 1), None, TODAY) == (date(2026, 11, 1), TODAY)


def test_history_is_at_most_400_days_and_never_backwards():
    assert history_range(date(2025, 10, 30), TODAY, TODAY) == (date(2025, 10, 30), TODAY)   # 400 days
    with pytest.raises(Invalid) as e:
        history_range(date(2025, 10, 29), TODAY, TODAY)   # 401 days
    assert "to" in e.value.errors
    with pytest.raises(Invalid) as e:
        history_range(date(2026, 12, 4), TODAY, TODAY)
    assert "from" in e.value.errors


def test_snapshot_rows_count_every_municipality_without_derived_figures():
    rows = domain.snapshot_rows(["Gent", "Melle"], [("Gent", "open", 2), ("gent", None, 1), ("Oud", "closed", 1)])
    assert rows == [{"municipality": "Gent", "open": 2, "limited": 0, "closed": 0, "unknown": 1},
                    {"municipality": "Melle", "open": 0, "limited": 0, "closed": 0, "unknown": 0},
                    {"municipality": "Oud", "open": 0, "limited": 0, "closed": 1, "unknown": 0}]


def test_make_exactly_sets_the_cli_roles_and_brings_a_revoked_account_back():
    s = account(admin_of=["a-reg"])
    wanted = invite_staff("stf_other", {"email": "x@y.be", "name": "Ann Smet", "platform_admin": True}, active=True)
    assert s.make_exactly(wanted) == "staff.activated"
    assert (s.status, s.platform_admin, s.admin_of, s.id) == ("active", True, [], "stf_0123abcd")
    assert s.make_exactly(wanted) is None
    s.revoke()
    assert s.make_exactly(wanted) == "staff.activated" and s.status == "active" and s.revoked_at is None
    wanted.language = "fr"
    assert s.make_exactly(wanted) == "staff.updated" and s.language == "fr"
