"""Outbound HTTP for webhooks that cannot be pointed at the inside of our network.

The check that matters happens at connect time, on the address actually dialled: the host
name is resolved once, *every* answer must be a public address, and the socket is opened
to that checked address (TLS still verifies the certificate against the host name). A DNS
answer that changes between the subscription's creation and the delivery (DNS rebinding),
or a name like ``localhost``, therefore never reaches a private, loopback, link-local or
cloud-metadata address. Proxies from the environment are ignored and redirects are not
followed (a 3xx is a failed attempt), so neither can route around the check.

``HECHT_WEBHOOKS_ALLOW_PRIVATE=1`` (development and tests) turns the address check off.
"""
from __future__ import annotations

import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import connection as u3conn

from .domain import address_is_public


class BlockedDestination(Exception):
    """The URL resolves to an address webhooks may not reach (or uses plain http)."""


def resolve_public(host: str, port: int) -> str:
    """Resolve ``host`` and return an address to dial, if every answer is public."""
    host = host.strip("[]").rstrip(".")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # gaierror: an OSError
    addresses = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addresses.append(sockaddr[0])
    if not addresses:
        raise OSError(f"{host} has no IP address")
    blocked = [a for a in addresses if not address_is_public(a)]
    if blocked:
        raise BlockedDestination(f"{host} resolves to a non-public address ({blocked[0]}); "
                                 "webhooks may only reach public addresses")
    return addresses[0]


class _PinnedConnectionMixin:
    """Dials the checked address instead of letting the socket layer resolve the name again."""

    def _new_conn(self):  # noqa: D401 - urllib3 hook
        try:
            address = resolve_public(self._dns_host, self.port)
            return u3conn.create_connection((address, self.port), self.timeout,
                                            source_address=self.source_address,
                                            socket_options=self.socket_options)
        except socket.timeout as e:
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from e
        except OSError as e:
            raise NewConnectionError(self, f"failed to connect to {self.host}: {e}") from e


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self.poolmanager = PoolManager(num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


class _HttpsOnlyAdapter(HTTPAdapter):
    def send(self, request, *args, **kwargs):
        raise BlockedDestination("webhook URLs must use https")


def session(allow_private: bool, pool_size: int = 10, hosts: int = 256) -> requests.Session:
    """A session for webhook deliveries: no env proxies, the address rule unless allowed.

    ``hosts`` connection pools are kept (one per endpoint host), ``pool_size`` connections each."""
    s = requests.Session()
    s.trust_env = False
    s.max_redirects = 0
    if allow_private:
        adapter = HTTPAdapter(pool_connections=hosts, pool_maxsize=pool_size, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
    else:
        s.mount("https://", _PublicOnlyAdapter(pool_connections=hosts, pool_maxsize=pool_size,
                                                     max_retries=0))
        s.mount("http://", _HttpsOnlyAdapter())
    return s
