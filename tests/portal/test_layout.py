"""The member page's button hierarchy (issue 28 item 6), over HTTP with every service a real
process: the common actions come first, with at most one filled (primary) button; what
rejects, suspends or erases comes last and is styled .danger, never primary. Tested for a
pending and an approved member (what the region console shows right after approval)."""
from __future__ import annotations

from html.parser import HTMLParser

from .test_console import _gp, _riziv, _staff, _staff_browser

DESTRUCTIVE = ("reject", "suspend", "erase")


class Actions(HTMLParser):
    """The buttons (and links styled as buttons) of ``section.member-actions``, in page order:
    (action, classes, text); the action is the last part of the form's or the link's URL."""

    def __init__(self):
        super().__init__()
        self.depth = 0            # >0 inside the actions section
        self.form_action = ""
        self.open: tuple[str, set[str]] | None = None
        self.text = ""
        self.found: list[tuple[str, set[str], str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            if self.depth or "member-actions" in (a.get("class") or "").split():
                self.depth += 1
            return
        if not self.depth:
            return
        if tag == "form":
            self.form_action = (a.get("action") or "").rstrip("/").rsplit("/", 1)[-1]
        elif tag == "button" or (tag == "a" and a.get("role") == "button"):
            action = self.form_action if tag == "button" else (a.get("href") or "").rstrip("/").rsplit("/", 1)[-1]
            self.open, self.text = (action, set((a.get("class") or "").split())), ""

    def handle_data(self, data):
        if self.open:
            self.text += data

    def handle_endtag(self, tag):
        if tag == "section" and self.depth:
            self.depth -= 1
        elif tag in ("button", "a") and self.open:
            self.found.append((self.open[0], self.open[1], " ".join(self.text.split())))
            self.open = None


def actions(html: str) -> list[tuple[str, set[str], str]]:
    p = Actions()
    p.feed(html)
    assert p.found, "no section.member-actions with buttons on the page"
    return p.found


def check_hierarchy(found, label: str) -> None:
    order = [a for a, _, _ in found]
    primary = [a for a, classes, _ in found if not classes & {"secondary", "outline", "danger", "contrast"}]
    assert len(primary) <= 1, f"{label}: more than one primary button: {primary}"
    first_destructive = min(i for i, a in enumerate(order) if a in DESTRUCTIVE)
    assert all(a in DESTRUCTIVE for a in order[first_destructive:]), \
        f"{label}: a common action comes after a destructive one: {order}"
    for a, classes, text in found:
        if a in DESTRUCTIVE:
            assert "danger" in classes, f"{label}: {text!r} ({a}) is not styled .danger: {classes}"
        else:
            assert "danger" not in classes, f"{label}: {text!r} ({a}) is styled as destructive"


def test_member_page_common_actions_first_destructive_last(portal_fleet, hecht):
    region = hecht.region()
    _, email = _staff(hecht, admin_of=[region])
    pending = _gp(hecht, region, _riziv(61), "Lotte", "Claes")
    active = _gp(hecht, region, _riziv(62), "Pieter", "Maes")
    hecht.approve(region, active)
    b = _staff_browser(portal_fleet, email)

    page = b.get(f"/admin/{region}/members/{pending}")
    assert page.status_code == 200, page.text[:300]
    found = actions(page.text)
    check_hierarchy(found, "pending member")
    assert [a for a, _, _ in found] == ["approve", "registration", "reject", "erase"], found
    assert not found[0][1], f"approving is the page's primary action: {found[0]}"

    page = b.get(f"/admin/{region}/members/{active}")
    assert page.status_code == 200, page.text[:300]
    found = actions(page.text)
    check_hierarchy(found, "approved member")
    assert [a for a, _, _ in found] == ["roles", "reconfirm", "registration", "suspend", "erase"], found
    assert all(classes for _, classes, _ in found), f"no primary button for an approved member: {found}"
