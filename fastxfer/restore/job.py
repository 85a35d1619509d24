"""RestoreJob: request restores in one batch, wait cheaply, download (or hand out) as they thaw.

Two ways to drive a job (see :mod:`fastxfer.restore`):

* :meth:`RestoreJob.run` (``fastxfer restore``): request, poll and, with
  ``download_dir``, download every object as it thaws, until all are done;
* ``async with job:`` (the duplicity backend): entering requests the batch and
  starts polling in the background; :meth:`RestoreJob.wait_readable` returns
  as soon as one named object can be read, while the others go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Self

from fastxfer.budget import Priority
from fastxfer.errors import (
    ColdObject,
    FastxferError,
    LocalFileError,
    S3Error,
    TransferFailed,
    UsageError,
)
from fastxfer.localpath import local_path_for_key
from fastxfer.pacing import RequestRateLimiter
from fastxfer.restore.model import (
    DAY,
    ObjectRecord,
    ObjectState,
    RestoreTier,
    check_tier,
    classify,
    default_poll_interval,
    expected_restore_seconds,
)
from fastxfer.restore.options import RestoreOptions, default_state_path
from fastxfer.restore.poll import FATAL, RestorePoller, first_error
from fastxfer.restore.prices import CostEstimate, PriceTable, RequestCounts, estimate_cost
from fastxfer.restore.report import ObjectStatus, RestoreReport
from fastxfer.restore.store import RestoreStore, job_id
from fastxfer.storage_class import parse_restore_header
from fastxfer.transfer import TransferHandle

if TYPE_CHECKING:
    from fastxfer.clock import Clock
    from fastxfer.config import TransferConfig
    from fastxfer.objectinfo import ObjectInfo
    from fastxfer.session import Session

log = logging.getLogger("fastxfer.restore")

StartDownload = Callable[[str, str, str, int | None], TransferHandle]
"""``(bucket, key, dest path, size_hint) -> handle``: how a job starts a download
(``TransferManager.restore_job`` passes its own ``download``)."""


class _ReadyQueue:
    """Objects ready to download, served in the order requested (lowest seq first)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, ObjectRecord]] = []
        self._event = asyncio.Event()
        self._closed = False

    def put(self, obj: ObjectRecord) -> None:
        heapq.heappush(self._heap, (obj.seq, obj))
        self._event.set()

    def close(self) -> None:
        self._closed = True
        self._event.set()

    async def get(self) -> ObjectRecord | None:
        while True:
            if self._heap:
                return heapq.heappop(self._heap)[1]
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()


class RestoreJob:
    """One batch restore on a session (build it with ``TransferManager.restore_job``).

    ``session.clock`` paces polls and the request-rate cap (a FakeClock given
    to the manager in tests); state changes are persisted as they happen.
    """

    def __init__(
        self,
        session: Session,
        options: RestoreOptions,
        *,
        start_download: StartDownload,
        prices: PriceTable | None = None,
    ) -> None:
        self.session = session
        self.options = options
        self.prices = prices
        # The same state file as the upload journal unless told otherwise (FASTXFER_STATE).
        self.state_path = options.state_path or session.config.state_path or default_state_path()
        self.job_id = job_id(options.spec())
        self._start_download = start_download
        self._objs: list[ObjectRecord] = []
        self._by_key: dict[str, ObjectRecord] = {}
        self._counts: Counter[str] = Counter()
        self._extensions = 0
        self._polling = RestorePoller(session, options.bucket, self._counts)
        self._sorted_keys: list[str] = []
        self._resumed = False
        self._stored_tier: tuple[RestoreTier, int] | None = None  # (tier, days) in the file
        self._inventoried = False  # _objs hold this job's own inventory (e.g. from estimate())
        self._store: RestoreStore | None = None
        # `async with job` (created in __aenter__, inside the running loop):
        self._changed: asyncio.Event | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._failure: Exception | None = None
        self._failure_delivered = False
        self._errors: dict[str, FastxferError] = {}
        self._requesting: set[str] = set()
        self._entered_at = 0.0

    @property
    def clock(self) -> Clock:
        return self.session.clock

    @property
    def config(self) -> TransferConfig:
        return self.session.config

    # -- inventory ---------------------------------------------------------

    async def _inventory(self) -> list[ObjectRecord]:
        o = self.options
        if o.prefix is not None:
            objs: list[ObjectRecord] = []
            async for info in self.session.list_objects(
                o.bucket, o.prefix, restore_status=True, counts=self._counts
            ):
                if info.is_prefix or (info.key.endswith("/") and info.size == 0):
                    continue  # folder marker
                objs.append(self._record(len(objs), info))
            if not objs:
                raise UsageError(f"no objects under s3://{o.bucket}/{o.prefix}")
            return objs

        async def head(seq: int, key: str) -> ObjectRecord:
            return self._record(seq, await self.session.head(o.bucket, key, counts=self._counts))

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(head(i, k)) for i, k in enumerate(o.keys)]
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None
        return [t.result() for t in tasks]

    @staticmethod
    def _record(seq: int, info: ObjectInfo) -> ObjectRecord:
        state = classify(info.storage_class, info.restore)
        expiry = parse_restore_header(info.restore)[1] if state is ObjectState.RESTORED else None
        return ObjectRecord(
            seq, info.key, info.size, info.storage_class, info.etag, state, expiry=expiry
        )

    async def _load(self, *, create: bool, inventory: bool = True) -> None:
        """Load the job from the state file, or take the inventory (saved when ``create``).

        ``inventory`` False: only load (``_resumed`` says whether the job was there).
        """
        store = (
            RestoreStore(self.state_path) if (create or os.path.exists(self.state_path)) else None
        )
        self._store = store
        spec = store.spec(self.job_id) if store else None
        if store is not None and spec is not None:
            if {k: spec.get(k) for k in ("bucket", "prefix", "keys")} != self.options.spec():
                raise UsageError(  # a hash collision, in practice never
                    f"state file {self.state_path}: job {self.job_id} is another restore job",
                    hint="choose another --state file",
                )
            self._set_objects(store.load(self.job_id))
            self._resumed, self._inventoried = True, False
            self._stored_tier = (RestoreTier.parse(str(spec["tier"])), int(spec["days"]))
            if create and self._stored_tier != (self.options.tier, self.options.days):
                # A rerun with another --tier / --days: what it requests from now on.
                store.set_tier(self.job_id, self.options.tier.value, self.options.days)
            now = self._wall()
            for obj in self._objs:
                if obj.state is ObjectState.RESTORED and obj.expiry and obj.expiry <= now:
                    obj.state = ObjectState.COLD  # the copy is gone: request again
                    obj.requested_at = None
                    self._save(obj)
            return
        if not inventory:
            return
        if not self._inventoried:  # estimate() then run(): one inventory, not two
            self._set_objects(await self._inventory())
            self._inventoried = True
        for obj in self._objs:
            if self._needs_restore(obj):
                check_tier(obj.storage_class, self.options.tier)  # before anything is sent
        if store is not None and create:
            store.create(
                self.options.spec(),
                self.options.tier.value,
                self.options.days,
                self._objs,
                created_at=self._wall(),
            )

    def _set_objects(self, objs: list[ObjectRecord]) -> None:
        self._objs = objs
        self._by_key = {o.key: o for o in objs}
        self._sorted_keys = sorted(self._by_key)

    # -- helpers -------------------------------------------------------------

    def _wall(self) -> float:
        return self.clock.now().timestamp()

    def _save(self, obj: ObjectRecord) -> None:
        """Persist ``obj`` and wake whoever waits for a change."""
        if self._store is not None:
            self._store.save(self.job_id, obj)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    def _dest(self, obj: ObjectRecord) -> str:
        assert self.options.download_dir is not None
        return local_path_for_key(self.options.download_dir, obj.key, self.options.prefix or "")

    def _already_downloaded(self, obj: ObjectRecord) -> bool:
        """The file is in place with the object's size (from this run or an earlier one)."""
        if self.options.download_dir is None:
            return False
        try:
            dest = self._dest(obj)
            return os.path.isfile(dest) and os.path.getsize(dest) == obj.size
        except (OSError, LocalFileError):
            return False

    def _needs_restore(self, obj: ObjectRecord) -> bool:
        return obj.state is ObjectState.COLD and not self._already_downloaded(obj)

    def _wants_download(self, obj: ObjectRecord) -> bool:
        return self.options.download_dir is not None and not self._already_downloaded(obj)

    def _interval(self) -> float:
        if self.options.poll_interval is not None:
            return self.options.poll_interval
        classes = {o.storage_class for o in self._objs if o.state is ObjectState.RESTORING}
        tier = self.options.tier
        return min((default_poll_interval(sc, tier) for sc in classes), default=60.0)

    def _check_not_entered(self) -> None:
        if self._changed is not None:
            raise RuntimeError("estimate(), run() and status() are for a job not in `async with`")

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- estimate ------------------------------------------------------------------

    async def estimate(self) -> CostEstimate:
        """Classify the objects (LIST or HEAD) and price the job; requests nothing else.

        Reads an existing state file but never writes a job into it.
        """
        self._check_not_entered()
        try:
            await self._load(create=False)
            return estimate_cost(
                self._objs,
                tier=self.options.tier,
                days=self.options.days,
                config=self.config,
                prices=self.prices or PriceTable.load(),
                download=self.options.download_dir is not None,
                downloaded={o.key for o in self._objs if self._already_downloaded(o)},
                poll_interval=self.options.poll_interval,
                inventory=RequestCounts.from_counts(self._counts),
            )
        finally:
            self._close()

    # -- run -----------------------------------------------------------------------

    async def run(self) -> RestoreReport:
        """Request, poll and (with ``download_dir``) download until every object is done.

        Per-object failures (access denied, a failed download) are recorded in
        the report; credential and connection failures abort the job.
        """
        self._check_not_entered()
        started = self.clock.monotonic()
        try:
            await self._load(create=True)
            ready = _ReadyQueue()
            requests_done = asyncio.Event()
            try:
                async with asyncio.TaskGroup() as tg:
                    if self.options.download_dir is not None:
                        for obj in self._objs:
                            if obj.state in (ObjectState.READABLE, ObjectState.RESTORED):
                                self._offer(obj, ready)
                        workers = min(self.config.active_transfers, max(1, len(self._objs)))
                        for _ in range(workers):
                            tg.create_task(self._download_worker(ready))
                    tg.create_task(self._request_all(requests_done))
                    try:
                        await self._poll_until_done(requests_done, ready)
                    finally:
                        ready.close()
            except BaseExceptionGroup as eg:
                raise first_error(eg) from None
            return self._report(started)
        finally:
            self._close()

    async def status(self) -> RestoreReport:
        """Load the job from its state file and poll once (no restore, no download)."""
        self._check_not_entered()
        started = self.clock.monotonic()
        try:
            if os.path.exists(self.state_path):
                await self._load(create=False, inventory=False)
            if not self._resumed:
                raise UsageError(
                    f"no restore job for s3://{self.options.bucket}/"
                    f"{self.options.prefix or ''} in {self.state_path}",
                    hint="start the job with `fastxfer restore` (or pass the same --state)",
                )
            if self._stored_tier is not None:  # report the job's tier, not the default
                tier, days = self._stored_tier
                self.options = dataclasses.replace(self.options, tier=tier, days=days)
            if any(o.state is ObjectState.RESTORING for o in self._objs):
                await self._poll_once(None)
            return self._report(started)
        finally:
            self._close()

    # -- one object at a time (async with job) ----------------------------------------

    async def __aenter__(self) -> Self:
        """Load or create the job, send its RestoreObject batch, start polling.

        Returns once every cold object has been requested (persisted: a job
        entered again sends none); polling goes on in a task the job owns
        until :meth:`__aexit__`.  Downloads are the caller's (after
        :meth:`wait_readable`); ``download_dir`` is for :meth:`run`.
        """
        if self.options.download_dir is not None:
            raise UsageError(
                "download_dir is for RestoreJob.run(); inside `async with job`, "
                "download each object once wait_readable() returns"
            )
        if self._changed is not None:
            raise RuntimeError("RestoreJob entered twice")
        self._changed = asyncio.Event()
        self._entered_at = self.clock.monotonic()
        try:
            await self._load(create=True)
            done = asyncio.Event()
            try:
                await self._request_all(done)
            except BaseExceptionGroup as eg:
                raise first_error(eg) from None
            self._ensure_poller()
        except BaseException:
            self._changed = None
            self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop polling (cancel and wait) and close the state file.

        A polling failure nobody received from :meth:`wait_readable` is raised
        here (unless the block itself raised).
        """
        poller, self._poll_task = self._poll_task, None
        try:
            if poller is not None and not poller.done():
                poller.cancel()
                await asyncio.wait({poller})  # our own cancellation still propagates
        finally:
            self._changed = None
            self._close()
        if exc is None and self._failure is not None and not self._failure_delivered:
            self._failure_delivered = True
            raise self._failure

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def _obj(self, key: str) -> ObjectRecord:
        obj = self._by_key.get(key)
        if obj is None:
            raise UsageError(f"s3://{self.options.bucket}/{key} is not part of this restore job")
        return obj

    async def wait_readable(self, key: str) -> ObjectStatus:
        """Wait until ``key`` can be read (GET) and return its status.

        Returns at once for an online object or a restored copy; raises the
        object's error (a FastxferError) if its restore was refused, and the
        job's if polling failed for good.  Cancel it (or wrap it in
        ``asyncio.timeout``) to stop waiting; the job goes on.
        """
        if self._changed is None:
            raise RuntimeError("use `async with job:` before wait_readable()")
        obj = self._obj(key)
        while True:
            changed = self._changed
            if changed is None:
                raise RuntimeError("the restore job was closed while waiting")
            if obj.state in (ObjectState.READABLE, ObjectState.RESTORED):
                if not (obj.state is ObjectState.RESTORED and self._expired(obj)):
                    return self._status(obj)
                obj.state, obj.requested_at = ObjectState.COLD, None  # the copy is gone
                self._save(obj)
                continue
            if obj.state is ObjectState.COLD and obj.key not in self._requesting:
                if obj.error is not None:
                    raise self._object_error(obj)
                await self._request_one(obj)
                continue
            if self._failure is not None:
                self._failure_delivered = True
                raise self._failure.with_traceback(None)
            if obj.state is ObjectState.RESTORING:
                self._ensure_poller()
            await changed.wait()

    def eta(self, key: str) -> float | None:
        """Expected seconds until ``key`` is readable (0 when it is), from the tier's
        typical restore time; None when unknown (requested by someone else, or failed)."""
        obj = self._obj(key)
        if obj.state in (ObjectState.READABLE, ObjectState.RESTORED):
            return 0.0
        expected = expected_restore_seconds(obj.storage_class, self.options.tier)
        if expected is None or obj.error is not None:
            return None
        if obj.state is ObjectState.COLD:
            return expected
        if obj.requested_at is None:
            return None
        return max(0.0, obj.requested_at + expected - self._wall())

    def object(self, key: str) -> ObjectStatus:
        """The status of ``key`` now."""
        return self._status(self._obj(key))

    def objects(self) -> tuple[ObjectStatus, ...]:
        """The status of every object of the job, in job order."""
        return tuple(self._status(o) for o in self._objs)

    def report(self) -> RestoreReport:
        """Where the job stands (inside ``async with job``: since it was entered)."""
        return self._report(self._entered_at)

    def _expired(self, obj: ObjectRecord) -> bool:
        return obj.expiry is not None and obj.expiry <= self._wall()

    def _object_error(self, obj: ObjectRecord) -> FastxferError:
        exc = self._errors.get(obj.key)
        if exc is not None:
            return exc.with_traceback(None)
        return TransferFailed(
            f"restore of s3://{self.options.bucket}/{obj.key} failed: {obj.error}"
        )

    async def _request_one(self, obj: ObjectRecord) -> None:
        """RestoreObject for one object found cold while waiting (its copy expired)."""
        self._requesting.add(obj.key)
        try:
            await self._restore(obj)
        finally:
            self._requesting.discard(obj.key)
            self._notify()

    def _ensure_poller(self) -> None:
        """Start the background poll loop unless it runs, failed, or has nothing to poll."""
        if self._failure is not None or (
            self._poll_task is not None and not self._poll_task.done()
        ):
            return
        if any(o.state is ObjectState.RESTORING for o in self._objs):
            self._poll_task = asyncio.get_running_loop().create_task(
                self._background_poll(), name=f"fastxfer-restore-poll-{self.job_id}"
            )

    async def _background_poll(self) -> None:
        done = asyncio.Event()
        done.set()
        try:
            await self._poll_until_done(done, None)
        except Exception as exc:  # handed to the waiters (and __aexit__), never dropped
            log.warning("restore job %s: polling stopped: %s", self.job_id, exc)
            self._failure = exc
        finally:
            self._notify()

    # -- reporting -------------------------------------------------------------------

    def _status(self, o: ObjectRecord) -> ObjectStatus:
        return ObjectStatus(
            key=o.key,
            size=o.size,
            storage_class=o.storage_class,
            state=o.state.value,
            requested_at=o.requested_at,
            expiry=o.expiry,
            thawed_seen_at=o.thawed_seen_at,
            download_started_at=o.download_started_at,
            download_finished_at=o.download_finished_at,
            downloaded=o.downloaded or self._already_downloaded(o),
            local=o.local,
            error=o.error,
        )

    def _report(self, started: float) -> RestoreReport:
        return RestoreReport(
            bucket=self.options.bucket,
            tier=self.options.tier.value,
            days=self.options.days,
            state_path=self.state_path,
            resumed=self._resumed,
            objects=self.objects(),
            requests=RequestCounts.from_counts(self._counts),
            restore_extensions=self._extensions,
            polls=self._polling.polls,
            poll_mode=self._polling.mode,
            elapsed=self.clock.monotonic() - started,
        )

    # -- requesting ------------------------------------------------------------------

    async def _request_all(self, done: asyncio.Event) -> None:
        """One RestoreObject per cold object, in order, ``tps`` per second at most."""
        try:
            todo = iter([o for o in self._objs if self._needs_restore(o)])
            tps = self.options.tps
            limiter = RequestRateLimiter(tps, max(1, math.ceil(tps)), self.clock) if tps else None

            async def sender() -> None:
                for obj in todo:
                    if limiter is not None:
                        await limiter.acquire()
                    await self._restore(obj)

            senders = min(self.config.max_concurrency, 64)
            async with asyncio.TaskGroup() as tg:
                for _ in range(senders):
                    tg.create_task(sender())
        finally:
            done.set()

    async def _restore(self, obj: ObjectRecord, *, extend: bool = False) -> None:
        o = self.options
        try:
            await self.session.request(
                "restore_object",
                bucket=o.bucket,
                key=obj.key,
                priority=Priority.DATA + 1,  # thawed data first: it is what the user waits for
                what="RestoreObject",
                counts=self._counts,
                RestoreRequest={"Days": o.days, "GlacierJobParameters": {"Tier": o.tier.value}},
            )
        except ColdObject as exc:
            if exc.code != "InvalidObjectState":
                raise
            # "Restore is not allowed for the object's current storage class":
            # it moved to an online class since the inventory.
            obj.state = ObjectState.READABLE
            self._save(obj)
            return
        except FATAL:
            raise
        except S3Error as exc:
            if exc.code != "RestoreAlreadyInProgress":
                obj.error = str(exc)
                self._errors[obj.key] = exc
                self._save(obj)  # restore-status reports it
                return
        # 202 accepted, 409 already in progress, 200 copy already there (expiry
        # extended): all mean "requested"; the poller finds out when it is readable.
        if extend:
            self._extensions += 1
            obj.expiry = self._wall() + o.days * DAY
        else:
            obj.state = ObjectState.RESTORING
            obj.requested_at = self._wall()
        obj.error = None
        self._errors.pop(obj.key, None)
        self._save(obj)

    # -- polling -------------------------------------------------------------------

    async def _poll_until_done(
        self, requests_done: asyncio.Event, ready: _ReadyQueue | None
    ) -> None:
        failures = 0
        first = True
        while True:
            waiting = any(o.state is ObjectState.RESTORING for o in self._objs)
            if not waiting and requests_done.is_set():
                await self._extend_expiring()
                return
            if not first:
                await self._sleep_or_done(self._interval(), requests_done, waiting)
            first = False
            if not any(o.state is ObjectState.RESTORING for o in self._objs):
                continue
            try:
                await self._poll_once(ready)
                failures = 0
            except FATAL:
                raise
            except (S3Error, TransferFailed) as exc:
                failures += 1
                log.warning("restore poll failed (%d in a row): %s", failures, exc)
                if failures >= self.options.max_poll_failures:
                    raise
            await self._extend_expiring()

    async def _sleep_or_done(self, interval: float, done: asyncio.Event, waiting: bool) -> None:
        """Sleep one interval; if nothing is restoring yet, wake early once requests are done."""
        if waiting or done.is_set():
            await self.clock.sleep(interval)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(interval))
        waiter = asyncio.ensure_future(done.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waiter):
                t.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)

    async def _poll_once(self, ready: _ReadyQueue | None) -> None:
        restoring = [o for o in self._objs if o.state is ObjectState.RESTORING]
        try:
            await self._polling.poll(
                restoring, self._sorted_keys, lambda obj, expiry: self._thawed(obj, expiry, ready)
            )
        finally:
            self._notify()

    def _thawed(self, obj: ObjectRecord, expiry: float | None, ready: _ReadyQueue | None) -> None:
        obj.state = ObjectState.RESTORED
        obj.expiry = expiry
        obj.thawed_seen_at = self.clock.monotonic()
        obj.error = None
        self._save(obj)
        if ready is not None:
            self._offer(obj, ready)

    def _offer(self, obj: ObjectRecord, ready: _ReadyQueue) -> None:
        if self._wants_download(obj):
            ready.put(obj)
        else:
            self._mark_downloaded(obj)

    def _failed(self, obj: ObjectRecord, error: str) -> None:
        """Record (and persist: restore-status reports it) a failed download."""
        obj.error = error
        self._save(obj)

    def _mark_downloaded(self, obj: ObjectRecord) -> None:
        if self.options.download_dir is not None and not obj.downloaded:
            obj.downloaded = True
            obj.local = self._dest(obj)
            self._save(obj)

    async def _extend_expiring(self) -> None:
        """Re-issue RestoreObject for copies that expire before they are downloaded."""
        if self.options.download_dir is None:
            return
        limit = self._wall() + self.options.extend_margin
        expiring = [
            o
            for o in self._objs
            if o.state is ObjectState.RESTORED
            and not o.downloaded
            and o.expiry is not None
            and o.expiry < limit
        ]
        for obj in expiring:
            await self._restore(obj, extend=True)

    # -- downloading ---------------------------------------------------------------

    async def _download_worker(self, ready: _ReadyQueue) -> None:
        while (obj := await ready.get()) is not None:
            if not self._wants_download(obj):
                self._mark_downloaded(obj)
                continue
            try:
                dest = self._dest(obj)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
            except LocalFileError as exc:
                self._failed(obj, str(exc))
                continue
            except OSError as exc:
                self._failed(obj, f"{exc.filename}: {exc.strerror}")
                continue
            obj.download_started_at = self.clock.monotonic()
            handle = self._start_download(self.options.bucket, obj.key, dest, obj.size)
            try:
                await handle
            except FATAL:
                raise
            except FastxferError as exc:
                self._failed(obj, str(exc))
                continue
            finally:
                # What the engine really sent for this download.
                sent: Mapping[str, int] = handle.stats().requests
                self._counts["head_object"] += sent.get("head_object", 0)
                self._counts["get_object"] += sent.get("get_object", 0)
            obj.download_finished_at = self.clock.monotonic()
            had_error, obj.error = obj.error is not None, None
            self._mark_downloaded(obj)
            if had_error:
                self._save(obj)


__all__ = ["RestoreJob", "StartDownload"]
