"""The identity rule for e-mail addresses (hecht/emails.py, issue 22): what reaches one account
and what never does. The members service's sign-in and its uniqueness keys use this rule, as do
notify's integrator contacts and the portal's sign-in page."""
from __future__ import annotations

import pytest

from hecht import emails
from services.members import domain

VICTIM = "victim@strasse.example.org"


def same_account(a: str, b: str) -> bool:
    """As the members service decides it at sign-in (and the shared rule, which must agree)."""
    members = domain.email_key(domain.sign_in_email(a)) == domain.email_key(domain.sign_in_email(b))
    assert members == (emails.lookup_key(a) == emails.lookup_key(b))
    return members


# -- what reaches the same account ---------------------------------------------------------------
@pytest.mark.parametrize("typed", [
    "victim@strasse.example.org",
    "  victim@strasse.example.org\t",
    "VICTIM@STRASSE.EXAMPLE.ORG",            # upper-case ASCII: the same person
    "Victim@Strasse.Example.Org",
    "victim@ｓｔｒａｓｓｅ.example.org",       # fullwidth in the DOMAIN: UTS #46 maps it, as DNS does
])
def test_ascii_case_and_the_dns_mapping_of_the_domain_reach_the_account(typed):
    assert same_account(typed, VICTIM)
    assert emails.lookup_key(typed) == VICTIM


def test_upper_case_ascii_keeps_the_local_part_as_given_and_lowers_the_domain():
    assert emails.normalise(" An.DeSmet@Example.BE ") == "An.DeSmet@example.be"
    assert emails.key("An.DeSmet@example.be") == "an.desmet@example.be"
    assert domain.email_key("An.DeSmet@Example.BE") == domain.email_key("an.desmet@example.be")


# -- what never does ----------------------------------------------------------------------------
@pytest.mark.parametrize("typed", [
    "victim@straße.example.org",             # ß is not ss (non-transitional IDNA 2008)
    "victim@xn--strae-oqa.example.org",      # the punycode of straße: another DNS domain
    "victim@STRAẞE.example.org",             # capital sharp s maps to ß, still not ss
])
def test_sharp_s_and_its_punycode_never_reach_strasse(typed):
    assert not same_account(typed, VICTIM)
    assert emails.lookup_key(typed) == "victim@xn--strae-oqa.example.org"


def test_the_punycode_and_the_unicode_form_of_a_domain_are_one_domain():
    assert emails.normalise("victim@Straße.example.org") == "victim@xn--strae-oqa.example.org"
    assert same_account("victim@straße.example.org", "victim@XN--STRAE-OQA.example.org")


@pytest.mark.parametrize("local", [
    "ｖｉｃｔｉｍ",           # fullwidth letters
    "vıctim",               # Turkish dotless ı
    "VİCTIM",               # Turkish capital İ with a dot
    "\u212Aate",            # Kelvin sign K
    "victim\u0301",         # a combining acute accent
    "cafe\u0301",           # e + combining acute (NFD of café)
    "straße",
    "vic\u200btim",         # a zero-width space
])
def test_a_local_part_outside_ascii_is_refused_by_default(local):
    with pytest.raises(emails.AddressError):
        emails.normalise(f"{local}@example.org")
    with pytest.raises(ValueError):
        domain.normalise_email(f"{local}@example.org")
    with pytest.raises(ValueError):
        domain.normalise_staff_email(f"{local}@example.org")


@pytest.mark.parametrize("local, lookalike", [
    ("vıctim", "victim"), ("VİCTIM", "victim"), ("ｖｉｃｔｉｍ", "victim"), ("straße", "strasse"),
    ("café", "cafe"), ("ΣΊΣΥΦΟΣ", "σίσυφος"),
])
def test_where_a_region_allows_non_ascii_local_parts_nothing_is_folded(local, lookalike):
    address = emails.normalise(f"{local}@example.org", unicode_local=True)
    assert address == f"{local}@example.org"
    assert emails.key(address) != emails.key(f"{lookalike}@example.org")
    # only ASCII letters are lower-cased; every other character stays as typed
    assert emails.lookup_key(f"{local}@example.org") == emails.ascii_lower(local) + "@example.org"
    assert [c for c in emails.lookup_key(f"{local}@example.org") if not c.isascii()] == \
        [c for c in local if not c.isascii()]


@pytest.mark.parametrize("local", ["\u212Aate", "cafe\u0301", "victim\u0301"])
def test_a_local_part_that_nfc_would_change_is_refused_even_where_allowed(local):
    # NFC turns the Kelvin sign into K and composes é: accepting it would fold one into the other.
    with pytest.raises(emails.AddressError):
        emails.normalise(f"{local}@example.org", unicode_local=True)
    assert emails.key(f"{local}@example.org") != emails.key("kate@example.org")


def test_in_a_domain_uts46_decides_as_dns_does():
    # Kelvin sign and fullwidth letters map to ASCII; ı and combining marks do not fold to i / e.
    assert emails.ascii_domain("\u212Aate.example") == "kate.example"
    assert emails.ascii_domain("ＥＸＡＭＰＬＥ。org") == "example.org"
    assert emails.ascii_domain("strıng.example") == "xn--strng-p4a.example" != "string.example"
    assert emails.ascii_domain("cafe\u0301.example") == emails.ascii_domain("café.example") == "xn--caf-dma.example"
    with pytest.raises(emails.AddressError):
        emails.ascii_domain("\u0301x.example")   # a label may not start with a combining mark


@pytest.mark.parametrize("raw", ["", "victim", "victim@", "@example.org", "a b@example.org", "victim@exa mple.org",
                                 "victim@example..org", "victim@[192.0.2.1]", "victim@under_score.example",
                                 "x" * 65 + "@example.org", "victim@" + "a" * 64 + ".org"])
def test_what_is_not_an_address(raw):
    with pytest.raises(emails.AddressError):
        emails.normalise(raw, unicode_local=True)


def test_no_casefold_or_lower_of_non_ascii_text():
    # casefold() would make these equal; the rule must not.
    for a, b in (("straße@x.org", "strasse@x.org"), ("ǅ@x.org", "ǆ@x.org"), ("ΣΑ@x.org", "σα@x.org")):
        assert a.casefold() == b.casefold() or a.lower() == b.lower()
        assert emails.key(a) != emails.key(b)


def test_the_key_of_a_stored_address_never_raises():
    # Addresses stored before the rule (email_validator kept Unicode domains) get their new key.
    assert emails.key("victim@straße.example.org") == "victim@xn--strae-oqa.example.org"
    assert emails.key("Jürgen@Example.DE") == "jürgen@example.de"
    assert emails.key("odd@under_score.Example") == "odd@under_score.example"
    assert emails.key("not-an-address") == "not-an-address"


def test_what_is_stored_passes_the_full_check():
    assert emails.validate(" An@Praktijk.BE ") == "An@praktijk.be"
    assert emails.validate("an@Straße.de") == "an@xn--strae-oqa.de"
    for bad in ("an@localhost", "an@example.local", "an@example.test", "an..x@example.org"):
        with pytest.raises(emails.AddressError):
            emails.validate(bad)
    assert emails.validate("int@example.test", test_environment=True) == "int@example.test"
    assert emails.validate("jürgen@example.de", unicode_local=True) == "jürgen@example.de"


def test_members_sign_up_follows_the_region_setting():
    region = domain.Region("r", "R", "BE", "eerstelijnszone", ["Gent"])
    with pytest.raises(domain.Invalid) as e:
        domain.profile_fields({"email": "jürgen@example.de"}, region, partial=True)
    assert "ASCII" in e.value.errors["email"][0]
    opted_in = domain.Region("r", "R", "BE", "eerstelijnszone", ["Gent"], unicode_email_local_parts=True)
    assert domain.profile_fields({"email": "jürgen@Example.DE"}, opted_in, partial=True) == {"email": "jürgen@example.de"}
    assert opted_in.event_data()["unicode_email_local_parts"] is True
    assert region.event_data()["unicode_email_local_parts"] is False


def test_sign_in_looks_up_any_well_formed_address_and_refuses_the_rest():
    assert domain.sign_in_email(" Admin@Demo.Hecht.LOCAL ") == "Admin@demo.hecht.local"
    assert domain.sign_in_email("jürgen@example.de") == "jürgen@example.de"   # a region may allow it
    with pytest.raises(domain.Invalid):
        domain.sign_in_email("\u212Aate@example.org")
