"""The ``hecht`` command: development tokens, workers, migrations and the local stack."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SERVICES = ("members", "agreements", "notify")
REPO = Path(__file__).resolve().parent.parent


def _token(args) -> int:
    from .auth import ROLES, max_lifetime, mint
    from .config import settings
    if args.role not in ROLES:
        print(f"unknown role {args.role!r}; one of {', '.join(ROLES)}", file=sys.stderr)
        return 2
    s = settings("cli")
    if not s.jwt_secret:
        print("hecht token: HECHT_JWT_SECRET is not set (HECHT_ENV=development has a default)", file=sys.stderr)
        return 2
    # The services refuse a token that lives longer than its issuer's maximum (hecht/auth.py).
    longest = max_lifetime(s, internal=True)
    ttl = min(3600, longest) if args.ttl is None else args.ttl
    if ttl > longest:
        print(f"hecht token: --ttl is at most {longest} s (HECHT_JWT_MAX_LIFETIME_S / "
              "HECHT_INTERNAL_JWT_MAX_LIFETIME_S)", file=sys.stderr)
        return 2
    print(mint(s, roles=[args.role], region=args.region, member=args.member, ttl=ttl))
    return 0


def _worker(args) -> int:
    from .worker import run
    run(args.service)
    return 0


def _migrate(args) -> int:
    """Create indexes and topics: safe to run again, run before a new version starts."""
    import importlib
    from . import mongo
    from .config import settings
    from .kafka import ensure_topics
    from .web import ensure_platform_indexes
    for service in args.services or SERVICES:
        s = settings(service)
        db = mongo.database(s.mongo_uri, s.database_name)
        ensure_platform_indexes(db)
        importlib.import_module(f"services.{service}.worker").ensure_indexes(db)
        print(f"{service}: indexes ready in {s.database_name}")
    print("topics:", ", ".join(ensure_topics(settings("cli"))))
    return 0


def _stack(args) -> int:
    return subprocess.call([str(REPO / "deploy" / "local" / "stack.sh"), *args.args])


def _asyncapi(args) -> int:
    from .asyncapi import main
    return main(args.write)


def _purge_unconfirmed(args) -> int:
    """Erase pending sign-ups whose address is still unconfirmed after HECHT_SIGNUP_CONFIRM_DAYS
    (docs/PORTAL.md), through the normal erasure, so the other services forget them too."""
    from . import mongo
    from .config import settings
    from services.members.handlers import purge_unconfirmed
    s = settings("members")
    days = s.signup_confirm_days if args.days is None else args.days
    if days < 1:
        print("--days must be at least 1", file=sys.stderr)
        return 2
    ids = purge_unconfirmed(mongo.database(s.mongo_uri, s.database_name), confirm_days=days, dry_run=args.dry_run)
    verb = "would erase" if args.dry_run else "erased"
    print(f"{verb} {len(ids)} stale sign-up(s) (unconfirmed after {days} days)")
    for member_id in ids:
        print(member_id)
    return 0


def _staff_add(args) -> int:
    """An active staff account straight in the members database (the first platform admin, before
    anyone can call the API). Run again with the same address: the account keeps its id and gets
    exactly these roles, name and language; nothing is duplicated."""
    from . import mongo
    from .config import settings
    from .errors import HechtError
    from services.members import domain, handlers
    from services.members.repository import ensure_indexes
    s = settings("members")
    db = mongo.database(s.mongo_uri, s.database_name)
    ensure_indexes(db)
    data = {"email": args.email, "name": args.name, "language": args.language,
            "platform_admin": args.platform_admin, "admin_of": args.region or []}
    try:
        doc, outcome = handlers.handle(domain.AddStaffDirectly(data), db)
    except HechtError as e:
        print(f"staff add: {e.detail}", file=sys.stderr)
        for field, problems in (e.errors or {}).items():
            print(f"  {field}: {'; '.join(map(str, problems))}", file=sys.stderr)
        return 2
    roles = (["platform-admin"] if doc.get("platform_admin") else []) + \
        [f"region-admin of {r}" for r in doc.get("admin_of") or []]
    print(f"{outcome} staff account {doc['_id']} <{doc['email']}> ({doc['status']}): {', '.join(roles)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hecht", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("token", help="print a development JWT signed with HECHT_JWT_SECRET")
    t.add_argument("--role", required=True)
    t.add_argument("--region")
    t.add_argument("--member")
    t.add_argument("--ttl", type=int, default=None,
                   help="seconds (default 3600, or the services' maximum for the token's issuer if lower)")
    t.set_defaults(fn=_token)

    w = sub.add_parser("worker", help="run a service's relay, consumers and scheduler")
    w.add_argument("service", choices=SERVICES)
    w.set_defaults(fn=_worker)

    m = sub.add_parser("migrate", help="create indexes and Kafka topics")
    m.add_argument("services", nargs="*", help=f"some of {', '.join(SERVICES)} (default: all)")
    m.set_defaults(fn=_migrate)

    s = sub.add_parser("stack", help="the local Kafka + SecantusDB + SMTP stack (deploy/local/stack.sh)")
    s.add_argument("args", nargs=argparse.REMAINDER)
    s.set_defaults(fn=_stack)

    a = sub.add_parser("asyncapi", help="render schemas/asyncapi.yaml from the event schemas")
    a.add_argument("--write", action="store_true", help="write the file instead of printing it")
    a.set_defaults(fn=_asyncapi)

    from .demo import add_parser as add_demo_parser   # `hecht demo` (hecht/demo.py)
    add_demo_parser(sub)
    from .devsummary import add_parser as add_dev_summary_parser   # `make run`'s closing summary
    add_dev_summary_parser(sub)

    pu = sub.add_parser("purge-unconfirmed", help="erase stale sign-ups (address unconfirmed too long)")
    pu.add_argument("--days", type=int, default=None, help="default: HECHT_SIGNUP_CONFIRM_DAYS (7)")
    pu.add_argument("--dry-run", action="store_true", help="list them, erase nothing")
    pu.set_defaults(fn=_purge_unconfirmed)

    st = sub.add_parser("staff", help="staff accounts in the members database")
    st_sub = st.add_subparsers(dest="staff_command", required=True)
    sa = st_sub.add_parser("add", help="create or update an active staff account (idempotent)")
    sa.add_argument("--email", required=True)
    sa.add_argument("--name", required=True)
    sa.add_argument("--language", default="nl", help="nl, fr or en (default nl)")
    sa.add_argument("--platform-admin", action="store_true", help="may act in every region and on /platform")
    sa.add_argument("--region", action="append", metavar="REGION",
                    help="region-admin of this region (repeat for more)")
    sa.set_defaults(fn=_staff_add)

    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
