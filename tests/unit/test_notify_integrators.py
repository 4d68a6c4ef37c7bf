"""Integrator rules without I/O: event-type coverage, ed25519 (v1a) signatures, the circuit
gate, and the event catalogue's examples against their schemas."""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hecht.errors import Invalid
from services.notify import catalogue, integrators, signing
from services.notify.worker import _circuit_gate

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("allowed, pattern, ok", [
    (["*"], "*", True), (["agreement.*"], "*", False), (["agreement.*"], "agreement.*", True),
    (["agreement.*"], "agreement.activated", True), (["agreement.activated"], "agreement.*", False),
    (["member.enrolled"], "member.enrolled", True), (["member.enrolled"], "member.left", False),
    (["agreement.*", "member.*"], "member.capacity_changed", True),
])
def test_a_pattern_is_covered_only_when_every_type_it_matches_is(allowed, pattern, ok):
    assert integrators.covered(allowed, pattern) is ok


def test_check_within_names_each_pattern_outside():
    with pytest.raises(Invalid) as e:
        integrators.check_within(["agreement.*"], ["agreement.signed", "member.*", "*"])
    assert set(e.value.errors["event_types"]) == {"1", "2"}
    integrators.check_within(["agreement.*"], ["agreement.signed"])


def test_v1a_signatures_follow_the_spec_and_verify_with_cryptography():
    private, public = signing.new_keypair()
    assert private.startswith("whsk_") and public.startswith("whpk_")
    assert len(base64.b64decode(public[5:])) == 32
    body = '{"id":"e1","data":{"x":1}}'
    hdrs = signing.headers_for("v1a", [private], "e1", body)
    version, sig = hdrs["webhook-signature"].split(",", 1)
    assert version == "v1a"
    content = f"e1.{hdrs['webhook-timestamp']}.{body}".encode()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public[5:])).verify(base64.b64decode(sig), content)
    assert signing.verify_v1a(public, body, hdrs)
    assert not signing.verify_v1a(public, body.replace("1}", "2}"), hdrs)
    other = signing.new_keypair()[1]
    assert not signing.verify_v1a(other, body, hdrs)
    old = dict(hdrs, **{"webhook-timestamp": str(int(datetime.now(timezone.utc).timestamp()) - 3600)})
    assert not signing.verify_v1a(public, body, old)
    # v1 is unchanged: HMAC with the whsec_ secret
    assert signing.headers_for("v1", [signing.new_secret()], "e1", body)["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize("circuit, gate", [
    (None, "go"), ({"state": "closed", "consecutive_failures": 3}, "go"),
    ({"state": "open", "retry_at": NOW + timedelta(seconds=5)}, "wait"),
    ({"state": "open", "retry_at": NOW - timedelta(seconds=1)}, "probe"),
    ({"state": "half-open", "probe_until": NOW + timedelta(seconds=5)}, "wait"),
    ({"state": "half-open", "probe_until": NOW - timedelta(seconds=1)}, "probe"),  # the probe's holder died
    ({"state": "open", "retry_at": (NOW + timedelta(seconds=5)).replace(tzinfo=None)}, "wait"),  # naive from Mongo
])
def test_the_circuit_gate(circuit, gate):
    assert _circuit_gate({"circuit": circuit}, NOW) == gate


def test_every_catalogue_example_validates_against_its_schema():
    entries = catalogue.catalogue()
    assert len(entries) >= 25
    for e in entries:
        assert catalogue.validate_example(e) == [], e["type"]
        assert "personal" not in e["example"]
    assert all(not e["type"].startswith("staff.") for e in entries)


def test_every_catalogue_schema_is_self_contained():
    """The catalogue's schemas carry every file they refer to: validated with no registry at
    all (as an integrator would, who cannot resolve our urn: ids), each example passes, and a
    schema that refers to a shared file shows its definitions."""
    import jsonschema
    entries = catalogue.catalogue()
    for entry in entries:
        validator = jsonschema.Draft202012Validator(entry["schema"], format_checker=jsonschema.FormatChecker())
        assert list(validator.iter_errors(entry["example"])) == [], entry["type"]
    signed = next(e for e in entries if e["type"] == "agreement.signed")
    assert "common.agreements.v1" in signed["schema"]["$defs"]
    assert "agreement" in signed["schema"]["$defs"]["common.agreements.v1"]["$defs"]


def test_the_catalogue_offers_no_draft_event_and_subscriptions_to_one_are_refused():
    """Drafts never leave the agreements service (issue 22): their types are neither in the
    catalogue nor subscribable, and the refusal says why (an unknown type would say 'unknown')."""
    import pytest
    from hecht.errors import Invalid
    from services.notify import domain
    types = {e["type"] for e in catalogue.catalogue()}
    assert {"agreement.mandate_requested", "agreement.signed"} <= types
    assert not types & {"agreement.drafted", "agreement.revised"}
    assert domain.normalize_patterns(["agreement.*"]) == ["agreement.*"]
    for pattern in ("agreement.drafted", "hecht.agreement.revised.v1"):
        with pytest.raises(Invalid) as e:
            domain.normalize_patterns(["agreement.signed", pattern])
        [message] = e.value.errors["event_types"]["1"]
        assert "not delivered" in message and "agreement.mandate_requested" in message
