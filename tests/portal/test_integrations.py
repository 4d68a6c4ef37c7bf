"""The integrators' pages (issue 15) over HTTP, every service a real process: who reaches which
page. Two applications of one region (A and B) and one of another region (C):

- A, signed in, sees its own application and subscriptions; B's application, subscription,
  delivery and every action on them are 404 pages for A (and POSTs change nothing); so is
  the other region's integrations page.
- A GP of the region and a staff member without integrator applications get 404 pages
  under /integrations/<r>; someone signed out is sent to sign in; the catalogue and the
  signature guide are public.
- The region console lists the region's applications only; another region's admin gets
  404 for them; suspending A in the console ends A's access (recheck every request here).
- A secret is shown once; a third active client secret is refused next to the credentials.
"""
from __future__ import annotations

import html
import re
import uuid

import pytest
import requests

from tests.conftest import bearer
from tests.support.fleet import fleet

from .conftest import Browser, Hecht, new_email, token_of
from .test_console import _riziv


@pytest.fixture
def int_fleet(hecht_env, tmp_path):
    # every integrator page looks the person's applications up again (suspension shows at once)
    with fleet(hecht_env, tmp_path, extra_env={"HECHT_PORTAL_STAFF_RECHECK_S": "0"}) as f:
        yield f


def ok(r: requests.Response, *status: int) -> dict:
    assert r.status_code in (status or (200,)), f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else {}


def integrator(notify: str, region: str, email: str, name: str, patterns=("agreement.*",)) -> dict:
    return ok(requests.post(f"{notify}/v1/regions/{region}/integrators", headers=bearer("region-admin", region),
                            json={"name": name, "contact_email": email, "event_types": list(patterns)},
                            timeout=10), 201)


def as_app(region: str, app_id: str) -> dict:
    return bearer("integrator", region, sub=app_id)


def subscribe(notify: str, region: str, app_id: str, url: str = "https://example.org/hook") -> dict:
    return ok(requests.post(f"{notify}/v1/regions/{region}/subscriptions", headers=as_app(region, app_id),
                            json={"url": url, "event_types": ["agreement.*"]}, timeout=10), 201)


def staff(members: str, email: str, regions: list[str]) -> None:
    ok(requests.post(f"{members}/v1/staff", headers=bearer("platform-admin"), timeout=10,
                     json={"email": email, "name": f"Staff {email[:8]}", "language": "en",
                           "platform_admin": False, "admin_of": regions}), 201)


def test_integrator_isolation_console_and_public_pages(int_fleet):
    f = int_fleet
    hecht = Hecht(f.urls)
    notify, portal = f.urls["notify"], f.urls["portal"]
    r, other = hecht.region(), hecht.region()
    a_mail, b_mail, c_mail = (f"int.{uuid.uuid4().hex[:8]}@example.org" for _ in range(3))
    a = integrator(notify, r, a_mail, "Ziekenhuis A")
    b = integrator(notify, r, b_mail, "Apotheek B")
    c = integrator(notify, other, c_mail, "Elders C")
    assert a["status"] == "invited" and a["id"].startswith("int_"), a
    # B's contact never signs in here: the region activates it (a token of an invited application is refused)
    ok(requests.patch(f"{notify}/v1/regions/{r}/integrators/{b['id']}", headers=bearer("region-admin", r),
                      json={"status": "active"}, timeout=10))
    b_sub = subscribe(notify, r, b["id"])

    # -- public pages --------------------------------------------------------------------------
    anon = Browser(portal)
    page = anon.get("/integrations/catalogue")
    assert page.status_code == 200 and "agreement.activated" in page.text and "<details>" in page.text
    assert anon.get("/integrations/verify-signatures").status_code == 200
    assert "standardwebhooks" in anon.last.text
    first = anon.get(f"/integrations/{r}", allow_redirects=False)
    assert first.status_code == 302 and "/sign-in?next=" in first.headers["Location"], first.headers

    # -- A signs in (the invitation's link leads to /integrations/<r>) -------------------------
    ba = Browser(portal)
    ba.s.headers["Accept-Language"] = "en"
    landing = ba.sign_in(a_mail, f"/integrations/{r}")
    assert landing.headers["Location"] == f"/integrations/{r}", landing.headers
    listing = ba.get(f"/integrations/{r}")
    assert listing.status_code == 200 and "Ziekenhuis A" in listing.text and "Apotheek B" not in listing.text
    got = ok(requests.get(f"{notify}/v1/regions/{r}/integrators/{a['id']}", headers=bearer("region-admin", r),
                          timeout=10))
    assert got["status"] == "active", got  # the sign-in activated the invitation

    # a client secret, shown once; a second is allowed, a third is refused on the page
    created = ba.post(f"/integrations/{r}/{a['id']}/secrets", csrf_from=f"/integrations/{r}/{a['id']}")
    assert created.status_code == 201, created.text[:500]
    secret = re.search(r'id="client-secret" value="([^"]+)"', created.text).group(1)
    assert len(secret) >= 20 and 'data-copy="client-secret"' in created.text
    assert secret not in ba.get(f"/integrations/{r}/{a['id']}").text  # never shown again
    assert ba.post(f"/integrations/{r}/{a['id']}/secrets", csrf_from=f"/integrations/{r}/{a['id']}").status_code == 201
    third = ba.post(f"/integrations/{r}/{a['id']}/secrets", csrf_from=f"/integrations/{r}/{a['id']}")
    assert third.status_code == 409 and "at most two" in third.text, third.text[:500]

    # A's own subscription through the form: an event type outside its patterns is refused
    new = f"/integrations/{r}/{a['id']}/subscriptions/new"
    form = ba.get(new)
    assert 'value="agreement.*"' in form.text and 'value="member.enrolled"' not in form.text
    bad = ba.post(new, {"url": "https://example.org/a", "event_types": ["member.enrolled"], "signature": "v1"})
    assert bad.status_code == 422 and 'id="event_types-error"' in bad.text, bad.text[:800]
    made = ba.post(new, {"url": "https://example.org/a", "event_types": ["agreement.*"], "rate_limit": "5",
                         "signature": "v1a"})
    assert made.status_code == 201, made.text[:800]
    assert re.search(r'id="signing-key" value="whpk_', made.text), made.text[:800]
    mine = [s for s in ok(requests.get(f"{notify}/v1/regions/{r}/subscriptions", headers=as_app(r, a["id"]),
                                       timeout=10))["items"]]
    assert [s["url"] for s in mine] == ["https://example.org/a"] and mine[0]["rate_limit"] == 5, mine
    a_sub = mine[0]["id"]
    detail = ba.get(f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}")
    assert detail.status_code == 200 and "5 per second" in detail.text
    assert "example.org/hook" not in ba.get(f"/integrations/{r}/{a['id']}").text  # B's is not listed

    # odd input: errors next to the fields, never a 500
    csrf = token_of(detail.text)
    for value in ("abc", "-1"):
        odd = ba.post(new, {"url": "https://example.org/b", "event_types": ["agreement.*"], "rate_limit": value,
                            "signature": "v1", "csrf_token": csrf})
        assert odd.status_code == 422 and 'id="rate_limit-error"' in odd.text, (value, odd.text[-1500:])
    replay = ba.post(f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}/replay", {"since": "gisteren",
                                                                                   "csrf_token": csrf})
    assert replay.status_code == 422 and 'id="since-error"' in replay.text
    for path in (f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}/deliveries/nope",
                 f"/integrations/{r}/{a['id']}/subscriptions/%00", f"/integrations/{r}/" + "x" * 300,
                 f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}?status=bogus"):
        odd = ba.get(path)
        assert odd.status_code in (404, 422) and "Traceback" not in odd.text, (path, odd.status_code)
    assert ba.post(f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}/explode",
                   {"csrf_token": csrf}).status_code == 404

    # pause (If-Match: a stale ETag changes nothing), resume, rotate (the new key shown once)
    sub_page = f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}"
    stale = ba.post(f"{sub_page}/pause", {"etag": '"999"', "csrf_token": csrf})
    assert stale.status_code == 409 and "Changed by someone else" in stale.text
    etag = re.search(r'name="etag" value="([^"]*)"', ba.get(sub_page).text).group(1)
    assert ba.post(f"{sub_page}/pause", {"etag": html.unescape(etag), "csrf_token": csrf}).status_code == 302
    assert ok(requests.get(f"{notify}/v1/regions/{r}/subscriptions/{a_sub}", headers=as_app(r, a["id"]),
                           timeout=10))["enabled"] is False
    assert ba.post(f"{sub_page}/resume", {"csrf_token": csrf}).status_code == 302
    rotated = ba.post(f"{sub_page}/rotate", {"csrf_token": csrf})
    assert rotated.status_code == 200 and re.search(r'id="signing-key" value="whpk_', rotated.text)

    # -- B's ids and the other region are 404 pages for A; POSTs change nothing -----------------
    for path in (f"/integrations/{r}/{b['id']}", f"/integrations/{r}/{b['id']}/subscriptions/new",
                 f"/integrations/{r}/{a['id']}/subscriptions/{b_sub['id']}",
                 f"/integrations/{r}/{a['id']}/subscriptions/{b_sub['id']}/delete",
                 f"/integrations/{r}/{b['id']}/subscriptions/{b_sub['id']}",
                 f"/integrations/{other}", f"/integrations/{other}/{c['id']}",
                 f"/integrations/{r}/{c['id']}"):
        assert ba.get(path).status_code == 404, path
    for path, data in ((f"/integrations/{r}/{a['id']}/subscriptions/{b_sub['id']}/pause", {}),
                       (f"/integrations/{r}/{a['id']}/subscriptions/{b_sub['id']}/ping", {}),
                       (f"/integrations/{r}/{a['id']}/subscriptions/{b_sub['id']}/delete", {"confirm": "yes"}),
                       (f"/integrations/{r}/{b['id']}/secrets", {})):
        assert ba.post(path, dict(data, csrf_token=csrf)).status_code == 404, path
    still = ok(requests.get(f"{notify}/v1/regions/{r}/subscriptions/{b_sub['id']}", headers=as_app(r, b["id"]),
                            timeout=10))
    assert still["enabled"] is True, still
    assert ok(requests.get(f"{notify}/v1/regions/{r}/subscriptions/{b_sub['id']}/deliveries",
                           headers=as_app(r, b["id"]), timeout=10))["items"] == []  # no ping went out
    # a form without its CSRF token is refused
    assert ba.post(f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}/ping", csrf=False).status_code == 400

    # A deletes its own subscription, after the confirmation step
    unconfirmed = ba.post(f"{sub_page}/delete", {"csrf_token": csrf})
    assert unconfirmed.status_code == 422 and 'id="confirm-error"' in unconfirmed.text
    assert ba.post(f"{sub_page}/delete", {"confirm": "yes", "csrf_token": csrf}).status_code == 302
    assert ba.get(sub_page).status_code == 404

    # -- a GP of the region and an admin without applications: no integrator pages ---------------
    gp_mail = new_email()
    hecht.approve(r, hecht.sign_up(r, gp_mail))
    gp = Browser(portal)
    gp.sign_in(gp_mail)
    for path in (f"/integrations/{r}", f"/integrations/{r}/{a['id']}",
                 f"/integrations/{r}/{a['id']}/subscriptions/{a_sub}"):
        assert gp.get(path).status_code == 404, path
    admin_mail, other_admin = new_email(), new_email()
    staff(f.urls["members"], admin_mail, [r])
    staff(f.urls["members"], other_admin, [other])
    adm = Browser(portal)
    adm.s.headers["Accept-Language"] = "en"
    adm.sign_in(admin_mail)
    assert adm.get(f"/integrations/{r}").status_code == 404
    assert adm.get(f"/integrations/{r}/{a['id']}").status_code == 404

    # -- the region console ----------------------------------------------------------------------
    console = adm.get(f"/admin/{r}/integrators")
    assert console.status_code == 200
    assert "Ziekenhuis A" in console.text and "Apotheek B" in console.text and "Elders C" not in console.text
    assert 'value="agreement.*"' in console.text  # the invite form's family wildcards
    # an invitation without event types, then with a bad address: errors next to the fields
    no_types = adm.post(f"/admin/{r}/integrators", {"name": "X", "contact_email": new_email()})
    assert no_types.status_code == 422 and 'id="event_types-error"' in no_types.text
    bad_mail = adm.post(f"/admin/{r}/integrators", {"name": "X", "contact_email": "nope",
                                                     "event_types": ["agreement.*"]})
    assert bad_mail.status_code == 422 and 'id="contact_email-error"' in bad_mail.text, bad_mail.text[:800]
    oth = Browser(portal)
    oth.sign_in(other_admin)
    assert oth.get(f"/admin/{r}/integrators").status_code == 404
    assert oth.get(f"/admin/{other}/integrators/{a['id']}/delete").status_code == 404
    assert "Ziekenhuis A" not in oth.get(f"/admin/{other}/integrators").text

    # delete needs the confirmation; suspending A ends A's access to its pages
    confirm = adm.get(f"/admin/{r}/integrators/{b['id']}/delete")
    assert confirm.status_code == 200
    unticked = adm.post(f"/admin/{r}/integrators/{b['id']}/delete", {"etag": ""},
                        csrf_from=f"/admin/{r}/integrators/{b['id']}/delete")
    assert unticked.status_code == 422 and 'id="confirm-error"' in unticked.text
    suspended = adm.post(f"/admin/{r}/integrators/{a['id']}/suspend", csrf_from=f"/admin/{r}/integrators")
    assert suspended.status_code == 302, suspended.text[:500]
    assert ok(requests.get(f"{notify}/v1/regions/{r}/integrators/{a['id']}", headers=bearer("region-admin", r),
                           timeout=10))["status"] == "suspended"
    assert ba.get(f"/integrations/{r}/{a['id']}").status_code == 404
    assert ba.get(f"/integrations/{r}").status_code == 404
    deleted = adm.post(f"/admin/{r}/integrators/{b['id']}/delete", {"confirm": "yes"},
                       csrf_from=f"/admin/{r}/integrators/{b['id']}/delete")
    assert deleted.status_code == 302, deleted.text[:500]
    assert "Apotheek B" not in adm.get(f"/admin/{r}/integrators").text


def test_a_gp_who_is_also_an_integrator_chooses_and_notify_down_is_a_503(portal_fleet, hecht, browser):
    """A GP who is also an application's contact chooses between them after sign-in. The
    integrations pages need notify: down, they are the 503 page; a GP's sign-in, which asks
    notify for the person's applications too, does not depend on it."""
    r = hecht.region()
    both, gp_only = new_email(), new_email()
    hecht.approve(r, hecht.sign_up(r, both))
    hecht.approve(r, hecht.sign_up(r, gp_only, number=_riziv(91)))
    app = integrator(portal_fleet.urls["notify"], r, both, "Huisartsenpraktijk-koppeling")
    landing = browser.sign_in(both)
    assert landing.headers["Location"].startswith("/choose-region"), landing.headers
    choice = browser.get(landing.headers["Location"])
    assert f'href="/integrations/{r}"' in choice.text and 'name="region"' in choice.text, choice.text[-2500:]
    mine = browser.get(f"/integrations/{r}")
    assert mine.status_code == 200 and f"/integrations/{r}/{app['id']}" in mine.text

    assert browser.get("/integrations/catalogue").status_code == 200
    portal_fleet.processes["notify"].stop()
    down = browser.get("/integrations/catalogue")
    assert down.status_code == 503 and "Traceback" not in down.text
    other = Browser(portal_fleet.urls["portal"])
    assert other.sign_in(gp_only).headers["Location"] == f"/r/{r}/membership"
    assert other.get(f"/r/{r}/membership").status_code == 200
    assert other.get(f"/integrations/{r}").status_code == 503  # it cannot know yet: asks notify again


def test_the_signature_guide_examples_verify_real_deliveries(monkeypatch):
    """The guide's Python examples (v1 with the official ``standardwebhooks``, v1a with
    ``cryptography``) and its Node.js v1a example, run as printed, accept a delivery signed by
    notify's own signer and refuse a changed body. (The page needs no service.)"""
    import base64
    import html
    import json
    import os
    import shutil
    import subprocess
    from datetime import datetime, timezone

    from services.notify import signing
    from services.portal.app import create_app

    monkeypatch.setenv("HECHT_ENV", "development")
    page = create_app({"TESTING": True}).test_client().get("/integrations/verify-signatures")
    assert page.status_code == 200
    py_v1, js_v1, py_v1a, js_v1a = (html.unescape(b) for b in re.findall(
        r'<pre tabindex="0"><code>(.*?)</code></pre>', page.get_data(as_text=True), re.S))
    now, body = datetime.now(timezone.utc), '{"type":"hecht.agreement.activated.v1","data":{}}'

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    monkeypatch.setenv("HECHT_WEBHOOK_SECRET", secret)
    handled: list = []

    class Request:
        def __init__(self, data: str, headers: dict):
            self.data, self.headers = data.encode(), headers

        def get_data(self):
            return self.data
    ns = {"handle": handled.append}
    exec(py_v1, ns)  # noqa: S102 - the page's own example
    v1 = signing.headers([secret], "msg_1", body)
    assert ns["receive"](Request(body, v1)) == ("", 204) and handled == [json.loads(body)]
    assert ns["receive"](Request(body.replace("{}", '{"x":1}'), v1)) == ("", 400)

    private, public = signing.new_keypair()
    v1a = {"webhook-id": "msg_2", "webhook-timestamp": str(int(now.timestamp())),
           "webhook-signature": signing.sign_v1a([private], "msg_2", now, body)}
    ns = {"PUBLIC_KEY": public}
    exec(py_v1a, ns)  # noqa: S102
    assert ns["verify_v1a"](body.encode(), v1a) is True
    assert ns["verify_v1a"](body.encode() + b" ", v1a) is False

    node = shutil.which("node")
    if node:  # Node.js is optional on a developer's machine
        script = (js_v1a + f"\nconst h = {json.dumps(v1a)};\n"
                  f"console.log(verifyV1a(Buffer.from({json.dumps(body)}), h), verifyV1a(Buffer.from('x'), h));\n")
        out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True,
                             timeout=30, env={"PATH": os.environ.get("PATH", ""), "HECHT_PUBLIC_KEY": public})
        assert out.stdout.split() == ["true", "false"], (out.stdout, out.stderr)
    assert "new Webhook(" in js_v1 and 'from "standardwebhooks"' in js_v1
