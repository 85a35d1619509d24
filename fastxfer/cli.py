"""The ``fastxfer`` command line.

Exit codes (also in README):
  0 success; 1 transfer failed; 2 bad usage or value; 3 local file problem
  (missing, unreadable, disk full); 4 S3 refused (no such bucket/key, access
  denied); 5 bad or missing credentials; 6 endpoint unreachable; 7 object in
  cold storage; 8 integrity check failed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastxfer.config import TransferConfig
from fastxfer.errors import FastxferError, LocalFileError, UsageError, translate
from fastxfer.s3url import S3Url, is_s3_url, parse_s3_url
from fastxfer.units import format_rate, format_size, parse_rate, parse_size

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one clear line, exit 2
        self.exit(2, f"fastxfer: error: {message}\n")


def _connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        help="S3 endpoint (default: AWS; env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)",
    )
    g.add_argument("--profile", default=os.environ.get("AWS_PROFILE"), help="AWS profile name")
    g.add_argument("--region", default=None, help="region (default: profile's, else us-east-1)")
    g.add_argument("--no-verify-ssl", action="store_true", help="do not verify TLS certificates")


def _transfer_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transfer")
    g.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    g.add_argument("--part-size", default="16MiB", help="multipart part size (default 16MiB)")
    g.add_argument(
        "--multipart-threshold", default="16MiB", help="multipart at/above this size (16MiB)"
    )
    g.add_argument(
        "--memory-limit", default="512MiB", help="bound on part buffers in memory (512MiB)"
    )
    g.add_argument("--storage-class", default=None, help="storage class for uploads")
    g.add_argument(
        "--storage-class-rule",
        action="append",
        default=[],
        metavar="PATTERN=CLASS",
        help="storage class by key glob or prefix/ (first match wins; repeatable)",
    )
    g.add_argument(
        "--bwlimit", default=_env("BWLIMIT"), help="cap on bytes/s, both directions (4MiB/s)"
    )
    g.add_argument("--bwlimit-up", default=_env("BWLIMIT_UP"), help="cap on upload bytes/s")
    g.add_argument("--bwlimit-down", default=_env("BWLIMIT_DOWN"), help="cap on download bytes/s")
    g.add_argument(
        "--bwlimit-per-connection",
        default=_env("BWLIMIT_PER_CONNECTION"),
        help="cap on bytes/s of each connection",
    )
    g.add_argument(
        "--bwlimit-schedule",
        default=_env("BWLIMIT_SCHEDULE"),
        help='weekly timetable, e.g. "Mon-Fri 08:00-18:00 4MiB/s, otherwise off"',
    )
    g.add_argument("--tps", default=_env("TPS"), help="cap on requests per second")
    g.add_argument(
        "--checksum",
        default="auto",
        choices=["auto", "server", "client", "md5", "off"],
        help="integrity mode (see README; default auto)",
    )


def _env(name: str) -> str | None:
    """Settings also come from FASTXFER_* environment variables (the duplicity backend)."""
    return os.environ.get(f"FASTXFER_{name}")


def _rate(value: str | None, flag: str) -> float:
    return parse_rate(value, what=flag) if value else 0.0


def _output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastxfer",
        description="Fast, safe S3 transfers for backups.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 local file, 4 S3 refused, "
        "5 credentials, 6 unreachable, 7 cold object, 8 integrity, 130 interrupted.",
    )
    from fastxfer import __version__

    p.add_argument("--version", action="version", version=f"fastxfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cp = sub.add_parser(
        "cp",
        help="copy files to or from S3",
        description="Copy a file or (with -r) a directory tree between the local disk and S3. "
        "With -r the contents of SRC go under DST, as with `aws s3 cp --recursive`.",
    )
    cp.add_argument("src")
    cp.add_argument("dst")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy a directory tree")
    _connection_options(cp)
    _transfer_options(cp)
    _output_options(cp)

    ab = sub.add_parser(
        "abort-uploads",
        help="abort incomplete multipart uploads (what a killed process leaves behind)",
        description="List and abort incomplete multipart uploads under s3://BUCKET[/PREFIX]. "
        "They are invisible in listings but billed as storage.",
    )
    ab.add_argument("url", help="s3://bucket[/prefix]")
    ab.add_argument(
        "--older-than",
        default="1h",
        help="only uploads started this long ago (default 1h; 0 for all), e.g. 30m, 2h, 1d",
    )
    ab.add_argument("--dry-run", action="store_true", help="list them, abort nothing")
    _connection_options(ab)
    ab.add_argument("--json", action="store_true")

    ls = sub.add_parser("ls", help="list buckets or objects")
    ls.add_argument("url", nargs="?", default=None, help="s3://bucket[/prefix]")
    ls.add_argument("-r", "--recursive", action="store_true", help="list every key under prefix")
    _connection_options(ls)
    ls.add_argument("--json", action="store_true", help="JSON lines output")

    demo = sub.add_parser(
        "demo",
        help="upload and download sample data through an embedded local S3 server",
        description="Starts rclone serve s3 on 127.0.0.1 (no account, no Docker), uploads "
        "sample files with fastxfer, downloads them back, checks every byte and prints "
        "the throughput.",
    )
    demo.add_argument("--size", default="512MiB", help="total sample data (default 512MiB)")
    demo.add_argument("--files", type=int, default=9, help="number of files (default 9)")
    demo.add_argument("--concurrency", type=int, default=16)
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--json", action="store_true")

    serve = sub.add_parser(
        "serve", help="run the embedded local S3 server in the foreground (for experiments)"
    )
    serve.add_argument("root", help="directory to serve; top-level folders are buckets")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--bucket", action="append", default=[], help="create this bucket")

    from fastxfer import restore_cli

    restore_cli.add_parsers(sub, _connection_options)

    bench = sub.add_parser(
        "bench",
        help="benchmark fastxfer against other S3 clients (benchmarks/README.md)",
        add_help=False,
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return p


def _config_from(args: argparse.Namespace) -> TransferConfig:
    part = parse_size(args.part_size, what="--part-size")
    mem = parse_size(args.memory_limit, what="--memory-limit")
    thr = parse_size(args.multipart_threshold, what="--multipart-threshold")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    tps = 0.0
    if args.tps:
        try:
            tps = float(args.tps)
        except ValueError:
            raise UsageError(
                f"invalid --tps {args.tps!r}", hint="a number of requests per second"
            ) from None
    return TransferConfig(
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        region=args.region,
        verify_tls=not args.no_verify_ssl,
        bwlimit=_rate(args.bwlimit, "--bwlimit"),
        bwlimit_up=_rate(args.bwlimit_up, "--bwlimit-up"),
        bwlimit_down=_rate(args.bwlimit_down, "--bwlimit-down"),
        bwlimit_per_connection=_rate(args.bwlimit_per_connection, "--bwlimit-per-connection"),
        bwlimit_schedule=args.bwlimit_schedule,
        tps=tps,
        max_concurrency=args.concurrency,
        part_size=part,
        memory_limit=mem,
        multipart_threshold=thr,
        storage_class=args.storage_class,
        checksum=args.checksum,
    )


# -- progress ---------------------------------------------------------------


@dataclass
class _Totals:
    files: int = 0
    bytes_total: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


class _RichProgress:
    """One overall bar: bytes, rate, files done.  Updates are cheap (rich refreshes at 10 Hz)."""

    def __init__(self, total: int, files: int, label: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[files]}"),
            transient=False,
        )
        self.files = files
        self.done = 0
        self.task = self.progress.add_task(label, total=total, files=f"0/{files} files")

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_queued(self, stats: Any) -> None:
        return None

    def on_progress(self, event: Any) -> None:
        self.progress.advance(self.task, event.bytes_delta)

    def on_done(self, stats: Any) -> None:
        self.done += 1
        self.progress.update(self.task, files=f"{self.done}/{self.files} files")


# -- cp -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    direction: str  # "upload" | "download"
    local: str
    bucket: str
    key: str
    size: int


def _safe_relpath(key: str, prefix: str) -> str | None:
    """Local relative path for ``key`` under ``prefix``; None if it would escape DST."""
    rel = key[len(prefix) :].lstrip("/")
    if not rel or rel.endswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return os.path.join(*parts)


async def _plan_cp(tm: Any, args: argparse.Namespace) -> tuple[list[_Job], list[str]]:
    src, dst = args.src, args.dst
    skipped: list[str] = []
    if is_s3_url(src) and is_s3_url(dst):
        raise UsageError("copying between two S3 locations is not supported yet")
    if not is_s3_url(src) and not is_s3_url(dst):
        raise UsageError("one of SRC and DST must be an s3:// URL")
    jobs: list[_Job] = []
    if is_s3_url(dst):
        url = parse_s3_url(dst)
        if not os.path.exists(src):
            raise LocalFileError(f"{src}: no such file or directory")
        if os.path.isdir(src):
            if not args.recursive:
                raise UsageError(f"{src} is a directory", hint="use --recursive (-r)")
            prefix = url.key if (url.key == "" or url.key.endswith("/")) else url.key + "/"
            for root, dirs, files in os.walk(src):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(root, name)
                    if not os.path.isfile(path):
                        skipped.append(path)
                        continue
                    rel = os.path.relpath(path, src).replace(os.sep, "/")
                    jobs.append(
                        _Job("upload", path, url.bucket, prefix + rel, os.path.getsize(path))
                    )
        else:
            if not os.access(src, os.R_OK):
                raise LocalFileError(f"{src}: permission denied")
            key = url.key + os.path.basename(src) if url.is_prefix else url.key
            jobs.append(_Job("upload", src, url.bucket, key, os.path.getsize(src)))
        await _preflight_bucket(tm, url.bucket)
        return jobs, skipped
    url = parse_s3_url(src)
    if args.recursive:
        prefix = url.key if (url.key == "" or url.key.endswith("/")) else url.key + "/"
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise LocalFileError(f"{dst}: exists and is not a directory")
        async for obj in tm.list_objects(url.bucket, prefix):
            rel = _safe_relpath(obj.key, prefix)
            if rel is None:
                skipped.append(obj.key)
                continue
            jobs.append(_Job("download", os.path.join(dst, rel), url.bucket, obj.key, obj.size))
        if not jobs:
            await _preflight_bucket(tm, url.bucket)
        return jobs, skipped
    if not url.key or url.key.endswith("/"):
        raise UsageError(f"{src} names a prefix, not an object", hint="use --recursive (-r)")
    info = await tm.head(url.bucket, url.key)
    dest = dst
    if os.path.isdir(dst) or dst.endswith(os.sep):
        dest = os.path.join(dst, os.path.basename(url.key))
    jobs.append(_Job("download", dest, url.bucket, url.key, info.size))
    return jobs, skipped


async def _preflight_bucket(tm: Any, bucket: str) -> None:
    """Fail fast, with the server's own error code, on a wrong bucket or credentials."""
    from fastxfer.errors import AccessDenied

    # Credentials may lack ListBucket and still be allowed to write.
    with contextlib.suppress(AccessDenied):
        await tm.request("list_objects_v2", bucket=bucket, what="check bucket", MaxKeys=1)


async def _cmd_cp(args: argparse.Namespace) -> int:
    from fastxfer.manager import TransferManager
    from fastxfer.storage_class import parse_rules, resolve_storage_class

    cfg = _config_from(args)
    rules = parse_rules(args.storage_class_rule)  # bad rules fail before any request
    show_progress = not (args.no_progress or args.quiet or args.json) and sys.stderr.isatty()
    totals = _Totals()
    started = time.monotonic()
    async with TransferManager(cfg) as tm:
        jobs, skipped = await _plan_cp(tm, args)
        for s in skipped:
            print(f"fastxfer: skipped {s!r} (not a regular file or unsafe name)", file=sys.stderr)
        totals.files = len(jobs)
        totals.bytes_total = sum(j.size for j in jobs)
        label = "upload" if jobs and jobs[0].direction == "upload" else "download"
        bar = _RichProgress(totals.bytes_total, totals.files, label) if show_progress else None
        subs = (bar,) if bar else ()
        for j in jobs:
            if j.direction == "download":
                os.makedirs(os.path.dirname(os.path.abspath(j.local)), exist_ok=True)

        def start(j: _Job) -> Any:
            if j.direction == "upload":
                return tm.upload(
                    j.local,
                    j.bucket,
                    j.key,
                    subscribers=subs,
                    storage_class=resolve_storage_class(j.key, rules, cfg.storage_class),
                )
            return tm.download(j.bucket, j.key, j.local, size_hint=j.size, subscribers=subs)

        with bar if bar else contextlib.nullcontext():
            handles = [start(j) for j in jobs]
            results = await asyncio.gather(*handles, return_exceptions=True)
    elapsed = time.monotonic() - started
    exit_code = 0
    moved = 0
    for j, r in zip(jobs, results, strict=True):
        if isinstance(r, BaseException):
            if isinstance(r, asyncio.CancelledError | KeyboardInterrupt):
                raise r
            err = translate(r) if isinstance(r, Exception) else r
            code = err.exit_code if isinstance(err, FastxferError) else 1
            exit_code = exit_code or code
            totals.failed.append(
                {"local": j.local, "url": f"s3://{j.bucket}/{j.key}", "error": str(err)}
            )
            print(f"fastxfer: {j.direction} failed: {err}", file=sys.stderr)
        else:
            moved += r.bytes_done
            totals.results.append(
                {
                    "local": j.local,
                    "url": f"s3://{j.bucket}/{j.key}",
                    "bytes": r.bytes_done,
                    "seconds": round(r.elapsed or 0.0, 4),
                    "etag": r.etag,
                    "crc64nvme": r.checksum,
                    "verified": r.verified,
                    "multipart": r.multipart,
                    "retries": r.retries,
                }
            )
    rate = moved / elapsed if elapsed > 0 else 0.0
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not totals.failed,
                    "files": totals.files,
                    "files_failed": len(totals.failed),
                    "bytes": moved,
                    "seconds": round(elapsed, 4),
                    "bytes_per_second": round(rate),
                    "transfers": totals.results,
                    "errors": totals.failed,
                },
                indent=2,
            )
        )
    elif not args.quiet:
        ok = totals.files - len(totals.failed)
        print(
            f"{ok}/{totals.files} files, {format_size(moved)} in {elapsed:.2f} s "
            f"({format_rate(rate)})",
            file=sys.stderr,
        )
    if exit_code == 0 and totals.failed:
        exit_code = 1
    return exit_code


# -- ls -----------------------------------------------------------------------


async def _cmd_ls(args: argparse.Namespace) -> int:
    from fastxfer.manager import TransferManager

    cfg = TransferConfig(
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        region=args.region,
        verify_tls=not args.no_verify_ssl,
    )
    async with TransferManager(cfg) as tm:
        if args.url is None:
            r = await tm.client.list_buckets()
            for b in r.get("Buckets", []):
                print(json.dumps({"bucket": b["Name"]}) if args.json else b["Name"])
            return 0
        url: S3Url = parse_s3_url(args.url)
        await _preflight_bucket(tm, url.bucket)
        if args.recursive:
            async for o in tm.list_objects(url.bucket, url.key):
                _print_obj(o.key, o.size, o.last_modified, o.storage_class, args.json)
            return 0
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": url.key, "Delimiter": "/"}
            if token:
                kw["ContinuationToken"] = token
            r = await tm.request("list_objects_v2", bucket=url.bucket, what="LIST", **kw)
            for cp in r.get("CommonPrefixes", []):
                pre = cp["Prefix"]
                print(json.dumps({"prefix": pre}) if args.json else f"{'PRE':>30} {pre}")
            for o in r.get("Contents", []):
                _print_obj(
                    o["Key"], o["Size"], o.get("LastModified"), o.get("StorageClass"), args.json
                )
            token = r.get("NextContinuationToken")
            if not r.get("IsTruncated") or not token:
                return 0


async def _cmd_abort_uploads(args: argparse.Namespace) -> int:
    from fastxfer.manager import TransferManager
    from fastxfer.restore import parse_duration

    older = 0.0 if args.older_than in ("0", "0s") else parse_duration(args.older_than)
    url = parse_s3_url(args.url)
    cfg = TransferConfig(
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        region=args.region,
        verify_tls=not args.no_verify_ssl,
    )
    async with TransferManager(cfg) as tm:
        if args.dry_run:
            now = datetime.now(UTC)
            found = [
                u
                for u in await tm.list_multipart_uploads(url.bucket, url.key)
                if not older or (now - u["Initiated"]).total_seconds() >= older
            ]
        else:
            found = await tm.abort_incomplete_uploads(url.bucket, url.key, older_than=older)
    for u in found:
        started = u.get("Initiated")
        when = started.isoformat() if isinstance(started, datetime) else "?"
        if args.json:
            print(json.dumps({"key": u["Key"], "upload_id": u["UploadId"], "initiated": when}))
        else:
            print(f"{'would abort' if args.dry_run else 'aborted'} {when} {u['Key']}")
    if not args.json:
        print(f"{len(found)} incomplete upload(s)", file=sys.stderr)
    return 0


def _print_obj(key: str, size: int, modified: Any, sc: Any, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "key": key,
                    "size": size,
                    "last_modified": modified.isoformat() if modified else None,
                    "storage_class": sc or "STANDARD",
                }
            )
        )
    else:
        when = modified.strftime("%Y-%m-%d %H:%M:%S") if modified else "-"
        print(f"{when} {size:>12} {sc or 'STANDARD':<12} {key}")


# -- serve / demo ---------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from fastxfer.localserver import LocalS3Server

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # stop the server on kill as on Ctrl-C
    srv = LocalS3Server(root=args.root, port=args.port)
    with srv:
        for b in args.bucket:
            srv.make_bucket(b)
        print(
            f"S3 server on {srv.endpoint_url} serving {args.root}\n"
            f"export AWS_ENDPOINT_URL={srv.endpoint_url} "
            f"AWS_ACCESS_KEY_ID={srv.access_key} AWS_SECRET_ACCESS_KEY={srv.secret_key}\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from fastxfer.demo import run_demo

    return run_demo(
        total=parse_size(args.size, what="--size"),
        files=args.files,
        concurrency=args.concurrency,
        progress=not args.no_progress,
        as_json=args.json,
    )


async def _restore(args: argparse.Namespace) -> int:
    from fastxfer import restore_cli

    return await restore_cli.run_restore(args)


async def _restore_status(args: argparse.Namespace) -> int:
    from fastxfer import restore_cli

    return await restore_cli.run_restore_status(args)


def _bench(argv: list[str]) -> int:
    try:
        from benchmarks.run import main as bench_main
    except ImportError:
        print(
            "fastxfer: error: the benchmark suite is not installed "
            "(install fastxfer from a checkout with the [bench] extra)",
            file=sys.stderr,
        )
        return 2
    return bench_main(argv)


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when available (lower CPU per request than the default loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to the benchmark's own parser.
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from fastxfer.runtime import tune_process

    tune_process()
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "cp": lambda a: run_async(_cmd_cp(a)),
        "ls": lambda a: run_async(_cmd_ls(a)),
        "abort-uploads": lambda a: run_async(_cmd_abort_uploads(a)),
        "serve": _cmd_serve,
        "demo": _cmd_demo,
        "restore": lambda a: run_async(_restore(a)),
        "restore-status": lambda a: run_async(_restore_status(a)),
    }
    try:
        return handlers[args.command](args)
    except FastxferError as exc:
        print(f"fastxfer: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastxfer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
