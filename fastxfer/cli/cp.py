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
import stat
import sys
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastxfer.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    Parser,
    Subparsers,
    add_command,
    add_connection_options,
    add_output_options,
    add_transfer_options,
    config_from_args,
    key_problem,
    run_async,
    shorten,
    warn,
)
from fastxfer.errors import (
    AccessDenied,
    BadCredentials,
    FastxferError,
    LocalFileError,
    S3Error,
    UsageError,
    translate,
)
from fastxfer.localpath import (
    check_writable_destination,
    is_folder_marker,
    local_path_for_key,
    map_keys,
)
from fastxfer.manager import ObjectInfo, TransferManager
from fastxfer.progress import ProgressEvent, Subscriber
from fastxfer.s3url import is_s3_url, parse_s3_url
from fastxfer.storage_class import StorageClassRule, parse_rules, resolve_storage_class
from fastxfer.transfer import TransferStats
from fastxfer.units import format_rate, format_size


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "cp",
        _cmd_cp,
        help="copy files to or from S3",
        description="Copy a file or (with -r) a directory tree between the local disk and S3. "
        "With -r the contents of SRC go under DST, as with `aws s3 cp --recursive`. "
        "What cannot be copied (a FIFO or device, a name that cannot be an S3 key, a key "
        "that cannot be a safe local file name, keys that would land on one file) is "
        "reported one line each, the rest is copied, and the exit status is 1.",
        epilog=EXIT_CODES_HELP,
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
    base: str = ""
    """The destination prefix of an upload: storage-class rules see the key without it."""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or key that ``cp`` did not copy: ``name`` (a path or an s3:// URL) and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{printable(self.name)}: {self.reason}"


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one line of a terminal: control characters and undecodable
    bytes escaped, the middle of a very long name elided."""
    return shorten("".join(c if c.isprintable() else repr(c)[1:-1] for c in text), limit)


def _as_prefix(key: str) -> str:
    return key if (key == "" or key.endswith("/")) else key + "/"


async def plan_copy(
    tm: TransferManager, src: str, dst: str, *, recursive: bool
) -> tuple[list[CopyJob], list[Skipped]]:
    """The transfers ``cp SRC DST`` makes, and what it cannot copy (reported, exit 1).

    Everything local is checked before the first request: the source exists
    and is a regular file or a directory (never opened here, so a FIFO cannot
    block), keys are valid S3 keys, the destination directory is writable.
    """
    if is_s3_url(src) and is_s3_url(dst):
        raise UsageError("copying between two S3 locations is not supported yet")
    if not is_s3_url(src) and not is_s3_url(dst):
        raise UsageError("one of SRC and DST must be an s3:// URL")
    if is_s3_url(dst):
        return await _plan_upload(tm, src, dst, recursive=recursive)
    return await _plan_download(tm, src, dst, recursive=recursive)


def _stat_source(src: str) -> os.stat_result:
    """``os.stat(src)`` (a stat, never an open), failures as one-line LocalFileErrors."""
    try:
        return os.stat(src)
    except FileNotFoundError:
        raise LocalFileError(f"{src}: no such file or directory") from None
    except PermissionError:
        raise LocalFileError(f"{src}: permission denied") from None
    except NotADirectoryError:
        raise LocalFileError(f"{src}: a part of the path is not a directory") from None
    except OSError as exc:
        raise LocalFileError(f"{src}: {exc.strerror or exc}") from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(src: str, mode: int) -> LocalFileError:
    return LocalFileError(
        f"{src}: {_kind(mode)}, not a regular file",
        hint="fastxfer uploads regular files; write the stream to a file first",
    )


async def _plan_upload(
    tm: TransferManager, src: str, dst: str, *, recursive: bool
) -> tuple[list[CopyJob], list[Skipped]]:
    url = parse_s3_url(dst)
    st = _stat_source(src)
    if stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise UsageError(f"{src} is a directory", hint="use --recursive (-r)")
        jobs, skipped = _walk_tree(src, url.bucket, _as_prefix(url.key))
    else:
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(src, st.st_mode)
        if not os.access(src, os.R_OK):
            raise LocalFileError(f"{src}: permission denied")
        base = url.key if url.is_prefix else url.key[: url.key.rfind("/") + 1]
        key = url.key + os.path.basename(src) if url.is_prefix else url.key
        problem = key_problem(key)
        if problem is not None:
            if url.is_prefix and "UTF-8" in problem:
                raise LocalFileError(
                    f"{printable(src)}: {problem}",
                    hint=f"rename it, or give the key: fastxfer cp FILE s3://{url.bucket}/KEY",
                )
            raise UsageError(f"s3://{url.bucket}/{printable(key, 60)}: {problem}")
        jobs, skipped = [CopyJob("upload", src, url.bucket, key, st.st_size, base)], []
    # Fail fast, before any data moves, on a wrong bucket, endpoint or secret.
    # Credentials may lack the permission to check a bucket and still be allowed
    # to write.
    try:
        await tm.bucket_exists(url.bucket)
    except AccessDenied as exc:
        await _raise_if_bad_credentials(tm, exc)
    return jobs, skipped


def _walk_tree(src: str, bucket: str, base: str) -> tuple[list[CopyJob], list[Skipped]]:
    """Upload jobs for the regular files under ``src``; the rest is reported, not dropped.

    Not copied (each one reported): FIFOs, sockets and devices, broken links,
    unreadable directories, links to directories (not followed: no loops, no
    escaping the tree), and names that cannot be S3 keys (not UTF-8, too long).
    """
    jobs: list[CopyJob] = []
    skipped: list[Skipped] = []

    def unreadable(exc: OSError) -> None:
        skipped.append(
            Skipped(str(exc.filename or src), f"cannot read the directory ({exc.strerror})")
        )

    for root, dirs, files in os.walk(src, onerror=unreadable):
        dirs.sort()
        for name in list(dirs):
            path = os.path.join(root, name)
            if os.path.islink(path):
                skipped.append(Skipped(path, "a link to a directory (not followed)"))
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                what = "a broken link" if os.path.islink(path) else str(exc.strerror)
                skipped.append(Skipped(path, what))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(Skipped(path, f"{_kind(st.st_mode)}, not a regular file"))
                continue
            key = base + os.path.relpath(path, src).replace(os.sep, "/")
            problem = key_problem(key)
            if problem is not None:
                skipped.append(Skipped(path, problem))
                continue
            jobs.append(CopyJob("upload", path, bucket, key, st.st_size, base))
    return jobs, skipped


async def _plan_download(
    tm: TransferManager, src: str, dst: str, *, recursive: bool
) -> tuple[list[CopyJob], list[Skipped]]:
    url = parse_s3_url(src)
    if recursive:
        prefix = _as_prefix(url.key)
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise LocalFileError(f"{dst}: exists and is not a directory")
        check_writable_destination(dst)
        sizes: dict[str, int] = {}
        async for obj in tm.list_objects(url.bucket, prefix):
            if not is_folder_marker(obj.key, obj.size):
                sizes[obj.key] = obj.size
        mapped, unmapped = map_keys(dst, sizes, prefix)
        jobs = [CopyJob("download", path, url.bucket, key, sizes[key]) for key, path in mapped]
        skipped = [Skipped(f"s3://{url.bucket}/{u.key}", u.reason) for u in unmapped]
        return jobs, skipped
    if url.is_prefix:
        raise UsageError(f"{src} names a prefix, not an object", hint="use --recursive (-r)")
    problem = key_problem(url.key)
    if problem is not None:
        raise UsageError(f"s3://{url.bucket}/{printable(url.key, 60)}: {problem}")
    dest = dst
    if os.path.isdir(dst) or dst.endswith(os.sep):
        dest = local_path_for_key(dst, url.key.rsplit("/", 1)[-1])
    check_writable_destination(dest)
    info = await _head(tm, url.bucket, url.key)
    return [CopyJob("download", dest, url.bucket, url.key, info.size)], []


async def _head(tm: TransferManager, bucket: str, key: str) -> ObjectInfo:
    """HEAD, telling bad credentials from a denied object (see _raise_if_bad_credentials)."""
    try:
        return await tm.head(bucket, key)
    except AccessDenied as exc:
        await _raise_if_bad_credentials(tm, exc)
        raise


async def _raise_if_bad_credentials(tm: TransferManager, denied: AccessDenied) -> None:
    """Raise BadCredentials if a bare 403 was in fact a wrong key or secret.

    A HEAD answer has no body, so a wrong secret and a forbidden bucket or key
    are the same bare 403; ListBuckets answers with a body that names the
    reason (SignatureDoesNotMatch, InvalidAccessKeyId).  Returns when the 403
    is what it says (or cannot be told apart).
    """
    if denied.code not in (None, "", "403", "Forbidden"):
        return
    try:
        await tm.list_buckets()
    except BadCredentials as bad:
        raise bad from denied
    except S3Error:
        pass  # not allowed to list buckets either: the 403 stays what it was


# -- run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyOutcome:
    """What :func:`copy` did: each job's final stats or error, what it could not copy,
    and the wall time."""

    done: tuple[tuple[CopyJob, TransferStats], ...]
    failed: tuple[tuple[CopyJob, FastxferError], ...]
    skipped: tuple[Skipped, ...]
    seconds: float

    @property
    def files(self) -> int:
        return len(self.done) + len(self.failed)

    @property
    def bytes_moved(self) -> int:
        return sum(stats.bytes_done for _, stats in self.done)

    @property
    def ok(self) -> bool:
        """Everything asked for was copied."""
        return not self.failed and not self.skipped

    @property
    def exit_code(self) -> int:
        """0; the exit code of the first failure (1 when it has none of its own);
        1 when something could not be copied (an incomplete result is not a success)."""
        if self.failed:
            return self.failed[0][1].exit_code or EXIT_FAILED
        return EXIT_FAILED if self.skipped else 0


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

    Failed transfers are returned, not raised, and so is what could not be
    copied (each also reported on stderr as planning finds it); planning
    errors (bad URL, missing file or bucket) raise.  ``progress`` draws a bar
    on stderr.  ``rules`` see keys relative to the destination prefix.
    """
    started = time.monotonic()
    jobs, skipped = await plan_copy(tm, src, dst, recursive=recursive)
    for s in skipped:
        warn(f"not copied: {s}")
    total = sum(j.size for j in jobs)
    label = "upload" if jobs and jobs[0].direction == "upload" else "download"
    bar = _RichProgress(total, len(jobs), label) if progress else None
    subscribers: tuple[Subscriber, ...] = (bar,) if bar else ()
    with bar if bar else contextlib.nullcontext():
        started_jobs = [_begin(tm, j, rules, subscribers) for j in jobs]
        results = await asyncio.gather(*started_jobs, return_exceptions=True)
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


def _begin(
    tm: TransferManager,
    job: CopyJob,
    rules: Iterable[StorageClassRule],
    subscribers: tuple[Subscriber, ...],
) -> Awaitable[TransferStats]:
    """Start ``job``; a download whose directory cannot be made fails alone."""
    if job.direction == "upload":
        return tm.upload(
            job.local,
            job.bucket,
            job.key,
            subscribers=subscribers,
            storage_class=resolve_storage_class(job.key, rules, base=job.base),
        )
    try:
        _make_parent(job.local)
    except LocalFileError as exc:
        return _failed(exc)
    return tm.download(job.bucket, job.key, job.local, size_hint=job.size, subscribers=subscribers)


async def _failed(exc: FastxferError) -> TransferStats:
    raise exc


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise LocalFileError(
            f"{printable(path)}: a file is in the way of the directory {printable(parent)}"
        ) from None
    except OSError as exc:
        raise translate(exc) from None


def print_outcome(outcome: CopyOutcome, *, as_json: bool = False, quiet: bool = False) -> None:
    """Failures on stderr, then the JSON summary on stdout or one summary line on stderr.

    (What could not be copied was reported as planning found it; the JSON lists it.)
    A copy of one file that failed is one error line, like any other error.
    """
    if outcome.files == 1 and outcome.failed and not outcome.skipped and not as_json:
        warn(f"error: {outcome.failed[0][1]}")
        return
    for job, err in outcome.failed:
        warn(f"{job.direction} failed: {err}")
    rate = outcome.bytes_moved / outcome.seconds if outcome.seconds > 0 else 0.0
    if as_json:
        summary: dict[str, Any] = {
            "ok": outcome.ok,
            "files": outcome.files,
            "files_failed": len(outcome.failed),
            "files_skipped": len(outcome.skipped),
            "bytes": outcome.bytes_moved,
            "seconds": round(outcome.seconds, 4),
            "bytes_per_second": round(rate),
            "transfers": [_transfer_json(j, s) for j, s in outcome.done],
            "errors": [
                {"local": j.local, "url": j.url, "error": str(e)} for j, e in outcome.failed
            ],
            "skipped": [{"name": s.name, "reason": s.reason} for s in outcome.skipped],
        }
        print(json.dumps(summary, indent=2))
    elif not quiet:
        not_copied = f"; {len(outcome.skipped)} not copied" if outcome.skipped else ""
        print(
            f"{len(outcome.done)}/{outcome.files} files, {format_size(outcome.bytes_moved)} "
            f"in {outcome.seconds:.2f} s ({format_rate(rate)}){not_copied}",
            file=sys.stderr,
        )


def _transfer_json(job: CopyJob, r: TransferStats) -> dict[str, Any]:
    return {
        "local": job.local,
        "url": job.url,
        "bytes": r.bytes_done,
        "bytes_resumed": r.bytes_resumed,
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
