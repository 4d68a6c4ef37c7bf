"""deploy/local/stack.sh: its helpers never fail at random, and no script pipes into `grep -q`.

`make run` used to fail about one time in three: `ferretdb --version | grep -qx …`
under `set -o pipefail` lost the race between grep exiting and the writer
finishing (SIGPIPE, exit 141). The helpers now capture output before matching.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack.sh"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STACK), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_readiness_and_version_helpers_pass_200_times(stack):
    # The running test stack (scripts/test.sh exported its ports and dir).
    r = _run("selfcheck", "200")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "200 runs, 0 failures" in r.stdout


def test_selfcheck_reports_a_server_it_cannot_find(stack, tmp_path):
    # The same helpers against an empty stack dir: every server is missing, and it says so.
    (tmp_path / ".hecht-stack").touch()
    r = _run("selfcheck", "2", env={"HECHT_STACK_DIR": str(tmp_path)})
    assert r.returncode == 1
    assert "2 runs, 6 failures" in r.stdout and "kafka not found by its pid file" in r.stderr


def test_no_script_pipes_into_grep_q():
    # The project's own files only (never var/, where Kafka removes log dirs while we look).
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    scripts = [REPO / f for f in tracked.splitlines()
               if f.endswith(".sh") or Path(f).name in ("Makefile", "run")]
    assert STACK in scripts
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in scripts
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\|\s*grep\s+(-\w*q|--quiet)", line) and not line.lstrip().startswith("#")]
    assert offenders == []
