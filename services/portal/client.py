"""The BFF client: HTTP calls to the members, agreements and notify APIs.

Each call carries a JWT minted for this request (≤ 5 minutes): the signed-in GP's own
(`gp`, region, member) or the `portal` service token for public pages and the sign-in
lookup. The services decide what the token may see; the portal never does.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import requests

from hecht.auth import mint
from hecht.web import CLIENT_HEADER

from .config import PortalSettings

_local = threading.local()


class ApiUnavailable(Exception):
    """The service did not answer (down, timeout, or a 5xx): a 503 page."""

    def __init__(self, service: str, detail: str = ""):
        super().__init__(f"{service}: {detail}")
        self.service = service


@dataclass
class ApiError(Exception):
    """A 4xx problem response (RFC 9457)."""
    status: int
    problem: dict = field(default_factory=dict)

    @property
    def errors(self) -> dict:
        e = self.problem.get("errors")
        return e if isinstance(e, dict) else {}

    @property
    def title(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "")


@dataclass
class Reply:
    status: int
    data: dict
    etag: str | None = None


def _http() -> requests.Session:
    s = getattr(_local, "session", None)
    if s is None:  # one connection pool per thread (gunicorn sync workers: one per process)
        s = _local.session = requests.Session()
    return s


class Api:
    def __init__(self, settings: PortalSettings):
        self.settings = settings
        self.base = {"members": settings.members_url, "agreements": settings.agreements_url,
                     "notify": settings.notify_url}

    def portal_token(self) -> str:
        return mint(self.settings.hecht, roles=["portal"], ttl=300, sub="service:portal")

    def gp_token(self, region: str, member: str) -> str:
        return mint(self.settings.hecht, roles=["gp"], region=region, member=member, ttl=300)

    def staff_region_token(self, region: str, staff_id: str) -> str:
        """A region-admin of ``region`` (the portal checked the session's ``admin_of`` first)."""
        return mint(self.settings.hecht, roles=["region-admin"], region=region, sub=f"staff:{staff_id}", ttl=300)

    def integrator_token(self, region: str, integrator_id: str) -> str:
        """An integrator application of ``region`` (the portal checked that the session's person
        holds it, from ``POST /v1/integrator-sign-ins``); notify checks ``sub`` on every call."""
        return mint(self.settings.hecht, roles=["integrator"], region=region, sub=integrator_id, ttl=300)

    def staff_platform_token(self, staff_id: str) -> str:
        return mint(self.settings.hecht, roles=["platform-admin"], sub=f"staff:{staff_id}", ttl=300)

    def call(self, service: str, method: str, path: str, *, token: str | None = None, json=None,
             params=None, if_match: str | None = None, request_id: str | None = None,
             client_address: str | None = None) -> Reply:
        headers = {"Accept": "application/json"}
        if client_address:
            # The person's address, so the API's per-client limits (public sign-up) count the
            # person and not the portal; the API believes it only with the portal's token.
            headers[CLIENT_HEADER] = client_address
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if if_match:
            headers["If-Match"] = if_match
        if request_id:
            headers["X-Request-Id"] = request_id
        try:
            r = _http().request(method, f"{self.base[service]}{path}", json=json, params=params,
                                headers=headers, timeout=self.settings.api_timeout_s)
        except requests.RequestException as e:
            raise ApiUnavailable(service, type(e).__name__) from None
        if r.status_code >= 500:
            raise ApiUnavailable(service, f"status {r.status_code}")
        try:
            data = r.json() if r.content else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {"items": data}
        if r.status_code >= 400:
            raise ApiError(r.status_code, data)
        return Reply(r.status_code, data, r.headers.get("ETag"))
