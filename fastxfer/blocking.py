"""BlockingTransferManager: the fastxfer engine for synchronous code.

One background thread runs one event loop with one :class:`TransferManager`
in it, so every call made from any thread shares the one connection budget,
memory budget and request pacer::

    from fastxfer import TransferConfig
    from fastxfer.blocking import BlockingTransferManager

    with BlockingTransferManager(TransferConfig(max_concurrency=16)) as xfer:
        xfer.upload("backup.tar", "bucket", "backups/backup.tar")
        futures = [xfer.submit_upload(p, "bucket", f"logs/{p}") for p in paths]
        for f in futures:
            print(f.result().throughput)
        for obj in xfer.list("bucket", "logs/"):
            print(obj.key, obj.size)

Blocking calls return what the engine returns and raise what it raises (the
:class:`~fastxfer.errors.FastxferError` family, unchanged).  ``submit_*`` calls
return a :class:`concurrent.futures.Future`; cancelling it cancels the
transfer (a multipart upload is aborted, a partial download removed).

Leaving the ``with`` block (or :meth:`~BlockingTransferManager.close`) waits
for every transfer still running, or cancels them when the block raised; then
the loop stops and the thread is joined.  A manager that is never closed is
closed (its transfers finished) when the interpreter exits, so exit is always
clean.

That exit hook is registered with ``threading._register_atexit``, the hook
:mod:`concurrent.futures` uses for its own workers, not with :mod:`atexit`:
plain atexit hooks run only after the interpreter has joined every
non-daemon thread (the loop thread is one: it must not be killed mid-upload)
and after the default executor has stopped taking work (uploads hash and read
files in it), so a transfer still queued at exit would hang there forever
(measured).  Threading exit hooks run before both, newest first.  They cannot
be unregistered, so the hook holds the manager weakly and does nothing once
it is closed.

Subscribers (progress callbacks) run in the loop thread: keep them quick.
Do not call blocking methods from a subscriber (that would wait on itself);
they raise RuntimeError there.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from fastxfer.config import TransferConfig
from fastxfer.manager import ManagerStats, ObjectInfo, TransferManager
from fastxfer.progress import Subscriber
from fastxfer.session import DeleteFailure
from fastxfer.transfer import TransferStats

if TYPE_CHECKING:
    from fastxfer.restore import ObjectStatus, RestoreJob, RestoreOptions, RestoreReport

T = TypeVar("T")

BlockingSource = str | os.PathLike[str] | bytes | bytearray | memoryview
"""What a blocking upload reads: a file path, or bytes (not modified until it is done)."""

_State = Literal["running", "closing", "closed"]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when available (less CPU per request), else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def at_interpreter_exit(fn: Callable[[], None]) -> None:
    """Call ``fn`` when the interpreter exits, while threads and executors still work.

    Threading exit hooks run when the main thread has finished, before
    non-daemon threads are joined and before :mod:`atexit` hooks; the newest
    runs first (see the module docstring for why atexit is too late).  Raises
    RuntimeError when the interpreter is already shutting down.
    """
    # The default executor's own exit hook must be registered first so that it
    # runs after ours (newest first): importing its module registers it.
    import concurrent.futures.thread  # noqa: F401

    register: Callable[[Callable[[], None]], None] | None = getattr(
        threading, "_register_atexit", None
    )
    if register is None:  # pragma: no cover - CPython has had it since 3.9
        import atexit

        atexit.register(fn)
        return
    register(fn)


def _close_at_exit(ref: weakref.ref[BlockingTransferManager]) -> Callable[[], None]:
    """An exit hook that holds the manager weakly (hooks cannot be unregistered)."""

    def hook() -> None:
        xfer = ref()
        if xfer is not None and not xfer.closed:
            xfer.close()

    return hook


class BlockingTransferManager:
    """A :class:`TransferManager` for synchronous callers, usable from any thread.

    The constructor starts the loop thread and enters the manager (raising
    what entering it raises, e.g. :class:`~fastxfer.errors.NoCredentials`).
    With ``start_in_background=True`` it returns at once and the manager starts
    in its thread (imports, the HTTP client: ~0.2 s of CPU) while the caller
    gets on with its own work; the first call waits for it, and every call
    raises what starting raised (:meth:`wait_started` asks directly; ``close``
    does not raise it again).
    """

    def __init__(
        self,
        config: TransferConfig | None = None,
        *,
        subscribers: Iterable[Subscriber] = (),
        thread_name: str = "fastxfer-loop",
        start_in_background: bool = False,
    ) -> None:
        self.config = config or TransferConfig()
        self._subscribers = tuple(subscribers)
        self._lock = threading.Lock()
        self._state: _State = "running"
        self._cancel_on_close = False
        self._error: BaseException | None = None
        # Set by the loop thread before ``started`` resolves; only used after that.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tm: TransferManager | None = None
        self._stop: asyncio.Event | None = None
        # Touched only in the loop thread:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_stop: set[asyncio.Event] = set()  # set when the manager closes
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._started = started
        # Before the thread starts: at shutdown registering fails, and a loop
        # thread nobody stops would hang the interpreter's exit.
        at_interpreter_exit(_close_at_exit(weakref.ref(self)))
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=thread_name, daemon=False
        )
        self._thread.start()
        if start_in_background:
            return
        try:
            started.result()
        except BaseException:
            # Entering the manager failed (the thread is ending on its own), or
            # this thread was interrupted while waiting: let the start finish,
            # then stop the loop.
            self._state = "closed"
            concurrent.futures.wait([started])
            if started.exception() is None:
                self._signal_stop(cancel=True)
            self._thread.join()
            raise

    # -- the loop thread -------------------------------------------------------

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._main(started))
        except BaseException as exc:  # reported to the caller, never lost in the thread
            if not started.done():
                started.set_exception(exc)
            else:
                self._error = exc

    async def _main(self, started: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with TransferManager(self.config, subscribers=self._subscribers) as tm:
            self._tm = tm
            started.set_result(None)
            await self._stop.wait()
            for event in self._on_stop:
                event.set()
            while self._tasks:
                if self._cancel_on_close:
                    for t in self._tasks:
                        t.cancel()
                await asyncio.wait(set(self._tasks))
        self._tm = None

    def _signal_stop(self, *, cancel: bool) -> None:
        loop, stop = self._loop, self._stop
        assert loop is not None
        assert stop is not None

        def set_stop() -> None:
            self._cancel_on_close = self._cancel_on_close or cancel
            stop.set()

        loop.call_soon_threadsafe(set_stop)

    def wait_started(self) -> None:
        """Wait until the manager has started; raise what starting raised, if anything.

        Returns at once for a manager constructed without ``start_in_background``.
        """
        failed = self._start_failure()
        if failed is not None:
            raise failed

    def _start_failure(self) -> BaseException | None:
        """Wait for the start; what it raised, if anything (then the manager is closed).

        A failed start leaves nothing running: the thread is ending on its own.
        """
        started = self._started
        if not started.done():
            concurrent.futures.wait([started])
        failed = started.exception()
        if failed is not None:
            self._thread.join()
            self._state = "closed"
        return failed

    # -- submitting work -------------------------------------------------------

    def _check_caller(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a blocking fastxfer call from the manager's own loop thread "
                "(e.g. a progress subscriber) would wait on itself"
            )

    def submit(self, fn: Callable[[TransferManager], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``await fn(tm)`` in the loop; the future gets its result or exception.

        The escape hatch for anything the blocking methods do not cover.
        Cancelling the future cancels the coroutine.
        """
        self.wait_started()
        cf: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._state != "running":
                raise RuntimeError("BlockingTransferManager is closed")
            loop = self._loop
            assert loop is not None
            loop.call_soon_threadsafe(self._start, fn, cf)
        return cf

    def _start(
        self, fn: Callable[[TransferManager], Awaitable[T]], cf: concurrent.futures.Future[T]
    ) -> None:
        """In the loop thread: start ``fn`` as a task chained to ``cf``."""
        if cf.cancelled():
            return
        tm = self._tm
        assert tm is not None

        async def call() -> T:
            return await fn(tm)

        task = asyncio.get_running_loop().create_task(call())
        self._tasks.add(task)

        def task_done(t: asyncio.Task[T]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                cf.cancel()
                return
            if not cf.set_running_or_notify_cancel():
                return
            exc = t.exception()
            if exc is not None:
                cf.set_exception(exc)
            else:
                cf.set_result(t.result())

        def cf_done(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled() and not task.done():
                loop = task.get_loop()
                if not loop.is_closed():
                    loop.call_soon_threadsafe(task.cancel)

        task.add_done_callback(task_done)
        cf.add_done_callback(cf_done)

    def call(self, fn: Callable[[TransferManager], Awaitable[T]]) -> T:
        """Blocking :meth:`submit`: wait for ``fn(tm)`` and return its result.

        If the wait is interrupted (KeyboardInterrupt), the work is cancelled.
        """
        self._check_caller()
        cf = self.submit(fn)
        try:
            return cf.result()
        except BaseException:
            cf.cancel()
            raise

    # -- transfers ---------------------------------------------------------------

    def submit_upload(
        self,
        source: BlockingSource,
        bucket: str,
        key: str,
        *,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> concurrent.futures.Future[TransferStats]:
        """Start :meth:`TransferManager.upload`; the future gets its TransferStats."""
        subs = tuple(subscribers)

        async def run(tm: TransferManager) -> TransferStats:
            return await tm.upload(
                source,
                bucket,
                key,
                storage_class=storage_class,
                metadata=metadata,
                content_type=content_type,
                subscribers=subs,
            )

        return self.submit(run)

    def upload(
        self,
        source: BlockingSource,
        bucket: str,
        key: str,
        *,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferStats:
        """Upload ``source`` to ``s3://bucket/key`` and wait (:meth:`TransferManager.upload`)."""
        self._check_caller()
        return self._wait(
            self.submit_upload(
                source,
                bucket,
                key,
                storage_class=storage_class,
                metadata=metadata,
                content_type=content_type,
                subscribers=subscribers,
            )
        )

    def submit_download(
        self,
        bucket: str,
        key: str,
        dest: str | os.PathLike[str],
        *,
        size_hint: int | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> concurrent.futures.Future[TransferStats]:
        """Start :meth:`TransferManager.download`; the future gets its TransferStats."""
        subs = tuple(subscribers)

        async def run(tm: TransferManager) -> TransferStats:
            return await tm.download(bucket, key, dest, size_hint=size_hint, subscribers=subs)

        return self.submit(run)

    def download(
        self,
        bucket: str,
        key: str,
        dest: str | os.PathLike[str],
        *,
        size_hint: int | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> TransferStats:
        """Download ``s3://bucket/key`` to ``dest`` and wait (:meth:`TransferManager.download`)."""
        self._check_caller()
        return self._wait(
            self.submit_download(bucket, key, dest, size_hint=size_hint, subscribers=subscribers)
        )

    def _wait(self, cf: concurrent.futures.Future[T]) -> T:
        try:
            return cf.result()
        except BaseException:
            cf.cancel()  # interrupted while waiting: do not leave the work running
            raise

    # -- objects -------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """HEAD one object (size, storage class, restore state, metadata)."""
        return self.call(lambda tm: tm.head(bucket, key))

    def list(
        self, bucket: str, prefix: str = "", *, delimiter: str | None = None
    ) -> builtins.list[ObjectInfo]:
        """Every object under ``prefix`` (all pages), in key order.

        With ``delimiter`` (``"/"``) the listing stops at it: objects directly
        under ``prefix``, and the common prefixes as ObjectInfo with
        ``is_prefix=True``.
        """

        async def run(tm: TransferManager) -> builtins.list[ObjectInfo]:
            return [o async for o in tm.list_objects(bucket, prefix, delimiter=delimiter)]

        return self.call(run)

    def delete_many(self, bucket: str, keys: Iterable[str]) -> builtins.list[DeleteFailure]:
        """Delete ``keys`` with DeleteObjects (1,000 a request); returns the failures.

        Missing keys are not failures (S3 deletes are idempotent).
        """
        keys = builtins.list(keys)
        return self.call(lambda tm: tm.delete_objects(bucket, keys))

    def abort_incomplete_uploads(
        self, bucket: str, prefix: str = "", *, older_than: float = 0.0
    ) -> builtins.list[dict[str, Any]]:
        """See :meth:`TransferManager.abort_incomplete_uploads`."""
        return self.call(
            lambda tm: tm.abort_incomplete_uploads(bucket, prefix, older_than=older_than)
        )

    def stats(self) -> ManagerStats:
        """Budgets and pacer state, read in the loop thread."""

        async def run(tm: TransferManager) -> ManagerStats:
            return tm.stats()

        return self.call(run)

    # -- restores ------------------------------------------------------------------

    def restore(self, options: RestoreOptions) -> RestoreReport:
        """Run a whole batch restore job (request, poll, download) and return its report."""

        async def run(tm: TransferManager) -> RestoreReport:
            return await tm.restore_job(options).run()

        return self.call(run)

    def restore_job(self, options: RestoreOptions) -> BlockingRestoreJob:
        """Start a restore job that runs in the background; wait for objects one by one.

        ::

            with xfer.restore_job(RestoreOptions(bucket=b, keys=keys)) as job:
                for key in keys:
                    job.wait_readable(key)
                    xfer.download(b, key, dest)
        """
        return BlockingRestoreJob(self, options)

    # -- shutdown --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state != "running"

    def close(self, *, cancel: bool = False) -> None:
        """Wait for every running transfer (or cancel them), stop the loop, join the thread.

        Idempotent and safe from any thread but the loop's own.  Raises what
        closing the engine raised, if anything did.
        """
        self._check_caller()
        if self._start_failure() is not None:
            return  # nothing ever ran: every call raised the start's error
        with self._lock:
            first = self._state == "running"
            if first:
                self._state = "closing"
                self._signal_stop(cancel=cancel)
            elif cancel and self._state == "closing" and self._thread.is_alive():
                self._signal_stop(cancel=True)
        try:
            self._thread.join()
        except BaseException:
            # Interrupted while draining: cancel what is left, then wait for that.
            if self._thread.is_alive():
                self._signal_stop(cancel=True)
                self._thread.join()
            raise
        finally:
            if not self._thread.is_alive():
                self._state = "closed"
        if first and self._error is not None:
            raise self._error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(cancel=exc is not None)

    def __repr__(self) -> str:
        return f"<BlockingTransferManager {self._state}>"


class BlockingRestoreJob:
    """A restore job running in a :class:`BlockingTransferManager`'s loop.

    Entering starts the job (one RestoreObject per cold object, polls,
    persisted state); :meth:`wait_readable` blocks until one object can be
    read; leaving stops the job.
    """

    def __init__(self, xfer: BlockingTransferManager, options: RestoreOptions) -> None:
        self._xfer = xfer
        self.options = options
        self._job: RestoreJob | None = None
        self._closing: asyncio.Event | None = None
        self._runner: concurrent.futures.Future[None] | None = None

    def start(self) -> Self:
        """Start the job and wait until it has begun (its price decided, requests sent)."""
        if self._runner is not None:
            raise RuntimeError("restore job started twice")
        entered: concurrent.futures.Future[RestoreJob] = concurrent.futures.Future()
        xfer = self._xfer

        async def run(tm: TransferManager) -> None:
            closing = self._closing = asyncio.Event()
            xfer._on_stop.add(closing)  # the manager closing stops the job too
            if xfer._stop is not None and xfer._stop.is_set():
                closing.set()  # it is closing already
            try:
                async with tm.restore_job(self.options) as job:
                    entered.set_result(job)
                    await closing.wait()
            except BaseException as exc:
                if not entered.done():
                    entered.set_exception(exc)
                raise
            finally:
                xfer._on_stop.discard(closing)

        self._runner = self._xfer.submit(run)
        try:
            self._job = entered.result()
        except BaseException:
            self._runner.cancel()
            raise
        return self

    @property
    def job(self) -> RestoreJob:
        """The underlying async job (only touch it from the loop, e.g. via ``call``)."""
        if self._job is None:
            raise RuntimeError("restore job not started")
        return self._job

    def submit_wait_readable(self, key: str) -> concurrent.futures.Future[ObjectStatus]:
        """Start waiting until ``key`` can be read; cancel the future to stop waiting."""
        job = self.job
        return self._xfer.submit(lambda tm: job.wait_readable(key))

    def wait_readable(self, key: str) -> ObjectStatus:
        """Block until ``key`` can be read (restored, or never archived)."""
        self._xfer._check_caller()
        return self._xfer._wait(self.submit_wait_readable(key))

    def eta(self, key: str) -> float | None:
        """Expected seconds until ``key`` is readable (see :meth:`RestoreJob.eta`)."""
        job = self.job

        async def run(tm: TransferManager) -> float | None:
            return job.eta(key)

        return self._xfer.call(run)

    def __contains__(self, key: object) -> bool:
        return self._job is not None and key in self._job

    def close(self) -> None:
        """Stop the job (its state file keeps what was requested)."""
        runner, closing = self._runner, self._closing
        if runner is None or runner.done() or closing is None:
            return
        loop = self._xfer._loop
        assert loop is not None
        loop.call_soon_threadsafe(closing.set)
        with contextlib.suppress(concurrent.futures.CancelledError):
            runner.result()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._runner is not None:
            self._runner.cancel()
        self.close()
