"""Forwarded headers are believed only from the proxies named in HECHT_TRUSTED_PROXIES."""
from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder

from hecht.proxies import TrustedProxies, client_from, parse_networks

INGRESS = parse_networks("10.0.0.0/8, 2001:db8::/32")


@pytest.mark.parametrize("peer, xff, client", [
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),                  # untrusted peer: header ignored
    ("10.1.2.3", "198.51.100.1", "198.51.100.1"),                    # one trusted hop
    ("10.1.2.3", "198.51.100.1, 10.9.9.9", "198.51.100.1"),          # two trusted hops
    ("10.1.2.3", "6.6.6.6, 198.51.100.1", "198.51.100.1"),           # a spoofed left part is not believed
    ("10.1.2.3", "", "10.1.2.3"),                                    # no header: the proxy itself
    ("10.1.2.3", "garbage, 198.51.100.1", "198.51.100.1"),
    ("10.1.2.3", "198.51.100.1, garbage", "10.1.2.3"),               # cannot vouch past garbage
    ("::ffff:10.1.2.3", "198.51.100.1", "198.51.100.1"),             # IPv4-mapped peer
    ("2001:db8::5", "2001:db8::7, 2a00::1", "2a00::1"),
])
def test_client_from(peer, xff, client):
    assert client_from(peer, xff, INGRESS) == client


def test_nothing_is_trusted_by_default():
    assert client_from("10.1.2.3", "198.51.100.1", parse_networks("")) == "10.1.2.3"


def test_a_bad_entry_is_a_configuration_error():
    with pytest.raises(ValueError, match="HECHT_TRUSTED_PROXIES"):
        parse_networks("10.0.0.0/8, not-a-cidr")


def _through(peer: str, headers: dict) -> dict:
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]
    env = EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": peer}).get_environ()
    TrustedProxies(app, INGRESS)(env, lambda *a: None)
    return seen


def test_middleware_sets_address_and_scheme_only_for_trusted_peers():
    env = _through("10.1.2.3", {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"})
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("198.51.100.1", "https")
    assert env["werkzeug.proxy_fix.orig"]["REMOTE_ADDR"] == "10.1.2.3"
    env = _through("203.0.113.9", {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"})
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.9", "http")
