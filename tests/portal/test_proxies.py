"""The portal believes X-Forwarded-For only from the proxies HECHT_TRUSTED_PROXIES names, as
the services do (hecht/proxies.py): the sign-in rate limit per client then counts each
forwarded client apart. From any other peer the header is anybody's words, and every request
counts against the peer's own address. The portal runs as a real process (gunicorn); the
test's requests come from 127.0.0.1."""
from __future__ import annotations

import pytest

from tests.support.fleet import fleet

from .conftest import Browser, new_email


def _sign_in_from(b: Browser, forwarded_for: str) -> int:
    return b.post("/sign-in", {"email": new_email(), "next": ""}, csrf_from="/sign-in",
                  headers={"X-Forwarded-For": forwarded_for}).status_code


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-peer", "untrusted-peer"])
def test_the_per_client_sign_in_limit_believes_forwarded_addresses_only_from_trusted_proxies(
        hecht_env, tmp_path, trusted):
    env = {"HECHT_PORTAL_SIGNIN_LIMIT_CLIENT": "2", "HECHT_PORTAL_SIGNIN_LIMIT_ADDRESS": "100",
           "HECHT_TRUSTED_PROXIES": "127.0.0.0/8" if trusted else "",
           "HECHT_PORTAL_PROXIES": "1"}  # no longer read: a hop count must not make the header count
    with fleet(hecht_env, tmp_path, services=("members",), workers=False, extra_env=env) as f:
        b = Browser(f.urls["portal"])
        # three clients behind the proxy, each with its own address
        codes = [_sign_in_from(b, f"198.51.100.{i}") for i in (1, 2, 3)]
        if trusted:
            assert codes == [302, 302, 302], codes
            # one forwarded client has its own budget of two, whatever the left part claims
            codes = [_sign_in_from(b, f"6.6.6.{i}, 198.51.100.9") for i in (1, 2, 3)]
            assert codes == [302, 302, 429], codes
        else:
            # the header is not believed: all three are the peer, whose budget is two
            assert codes == [302, 302, 429], codes
            assert _sign_in_from(b, "198.51.100.77") == 429
