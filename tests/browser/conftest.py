"""Browser tests: Playwright for Python (pinned in constraints.txt) driving Debian's Chromium.

The browser is the system's (``HECHT_CHROMIUM``, default ``/usr/bin/chromium``; scripts/test.sh
installs Debian's package when it is missing and the tests run as root); Playwright never
downloads one. Every page a test visits is checked with axe-core in every state (``Visit``
below runs the check after each navigation, form result or htmx swap, and a test that leaves
a state unchecked fails at teardown).

Screenshots of the main pages (Dutch) go to ``var/browser/screenshots``; with
``HECHT_SCREENSHOTS=1`` (scripts/screenshots.sh) commit-ready copies go to
``docs/screenshots/`` as well.
"""
from __future__ import annotations

import os
import re
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.browser.axe import Axe
from tests.conftest import wait_until
from tests.support import maildir

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "var" / "browser"
DOCS_SHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}     # a common phone (issue 28 item 11)
LOCALES = {"nl": "nl-BE", "fr": "fr-BE", "en": "en-GB"}


def chromium_path() -> str:
    return os.environ.get("HECHT_CHROMIUM") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    path = chromium_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"no Chromium at {path}: install Debian's package (apt-get install -y chromium, "
                    "which scripts/test.sh does as root) or set HECHT_CHROMIUM")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=args + ["--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def axe(browser):
    a = Axe(browser)
    yield a
    a.close()


# --------------------------------------------------------------------------------------------
# A page, checked in every state
# --------------------------------------------------------------------------------------------
class Visit:
    """One browser tab of a test. ``goto``/``click`` wait until the page has settled (a full
    navigation or an htmx swap) and then run axe on it; ``shot`` saves a screenshot."""

    def __init__(self, context, axe: Axe, base_url: str, *, javascript: bool, lang: str, shots: str | None):
        self.context, self.axe, self.base = context, axe, base_url.rstrip("/")
        self.javascript, self.lang, self.shots = javascript, lang, shots
        self.page = context.new_page()
        self.unchecked: list[str] = []
        self.csp_errors: list[str] = []
        self.page.on("framenavigated", self._navigated)
        self.page.on("console", self._console)

    def _navigated(self, frame) -> None:
        if frame == self.page.main_frame:
            self.unchecked.append(frame.url)

    def _console(self, msg) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            loc = msg.location or {}
            self.csp_errors.append(f"{msg.text[:90]}… at {loc.get('url')}:{loc.get('lineNumber')} "
                                   f"(page {self.page.url})")

    # -- waiting ------------------------------------------------------------------------------
    def settle(self, url_pattern: str | None = None) -> None:
        if url_pattern:
            self.page.wait_for_url(re.compile(url_pattern), timeout=20000)
        self.page.wait_for_load_state("load")
        if self.javascript:
            # htmx (hx-boost) swaps the body after its request: wait until nothing is in flight
            self.page.wait_for_function(
                "() => document.readyState === 'complete' && "
                "!document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')",
                timeout=20000)

    def check(self, label: str) -> None:
        assert not self.csp_errors, f"Content-Security-Policy violations: {self.csp_errors}"
        lang = self.page.get_attribute("html", "lang")
        assert lang == self.lang, f"{label}: <html lang={lang!r}>, expected {self.lang!r}"
        self.axe.check(self.page, f"{label} [{self.lang}{'' if self.javascript else ', no JavaScript'}]",
                       javascript=self.javascript)
        self.unchecked.clear()

    # -- actions ------------------------------------------------------------------------------
    def goto(self, path: str, label: str, *, status: int | None = 200, url: str | None = None):
        target = path if path.startswith("http") else f"{self.base}{path}"
        resp = self.page.goto(target, wait_until="load")
        if status is not None:
            assert resp is not None and resp.status == status, \
                f"GET {target}: {resp.status if resp else None}, expected {status}"
        self.settle(url)
        self.check(label)
        return resp

    def click(self, selector: str, label: str, *, url: str | None = None) -> None:
        """Click (a link or a submit button) and check the page the click leads to."""
        self.page.locator(selector).first.click()
        self.settle(url)
        self.check(label)

    def text(self, selector: str = "main") -> str:
        return self.page.locator(selector).first.inner_text()

    def shot(self, name: str) -> None:
        """A full-page screenshot (Dutch pages only go to docs/screenshots)."""
        if not self.shots:
            return
        ARTIFACTS.joinpath("screenshots").mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / "screenshots" / f"{self.lang}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if self.shots == "docs" and self.lang == "nl":
            DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
            compact_png(path, DOCS_SHOTS / f"{name}.png")

    def close(self) -> None:
        assert not self.unchecked, f"states not checked with axe: {self.unchecked}"
        self.page.close()


def compact_png(src: Path, dst: Path, width: int = 1280, max_height: int = 3200) -> None:
    """A commit-sized copy: at most ``width`` wide and ``max_height`` tall, 64-colour palette."""
    from PIL import Image
    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        if im.height > max_height:
            im = im.crop((0, 0, im.width, max_height))
        im.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def shots_mode() -> str:
    return "docs" if os.environ.get("HECHT_SCREENSHOTS", "") in ("1", "docs") else "artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def visit(browser, axe, request):
    """``visit(base_url, lang="nl", javascript=True, viewport=None)`` → a :class:`Visit` in a fresh
    context (``viewport``: e.g. ``PHONE``; the desktop ``VIEWPORT`` by default)."""
    opened = []

    def make(base_url: str, lang: str = "nl", *, javascript: bool = True, shots: bool = False,
             viewport: dict | None = None) -> Visit:
        context = browser.new_context(viewport=viewport or VIEWPORT, locale=LOCALES[lang],
                                      java_script_enabled=javascript, accept_downloads=True,
                                      extra_http_headers={"Accept-Language": f"{LOCALES[lang]},{lang};q=0.9"})
        v = Visit(context, axe, base_url, javascript=javascript, lang=lang, shots=shots_mode() if shots else None)
        opened.append(v)
        return v

    yield make
    errors = []
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for v in opened:
        try:
            if failed:   # the test's own failure says what went wrong; states after it were never reached
                v.page.close()
            else:
                v.close()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            v.context.close()
    assert not errors, errors


# --------------------------------------------------------------------------------------------
# Mail and API helpers
# --------------------------------------------------------------------------------------------
def body_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def wait_for_link(to: str, pattern: str, *, after: int = 0, timeout: float = 45.0) -> str:
    """The first URL matching ``pattern`` in a message to ``to`` (skipping the first ``after``
    messages to that address)."""
    rx = re.compile(pattern)

    def find():
        for msg in maildir.messages(to)[after:]:
            m = rx.search(body_text(msg))
            if m:
                return m.group(0)
        return None
    return wait_until(find, timeout=timeout, interval=0.2, message=f"a mail to {to} with {pattern}")


def wait_for_agreements_to_know(region: str, active_ids: set[str], timeout: float = 60.0) -> None:
    """The agreements service learns members from their events; a vote opened earlier would
    freeze an electorate without them."""
    from hecht import mongo
    from hecht.config import settings
    s = settings("agreements")
    db = mongo.database(s.mongo_uri, s.database_name)

    def known():
        if db["regions_view"].find_one({"_id": region}) is None:
            return False
        have = {d["_id"] for d in db["members_view"].find({"region_id": region, "status": "active"}, {"_id": 1})}
        return active_ids <= have
    wait_until(known, timeout=timeout, message=f"agreements to see {sorted(active_ids)} active")


def riziv(serial: int, competence: str = "004") -> str:
    n6 = 100000 + serial
    return f"{n6}{97 - n6 % 97:02d}{competence}"


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f} s"
