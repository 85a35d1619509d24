"""The sync must-show (issue #11): 10,000 objects, 10 of them changed, a second sync.

    python -m benchmarks.sync_bench [--objects 10000] [--changed 10]

Starts the embedded rclone serve s3 (fastxfer.localserver.LocalS3Server) on
tmpfs, writes ``--objects`` small files (1-16 KiB, 100 per directory, their
mtimes an hour old, as a backup tree's are), and drives the real command as a
user would, a new ``fastxfer`` process each time, timed from start to exit:

1. ``fastxfer sync SRC s3://bench/data --json``: everything is uploaded;
2. ``--changed`` files are rewritten (other bytes, other size), then the same
   command: only those may be sent;
3. the same command again, nothing changed: nothing may be sent.

PUTs are counted twice, independently: from the run's ``--json`` (the requests
its transfers sent, by S3 operation) and on the server (rclone logs, at ``-v``,
one "Moved (server-side)" line per object it stores).  Checks: the second run
stores exactly the changed objects (no PUT for the unchanged), and takes less
than a tenth of the first run's time.  Writes ``benchmarks/results/sync-N.md``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BUCKET = "bench"
PER_DIR = 100


@dataclass
class Run:
    name: str
    seconds: float
    summary: dict[str, Any]
    stored: int
    """Objects the server stored during the run (its log)."""

    @property
    def puts(self) -> int:
        r = self.summary.get("requests", {})
        return int(r.get("put_object", 0)) + int(r.get("upload_part", 0))


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def make_tree(root: str, n: int, rng: random.Random) -> list[str]:
    rels: list[str] = []
    hour_ago = time.time() - 3600
    for i in range(n):
        rel = f"d{i // PER_DIR:03d}/f{i:05d}.bin"
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(rng.randbytes(rng.randint(1024, 16 * 1024)))
        os.utime(path, (hour_ago, hour_ago))
        rels.append(rel)
    return rels


def stored_since(log_path: str, offset: int) -> tuple[int, int]:
    """Objects rclone stored since ``offset`` of its log; the new offset."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read()
    marker = f"Moved (server-side) to: {BUCKET}/".encode()
    return text.count(marker), offset + len(text)


def sync_once(
    name: str, cmd: list[str], env: dict[str, str], log: str, offset: int
) -> tuple[Run, int]:
    started = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=3600)
    seconds = time.monotonic() - started
    if r.returncode != 0:
        raise SystemExit(f"{name}: fastxfer sync exited {r.returncode}: {r.stderr.strip()}")
    time.sleep(0.5)  # let rclone flush its log
    stored, offset = stored_since(log, offset)
    return Run(name, seconds, json.loads(r.stdout), stored), offset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sync_bench")
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--repeats", type=int, default=3, help="rounds of (change, sync); the median is judged"
    )
    a = ap.parse_args(argv)
    import fastxfer
    from fastxfer.localserver import LocalS3Server

    # This machine sets PYTHONDONTWRITEBYTECODE, so a checkout's modules would be compiled
    # again by every process (~80 ms); pip compiles them once at install.  Do as pip does.
    compileall.compile_dir(os.path.dirname(fastxfer.__file__), quiet=1)

    load_before = loadavg()
    rng = random.Random(a.seed)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="fx-sync-bench-", dir=shm) as work:
        src = os.path.join(work, "src")
        rels = make_tree(src, a.objects, rng)
        log = os.path.join(work, "rclone.log")
        with LocalS3Server(root=os.path.join(work, "s3"), extra_args=("-v",), log_path=log) as srv:
            srv.make_bucket(BUCKET)
            env = dict(
                os.environ, AWS_ACCESS_KEY_ID=srv.access_key, AWS_SECRET_ACCESS_KEY=srv.secret_key
            )
            env.pop("AWS_PROFILE", None)
            cmd = [
                sys.executable,
                "-m",
                "fastxfer.cli",
                "sync",
                src,
                f"s3://{BUCKET}/data",
                "--json",
                "--endpoint-url",
                srv.endpoint_url,
            ]
            offset = stored_since(log, 0)[1]
            first, offset = sync_once("first", cmd, env, log, offset)
            seconds: list[Run] = []
            sent_ok = True
            for i in range(a.repeats):
                changed = sorted(rng.sample(rels, a.changed))
                for rel in changed:
                    with open(os.path.join(src, rel), "ab") as f:
                        f.write(b"changed " + rng.randbytes(100))
                run, offset = sync_once(
                    f"second ({a.changed} changed), round {i + 1}", cmd, env, log, offset
                )
                sent = sorted(t["path"] for t in run.summary["to_copy"])
                sent_ok &= sent == changed and run.summary["copied"] == a.changed
                sent_ok &= run.puts == a.changed and run.stored == a.changed
                seconds.append(run)
            third, offset = sync_once("third (nothing changed)", cmd, env, log, offset)
    load_after = loadavg()
    runs = [first, *seconds, third]
    second = sorted(seconds, key=lambda r: r.seconds)[len(seconds) // 2]
    checks = [
        ("first run stored every object", first.stored == a.objects and first.puts == a.objects),
        (
            f"every second run sent exactly the {a.changed} changed files, no PUT for the "
            "unchanged (PUTs == changed, client and server)",
            sent_ok,
        ),
        ("second run (median) took < 1/10 of the first", second.seconds < first.seconds / 10),
        ("third run sent nothing", third.puts == 0 and third.stored == 0),
    ]
    write_report(a, runs, second, checks, load_before, load_after)
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    return 0 if all(ok for _, ok in checks) else 1


def write_report(
    a: argparse.Namespace,
    runs: list[Run],
    second: Run,
    checks: list[tuple[str, bool]],
    load_before: str,
    load_after: str,
) -> None:
    from benchmarks.sysinfo import machine_info

    info = machine_info()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for r in runs:
        req = r.summary.get("requests", {})
        other = ", ".join(f"{k} {v}" for k, v in sorted(req.items()) if k != "put_object") or "-"
        rows.append(
            f"| {r.name} | {r.seconds:.2f} | {r.summary['copied']} | {r.summary['unchanged']} "
            f"| {r.puts} | {r.stored} | {other} |"
        )
    first = runs[0]
    lines = [
        f"# sync of {a.objects:,} objects, {a.changed} changed",
        "",
        f"Recorded {when} by `python -m benchmarks.sync_bench --objects {a.objects} "
        f"--changed {a.changed}` on a {info['cores']}-core machine ({info['cpu_model']}), "
        f"against the embedded rclone serve s3 ({info['rclone']}) on tmpfs; the server, the "
        "client and another engineer's benchmark share the machine. "
        f"Load average before: {load_before}; after: {load_after}. "
        f"Commit {str(info['git'].get('commit'))[:10]}"
        f"{' (with uncommitted changes)' if info['git'].get('dirty') else ''}.",
        "",
        f"{a.objects:,} files of 1-16 KiB (100 per directory, mtimes an hour old). Each run is "
        "a new `fastxfer sync SRC s3://bench/data --json` process, timed from start to exit "
        "(Python start-up included), default settings (32 requests in flight). fastxfer's "
        "modules are byte-compiled first, as pip does at install. The change-and-sync round "
        f"is repeated {a.repeats} times; the median is judged.",
        "",
        "| run | seconds | copied | unchanged | PUTs (its --json) | objects stored (server log) "
        "| other transfer requests |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Second run (median) / first run: **{second.seconds / first.seconds:.3f}** "
        f"({second.seconds:.2f} s vs {first.seconds:.2f} s). Besides the PUTs, a run lists "
        "the prefix: one delimited ListObjectsV2, then up to 8 key ranges side by side, "
        f"~{-(-a.objects // 1000)} pages of 1,000 keys in all (not counted in `requests`, which "
        "holds what the transfers sent); the unchanged files need no HEAD (size and mtime "
        "from the listing).",
        "",
        "## Checks",
        "",
        *[f"- **{'PASS' if ok else 'FAIL'}** {name}" for name, ok in checks],
        "",
    ]
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"sync-{a.objects}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
