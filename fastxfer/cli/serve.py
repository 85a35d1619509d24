"""``fastxfer serve`` (the embedded local S3 server) and ``fastxfer demo`` (a round trip
through it, for newcomers; ``demo --cold``: a batch restore from DEEP_ARCHIVE on the local
Glacier-like server, :mod:`fastxfer.coldserver`)."""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastxfer.cli.common import HANDLED_SIGNALS, Parser, Subparsers, add_command, run_async
from fastxfer.cli.cp import copy
from fastxfer.cli.outcome import CopyOutcome, print_outcome
from fastxfer.config import TransferConfig
from fastxfer.errors import FastxferError, InvalidConfig, InvalidS3Url, UsageError
from fastxfer.manager import TransferManager
from fastxfer.progress import BaseSubscriber
from fastxfer.restore import (
    CostEstimate,
    RestoreOptions,
    RestoreReport,
    expected_restore_seconds,
    parse_duration,
    summarize_estimate,
    summarize_report,
)
from fastxfer.s3url import parse_s3_url
from fastxfer.units import format_rate, format_size, parse_size

if TYPE_CHECKING:
    from fastxfer.coldserver import Event, RealisticMotoServer
    from fastxfer.transfer import TransferStats

COLD_DELAY = "5s"
"""``demo --cold``: how long a restore takes on the local server (up to 12 h on AWS)."""
COLD_PREFIX = "cold/"


def register(sub: Subparsers[Parser]) -> None:
    d = add_command(
        sub,
        "demo",
        _cmd_demo,
        help="upload and download sample data through an embedded local S3 server",
        description="Starts rclone serve s3 on 127.0.0.1 (no account, no Docker), uploads "
        "sample files with fastxfer, downloads them back, checks every byte and prints "
        "the throughput.  With --cold: uploads them in DEEP_ARCHIVE to a local server that "
        "imitates Glacier's delay (moto; pip install 'fastxfer[demo]'), prints the restore "
        "estimate, restores them in one batch and downloads each as it thaws, as "
        "`fastxfer restore --download` does.",
    )
    d.add_argument(
        "--size", default=None, help="total sample data (default 512MiB; 32MiB with --cold)"
    )
    d.add_argument(
        "--files", type=int, default=None, help="number of files (default 9; 8 with --cold)"
    )
    d.add_argument(
        "--cold",
        action="store_true",
        help="a batch restore from DEEP_ARCHIVE on a local Glacier-like server",
    )
    d.add_argument(
        "--restore-delay",
        default=None,
        metavar="DURATION",
        help=f"with --cold: how long a restore takes, e.g. 3s, 1m (default {COLD_DELAY})",
    )
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
    s.add_argument(
        "-v",
        "--verbose",
        dest="server_log",  # not the client's -v: this command sends no request of its own
        action="count",
        default=0,
        help="show the server's log on stderr (rclone's INFO: objects written, requests "
        "refused; -vv: rclone's DEBUG, a line per request)",
    )


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
        return _serve(args.root, args.port, args.bucket, _server_log_level(args.server_log))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _server_log_level(verbosity: int) -> str | None:
    """rclone's log level for ``serve -v`` (INFO) / ``-vv`` (DEBUG); None: no log."""
    return None if verbosity <= 0 else "INFO" if verbosity == 1 else "DEBUG"


def _serve(root: str, port: int, buckets: list[str], log_level: str | None = None) -> int:
    from fastxfer.localserver import LocalS3Server

    try:
        with LocalS3Server(root=root, port=port, log_level=log_level) as srv:
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
    if args.restore_delay is not None and not args.cold:
        raise UsageError("--restore-delay goes with --cold")
    total = parse_size(args.size or ("32MiB" if args.cold else "512MiB"), what="--size")
    files = args.files if args.files is not None else 8 if args.cold else 9
    progress = not args.no_progress and sys.stderr.isatty()
    if not args.cold:
        return run_demo(
            total=total,
            files=files,
            concurrency=args.concurrency,
            progress=progress,
            as_json=args.json,
        )
    try:
        delay = parse_duration(args.restore_delay or COLD_DELAY)
    except InvalidConfig as exc:
        raise InvalidConfig(f"--restore-delay: {exc.message}", hint=exc.hint) from None
    return run_cold_demo(
        total=total,
        files=files,
        concurrency=args.concurrency,
        restore_delay=delay,
        progress=progress,
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


# -- demo --cold ---------------------------------------------------------------------


_CHECKED = {"client": "CRC64NVME checked", "md5": "MD5 checked", "size": "size checked"}


class _ThawLog(BaseSubscriber):
    """A line on stderr as each restored object is downloaded, timed from the batch request."""

    def __init__(self) -> None:
        self.since: float | None = None  # time.monotonic() of the restore request

    def on_done(self, stats: TransferStats) -> None:
        if self.since is None or stats.direction != "download" or stats.finished_at is None:
            return
        name = stats.key.removeprefix(COLD_PREFIX)
        what = (
            f"download of {name} failed: {stats.error}"
            if stats.error
            else f"downloaded {name} ({format_size(stats.bytes_done)}; "
            f"{_CHECKED.get(stats.verified or '', 'not checked')})"
        )
        print(f"  {stats.finished_at - self.since:5.1f} s  {what}", file=sys.stderr)


@dataclass(frozen=True)
class _ColdTrip:
    up: CopyOutcome
    estimate: CostEstimate | None = None
    report: RestoreReport | None = None


def _step(text: str) -> None:
    print(f"\n{text}", file=sys.stderr)


async def _cold_trip(
    cfg: TransferConfig, src: str, opts: RestoreOptions, *, progress: bool
) -> _ColdTrip:
    """``cp -r SRC s3://BUCKET/cold/`` in DEEP_ARCHIVE, then ``fastxfer restore
    s3://BUCKET/cold/ --download DST`` after its ``--dry-run``, on one manager."""
    url = f"s3://{opts.bucket}/{opts.prefix}"
    thaw_log = _ThawLog()
    async with TransferManager(cfg, subscribers=[thaw_log]) as tm:
        _step(f"1. upload in DEEP_ARCHIVE: fastxfer cp -r SRC {url} --storage-class DEEP_ARCHIVE")
        up = await copy(tm, src, url, recursive=True, progress=progress)
        print_outcome(up)
        if up.exit_code:
            return _ColdTrip(up)
        _step(
            f"2. the estimate: fastxfer restore {url} --download DST --dry-run\n"
            "   (AWS prices; polls counted at the tier's interval, as on AWS)"
        )
        estimate = await tm.restore_job(dataclasses.replace(opts, poll_interval=None)).estimate()
        print(summarize_estimate(estimate), file=sys.stderr)
        _step(
            f"3. restore in one batch, download as they thaw: fastxfer restore {url} "
            f"--download DST --poll-interval {opts.poll_interval:g}s"
        )
        thaw_log.since = time.monotonic()
        report = await tm.restore_job(opts).run()
        print(summarize_report(report), file=sys.stderr)
    return _ColdTrip(up, estimate, report)


def _start_cold_server(restore_delay: float) -> RealisticMotoServer:
    from fastxfer.coldserver import RealisticMotoServer, moto_installed

    if not moto_installed():
        raise UsageError("demo --cold needs moto: pip install 'fastxfer[demo]'")
    try:
        return RealisticMotoServer(restore_delay=restore_delay).start()
    except RuntimeError as exc:
        raise FastxferError(
            f"the local Glacier-like server did not start: {exc}",
            hint="pip install 'fastxfer[demo]'",
        ) from None


@dataclass(frozen=True)
class _ServerSaw:
    """What the server counted: requests by operation, RestoreObject per key, and
    whether every RestoreObject arrived before the first GetObject."""

    counts: dict[str, int]
    restores_per_key: Counter[str]
    restores_before_first_get: bool
    first_get_after: float | None
    """Seconds from the first RestoreObject to the first GetObject."""

    @classmethod
    def of(cls, counts: dict[str, int], events: list[Event]) -> _ServerSaw:
        restores = [e for e in events if e.op == "RestoreObject"]
        gets = [e for e in events if e.op == "GetObject"]
        first_get = min((e.time for e in gets), default=None)
        before = bool(restores) and (first_get is None or max(e.time for e in restores) < first_get)
        after = first_get - restores[0].time if restores and first_get is not None else None
        return cls(counts, Counter(e.key for e in restores), before, after)

    def one_restore_per_object(self, objects: int) -> bool:
        return sorted(self.restores_per_key.values()) == [1] * objects

    def summary(self, objects: int) -> str:
        each = "one each" if self.one_restore_per_object(objects) else "NOT one each"
        when = "all before the first GET" if self.restores_before_first_get else "NOT all before"
        text = (
            f"the server received {self.counts.get('RestoreObject', 0)} RestoreObject "
            f"requests for {objects} objects ({each}), {when}"
        )
        if self.first_get_after is not None:
            text += (
                f"; the first GET came {self.first_get_after:.1f} s after the first RestoreObject"
            )
        return text


def run_cold_demo(
    *,
    total: int,
    files: int,
    concurrency: int,
    restore_delay: float,
    progress: bool,
    as_json: bool,
) -> int:
    """Upload ``files`` random files (``total`` bytes) in DEEP_ARCHIVE to a fresh local
    Glacier-like server, restore them in one batch and download each as it thaws."""
    files = max(1, files)
    with tempfile.TemporaryDirectory(prefix="fastxfer-demo-", dir=_tmp_root()) as work:
        src = os.path.join(work, "src")
        dst = os.path.join(work, "dst")
        opts = RestoreOptions(  # the job state file lives and dies with the demo
            bucket="demo",
            prefix=COLD_PREFIX,
            poll_interval=1.0,
            download_dir=dst,
            state_path=os.path.join(work, "restore.db"),
        )
        aws = expected_restore_seconds("DEEP_ARCHIVE", opts.tier) or 0.0
        with _start_cold_server(restore_delay) as srv:
            nbytes = sum(_sample_files(src, total, files))
            srv.make_bucket(opts.bucket)
            print(
                f"local Glacier-like S3 server (moto) on {srv.endpoint_url}: a restore takes "
                f"{restore_delay:g} s here (up to {aws / 3600:g} h on AWS: DEEP_ARCHIVE, tier "
                f"{opts.tier.value}); {files} files, {format_size(nbytes)}",
                file=sys.stderr,
            )
            kw = srv.client_kwargs()
            cfg = TransferConfig.from_env(  # as `fastxfer cp` builds it, pointed at this server
                endpoint_url=kw["endpoint_url"],
                region=kw["region_name"],
                profile=None,
                aws_access_key_id=kw["aws_access_key_id"],
                aws_secret_access_key=kw["aws_secret_access_key"],
                max_concurrency=concurrency,
                storage_class="DEEP_ARCHIVE",
            )
            trip = run_async(_cold_trip(cfg, src, opts, progress=progress))
            saw = _ServerSaw.of(srv.counts(), srv.events())
        if trip.estimate is None or trip.report is None:
            return trip.up.exit_code
        report = trip.report
        same = not report.failed and _identical(src, dst)
    if as_json:
        result: dict[str, Any] = {
            "files": files,
            "bytes": nbytes,
            "restore_delay": restore_delay,
            "upload_seconds": round(trip.up.seconds, 3),
            "restore_seconds": round(report.elapsed, 3),
            "estimate": trip.estimate.to_dict(),
            "restore": report.to_dict(per_object=False),
            "server_requests": saw.counts,
            "one_restore_per_object": saw.one_restore_per_object(files),
            "restores_before_first_get": saw.restores_before_first_get,
            "first_get_after_first_restore": saw.first_get_after,
            "identical": same,
        }
        print(json.dumps(result, indent=2))
    _step(f"4. summary\n{saw.summary(files)}\nround trip byte-identical: {'yes' if same else 'NO'}")
    if report.failed:
        return 1
    return 0 if same else 8
