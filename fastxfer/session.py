"""The session: one aiobotocore client, the budgets, and the ONE request path.

Every S3 call of every operation (upload, download, restore, the CLI through
the manager) goes through a :class:`Session`:

* :meth:`Session.request` for calls whose answer is read whole (HEAD, PUT,
  UploadPart, RestoreObject, LIST ...): pacer (rate cap, back-off), a slot of
  the connection budget, error translation to the FastxferError family,
  per-transfer request counts, and a retry after SlowDown on the injected clock;
* :meth:`Session.open_get` for streaming GETs: the same steps, with the slot
  held until the body has been read and closed;
* :meth:`Session.pages` the one paginator (ListObjectsV2, ListMultipartUploads,
  ListParts, ListObjectVersions), and :meth:`Session.list_objects` on top.

A module that calls the client directly, or pages a listing by hand, is a bug
(design.md, principle 10).  Operations take the session, never the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

from fastxfer import listing
from fastxfer.autotune import Tuning
from fastxfer.bandwidth import BandwidthLimiter
from fastxfer.budget import (
    AdjustableSemaphore,
    Buffer,
    BufferPool,
    ConnectionBudget,
    MemoryBudget,
    Priority,
)
from fastxfer.clock import Clock
from fastxfer.config import TransferConfig
from fastxfer.errors import (
    THROTTLE_CODES,
    FastxferError,
    S3Error,
    Throttled,
    TransferFailed,
    translate,
)
from fastxfer.journal import UploadJournal
from fastxfer.leanpath import LEAN_OPS, LeanPath
from fastxfer.limits import MAX_DELETE_BATCH
from fastxfer.objectinfo import ObjectInfo
from fastxfer.pacing import Pacer
from fastxfer.shielded import run_cleanup
from fastxfer.state import StateDB
from fastxfer.tuning import ConcurrencyTuner

log = logging.getLogger("fastxfer")

Counts = Counter[str]
"""Requests sent, by S3 operation name (``"get_object"``, ``"upload_part"`` ...)."""


@dataclass(frozen=True, slots=True)
class DeleteFailure:
    """A key DeleteObjects did not delete, with the server's code and message."""

    key: str
    code: str
    message: str


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


def user_agent() -> str:
    import platform

    import aiobotocore
    import botocore

    from fastxfer.version import __version__

    return (
        f"fastxfer/{__version__} aiobotocore/{aiobotocore.__version__} "
        f"botocore/{botocore.__version__} Python/{platform.python_version()}"
    )


def transport_errors() -> tuple[type[BaseException], ...]:
    """Errors of the connection rather than of S3's answer (reading a body, a reset).

    :meth:`Session.open_get` lets these through untranslated so a download can
    resume its range where the bytes stopped.
    """
    import aiohttp
    from botocore import exceptions as bce

    return (
        ConnectionError,
        TimeoutError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientConnectionError,
        bce.ReadTimeoutError,
        bce.ConnectionClosedError,
        bce.ResponseStreamingError,
    )


# (input parameter <- output field) pairs that continue a listing, per operation.
_PAGING: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "list_objects_v2": (("ContinuationToken", "NextContinuationToken"),),
    "list_multipart_uploads": (
        ("KeyMarker", "NextKeyMarker"),
        ("UploadIdMarker", "NextUploadIdMarker"),
    ),
    "list_parts": (("PartNumberMarker", "NextPartNumberMarker"),),
    "list_object_versions": (
        ("KeyMarker", "NextKeyMarker"),
        ("VersionIdMarker", "NextVersionIdMarker"),
    ),
}


class Session:
    """One client, one connection budget, one memory budget, one request path.

    Built and entered by :class:`~fastxfer.TransferManager`; operations receive
    it.  Every attribute is created inside the running loop, in ``__aenter__``.
    """

    def __init__(self, config: TransferConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._memory: MemoryBudget | None = None
        self._buffers: BufferPool | None = None
        self._connections: ConnectionBudget | None = None
        self._uploads: ConnectionBudget | None = None
        self._pacer: Pacer | None = None
        self._bandwidth: BandwidthLimiter | None = None
        self.tuner: ConcurrencyTuner | None = None
        """Tunes the requests in flight from goodput (None when ``autotune`` is off)."""
        self._tuning: Tuning | None = None
        self.queued_transfers: Callable[[], int] = lambda: 0
        """Transfers waiting to start (the manager's queue): demand beyond the slots."""
        self._journal: UploadJournal | None = None
        self._journal_open = False
        self._answered = False
        self.stale_temps: dict[str, dict[str, list[str]]] = {}
        """Directories downloaded into, each listed once: the temp files killed runs
        left there, by the file each was for (fastxfer/download.py)."""
        self.lean: LeanPath | None = None
        """The lean request path for the hot operations (None: ``lean_path`` off)."""

    # -- lifecycle -------------------------------------------------------

    async def __aenter__(self) -> Self:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession

        cfg = self.config
        self._memory = MemoryBudget(cfg.memory_limit)
        self._buffers = BufferPool(self._memory)
        self._connections = ConnectionBudget(cfg.max_concurrency)
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
            # The endpoint is the config's alone: AWS_ENDPOINT_URL(_S3) is read by
            # TransferConfig.from_env(), which also picks the checksum mode for it
            # (botocore reading it behind the config's back chose `server` mode
            # against servers that ignore checksums).
            ignore_configured_endpoint_urls=True,
            # A fixed User-Agent: botocore otherwise rebuilds and sanitises a
            # long one for every request (~0.7 ms of CPU each, measured).
            user_agent=user_agent(),
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
                    # True means "verify, with botocore's CA bundle choice":
                    # None lets it honour AWS_CA_BUNDLE and ca_bundle in the
                    # profile (passing True ignored both).
                    verify=None if cfg.verify_tls is True else cfg.verify_tls,
                    config=aio_config,
                    **cfg.extra_client_kwargs,
                )
            )
            # First, so it can stop botocore's own retry loop (see below).
            self._client.meta.events.register_first("needs-retry.s3", self._on_needs_retry)
            # botocore asks for `Expect: 100-continue` on every PUT with a
            # file-like body; aiohttp then waits for the server's 100 before
            # sending the body, with no timeout at all (its read timeout starts
            # once the body is sent), so a peer that stalls right after the
            # headers hangs the part forever.  It also costs a round trip per
            # part.  Without it the body goes at once, under PartBody's
            # no-progress timeout.
            from botocore.handlers import add_expect_header

            self._client.meta.events.unregister("before-call.s3", add_expect_header)
            # LIST pages parsed in ~1/9 of botocore's CPU (fastxfer/listing.py).
            self._client.meta.events.register(listing.EVENT, listing.lean_list_objects_v2)
            if cfg.bandwidth_limited:
                limiter = BandwidthLimiter(cfg.bandwidth_settings(), self.clock)
                await self._stack.enter_async_context(limiter)
                self._bandwidth = limiter
            if cfg.lean_path:
                self.lean = LeanPath(self._client, user_agent=aio_config.user_agent)
            if cfg.autotune and cfg.max_concurrency > 1:
                self.tuner = ConcurrencyTuner(cfg.max_concurrency)
                # Looked up at each tick: the manager sets it after this.
                queued = lambda: self.queued_transfers()  # noqa: E731, PLW0108
                tuning = Tuning(self.tuner, self.connections, self.pacer, queued)
                self._tuning = tuning
                if self.lean is not None:
                    self.lean.observe = self._observe_path
                events = self._client.meta.events
                events.register("before-send.s3", tuning.on_before_send)
                events.register("response-received.s3", tuning.on_response_received)
                await self._stack.enter_async_context(tuning.ticking())
        except BaseException as exc:
            await self._close()
            if isinstance(exc, Exception):
                raise translate(exc, op="connect") from exc
            raise
        return self

    def _observe_path(self, op: str, seconds: float) -> None:
        """The lean path's report of a request's time to its answer headers."""
        wanted = self._tuning is not None and self._tuning.observe_path(op, seconds)
        if not wanted and self.lean is not None:
            self.lean.observe = None  # judged: requests pay nothing more for it

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            if self._stack is not None:
                await self._stack.aclose()
                # A closed connection's socket is closed by a callback on the next
                # turn of the loop; let it run, or a loop that ends right after this
                # leaves the socket to the garbage collector (an unclosed-transport
                # ResourceWarning; aiohttp's docs advise this pause).
                await asyncio.sleep(0)
        finally:
            self._stack = None
            self._client = None
            if self._buffers is not None:
                self._buffers.close()
            if self._journal is not None:
                self._journal.db.close()
                self._journal = None

    def _on_needs_retry(
        self,
        response: Any = None,
        operation: Any = None,
        caught_exception: BaseException | None = None,
        attempts: int = 0,
        **_: Any,
    ) -> float | None:
        """botocore is about to retry: tell the pacer when it is because of throttling.

        A throttled CreateMultipartUpload is not left to botocore: its retry
        loop would sleep while holding a connection slot, and what the server
        limits there is the number of open uploads, not the request rate.
        Raising Throttled here ends botocore's loop; upload.py gives the
        open-upload slot back, shrinks that budget and waits its turn.

        A TLS handshake failure is not retried either: a wrong scheme or an
        untrusted certificate fails the same way every time (botocore spent
        10-25 s retrying it).

        A read timeout of a bodiless request (HEAD, GET, LIST ...) before the
        endpoint has ever answered this session is not retried: a silent
        endpoint (it accepts connections and never answers) then fails after
        one ``read_timeout`` instead of five.  A body that stalls is retried.

        A refused connection before the endpoint ever answered is not retried
        either (a wrong URL, a server not running): exit 6 at once.

        A pooled connection the server closed (it restarted, or dropped an idle
        keep-alive) is retried at once on a new connection, without botocore's
        back-off (which grows to seconds when every pooled connection is dead).
        Returns the delay before the retry when fastxfer decides it, else None.
        """
        if response is not None:
            self._answered = True
        if caught_exception is not None:
            from botocore.exceptions import (
                ConnectionClosedError,
                EndpointConnectionError,
                ReadTimeoutError,
                SSLError,
            )

            if isinstance(caught_exception, SSLError):
                raise caught_exception
            if isinstance(caught_exception, ConnectionClosedError) and attempts == 1:
                return 0.0
            if (
                isinstance(caught_exception, ReadTimeoutError)
                and not self._answered
                and not getattr(operation, "has_streaming_input", False)
            ):
                raise caught_exception
            if isinstance(caught_exception, EndpointConnectionError) and not self._answered:
                # Refused or unresolvable before it ever answered: a wrong URL or a
                # server that is not running, not a blip (botocore took 8-25 s).
                raise caught_exception
        if not response or self._pacer is None:
            return None
        http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code", "")
        status = getattr(http, "status_code", 0)
        if not (code in THROTTLE_CODES or status == 503):
            return None
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
        return None

    # -- what operations share -----------------------------------------------

    def _need(self, value: Any) -> Any:
        if value is None:
            raise RuntimeError("fastxfer session used outside `async with`")
        return value

    @property
    def memory(self) -> MemoryBudget:
        mem: MemoryBudget = self._need(self._memory)
        return mem

    @property
    def buffers(self) -> BufferPool:
        """Part buffers, reused by every transfer, bounded by the memory budget."""
        pool: BufferPool = self._need(self._buffers)
        return pool

    async def slot_and_buffer(self, size: int) -> Buffer:
        """A connection slot (DATA priority), then a buffer of ``size`` bytes: the one
        order every part, single PUT and streamed range takes the two budgets in.
        Taken the other way round anywhere, transfers holding buffers while they
        wait for a connection and transfers holding connections while they wait
        for a buffer block each other for good once more transfers run than
        connections.  The caller gives both back (``buffers.put``,
        ``connections.release``)."""
        await self.connections.acquire(Priority.DATA)
        try:
            return await self.buffers.get(size)
        except BaseException:
            self.connections.release()
            raise

    @property
    def pacer(self) -> Pacer:
        pacer: Pacer = self._need(self._pacer)
        return pacer

    @property
    def connections(self) -> ConnectionBudget:
        """The connection budget: one slot per request in flight, over every transfer."""
        budget: ConnectionBudget = self._need(self._connections)
        return budget

    @property
    def uploads(self) -> ConnectionBudget:
        """Slots for open multipart uploads (lowered when the server throttles creation)."""
        budget: ConnectionBudget = self._need(self._uploads)
        return budget

    @property
    def streams(self) -> AdjustableSemaphore | None:
        """The cap on ranged downloads in flight, while the tuner has one
        (:attr:`fastxfer.autotune.Tuning.streams`).  None: no cap."""
        return self._tuning.streams if self._tuning is not None else None

    @property
    def bandwidth(self) -> BandwidthLimiter | None:
        return self._bandwidth

    @property
    def journal(self) -> UploadJournal | None:
        """The upload journal (opened on first use), or None when resume is off.

        A state file that cannot be opened turns resume off for this session
        with a warning: uploads still work, they just cannot be resumed.
        """
        if not self.config.resume:
            return None
        if not self._journal_open:
            self._journal_open = True
            try:
                db = StateDB.open(self.config.state_path)
            except FastxferError as exc:
                log.warning("upload journal disabled: %s", exc)
                return None
            cfg = self.config
            endpoint = cfg.endpoint_url or f"aws:{cfg.region or 'default'}"
            self._journal = UploadJournal(db, endpoint)
        return self._journal

    # -- the request path ------------------------------------------------------

    async def request(
        self,
        op: str,
        *,
        bucket: str | None,
        key: str | None = None,
        priority: int = Priority.CONTROL,
        what: str | None = None,
        retry_throttled: bool = True,
        held_slot: bool = False,
        counts: Counts | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One non-streaming S3 call (``op`` is the client method, e.g. ``"head_object"``).

        Errors are translated to the FastxferError family.  A request the
        server keeps throttling after botocore's own retries is retried again
        after the pacer's back-off, for up to ``throttle_timeout`` seconds.
        ``held_slot``: the caller already holds a connection slot for this
        request.  ``counts[op]`` is incremented for every request sent.
        """
        if bucket is not None:
            kwargs["Bucket"] = bucket
        if key is not None:
            kwargs["Key"] = key
        client = self._need(self._client)
        pacer = self.pacer
        deadline = self.clock.monotonic() + self.config.throttle_timeout
        while True:
            await pacer.before_request()
            slot = contextlib.nullcontext() if held_slot else self.connections.slot(priority)
            async with slot:
                if counts is not None:
                    counts[op] += 1
                try:
                    result: dict[str, Any] | None = None
                    if self.lean is not None and op in LEAN_OPS and self.lean.accepts(op, kwargs):
                        result = await self.lean.call(op, kwargs)
                    if result is None:
                        result = await getattr(client, op)(**kwargs)
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
            self._answered = True
            assert result is not None
            return result

    @contextlib.asynccontextmanager
    async def open_get(
        self,
        bucket: str,
        key: str,
        *,
        priority: int = Priority.DATA,
        held_slot: bool = False,
        counts: Counts | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming GetObject: yields the response; its ``Body`` is closed on exit.

        The connection slot (unless ``held_slot``) is held until the body is
        closed, because aiohttp gives the connection back only then.  S3's
        answers are translated (Throttled after telling the pacer; a failed
        If-Match is TransferFailed "changed while it was downloaded");
        transport errors (:func:`transport_errors`) pass through untranslated
        so the caller can resume a range where its bytes stopped.
        """
        from botocore.exceptions import ClientError

        client = self._need(self._client)
        await self.pacer.before_request()
        slot = contextlib.nullcontext() if held_slot else self.connections.slot(priority)
        async with slot:
            if counts is not None:
                counts["get_object"] += 1
            try:
                kwargs["Bucket"], kwargs["Key"] = bucket, key
                resp: dict[str, Any] | None = None
                if (
                    self.lean is not None
                    and "get_object" in LEAN_OPS
                    and self.lean.accepts("get_object", kwargs)
                ):
                    resp = await self.lean.call("get_object", kwargs, stream=True)
                if resp is None:
                    resp = await client.get_object(**kwargs)
            except asyncio.CancelledError:
                raise
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    raise TransferFailed(
                        f"s3://{bucket}/{key} changed while it was downloaded",
                        hint="download it again",
                    ) from exc
                err = translate(exc, bucket=bucket, key=key, op="GET")
                if isinstance(err, Throttled):
                    self.pacer.on_throttle()
                raise err from exc
            except transport_errors():
                raise
            except Exception as exc:
                raise translate(exc, bucket=bucket, key=key, op="GET") from exc
            self.pacer.on_success()
            self._answered = True
            async with resp["Body"]:
                yield resp

    async def abort_multipart(
        self, bucket: str, key: str, upload_id: str, *, what: str, counts: Counts | None = None
    ) -> bool:
        """Abort a multipart upload as clean-up: shielded from cancellation, bounded by
        ``abort_timeout``; a failure is one line saying the parts stay.  True if aborted."""
        return await run_cleanup(
            self.request(
                "abort_multipart_upload",
                bucket=bucket,
                key=key,
                UploadId=upload_id,
                what="abort",
                counts=counts,
            ),
            timeout=self.config.abort_timeout,
            what=f"aborting {what} s3://{bucket}/{key}",
            left_behind="its parts stay on the server (billed) until "
            f"`fastxfer abort-uploads s3://{bucket}/` or a lifecycle rule removes them",
        )

    async def sleep(self, seconds: float) -> None:
        """Wait on the injected clock (back-off between attempts)."""
        await self.clock.sleep(seconds)

    # -- listings ----------------------------------------------------------------

    async def pages(
        self,
        op: str,
        *,
        bucket: str,
        what: str = "LIST",
        counts: Counts | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page of a listing operation, through :meth:`request`.

        A page that says it is truncated but gives no marker to continue from
        raises TransferFailed (a silent stop would hide objects).
        """
        markers = _PAGING.get(op)
        if markers is None:
            raise ValueError(f"{op} is not a paged listing")
        kw = dict(kwargs)
        while True:
            page = await self.request(op, bucket=bucket, what=what, counts=counts, **kw)
            yield page
            if not page.get("IsTruncated"):
                return
            first_out = markers[0][1]
            if not page.get(first_out):
                raise TransferFailed(
                    f"{what} s3://{bucket}: the server said the listing is truncated "
                    f"but gave no {first_out} to continue from"
                )
            for param, field in markers:
                if page.get(field):
                    kw[param] = page[field]
                else:
                    kw.pop(param, None)

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        restore_status: bool = False,
        start_after: str | None = None,
        counts: Counts | None = None,
    ) -> AsyncGenerator[ObjectInfo, None]:
        """Every object under ``prefix`` (1,000 a request), in key order.

        With ``delimiter``, the common prefixes of each page are yielded too
        (``is_prefix=True``), before that page's objects.  With
        ``restore_status``, archived objects carry their restore state.
        """
        kw: dict[str, Any] = {"Prefix": prefix}
        if delimiter:
            kw["Delimiter"] = delimiter
        if restore_status:
            kw["OptionalObjectAttributes"] = ["RestoreStatus"]
        if start_after:
            kw["StartAfter"] = start_after
        async for page in self.pages("list_objects_v2", bucket=bucket, counts=counts, **kw):
            for cp in page.get("CommonPrefixes", []) or []:
                yield ObjectInfo(
                    bucket=bucket,
                    key=str(cp["Prefix"]),
                    size=0,
                    etag="",
                    last_modified=None,
                    storage_class="",
                    metadata={},
                    is_prefix=True,
                )
            for item in page.get("Contents", []) or []:
                yield ObjectInfo.from_listing(bucket, item)

    async def head(self, bucket: str, key: str, *, counts: Counts | None = None) -> ObjectInfo:
        """HEAD an object (with its checksum, storage class and restore state)."""
        r = await self.request(
            "head_object",
            bucket=bucket,
            key=key,
            ChecksumMode="ENABLED",
            what="HEAD",
            counts=counts,
        )
        return ObjectInfo.from_response(bucket, key, r)

    async def list_buckets(self) -> list[str]:
        """Names of the buckets the credentials can see."""
        r = await self.request("list_buckets", bucket=None, what="list buckets")
        return [str(b["Name"]) for b in r.get("Buckets", [])]

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """Incomplete multipart uploads under ``prefix`` (they cost storage until aborted)."""
        out: list[dict[str, Any]] = []
        try:
            async for page in self.pages(
                "list_multipart_uploads", bucket=bucket, what="LIST uploads", Prefix=prefix
            ):
                out.extend(page.get("Uploads", []) or [])
        except S3Error as exc:
            # rclone serve s3 with --multipart-max-uploads answers an empty
            # listing with NoSuchUpload instead of an empty list.
            if exc.code != "NoSuchUpload":
                raise
        return out

    async def delete_objects(
        self, bucket: str, keys: Iterable[str], *, counts: Counts | None = None
    ) -> list[DeleteFailure]:
        """Delete ``keys`` with DeleteObjects, 1,000 a request, batches concurrently.

        Missing keys count as deleted (S3 semantics).  Returns what the server
        refused to delete, per key.
        """
        todo = list(dict.fromkeys(keys))
        failures: list[DeleteFailure] = []

        async def batch(chunk: list[str]) -> None:
            r = await self.request(
                "delete_objects",
                bucket=bucket,
                what="DELETE",
                counts=counts,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            failures.extend(
                DeleteFailure(
                    str(e.get("Key", "")), str(e.get("Code", "")), str(e.get("Message", ""))
                )
                for e in r.get("Errors", []) or []
            )

        async with asyncio.TaskGroup() as tg:
            for i in range(0, len(todo), MAX_DELETE_BATCH):
                tg.create_task(batch(todo[i : i + MAX_DELETE_BATCH]))
        return failures
