"""Outbound HTTP for webhooks that cannot be pointed at the inside of our network.

The check that matters happens at connect time, on the address actually dialled: the host
name is resolved once, *every* answer must be a public address, and the socket is opened
to that checked address (TLS still verifies the certificate against the host name). A DNS
answer that changes between the subscription's creation and the delivery (DNS rebinding),
or a name like ``localhost``, therefore never reaches a private, loopback, link-local or
cloud-metadata address. Proxies from the environment are ignored and redirects are not
followed (a 3xx is a failed attempt), so neither can route around the check.

Every delivery is bounded in time and size:

- **One total deadline** (:class:`Deadline`, ``HECHT_WEBHOOK_TIMEOUT_S``) covers connecting,
  the TLS handshake, sending and receiving. Per-operation socket timeouts are clamped to what
  is left, and a watchdog thread shuts the connection's socket down when the budget runs out,
  so a receiver that drips a byte at a time (never tripping a per-``recv`` timeout) is cut
  off on time too. Only the DNS lookup before connecting is outside its reach.
- **Bodies are streamed, never loaded**: :func:`post` reads at most ``max_read`` bytes of a
  response and hangs up on the rest; a redirect's body is not read at all. The session never
  follows, nor prepares to follow, a redirect (``requests`` otherwise reads a 3xx body in
  full even with ``allow_redirects=False``), and keeps no cookies between receivers.

``HECHT_WEBHOOKS_ALLOW_PRIVATE=1`` (development and tests) turns the address check off.
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
import urllib3.exceptions
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
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


# -- one total deadline per request -----------------------------------------------------------
class DeadlineExceeded(requests.Timeout):
    """The request's total deadline passed (connect, send and receive together)."""


class Deadline:
    """A time budget for one request. Sockets the request uses are ``watch``-ed: when the
    budget runs out the watchdog shuts them down, which ends any blocked ``recv``/``send``
    (TLS included) at once. ``finish`` disarms it; nothing is cut after that."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        _WATCHDOG.add(self)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def clamp(self, timeout):
        """A per-operation socket timeout no longer than what is left of the budget."""
        left = self.remaining()
        if isinstance(timeout, (int, float)) and timeout is not True and timeout < left:
            return timeout
        return max(left, 0.001)

    def watch(self, sock) -> None:
        """Cut ``sock`` when the deadline passes. A duplicate of its descriptor is kept, so
        the cut still reaches the connection after TLS has taken the socket object over."""
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        except (OSError, ValueError):
            return
        with self._lock:
            if self._done:
                dup.close()
                return
            self._socks.append(dup)
            if self.expired:
                _cut(dup)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for s in self._socks:
                _cut(s)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            socks, self._socks = self._socks, []
        for s in socks:
            s.close()


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One daemon thread that expires deadlines in time order (not a thread per request)."""

    def __init__(self):
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, d: Deadline) -> None:
        with self._cv:
            heapq.heappush(self._heap, (d.at, next(self._seq), d))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook-deadlines", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                at, _, d = self._heap[0]
                delay = at - time.monotonic()
                if delay > 0:
                    self._cv.wait(delay)
                    continue
                heapq.heappop(self._heap)
            d.expire()  # a no-op for a request that has finished


_WATCHDOG = _Watchdog()
_current = threading.local()


def _deadline() -> Deadline | None:
    return getattr(_current, "deadline", None)


class _DeadlineMixin:
    """Connections that honour the calling thread's :class:`Deadline` (new and pooled ones)."""

    def _new_conn(self):  # noqa: D401 - urllib3 hook
        d = _deadline()
        if d is not None:
            if d.remaining() <= 0:
                raise ConnectTimeoutError(self, f"total deadline of {d.seconds:g} s passed before connecting")
            self.timeout = d.clamp(self.timeout)
        sock = super()._new_conn()
        if d is not None:
            d.watch(sock)  # covers the TLS handshake too
        return sock

    def request(self, *args, **kwargs):
        d = _deadline()
        if d is not None:
            self.timeout = d.clamp(self.timeout)
            if self.sock is not None:  # a pooled connection: watch it for this request
                d.watch(self.sock)
        return super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):
        d = _deadline()
        if d is not None:
            self.timeout = d.clamp(self.timeout)
        return super().getresponse(*args, **kwargs)


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


class _PinnedHTTPSConnection(_DeadlineMixin, _PinnedConnectionMixin, HTTPSConnection):
    pass


class _PinnedHTTPConnection(_DeadlineMixin, _PinnedConnectionMixin, HTTPConnection):
    pass


class _TimedHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _TimedHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _TimedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TimedHTTPSConnection


class _TimedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TimedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self.poolmanager = PoolManager(num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


class _AnyAddressAdapter(HTTPAdapter):
    """Development and tests: no address rule, the same deadline."""

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self.poolmanager = PoolManager(num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TimedHTTPPool, "https": _TimedHTTPSPool}


class _HttpsOnlyAdapter(HTTPAdapter):
    def send(self, request, *args, **kwargs):
        raise BlockedDestination("webhook URLs must use https")


class _NoRedirectSession(requests.Session):
    """Never follows a redirect, and never reads one's body to get ready to follow it."""

    def resolve_redirects(self, resp, req, *args, **kwargs):
        return iter(())


def session(allow_private: bool, pool_size: int = 10, hosts: int = 256) -> requests.Session:
    """A session for webhook deliveries: no env proxies, the address rule unless allowed.

    ``hosts`` connection pools are kept (one per endpoint host), ``pool_size`` connections each."""
    s = _NoRedirectSession()
    s.trust_env = False
    s.max_redirects = 0
    s.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # one receiver's cookies are not sent to another
    s.headers["Accept-Encoding"] = "identity"  # what is read is what came over the wire (no zip bombs)
    if allow_private:
        adapter = _AnyAddressAdapter(pool_connections=hosts, pool_maxsize=pool_size, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
    else:
        s.mount("https://", _PublicOnlyAdapter(pool_connections=hosts, pool_maxsize=pool_size,
                                                     max_retries=0))
        s.mount("http://", _HttpsOnlyAdapter())
    return s


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict
    body: bytes          # at most ``max_read`` bytes; nothing for a redirect
    truncated: bool      # the receiver had more to say than was read

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status < 400


def post(s: requests.Session, url: str, body: bytes, headers: dict, timeout_s: float,
         max_read: int = 64 * 1024) -> Reply:
    """POST within one total deadline of ``timeout_s`` (connect, send and receive), reading at
    most ``max_read`` bytes of the answer, and none of a redirect's. Raises
    :class:`DeadlineExceeded` when the deadline cut the request off, :class:`BlockedDestination`
    or a ``requests`` error otherwise."""
    d = Deadline(timeout_s)
    _current.deadline = d
    try:
        try:
            resp = s.post(url, data=body, headers=headers, timeout=(min(timeout_s, 10.0), timeout_s),
                          allow_redirects=False, stream=True)
            try:
                chunks, size, truncated = [], 0, False
                if 300 <= resp.status_code < 400:
                    truncated = True  # a redirect's body is never read
                else:
                    try:
                        while size < max_read:
                            chunk = resp.raw.read(min(8192, max_read - size), decode_content=False)
                            if not chunk:
                                break
                            chunks.append(chunk)
                            size += len(chunk)
                    except ReadTimeoutError as e:
                        raise requests.ReadTimeout(e) from e
                    except urllib3.exceptions.HTTPError as e:
                        raise requests.ConnectionError(e) from e
                    truncated = size >= max_read and not resp.raw.isclosed()
                if d.expired:
                    raise DeadlineExceeded(f"total deadline of {timeout_s:g} s passed while reading the answer")
                return Reply(resp.status_code, dict(resp.headers), b"".join(chunks), truncated)
            finally:
                resp.close()  # closes the connection unless the answer was read to its end
        except (requests.RequestException, OSError) as e:
            if d.expired and not isinstance(e, DeadlineExceeded):
                raise DeadlineExceeded(f"total deadline of {timeout_s:g} s passed") from e
            raise
    finally:
        _current.deadline = None
        d.finish()
