"""Members domain rules, pure: registrations, postcodes, email, the state machine, capacity arithmetic."""
from __future__ import annotations

from datetime import date

import pytest

from hecht import events as ev
from hecht.errors import Invalid, InvalidTransition
from services.members import domain
from services.members.domain import (ALLOWED_FROM, Capacity, Member, MEMBER_STATUSES, Region, capacity_overview,
                                     next_status, riziv_check_digits_valid, validate_agb, validate_big,
                                     validate_postcode, validate_registration, validate_riziv)

BE = Region(id="elz-gent", name="ELZ Gent", country="BE", kind="eerstelijnszone", municipalities=["Gent", "Merelbeke"])
NL = Region(id="zg-utrecht", name="Zorggroep Utrecht", country="NL", kind="zorggroep",
            municipalities=["Utrecht", "De Bilt"])


def riziv(n6: int, code: str = "003", modulus: int = 97) -> str:
    """A RIZIV number built from the check rule itself (independent of the code under test)."""
    return f"{n6:06d}{modulus - n6 % modulus:02d}{code}"


# -- RIZIV / INAMI -----------------------------------------------------------------------------
@pytest.mark.parametrize("number", [
    "10829059003",            # DOMAIN.md, checked by hand: 108290 mod 97 = 38, 97 − 38 = 59
    "10185748004",            # DOMAIN.md, checked by hand: 101857 mod 89 = 41, 89 − 41 = 48 (since 2019)
    riziv(123456, "005"), riziv(123456, "006", 89), riziv(199999, "001"), riziv(150000, "008", 89),
])
def test_valid_gp_riziv_numbers_are_accepted(number):
    assert validate_riziv(number) == number


@pytest.mark.parametrize("written", ["1-08290-59-003", "1.08290.59.003", "108290 59 003", " 10829059003 "])
def test_riziv_numbers_are_normalised_from_how_people_write_them(written):
    assert validate_riziv(written) == "10829059003"


@pytest.mark.parametrize("number, message", [
    ("10829058003", "check digits"),           # one off in the check digits
    ("10829095003", "check digits"),           # check digits swapped
    ("10829159003", "check digits"),           # a typo in the serial
    ("10829000003", "check digits"),           # 00 is never a check value
    ("1082905900", "11 digits"), ("108290590033", "11 digits"), ("1082905900A", "11 digits"),
    ("49488014401", "not a physician"),        # DOMAIN.md: valid mod-97 check, profession 4 (nurse)
    (riziv(394880, "003"), "not a physician"),
])
def test_invalid_riziv_numbers_are_refused_with_a_clear_message(number, message):
    with pytest.raises(ValueError, match=message):
        validate_riziv(number)


def test_the_mod97_example_of_another_profession_passes_the_check_itself():
    assert riziv_check_digits_valid("494880", "14")


@pytest.mark.parametrize("code", ["001", "002", "003", "004", "005", "006", "007", "008"])
def test_every_general_medicine_competence_code_is_accepted(code):
    assert validate_riziv(riziv(108290, code)).endswith(code)


@pytest.mark.parametrize("code", ["000", "009"])
def test_diploma_only_codes_are_refused_as_not_yet_a_gp(code):
    with pytest.raises(ValueError, match="holder of the medical diploma"):
        validate_riziv(riziv(108290, code))


@pytest.mark.parametrize("code", ["010", "480", "580", "790", "999"])
def test_a_specialists_competence_code_is_refused(code):
    with pytest.raises(ValueError, match=f"competence code {code} is a specialist's"):
        validate_riziv(riziv(108290, code))


def test_zero_remainder_gives_97_or_89_never_00():
    assert 100007 % 97 == 0 and 100036 % 89 == 0
    assert validate_riziv("10000797003") and validate_riziv("10003689004")
    for bad in ("10000700003", "10003600004"):
        with pytest.raises(ValueError, match="check digits"):
            validate_riziv(bad)


# -- BIG / AGB ---------------------------------------------------------------------------------
def test_big_numbers_have_eleven_digits():
    assert validate_big("19012345601") == "19012345601"
    assert validate_big("190 123 456 01") == "19012345601"
    for bad in ("1901234560", "190123456011", "1901234560X", ""):
        with pytest.raises(ValueError, match="11 digits"):
            validate_big(bad)


def test_agb_codes_have_eight_digits_and_a_gp_type():
    assert validate_agb("01012345") == "01012345"
    assert validate_agb("01-00-1234") == "01001234"
    for bad in ("0101234", "010123456", "0101234A"):
        with pytest.raises(ValueError, match="8 digits"):
            validate_agb(bad)
    with pytest.raises(ValueError, match="start with 01"):
        validate_agb("03012345")  # type 03: another care-provider type


def test_schemes_belong_to_their_country():
    assert validate_registration("RIZIV", "10829059003", "BE").identity_key == "RIZIV:10829059"
    assert validate_registration("BIG", "19012345601", "NL").identity_key == "BIG:19012345601"
    assert validate_registration("AGB", "01012345", "NL").number == "01012345"
    for scheme, number, country in (("BIG", "19012345601", "BE"), ("AGB", "01012345", "BE"),
                                    ("RIZIV", "10829059003", "NL")):
        with pytest.raises(Invalid) as e:
            validate_registration(scheme, number, country)
        assert "not used in" in e.value.errors["registration"]["scheme"][0]
    with pytest.raises(Invalid) as e:
        validate_registration("RIZIV", "10829058003", "BE")
    assert "check digits" in e.value.errors["registration"]["number"][0]


def test_a_riziv_identity_ignores_the_competence_code_that_changes_over_a_career():
    trainee = validate_registration("RIZIV", riziv(108290, "005"), "BE")
    recognised = validate_registration("RIZIV", riziv(108290, "003"), "BE")
    assert trainee.identity_key == recognised.identity_key
    assert trainee.number != recognised.number


# -- postcode, email, names --------------------------------------------------------------------
@pytest.mark.parametrize("raw, country, expected", [
    ("3511 AB", "NL", "3511 AB"), ("3511ab", "NL", "3511 AB"), (" 1011 dk ", "NL", "1011 DK"),
    ("9000", "BE", "9000"), ("1000", "BE", "1000"), ("9999", "BE", "9999"),
])
def test_valid_postcodes_are_normalised(raw, country, expected):
    assert validate_postcode(raw, country) == expected


@pytest.mark.parametrize("raw, country", [
    ("0511 AB", "NL"), ("3511", "NL"), ("3511 A", "NL"), ("3511 ABC", "NL"), ("3511 SS", "NL"), ("9000", "NL"),
    ("0999", "BE"), ("999", "BE"), ("10000", "BE"), ("9000 AB", "BE"), ("B-9000", "BE"),
])
def test_invalid_postcodes_are_refused(raw, country):
    with pytest.raises(ValueError):
        validate_postcode(raw, country)


def test_email_is_normalised_and_its_key_ignores_case():
    assert domain.normalise_email(" Jan.Peeters@Example.BE ") == "Jan.Peeters@example.be"
    assert domain.email_key("Jan.Peeters@example.be") == domain.email_key("jan.peeters@EXAMPLE.be")
    for bad in ("jan", "jan@", "@example.be", "jan peeters@example.be", "jan@@example.be"):
        with pytest.raises(ValueError):
            domain.normalise_email(bad)


SIGN_UP = {"given_name": " An ", "family_name": "De  Smet", "email": "An.DeSmet@Example.be", "language": "nl",
           "category": "locum", "registration": {"scheme": "RIZIV", "number": "1-08290-59-003"},
           "practice": {"name": "Praktijk Zuid", "postcode": "9000", "municipality": "gent"}}


def test_sign_up_normalises_every_field():
    m = domain.sign_up("m_1", BE, SIGN_UP)
    assert (m.status, m.given_name, m.family_name, m.email) == ("pending", "An", "De Smet", "An.DeSmet@example.be")
    assert m.registration.number == "10829059003" and m.category == "locum" and m.roles == []
    assert m.practice == {"name": "Praktijk Zuid", "postcode": "9000", "municipality": "Gent"}


def test_sign_up_reports_every_broken_rule_at_once():
    bad = dict(SIGN_UP, email="nope", language="de", given_name="  ",
               registration={"scheme": "RIZIV", "number": "10829058003"},
               practice={"name": "P", "postcode": "0999", "municipality": "Antwerpen"})
    with pytest.raises(Invalid) as e:
        domain.sign_up("m_1", BE, bad)
    errors = e.value.errors
    assert set(errors) == {"email", "language", "given_name", "registration", "practice"}
    assert set(errors["practice"]) == {"postcode", "municipality"}
    assert "Gent" in errors["practice"]["municipality"][0]


def test_sign_up_in_nl_needs_a_dutch_postcode_and_scheme():
    data = dict(SIGN_UP, registration={"scheme": "BIG", "number": "19012345601"},
                practice={"name": "P", "postcode": "3511ab", "municipality": "de bilt"})
    m = domain.sign_up("m_1", NL, data)
    assert m.practice["postcode"] == "3511 AB" and m.practice["municipality"] == "De Bilt"
    with pytest.raises(Invalid) as e:
        domain.sign_up("m_1", NL, SIGN_UP)
    assert "registration" in e.value.errors and "postcode" in e.value.errors["practice"]


# -- state machine -----------------------------------------------------------------------------
LEGAL = {
    ("pending", "approve"): "active", ("pending", "reject"): "rejected",
    ("active", "suspend"): "suspended", ("suspended", "reinstate"): "active",
    ("active", "leave"): "left", ("suspended", "leave"): "left",
    **{(s, "erase"): "erased" for s in ("pending", "active", "suspended", "left", "rejected")},
    **{(s, "set_roles"): s for s in ("active", "suspended")},
    **{(s, a): s for s in ("pending", "active", "suspended") for a in ("set_capacity", "update_profile")},
    **{(s, "verify_email"): s for s in ("pending", "active", "suspended", "left", "rejected")},
}
ALL_CELLS = [(s, a) for s in MEMBER_STATUSES for a in ALLOWED_FROM]


@pytest.mark.parametrize("status, action", sorted(LEGAL))
def test_legal_transitions(status, action):
    assert next_status(status, action) == LEGAL[(status, action)]


@pytest.mark.parametrize("status, action", [c for c in ALL_CELLS if c not in LEGAL])
def test_illegal_transitions_name_the_current_state(status, action):
    with pytest.raises(InvalidTransition) as e:
        next_status(status, action)
    assert e.value.extra["current_status"] == status and status in e.value.detail


def test_the_table_has_exactly_the_documented_lifecycle():
    assert len(ALL_CELLS) == 6 * 10 and len(LEGAL) == 24


def _member(status="pending", **kw) -> Member:
    m = domain.sign_up("m_1", BE, SIGN_UP)
    m.status = status
    for k, v in kw.items():
        setattr(m, k, v)
    return m


def _valid(event_type: str, m: Member) -> dict:
    """The event data validates against its published JSON Schema."""
    data = m.event_data()
    ev.build(event_type, region=m.region, subject=m.id, sequence=1, data=data, source="/regions/elz-gent/members")
    return data


PERSONAL_OR_FREE_TEXT = ("personal", "language", "reason", "given_name", "family_name", "email", "note")


def _public(data: dict) -> dict:
    """What hecht.members carries (issue 17): nothing personal, no free text, at any depth."""
    text = repr(data)
    assert not any(repr(k) in text for k in PERSONAL_OR_FREE_TEXT), data
    return data


def test_the_lifecycle_emits_contract_events():
    m = _member()
    assert "An.DeSmet@example.be" not in repr(_public(_valid("member.signed_up", m)))
    assert m.contact_data() == {"member_id": "m_1", "region_id": m.region, "email": "An.DeSmet@example.be",
                                "language": m.language}
    assert m.approve() == "member.enrolled" and m.roles == ["member"]
    _public(_valid("member.enrolled", m))
    assert m.set_roles(["chair", "board"]) == "member.roles_changed" and m.roles == ["member", "board", "chair"]
    _public(_valid("member.roles_changed", m))
    assert m.holds_chair
    assert m.suspend("did not pay") == "member.suspended" and m.reason == "did not pay" and m.holds_chair
    _public(_valid("member.suspended", m))
    assert "reason" not in m.contact_data()   # only a rejection's reason is mailed to the GP
    assert m.set_capacity(Capacity("limited", date(2026, 1, 5), "only family members")) == "member.capacity_changed"
    assert _public(_valid("member.capacity_changed", m))["capacity"] == {"status": "limited", "since": "2026-01-05"}
    assert m.reinstate() == "member.reinstated" and m.reason is None
    _public(_valid("member.reinstated", m))
    assert m.leave("retired") == "member.left" and m.roles == [] and not m.holds_chair
    assert _public(_valid("member.left", m))["capacity"] == {"status": "limited", "since": "2026-01-05"}
    assert m.erase() == "member.erased"
    data = _public(_valid("member.erased", m))
    assert data["municipality"] is None and data["capacity"] is None
    assert m.contact_data() is None   # the relay publishes a tombstone


def test_reject_keeps_the_reason_off_the_event_and_on_the_contact_record():
    m = _member()
    m.reject("not a GP of this region")
    assert "reason" not in _valid("member.rejected", m)
    assert m.contact_data()["reason"] == "not a GP of this region"


def test_the_schemas_refuse_personal_data_and_free_text_on_member_events():
    m = _member("active")
    m.approve = None  # noqa: B010 - the state is enough
    for extra in ({"personal": {"given_name": "An", "family_name": "X", "email": "a@b.be"}},
                  {"language": "nl"}, {"reason": "x"},
                  {"capacity": {"status": "open", "since": "2026-01-01", "note": "x"}}):
        with pytest.raises(ev.InvalidEvent):
            ev.build("member.roles_changed", region="elz-gent", subject="m_1", sequence=2,
                     data=dict(m.event_data(), **extra), source="/regions/elz-gent/members")


def test_the_erased_schema_refuses_personal_data():
    m = _member("active")
    m.erase()
    data = dict(m.event_data(), personal={"given_name": "An", "family_name": "X", "email": "a@b.be"})
    with pytest.raises(ev.InvalidEvent):
        ev.build("member.erased", region="elz-gent", subject="m_1", sequence=2, data=data,
                 source="/regions/elz-gent/members")


def test_erasure_keeps_only_a_tombstone():
    m = _member("active", capacity=Capacity("closed", date(2026, 1, 1), "full"))
    m.erase()
    kept = {k: v for k, v in vars(m).items() if v not in (None, [])}
    assert set(kept) == {"id", "region", "status", "updated_at"}


def test_profile_update_validates_and_merges_the_practice():
    m = _member("active")
    assert m.update_profile({"email": "AN@Example.BE", "practice": {"municipality": "merelbeke"}}, BE) == \
        "member.profile_updated"
    assert m.email == "AN@example.be" and m.practice["municipality"] == "Merelbeke"
    assert m.practice["name"] == "Praktijk Zuid"
    with pytest.raises(Invalid) as e:
        m.update_profile({"practice": {"postcode": "12"}}, BE)
    assert "postcode" in e.value.errors["practice"]
    _valid("member.profile_updated", m)


def test_roles_are_canonical_and_imply_member():
    assert domain.normalise_roles(["cra", "board", "cra"]) == ["member", "board", "cra"]
    assert domain.normalise_roles([]) == ["member"]
    with pytest.raises(Invalid):
        domain.normalise_roles(["king"])


def test_capacity_status_must_be_known():
    with pytest.raises(Invalid):
        Capacity("full", date(2026, 1, 1))


# -- capacity overview -------------------------------------------------------------------------
def test_capacity_overview_counts_and_shares():
    counts = [("Gent", "open", 3), ("Gent", "limited", 4), ("Gent", "closed", 2), ("Gent", None, 1),
              ("Merelbeke", "closed", 1), ("Oud-Zottegem", "open", 1)]
    out = capacity_overview(["Gent", "Merelbeke", "Melle"], counts)
    rows = {r["municipality"]: r for r in out["municipalities"]}
    assert list(rows) == ["Gent", "Merelbeke", "Melle", "Oud-Zottegem"]
    assert rows["Gent"] == {"municipality": "Gent", "open": 3, "limited": 4, "closed": 2, "unknown": 1,
                            "active": 10, "closed_share": 0.2}
    assert rows["Merelbeke"]["closed_share"] == 1.0
    assert rows["Melle"] == {"municipality": "Melle", "open": 0, "limited": 0, "closed": 0, "unknown": 0,
                             "active": 0, "closed_share": None}
    assert out["totals"] == {"open": 4, "limited": 4, "closed": 3, "unknown": 1, "active": 12, "closed_share": 0.25}


def test_capacity_overview_rounds_and_merges_case_variants():
    out = capacity_overview(["Gent"], [("gent", "closed", 1), ("Gent", "open", 2)])
    assert out["municipalities"] == [{"municipality": "Gent", "open": 2, "limited": 0, "closed": 1, "unknown": 0,
                                      "active": 3, "closed_share": 0.3333}]


def test_capacity_overview_of_an_empty_region():
    out = capacity_overview([], [])
    assert out == {"municipalities": [], "totals": {"open": 0, "limited": 0, "closed": 0, "unknown": 0,
                                                    "active": 0, "closed_share": None}}
