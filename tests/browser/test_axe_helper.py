"""The accessibility gate itself: it must fail on a violation, with JavaScript on and off,
also under a Content-Security-Policy like the portal's."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.axe import AxeViolations

GOOD = b"""<!doctype html><html lang="en"><head><title>ok</title></head>
<body><main><h1>Fine</h1><p>Readable text.</p></main></body></html>"""
BAD = b"""<!doctype html><html lang="en"><head><title>bad</title></head>
<body><main><h1>Broken</h1><img src="/x.png"><p class="faint">Low contrast</p>
<form><input type="text" name="q"></form></main></body></html>"""
CSS = b".faint { color: #bbb; background: #fff; }"


@pytest.fixture
def site():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            bad = BAD.replace(b"<title>", b'<link rel="stylesheet" href="/s.css"><title>')
            body, ctype = {"/good": (GOOD, "text/html"), "/bad": (bad, "text/html"),
                           "/s.css": (CSS, "text/css")}.get(self.path, (b"", "text/plain"))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Security-Policy", "default-src 'self'")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.parametrize("javascript", [True, False])
def test_axe_fails_on_violations_and_passes_a_clean_page(browser, axe, site, javascript):
    context = browser.new_context(java_script_enabled=javascript)
    try:
        page = context.new_page()
        page.goto(f"{site}/good")
        axe.check(page, "clean page", javascript=javascript)
        page.goto(f"{site}/bad")
        with pytest.raises(AxeViolations) as e:
            axe.check(page, "broken page", javascript=javascript)
        text = str(e.value)
        for rule in ("image-alt", "color-contrast", "label"):
            assert rule in text, text
    finally:
        context.close()
