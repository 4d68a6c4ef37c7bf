"""`make run` (Procfile + scripts/run.sh): each web service keeps its own metrics."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WEB = ("members", "agreements", "notify", "portal")


def _procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text(encoding="utf-8").splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def _multiproc_dir(command: str, base: str) -> str | None:
    """What the shell honcho runs would set PROMETHEUS_MULTIPROC_DIR to for this command."""
    assignments = re.match(r"((?:[A-Z_]+=\S+\s+)*)", command).group(1)
    out = subprocess.run(["sh", "-c", f"{assignments} sh -c 'echo \"$PROMETHEUS_MULTIPROC_DIR\"'"],
                         env={**os.environ, "HECHT_PROMETHEUS_DIR": base, "PROMETHEUS_MULTIPROC_DIR": ""},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip() or None


def test_every_web_service_has_its_own_metrics_directory(tmp_path):
    """A shared directory shows every service's series on each /metrics, and each gunicorn
    empties it at start (deploy/gunicorn.conf.py on_starting), wiping the others'."""
    procs = _procfile()
    dirs = {name: _multiproc_dir(procs[name], str(tmp_path)) for name in WEB}
    assert all(d and Path(d).parent == tmp_path for d in dirs.values()), dirs
    assert len(set(dirs.values())) == len(WEB)
    # the Kafka workers serve their own registry on HECHT_METRICS_PORT, no multiprocess files
    assert all(_multiproc_dir(cmd, str(tmp_path)) is None for name, cmd in procs.items() if name.endswith("-worker"))


def test_run_script_exports_no_shared_metrics_directory():
    script = (REPO / "scripts" / "run.sh").read_text(encoding="utf-8")
    assert not re.search(r"^\s*export PROMETHEUS_MULTIPROC_DIR", script, re.M)
    assert re.search(r"^\s*unset PROMETHEUS_MULTIPROC_DIR", script, re.M)
