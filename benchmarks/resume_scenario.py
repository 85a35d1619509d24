"""Crash resume, recorded: a 1 GiB upload killed with SIGKILL at ~50 %, then run again.

The kill point is read from the server (ListParts: half of the parts stored),
not from a clock.  The second run is the same `fastxfer cp` command; its
``--json`` summary says how many bytes it sent and how many the interrupted
run had already stored.  The object is then compared with the source.

    python -m benchmarks.resume_scenario [--size 1GiB]

Writes benchmarks/results/resume-1g.md (and prints it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastxfer.localserver import LocalS3Server
from fastxfer.units import format_size, parse_size

RESULTS = Path(__file__).resolve().parent / "results"
PART = 16 * 1024 * 1024


def _cli(srv: LocalS3Server, src: str, url: str, state: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=srv.access_key,
        AWS_SECRET_ACCESS_KEY=srv.secret_key,
        FASTXFER_STATE=state,
    )
    cmd = [sys.executable, "-m", "fastxfer.cli", "cp", src, url]
    cmd += ["--endpoint-url", srv.endpoint_url, "--no-progress", "--json"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stored_parts(s3: Any, bucket: str, key: str) -> int:
    from botocore.exceptions import ClientError

    try:
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except ClientError:
        return 0  # rclone answers an empty listing with NoSuchUpload
    for u in uploads:
        if u["Key"] == key:
            parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=u["UploadId"])
            return len(parts.get("Parts", []))
    return 0


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1GiB")
    args = p.parse_args(argv)
    size = parse_size(args.size)
    parts = -(-size // PART)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > 3 * size else None
    work = Path(tempfile.mkdtemp(prefix="fx-resume-", dir=base))
    try:
        src = str(work / "src.bin")
        with open(src, "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
        state = str(work / "state.sqlite")
        with LocalS3Server(root=str(work / "s3")) as srv:
            os.makedirs(work / "s3", exist_ok=True)
            bucket = srv.make_bucket()
            s3 = srv.client()
            url = f"s3://{bucket}/big.bin"
            proc = _cli(srv, src, url, state)
            t0 = time.monotonic()
            while _stored_parts(s3, bucket, "big.bin") < parts // 2:
                if proc.poll() is not None:
                    raise SystemExit("the upload finished before it could be killed")
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            killed_after = time.monotonic() - t0
            stored = _stored_parts(s3, bucket, "big.bin")
            t1 = time.monotonic()
            again = _cli(srv, src, url, state)
            out, err = again.communicate(timeout=900)
            rerun = time.monotonic() - t1
            if again.returncode != 0:
                raise SystemExit(f"rerun failed: {err.decode().strip()}")
            summary = json.loads(out.decode())
            dest = str(work / "back.bin")
            s3.download_file(bucket, "big.bin", dest)
            identical = _sha256(dest) == _sha256(src)
        transfers = summary["transfers"]
        resumed = sum(int(t["bytes_resumed"]) for t in transfers)
        sent = sum(int(t["bytes"]) for t in transfers) - resumed
        lines = [
            f"# Crash resume: {format_size(size)} upload killed at ~50 %, run again",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; embedded rclone serve s3 "
            f"on tmpfs; 16 MiB parts ({parts}); load average {os.getloadavg()[0]:.2f}.",
            "",
            "| | value |",
            "|---|---|",
            f"| killed after (s) | {killed_after:.1f} |",
            f"| parts stored when killed (ListParts) | {stored} of {parts} |",
            f"| rerun: bytes resumed (not sent again) | {resumed:,} |",
            f"| rerun: bytes sent | {sent:,} ({sent / size:.0%} of the object) |",
            f"| rerun wall time (s) | {rerun:.1f} |",
            f"| object identical to the source (SHA-256) | {identical} |",
            "",
            f"Target (issue #10): the rerun sends < 60 % of the bytes: "
            f"{'met' if sent < 0.6 * size and identical else 'NOT met'}.",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "resume-1g.md").write_text(text, encoding="utf-8")
        return 0 if identical and sent < 0.6 * size else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
