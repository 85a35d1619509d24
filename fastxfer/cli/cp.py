"""``fastxfer cp``: a file or a tree to or from S3.

:func:`copy` is what the command and the demo both run: plan the jobs, start
them all on one TransferManager (its budgets bound what runs at once), wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Iterable, Sequence

from fastxfer.cli.common import (
    EXIT_CODES_HELP,
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
    key_problem,
    object_options_from_args,
    run_async,
    warn,
)
from fastxfer.cli.outcome import (
    CopyJob,
    CopyOutcome,
    Skipped,
    print_outcome,
    printable,
)
from fastxfer.cli.progress import ProgressBar, wanted
from fastxfer.errors import (
    AccessDenied,
    BadCredentials,
    FastxferError,
    LocalFileError,
    S3Error,
    UsageError,
    translate,
)
from fastxfer.filters import Filters
from fastxfer.localpath import (
    check_writable_destination,
    is_folder_marker,
    local_path_for_key,
    map_keys,
)
from fastxfer.manager import ObjectInfo, TransferManager
from fastxfer.objectinfo import ObjectOptions
from fastxfer.progress import Subscriber
from fastxfer.s3url import is_s3_url, parse_s3_url
from fastxfer.storage_class import StorageClassRule, parse_rules, resolve_storage_class
from fastxfer.transfer import TransferStats


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "cp",
        _cmd_cp,
        help="copy files to, from or between S3 locations",
        description="Copy a file or (with -r) a directory tree between the local disk and S3, "
        "or between two S3 locations (a server-side copy: no data passes through this "
        "machine). With -r the contents of SRC go under DST, as with `aws s3 cp "
        "--recursive`. '-' as SRC uploads stdin (`tar c dir | fastxfer cp - s3://b/k`), as "
        "DST writes the object to stdout (`fastxfer cp s3://b/k - | tar x`). What cannot "
        "be copied (a FIFO or device, a name that cannot be an S3 key, a key that cannot "
        "be a safe local file name, keys that would land on one file) is reported one "
        "line each, the rest is copied, and the exit status is 1.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("src", help="a file, a directory (-r), s3://bucket/key[/], or - for stdin")
    p.add_argument("dst", help="a file or directory, s3://bucket/key[/], or - for stdout")
    p.add_argument("-r", "--recursive", action="store_true", help="copy a directory tree")
    add_filter_options(p)
    add_object_options(p)
    add_connection_options(p)
    add_transfer_options(p)
    add_output_options(p, progress=True)


# -- plan ------------------------------------------------------------------------------


def _as_prefix(key: str) -> str:
    return key if (key == "" or key.endswith("/")) else key + "/"


async def plan_copy(
    tm: TransferManager,
    src: str,
    dst: str,
    *,
    recursive: bool,
    filters: Filters | None = None,
) -> tuple[list[CopyJob], list[Skipped]]:
    """The transfers ``cp SRC DST`` makes, and what it cannot copy (reported, exit 1).

    Everything local is checked before the first request: the source exists
    and is a regular file or a directory (never opened here, so a FIFO cannot
    block), keys are valid S3 keys, the destination directory is writable.
    ``filters`` (only with ``recursive``) see paths relative to SRC.
    """
    flt = filters or Filters()
    if flt and not recursive:
        raise UsageError(
            "--include/--exclude select files of a tree", hint="use them with --recursive (-r)"
        )
    if not is_s3_url(src) and not is_s3_url(dst):
        raise UsageError("one of SRC and DST must be an s3:// URL")
    if is_s3_url(src) and is_s3_url(dst):
        return await _plan_server_copy(tm, src, dst, recursive=recursive, filters=flt)
    if is_s3_url(dst):
        return await _plan_upload(tm, src, dst, recursive=recursive, filters=flt)
    return await _plan_download(tm, src, dst, recursive=recursive, filters=flt)


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
    tm: TransferManager, src: str, dst: str, *, recursive: bool, filters: Filters
) -> tuple[list[CopyJob], list[Skipped]]:
    url = parse_s3_url(dst)
    st = _stat_source(src)
    if stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise UsageError(f"{src} is a directory", hint="use --recursive (-r)")
        jobs, skipped = _walk_tree(src, url.bucket, _as_prefix(url.key), filters)
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


def _walk_tree(
    src: str, bucket: str, base: str, filters: Filters
) -> tuple[list[CopyJob], list[Skipped]]:
    """Upload jobs for the regular files under ``src``; the rest is reported, not dropped.

    Not copied (each one reported): FIFOs, sockets and devices, broken links,
    unreadable directories, links to directories (not followed: no loops, no
    escaping the tree), and names that cannot be S3 keys (not UTF-8, too long).
    What ``filters`` exclude is left out silently (that was asked for).
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
            if os.path.islink(path) and filters.included(_rel(path, src)):
                skipped.append(Skipped(path, "a link to a directory (not followed)"))
        for name in sorted(files):
            path = os.path.join(root, name)
            if filters and not filters.included(_rel(path, src)):
                continue
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


def _rel(path: str, root: str) -> str:
    """``path`` relative to ``root``, with ``/``: what filters see."""
    return os.path.relpath(path, root).replace(os.sep, "/")


async def _list_tree(
    tm: TransferManager, bucket: str, prefix: str, filters: Filters
) -> dict[str, int]:
    """Key -> size of the objects under ``prefix`` that ``filters`` include (no folder markers)."""
    sizes: dict[str, int] = {}
    for obj in sorted(await tm.list_tree(bucket, prefix), key=lambda o: o.key):
        if is_folder_marker(obj.key, obj.size):
            continue
        if filters and not filters.included(obj.key[len(prefix) :]):
            continue
        sizes[obj.key] = obj.size
    return sizes


async def _plan_download(
    tm: TransferManager, src: str, dst: str, *, recursive: bool, filters: Filters
) -> tuple[list[CopyJob], list[Skipped]]:
    url = parse_s3_url(src)
    if recursive:
        prefix = _as_prefix(url.key)
        if os.path.exists(dst) and not os.path.isdir(dst):
            raise LocalFileError(f"{dst}: exists and is not a directory")
        check_writable_destination(dst)
        sizes = await _list_tree(tm, url.bucket, prefix, filters)
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
    info = await head_checked(tm, url.bucket, url.key)
    return [CopyJob("download", dest, url.bucket, url.key, info.size)], []


async def _plan_server_copy(
    tm: TransferManager, src: str, dst: str, *, recursive: bool, filters: Filters
) -> tuple[list[CopyJob], list[Skipped]]:
    """Server-side copies (CopyObject / UploadPartCopy): no data through this machine."""
    s_url, d_url = parse_s3_url(src), parse_s3_url(dst)
    if recursive:
        prefix, base = _as_prefix(s_url.key), _as_prefix(d_url.key)
        if (s_url.bucket, prefix) == (d_url.bucket, base):
            raise UsageError("SRC and DST are the same prefix")
        sizes = await _list_tree(tm, s_url.bucket, prefix, filters)
        if sizes:
            await _check_bucket(tm, d_url.bucket)
        jobs, skipped = [], []
        for key, size in sizes.items():
            new = base + key[len(prefix) :]
            problem = key_problem(new)
            if problem is not None:
                skipped.append(Skipped(f"s3://{s_url.bucket}/{key}", problem))
                continue
            jobs.append(CopyJob("copy", src, d_url.bucket, new, size, base, s_url.bucket, key))
        return jobs, skipped
    if s_url.is_prefix:
        raise UsageError(f"{src} names a prefix, not an object", hint="use --recursive (-r)")
    name = s_url.key.rsplit("/", 1)[-1]
    key = d_url.key + name if d_url.is_prefix else d_url.key
    if (s_url.bucket, s_url.key) == (d_url.bucket, key):
        raise UsageError("SRC and DST are the same object")
    problem = key_problem(key)
    if problem is not None:
        raise UsageError(f"s3://{d_url.bucket}/{printable(key, 60)}: {problem}")
    info = await head_checked(tm, s_url.bucket, s_url.key)
    await _check_bucket(tm, d_url.bucket)
    base = d_url.key if d_url.is_prefix else d_url.key[: d_url.key.rfind("/") + 1]
    return [CopyJob("copy", src, d_url.bucket, key, info.size, base, s_url.bucket, s_url.key)], []


async def _check_bucket(tm: TransferManager, bucket: str) -> None:
    """Fail fast on a wrong bucket or secret (a denied HEAD bucket may still allow writes)."""
    try:
        await tm.bucket_exists(bucket)
    except AccessDenied as exc:
        await _raise_if_bad_credentials(tm, exc)


async def head_checked(tm: TransferManager, bucket: str, key: str) -> ObjectInfo:
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


async def copy(
    tm: TransferManager,
    src: str,
    dst: str,
    *,
    recursive: bool = False,
    rules: Sequence[StorageClassRule] = (),
    progress: bool = False,
    filters: Filters | None = None,
    options: ObjectOptions | None = None,
) -> CopyOutcome:
    """Copy ``src`` to ``dst`` (one of them an ``s3://`` URL, or both: a server-side
    copy) on ``tm``.

    Failed transfers are returned, not raised, and so is what could not be
    copied (each also reported on stderr as planning finds it); planning
    errors (bad URL, missing file or bucket) raise.  ``progress`` draws a bar
    on stderr.  ``rules`` see keys relative to the destination prefix;
    ``filters`` paths relative to SRC (with ``recursive``); ``options`` apply
    to uploads (``metadata`` to server-side copies too).
    """
    started = time.monotonic()
    opts = options or ObjectOptions()
    jobs, skipped = await plan_copy(tm, src, dst, recursive=recursive, filters=filters)
    _check_options(jobs, opts)
    for s in skipped:
        warn(f"not copied: {s}")
    total = sum(j.size for j in jobs)
    label = jobs[0].direction if jobs else "copy"
    bar = (
        ProgressBar(
            label,
            total,
            len(jobs),
            connections=tm.connection_limit,
            ranges=tm.range_limit if label == "download" else None,
        )
        if progress
        else None
    )
    subscribers: tuple[Subscriber, ...] = (bar,) if bar else ()
    with bar if bar else contextlib.nullcontext():
        started_jobs = [_begin(tm, j, rules, subscribers, opts) for j in jobs]
        results = await asyncio.gather(*started_jobs, return_exceptions=True)
        seconds = time.monotonic() - started
        done: list[tuple[CopyJob, TransferStats]] = []
        failed: list[tuple[CopyJob, FastxferError]] = []
        for j, r in zip(jobs, results, strict=True):
            if isinstance(r, TransferStats):
                done.append((j, r))
            elif isinstance(r, Exception):
                failed.append((j, translate(r)))
            else:  # CancelledError, KeyboardInterrupt: never swallowed
                raise r
        outcome = CopyOutcome(tuple(done), tuple(failed), tuple(skipped), seconds)
        if bar is not None:
            bar.finish(outcome.bytes_moved, outcome.seconds)
    return outcome


def _check_options(jobs: Sequence[CopyJob], opts: ObjectOptions) -> None:
    """Refuse, before any data moves, object settings that would not apply."""
    if jobs:
        opts.check_applies(jobs[0].direction)


def _begin(
    tm: TransferManager,
    job: CopyJob,
    rules: Iterable[StorageClassRule],
    subscribers: tuple[Subscriber, ...],
    opts: ObjectOptions,
) -> Awaitable[TransferStats]:
    """Start ``job``; a download whose directory cannot be made fails alone."""
    if job.direction == "upload":
        return tm.upload(
            job.local,
            job.bucket,
            job.key,
            subscribers=subscribers,
            storage_class=resolve_storage_class(job.key, rules, base=job.base),
            metadata=opts.metadata,
            content_type=opts.content_type_for(job.local),
            sse=opts.sse,
            sse_kms_key_id=opts.sse_kms_key_id,
        )
    if job.direction == "copy":
        return tm.copy(
            job.src_bucket,
            job.src_key,
            job.bucket,
            job.key,
            storage_class=resolve_storage_class(job.key, rules, base=job.base),
            metadata=opts.metadata,
            subscribers=subscribers,
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


def _cmd_cp(args: argparse.Namespace) -> int:
    if "-" in (args.src, args.dst):
        from fastxfer.cli import stdio

        return stdio.run(args)
    cfg = config_from_args(args)
    rules = parse_rules(args.storage_class_rule)  # bad rules fail before any request
    filters = filters_from_args(args)
    options = object_options_from_args(args)
    progress = wanted(args)

    async def run() -> int:
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
        print_outcome(outcome, as_json=args.json, quiet=args.quiet)
        return outcome.exit_code

    return run_async(run())
