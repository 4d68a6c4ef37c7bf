"""Accessibility checks with the vendored axe-core (tests/browser/vendor, pinned 4.14.1).

``Axe.check(page, label)`` runs ``axe.run`` with the wcag2a, wcag2aa and wcag21aa rules on
the page as it is now and raises ``AxeViolations`` (with a readable list) on any violation.

With JavaScript on, axe runs in the live page (so it sees the state after an htmx swap).
With JavaScript off, axe cannot run in that page (its scheduler needs timers), so the page's
HTML as the browser holds it is replayed, at the same URL so that its stylesheets load the
same way, in a helper page of a JavaScript-enabled context whose scripts are blocked: the
same DOM and CSS, checked by axe injected through the DevTools protocol.
"""
from __future__ import annotations

from pathlib import Path

AXE_PATH = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1.min.js"
TAGS = ("wcag2a", "wcag2aa", "wcag21aa")

_RUN = """async (tags) => {
  const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
  return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target.join(' '), html: n.html.slice(0, 300),
                              summary: n.failureSummary}))}));
}"""


class AxeViolations(AssertionError):
    pass


def describe(label: str, url: str, violations: list[dict]) -> str:
    lines = [f"axe-core {', '.join(TAGS)}: {len(violations)} violation(s) on {label} ({url}):"]
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for n in v["nodes"][:8]:
            lines.append(f"      at {n['target']}: {n['html']}")
            for s in (n.get("summary") or "").splitlines():
                lines.append(f"        {s.strip()}")
        if len(v["nodes"]) > 8:
            lines.append(f"      … and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


class Axe:
    def __init__(self, browser):
        self.browser = browser
        self.source = AXE_PATH.read_text()
        self.checked: list[tuple[str, str]] = []    # (label, url) of every state checked
        self._replay_context = None

    def violations(self, page, *, javascript: bool = True) -> list[dict]:
        if javascript:
            return self._run(page)
        return self._replay(page)

    def check(self, page, label: str, *, javascript: bool = True) -> None:
        found = self.violations(page, javascript=javascript)
        self.checked.append((label, page.url))
        if found:
            raise AxeViolations(describe(label, page.url, found))

    def _run(self, page) -> list[dict]:
        if not page.evaluate("() => typeof window.axe !== 'undefined'"):
            page.evaluate("() => {" + self.source + "\n}")   # through DevTools: no CSP applies
            # the UMD build sets window.axe when it finds no module system
            page.evaluate("() => { if (typeof axe !== 'undefined' && !window.axe) window.axe = axe; }")
        return page.evaluate(_RUN, list(TAGS))

    def _replay(self, page) -> list[dict]:
        html = page.content()
        url = page.url
        if self._replay_context is None:
            self._replay_context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        helper = self._replay_context.new_page()
        try:
            def route(r):
                if r.request.url == url and r.request.resource_type == "document":
                    r.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)
                elif r.request.resource_type == "script":
                    r.abort()   # the page as a browser without JavaScript has it
                else:
                    r.continue_()
            helper.route("**/*", route)
            helper.goto(url, wait_until="load")
            return self._run(helper)
        finally:
            helper.close()

    def close(self) -> None:
        if self._replay_context is not None:
            self._replay_context.close()
            self._replay_context = None
