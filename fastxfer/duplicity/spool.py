"""The volume spool and the download prefetcher of the duplicity backend.

Nothing here imports duplicity: the backend (:mod:`fastxfer.duplicity.backend`)
drives these with plain names and paths.

:class:`VolumeSpool`
    ``put`` takes ownership of a finished volume (a hardlink into the spool
    directory, a copy where links are impossible) and starts its upload on
    the :class:`~fastxfer.blocking.BlockingTransferManager`; it returns at
    once unless the spool is full (``max_volumes`` / ``max_bytes``), then it
    waits for an upload to finish.  The first failed upload is *sticky*:
    every later ``put`` and every :meth:`VolumeSpool.wait_all` raises it, so
    no barrier can ever pass after a volume was lost.
:class:`Prefetcher`
    Downloads the files duplicity announced, in the order it will read them,
    a bounded window ahead of its reads (waiting for each to thaw first when
    it is in a restore job), into the spool directory; ``take`` hands one
    over.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from fastxfer.blocking import BlockingRestoreJob, BlockingTransferManager
from fastxfer.errors import FastxferError, TransferFailed
from fastxfer.manager import TransferManager
from fastxfer.transfer import TransferStats


class VolumeUploadFailed(FastxferError):
    """A data volume could not be uploaded; the backup cannot be completed in this run."""

    def __init__(self, name: str, cause: BaseException) -> None:
        self.name = name
        self.cause = cause
        reason = "cancelled" if isinstance(cause, concurrent.futures.CancelledError) else cause
        super().__init__(
            f"upload of volume {name} failed: {reason}",
            hint="no manifest was uploaded for this backup; run the same command again to resume",
        )


SPOOL_PREFIX = "fastxfer-spool-"


class SpoolDir:
    """A private directory created on first use in ``base()`` (same filesystem as the
    volumes), named ``fastxfer-spool-<pid>-*``.

    It is removed on every exit but ``kill -9``; the next spool made in the
    same place removes those left by processes that no longer exist.
    """

    def __init__(self, base: Callable[[], str]) -> None:
        self._base = base
        self._path: str | None = None
        self._lock = threading.Lock()

    def path(self) -> str:
        with self._lock:
            if self._path is None:
                base = self._base()
                remove_orphan_spools(base)
                self._path = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=base)
            return self._path

    def file(self, name: str) -> str:
        """Where the spool keeps ``name`` (a duplicity file name, maybe with a folder prefix)."""
        return os.path.join(self.path(), name.replace("/", "%2F"))

    @property
    def exists(self) -> bool:
        return self._path is not None and os.path.isdir(self._path)

    def remove(self) -> None:
        with self._lock:
            path, self._path = self._path, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


def remove_orphan_spools(base: str) -> list[str]:
    """Remove spool directories in ``base`` whose process is gone; returns them."""
    removed: list[str] = []
    try:
        entries = os.listdir(base)
    except OSError:
        return removed
    for entry in entries:
        if not entry.startswith(SPOOL_PREFIX):
            continue
        pid_text = entry[len(SPOOL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def take_ownership(source: str, dest: str) -> None:
    """Hardlink ``source`` to ``dest``; copy it when a link is impossible (another device...)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


@dataclass(slots=True)
class _Upload:
    size: int
    path: str
    future: concurrent.futures.Future[TransferStats]


UploadState = Literal["pending", "uploaded", "failed"]


class VolumeSpool:
    """Concurrent volume uploads with backpressure and a sticky first failure."""

    def __init__(
        self,
        xfer: BlockingTransferManager,
        bucket: str,
        spool_dir: SpoolDir,
        *,
        max_volumes: int,
        max_bytes: int,
    ) -> None:
        self._xfer = xfer
        self._bucket = bucket
        self._dir = spool_dir
        self.max_volumes = max_volumes
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._pending: dict[str, _Upload] = {}
        self._pending_bytes = 0
        self._uploaded: dict[str, int] = {}
        self._failure: VolumeUploadFailed | None = None
        self.peak_volumes = 0
        """Most volumes queued or uploading at once (for tests and logs)."""

    def put(self, source: str, name: str, key: str, *, storage_class: str | None) -> None:
        """Take ``source`` over and start uploading it to ``key``; wait while the spool is full.

        Raises :class:`VolumeUploadFailed` when an earlier volume failed.
        """
        size = os.path.getsize(source)
        with self._cond:
            self._cond.wait_for(lambda: self._failure is not None or self._fits(size))
            self._raise_failure()
            spooled = self._dir.file(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spooled)  # a leftover of an earlier attempt at this name
            take_ownership(source, spooled)
            self._uploaded.pop(name, None)
            try:
                future = self._xfer.submit_upload(
                    spooled, self._bucket, key, storage_class=storage_class
                )
            except BaseException:
                os.unlink(spooled)
                raise
            self._pending[name] = _Upload(size, spooled, future)
            self._pending_bytes += size
            self.peak_volumes = max(self.peak_volumes, len(self._pending))
        future.add_done_callback(lambda f: self._done(name, f))

    def _fits(self, size: int) -> bool:
        if not self._pending:
            return True
        return (
            len(self._pending) < self.max_volumes and self._pending_bytes + size <= self.max_bytes
        )

    def _done(self, name: str, future: concurrent.futures.Future[TransferStats]) -> None:
        """In the loop thread (or the cancelling thread): book the result, free the space."""
        with self._cond:
            upload = self._pending.get(name)
            if upload is None or upload.future is not future:
                return
            del self._pending[name]
            self._pending_bytes -= upload.size
            if future.cancelled():
                cause: BaseException | None = concurrent.futures.CancelledError()
            else:
                cause = future.exception()
            if cause is None:
                self._uploaded[name] = upload.size
            elif self._failure is None:
                self._failure = VolumeUploadFailed(name, cause)
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            os.unlink(upload.path)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure.with_traceback(None)

    def state(self, name: str) -> tuple[UploadState, int] | None:
        """("pending" | "uploaded", size) for a volume this spool took, else None.

        Raises :class:`VolumeUploadFailed` for any failure (the one sticky error).
        """
        with self._cond:
            if name in self._pending:
                return "pending", self._pending[name].size
            if name in self._uploaded:
                return "uploaded", self._uploaded[name]
            self._raise_failure()
            return None

    def wait_all(self) -> None:
        """The barrier: wait until every volume is uploaded; raise the first failure."""
        with self._cond:
            self._cond.wait_for(lambda: self._failure is not None or not self._pending)
            self._raise_failure()

    @property
    def uploaded(self) -> int:
        with self._cond:
            return len(self._uploaded)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def cancel(self) -> None:
        """Cancel every upload not finished (their multipart uploads are aborted)."""
        with self._cond:
            futures = [u.future for u in self._pending.values()]
        for f in futures:
            f.cancel()


class Prefetcher:
    """Downloads announced files ahead of duplicity's reads, a bounded window at a time.

    Used from one thread (duplicity's); the downloads run in the manager's loop.
    """

    def __init__(
        self,
        xfer: BlockingTransferManager,
        bucket: str,
        spool_dir: SpoolDir,
        *,
        max_files: int,
        max_bytes: int,
    ) -> None:
        self._xfer = xfer
        self._bucket = bucket
        self._dir = spool_dir
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._order: collections.deque[tuple[str, str, int | None, BlockingRestoreJob | None]] = (
            collections.deque()
        )
        self._started: dict[str, tuple[concurrent.futures.Future[str], int]] = {}
        self.started_total = 0
        """Downloads started ahead of a read (for tests and logs)."""

    def schedule(
        self, files: Iterable[tuple[str, str, int | None, BlockingRestoreJob | None]]
    ) -> None:
        """Replace the queue with ``(name, key, size or None, restore job or None)``, in
        read order, and start the first downloads."""
        self._order = collections.deque(f for f in files if f[0] not in self._started)
        self.pump()

    def pump(self) -> None:
        """Start downloads while the window has room."""
        while self._order and len(self._started) < self.max_files:
            name, key, size, job = self._order[0]
            in_flight = sum(s for _, s in self._started.values())
            if self._started and in_flight + (size or 0) > self.max_bytes:
                return
            self._order.popleft()
            self._started[name] = (self._start(name, key, size, job), size or 0)
            self.started_total += 1

    def _start(
        self, name: str, key: str, size: int | None, job: BlockingRestoreJob | None
    ) -> concurrent.futures.Future[str]:
        dest = self._dir.file(name)
        bucket = self._bucket
        restore = job.job if job is not None and key in job else None

        async def fetch(tm: TransferManager) -> str:
            if restore is not None:
                await restore.wait_readable(key)
            try:
                await tm.download(bucket, key, dest, size_hint=size)
            except asyncio.CancelledError:
                raise
            except FastxferError:
                raise
            except Exception as exc:
                raise TransferFailed(f"prefetch of {name} failed: {exc}") from exc
            return dest

        return self._xfer.submit(fetch)

    def take(self, name: str) -> concurrent.futures.Future[str] | None:
        """The download of ``name`` if it was started ahead (the caller waits for it and
        moves the file); None if not (and it will not be: the caller fetches it)."""
        started = self._started.pop(name, None)
        if started is None:
            for i, item in enumerate(self._order):
                if item[0] == name:
                    del self._order[i]
                    break
            self.pump()
            return None
        self.pump()  # its slot is free: the caller moves the file out now
        return started[0]

    def cancel(self) -> None:
        """Stop every download started ahead (their files go with the spool directory)."""
        self._order.clear()
        for future, _ in self._started.values():
            future.cancel()
        self._started.clear()
