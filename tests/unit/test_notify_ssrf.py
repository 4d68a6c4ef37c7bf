"""Webhook URLs that try to reach the inside of the network, table-driven (no network needed).

Each form is refused twice over: when a subscription is created (``handlers._check_url``) and
when a delivery connects (``outbound.session``, which resolves and checks the address it dials).
Numeric host forms are parsed by the C library's resolver exactly as curl or requests would,
without DNS; host names stand in for DNS answers through a patched ``getaddrinfo``.
"""
from __future__ import annotations

import socket

import pytest
import requests

from hecht.config import Settings
from hecht.errors import Invalid
from services.notify import handlers, outbound

SETTINGS = Settings(service="notify", mongo_uri="mongodb://x/hecht_notify", kafka_bootstrap_servers="x")

# host part of https://<host>/hook → why it must be refused
BYPASSES = {
    "2130706433": "127.0.0.1 as one decimal number",
    "0177.0.0.1": "127.0.0.1 in octal",
    "0x7f.0.0.1": "127.0.0.1 in hex",
    "0x7f000001": "127.0.0.1 as one hex number",
    "017700000001": "127.0.0.1 as one octal number",
    "127.1": "127.0.0.1 shortened",
    "0": "0.0.0.0 shortened",
    "0.0.0.0": "the unspecified address",
    "2852039166": "169.254.169.254 as one decimal number",
    "0xa9.0xfe.0xa9.0xfe": "169.254.169.254 in hex",
    "0251.0376.0251.0376": "169.254.169.254 in octal",
    "169.254.169.254": "cloud metadata",
    "100.100.100.200": "CGNAT (Alibaba metadata)",
    "10.0.0.1": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "[::1]": "IPv6 loopback",
    "[::]": "IPv6 unspecified",
    "[::ffff:127.0.0.1]": "IPv4-mapped loopback",
    "[::ffff:a9fe:a9fe]": "IPv4-mapped metadata, hex",
    "[64:ff9b::a9fe:a9fe]": "NAT64 well-known prefix → 169.254.169.254",
    "[64:ff9b::7f00:1]": "NAT64 well-known prefix → 127.0.0.1",
    "[64:ff9b:1::a00:1]": "NAT64 local-use prefix → 10.0.0.1",
    "[::127.0.0.1]": "IPv4-compatible loopback",
    "[::a9fe:a9fe]": "IPv4-compatible metadata",
    "[::ffff:0:7f00:1]": "IPv4-translated (SIIT) loopback",
    "[2002:a9fe:a9fe::]": "6to4 → 169.254.169.254",
    "[2002:7f00:1::1]": "6to4 → 127.0.0.1",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]": "Teredo",
    "[fe80::1]": "link-local",
    "[fd00:ec2::254]": "unique local (AWS metadata over IPv6)",
    "[ff02::1]": "multicast",
    "localhost": "loopback name",
    "api.localhost": "loopback name",
    "metadata.google.internal": "internal name",
    "rebind.example.com": "a name resolving to a private address",
    "mixed.example.com": "a name with one private answer among public ones",
    "nat64.example.com": "a name resolving to a NAT64 form of the metadata address",
}
FAKE_DNS = {
    "rebind.example.com": ["10.1.2.3"],
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
    "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
    "hooks.example.com": ["93.184.216.34"],
    "v6.example.com": ["2606:4700::1111"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in FAKE_DNS:
            return [((socket.AF_INET6 if ":" in a else socket.AF_INET), socket.SOCK_STREAM, 6, "",
                     (a, port) if ":" not in a else (a, port, 0, 0)) for a in FAKE_DNS[host]]
        if host.endswith(".example.com"):
            raise socket.gaierror(socket.EAI_NONAME, "not in the test's DNS")
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_table_is_large_enough():
    assert len(BYPASSES) >= 25


@pytest.mark.parametrize("host", sorted(BYPASSES))
def test_refused_when_subscribing(host):
    with pytest.raises(Invalid):
        handlers._check_url(f"https://{host}/hook", SETTINGS)


@pytest.mark.parametrize("host", sorted(h for h in BYPASSES if "localhost" not in h and "internal" not in h))
def test_refused_when_delivering(host):
    """The connect-time check alone (the subscription may predate a DNS change)."""
    with pytest.raises((outbound.BlockedDestination, requests.ConnectionError), match="non-public address"):
        outbound.session(allow_private=False).post(f"https://{host}/hook", data=b"{}", timeout=2)


@pytest.mark.parametrize("host", ["hooks.example.com", "v6.example.com", "93.184.216.34", "[2606:4700::1111]",
                                  "[64:ff9b::5db8:d822]"])
def test_public_destinations_pass_the_check(host):
    """Public names and addresses, and NAT64 of a public IPv4 (93.184.216.34), are accepted."""
    assert handlers._check_url(f"https://{host}/hook", SETTINGS)


def test_redirects_are_not_followed():
    """A 3xx is a failed attempt: the session never makes a second request."""
    assert outbound.session(allow_private=False).max_redirects == 0
    assert outbound.session(allow_private=True).max_redirects == 0
