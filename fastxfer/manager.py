"""TransferManager: one client, one connection budget, one memory budget, many transfers."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from fastxfer.bandwidth import BandwidthLimiter
from fastxfer.budget import BufferPool, ConnectionBudget, MemoryBudget, Priority
from fastxfer.clock import Clock, SystemClock
from fastxfer.config import TransferConfig, validate_storage_class
from fastxfer.errors import (
    THROTTLE_CODES,
    FastxferError,
    S3Error,
    Throttled,
    TransferFailed,
    translate,
)
from fastxfer.pacing import Pacer, PacerStats
from fastxfer.progress import Subscriber
from fastxfer.storage_class import is_cold
from fastxfer.transfer import TransferHandle, TransferStats, _Tracker

UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncIterable[bytes]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What HEAD or LIST says about an object."""

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime | None
    storage_class: str
    metadata: Mapping[str, str]
    checksum_crc64nvme: str | None = None
    checksum_type: str | None = None
    restore: str | None = None
    """The raw x-amz-restore header (e.g. 'ongoing-request="false", expiry-date=...')."""

    @classmethod
    def from_response(cls, bucket: str, key: str, r: Mapping[str, Any]) -> ObjectInfo:
        """From a HeadObject or GetObject response (both carry the same headers)."""
        return cls(
            bucket=bucket,
            key=key,
            size=int(r.get("ContentLength", 0)),
            etag=str(r.get("ETag", "")),
            last_modified=r.get("LastModified"),
            storage_class=str(r.get("StorageClass") or "STANDARD"),
            metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
            checksum_crc64nvme=r.get("ChecksumCRC64NVME"),
            checksum_type=r.get("ChecksumType"),
            restore=r.get("Restore"),
        )

    @property
    def is_cold(self) -> bool:
        """Archived and without a readable restored copy."""
        return is_cold(self.storage_class, self.restore)


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


def _user_agent() -> str:
    import platform

    import aiobotocore
    import botocore

    from fastxfer import __version__

    return (
        f"fastxfer/{__version__} aiobotocore/{aiobotocore.__version__} "
        f"botocore/{botocore.__version__} Python/{platform.python_version()}"
    )


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (XML bodies) and RFC 7231 (headers) quickly; anything else via botocore."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
        try:
            return email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
    from botocore.utils import parse_timestamp as slow

    result: datetime = slow(value)
    return result


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
        self._subscribers = tuple(subscribers)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._memory: MemoryBudget | None = None
        self._buffers: BufferPool | None = None
        self._connections: ConnectionBudget | None = None
        self._active: asyncio.Semaphore | None = None
        self._uploads: ConnectionBudget | None = None
        self._pacer: Pacer | None = None
        self._bandwidth: BandwidthLimiter | None = None
        self.clock: Clock = clock or SystemClock()
        self._tasks: set[asyncio.Task[TransferStats]] = set()
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession

        cfg = self.config
        self._memory = MemoryBudget(cfg.memory_limit)
        self._buffers = BufferPool(self._memory)
        self._connections = ConnectionBudget(cfg.max_concurrency)
        self._active = asyncio.Semaphore(cfg.active_transfers)
        self._uploads = ConnectionBudget(cfg.active_transfers)
        self._pacer = Pacer(
            connections=self._connections,
            uploads=self._uploads,
            clock=self.clock,
            tps=cfg.tps,
            tps_burst=cfg.tps_burst,
            adaptive=cfg.adaptive,
        )
        session = AioSession(profile=cfg.profile) if cfg.profile else AioSession()
        if cfg.profile:
            try:
                session.get_scoped_config()
            except Exception as exc:
                raise translate(exc, op="load profile") from exc
        # botocore parses every timestamp with dateutil (~0.2 ms each; a LIST of
        # 1,000 keys spends 0.2 s on LastModified alone).  This session's own
        # parser factory gets a fast path for the two formats S3 sends.
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        region = cfg.region or session.get_config_variable("region") or "us-east-1"
        style = cfg.addressing_style or ("path" if cfg.endpoint_url else "auto")
        aio_config = AioConfig(
            max_pool_connections=cfg.max_concurrency,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            retries={"mode": "standard", "max_attempts": cfg.max_attempts},
            s3={"addressing_style": style, "payload_signing_enabled": False},
            # fastxfer computes and checks checksums itself (integrity.py);
            # botocore's automatic ones break ranged GETs on some servers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            tcp_keepalive=True,
            # A fixed User-Agent: botocore otherwise rebuilds and sanitises a
            # long one for every request (~0.7 ms of CPU each, measured).
            user_agent=_user_agent(),
        )
        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        try:
            self._client = await self._stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=cfg.endpoint_url,
                    region_name=region,
                    aws_access_key_id=cfg.aws_access_key_id,
                    aws_secret_access_key=cfg.aws_secret_access_key,
                    aws_session_token=cfg.aws_session_token,
                    verify=cfg.verify_tls,
                    config=aio_config,
                    **cfg.extra_client_kwargs,
                )
            )
            # First, so it can stop botocore's own retry loop (see below).
            self._client.meta.events.register_first("needs-retry.s3", self._on_needs_retry)
            if cfg.bandwidth_limited:
                limiter = BandwidthLimiter(cfg.bandwidth_settings(), self.clock)
                await self._stack.enter_async_context(limiter)
                self._bandwidth = limiter
        except BaseException as exc:
            await self._stack.aclose()
            if isinstance(exc, Exception):
                raise translate(exc, op="connect") from exc
            raise
        return self

    def _on_needs_retry(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        """botocore is about to retry: tell the pacer when it is because of throttling.

        A throttled CreateMultipartUpload is not left to botocore: its retry
        loop would sleep while holding a connection slot, and what the server
        limits there is the number of open uploads, not the request rate.
        Raising Throttled here ends botocore's loop; upload.py gives the
        open-upload slot back, shrinks that budget and waits its turn.
        """
        if not response or self._pacer is None:
            return
        http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code", "")
        status = getattr(http, "status_code", 0)
        if not (code in THROTTLE_CODES or status == 503):
            return
        retry_after: float | None = None
        raw = getattr(http, "headers", {}).get("retry-after")
        if raw:
            try:
                retry_after = float(raw)
            except ValueError:
                retry_after = None
        if getattr(operation, "name", "") == "CreateMultipartUpload":
            raise Throttled(
                "CreateMultipartUpload: the server limits open multipart uploads",
                code=code or str(status),
                retry_after=retry_after,
            )
        self._pacer.on_throttle(retry_after)

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
            if self._stack is not None:
                await self._stack.aclose()
                self._stack = None
            if self._buffers is not None:
                self._buffers.close()

    # -- internals used by upload.py / download.py ------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("TransferManager used outside `async with`")
        return self._client

    @property
    def memory(self) -> MemoryBudget:
        assert self._memory is not None, "TransferManager used outside `async with`"
        return self._memory

    @property
    def buffers(self) -> BufferPool:
        """Part buffers, reused by every transfer, bounded by the memory budget."""
        assert self._buffers is not None, "TransferManager used outside `async with`"
        return self._buffers

    @property
    def pacer(self) -> Pacer:
        assert self._pacer is not None, "TransferManager used outside `async with`"
        return self._pacer

    @property
    def uploads(self) -> ConnectionBudget:
        """Slots for open multipart uploads (lowered when the server throttles creation)."""
        assert self._uploads is not None, "TransferManager used outside `async with`"
        return self._uploads

    @property
    def bandwidth(self) -> BandwidthLimiter | None:
        return self._bandwidth

    @property
    def connections(self) -> ConnectionBudget:
        assert self._connections is not None, "TransferManager used outside `async with`"
        return self._connections

    async def request(
        self,
        op: str,
        *,
        bucket: str,
        key: str | None = None,
        priority: int = Priority.CONTROL,
        what: str | None = None,
        retry_throttled: bool = True,
        held_slot: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One non-streaming S3 call through the pacer and the connection budget.

        Errors are translated to the FastxferError family.  A request the
        server keeps throttling after botocore's own retries is retried again
        after the pacer's back-off, for up to ``throttle_timeout`` seconds.
        ``held_slot``: the caller already holds a connection slot for this request.
        """
        if key is not None:
            kwargs["Key"] = key
        pacer = self.pacer
        deadline = self.clock.monotonic() + self.config.throttle_timeout
        while True:
            await pacer.before_request()
            slot = contextlib.nullcontext() if held_slot else self.connections.slot(priority)
            async with slot:
                try:
                    result: dict[str, Any] = await getattr(self.client, op)(Bucket=bucket, **kwargs)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    err = translate(exc, bucket=bucket, key=key, op=what or op)
                    if not (
                        isinstance(err, Throttled)
                        and retry_throttled
                        and self.clock.monotonic() < deadline
                    ):
                        raise err from exc
                    pacer.on_throttle()
                    continue  # SlowDown is always safe to retry: nothing was done
            pacer.on_success()
            return result

    def _start(
        self,
        tracker: _Tracker,
        body: Any,
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
                tracker.finish("done")
                return tracker.snapshot()

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
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferHandle:
        """Upload a file path, bytes, or an async iterable of bytes to ``s3://bucket/key``.

        Below ``multipart_threshold`` one PutObject is sent; above it parts of
        ``part_size`` (fitted to 10,000 parts) go concurrently.  ``size`` is a
        hint for async iterables (None: read until exhausted).
        ``storage_class`` overrides the config's.
        """
        from fastxfer.upload import UploadJob, run_upload

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
            self._subscribers + tuple(subscribers),
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
        )
        return self._start(tracker, lambda t: run_upload(self, job, t))

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
        from fastxfer.download import run_download

        tracker = _Tracker(
            next(self._ids),
            "download",
            bucket,
            key,
            os.fspath(dest),
            None,
            self._subscribers + tuple(subscribers),
        )
        return self._start(
            tracker, lambda t: run_download(self, bucket, key, os.fspath(dest), t, size_hint)
        )

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """HEAD an object (with its checksum, storage class and restore state)."""
        r = await self.request(
            "head_object", bucket=bucket, key=key, ChecksumMode="ENABLED", what="HEAD"
        )
        return ObjectInfo.from_response(bucket, key, r)

    async def list_objects(self, bucket: str, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, page by page (1,000 keys a request)."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = await self.request("list_objects_v2", bucket=bucket, what="LIST", **kw)
            for o in r.get("Contents", []):
                yield ObjectInfo(
                    bucket=bucket,
                    key=o["Key"],
                    size=int(o.get("Size", 0)),
                    etag=str(o.get("ETag", "")),
                    last_modified=o.get("LastModified"),
                    storage_class=str(o.get("StorageClass") or "STANDARD"),
                    metadata={},
                )
            if not r.get("IsTruncated"):
                return
            token = r.get("NextContinuationToken")
            if not token:
                raise TransferFailed(f"LIST s3://{bucket}/{prefix}: truncated page without a token")

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """Incomplete multipart uploads (they cost storage until aborted)."""
        out: list[dict[str, Any]] = []
        kw: dict[str, Any] = {"Prefix": prefix}
        while True:
            try:
                r = await self.request(
                    "list_multipart_uploads", bucket=bucket, what="LIST uploads", **kw
                )
            except S3Error as exc:
                # rclone serve s3 with --multipart-max-uploads answers an empty
                # listing with NoSuchUpload instead of an empty list.
                if exc.code == "NoSuchUpload":
                    return out
                raise
            out.extend(r.get("Uploads", []))
            if not r.get("IsTruncated"):
                return out
            kw["KeyMarker"] = r.get("NextKeyMarker")
            kw["UploadIdMarker"] = r.get("NextUploadIdMarker")

    async def abort_incomplete_uploads(
        self, bucket: str, prefix: str = "", *, older_than: float = 0.0
    ) -> list[dict[str, Any]]:
        """Abort incomplete multipart uploads under ``prefix`` started more than
        ``older_than`` seconds ago (so another process's running upload is spared);
        returns the uploads aborted.  They are what a killed process leaves behind."""
        now = datetime.now(UTC)
        uploads = [
            u
            for u in await self.list_multipart_uploads(bucket, prefix)
            if not older_than
            or not isinstance(u.get("Initiated"), datetime)
            or (now - u["Initiated"]).total_seconds() >= older_than
        ]
        async with asyncio.TaskGroup() as tg:
            for u in uploads:
                tg.create_task(
                    self.request(
                        "abort_multipart_upload",
                        bucket=bucket,
                        key=u["Key"],
                        UploadId=u["UploadId"],
                        what="abort",
                    )
                )
        return uploads

    async def bucket_exists(self, bucket: str) -> None:
        """Raise NoSuchBucket / AccessDenied / BadCredentials unless the bucket is usable."""
        await self.request("head_bucket", bucket=bucket, what="HEAD bucket")

    def stats(self) -> ManagerStats:
        c = self.connections.stats()
        return ManagerStats(
            connections_limit=c.limit,
            connections_in_use=c.in_use,
            connections_waiting=c.waiting,
            connections_peak=c.peak,
            memory_limit=self.memory.limit,
            memory_in_use=self.memory.in_use,
            memory_peak=self.memory.peak,
            transfers_active=len(self._tasks),
            pacer=self.pacer.stats(),
        )
