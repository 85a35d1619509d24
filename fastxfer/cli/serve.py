"""``fastxfer serve`` (the embedded local S3 server) and ``fastxfer demo`` (a round trip
through it, for newcomers)."""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from fastxfer.cli.common import HANDLED_SIGNALS, Parser, Subparsers, add_command, run_async
from fastxfer.cli.cp import copy
from fastxfer.cli.outcome import CopyOutcome, print_outcome
from fastxfer.config import TransferConfig
from fastxfer.errors import InvalidS3Url, UsageError
from fastxfer.manager import TransferManager
from fastxfer.s3url import parse_s3_url
from fastxfer.units import format_rate, format_size, parse_size


def register(sub: Subparsers[Parser]) -> None:
    d = add_command(
        sub,
        "demo",
        _cmd_demo,
        help="upload and download sample data through an embedded local S3 server",
        description="Starts rclone serve s3 on 127.0.0.1 (no account, no Docker), uploads "
        "sample files with fastxfer, downloads them back, checks every byte and prints "
        "the throughput.",
    )
    d.add_argument("--size", default="512MiB", help="total sample data (default 512MiB)")
    d.add_argument("--files", type=int, default=9, help="number of files (default 9)")
    d.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    s = add_command(
        sub,
        "serve",
        _cmd_serve,
        help="run the embedded local S3 server in the foreground (for experiments)",
    )
    s.add_argument("root", help="directory to serve; top-level folders are buckets")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--bucket", action="append", default=[], help="create this bucket")


# -- serve ---------------------------------------------------------------------------


def _check_bucket_name(name: str) -> None:
    try:
        if "/" in name:
            raise InvalidS3Url(name)
        parse_s3_url(f"s3://{name}")
    except InvalidS3Url:
        raise UsageError(
            f"--bucket {name!r}: not a valid bucket name",
            hint="bucket names use 3-63 lower-case letters, digits, dots and hyphens, "
            "and begin and end with a letter or digit",
        ) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    for b in args.bucket:
        _check_bucket_name(b)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Stop the server on SIGTERM / SIGHUP as on Ctrl-C, for this command's run only.
    previous = {sig: signal.signal(sig, stop) for sig in HANDLED_SIGNALS}
    try:
        return _serve(args.root, args.port, args.bucket)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(root: str, port: int, buckets: list[str]) -> int:
    from fastxfer.localserver import LocalS3Server

    try:
        with LocalS3Server(root=root, port=port) as srv:
            for b in buckets:
                srv.make_bucket(b)
            print(
                f"S3 server on {srv.endpoint_url} serving {root}\n"
                f"export AWS_ENDPOINT_URL={srv.endpoint_url} "
                f"AWS_ACCESS_KEY_ID={srv.access_key} AWS_SECRET_ACCESS_KEY={srv.secret_key}\n"
                "Ctrl-C to stop.",
                flush=True,
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        return 0


# -- demo ----------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    return run_demo(
        total=parse_size(args.size, what="--size"),
        files=args.files,
        concurrency=args.concurrency,
        progress=not args.no_progress and sys.stderr.isatty(),
        as_json=args.json,
    )


def _tmp_root() -> str:
    # tmpfs when there is one, so the demo measures fastxfer rather than the disk.
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _sample_files(src: str, total: int, files: int) -> list[int]:
    """One big file (multipart, concurrent parts) and several smaller ones; their sizes."""
    os.makedirs(src)
    big = total // 2 if files > 1 else total
    sizes = [big] + [(total - big) // (files - 1)] * (files - 1) if files > 1 else [big]
    for i, size in enumerate(sizes):
        name = "big file.bin" if i == 0 else f"part-{i:02d}-é.bin"
        with open(os.path.join(src, name), "wb") as f:
            left = size
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
    return sizes


@dataclass(frozen=True)
class _RoundTrip:
    up: CopyOutcome
    down: CopyOutcome | None


async def _round_trip(
    cfg: TransferConfig, src: str, dst: str, bucket: str, *, progress: bool
) -> _RoundTrip:
    """``cp -r SRC s3://BUCKET/backup/`` then ``cp -r s3://BUCKET/backup/ DST``, as the CLI."""
    url = f"s3://{bucket}/backup/"
    async with TransferManager(cfg) as tm:
        up = await copy(tm, src, url, recursive=True, progress=progress)
        print_outcome(up)
        if up.exit_code:
            return _RoundTrip(up, None)
        down = await copy(tm, url, dst, recursive=True, progress=progress)
        print_outcome(down)
        return _RoundTrip(up, down)


def _identical(a: str, b: str) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(
        filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in os.listdir(a)
    )


def run_demo(*, total: int, files: int, concurrency: int, progress: bool, as_json: bool) -> int:
    """Upload ``files`` random files (``total`` bytes) to a fresh local server and back."""
    from fastxfer.localserver import LocalS3Server

    files = max(1, files)
    with tempfile.TemporaryDirectory(prefix="fastxfer-demo-", dir=_tmp_root()) as work:
        src = os.path.join(work, "src")
        dst = os.path.join(work, "dst")
        nbytes = sum(_sample_files(src, total, files))
        with LocalS3Server(root=os.path.join(work, "s3")) as srv:
            bucket = srv.make_bucket("demo")
            print(
                f"embedded S3 server (rclone serve s3) on {srv.endpoint_url}; "
                f"{files} files, {format_size(nbytes)}",
                file=sys.stderr,
            )
            # As `fastxfer cp` would build it (FASTXFER_* apply), pointed at this server.
            cfg = TransferConfig.from_env(
                endpoint_url=srv.endpoint_url,
                profile=None,
                aws_access_key_id=srv.access_key,
                aws_secret_access_key=srv.secret_key,
                max_concurrency=concurrency,
            )
            trip = run_async(_round_trip(cfg, src, dst, bucket, progress=progress))
        if trip.down is None:
            return trip.up.exit_code
        if trip.down.exit_code:
            return trip.down.exit_code
        same = _identical(src, dst)
    t_up, t_down = trip.up.seconds, trip.down.seconds
    result: dict[str, Any] = {
        "files": files,
        "bytes": nbytes,
        "upload_seconds": round(t_up, 3),
        "download_seconds": round(t_down, 3),
        "upload_bytes_per_second": round(nbytes / t_up),
        "download_bytes_per_second": round(nbytes / t_down),
        "identical": same,
    }
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"upload   {format_size(nbytes)} in {t_up:.2f} s  {format_rate(nbytes / t_up)}\n"
            f"download {format_size(nbytes)} in {t_down:.2f} s  {format_rate(nbytes / t_down)}\n"
            f"round trip byte-identical: {'yes' if same else 'NO'}",
            file=sys.stderr,
        )
    return 0 if same else 8
