"""A webhook receiver for the benchmarks: its own process, answers 204 at once.

``python -m bench.receiver PORT`` listens on 127.0.0.1:PORT. Every POST is recorded as
``[monotonic arrival time, webhook-id, subject, type, path]`` (the body is the CloudEvent).
A path ``/slow/<seconds>/...`` sleeps that long before answering (a slow endpoint).
``GET /_stats`` returns ``{"records": [...]}``; ``GET /_count`` the number of records.
``time.monotonic()`` is system-wide on Linux, so arrival times compare with the load
generator's send times.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORDS: list = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        subject = etype = None
        try:
            event = json.loads(body)
            subject, etype = event.get("subject"), event.get("type")
        except ValueError:
            pass
        with LOCK:
            RECORDS.append([arrived, self.headers.get("webhook-id"), subject, etype, self.path])
        parts = self.path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "slow":
            try:
                time.sleep(float(parts[1]))
            except ValueError:
                pass
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        with LOCK:
            payload = {"count": len(RECORDS)} if self.path.startswith("/_count") else {"records": list(RECORDS)}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
