"""``hecht demo`` is idempotent: run twice against real processes, the second run changes
nothing and the state (members, statuses, capacity, agreements, the open vote) is the same."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import bearer
from tests.support.fleet import fleet

from hecht import demo

REPO = Path(__file__).resolve().parents[2]


def snapshot(urls: dict) -> dict:
    import requests
    admin = bearer("region-admin", demo.REGION)
    r = requests.get(f"{urls['members']}/v1/regions/{demo.REGION}", headers=bearer("platform-admin"), timeout=10)
    assert r.status_code == 200, r.text
    members = []
    for extra in ({}, {"stale": "true"}):
        page = requests.get(f"{urls['members']}/v1/regions/{demo.REGION}/members", headers=admin,
                            params={"limit": 100, **extra}, timeout=10).json()
        members += [(m["email"], m["id"], m["status"], (m.get("capacity") or {}).get("status"),
                     (m.get("capacity") or {}).get("note"), m.get("version")) for m in page["items"]]
    agreements = requests.get(f"{urls['agreements']}/v1/regions/{demo.REGION}/agreements", headers=admin,
                              params={"limit": 100}, timeout=10).json()["items"]
    staff = requests.get(f"{urls['members']}/v1/staff", headers=bearer("platform-admin"), params={"limit": 200},
                         timeout=10).json()["items"]
    out = {"members": sorted(members),
           "staff": sorted((a["email"], a["id"], a["platform_admin"], tuple(a["admin_of"]), a["status"], a["version"])
                           for a in staff),
           "agreements": sorted((a["title"], a["id"], a["status"], a["sequence"]) for a in agreements)}
    for a in agreements:
        if a["status"] == "in_consultation":
            t = requests.get(f"{urls['agreements']}/v1/regions/{demo.REGION}/agreements/{a['id']}/mandate",
                             headers=admin, timeout=10).json()
            out["open_vote"] = (t["electorate_size"], t["cast"])
    return out


def test_demo_twice_gives_the_same_state(hecht_env, tmp_path):
    with fleet(hecht_env, tmp_path / "logs", portal=False) as f:
        first = demo.Demo(members_url=f.urls["members"], agreements_url=f.urls["agreements"],
                          portal_url="http://portal.invalid", out=io.StringIO())
        state = first.run()
        assert first.changes, "the first run on empty databases must create things"
        after_first = snapshot(f.urls)

        # What the first run built.
        by_email = {m[0]: m for m in after_first["members"]}
        assert len(after_first["members"]) == len(demo.PEOPLE) == len(by_email)
        for p in demo.PEOPLE:
            _, _, status, capacity, note, _ = by_email[p.email]
            assert status == p.status, (p.email, status)
            assert capacity == (p.capacity[0] if p.capacity else None), (p.email, capacity)
        titles = [a[0] for a in after_first["agreements"]]
        assert len(titles) == 2 == len(set(titles)), titles
        assert after_first["open_vote"] == (3, 1)   # three active GPs; one has voted
        voting = state["agreements"]["voting"]
        assert voting["status"] == "in_consultation"
        assert state["agreements"]["active"]["status"] in ("mandated", "active")
        assert state["agreements"]["active"].get("signed_at")
        # The console's demo staff: invited through POST /v1/staff, with their roles.
        assert [(a[0], a[2], a[3], a[4]) for a in after_first["staff"]] == [
            ("admin@demo.hecht.local", True, (), "invited"),
            ("coordinator@demo.hecht.local", False, (demo.REGION,), "invited")]

        # The second run, through the CLI as `make run` calls it: no change, no duplicate.
        env = dict(os.environ, HECHT_MEMBERS_URL=f.urls["members"], HECHT_AGREEMENTS_URL=f.urls["agreements"],
                   HECHT_PORTAL_URL="http://portal.invalid")
        r = subprocess.run([str(Path(sys.executable).parent / "hecht"), "demo"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0 change(s)" in r.stdout, r.stdout
        for p in demo.PEOPLE:   # it says how to sign in as each demo person
            assert p.email in r.stdout
        for p in demo.STAFF:    # and as each demo staff member
            assert p.email in r.stdout and p.name in r.stdout
        assert f"http://portal.invalid/r/{demo.REGION}/votes/{voting['id']}" in r.stdout
        assert snapshot(f.urls) == after_first
