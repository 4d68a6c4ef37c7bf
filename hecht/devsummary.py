"""``hecht dev-summary``: what ``make run`` prints once everything is up, as the last thing.

scripts/run.sh starts it in the background next to the services (honcho). It waits until
every web service answers ``/readyz``, seeds the demo region (``hecht demo``; skipped with
``--no-demo``), and only then prints the URLs, a platform-admin token and the demo table, so
they come after the services' start-up lines instead of scrolling away among them.
"""
from __future__ import annotations

import io
import os
import sys
import time
from typing import Callable, Iterable, TextIO

import requests

RULE = "─" * 78


def urls_from_env(env=None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {
        "portal": (env.get("HECHT_PORTAL_URL") or "http://127.0.0.1:8000").rstrip("/"),
        "agreements": (env.get("HECHT_AGREEMENTS_URL") or "http://127.0.0.1:8001").rstrip("/"),
        "members": (env.get("HECHT_MEMBERS_URL") or "http://127.0.0.1:8002").rstrip("/"),
        "notify": (env.get("HECHT_NOTIFY_URL") or "http://127.0.0.1:8003").rstrip("/"),
    }


def wait_ready(urls: dict[str, str], seconds: float, *, alive: Callable[[], bool] = lambda: True,
               http: requests.Session | None = None) -> list[str]:
    """Wait until every URL answers ``/readyz`` with 200; returns the names that did not in time."""
    http = http or requests.Session()
    deadline = time.monotonic() + seconds
    waiting = dict(urls)
    while waiting and alive():
        for name, url in list(waiting.items()):
            try:
                if http.get(f"{url}/readyz", timeout=2).status_code == 200:
                    del waiting[name]
            except requests.RequestException:
                pass
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return sorted(waiting)


def render(urls: dict[str, str], *, stack: str = "", token: str = "", demo: str = "",
           not_ready: Iterable[str] = ()) -> str:
    """The summary block: URLs, stack, token, then the demo table (last, so it stays in view)."""
    not_ready = list(not_ready)
    lines = ["", RULE]
    if not_ready:
        lines.append(f"hecht: {', '.join(not_ready)} did not answer /readyz yet; see the log above")
    else:
        lines.append("hecht is up:")
    lines += [f"  portal      {urls['portal']}   (GPs: sign up, sign in, vote)",
              f"  agreements  {urls['agreements']}   (docs: /docs, spec: /openapi.json)",
              f"  members     {urls['members']}",
              f"  notify      {urls['notify']}"]
    if stack:
        lines.append(f"  {stack}")
    if token:
        lines += ["", "platform-admin token (1 h):",
                  "  export TOKEN=$(.venv/bin/hecht token --role platform-admin)",
                  f"  {token}",
                  "other tokens: .venv/bin/hecht token --role region-admin|gp|integrator --region <id> "
                  "[--member <id>]"]
    if demo:
        lines += ["", demo.rstrip("\n")]
    lines += [RULE, "Ctrl-C stops the services and the stack.", ""]
    return "\n".join(lines)


def _stack_line(env) -> str:
    kafka = env.get("KAFKA_BOOTSTRAP_SERVERS")
    if not kafka:
        return ""
    return (f"Kafka {kafka} · MongoDB (SecantusDB) {env.get('HECHT_MONGO_URL') or 'mongodb://127.0.0.1:27017'}"
            f" · SMTP sink {env.get('HECHT_SMTP_URL') or '?'}")


def _token() -> str:
    from .auth import max_lifetime, mint
    from .config import settings
    s = settings("cli")
    if not s.jwt_secret:
        return ""
    return mint(s, roles=["platform-admin"], ttl=min(3600, max_lifetime(s, internal=True)))


def _seed(urls: dict[str, str]) -> str:
    """Run the demo quietly (its step-by-step lines are dropped); its table, or why it failed."""
    from . import demo
    d = demo.Demo(members_url=urls["members"], agreements_url=urls["agreements"], portal_url=urls["portal"],
                  out=io.StringIO())
    try:
        state = d.run()
    except (demo.DemoError, requests.RequestException) as e:
        return f"demo: failed: {e}\n(run .venv/bin/hecht demo to try again)"
    done = f"demo: {len(d.changes)} change(s)" + ("" if d.changes else " (everything was already there)")
    return done + "\n" + d.instructions(state)


def run(urls: dict[str, str], *, wait: float, seed: Callable[[dict], str] | None, out: TextIO,
        token: Callable[[], str] = _token, stack: str = "", alive: Callable[[], bool] = lambda: True) -> int:
    """Wait for readiness, seed (``seed(urls)`` returns the demo's text), then print the summary."""
    not_ready = wait_ready(urls, wait, alive=alive)
    if not alive():
        return 1
    demo_text = ""
    if seed is not None and not not_ready:
        demo_text = seed(urls)
    elif seed is None:
        demo_text = "demo: skipped (HECHT_DEMO=0); run .venv/bin/hecht demo to seed the demo region"
    else:
        demo_text = "demo: not seeded (the services are not ready); run .venv/bin/hecht demo later"
    out.write(render(urls, stack=stack, token=token(), demo=demo_text, not_ready=not_ready) + "\n")
    out.flush()
    return 0 if not not_ready else 1


def main(args) -> int:
    parent = os.getppid()
    urls = urls_from_env()
    return run(urls, wait=args.wait, seed=None if args.no_demo else _seed, out=sys.stdout,
               stack=_stack_line(os.environ),
               # started by run.sh: give up when run.sh is gone (Ctrl-C) rather than print late
               alive=lambda: os.getppid() == parent)


def add_parser(sub) -> None:
    d = sub.add_parser("dev-summary", help="make run: wait for the services, seed the demo, print the URLs "
                                           "and the demo table")
    d.add_argument("--wait", type=float, default=180.0, metavar="SECONDS",
                   help="how long to wait for every service's /readyz (default 180)")
    d.add_argument("--no-demo", action="store_true", help="do not seed the demo region (HECHT_DEMO=0)")
    d.set_defaults(fn=main)
