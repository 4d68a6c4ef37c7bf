"""The benchmark harness: ``python bench/run.py --profile quick|full``.

Runs every benchmark of issue 7 against the stack in the environment (``scripts/bench.sh``
starts a stack of its own and exports its addresses), each in its own process, each with
its baseline measured side by side in the same invocation, and writes

    bench/results/<date>.json   every figure, the notes, explain plans and profiles
    bench/results/<date>.md     the table: benchmark, metric, hecht, baseline, ratio, target, met?
    bench/results/<date>-*.png  charts (matplotlib, Agg; not committed)

(a later run on the same day writes ``<date>-2``, ``<date>-3``, …: results are never overwritten)

A benchmark script prints one last line ``BENCH_JSON {...}`` (see bench/README.md); a script
that is not there yet is reported as "not yet available", one that fails as "failed" —
neither stops the run. The services for the end-to-end, growth and memory benchmarks run
once, as real processes (bench/fleet.py): memory is read at rest, before any load, and
again after the growth and end-to-end runs (growth first, on a quiet system; it removes its
members afterwards so that the end-to-end run does not pay for scanning them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lib  # noqa: E402

BENCH = lib.REPO / "bench"
RESULTS = BENCH / "results"
TIMEOUT_S = {"quick": 300, "full": 1800}

# (id, title, script, owner, needs the shared fleet)
BENCHMARKS = [
    ("1", "API writes: sign-up vs bare Flask+pymongo", "bench_signup.py", "members", False),
    ("1", "API writes: agreement draft and vote cast vs bare Flask+pymongo", "bench_votes.py", "agreements", False),
    ("2", "Relay: outbox → Kafka vs raw producer", "bench_relay.py", "bench", False),
    ("3", "Consumers: ConsumerRunner vs raw consumer loop", "bench_consumer.py", "bench", False),
    ("7", "Fan-out isolation: 100 subscriptions, one slow", "bench_fanout.py", "notify", False),
    ("15", "Fan-out isolation with a rate limit of 5/s on every subscription", "bench_fanout.py", "notify", False),
    ("5", "Growth: list/filter at 1k, 10k, 50k(, 100k) members", "bench_growth.py", "bench", True),
    ("4", "End to end: sign-up → webhook at the highest sustained rate", "bench_e2e.py", "bench", True),
    ("12", "MongoDB layout: one SecantusDB server per service vs one shared", "bench_mongo_layout.py", "bench", False),
    ("13", "Portal: member and ballot pages vs the API calls they make, 20 users", "bench_portal.py", "portal",
     False),
    ("14", "Console: capacity chart of a year of daily history vs the API call it makes, 5 users",
     "bench_capacity_chart.py", "portal", False),
]
MEMORY_TARGET = "value < 150"
# Benchmarks that run a script of another one under different settings (id -> environment).
VARIANT_ENV = {"15": {"HECHT_BENCH_RATE_LIMIT": "5"}}


# --------------------------------------------------------------------------------------------
# Running one script
# --------------------------------------------------------------------------------------------
def parse_output(stdout: str) -> dict | None:
    """The last ``BENCH_JSON`` line; also accepts a bare list of results."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(lib.BENCH_PREFIX):
            payload = json.loads(line[len(lib.BENCH_PREFIX):])
            if isinstance(payload, list):
                payload = {"results": payload}
            payload.setdefault("results", [])
            payload.setdefault("notes", [])
            payload.setdefault("extra", {})
            return payload
    return None


def normalise(row: dict) -> dict:
    """Fill ratio and met? the way the harness computes them, keeping what the script said."""
    row = dict(row)
    v, b = row.get("value"), row.get("baseline")
    if row.get("ratio") is None and isinstance(v, (int, float)) and isinstance(b, (int, float)) and b:
        row["ratio"] = round(v / b, 3)
    if "met" not in row:
        met = lib.target_met(row.get("target"), v, row.get("ratio"))
        if met is not None:
            row["met"] = met
    return row


def run_script(script: str, profile: str, env: dict, log_dir: Path, variant: str = "") -> dict:
    path = BENCH / script
    if not path.exists():
        return {"status": "not yet available", "results": [], "notes": [f"{script} is not there yet"]}
    t = lib.Timer()
    log_path = log_dir / f"{path.stem}{'-' + variant if variant else ''}.log"
    try:
        with open(log_path, "w") as err:
            proc = subprocess.run([sys.executable, str(path), "--profile", profile], cwd=lib.REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=err, text=True, timeout=TIMEOUT_S[profile])
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        payload = parse_output(out)
        return {"status": "failed", "seconds": round(t.elapsed(), 1), "results": (payload or {}).get("results", []),
                "notes": [f"timed out after {TIMEOUT_S[profile]} s; log {log_path.relative_to(lib.REPO)}"]}
    payload = parse_output(proc.stdout)
    # The stderr log and stdout (minus the BENCH_JSON line) go to the log file.
    with open(log_path, "a") as f:
        f.write("\n--- stdout ---\n")
        f.write("\n".join(l for l in proc.stdout.splitlines() if not l.startswith(lib.BENCH_PREFIX)))
    if payload is None:
        tail = log_path.read_text(errors="replace")[-1500:]
        return {"status": "failed", "seconds": round(t.elapsed(), 1), "results": [],
                "notes": [f"exit {proc.returncode}, no BENCH_JSON line; log {log_path.relative_to(lib.REPO)}"],
                "log_tail": tail}
    status = "ok" if proc.returncode == 0 else "failed"
    notes = list(payload["notes"])
    if proc.returncode != 0:
        notes.append(f"exit {proc.returncode}")
    return {"status": status, "seconds": round(t.elapsed(), 1),
            "results": [normalise(r) for r in payload["results"]], "notes": notes, "extra": payload["extra"]}


# --------------------------------------------------------------------------------------------
# CPU accounting (which process was busy during a benchmark)
# --------------------------------------------------------------------------------------------
def stack_pids() -> dict[str, int]:
    out = {}
    stack_dir = os.environ.get("HECHT_STACK_DIR")
    if not stack_dir:
        return out
    for name, sub in (("kafka", "kafka"), ("mongo", "mongo"), ("smtp", "smtp")):
        try:
            out[name] = int(Path(stack_dir, sub, "pid").read_text().strip())
        except (OSError, ValueError):
            pass
    return out


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: c for name, pid in pids.items() if (c := lib.cpu_seconds(pid)) is not None}


def cpu_rate(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Share of one core each process used over ``seconds`` (sampled now)."""
    before = cpu_snapshot(pids)
    time.sleep(seconds)
    after = cpu_snapshot(pids)
    return {n: round((after[n] - before[n]) / seconds, 3) for n in after if n in before}


def settle(pids: dict[str, int], limit_s: float, busy: float = 0.5) -> float:
    """Wait until the services and the stack are (nearly) idle: a backlog left by one benchmark
    must not be measured by the next. Returns the seconds waited (at most ``limit_s``)."""
    t = lib.Timer()
    while t.elapsed() < limit_s:
        if sum(cpu_rate(pids, 3).values()) < busy:
            break
    return round(t.elapsed(), 1)


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}" if abs(x) >= 1 or x == 0 else f"{x:.3f}"
    return str(x)


def fmt_target(target: str | None, metric: str | None) -> str:
    if not target:
        return "–"
    m = lib._TARGET.match(target)
    if not m:
        return target
    op = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}[m.group(2)]
    unit = "×" if m.group(1) == "ratio" else f" {(metric or '').split()[0]}" if metric else ""
    return f"{op} {m.group(3)}{unit}"


def met_cell(row: dict) -> str:
    if "met" not in row:
        return "–"
    return "✅ yes" if row["met"] else "❌ no"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# hecht benchmarks — {report['date']} ({report['profile']} profile)", "",
             f"Machine: {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('cpu') or 'unknown CPU'}; "
             f"Python {m.get('python')}; {m.get('os')}; load average at start {m.get('loadavg_at_start')}. "
             f"Stack: Kafka 4.3.1 (KRaft, one broker), SecantusDB 0.7.0b3 (MongoDB wire protocol on WiredTiger, "
             f"one-member replica set, --sync-on-commit), gunicorn sync workers × 2. "
             f"Commit {report.get('commit') or '?'}; run took {report['seconds'] / 60:.1f} min.", "",
             "Every figure is measured beside its baseline in the same run; *ratio* = hecht / baseline.", "",
             "| # | benchmark | metric | hecht | baseline | ratio | target | met? |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for b in report["benchmarks"]:
        if b["status"] != "ok" and not b["results"]:
            lines.append(f"| {b['id']} | {b['title']} | – | – | – | – | – | {b['status']} |")
            continue
        for r in b["results"]:
            lines.append(f"| {b['id']} | {r['name']} | {r.get('metric', '')} | {fmt(r.get('value'))} | "
                         f"{fmt(r.get('baseline'))} | {fmt(r.get('ratio'), 2)} | "
                         f"{fmt_target(r.get('target'), r.get('metric'))} | {met_cell(r)} |")
    lines += ["", "## Notes", ""]
    for b in report["benchmarks"]:
        notes = list(b.get("notes") or []) + [f"{r['name']}: {r['note']}" for r in b["results"] if r.get("note")]
        head = f"- **{b['id']} · {b['title']}** ({b['status']}" + (f", {b['seconds']:.0f} s" if b.get("seconds")
                                                                   else "") + ")"
        lines.append(head)
        for n in notes:
            lines.append(f"  - {n}")
    for b in report["benchmarks"]:
        prof = (b.get("extra") or {}).get("profile")
        if isinstance(prof, dict) and prof.get("top_cumulative"):
            lines += ["", f"## Profile: {b['title']}", "", "```", prof["top_cumulative"][:4000], "```"]
        plans = (b.get("extra") or {}).get("explain")
        if plans:
            lines += ["", f"## Explain plans at the largest size ({b['title']})", "",
                      "As the server reports them (SecantusDB 0.7.0b3, verbosity executionStats): the winning "
                      "plan, and how many index keys and documents it read for one page of 51. SecantusDB "
                      "reads every document the index bounds select and applies the limit only after sorting, "
                      "so these counts grow with the region.", ""]
            for name, plan in plans.items():
                lines += [f"**{name}**", "", "```json", json.dumps(plan, default=str, indent=1)[:2500], "```", ""]
    return "\n".join(lines) + "\n"


def charts(report: dict, stem: str) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001 - charts are a bonus, never a failure
        lib.log(f"no charts: {e!r}")
        return []
    made = []
    rows = [(b, r) for b in report["benchmarks"] for r in b["results"]]
    # 1. ratios against their targets
    ratio_rows = [(b, r) for b, r in rows if r.get("ratio") is not None and (r.get("target") or "").startswith("ratio")]
    if ratio_rows:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(ratio_rows) + 1.5))
        names = [f"{b['id']} {r['name']}"[:60] for b, r in ratio_rows]
        vals = [r["ratio"] for _, r in ratio_rows]
        colors = ["tab:green" if r.get("met") else "tab:red" for _, r in ratio_rows]
        y = range(len(ratio_rows))
        ax.barh(list(y), vals, color=colors)
        for i, (_, r) in enumerate(ratio_rows):
            m = lib._TARGET.match(r["target"])
            if m:
                ax.plot([float(m.group(3))] * 2, [i - 0.4, i + 0.4], color="black", lw=2)
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("hecht / baseline (log scale); black bar = target")
        ax.set_title(f"Ratios — {report['date']} ({report['profile']})")
        fig.tight_layout()
        path = RESULTS / f"{stem}-ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path.name)
    # 2. end-to-end latency
    for b in report["benchmarks"]:
        ex = b.get("extra") or {}
        if ex.get("latency_ms_quantiles"):
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
            for key, label in (("latency_ms_quantiles", "at the highest sustained rate"),
                               ("latency_ms_quantiles_low", "at the lowest rate"),
                               ("latency_ms_quantiles_failed", "at the first rate not sustained")):
                q = ex.get(key) or []
                if q:
                    a1.plot(q, [i / (len(q) - 1) * 100 for i in range(len(q))], label=label)
            a1.axvline(1000, color="red", ls="--", label="target p99 < 1 s")
            a1.set_xscale("log")
            a1.set_xlabel("sign-up → webhook (ms)")
            a1.set_ylabel("percentile")
            a1.legend()
            tl = ex.get("timeline") or []
            if tl:
                a2.scatter([t for t, _ in tl], [l for _, l in tl], s=3)
                a2.set_yscale("log")
                a2.set_xlabel("request due at (s since start)")
                a2.set_ylabel("latency (ms)")
            fig.suptitle(f"End to end — {report['date']}")
            fig.tight_layout()
            path = RESULTS / f"{stem}-e2e.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            made.append(path.name)
        if ex.get("table") and ex.get("sizes"):
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for name, by in ex["table"].items():
                xs = [int(k) for k in sorted(by, key=int)]
                ax.plot(xs, [by[str(x)]["p99_ms"] for x in xs], marker="o", label=name[:40])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("members in the region")
            ax.set_ylabel("p99 (ms)")
            ax.legend(fontsize=7)
            ax.set_title(f"Growth — {report['date']}")
            fig.tight_layout()
            path = RESULTS / f"{stem}-growth.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            made.append(path.name)
        if ex.get("rss_mb"):
            rss = ex["rss_mb"]
            names = list(rss)
            fig, ax = plt.subplots(figsize=(9, 4))
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [rss[n].get("rest") or 0 for n in names], 0.4, label="at rest")
            ax.bar([x + 0.2 for x in xs], [rss[n].get("after") or 0 for n in names], 0.4, label="after the runs")
            ax.axhline(150, color="red", ls="--", label="target 150 MiB")
            ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("RSS (MiB)")
            ax.legend()
            ax.set_title(f"Memory — {report['date']}")
            fig.tight_layout()
            path = RESULTS / f"{stem}-memory.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            made.append(path.name)
    # 3. throughput beside the baselines
    tp = [(b, r) for b, r in rows if "/s" in (r.get("metric") or "") and r.get("baseline")]
    if tp:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(tp) + 1.5))
        y = list(range(len(tp)))
        ax.barh([i - 0.2 for i in y], [r["value"] or 0 for _, r in tp], 0.4, label="hecht")
        ax.barh([i + 0.2 for i in y], [r["baseline"] for _, r in tp], 0.4, label="baseline")
        ax.set_yticks(y, [f"{b['id']} {r['name']}"[:55] for b, r in tp], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("per second (log scale)")
        ax.legend()
        ax.set_title(f"Throughput — {report['date']}")
        fig.tight_layout()
        path = RESULTS / f"{stem}-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path.name)
    return made


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def preflight() -> None:
    import pymongo
    from kafka import KafkaAdminClient
    try:
        pymongo.MongoClient(lib.mongo_base(), serverSelectionTimeoutMS=5000).admin.command("ping")
        KafkaAdminClient(bootstrap_servers=lib.kafka_servers(), request_timeout_ms=10000).close()
    except Exception as e:  # noqa: BLE001
        sys.exit(f"bench: the stack is not reachable at {lib.mongo_base()} / {lib.kafka_servers()} ({e!r}); "
                 "run `make bench` (scripts/bench.sh starts one)")


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=lib.REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def memory_rows(rest: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]) -> list[dict]:
    """One row per process seen at rest; a process replaced meanwhile (a gunicorn worker
    respawned) is matched by pid, and its successor's RSS reported with a note."""
    rows = []
    after_by_pid = {pid: (name, mb) for name, (pid, mb) in after.items()}
    for name, (pid, mb_rest) in sorted(rest.items()):
        if pid in after_by_pid:
            rows.append(lib.entry(f"memory: {name}", "RSS MiB (baseline = at rest)", after_by_pid[pid][1], mb_rest,
                                  MEMORY_TARGET))
        else:
            now = after.get(name)
            rows.append(lib.entry(f"memory: {name}", "RSS MiB (baseline = at rest)", now[1] if now else None,
                                  mb_rest, MEMORY_TARGET,
                                  note=f"pid {pid} exited during the runs"
                                       + (f"; its successor (pid {now[0]}) shown" if now else "")))
    return rows


def write_report(report: dict, stamp: str) -> str:
    """Write ``<stamp>.json`` and ``.md``; never over an earlier run's files: a second run on
    the same day becomes ``<stamp>-2``, then ``-3``, … Returns the stem used."""
    for n in range(1, 1000):
        stem = stamp if n == 1 else f"{stamp}-{n}"
        if (RESULTS / f"{stem}.md").exists():
            continue
        try:
            with open(RESULTS / f"{stem}.json", "x") as f:  # exclusive: a concurrent run takes another stem
                f.write(json.dumps(dict(report, results_file=stem), indent=1, default=str, ensure_ascii=False)
                        + "\n")
        except FileExistsError:
            continue
        (RESULTS / f"{stem}.md").write_text(markdown(report))
        return stem
    raise RuntimeError(f"no free results file name for {stamp}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--only", help="comma-separated script names or ids to run (e.g. relay,4)")
    ap.add_argument("--date", help="results file stem (default: today, UTC); a stem already used gets "
                                   "a suffix (-2, -3, …): earlier results are never overwritten")
    args = ap.parse_args()
    lib.quiet_logs()
    preflight()
    started = lib.Timer()
    stamp = args.date or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    tag = lib.tag()
    log_dir = lib.REPO / "var" / "bench" / tag
    log_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HECHT_BENCH_PROFILE=args.profile, PYTHONUNBUFFERED="1",
               MONGO_URI=lib.mongo_base(), KAFKA_BOOTSTRAP_SERVERS=lib.kafka_servers())
    wanted = [w.strip() for w in (args.only or "").split(",") if w.strip()]

    def selected(bid: str, script: str) -> bool:
        return not wanted or bid in wanted or any(w in script for w in wanted)

    report = {"date": stamp, "profile": args.profile, "started_at": datetime.now(timezone.utc).isoformat(),
              "machine": lib.machine(), "commit": git_commit(), "benchmarks": []}
    lib.log(f"bench: {args.profile} profile; logs in {log_dir.relative_to(lib.REPO)}")

    def record(bid, title, script, owner, result):
        entry = {"id": bid, "title": title, "script": f"bench/{script}", "owner": owner, **result}
        report["benchmarks"].append(entry)
        met = [r.get("met") for r in result.get("results", []) if "met" in r]
        lib.log(f"bench: {bid} {title}: {result['status']}"
                + (f", {sum(bool(m) for m in met)}/{len(met)} targets met" if met else ""))

    solo = [b for b in BENCHMARKS if not b[4] and selected(b[0], b[2])]
    shared = [b for b in BENCHMARKS if b[4] and selected(b[0], b[2])]
    for bid, title, script, owner, _ in solo:
        lib.log(f"bench: {bid} {title} ({script})")
        extra_env = VARIANT_ENV.get(bid, {})
        record(bid, title, script, owner, run_script(script, args.profile, dict(env, **extra_env), log_dir,
                                                     variant=bid if extra_env else ""))

    if shared or not wanted or "6" in wanted or "memory" in wanted:
        from bench import fleet as fl
        fleet = fl.Fleet(tag=tag, prefix=f"bench{tag}.", log_dir=log_dir)
        lib.log("bench: starting the services (gunicorn × 2 workers + hecht worker, per service)")
        try:
            fleet.start()
        except Exception as e:  # noqa: BLE001
            for bid, title, script, owner, _ in shared:
                record(bid, title, script, owner, {"status": "failed", "results": [],
                                                   "notes": [f"the services did not start: {e}"]})
            fleet = None
        if fleet is not None:
            try:
                time.sleep(3)  # let the workers join their groups and go idle
                pids = {**fleet.processes(), **stack_pids()}
                idle_rest = cpu_rate(pids, 5)
                rest = {n: (pid, lib.rss_mb(pid)) for n, pid in fleet.processes().items()}
                fenv = dict(env, HECHT_BENCH_FLEET=json.dumps(fleet.describe()))
                for bid, title, script, owner, _ in shared:
                    waited = settle(pids, 45 if args.profile == "quick" else 180)
                    lib.log(f"bench: {bid} {title} ({script})" + (f" after {waited:.0f} s settling" if waited > 3
                                                                 else ""))
                    before = cpu_snapshot(pids)
                    t = lib.Timer()
                    result = run_script(script, args.profile, fenv, log_dir)
                    after = cpu_snapshot(pids)
                    wall = t.elapsed()
                    busy = {n: round(after[n] - before[n], 1) for n in after if n in before}
                    result.setdefault("extra", {})["cpu_s"] = busy
                    top = sorted(busy.items(), key=lambda kv: -kv[1])[:5]
                    result.setdefault("notes", []).append(
                        f"CPU seconds during the run ({wall:.0f} s wall, 2 cores): "
                        + ", ".join(f"{n} {v:.0f}" for n, v in top))
                    if fleet.missing and not result.get("results"):
                        result["status"] = "not yet available"
                    record(bid, title, script, owner, result)
                dead = fleet.dead()
                after_rss = {n: (pid, lib.rss_mb(pid)) for n, pid in fleet.processes().items()}
                settle(pids, 30 if args.profile == "quick" else 120)
                idle_after = cpu_rate({**fleet.processes(), **stack_pids()}, 5)
                rows = memory_rows(rest, after_rss)
                notes = [] if not fleet.missing else [f"services not yet available: {', '.join(fleet.missing)}"]
                if dead:
                    notes.append(f"processes that exited during the runs: {', '.join(dead)}")

                def idle(d):
                    top = sorted(d.items(), key=lambda kv: -kv[1])[:4]
                    return ", ".join(f"{n} {v * 100:.0f} %" for n, v in top)
                notes.append(f"idle CPU (share of one core) at rest: {idle(idle_rest)}; "
                             f"after the runs (any backlog left by the end-to-end run's last step included): "
                    f"{idle(idle_after)}")
                record("6", "Memory: RSS of every web worker and Kafka worker", "fleet.py", "bench",
                       {"status": "ok" if rows else "failed", "results": rows, "notes": notes,
                        "extra": {"rss_mb": {n: {"rest": (rest.get(n) or (None, None))[1],
                                                 "after": (after_rss.get(n) or (None, None))[1]}
                                             for n in sorted(set(rest) | set(after_rss))},
                                  "idle_cpu_rest": idle_rest, "idle_cpu_after": idle_after}})
            finally:
                fleet.stop()

    report["seconds"] = round(started.elapsed(), 1)
    stamp = write_report(report, stamp)
    made = charts(report, stamp)
    lib.log(f"bench: wrote bench/results/{stamp}.json, {stamp}.md" + (f", {', '.join(made)}" if made else ""))
    print(markdown(report).split("\n## Notes")[0])


if __name__ == "__main__":
    main()
