"""Response headers of the real portal process (gunicorn, as deployed), issue 22 low items 9
and 10: htmx's ``HX-Push-Url`` is a valid header whatever the path (gunicorn refuses a header
with CR/LF or a character outside Latin-1, and the request failed), and nothing a signed-in
session is answered may be cached, while the public static files still can be."""
from __future__ import annotations

import re

import requests

from .conftest import Browser, new_email
from .test_console import _staff

HEADER_SAFE = re.compile(r"^[A-Za-z0-9/:@!$&'()*+,;=\-._~?%]*$")  # percent-encoded, nothing else
HX = {"HX-Request": "true"}


def test_htmx_requests_with_odd_paths_get_a_percent_encoded_push_url(portal_fleet, hecht):
    region = hecht.region()
    b = Browser(portal_fleet.urls["portal"])
    odd = ["/%ff", "/regions/%ff", "/%0d%0aSet-Cookie:%20hecht_session=x", f"/regions/{region}%0d%0a",
           "/regions?q=%ff%0d%0a", "/sign-in?next=%0d%0aX-Evil:%201", "/r/%C3%A9%00/membership",
           "/regions/%e2%80%a8", "/integrations/catalogue?x=%0a%0d%ff%fe"]
    for path in odd:
        try:
            r = b.get(path, headers=HX, allow_redirects=False)
        except requests.ConnectionError as e:  # gunicorn dropped the response with the bad header
            raise AssertionError(f"{path}: no answer ({e})") from None
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
        assert "X-Evil" not in r.headers and r.cookies.get("hecht_session") != "x", (path, r.headers)
        push = r.headers.get("HX-Push-Url")
        if push is not None:
            assert HEADER_SAFE.match(push), (path, push)
    # An ordinary request keeps its address, and a non-ASCII one is shown percent-encoded
    r = b.get(f"/regions/{region}?tab=1", headers=HX)
    assert r.status_code == 200 and r.headers["HX-Push-Url"] == f"/regions/{region}?tab=1", r.headers
    r = b.get("/regions/caf%C3%A9", headers=HX)
    assert r.status_code == 404 and r.headers["HX-Push-Url"] == "/regions/caf%C3%A9", r.headers
    r = b.get("/regions?q=a%20b%26c", headers=HX)
    assert r.status_code == 200 and r.headers["HX-Push-Url"] == "/regions?q=a%20b%26c", r.headers


def test_nothing_a_signed_in_session_is_answered_may_be_cached_but_static_files_may(portal_fleet, hecht):
    region = hecht.region()
    portal = portal_fleet.urls["portal"]
    email = new_email()
    member = hecht.sign_up(region, email)
    hecht.approve(region, member)
    gp = Browser(portal)
    gp.sign_in(email)
    _sid, staff_email = _staff(hecht, admin_of=[region])
    staff = Browser(portal)
    staff.sign_in(staff_email)

    for b, path, kind in ((gp, f"/r/{region}/my-data.json", "application/json"),
                          (staff, f"/admin/{region}/capacity.csv", "text/csv"),
                          (gp, f"/r/{region}/membership", "text/html"),
                          (staff, f"/admin/{region}", "text/html")):
        r = b.get(path, allow_redirects=False)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(kind), (path, r.status_code)
        assert r.headers.get("Cache-Control") == "no-store", (path, r.headers)
    # a redirect answered to a signed-in session, too (it says where the person is)
    r = gp.get(f"/r/{region}/members/{member}", allow_redirects=False)
    assert r.status_code == 302 and r.headers.get("Cache-Control") == "no-store", r.headers

    # The public static files stay cacheable, signed in or not: validators, no no-store, a 304 on revalidation
    for b in (gp, Browser(portal)):
        for path in ("/static/portal.css", "/static/vendor/htmx-2.0.11.min.js"):
            r = b.get(path)
            assert r.status_code == 200, path
            assert "no-store" not in r.headers.get("Cache-Control", ""), (path, r.headers)
            assert r.headers.get("ETag") and r.headers.get("Last-Modified"), (path, r.headers)
            again = b.get(path, headers={"If-None-Match": r.headers["ETag"]})
            assert again.status_code == 304, (path, again.status_code)
