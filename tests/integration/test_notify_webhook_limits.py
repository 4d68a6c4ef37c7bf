"""Issue 22, medium 1: a webhook delivery is bounded in time and size, against real local
receivers (raw sockets on 127.0.0.1 that count what they managed to send): a redirect's body
is never read nor followed, a large body is cut to the excerpt, and a receiver that drips
one byte every 2 s is cut off at the one total deadline."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from hecht.config import settings
from services.notify import outbound
from services.notify.worker import MAX_BODY_READ, RESPONSE_BYTES, DeliveryEngine
from tests.conftest import wait_until
from tests.integration.test_notify_support import (  # noqa: F401 - fixtures
    consume, deliveries, fast, notify_client, notify_db, subscribe, vote_cast_event)

MB = 1024 * 1024


class RawReceiver:
    """Answers every request on 127.0.0.1 with ``head`` (the status line and headers), then
    ``body_size`` bytes in 64 KB writes, or, with ``drip_s``, one byte of ``head`` + body
    every ``drip_s`` seconds. ``sent`` counts the bytes the kernel took before the client
    hung up; the send buffer is kept small so that count is close to what went out."""

    def __init__(self, head: bytes, body_size: int = 0, drip_s: float | None = None, drip_head: bool = True):
        self.head, self.body_size, self.drip_s, self.drip_head = head, body_size, drip_s, drip_head
        self.sent = 0
        self.requests: list[bytes] = []
        self.done = threading.Event()
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
                self._answer(conn)
            self.done.set()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(rest) < length:
            rest += conn.recv(65536)
        self.requests.append(head)
        conn.settimeout(30)
        try:
            if self.drip_s is None:
                conn.sendall(self.head)
                self.sent += len(self.head)
                chunk = b"x" * 65536
                left = self.body_size
                while left > 0 and not self.stop.is_set():
                    n = conn.send(chunk[:min(left, len(chunk))])
                    self.sent += n
                    left -= n
            else:
                if not self.drip_head:
                    conn.sendall(self.head)
                    self.sent += len(self.head)
                out = (self.head if self.drip_head else b"") + b"x" * self.body_size
                for i in range(len(out)):
                    if self.stop.wait(self.drip_s if i else 0):
                        return
                    conn.send(out[i:i + 1])
                    self.sent += 1
        except OSError:  # the client hung up: what was sent so far is the count
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(10)


@pytest.fixture
def receivers():
    made = []

    def make(*args, **kw) -> RawReceiver:
        r = RawReceiver(*args, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def _one_attempt(client, url: str) -> tuple[dict, dict]:
    """Subscribe ``url``, hand notify one event and make exactly one attempt: (delivery, attempt)."""
    sub = subscribe(client, url, ["agreement.*"])
    consume(vote_cast_event("a_1", 1))
    engine = DeliveryEngine(settings("notify"), notify_db())
    try:
        assert engine.dispatch_once() == 1
        d = wait_until(lambda: engine.flush(0.2) is not None and deliveries(sub["id"], attempt_count=1),
                       timeout=60, message="the attempt recorded")[0]
    finally:
        engine.close()
    return d, d["attempts"][0]


def test_a_redirect_is_not_followed_and_its_30_mb_body_not_read(notify_client, receivers):
    target = receivers(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    big = 30 * MB
    r = receivers(b"HTTP/1.1 302 Found\r\nLocation: " + target.url("/elsewhere").encode()
                  + b"\r\nContent-Type: text/plain\r\nContent-Length: " + str(big).encode() + b"\r\n\r\n",
                  body_size=big)
    d, attempt = _one_attempt(notify_client, r.url())
    assert r.done.wait(10), "the receiver never saw the client hang up"
    assert r.sent < 1 * MB, f"{r.sent} bytes of a 30 MB redirect body went out"
    assert len(r.requests) == 1 and not target.requests  # asked once, the redirect not followed
    assert d["status"] == "pending" and attempt["status"] == 302  # a failed attempt, retried later
    assert "redirect (302) not followed" in attempt["error"]
    assert attempt["response"] == ""


def test_a_large_answer_is_cut_to_the_excerpt(notify_client, receivers):
    r = receivers(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + str(30 * MB).encode()
                  + b"\r\n\r\n", body_size=30 * MB)
    d, attempt = _one_attempt(notify_client, r.url())
    assert r.done.wait(10)
    assert r.sent < 1 * MB, f"{r.sent} bytes of a 30 MB answer went out"
    assert d["status"] == "succeeded" and attempt["status"] == 200 and attempt["error"] is None
    assert attempt["response"] == "x" * RESPONSE_BYTES


@pytest.mark.parametrize("drip_head", [True, False], ids=["dripped-headers", "dripped-body"])
def test_a_receiver_that_drips_is_cut_off_at_the_total_deadline(notify_client, receivers, monkeypatch,
                                                                 drip_head):
    deadline_s, margin_s = 3.0, 1.5
    monkeypatch.setenv("HECHT_WEBHOOK_TIMEOUT_S", str(deadline_s))
    # one byte every 2 s: no single recv ever waits as long as the 3 s per-operation timeout
    r = receivers(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", body_size=40, drip_s=2.0,
                  drip_head=drip_head)
    t0 = time.monotonic()
    d, attempt = _one_attempt(notify_client, r.url())
    assert time.monotonic() - t0 < deadline_s + margin_s + 2  # the test's own set-up included
    assert attempt["latency_ms"] <= (deadline_s + margin_s) * 1000, attempt
    assert attempt["status"] is None and "total deadline of 3 s" in attempt["error"]
    assert d["status"] == "pending"


def test_the_deadline_also_bounds_a_direct_post_and_a_pooled_connection(receivers):
    """``outbound.post`` on its own: a quick answer on a fresh connection, then a drip on the
    same kept-alive session is cut off within the deadline."""
    quick = receivers(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", body_size=2)
    s = outbound.session(allow_private=True)
    try:
        reply = outbound.post(s, quick.url(), b"{}", {}, timeout_s=2.0)
        assert reply.status == 200 and reply.body == b"xx" and not reply.truncated
        slow = receivers(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", body_size=10, drip_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(outbound.DeadlineExceeded):
            outbound.post(s, slow.url(), b"{}", {}, timeout_s=1.0)
        assert time.monotonic() - t0 < 1.8
        big = receivers(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(MB).encode() + b"\r\n\r\n", body_size=MB)
        reply = outbound.post(s, big.url(), b"{}", {}, timeout_s=5.0)
        assert len(reply.body) == MAX_BODY_READ and reply.truncated
    finally:
        s.close()
