"""``fastxfer cp``: a file or a tree to or from S3.

:func:`copy` is what the command and the demo both run: plan the jobs, start
them all on one TransferManager (its budgets bound what runs at once), wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastxfer.cli.common import (
    EXIT_FAILED,
    Parser,
    Subparsers,
    add_command,
    add_connection_options,
    add_output_options,
    add_transfer_options,
    config_from_args,
    run_async,
    warn,
)
from fastxfer.errors import AccessDenied, FastxferError, LocalFileError, UsageError, translate
from fastxfer.localpath import local_path_for_key
from fastxfer.manager import TransferManager
from fastxfer.progress import ProgressEvent, Subscriber
from fastxfer.s3url import is_s3_url, parse_s3_url
from fastxfer.storage_class import StorageClassRule, parse_rules, resolve_storage_class
from fastxfer.transfer import TransferHandle, TransferStats
from fastxfer.units import format_rate, format_size


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "cp",
        _cmd_cp,
        help="copy files to or from S3",
        description="Copy a file or (with -r) a directory tree between the local disk and S3. "
        "With -r the contents of SRC go under DST, as with `aws s3 cp --recursive`.",
    )
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-r", "--recursive", action="store_true", help="copy a directory tree")
    add_connection_options(p)
    add_transfer_options(p)
    add_output_options(p, progress=True)


# -- plan ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopyJob:
    direction: Literal["upload", "download"]
    local: str
    bucket: str
    key: str
    size: int

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _as_prefix(key: str) -> str:
    return key if (key == "" or key.endswith("/")) else key + "/"


async def plan_copy(
    tm: TransferManager, src: str, dst: str, *, recursive: bool
) -> tuple[list[CopyJob], list[str]]:
    """The transfers ``cp SRC DST`` makes, and what it skips (irregular files, unsafe keys)."""
    if is_s3_url(src) and is_s3_url(dst):
        raise UsageError("copying between two S3 locations is not supported yet")
    if not is_s3_url(src) and not is_s3_url(dst):
        raise UsageError("one of SRC and DST must be an s3:// URL")
    if is_s3_url(dst):
        return await _plan_upload(tm, src, dst, recursive=recursive)
    return await _plan_download(tm, src, dst, recursive=recursive)


async def _plan_upload(
    tm: TransferManager, src: str, dst: str, *, recursive: bool
) -> tuple[list[CopyJob], list[str]]:
    url = parse_s3_url(dst)
    jobs: list[CopyJob] = []
    skipped: list[str] = []
    if not os.path.exists(src):
        raise LocalFileError(f"{src}: no such file or directory")
    if os.path.isdir(src):
        if not recursive:
            raise UsageError(f"{src} is a directory", hint="use --recursive (-r)")
        prefix = _as_prefix(url.key)
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                if not os.path.isfile(path):
                    skipped.append(path)
                    continue
                rel = os.path.relpath(path, src).replace(os.sep, "/")
                jobs.append(
                    CopyJob("upload", path, url.bucket, prefix + rel, os.path.getsize(path))
                )
    else:
        if not os.access(src, os.R_OK):
            raise LocalFileError(f"{src}: permission denied")
        key = url.key + os.path.basename(src) if url.is_prefix else url.key
        jobs.append(CopyJob("upload", src, url.bucket, key, os.path.getsize(src)))
    # Fail fast, before any data moves, on a wrong bucket or endpoint.  Credentials
    # may lack the permission to check a bucket and still be allowed to write.
    with contextlib.suppress(AccessDenied):
        await tm.bucket_exists(url.bucket)
    return jobs, skipped


async def _plan_download(
    tm: TransferManager, src: str, dst: str, *, recursive: bool
) -> tuple[list[CopyJob], list[str]]:
    url = parse_s3_url(src)
    jobs: list[CopyJob] = []
    skipped: list[str] = []
    if recursive:
        prefix = _as_prefix(url.key)
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise LocalFileError(f"{dst}: exists and is not a directory")
        async for obj in tm.list_objects(url.bucket, prefix):
            try:
                local = local_path_for_key(dst, obj.key, prefix)
            except LocalFileError:
                skipped.append(obj.key)
                continue
            jobs.append(CopyJob("download", local, url.bucket, obj.key, obj.size))
        return jobs, skipped
    if url.is_prefix:
        raise UsageError(f"{src} names a prefix, not an object", hint="use --recursive (-r)")
    info = await tm.head(url.bucket, url.key)
    dest = dst
    if os.path.isdir(dst) or dst.endswith(os.sep):
        dest = local_path_for_key(dst, url.key.rsplit("/", 1)[-1])
    jobs.append(CopyJob("download", dest, url.bucket, url.key, info.size))
    return jobs, skipped


# -- run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyOutcome:
    """What :func:`copy` did: each job's final stats or error, and the wall time."""

    done: tuple[tuple[CopyJob, TransferStats], ...]
    failed: tuple[tuple[CopyJob, FastxferError], ...]
    skipped: tuple[str, ...]
    seconds: float

    @property
    def files(self) -> int:
        return len(self.done) + len(self.failed)

    @property
    def bytes_moved(self) -> int:
        return sum(stats.bytes_done for _, stats in self.done)

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the first failure (1 when it has none of its own)."""
        if not self.failed:
            return 0
        return self.failed[0][1].exit_code or EXIT_FAILED


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

    def on_queued(self, stats: TransferStats) -> None:
        return None

    def on_progress(self, event: ProgressEvent) -> None:
        self.progress.advance(self.task, event.bytes_delta)

    def on_done(self, stats: TransferStats) -> None:
        self.done += 1
        self.progress.update(self.task, files=f"{self.done}/{self.files} files")


async def copy(
    tm: TransferManager,
    src: str,
    dst: str,
    *,
    recursive: bool = False,
    rules: Sequence[StorageClassRule] = (),
    progress: bool = False,
) -> CopyOutcome:
    """Copy ``src`` to ``dst`` (one of them an ``s3://`` URL) on ``tm``.

    Failed transfers are returned, not raised; planning errors (bad URL,
    missing file or bucket) raise.  ``progress`` draws a bar on stderr.
    """
    started = time.monotonic()
    jobs, skipped = await plan_copy(tm, src, dst, recursive=recursive)
    for s in skipped:
        warn(f"skipped {s!r} (not a regular file or unsafe name)")
    total = sum(j.size for j in jobs)
    label = "upload" if jobs and jobs[0].direction == "upload" else "download"
    bar = _RichProgress(total, len(jobs), label) if progress else None
    subscribers: tuple[Subscriber, ...] = (bar,) if bar else ()
    for j in jobs:
        if j.direction == "download":
            os.makedirs(os.path.dirname(os.path.abspath(j.local)), exist_ok=True)
    with bar if bar else contextlib.nullcontext():
        handles = [_start(tm, j, rules, subscribers) for j in jobs]
        results = await asyncio.gather(*handles, return_exceptions=True)
    done: list[tuple[CopyJob, TransferStats]] = []
    failed: list[tuple[CopyJob, FastxferError]] = []
    for j, r in zip(jobs, results, strict=True):
        if isinstance(r, TransferStats):
            done.append((j, r))
        elif isinstance(r, Exception):
            failed.append((j, translate(r)))
        else:  # CancelledError, KeyboardInterrupt: never swallowed
            raise r
    return CopyOutcome(tuple(done), tuple(failed), tuple(skipped), time.monotonic() - started)


def _start(
    tm: TransferManager,
    job: CopyJob,
    rules: Iterable[StorageClassRule],
    subscribers: tuple[Subscriber, ...],
) -> TransferHandle:
    if job.direction == "upload":
        return tm.upload(
            job.local,
            job.bucket,
            job.key,
            subscribers=subscribers,
            storage_class=resolve_storage_class(job.key, rules),
        )
    return tm.download(job.bucket, job.key, job.local, size_hint=job.size, subscribers=subscribers)


def print_outcome(outcome: CopyOutcome, *, as_json: bool = False, quiet: bool = False) -> None:
    """Failures on stderr, then the JSON summary on stdout or one summary line on stderr."""
    for job, err in outcome.failed:
        warn(f"{job.direction} failed: {err}")
    rate = outcome.bytes_moved / outcome.seconds if outcome.seconds > 0 else 0.0
    if as_json:
        summary: dict[str, Any] = {
            "ok": not outcome.failed,
            "files": outcome.files,
            "files_failed": len(outcome.failed),
            "bytes": outcome.bytes_moved,
            "seconds": round(outcome.seconds, 4),
            "bytes_per_second": round(rate),
            "transfers": [_transfer_json(j, s) for j, s in outcome.done],
            "errors": [
                {"local": j.local, "url": j.url, "error": str(e)} for j, e in outcome.failed
            ],
        }
        print(json.dumps(summary, indent=2))
    elif not quiet:
        print(
            f"{len(outcome.done)}/{outcome.files} files, {format_size(outcome.bytes_moved)} "
            f"in {outcome.seconds:.2f} s ({format_rate(rate)})",
            file=sys.stderr,
        )


def _transfer_json(job: CopyJob, r: TransferStats) -> dict[str, Any]:
    return {
        "local": job.local,
        "url": job.url,
        "bytes": r.bytes_done,
        "seconds": round(r.elapsed or 0.0, 4),
        "etag": r.etag,
        "crc64nvme": r.checksum,
        "verified": r.verified,
        "multipart": r.multipart,
        "retries": r.retries,
    }


def _cmd_cp(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    rules = parse_rules(args.storage_class_rule)  # bad rules fail before any request
    progress = not (args.no_progress or args.quiet or args.json) and sys.stderr.isatty()

    async def run() -> int:
        async with TransferManager(cfg) as tm:
            outcome = await copy(
                tm, args.src, args.dst, recursive=args.recursive, rules=rules, progress=progress
            )
        print_outcome(outcome, as_json=args.json, quiet=args.quiet)
        return outcome.exit_code

    return run_async(run())
