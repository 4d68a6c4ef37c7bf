"""Trusted proxies: believe ``X-Forwarded-For``/``-Proto`` only from the proxies you name.

``HECHT_TRUSTED_PROXIES`` is a list of CIDRs (default: none). A request whose peer is not in
it is taken as it is: its forwarded headers are anybody's words, so rate limits and logs keep
the peer's address. From a trusted peer, the client is found as werkzeug's ProxyFix and nginx's
``real_ip_recursive`` find it: walk ``X-Forwarded-For`` from the right, past every trusted
hop; the first address that is not a trusted proxy is the client. The original values stay in
``environ["werkzeug.proxy_fix.orig"]``, as ProxyFix leaves them.
"""
from __future__ import annotations

import ipaddress
from typing import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str | Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.168.1.10"`` → networks; a bad entry is a configuration error."""
    items = raw.split(",") if isinstance(raw, str) else raw
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"HECHT_TRUSTED_PROXIES: {item!r} is not an address or CIDR") from None
    return tuple(out)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks)


def client_from(peer: str, forwarded_for: str, networks: tuple[Network, ...]) -> str:
    """The client's address for a request from ``peer`` carrying ``forwarded_for``."""
    if not networks or not _trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop.split("%", 1)[0])
        except ValueError:
            break  # garbage in the chain: stop at the last address we could vouch for
        client = hop
        if not _trusted(hop, networks):
            break
    return client


class TrustedProxies:
    """WSGI middleware applying :func:`client_from` (and the scheme) before Flask sees the request."""

    def __init__(self, app: Callable, networks: tuple[Network, ...]):
        self.app, self.networks = app, networks

    def __call__(self, environ: dict, start_response: Callable):
        peer = environ.get("REMOTE_ADDR", "")
        if self.networks and _trusted(peer, self.networks):
            environ["werkzeug.proxy_fix.orig"] = {"REMOTE_ADDR": peer,
                                                  "wsgi.url_scheme": environ.get("wsgi.url_scheme")}
            environ["REMOTE_ADDR"] = client_from(peer, environ.get("HTTP_X_FORWARDED_FOR", ""), self.networks)
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
