"""TransferManager: the facade over the session and the operations.

It owns a :class:`~fastxfer.session.Session` (the client, the budgets, the one
request path) and starts operations (:mod:`fastxfer.upload`,
:mod:`fastxfer.download`, :mod:`fastxfer.restore`) as tasks with handles.
Operations never import this module: imports point down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from fastxfer.clock import Clock, SystemClock
from fastxfer.config import TransferConfig, validate_storage_class
from fastxfer.copy import CopyJob, run_copy
from fastxfer.download import run_download
from fastxfer.errors import FastxferError, InvalidConfig, S3Error, translate
from fastxfer.objectinfo import ObjectInfo
from fastxfer.pacing import PacerStats
from fastxfer.progress import Subscriber
from fastxfer.session import DeleteFailure, Session
from fastxfer.sources import UploadSource
from fastxfer.stream import Writer, run_stream
from fastxfer.transfer import TransferHandle, TransferStats, _Tracker
from fastxfer.tuning import TunerStats
from fastxfer.upload import UploadJob, run_upload

if TYPE_CHECKING:
    from fastxfer.restore import PriceTable, RestoreJob, RestoreOptions

__all__ = ["AbortPlan", "ManagerStats", "ObjectInfo", "TransferManager", "UploadSource"]


@dataclass(slots=True)
class AbortPlan:
    """Incomplete multipart uploads to abort, and those spared with why
    (``"younger"`` than the age limit, or ``"resumable"`` from this machine's journal)."""

    abort: list[dict[str, Any]] = field(default_factory=list)
    spared: list[tuple[dict[str, Any], str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ManagerStats:
    connections_limit: int
    connections_in_use: int
    connections_waiting: int
    connections_peak: int
    memory_limit: int
    memory_in_use: int
    memory_peak: int
    transfers_active: int
    pacer: PacerStats
    tuner: TunerStats | None = None
    """The concurrency tuner's state (None: ``autotune`` off, the count is pinned)."""


MAX_FANOUT = 1000
"""Most sub-prefixes :meth:`TransferManager.list_tree` cuts into ranges; a wider tree is
listed flat, page by page."""

RANGES = 8
"""Key ranges :meth:`TransferManager.list_tree` lists side by side."""


class TransferManager:
    """Runs uploads and downloads concurrently under one set of budgets.

    Use it as an async context manager; leaving the block waits for every
    transfer started in it (or cancels them if the block raised)::

        async with TransferManager(TransferConfig(endpoint_url=url)) as tm:
            up = tm.upload("backup.tar", "bucket", "backups/backup.tar")
            down = tm.download("bucket", "backups/old.tar", "old.tar")
            print((await up).throughput, (await down).bytes_done)
    """

    def __init__(
        self,
        config: TransferConfig | None = None,
        *,
        subscribers: Iterable[Subscriber] = (),
        clock: Clock | None = None,
    ) -> None:
        self.config = config or TransferConfig()
        self.clock: Clock = clock or SystemClock()
        self._subscribers = tuple(subscribers)
        self._session: Session | None = None
        self._active: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[TransferStats]] = set()
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        session = Session(self.config, self.clock)
        await session.__aenter__()
        self._session = session
        self._active = asyncio.Semaphore(self.config.active_transfers)
        # Transfers queued behind the active ones are demand the tuner must see too.
        session.queued_transfers = lambda: max(0, len(self._tasks) - self.config.active_transfers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None:
                for t in self._tasks:
                    t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            if self._session is not None:
                session, self._session = self._session, None
                await session.__aexit__(exc_type, exc, tb)

    @property
    def session(self) -> Session:
        """The session every operation of this manager runs on."""
        if self._session is None:
            raise RuntimeError("TransferManager used outside `async with`")
        return self._session

    def _start(
        self,
        tracker: _Tracker,
        body: Callable[[_Tracker], Awaitable[None]],
    ) -> TransferHandle:
        assert self._active is not None, "TransferManager used outside `async with`"
        active = self._active

        async def run() -> TransferStats:
            async with active:
                tracker.start()
                try:
                    await body(tracker)
                except asyncio.CancelledError:
                    tracker.finish("cancelled", "cancelled")
                    raise
                except FastxferError as exc:
                    tracker.finish("failed", str(exc))
                    raise
                except Exception as exc:
                    err = translate(
                        exc, bucket=tracker.bucket, key=tracker.key, op=tracker.direction
                    )
                    tracker.finish("failed", str(err))
                    raise err from exc
                return tracker.finish("done")

        task = asyncio.get_running_loop().create_task(run(), name=f"fastxfer-{tracker.transfer_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        tracker.queued()
        return TransferHandle(task, tracker)

    # -- public API -------------------------------------------------------

    def upload(
        self,
        source: UploadSource,
        bucket: str,
        key: str,
        *,
        size: int | None = None,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferHandle:
        """Upload a file path, bytes, or an async iterable of bytes to ``s3://bucket/key``.

        Below ``multipart_threshold`` one PutObject is sent; above it parts of
        ``part_size`` (fitted to 10,000 parts) go concurrently.  ``size`` is a
        hint for async iterables (None: read until exhausted).
        ``storage_class`` overrides the config's.  ``sse``: ``"AES256"`` or
        ``"aws:kms"`` (with ``sse_kms_key_id``, else the account's default key).
        """
        if sse is not None and sse not in ("AES256", "aws:kms"):
            raise InvalidConfig(
                f"invalid server-side encryption {sse!r}", hint="use AES256 or aws:kms"
            )
        if sse_kms_key_id and sse != "aws:kms":
            raise InvalidConfig("an SSE KMS key id needs sse='aws:kms'", hint="--sse aws:kms")
        sc = validate_storage_class(storage_class) if storage_class else self.config.storage_class
        local = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        known_size = size
        if isinstance(source, bytes | bytearray | memoryview):
            known_size = len(source)
        tracker = _Tracker(
            next(self._ids),
            "upload",
            bucket,
            key,
            local,
            known_size,
            self._subscribers_for(subscribers),
            storage_class=sc,
        )
        job = UploadJob(
            source=source,
            bucket=bucket,
            key=key,
            size=size,
            storage_class=sc,
            metadata=dict(metadata or {}),
            content_type=content_type,
            sse=sse,
            sse_kms_key_id=sse_kms_key_id,
        )
        session = self.session
        return self._start(tracker, lambda t: run_upload(session, job, t))

    def download(
        self,
        bucket: str,
        key: str,
        dest: str | os.PathLike[str],
        *,
        size_hint: int | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferHandle:
        """Download ``s3://bucket/key`` to ``dest`` (a file path).

        Ranged GETs run concurrently into a temporary file next to ``dest``,
        which is verified and then renamed into place: ``dest`` never holds a
        partial file.  Raises ColdObject for an archived object without a
        restored copy.  ``size_hint`` (bytes, e.g. from a LIST) lets a small
        object come in one GET without a HEAD first.
        """
        tracker = _Tracker(
            next(self._ids),
            "download",
            bucket,
            key,
            os.fspath(dest),
            None,
            self._subscribers_for(subscribers),
        )
        session = self.session
        return self._start(
            tracker, lambda t: run_download(session, bucket, key, os.fspath(dest), t, size_hint)
        )

    def stream(
        self,
        bucket: str,
        key: str,
        write: Writer,
        *,
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferHandle:
        """Write ``s3://bucket/key`` to ``write`` (a blocking callable taking a chunk,
        e.g. ``sys.stdout.buffer.write``) in order, with concurrent ranged GETs
        behind it in bounded memory (``memory_limit``).

        The CRC64NVME of the bytes written is checked at the end; on a mismatch
        IntegrityError is raised after the data went out, so discard it.
        """
        tracker = _Tracker(
            next(self._ids),
            "download",
            bucket,
            key,
            None,
            None,
            self._subscribers_for(subscribers),
        )
        session = self.session
        return self._start(tracker, lambda t: run_stream(session, bucket, key, write, t))

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        bucket: str,
        key: str,
        *,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferHandle:
        """Server-side copy of ``s3://src_bucket/src_key`` to ``s3://bucket/key``.

        No data passes through this process: one CopyObject up to
        ``copy_threshold`` (5 GiB), concurrent UploadPartCopy above, under the
        same connection budget.  Metadata (and fastxfer's CRC64NVME) is kept;
        ``metadata`` adds keys.  ``storage_class`` None keeps the source's; a
        copy onto itself with another class moves an object to it (archiving).
        """
        sc = validate_storage_class(storage_class) if storage_class else None
        tracker = _Tracker(
            next(self._ids),
            "copy",
            bucket,
            key,
            f"s3://{src_bucket}/{src_key}",
            None,
            self._subscribers_for(subscribers),
            storage_class=sc,
        )
        job = CopyJob(src_bucket, src_key, bucket, key, sc, dict(metadata or {}))
        session = self.session
        return self._start(tracker, lambda t: run_copy(session, job, t))

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """HEAD an object (with its checksum, storage class and restore state)."""
        return await self.session.head(bucket, key)

    def connection_limit(self) -> int:
        """Requests allowed in flight right now: the tuned count, or less after SlowDown."""
        return self.session.connections.limit

    def range_limit(self) -> int | None:
        """Ranged GETs of large downloads allowed in flight right now, when fewer
        than :meth:`connection_limit` (a near server's cap, raised while the event
        loop has room); None when no such cap applies."""
        streams = self.session.streams
        if streams is None or streams.limit >= self.session.connections.limit:
            return None
        return streams.limit

    def _subscribers_for(self, extra: Iterable[Subscriber]) -> tuple[Subscriber, ...]:
        """The manager's subscribers, a transfer's own, and the concurrency tuner (it
        measures goodput from the same progress events)."""
        tuner = self.session.tuner
        return self._subscribers + tuple(extra) + ((tuner,) if tuner is not None else ())

    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
    ) -> AsyncGenerator[ObjectInfo, None]:
        """Every object under ``prefix``, page by page (1,000 keys a request), in key
        order; from the first key after ``start_after`` if given.

        With ``delimiter`` (``"/"``), the common prefixes are yielded too, as
        ObjectInfo with ``is_prefix=True``.
        """
        return self.session.list_objects(
            bucket, prefix, delimiter=delimiter, start_after=start_after
        )

    async def list_tree(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix``, its key space listed in ranges side by side.

        A listing is a chain of pages (each needs the previous one's token), so a
        flat listing of 10,000 keys is 10 requests one after the other.  One
        delimited LIST finds the objects right under ``prefix`` and its
        sub-prefixes ("directories"); the sub-prefixes, in key order, are cut into
        up to :data:`RANGES` runs, and each run is listed flat from its first
        sub-prefix (``StartAfter``) until the next run begins.  The chains run
        side by side under the connection budget and make about as many requests
        as the flat listing (not one per directory); the union is exactly the flat
        listing.
        """
        top: list[ObjectInfo] = []
        subs: list[str] = []
        async for o in self.list_objects(bucket, prefix, delimiter="/"):
            if o.is_prefix:
                subs.append(o.key)
                if len(subs) > MAX_FANOUT:
                    return [o async for o in self.list_objects(bucket, prefix)]
            else:
                top.append(o)
        if not subs:
            return top
        n = min(RANGES, len(subs))
        firsts = [subs[len(subs) * i // n] for i in range(n)]
        ends: list[str | None] = [*firsts[1:], None]

        async def run(first: str, end: str | None) -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            # StartAfter "p/d001" (the sub-prefix less its "/") is just before "p/d001/...".
            listing = self.list_objects(bucket, prefix, start_after=first[:-1])
            async with contextlib.aclosing(listing):
                async for o in listing:
                    if end is not None and o.key >= end:
                        break
                    # Between sub-prefixes may lie objects right under ``prefix`` (in ``top``).
                    if o.key >= first and "/" in o.key[len(prefix) :]:
                        out.append(o)
            return out

        async with asyncio.TaskGroup() as tg:
            parts = [tg.create_task(run(f, e)) for f, e in zip(firsts, ends, strict=True)]
        return top + [o for t in parts for o in t.result()]

    async def list_buckets(self) -> list[str]:
        """Names of the buckets the credentials can see."""
        return await self.session.list_buckets()

    async def delete_objects(self, bucket: str, keys: Iterable[str]) -> list[DeleteFailure]:
        """Delete ``keys`` (DeleteObjects, 1,000 a request); missing keys are not errors.

        Returns the keys the server refused to delete, with its reason.
        """
        return await self.session.delete_objects(bucket, keys)

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """Incomplete multipart uploads (they cost storage until aborted)."""
        return await self.session.list_multipart_uploads(bucket, prefix)

    async def plan_abort(
        self,
        bucket: str,
        prefix: str = "",
        *,
        older_than: float = 0.0,
        include_resumable: bool = False,
    ) -> AbortPlan:
        """Which incomplete multipart uploads under ``prefix`` to abort, and which to spare.

        Spared: uploads started less than ``older_than`` seconds ago (another
        process's running upload), and unless ``include_resumable``, uploads
        this machine's journal can resume (the same upload run again sends
        only the missing parts).
        """
        now = datetime.now(UTC)
        journal = self.session.journal
        resumable = journal.upload_ids(bucket, prefix) if journal is not None else set()
        plan = AbortPlan()
        for u in await self.list_multipart_uploads(bucket, prefix):
            started = u.get("Initiated")
            age = (now - started).total_seconds() if isinstance(started, datetime) else None
            if older_than and age is not None and age < older_than:
                plan.spared.append((u, "younger"))
            elif u.get("UploadId") in resumable and not include_resumable:
                plan.spared.append((u, "resumable"))
            else:
                plan.abort.append(u)
        return plan

    async def abort_incomplete_uploads(
        self,
        bucket: str,
        prefix: str = "",
        *,
        older_than: float = 0.0,
        include_resumable: bool = False,
    ) -> list[dict[str, Any]]:
        """Abort incomplete multipart uploads under ``prefix`` (see :meth:`plan_abort` for
        what is spared); returns the uploads aborted.  They are what a killed process
        leaves behind, billed as storage until aborted."""
        plan = await self.plan_abort(
            bucket, prefix, older_than=older_than, include_resumable=include_resumable
        )
        async with asyncio.TaskGroup() as tg:
            for u in plan.abort:
                tg.create_task(
                    self.session.request(
                        "abort_multipart_upload",
                        bucket=bucket,
                        key=u["Key"],
                        UploadId=u["UploadId"],
                        what="abort",
                    )
                )
        return plan.abort

    async def get_lifecycle(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules ([] when it has none)."""
        try:
            r = await self.session.request(
                "get_bucket_lifecycle_configuration", bucket=bucket, what="GET lifecycle"
            )
        except S3Error as exc:
            if exc.code == "NoSuchLifecycleConfiguration":
                return []
            raise
        return list(r.get("Rules", []) or [])

    async def put_lifecycle(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's lifecycle rules with ``rules`` (merge first: see
        :func:`fastxfer.archive.merge_rules`)."""
        await self.session.request(
            "put_bucket_lifecycle_configuration",
            bucket=bucket,
            what="PUT lifecycle",
            LifecycleConfiguration={"Rules": rules},
        )

    async def bucket_exists(self, bucket: str) -> None:
        """Raise NoSuchBucket / AccessDenied / BadCredentials unless the bucket is usable."""
        await self.session.request("head_bucket", bucket=bucket, what="HEAD bucket")

    def restore_job(
        self, options: RestoreOptions, *, prices: PriceTable | None = None
    ) -> RestoreJob:
        """A batch restore from GLACIER / DEEP_ARCHIVE on this manager (see fastxfer.restore).

        Its downloads run as transfers of this manager, under its budgets.
        """
        from fastxfer.restore import RestoreJob

        def start_download(
            bucket: str, key: str, dest: str, size_hint: int | None
        ) -> TransferHandle:
            return self.download(bucket, key, dest, size_hint=size_hint)

        return RestoreJob(self.session, options, start_download=start_download, prices=prices)

    def stats(self) -> ManagerStats:
        session = self.session
        c = session.connections.stats()
        return ManagerStats(
            connections_limit=c.limit,
            connections_in_use=c.in_use,
            connections_waiting=c.waiting,
            connections_peak=c.peak,
            memory_limit=session.memory.limit,
            memory_in_use=session.memory.in_use,
            memory_peak=session.memory.peak,
            transfers_active=len(self._tasks),
            pacer=session.pacer.stats(),
            tuner=session.tuner.stats() if session.tuner is not None else None,
        )
