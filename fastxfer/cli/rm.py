"""``fastxfer rm`` (delete objects) and ``fastxfer mv`` (copy, verify, then delete the source).

``rm -r`` lists the prefix once and deletes with DeleteObjects, 1,000 keys a
request.  ``mv`` runs ``cp`` (upload, download or server-side copy), checks
each copy against its source (size, and the CRC64NVME where both sides know
it; for a local source also that the file did not change after its upload),
and only then removes that source: a file that failed or changed stays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
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
from fastxfer.cli.cp import copy, head_checked
from fastxfer.cli.outcome import CopyJob, CopyOutcome, outcome_json, print_outcome, printable
from fastxfer.cli.progress import wanted
from fastxfer.errors import FastxferError, UsageError, translate
from fastxfer.filters import Filters
from fastxfer.manager import TransferManager
from fastxfer.objectinfo import parse_mtime
from fastxfer.s3url import S3Url, is_s3_url, parse_s3_url
from fastxfer.storage_class import parse_rules
from fastxfer.transfer import TransferStats
from fastxfer.units import format_size


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "rm",
        _cmd_rm,
        help="delete an object, or every object under a prefix (-r)",
        description="Delete s3://bucket/key, or with -r every object under s3://bucket/prefix/ "
        "(one LIST per 1,000 keys, DeleteObjects in batches of 1,000). Filters select "
        "keys relative to the prefix. --dry-run lists what would be deleted.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("url", help="s3://bucket/key, or s3://bucket/prefix/ with -r")
    p.add_argument("-r", "--recursive", action="store_true", help="every object under the prefix")
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, delete nothing"
    )
    add_filter_options(p)
    add_connection_options(p)
    add_output_options(p)

    m = add_command(
        sub,
        "mv",
        _cmd_mv,
        help="move files or objects: copy, verify, then delete the source",
        description="Copy SRC to DST as `fastxfer cp` does (upload, download or server-side "
        "copy; -r for a tree), check each copy (size, CRC64NVME where known), then delete "
        "its source. A local file is removed only after its upload succeeded and if it did "
        "not change since; a source whose copy failed is kept (exit 1).",
        epilog=EXIT_CODES_HELP,
    )
    m.add_argument("src", help="a file, a directory (-r) or s3://bucket/key[/]")
    m.add_argument("dst", help="a file or directory, or s3://bucket/key[/]")
    m.add_argument("-r", "--recursive", action="store_true", help="move a tree")
    add_filter_options(m)
    add_object_options(m)
    add_connection_options(m)
    add_transfer_options(m)
    add_output_options(m, progress=True)


# -- rm -------------------------------------------------------------------------------


async def plan_rm(
    tm: TransferManager, url: S3Url, *, recursive: bool, filters: Filters
) -> list[tuple[str, int]]:
    """(key, size) of what ``rm`` deletes; a single missing key is an error (exit 4)."""
    if not recursive:
        if filters:
            raise UsageError("--include/--exclude select keys under a prefix: use -r")
        if url.is_prefix:
            raise UsageError(
                f"s3://{url.bucket}/{url.key} names a prefix", hint="use -r to delete under it"
            )
        info = await head_checked(tm, url.bucket, url.key)
        return [(url.key, info.size)]
    prefix = url.key if url.key == "" or url.key.endswith("/") else url.key + "/"
    out: list[tuple[str, int]] = []
    async for obj in tm.list_objects(url.bucket, prefix):
        rel = obj.key[len(prefix) :]
        if filters and (not rel or not filters.included(rel)):
            continue
        out.append((obj.key, obj.size))
    return out


def _cmd_rm(args: argparse.Namespace) -> int:
    if not is_s3_url(args.url):
        raise UsageError(f"{args.url!r} is not an s3:// URL", hint="rm deletes objects")
    url = parse_s3_url(args.url)
    filters = filters_from_args(args)
    cfg = config_from_args(args)

    async def go() -> int:
        started = time.monotonic()
        async with TransferManager(cfg) as tm:
            keys = await plan_rm(tm, url, recursive=args.recursive, filters=filters)
            failures = (
                [] if args.dry_run else await tm.delete_objects(url.bucket, [k for k, _ in keys])
            )
        seconds = time.monotonic() - started
        failed = {f.key: f"{f.code}: {f.message}" for f in failures}
        deleted = [(k, s) for k, s in keys if k not in failed]
        code = EXIT_FAILED if failed else 0
        for key, why in failed.items():
            warn(f"not deleted: s3://{url.bucket}/{printable(key)}: {why}")
        nbytes = sum(s for _, s in deleted)
        if args.json:
            record: dict[str, Any] = {
                "ok": not failed,
                "exit": code,
                "dry_run": args.dry_run,
                "objects": len(deleted),
                "bytes": nbytes,
                "seconds": round(seconds, 4),
                "keys": [k for k, _ in deleted],
                "failed": [{"key": k, "error": e} for k, e in failed.items()],
            }
            print(json.dumps(record, indent=2))
        elif args.dry_run:
            for key, size in keys:
                print(f"would delete: s3://{url.bucket}/{printable(key)} ({format_size(size)})")
            print(f"dry run: would delete {len(keys)} objects ({format_size(nbytes)})")
        elif not args.quiet:
            print(
                f"deleted {len(deleted)} objects ({format_size(nbytes)}) in {seconds:.2f} s",
                file=sys.stderr,
            )
        return code

    return run_async(go())


# -- mv -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kept:
    """A source ``mv`` did not remove although its copy succeeded, and why."""

    source: str
    reason: str


async def _verify(
    tm: TransferManager, job: CopyJob, stats: TransferStats, started_ns: int
) -> str | None:
    """Why ``job``'s source must stay (its copy does not match it), or None."""
    if stats.bytes_done != job.size:
        return f"{stats.bytes_done} bytes copied, the source had {job.size}"
    if job.direction == "download":
        try:
            size = os.stat(job.local).st_size
        except OSError as exc:
            return f"the download cannot be checked: {exc.strerror or exc}"
        return None if size == job.size else f"the downloaded file has {size} bytes"
    dest = await head_checked(tm, job.bucket, job.key)
    if dest.size != job.size:
        return f"the copy has {dest.size} bytes, the source {job.size}"
    crc = dest.whole_crc64nvme
    if crc is not None and stats.checksum and "-" not in stats.checksum:  # not composite
        from fastxfer.integrity import to_b64

        if to_b64(crc) != stats.checksum:
            return "the copy's CRC64NVME differs from the source's"
    if job.direction == "upload":
        return _local_unchanged(job.local, dest.size, dest.metadata.get("mtime"), started_ns)
    return None


def _local_unchanged(path: str, size: int, mtime_meta: str | None, started_ns: int) -> str | None:
    """None if ``path`` is still what was uploaded (size, and mtime: the stored one, else
    not modified since the upload began)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot check the file: {exc.strerror or exc}"
    if st.st_size != size:
        return "the file changed after its upload"
    stored = parse_mtime(mtime_meta) if mtime_meta else None
    if stored is not None:
        same = abs(st.st_mtime_ns - stored) < 1_000_000
    else:
        same = st.st_mtime_ns <= started_ns
    return None if same else "the file changed after its upload"


async def remove_sources(
    tm: TransferManager, outcome: CopyOutcome, started_ns: int
) -> tuple[list[CopyJob], list[Kept]]:
    """Verify every successful copy, then delete its source; (moved, kept)."""
    checks = await asyncio.gather(
        *(_verify(tm, job, stats, started_ns) for job, stats in outcome.done),
        return_exceptions=True,
    )
    removable: list[CopyJob] = []
    kept: list[Kept] = []
    for (job, _), why in zip(outcome.done, checks, strict=True):
        if isinstance(why, BaseException) and not isinstance(why, Exception):
            raise why  # CancelledError, KeyboardInterrupt: never swallowed
        if isinstance(why, Exception):
            kept.append(Kept(job.source, f"cannot verify the copy: {translate(why)}"))
        elif why is not None:
            kept.append(Kept(job.source, why))
        else:
            removable.append(job)
    moved: list[CopyJob] = []
    by_bucket: dict[str, list[CopyJob]] = defaultdict(list)
    for job in removable:
        if job.direction == "upload":
            try:
                os.unlink(job.local)
            except OSError as exc:
                kept.append(Kept(job.source, f"not removed: {translate(exc)}"))
            else:
                moved.append(job)
        else:
            bucket = job.src_bucket if job.direction == "copy" else job.bucket
            by_bucket[bucket].append(job)
    for bucket, jobs in by_bucket.items():
        keys = {_source_key(j): j for j in jobs}
        try:
            failures = await tm.delete_objects(bucket, list(keys))
        except FastxferError as exc:
            kept += [Kept(j.source, f"not deleted: {exc}") for j in jobs]
            continue
        refused = {f.key: f"{f.code}: {f.message}" for f in failures}
        for key, job in keys.items():
            if key in refused:
                kept.append(Kept(job.source, f"not deleted: {refused[key]}"))
            else:
                moved.append(job)
    return moved, kept


def _source_key(job: CopyJob) -> str:
    return job.src_key if job.direction == "copy" else job.key


def _cmd_mv(args: argparse.Namespace) -> int:
    if "-" in (args.src, args.dst):
        raise UsageError("mv moves files and objects, not streams", hint="use fastxfer cp")
    if is_s3_url(args.src) and is_s3_url(args.dst):
        s, d = parse_s3_url(args.src), parse_s3_url(args.dst)
        if (s.bucket, s.key) == (d.bucket, d.key):
            raise UsageError("SRC and DST are the same object")
    cfg = config_from_args(args)
    rules = parse_rules(args.storage_class_rule)
    filters = filters_from_args(args)
    options = object_options_from_args(args)
    progress = wanted(args)

    async def go() -> int:
        started_ns = time.time_ns()
        async with TransferManager(cfg) as tm:
            outcome = await copy(
                tm,
                args.src,
                args.dst,
                recursive=args.recursive,
                rules=rules,
                progress=progress,
                filters=filters,
                options=options,
            )
            moved, kept = await remove_sources(tm, outcome, started_ns)
        for k in kept:
            warn(f"source kept: {printable(k.source)}: {k.reason}")
        code = outcome.exit_code or (EXIT_FAILED if kept else 0)
        if args.json:
            record = outcome_json(outcome)
            record.update(
                ok=outcome.ok and not kept,
                exit=code,
                moved=len(moved),
                kept=[{"source": k.source, "reason": k.reason} for k in kept],
            )
            print(json.dumps(record, indent=2))
        else:
            print_outcome(outcome, quiet=args.quiet)
            if not args.quiet and outcome.files:
                print(f"moved {len(moved)}/{outcome.files} files", file=sys.stderr)
        return code

    return run_async(go())
