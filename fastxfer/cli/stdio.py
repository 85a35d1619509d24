"""``-`` as the source or the destination of ``fastxfer cp``: stdin to S3, S3 to stdout.

``tar c dir | fastxfer cp - s3://b/k`` reads stdin in a thread, a few chunks
ahead, as an async iterable of unknown size: the engine uploads it as a
multipart upload in bounded memory.  ``fastxfer cp s3://b/k - | tar x`` writes
the object to stdout in order, with concurrent ranged GETs behind it.  Nothing
but the data goes to stdout: the bar, the summary, errors and ``--json`` go to
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastxfer.cli.common import (
    EXIT_FAILED,
    config_from_args,
    filters_from_args,
    key_problem,
    object_options_from_args,
    run_async,
)
from fastxfer.cli.outcome import CopyJob, CopyOutcome, print_outcome, printable
from fastxfer.cli.progress import ProgressBar, wanted
from fastxfer.errors import FastxferError, UsageError, translate
from fastxfer.manager import TransferManager
from fastxfer.objectinfo import ObjectOptions
from fastxfer.progress import Subscriber
from fastxfer.s3url import is_s3_url, parse_s3_url
from fastxfer.storage_class import parse_rules, resolve_storage_class
from fastxfer.transfer import TransferStats

CHUNK = 1 << 20
"""Bytes read from stdin at a time."""
AHEAD = 4
"""Chunks the reader thread may read ahead of the upload."""


class ThreadReader:
    """An async iterable over the chunks of a blocking ``read(n)``, read in a thread.

    The thread reads at most ``ahead`` chunks before the consumer takes them
    (bounded memory).  It is a daemon thread: a read blocked on a silent pipe
    cannot keep the process alive after a Ctrl-C.  A read error is raised in
    the consumer, translated.
    """

    def __init__(
        self, read: Callable[[int], bytes], chunk: int = CHUNK, ahead: int = AHEAD
    ) -> None:
        self._read = read
        self._chunk = chunk
        self._ahead = ahead

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        credits = threading.Semaphore(self._ahead)
        stop = threading.Event()

        def deliver(item: bytes | Exception) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is reading
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                while True:
                    credits.acquire()
                    if stop.is_set():
                        return
                    data = self._read(self._chunk)
                    deliver(data)
                    if not data:
                        return
            except Exception as exc:
                deliver(exc)

        threading.Thread(target=work, name="fastxfer-stdin", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise translate(item) from item
                if not item:
                    return
                credits.release()
                yield item
        finally:
            stop.set()
            credits.release()  # a thread waiting for a credit sees `stop` and ends


def run(args: argparse.Namespace) -> int:
    """``fastxfer cp`` with ``-`` as SRC or DST."""
    if args.src == "-" and args.dst == "-":
        raise UsageError("'-' can be SRC (stdin) or DST (stdout), not both")
    if args.recursive:
        raise UsageError("'-' is one stream, not a tree", hint="leave out --recursive (-r)")
    if filters_from_args(args):
        raise UsageError("--include/--exclude select files of a tree, not of a stream")
    if args.src == "-":
        return _run_upload(args)
    return _run_download(args)


def _s3_object(url_text: str, role: str) -> tuple[str, str]:
    if not is_s3_url(url_text):
        raise UsageError(
            f"with '-' as {'SRC' if role == 'DST' else 'DST'}, {role} must be an s3:// URL",
            hint="fastxfer cp - s3://bucket/key  or  fastxfer cp s3://bucket/key -",
        )
    url = parse_s3_url(url_text)
    if url.is_prefix:
        raise UsageError(
            f"{url_text} names a prefix; a stream is one object",
            hint=f"give its key: s3://{url.bucket}/{url.key or ''}NAME",
        )
    problem = key_problem(url.key)
    if problem is not None:
        raise UsageError(f"s3://{url.bucket}/{printable(url.key, 60)}: {problem}")
    return url.bucket, url.key


def _run_upload(args: argparse.Namespace) -> int:
    bucket, key = _s3_object(args.dst, "DST")
    cfg = config_from_args(args)
    rules = parse_rules(args.storage_class_rule)
    opts = object_options_from_args(args)
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(
            "stdin is a terminal", hint="pipe the data in: tar c DIR | fastxfer cp - URL"
        )
    storage_class = resolve_storage_class(key, rules, base=key[: key.rfind("/") + 1])
    stdin = sys.stdin.buffer
    progress = wanted(args)

    async def go() -> int:
        async with TransferManager(cfg) as tm:
            outcome = await _transfer(
                CopyJob("upload", "-", bucket, key, 0),
                progress,
                lambda subs: tm.upload(
                    ThreadReader(stdin.read),
                    bucket,
                    key,
                    storage_class=storage_class,
                    metadata=opts.metadata,
                    content_type=opts.content_type_for(key),
                    sse=opts.sse,
                    sse_kms_key_id=opts.sse_kms_key_id,
                    subscribers=subs,
                ),
            )
        print_outcome(outcome, as_json=args.json, quiet=args.quiet)
        return outcome.exit_code

    return run_async(go())


def _run_download(args: argparse.Namespace) -> int:
    bucket, key = _s3_object(args.src, "SRC")
    opts: ObjectOptions = object_options_from_args(args)
    if opts.given:
        raise UsageError(f"{', '.join(opts.given)}: uploads only; this is a download")
    cfg = config_from_args(args)
    out = sys.stdout.buffer
    progress = wanted(args)

    async def go() -> int:
        async with TransferManager(cfg) as tm:
            outcome = await _transfer(
                CopyJob("download", "-", bucket, key, 0),
                progress,
                lambda subs: tm.stream(bucket, key, out.write, subscribers=subs),
            )
        await asyncio.get_running_loop().run_in_executor(None, out.flush)
        if outcome.failed and _closed_pipe(outcome.failed[0][1]):
            # The reader went away (`| head -c 100`): stop quietly, as `cat` does.
            _silence_stdout()
            return EXIT_FAILED
        print_outcome(outcome, as_json=args.json, quiet=args.quiet, json_file=sys.stderr)
        return outcome.exit_code

    try:
        return run_async(go())
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED


async def _transfer(
    job: CopyJob,
    progress: bool,
    start: Callable[[tuple[Subscriber, ...]], Awaitable[TransferStats]],
) -> CopyOutcome:
    """Run the one transfer ``start`` begins, with a bar; its outcome (failures returned)."""
    started = time.monotonic()
    bar = ProgressBar(job.direction, None, 1, size_from_events=True) if progress else None
    subs: tuple[Subscriber, ...] = (bar,) if bar else ()
    with bar if bar else contextlib.nullcontext():
        try:
            stats = await start(subs)
        except FastxferError as exc:
            return CopyOutcome((), ((job, exc),), (), time.monotonic() - started)
        done = CopyJob(job.direction, job.local, job.bucket, job.key, stats.bytes_done)
        outcome = CopyOutcome(((done, stats),), (), (), time.monotonic() - started)
        if bar is not None:
            bar.finish(outcome.bytes_moved, outcome.seconds)
    return outcome


def _closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a write to a pipe whose reader is gone (EPIPE)."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.EPIPE:
            return True
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
