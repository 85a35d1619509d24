"""``fastxfer sync SRC DST``: make DST like SRC, copying only what changed.

The engine is :func:`fastxfer.sync.sync` (compare, copy, then delete only
when every copy succeeded); this module parses the command, refuses what
would be dangerous before any request (a missing or empty source with
``--delete``), and reports: the plan with ``--dry-run`` (on stdout: it is
the answer), a summary line on stderr, or ``--json`` on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from fastxfer.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    Parser,
    Subparsers,
    add_command,
    add_connection_options,
    add_filter_options,
    add_object_options,
    add_output_options,
    add_transfer_options,
    config_from_args,
    filters_from_args,
    object_options_from_args,
    run_async,
    warn,
)
from fastxfer.cli.outcome import printable
from fastxfer.cli.progress import ProgressBar, wanted
from fastxfer.errors import LocalFileError, UsageError
from fastxfer.filters import Filters
from fastxfer.manager import TransferManager
from fastxfer.objectinfo import ObjectOptions
from fastxfer.progress import BaseSubscriber, Subscriber
from fastxfer.s3url import is_s3_url, parse_s3_url
from fastxfer.sync import LocalDir, Location, Mode, S3Prefix, SyncResult, direction, sync
from fastxfer.transfer import TransferStats
from fastxfer.units import format_rate, format_size


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "sync",
        _cmd_sync,
        help="make DST like SRC, copying only what changed",
        description="Copy from SRC to DST what DST lacks or has in another version: local "
        "directory -> s3://bucket/prefix, back, or between two S3 prefixes (server-side "
        "copies). Unchanged means the same size and modification time (the file's mtime is "
        "stored on upload as rclone does, so either tool sees the other's uploads as "
        "unchanged); --checksum compares CRC64NVME instead, --size-only the size alone. "
        "With --delete, what DST has and SRC does not is removed, after every copy "
        "succeeded, never when one failed. The exit status is 1 if anything failed or "
        "could not be synced.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("src", help="a directory or s3://bucket[/prefix]")
    p.add_argument("dst", help="a directory or s3://bucket[/prefix]")
    p.add_argument(
        "--delete",
        action="store_true",
        help="remove from DST what SRC does not have (among the paths the filters include), "
        "after every copy succeeded",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be copied and deleted, and the bytes; change nothing",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--checksum",
        dest="compare",
        action="store_const",
        const="checksum",
        default="mtime",
        help="compare CRC64NVME checksums, not modification times (a HEAD per object, "
        "a read of each local file of the same size)",
    )
    mode.add_argument(
        "--size-only",
        dest="compare",
        action="store_const",
        const="size",
        help="the same size is unchanged",
    )
    add_filter_options(p)
    add_object_options(p)
    add_connection_options(p)
    # --checksum is the comparison here (as in rclone): the integrity mode is --integrity.
    add_transfer_options(p, integrity_flags=("--integrity",), rules=False)
    add_output_options(p, progress=True)


def location(text: str, role: str) -> Location:
    """``s3://bucket/prefix`` (a prefix: ``/`` added) or a local directory."""
    if text == "-":
        raise UsageError(f"sync {role} cannot be '-'", hint="stream with fastxfer cp")
    if is_s3_url(text):
        url = parse_s3_url(text)
        key = url.key
        return S3Prefix(url.bucket, key if key == "" or key.endswith("/") else key + "/")
    return LocalDir(text)


def _check_local_source(path: str) -> None:
    try:
        os.stat(path)
    except FileNotFoundError:
        raise LocalFileError(f"{path}: no such directory") from None
    except OSError as exc:
        raise LocalFileError(f"{path}: {exc.strerror or exc}") from None
    if not os.path.isdir(path):
        raise LocalFileError(f"{path}: not a directory", hint="sync copies directories")


def _check_no_overlap(src: Location, dst: Location) -> None:
    """Two prefixes of one bucket, one inside the other: DST's listing would hold SRC
    (and --delete would remove the source itself)."""
    if (
        isinstance(src, S3Prefix)
        and isinstance(dst, S3Prefix)
        and src.bucket == dst.bucket
        and (src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix))
    ):
        raise UsageError(
            f"{_name(src)} and {_name(dst)} overlap",
            hint="sync between prefixes that do not contain each other",
        )


async def _source_is_empty(tm: TransferManager, src: Location) -> bool:
    """Whether SRC holds nothing at all (one LIST of at most a page, or a directory scan)."""
    if isinstance(src, LocalDir):
        return all(not files for _, _, files in os.walk(src.path))
    async for _ in tm.list_objects(src.bucket, src.prefix):
        return False
    return True


class _Requests(BaseSubscriber):
    """Sums the requests of every transfer (PUTs, parts, GETs, copies) as each ends."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def on_done(self, stats: TransferStats) -> None:
        self.counts.update(stats.requests)


async def run_sync(
    tm: TransferManager,
    src: Location,
    dst: Location,
    *,
    mode: Mode = "mtime",
    delete: bool = False,
    dry_run: bool = False,
    filters: Filters | None = None,
    options: ObjectOptions | None = None,
    progress: bool = False,
) -> tuple[SyncResult, Counter[str], float]:
    """Check, then sync; returns the result, the transfers' requests and the wall time."""
    if isinstance(src, LocalDir) and isinstance(dst, LocalDir):
        raise UsageError("one of SRC and DST must be an s3:// URL", hint="rsync syncs folders")
    _check_no_overlap(src, dst)
    if isinstance(src, LocalDir):
        _check_local_source(src.path)
    if isinstance(dst, LocalDir) and os.path.exists(dst.path) and not os.path.isdir(dst.path):
        raise LocalFileError(f"{dst.path}: exists and is not a directory")
    started = time.monotonic()
    if delete and await _source_is_empty(tm, src):
        # An unmounted disk or a mistyped prefix would otherwise empty DST.
        raise UsageError(
            f"{_name(src)} is empty: refusing to --delete everything in {_name(dst)}",
            hint="check SRC; to empty DST on purpose use fastxfer rm -r",
        )
    counter = _Requests()
    bar = (
        ProgressBar(
            "sync",
            connections=tm.connection_limit,
            ranges=tm.range_limit if isinstance(dst, LocalDir) else None,
        )
        if progress and not dry_run
        else None
    )
    subscribers: tuple[Subscriber, ...] = (counter, bar) if bar else (counter,)
    with bar if bar else contextlib.nullcontext():
        result = await sync(
            tm,
            src,
            dst,
            mode=mode,
            delete=delete,
            dry_run=dry_run,
            filters=filters,
            options=options,
            subscribers=subscribers,
        )
        seconds = time.monotonic() - started
        if bar is not None:
            bar.finish(result.bytes_copied, seconds)
    return result, counter.counts, seconds


def _name(where: Location) -> str:
    if isinstance(where, LocalDir):
        return where.path
    return f"s3://{where.bucket}/{where.prefix}"


def exit_code(result: SyncResult) -> int:
    return 0 if result.ok else EXIT_FAILED


def result_json(
    result: SyncResult, requests: Counter[str], seconds: float, *, dry_run: bool
) -> dict[str, Any]:
    plan = result.plan
    return {
        "ok": result.ok,
        "exit": exit_code(result),
        "dry_run": dry_run,
        "copied": result.copied,
        "bytes_copied": result.bytes_copied,
        "deleted": result.deleted,
        "unchanged": plan.unchanged,
        "to_copy": [
            {"path": s.rel, "bytes": s.size, "why": "changed" if d else "new"} for s, d in plan.copy
        ],
        "bytes_to_copy": plan.bytes_to_copy,
        "to_delete": [{"path": d.rel, "bytes": d.size} for d in plan.delete],
        "bytes_to_delete": sum(d.size for d in plan.delete),
        "delete_skipped": result.delete_skipped,
        "failed": [{"path": p, "error": e} for p, e in result.failed],
        "skipped": [{"path": p, "reason": r} for p, r in plan.skipped],
        "seconds": round(seconds, 4),
        "bytes_per_second": round(result.bytes_copied / seconds) if seconds > 0 else 0,
        "requests": dict(sorted(requests.items())),
    }


def print_result(
    result: SyncResult,
    requests: Counter[str],
    seconds: float,
    *,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    plan = result.plan
    for path, reason in plan.skipped:
        warn(f"not synced: {printable(path)}: {reason}")
    for path, error in result.failed:
        warn(f"failed: {printable(path)}: {error}")
    if result.delete_skipped:
        warn(
            f"nothing deleted ({len(plan.delete)} to delete): --delete runs only after every "
            "copy succeeded and every source path could be synced"
        )
    if as_json:
        print(json.dumps(result_json(result, requests, seconds, dry_run=dry_run), indent=2))
        return
    if dry_run:
        for s, d in plan.copy:
            why = "changed" if d else "new"
            print(f"would copy: {printable(s.rel)} ({format_size(s.size)}, {why})")
        for d in plan.delete:
            print(f"would delete: {printable(d.rel)} ({format_size(d.size)})")
        print(
            f"dry run: would copy {len(plan.copy)} files ({format_size(plan.bytes_to_copy)}, "
            f"{plan.bytes_to_copy:,} bytes), delete {len(plan.delete)} "
            f"({format_size(sum(d.size for d in plan.delete))}); {plan.unchanged} unchanged"
        )
        return
    if quiet:
        return
    rate = result.bytes_copied / seconds if seconds > 0 else 0.0
    failed = f", {len(result.failed)} failed" if result.failed else ""
    failed += f", {len(plan.skipped)} not synced" if plan.skipped else ""
    print(
        f"synced: {result.copied} copied ({format_size(result.bytes_copied)}), "
        f"{result.deleted} deleted, {plan.unchanged} unchanged{failed} "
        f"in {seconds:.2f} s ({format_rate(rate)})",
        file=sys.stderr,
    )


def _cmd_sync(args: argparse.Namespace) -> int:
    src = location(args.src, "SRC")
    dst = location(args.dst, "DST")
    filters = filters_from_args(args)
    options = object_options_from_args(args)
    options.check_applies(direction(src, dst))
    cfg = config_from_args(args)
    progress = wanted(args)

    async def go() -> int:
        async with TransferManager(cfg) as tm:
            result, requests, seconds = await run_sync(
                tm,
                src,
                dst,
                mode=args.compare,
                delete=args.delete,
                dry_run=args.dry_run,
                filters=filters,
                options=options,
                progress=progress,
            )
        print_result(
            result,
            requests,
            seconds,
            dry_run=args.dry_run,
            as_json=args.json,
            quiet=args.quiet,
        )
        return exit_code(result)

    return run_async(go())
